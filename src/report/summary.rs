//! CSV exporters for the analysis: `summary.csv`, `comparisons.csv`, `latency.csv`,
//! `metrics_samples.csv`, `metrics_groups.csv` (and the `declab metrics` variants). Pure
//! functions returning bytes. Numbers are written in Rust's shortest round-trip form; an
//! undefined value is an empty field.

use anyhow::Result;

use crate::analysis::catalog::{self, Level};
use crate::analysis::compare::ComparisonRow;
use crate::analysis::foreign::{self, InputGroupRow, InputSampleRow};
use crate::analysis::latency::LatencyRow;
use crate::analysis::summary::SummaryRow;
use crate::analysis::{GroupRow, SampleRow};

/// A number as written in every CSV: shortest round-trip, empty when undefined.
pub fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        String::new()
    }
}

fn opt(x: Option<f64>) -> String {
    x.map(num).unwrap_or_default()
}

fn write_rows(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header)?;
    for r in rows {
        w.write_record(&r)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))
}

pub fn summary_csv(rows: &[SummaryRow]) -> Result<Vec<u8>> {
    write_rows(
        &[
            "model",
            "strategy",
            "metric",
            "n_prompts",
            "mean",
            "ci_low",
            "ci_high",
        ],
        rows.iter().map(|r| {
            vec![
                r.model.clone(),
                r.strategy.clone(),
                r.metric.to_string(),
                r.n_prompts.to_string(),
                num(r.estimate.point),
                num(r.estimate.ci_low),
                num(r.estimate.ci_high),
            ]
        }),
    )
}

/// `baseline` names the reference column (`baseline` for a run, `reference` between runs).
pub fn comparisons_csv_with(rows: &[ComparisonRow], reference_column: &str) -> Result<Vec<u8>> {
    write_rows(
        &[
            "model",
            "strategy",
            reference_column,
            "metric",
            "n_prompts",
            "diff",
            "ci_low",
            "ci_high",
            "p_value",
            "p_holm",
            "effect_size",
            "min_p",
        ],
        rows.iter().map(|r| {
            vec![
                r.model.clone(),
                r.strategy.clone(),
                r.reference.clone(),
                r.metric.to_string(),
                r.n_prompts.to_string(),
                num(r.diff.point),
                num(r.diff.ci_low),
                num(r.diff.ci_high),
                num(r.p_value),
                num(r.p_holm),
                num(r.effect_size),
                num(r.min_p),
            ]
        }),
    )
}

pub fn comparisons_csv(rows: &[ComparisonRow]) -> Result<Vec<u8>> {
    comparisons_csv_with(rows, "baseline")
}

pub fn latency_csv(rows: &[LatencyRow]) -> Result<Vec<u8>> {
    write_rows(
        &[
            "model",
            "strategy",
            "reference",
            "n_tokens",
            "sampler_us_median",
            "sampler_us_p95",
            "forward_ms_median",
            "forward_ms_p95",
            "overhead_pct",
            "overhead_ci_low",
            "overhead_ci_high",
            "overhead_n_prompts",
        ],
        rows.iter().map(|r| {
            vec![
                r.model.clone(),
                r.strategy.clone(),
                r.reference.clone(),
                r.n_tokens.to_string(),
                opt(r.sampler_us_median),
                opt(r.sampler_us_p95),
                opt(r.forward_ms_median),
                opt(r.forward_ms_p95),
                opt(r.overhead_pct.map(|e| e.point)),
                opt(r.overhead_pct.map(|e| e.ci_low)),
                opt(r.overhead_pct.map(|e| e.ci_high)),
                r.overhead_n_prompts.to_string(),
            ]
        }),
    )
}

pub fn metrics_samples_csv(rows: &[SampleRow]) -> Result<Vec<u8>> {
    let mut header = vec![
        "model",
        "prompt_id",
        "strategy",
        "sample_index",
        "stop_reason",
    ];
    header.extend(catalog::of_level(Level::Sample).map(|m| m.name));
    write_rows(
        &header,
        rows.iter().map(|r| {
            let mut v = vec![
                r.model.clone(),
                r.prompt_id.clone(),
                r.strategy.clone(),
                r.sample_index.to_string(),
                r.stop_reason.clone(),
            ];
            v.extend(catalog::of_level(Level::Sample).map(|m| opt(r.values.of(m))));
            v
        }),
    )
}

pub fn metrics_groups_csv(rows: &[GroupRow]) -> Result<Vec<u8>> {
    let mut header = vec!["model", "prompt_id", "strategy", "n_samples"];
    header.extend(catalog::of_level(Level::Group).map(|m| m.name));
    write_rows(
        &header,
        rows.iter().map(|r| {
            let mut v = vec![
                r.model.clone(),
                r.prompt_id.clone(),
                r.strategy.clone(),
                r.n_samples.to_string(),
            ];
            v.extend(catalog::of_level(Level::Group).map(|m| opt(r.values.of(m))));
            v
        }),
    )
}

/// `declab metrics`: one row per input line (group, index, text metrics).
pub fn input_samples_csv(rows: &[InputSampleRow]) -> Result<Vec<u8>> {
    let columns = foreign::sample_columns();
    let mut header = vec!["group", "index"];
    header.extend(columns.iter().map(|m| m.name));
    write_rows(
        &header,
        rows.iter().map(|r| {
            let mut v = vec![r.group.clone(), r.index.to_string()];
            v.extend(columns.iter().map(|m| opt(r.values.of(m))));
            v
        }),
    )
}

/// `declab metrics`: one row per group.
pub fn input_groups_csv(rows: &[InputGroupRow]) -> Result<Vec<u8>> {
    let columns = foreign::group_columns();
    let mut header = vec!["group", "n_samples"];
    header.extend(columns.iter().map(|m| m.name));
    write_rows(
        &header,
        rows.iter().map(|r| {
            let mut v = vec![r.group.clone(), r.n_samples.to_string()];
            v.extend(columns.iter().map(|m| opt(r.values.of(m))));
            v
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Estimate;

    #[test]
    fn summary_snapshot() {
        let rows = vec![SummaryRow {
            model: "m".into(),
            strategy: "top_p(p=0.9,t=1.0)".into(),
            metric: "distinct_1",
            n_prompts: 3,
            estimate: Estimate {
                point: 0.5,
                ci_low: 0.25,
                ci_high: 0.75,
                std_err: 0.1,
            },
        }];
        let got = String::from_utf8(summary_csv(&rows).unwrap()).unwrap();
        assert_eq!(got, "model,strategy,metric,n_prompts,mean,ci_low,ci_high\nm,\"top_p(p=0.9,t=1.0)\",distinct_1,3,0.5,0.25,0.75\n");
    }

    #[test]
    fn comparisons_snapshot_with_undefined_value() {
        let rows = vec![ComparisonRow {
            model: "m".into(),
            strategy: "t".into(),
            reference: "greedy".into(),
            metric: "self_bleu_4",
            n_prompts: 2,
            diff: Estimate {
                point: -0.125,
                ci_low: -0.25,
                ci_high: 0.0,
                std_err: 0.0,
            },
            p_value: 0.5,
            p_holm: 1.0,
            effect_size: f64::NAN,
            min_p: 0.5,
        }];
        let got = String::from_utf8(comparisons_csv(&rows).unwrap()).unwrap();
        assert_eq!(
            got,
            "model,strategy,baseline,metric,n_prompts,diff,ci_low,ci_high,p_value,p_holm,effect_size,min_p\nm,t,greedy,self_bleu_4,2,-0.125,-0.25,0,0.5,1,,0.5\n"
        );
    }

    #[test]
    fn input_csv_snapshot() {
        let mut values = crate::metrics::MetricValues::default();
        for (name, v) in [
            ("distinct_1", 1.0),
            ("distinct_2", 0.5),
            ("repetition_4", 0.0),
            ("compression_ratio", 2.0),
            // not a column of `declab metrics`: needs a trace
            ("tokens", 3.0),
        ] {
            values.set(catalog::find(name).unwrap(), Some(v));
        }
        let rows = vec![InputSampleRow {
            group: "g".into(),
            index: 1,
            values,
        }];
        let got = String::from_utf8(input_samples_csv(&rows).unwrap()).unwrap();
        assert_eq!(
            got,
            "group,index,distinct_1,distinct_2,distinct_3,repetition_4,compression_ratio,coherence_embed\ng,1,1,0.5,,0,2,\n"
        );
    }
}
