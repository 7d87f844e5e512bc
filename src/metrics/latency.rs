//! Per-sample latency, from the run's trace:
//!
//! - `forward_ms_per_token`: median over the sample's steps of `trace.forward_ms` (the batched
//!   forward pass's wall time divided by its rows);
//! - `sampler_us_per_token`: median of `trace.sampler_us` (apply + draw + accept);
//! - `sampler_overhead_pct` = `s / (f * 1000 + s) * 100` with `s` the median sampler time (us)
//!   and `f` the median forward time (ms).
//!
//! Medians, not means, so one page fault or scheduler hiccup does not move a sample's value.
//! Undefined without a step (no generated token, or no forward pass).

use super::metric::{Compute, Family, Metric, Needs, SampleInput};
use crate::record::{self, Trace};

pub const FORWARD_MS_PER_TOKEN: Metric = Metric {
    name: "forward_ms_per_token",
    family: Family::Latency,
    higher_is_better: Some(false),
    unit: "ms",
    needs: Needs::TRACE,
    description: "median forward-pass time per token (ms)",
    compute: Compute::Sample(|s| s.trace().and_then(forward_ms_median)),
};

pub const SAMPLER_US_PER_TOKEN: Metric = Metric {
    name: "sampler_us_per_token",
    family: Family::Latency,
    higher_is_better: Some(false),
    unit: "us",
    needs: Needs::TRACE,
    description: "median sampler time per token (us)",
    compute: Compute::Sample(|s| s.trace().and_then(sampler_us_median)),
};

pub const SAMPLER_OVERHEAD_PCT: Metric = Metric {
    name: "sampler_overhead_pct",
    family: Family::Latency,
    higher_is_better: Some(false),
    unit: "%",
    needs: Needs::TRACE,
    description: "sampler / (forward + sampler) x 100, from the medians",
    compute: Compute::Sample(sampler_overhead_pct),
};

fn forward_ms_median(t: &Trace) -> Option<f64> {
    record::median(&t.forward_ms)
}

fn sampler_us_median(t: &Trace) -> Option<f64> {
    record::median(&t.sampler_us)
}

fn sampler_overhead_pct(s: &SampleInput<'_>) -> Option<f64> {
    let t = s.trace()?;
    match (forward_ms_median(t), sampler_us_median(t)) {
        (Some(f), Some(s)) if f * 1000.0 + s > 0.0 => Some(s / (f * 1000.0 + s) * 100.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_overhead() {
        let trace = Trace {
            forward_ms: vec![10.0, 30.0],
            sampler_us: vec![100.0, 300.0, 200.0],
            ..Default::default()
        };
        let s = SampleInput::new("x").with_trace(&trace, 3);
        assert_eq!(FORWARD_MS_PER_TOKEN.of_sample(&s), Some(20.0));
        assert_eq!(SAMPLER_US_PER_TOKEN.of_sample(&s), Some(200.0));
        // 200 us / (20 ms + 200 us)
        let pct = SAMPLER_OVERHEAD_PCT.of_sample(&s).unwrap();
        assert!((pct - 200.0 / 20_200.0 * 100.0).abs() < 1e-12);
        let empty = Trace::default();
        let s = SampleInput::new("x").with_trace(&empty, 0);
        assert_eq!(FORWARD_MS_PER_TOKEN.of_sample(&s), None);
        assert_eq!(SAMPLER_OVERHEAD_PCT.of_sample(&s), None);
    }
}
