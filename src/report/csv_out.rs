//! `samples.csv` (one flat row per sample, no traces, stable column order), and the CSV
//! plumbing every exporter shares: a file's columns are its row type's serde fields, written as a
//! header even when there is no row.

use anyhow::Result;
use serde::{Serialize, Serializer};

use crate::metrics::{entropy_mean, latency, nll, Metric, SampleInput};
use crate::record::{mean, SampleRecord};

/// The column names of row type `R`, as serde names its fields, read from `empty` (a row whose
/// values do not matter) so that a file without rows still gets its header.
pub(crate) fn columns<R: Serialize>(empty: &R) -> Result<csv::StringRecord> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.serialize(empty)?;
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
    Ok(csv::Reader::from_reader(bytes.as_slice())
        .headers()?
        .clone())
}

/// CSV bytes: `header`, then one line per row.
pub(crate) fn write_csv<R: Serialize>(
    header: &csv::StringRecord,
    rows: impl IntoIterator<Item = R>,
) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.write_record(header)?;
    for r in rows {
        w.serialize(r)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))
}

/// One line of `samples.csv`. The trace columns are metrics of [`crate::metrics`], computed by
/// the metric itself; `forward_ms_median` and `sampler_us_median` are
/// `forward_ms_per_token` and `sampler_us_per_token` under the column names this file has
/// always had. `temperature_mean` (the mean effective temperature) is no metric: it describes
/// the strategy, not the text.
#[derive(Debug, Default, Serialize)]
struct SampleCsvRow<'a> {
    model: &'a str,
    prompt_id: &'a str,
    strategy: &'a str,
    kind: &'a str,
    sample_index: usize,
    seed: u64,
    status: &'a str,
    stop_reason: &'a str,
    prompt_tokens: usize,
    new_tokens: usize,
    #[serde(serialize_with = "six_decimals")]
    entropy_mean: Option<f64>,
    #[serde(serialize_with = "six_decimals")]
    final_entropy_mean: Option<f64>,
    #[serde(serialize_with = "six_decimals")]
    temperature_mean: Option<f64>,
    #[serde(serialize_with = "six_decimals")]
    nll_mean: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    prefill_ms: f64,
    #[serde(serialize_with = "six_decimals")]
    forward_ms_median: Option<f64>,
    #[serde(serialize_with = "six_decimals")]
    sampler_us_median: Option<f64>,
    text: &'a str,
}

impl<'a> SampleCsvRow<'a> {
    fn of(r: &'a SampleRecord) -> Self {
        let input = SampleInput::new(&r.text).with_trace(&r.trace, r.token_ids.len());
        let value = |m: &Metric| m.of_sample(&input);
        SampleCsvRow {
            model: &r.model,
            prompt_id: &r.prompt_id,
            strategy: &r.strategy,
            kind: &r.kind,
            sample_index: r.sample_index,
            seed: r.seed,
            status: &r.status,
            stop_reason: &r.stop_reason,
            prompt_tokens: r.prompt_tokens,
            new_tokens: r.token_ids.len(),
            entropy_mean: value(&entropy_mean::ENTROPY_MEAN),
            final_entropy_mean: value(&entropy_mean::FINAL_ENTROPY_MEAN),
            temperature_mean: mean(&r.trace.temperature),
            nll_mean: value(&nll::NLL_MEAN),
            prefill_ms: r.timing.prefill_ms,
            forward_ms_median: value(&latency::FORWARD_MS_PER_TOKEN),
            sampler_us_median: value(&latency::SAMPLER_US_PER_TOKEN),
            text: &r.text,
        }
    }
}

fn six_decimals<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&x.map(|x| format!("{x:.6}")).unwrap_or_default())
}

fn three_decimals<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{x:.3}"))
}

/// The columns of `samples.csv`, in order.
pub fn sample_columns() -> Vec<String> {
    columns(&SampleCsvRow::default())
        .map(|h| h.iter().map(str::to_string).collect())
        .unwrap_or_default()
}

pub fn samples_csv(records: &[SampleRecord]) -> Result<Vec<u8>> {
    write_csv(
        &columns(&SampleCsvRow::default())?,
        records.iter().map(SampleCsvRow::of),
    )
}
