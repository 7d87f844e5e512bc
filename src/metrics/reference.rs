//! The text's likelihood and uncertainty under the experiment's one reference model
//! (`scorer: <model id>`), the same yardstick for every model and checkpoint:
//!
//! - `nll_ref` = `-mean(reference.logprob)`: mean negative log-probability (nats per scorer
//!   token) of the sample's text given its prompt, teacher-forced through the scorer
//!   ([`crate::teacher`]; the text re-tokenized by the scorer's tokenizer, so a sample of
//!   another model with another vocabulary is scored on the same tokens as the scorer's own);
//! - `perplexity_ref` = `exp(nll_ref)`;
//! - `entropy_ref` = `mean(reference.entropy)`: how uncertain the scorer is along the text.
//!
//! `nll_mean` (each model scoring its own text) does not compare across models: a sharper
//! model finds its own text likelier. These do. Like perplexity under a fixed evaluator in
//! Holtzman et al. (2020, "The Curious Case of Neural Text Degeneration", §6) and MAUVE-style
//! setups, low is not better without bound (greedy loops score low), so read them with the
//! diversity metrics. Undefined without a scorer, for a text of no scorer token, and for a text
//! the scorer could not take (`reference.error`).

use super::metric::{Compute, Family, Metric, Needs, SampleInput};
use crate::record::{self, RefScore};

pub const NLL_REF: Metric = Metric {
    name: "nll_ref",
    family: Family::Coherence,
    higher_is_better: Some(false),
    unit: "nats/token",
    needs: Needs::REFERENCE,
    description: "mean -ln p(token) of the text under the reference scorer (nats/scorer token)",
    compute: Compute::Sample(|s| scored(s).and_then(nll_ref)),
};

pub const PERPLEXITY_REF: Metric = Metric {
    name: "perplexity_ref",
    family: Family::Coherence,
    higher_is_better: Some(false),
    unit: "perplexity",
    needs: Needs::REFERENCE,
    description: "exp(nll_ref)",
    compute: Compute::Sample(|s| scored(s).and_then(nll_ref).map(f64::exp)),
};

pub const ENTROPY_REF: Metric = Metric {
    name: "entropy_ref",
    family: Family::Entropy,
    higher_is_better: None,
    unit: "nats",
    needs: Needs::REFERENCE,
    description:
        "mean entropy of the reference scorer's next-token distribution along the text (nats)",
    compute: Compute::Sample(|s| scored(s).and_then(|r| record::mean(&r.entropy))),
};

/// The sample's reference score, when it has a usable one.
fn scored<'a>(s: &SampleInput<'a>) -> Option<&'a RefScore> {
    s.reference.filter(|r| r.error.is_none())
}

/// `-mean(logprob)`; `None` for a text of no scorer token.
pub fn nll_ref(r: &RefScore) -> Option<f64> {
    record::mean(&r.logprob).map(|m| -m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_of_the_reference_score() {
        let r = RefScore {
            model: "m".into(),
            entropy: vec![1.0, 3.0],
            logprob: vec![-1.0, -2.0],
            error: None,
        };
        let s = SampleInput::new("a b").with_reference(Some(&r));
        assert_eq!(NLL_REF.of_sample(&s), Some(1.5));
        assert_eq!(PERPLEXITY_REF.of_sample(&s), Some(1.5f64.exp()));
        assert_eq!(ENTROPY_REF.of_sample(&s), Some(2.0));
        // no scorer, an empty text, a text the scorer could not take: undefined
        assert_eq!(NLL_REF.of_sample(&SampleInput::new("a b")), None);
        let empty = RefScore::default();
        let s = SampleInput::new("").with_reference(Some(&empty));
        assert_eq!(NLL_REF.of_sample(&s), None);
        assert_eq!(ENTROPY_REF.of_sample(&s), None);
        let failed = RefScore {
            error: Some("too long".into()),
            ..r.clone()
        };
        let s = SampleInput::new("a b").with_reference(Some(&failed));
        assert_eq!(NLL_REF.of_sample(&s), None);
    }
}
