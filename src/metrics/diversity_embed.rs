//! `diversity_embed`: `1 - mean over pairs i < j of cos(e_i, e_j)` of the sentence embeddings
//! of a group's continuations (MiniLM, as for `coherence_embed`): semantic rather than lexical
//! diversity, the embedding counterpart of Self-BLEU. Needs at least 2 samples and an
//! embedder.

use super::metric::{Compute, Family, Metric, Needs};
use crate::embed::cosine;

pub const DIVERSITY_EMBED: Metric = Metric {
    name: "diversity_embed",
    family: Family::Diversity,
    higher_is_better: Some(true),
    unit: "1 - cosine",
    needs: Needs::EMBEDDER,
    description: "1 - mean pairwise cosine of the continuations' MiniLM embeddings",
    compute: Compute::Group(|g| g.embeddings.and_then(diversity_embed)),
};

/// `1 - mean pairwise cosine`; `None` for fewer than 2 embeddings.
pub fn diversity_embed(embeddings: &[Vec<f32>]) -> Option<f64> {
    let k = embeddings.len();
    if k < 2 {
        return None;
    }
    let mut sum = 0.0;
    for i in 0..k {
        for j in i + 1..k {
            sum += cosine(&embeddings[i], &embeddings[j]);
        }
    }
    Some(1.0 - sum / (k * (k - 1) / 2) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // cos(a,b) = 0, cos(a,c) = 1, cos(b,c) = 0 -> 1 - 1/3
        let e = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![2.0, 0.0]];
        assert!((diversity_embed(&e).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(diversity_embed(&e[..1]), None);
    }
}
