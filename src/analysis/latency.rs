//! Per (model, strategy) latency: median and 95th percentile of the per-token sampler time (us)
//! and forward time (ms), pooled over every token of the successful samples, and the overhead
//! relative to a reference strategy (greedy when the experiment has one, else the baseline).
//!
//! Overhead: each sample's per-token time is `forward_ms_per_token + sampler_us_per_token / 1000`
//! (the per-sample medians of [`crate::metrics::latency`], as analysed);
//! a prompt's time is the mean over its samples; the overhead of a prompt is
//! `(t_strategy - t_reference) / t_reference * 100`; the reported overhead is the mean over the
//! prompts present on both sides with a seeded percentile bootstrap 95% CI
//! (`stats_seed(seed, "latency/<model>/<strategy>")`). Prompts, not tokens, are the unit, as for
//! every other statistic.

use std::collections::BTreeMap;

use crate::metrics::latency::{FORWARD_MS_PER_TOKEN, SAMPLER_US_PER_TOKEN};
use crate::record::SampleRecord;
use crate::seed::stats_seed;
use crate::stats::{bootstrap_mean, percentile, Estimate};

use super::design::Design;
use super::summary::CONFIDENCE;
use super::SampleRow;

#[derive(Debug, Clone, PartialEq)]
pub struct LatencyRow {
    pub model: String,
    pub strategy: String,
    pub reference: String,
    pub n_tokens: usize,
    pub sampler_us_median: Option<f64>,
    pub sampler_us_p95: Option<f64>,
    pub forward_ms_median: Option<f64>,
    pub forward_ms_p95: Option<f64>,
    /// Extra time per token relative to the reference (%), with its CI; `None` for the
    /// reference itself or without paired prompts.
    pub overhead_pct: Option<Estimate>,
    pub overhead_n_prompts: usize,
}

fn quantiles(v: &mut [f64]) -> (Option<f64>, Option<f64>) {
    v.sort_by(f64::total_cmp);
    (percentile(v, 0.5), percentile(v, 0.95))
}

/// Per-token time (ms) per prompt for one (model, strategy).
fn prompt_times(samples: &[SampleRow], model: &str, strategy: &str) -> BTreeMap<String, f64> {
    let mut acc: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for r in samples
        .iter()
        .filter(|r| r.model == model && r.strategy == strategy)
    {
        if let (Some(f), Some(s)) = (
            r.values.of(&FORWARD_MS_PER_TOKEN),
            r.values.of(&SAMPLER_US_PER_TOKEN),
        ) {
            let e = acc.entry(r.prompt_id.clone()).or_insert((0.0, 0));
            e.0 += f + s / 1000.0;
            e.1 += 1;
        }
    }
    acc.into_iter()
        .map(|(p, (sum, n))| (p, sum / n as f64))
        .collect()
}

/// Latency rows in design order; `records` are the successful samples and `samples` their
/// analysed metrics.
pub fn latency(
    design: &Design,
    records: &[&SampleRecord],
    samples: &[SampleRow],
    resamples: usize,
) -> Vec<LatencyRow> {
    let reference = design.latency_reference().to_string();
    let mut rows = Vec::new();
    for model in &design.models {
        let ref_times = prompt_times(samples, model, &reference);
        for s in &design.strategies {
            let mine: Vec<&&SampleRecord> = records
                .iter()
                .filter(|r| &r.model == model && r.strategy == s.id)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut sampler: Vec<f64> = mine
                .iter()
                .flat_map(|r| r.trace.sampler_us.iter().map(|&x| x as f64))
                .filter(|x| x.is_finite())
                .collect();
            let mut forward: Vec<f64> = mine
                .iter()
                .flat_map(|r| r.trace.forward_ms.iter().map(|&x| x as f64))
                .filter(|x| x.is_finite())
                .collect();
            let n_tokens = mine.iter().map(|r| r.token_ids.len()).sum();
            let (sampler_us_median, sampler_us_p95) = quantiles(&mut sampler);
            let (forward_ms_median, forward_ms_p95) = quantiles(&mut forward);
            let (overhead_pct, overhead_n_prompts) = if s.id == reference {
                (None, 0)
            } else {
                let times = prompt_times(samples, model, &s.id);
                let d: Vec<f64> = times
                    .iter()
                    .filter_map(|(p, t)| {
                        ref_times
                            .get(p)
                            .filter(|r| **r > 0.0)
                            .map(|r| (t - r) / r * 100.0)
                    })
                    .filter(|x| x.is_finite())
                    .collect();
                let seed = stats_seed(design.seed, &format!("latency/{model}/{}", s.id));
                (
                    bootstrap_mean(&d, resamples, seed, CONFIDENCE).ok(),
                    d.len(),
                )
            };
            rows.push(LatencyRow {
                model: model.clone(),
                strategy: s.id.clone(),
                reference: reference.clone(),
                n_tokens,
                sampler_us_median,
                sampler_us_p95,
                forward_ms_median,
                forward_ms_p95,
                overhead_pct,
                overhead_n_prompts,
            });
        }
    }
    rows
}
