//! `samples.csv`: one flat row per sample, no traces, stable column order.

use anyhow::Result;

use crate::record::{mean, median, SampleRecord};

pub const SAMPLE_COLUMNS: &[&str] = &[
    "model",
    "prompt_id",
    "strategy",
    "kind",
    "sample_index",
    "seed",
    "status",
    "stop_reason",
    "prompt_tokens",
    "new_tokens",
    "entropy_mean",
    "final_entropy_mean",
    "temperature_mean",
    "nll_mean",
    "prefill_ms",
    "forward_ms_median",
    "sampler_us_median",
    "text",
];

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

pub fn samples_csv(records: &[SampleRecord]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(SAMPLE_COLUMNS)?;
    for r in records {
        let nll = mean(&r.trace.logprob).map(|m| -m);
        w.write_record([
            r.model.clone(),
            r.prompt_id.clone(),
            r.strategy.clone(),
            r.kind.clone(),
            r.sample_index.to_string(),
            r.seed.to_string(),
            r.status.clone(),
            r.stop_reason.clone(),
            r.prompt_tokens.to_string(),
            r.token_ids.len().to_string(),
            opt(mean(&r.trace.entropy)),
            opt(mean(&r.trace.final_entropy)),
            opt(mean(&r.trace.temperature)),
            opt(nll),
            format!("{:.3}", r.timing.prefill_ms),
            opt(median(&r.trace.forward_ms)),
            opt(median(&r.trace.sampler_us)),
            r.text.clone(),
        ])?;
    }
    Ok(w.into_inner()?)
}
