//! `coherence_embed`: the cosine of the sentence embeddings of the prompt and of the
//! continuation (Su et al. 2022, "A Contrastive Framework for Neural Text Generation", who use
//! SimCSE; declab uses MiniLM, all-MiniLM-L6-v2 with sentence-transformers' mean pooling and L2
//! norm). Higher = more on-topic. Undefined without an embedder, or for a foreign line without a
//! prompt.

use super::metric::{Compute, Family, Metric, Needs, SampleInput};
use crate::embed::cosine;

pub const COHERENCE_EMBED: Metric = Metric {
    name: "coherence_embed",
    family: Family::Coherence,
    higher_is_better: Some(true),
    unit: "cosine",
    needs: Needs::EMBEDDER,
    description: "cosine of MiniLM embeddings of prompt and continuation (Su et al. 2022)",
    compute: Compute::Sample(coherence_embed),
};

fn coherence_embed(s: &SampleInput<'_>) -> Option<f64> {
    Some(cosine(s.prompt_embedding?, s.text_embedding?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_prompt_and_text() {
        let (p, t) = ([1.0f32, 0.0], [1.0f32, 1.0]);
        let s = SampleInput::new("x").with_embeddings(Some(&p), Some(&t));
        let c = COHERENCE_EMBED.of_sample(&s).unwrap();
        assert!((c - 0.5f64.sqrt()).abs() < 1e-7, "{c}");
        let no_prompt = SampleInput::new("x").with_embeddings(None, Some(&t));
        assert_eq!(COHERENCE_EMBED.of_sample(&no_prompt), None);
    }
}
