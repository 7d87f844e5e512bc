//! Likelihood of the generated tokens under the model.
//!
//! - `nll_mean` = `-mean(trace.logprob)`: the mean negative log-probability (nats/token) of each
//!   generated token under the model's *unmodified* next-token distribution, recorded during
//!   generation (no second forward pass), so it measures how likely the model itself finds the
//!   text whatever the strategy reshaped;
//! - `perplexity` = `exp(nll_mean)`.
//!
//! Both are undefined without a generated token.

use super::metric::{Compute, Family, Metric, Needs, SampleInput};
use crate::record::{self, Trace};

pub const NLL_MEAN: Metric = Metric {
    name: "nll_mean",
    family: Family::Coherence,
    higher_is_better: Some(false),
    unit: "nats/token",
    needs: Needs::TRACE,
    description: "mean -ln p(token) under the unmodified model (nats/token)",
    compute: Compute::Sample(|s| s.trace().and_then(nll_mean)),
};

pub const PERPLEXITY: Metric = Metric {
    name: "perplexity",
    family: Family::Coherence,
    higher_is_better: Some(false),
    unit: "perplexity",
    needs: Needs::TRACE,
    description: "exp(nll_mean)",
    compute: Compute::Sample(perplexity),
};

/// `-mean(trace.logprob)`; `None` without a generated token.
pub fn nll_mean(trace: &Trace) -> Option<f64> {
    record::mean(&trace.logprob).map(|m| -m)
}

fn perplexity(s: &SampleInput<'_>) -> Option<f64> {
    s.trace().and_then(nll_mean).map(f64::exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let trace = Trace {
            logprob: vec![-1.0, -2.0, -3.0],
            ..Default::default()
        };
        let s = SampleInput::new("x").with_trace(&trace, 3);
        assert_eq!(NLL_MEAN.of_sample(&s), Some(2.0));
        assert!((PERPLEXITY.of_sample(&s).unwrap() - 2f64.exp()).abs() < 1e-12);
        let empty = Trace::default();
        let s = SampleInput::new("x").with_trace(&empty, 0);
        assert_eq!(NLL_MEAN.of_sample(&s), None);
        assert_eq!(PERPLEXITY.of_sample(&SampleInput::new("x")), None);
    }
}
