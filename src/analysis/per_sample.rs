//! Per-sample metric values, aligned with [`super::catalog::SAMPLE_METRICS`]. Pure: the
//! coherence cosine is computed by the caller from embeddings.
//!
//! - text metrics (`distinct_n`, `repetition_4`, `compression_ratio`) over
//!   [`crate::metrics::words()`] (Unicode whitespace split, case preserved);
//! - `nll_mean` = `-mean(trace.logprob)`, the log-probability of each generated token under the
//!   model's *unmodified* next-token distribution (recorded during generation, no second
//!   forward pass); `perplexity = exp(nll_mean)`;
//! - `entropy_mean` / `final_entropy_mean`: means of `trace.entropy` / `trace.final_entropy`;
//! - latency: medians over the sample's steps of `trace.forward_ms` and `trace.sampler_us`;
//!   `sampler_overhead_pct = s / (f * 1000 + s) * 100` with `s` the median sampler time (us) and
//!   `f` the median forward time (ms). Medians, not means, so one page fault or scheduler
//!   hiccup does not move a sample's value.
//!
//! A value is `None` where it is undefined (no generated token, no forward pass, no embedder).

use crate::metrics;
use crate::record::{self, Trace};

/// The trace-derived inputs of a sample.
#[derive(Debug, Clone, Copy)]
pub struct TraceInput<'a> {
    pub trace: &'a Trace,
    pub tokens: usize,
}

/// Values for one sample, in [`super::catalog::SAMPLE_METRICS`] order.
pub fn sample_values(
    text: &str,
    trace: Option<TraceInput>,
    coherence_embed: Option<f64>,
) -> Vec<Option<f64>> {
    let words = metrics::words(text);
    let mut v = vec![
        Some(metrics::distinct_n(&words, 1)),
        Some(metrics::distinct_n(&words, 2)),
        Some(metrics::distinct_n(&words, 3)),
        Some(metrics::repetition_4(&words)),
        Some(metrics::compression_ratio(text)),
    ];
    let t = trace.map(|t| t.trace);
    let nll = t.and_then(|t| record::mean(&t.logprob)).map(|m| -m);
    v.push(nll);
    v.push(nll.map(f64::exp));
    v.push(coherence_embed);
    v.push(t.and_then(|t| record::mean(&t.entropy)));
    v.push(t.and_then(|t| record::mean(&t.final_entropy)));
    v.push(trace.map(|t| t.tokens as f64));
    let fwd = t.and_then(|t| record::median(&t.forward_ms));
    let smp = t.and_then(|t| record::median(&t.sampler_us));
    v.push(fwd);
    v.push(smp);
    v.push(match (fwd, smp) {
        (Some(f), Some(s)) if f * 1000.0 + s > 0.0 => Some(s / (f * 1000.0 + s) * 100.0),
        _ => None,
    });
    debug_assert_eq!(v.len(), super::catalog::SAMPLE_METRICS.len());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::catalog::sample_index;

    fn get(v: &[Option<f64>], name: &str) -> Option<f64> {
        v[sample_index(name).unwrap()]
    }

    #[test]
    fn hand_computed_values() {
        let trace = Trace {
            entropy: vec![1.0, 2.0, 3.0],
            final_entropy: vec![0.5, 0.5, 2.0],
            logprob: vec![-1.0, -2.0, -3.0],
            forward_ms: vec![10.0, 30.0],
            sampler_us: vec![100.0, 300.0, 200.0],
            ..Default::default()
        };
        let v = sample_values(
            "a b a b",
            Some(TraceInput {
                trace: &trace,
                tokens: 3,
            }),
            Some(0.25),
        );
        assert_eq!(get(&v, "distinct_1"), Some(0.5));
        assert_eq!(get(&v, "distinct_2"), Some(2.0 / 3.0));
        assert_eq!(get(&v, "distinct_3"), Some(1.0));
        assert_eq!(get(&v, "repetition_4"), Some(0.0));
        assert_eq!(get(&v, "nll_mean"), Some(2.0));
        assert!((get(&v, "perplexity").unwrap() - 2f64.exp()).abs() < 1e-12);
        assert_eq!(get(&v, "coherence_embed"), Some(0.25));
        assert_eq!(get(&v, "entropy_mean"), Some(2.0));
        assert_eq!(get(&v, "final_entropy_mean"), Some(1.0));
        assert_eq!(get(&v, "tokens"), Some(3.0));
        assert_eq!(get(&v, "forward_ms_per_token"), Some(20.0));
        assert_eq!(get(&v, "sampler_us_per_token"), Some(200.0));
        // 200 us / (20 ms + 200 us)
        assert!(
            (get(&v, "sampler_overhead_pct").unwrap() - 200.0 / 20_200.0 * 100.0).abs() < 1e-12
        );
    }

    #[test]
    fn undefined_values_are_none() {
        let v = sample_values("", None, None);
        assert_eq!(get(&v, "distinct_1"), Some(0.0));
        for name in [
            "nll_mean",
            "perplexity",
            "coherence_embed",
            "entropy_mean",
            "tokens",
            "sampler_overhead_pct",
        ] {
            assert_eq!(get(&v, name), None, "{name}");
        }
        let empty = Trace::default();
        let v = sample_values(
            "x",
            Some(TraceInput {
                trace: &empty,
                tokens: 0,
            }),
            None,
        );
        assert_eq!(get(&v, "tokens"), Some(0.0));
        assert_eq!(get(&v, "nll_mean"), None);
        assert_eq!(get(&v, "forward_ms_per_token"), None);
    }
}
