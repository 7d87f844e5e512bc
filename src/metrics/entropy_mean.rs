//! Mean next-token entropy over a sample's generated tokens (nats), from the run's trace:
//!
//! - `entropy_mean`: of the model's *unmodified* distribution (`trace.entropy`), how uncertain
//!   the model was along the path the strategy took;
//! - `final_entropy_mean`: of the distribution actually sampled from (`trace.final_entropy`,
//!   after truncation and temperature), what the strategy made of it.
//!
//! Neither direction is better. Undefined without a generated token.

use super::metric::{Compute, Family, Metric, Needs};
use crate::record;

pub const ENTROPY_MEAN: Metric = Metric {
    name: "entropy_mean",
    family: Family::Entropy,
    higher_is_better: None,
    unit: "nats",
    needs: Needs::TRACE,
    description: "mean entropy of the unmodified next-token distribution (nats)",
    compute: Compute::Sample(|s| s.trace().and_then(|t| record::mean(&t.entropy))),
};

pub const FINAL_ENTROPY_MEAN: Metric = Metric {
    name: "final_entropy_mean",
    family: Family::Entropy,
    higher_is_better: None,
    unit: "nats",
    needs: Needs::TRACE,
    description: "mean entropy of the distribution sampled from (nats)",
    compute: Compute::Sample(|s| s.trace().and_then(|t| record::mean(&t.final_entropy))),
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::SampleInput;
    use crate::record::Trace;

    #[test]
    fn means_of_the_trace() {
        let trace = Trace {
            entropy: vec![1.0, 2.0, 3.0],
            final_entropy: vec![0.5, 0.5, 2.0],
            ..Default::default()
        };
        let s = SampleInput::new("x").with_trace(&trace, 3);
        assert_eq!(ENTROPY_MEAN.of_sample(&s), Some(2.0));
        assert_eq!(FINAL_ENTROPY_MEAN.of_sample(&s), Some(1.0));
        assert_eq!(ENTROPY_MEAN.of_sample(&SampleInput::new("x")), None);
    }
}
