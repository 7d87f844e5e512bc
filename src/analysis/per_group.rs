//! Per-group metric values (the samples of one model x prompt x strategy), aligned with
//! [`super::catalog::GROUP_METRICS`]. Pure: embeddings are passed in.
//!
//! - `self_bleu_4`: [`crate::metrics::self_bleu()`] with `max_n = 4` (each sample against the
//!   others, NLTK method1 smoothing); needs at least 2 samples.
//! - `distinct_{1,2,3}_pooled`: [`crate::metrics::distinct_n_pooled`] (n-grams never cross a
//!   sample boundary).
//! - `compression_ratio_pooled`: [`crate::metrics::compression_ratio_pooled`] (samples joined
//!   with `"\n"`; Shaib et al. 2024's homogeneity proxy).
//! - `diversity_embed`: `1 - mean over pairs i < j of cos(e_i, e_j)` of the continuations'
//!   sentence embeddings; needs at least 2 samples.

use crate::embed::cosine;
use crate::metrics;

/// Values for one group, in [`super::catalog::GROUP_METRICS`] order.
pub fn group_values(texts: &[&str], embeddings: Option<&[Vec<f32>]>) -> Vec<Option<f64>> {
    let words: Vec<Vec<&str>> = texts.iter().map(|t| metrics::words(t)).collect();
    let v = vec![
        if texts.len() >= 2 {
            metrics::self_bleu(&words, 4)
        } else {
            None
        },
        Some(metrics::distinct_n_pooled(&words, 1)),
        Some(metrics::distinct_n_pooled(&words, 2)),
        Some(metrics::distinct_n_pooled(&words, 3)),
        Some(metrics::compression_ratio_pooled(texts)),
        embeddings.and_then(diversity_embed),
    ];
    debug_assert_eq!(v.len(), super::catalog::GROUP_METRICS.len());
    v
}

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
    use crate::analysis::catalog::group_index;

    #[test]
    fn diversity_embed_hand_computed() {
        // cos(a,b) = 0, cos(a,c) = 1, cos(b,c) = 0 -> 1 - 1/3
        let e = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![2.0, 0.0]];
        assert!((diversity_embed(&e).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(diversity_embed(&e[..1]), None);
    }

    #[test]
    fn group_values_identical_samples() {
        let v = group_values(
            &["a b c d e", "a b c d e"],
            Some(&[vec![1.0, 0.0], vec![1.0, 0.0]]),
        );
        assert!((v[group_index("self_bleu_4").unwrap()].unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(v[group_index("distinct_1_pooled").unwrap()], Some(0.5));
        assert!(v[group_index("diversity_embed").unwrap()].unwrap().abs() < 1e-12);
        let single = group_values(&["a b"], None);
        assert_eq!(single[group_index("self_bleu_4").unwrap()], None);
        assert_eq!(single[group_index("diversity_embed").unwrap()], None);
    }
}
