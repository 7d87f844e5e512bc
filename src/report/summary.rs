//! CSV exporters for the analysis: `summary.csv`, `comparisons.csv`, `latency.csv`,
//! `metrics_samples.csv`, `metrics_groups.csv` (and the `declab metrics` variants). Pure
//! functions returning bytes. A file's columns are its row type's serde fields; the metrics
//! files have one column per metric, in registry order ([`crate::metrics::REGISTRY`]), each
//! value looked up by the metric's name. Numbers are written in Rust's shortest round-trip form;
//! an undefined value is an empty field.

use anyhow::Result;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::csv_out::{columns, write_csv};
use crate::analysis::catalog::{self, Level, Metric};
use crate::analysis::compare::ComparisonRow;
use crate::analysis::foreign::{self, InputGroupRow, InputSampleRow};
use crate::analysis::latency::LatencyRow;
use crate::analysis::models::ModelComparison;
use crate::analysis::selection::{SelectionComparison, SelectionCost, SelectionRow};
use crate::analysis::summary::SummaryRow;
use crate::analysis::{GroupRow, SampleRow};
use crate::metrics::MetricValues;

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

fn number<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&num(*x))
}

fn optional_number<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&opt(*x))
}

#[derive(Default, Serialize)]
struct SummaryCsvRow<'a> {
    model: &'a str,
    strategy: &'a str,
    metric: &'a str,
    n_prompts: usize,
    #[serde(serialize_with = "number")]
    mean: f64,
    #[serde(serialize_with = "number")]
    ci_low: f64,
    #[serde(serialize_with = "number")]
    ci_high: f64,
}

pub fn summary_csv(rows: &[SummaryRow]) -> Result<Vec<u8>> {
    write_csv(
        &columns(&SummaryCsvRow::default())?,
        rows.iter().map(|r| SummaryCsvRow {
            model: &r.model,
            strategy: &r.strategy,
            metric: r.metric,
            n_prompts: r.n_prompts,
            mean: r.estimate.point,
            ci_low: r.estimate.ci_low,
            ci_high: r.estimate.ci_high,
        }),
    )
}

/// One line of `comparisons.csv`; the `reference` column is relabelled per file.
#[derive(Default, Serialize)]
struct ComparisonCsvRow<'a> {
    model: &'a str,
    strategy: &'a str,
    reference: &'a str,
    metric: &'a str,
    n_prompts: usize,
    #[serde(serialize_with = "number")]
    diff: f64,
    #[serde(serialize_with = "number")]
    ci_low: f64,
    #[serde(serialize_with = "number")]
    ci_high: f64,
    #[serde(serialize_with = "number")]
    p_value: f64,
    #[serde(serialize_with = "number")]
    p_holm: f64,
    #[serde(serialize_with = "number")]
    effect_size: f64,
    #[serde(serialize_with = "number")]
    min_p: f64,
}

/// `reference_column` names the reference column (`baseline` for a run, `reference` between
/// runs).
pub fn comparisons_csv_with(rows: &[ComparisonRow], reference_column: &str) -> Result<Vec<u8>> {
    let header: csv::StringRecord = columns(&ComparisonCsvRow::default())?
        .iter()
        .map(|c| {
            if c == "reference" {
                reference_column
            } else {
                c
            }
        })
        .collect();
    write_csv(
        &header,
        rows.iter().map(|r| ComparisonCsvRow {
            model: &r.model,
            strategy: &r.strategy,
            reference: &r.reference,
            metric: r.metric,
            n_prompts: r.n_prompts,
            diff: r.diff.point,
            ci_low: r.diff.ci_low,
            ci_high: r.diff.ci_high,
            p_value: r.p_value,
            p_holm: r.p_holm,
            effect_size: r.effect_size,
            min_p: r.min_p,
        }),
    )
}

pub fn comparisons_csv(rows: &[ComparisonRow]) -> Result<Vec<u8>> {
    comparisons_csv_with(rows, "baseline")
}

/// One line of `model_comparisons.csv`.
#[derive(Default, Serialize)]
struct ModelComparisonCsvRow<'a> {
    contrast: &'a str,
    strategy: &'a str,
    model_a: &'a str,
    model_b: &'a str,
    metric: &'a str,
    n_prompts: usize,
    #[serde(serialize_with = "number")]
    diff: f64,
    #[serde(serialize_with = "number")]
    ci_low: f64,
    #[serde(serialize_with = "number")]
    ci_high: f64,
    #[serde(serialize_with = "number")]
    p_value: f64,
    #[serde(serialize_with = "number")]
    p_holm: f64,
    #[serde(serialize_with = "number")]
    effect_size: f64,
    #[serde(serialize_with = "number")]
    min_p: f64,
}

/// `model_comparisons.csv`: each model against the first per strategy (`contrast = model`,
/// `diff` = B - A) and the model x strategy interaction (`contrast = interaction`, `diff` =
/// B's effect of the strategy against the baseline minus A's).
pub fn model_comparisons_csv(rows: &[ModelComparison]) -> Result<Vec<u8>> {
    write_csv(
        &columns(&ModelComparisonCsvRow::default())?,
        rows.iter().map(|r| ModelComparisonCsvRow {
            contrast: r.contrast.name(),
            strategy: &r.strategy,
            model_a: &r.model_a,
            model_b: &r.model_b,
            metric: r.metric,
            n_prompts: r.n_prompts,
            diff: r.diff.point,
            ci_low: r.diff.ci_low,
            ci_high: r.diff.ci_high,
            p_value: r.p_value,
            p_holm: r.p_holm,
            effect_size: r.effect_size,
            min_p: r.min_p,
        }),
    )
}

/// One line of `checkpoints.csv`.
#[derive(Default, Serialize)]
struct CheckpointCsvRow<'a> {
    series: &'a str,
    step: String,
    model: &'a str,
    strategy: &'a str,
    metric: &'a str,
    role: &'a str,
    n_prompts: usize,
    #[serde(serialize_with = "number")]
    mean: f64,
    #[serde(serialize_with = "number")]
    ci_low: f64,
    #[serde(serialize_with = "number")]
    ci_high: f64,
    pareto: bool,
    chosen: bool,
}

/// `checkpoints.csv`: per checkpoint (series, step, model) of each group, its fluency and
/// originality metrics under the group's strategy with CIs, whether it is on the Pareto front
/// and whether `choose:` picked it.
pub fn checkpoints_csv(a: &crate::analysis::Analysis) -> Result<Vec<u8>> {
    use crate::analysis::checkpoints::{FLUENCY, ORIGINALITY};
    let mut out = Vec::new();
    for g in &a.checkpoints {
        for (step, model) in &g.group.members {
            let pareto = g
                .frontier
                .as_ref()
                .and_then(|f| f.points.iter().find(|p| &p.model == model))
                .is_some_and(|p| p.pareto);
            let chosen = g
                .choice
                .as_ref()
                .is_some_and(|c| c.chosen.as_deref() == Some(model.as_str()));
            for (role, list) in [("fluency", FLUENCY), ("originality", ORIGINALITY)] {
                for m in list.iter() {
                    if let Some(r) =
                        crate::analysis::summary::find(&a.summary, model, &g.group.strategy, m)
                    {
                        out.push(CheckpointCsvRow {
                            series: &g.group.series,
                            step: step.map(|k| k.to_string()).unwrap_or_default(),
                            model,
                            strategy: &g.group.strategy,
                            metric: r.metric,
                            role,
                            n_prompts: r.n_prompts,
                            mean: r.estimate.point,
                            ci_low: r.estimate.ci_low,
                            ci_high: r.estimate.ci_high,
                            pareto,
                            chosen,
                        });
                    }
                }
            }
        }
    }
    write_csv(&columns(&CheckpointCsvRow::default())?, out)
}

#[derive(Default, Serialize)]
struct SelectionCsvRow<'a> {
    model: &'a str,
    prompt_id: &'a str,
    strategy: &'a str,
    selector: &'a str,
    n: usize,
    chosen_index: usize,
    /// Full precision (shortest round-trip form): `declab select` is checked against it.
    score: f64,
}

/// `selections.csv`: what each selector chose in each cell.
pub fn selections_csv(rows: &[SelectionRow]) -> Result<Vec<u8>> {
    write_csv(
        &columns(&SelectionCsvRow::default())?,
        rows.iter().map(|r| SelectionCsvRow {
            model: &r.model,
            prompt_id: &r.prompt_id,
            strategy: &r.strategy,
            selector: &r.selector,
            n: r.n,
            chosen_index: r.chosen_index,
            score: r.score,
        }),
    )
}

#[derive(Default, Serialize)]
struct SelectionComparisonCsvRow<'a> {
    model: &'a str,
    strategy: &'a str,
    selector: &'a str,
    reference: &'a str,
    metric: &'a str,
    n_prompts: usize,
    #[serde(serialize_with = "number")]
    diff: f64,
    #[serde(serialize_with = "number")]
    ci_low: f64,
    #[serde(serialize_with = "number")]
    ci_high: f64,
    #[serde(serialize_with = "number")]
    p_value: f64,
    #[serde(serialize_with = "number")]
    p_holm: f64,
    #[serde(serialize_with = "number")]
    effect_size: f64,
    #[serde(serialize_with = "number")]
    min_p: f64,
}

/// `selection_comparisons.csv`: each selector's picks against the random pick and the mean of
/// the N samples (`reference`: `random` or `mean_of_n`), as `picked - reference`.
pub fn selection_comparisons_csv(rows: &[SelectionComparison]) -> Result<Vec<u8>> {
    write_csv(
        &columns(&SelectionComparisonCsvRow::default())?,
        rows.iter().map(|r| SelectionComparisonCsvRow {
            model: &r.cmp.model,
            strategy: &r.cmp.strategy,
            selector: &r.selector,
            reference: &r.cmp.reference,
            metric: r.cmp.metric,
            n_prompts: r.cmp.n_prompts,
            diff: r.cmp.diff.point,
            ci_low: r.cmp.diff.ci_low,
            ci_high: r.cmp.diff.ci_high,
            p_value: r.cmp.p_value,
            p_holm: r.cmp.p_holm,
            effect_size: r.cmp.effect_size,
            min_p: r.cmp.min_p,
        }),
    )
}

#[derive(Default, Serialize)]
struct SelectionCostCsvRow<'a> {
    model: &'a str,
    strategy: &'a str,
    #[serde(serialize_with = "number")]
    n: f64,
    #[serde(serialize_with = "number")]
    tokens_per_sample: f64,
    #[serde(serialize_with = "number")]
    tokens_per_selection: f64,
    #[serde(serialize_with = "number")]
    ms_per_sample: f64,
    #[serde(serialize_with = "number")]
    ms_per_selection: f64,
    #[serde(serialize_with = "number")]
    ms_per_selection_ci_low: f64,
    #[serde(serialize_with = "number")]
    ms_per_selection_ci_high: f64,
    #[serde(serialize_with = "number")]
    sampler_pct: f64,
}

/// `selection_costs.csv`: what one selected output costs against one sample.
pub fn selection_costs_csv(rows: &[SelectionCost]) -> Result<Vec<u8>> {
    write_csv(
        &columns(&SelectionCostCsvRow::default())?,
        rows.iter().map(|r| SelectionCostCsvRow {
            model: &r.model,
            strategy: &r.strategy,
            n: r.n,
            tokens_per_sample: r.tokens_per_sample,
            tokens_per_selection: r.tokens_per_selection,
            ms_per_sample: r.ms_per_sample,
            ms_per_selection: r.ms_per_selection.point,
            ms_per_selection_ci_low: r.ms_per_selection.ci_low,
            ms_per_selection_ci_high: r.ms_per_selection.ci_high,
            sampler_pct: r.sampler_pct,
        }),
    )
}

#[derive(Default, Serialize)]
struct LatencyCsvRow<'a> {
    model: &'a str,
    strategy: &'a str,
    reference: &'a str,
    n_tokens: usize,
    #[serde(serialize_with = "optional_number")]
    sampler_us_median: Option<f64>,
    #[serde(serialize_with = "optional_number")]
    sampler_us_p95: Option<f64>,
    #[serde(serialize_with = "optional_number")]
    forward_ms_median: Option<f64>,
    #[serde(serialize_with = "optional_number")]
    forward_ms_p95: Option<f64>,
    #[serde(serialize_with = "optional_number")]
    overhead_pct: Option<f64>,
    #[serde(serialize_with = "optional_number")]
    overhead_ci_low: Option<f64>,
    #[serde(serialize_with = "optional_number")]
    overhead_ci_high: Option<f64>,
    overhead_n_prompts: usize,
}

pub fn latency_csv(rows: &[LatencyRow]) -> Result<Vec<u8>> {
    write_csv(
        &columns(&LatencyCsvRow::default())?,
        rows.iter().map(|r| LatencyCsvRow {
            model: &r.model,
            strategy: &r.strategy,
            reference: &r.reference,
            n_tokens: r.n_tokens,
            sampler_us_median: r.sampler_us_median,
            sampler_us_p95: r.sampler_us_p95,
            forward_ms_median: r.forward_ms_median,
            forward_ms_p95: r.forward_ms_p95,
            overhead_pct: r.overhead_pct.map(|e| e.point),
            overhead_ci_low: r.overhead_pct.map(|e| e.ci_low),
            overhead_ci_high: r.overhead_pct.map(|e| e.ci_high),
            overhead_n_prompts: r.overhead_n_prompts,
        }),
    )
}

/// A CSV value of one metric: [`num`] form, empty when undefined.
struct MetricCell(Option<f64>);

impl Serialize for MetricCell {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&opt(self.0))
    }
}

/// One column per metric of `metrics` (in their order), each value looked up by the metric's
/// name in `values`.
fn metric_fields<S: SerializeStruct>(
    row: &mut S,
    metrics: &[&'static Metric],
    values: &MetricValues,
) -> Result<(), S::Error> {
    for m in metrics {
        row.serialize_field(m.name, &MetricCell(values.of(m)))?;
    }
    Ok(())
}

/// A line of a metrics CSV: the row's key columns, then its metric columns in registry order.
struct MetricsCsvRow<'a, R> {
    row: &'a R,
    metrics: &'a [&'static Metric],
}

impl Serialize for MetricsCsvRow<'_, SampleRow> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.row;
        let mut row = s.serialize_struct("SampleRow", 5 + self.metrics.len())?;
        row.serialize_field("model", &r.model)?;
        row.serialize_field("prompt_id", &r.prompt_id)?;
        row.serialize_field("strategy", &r.strategy)?;
        row.serialize_field("sample_index", &r.sample_index)?;
        row.serialize_field("stop_reason", &r.stop_reason)?;
        metric_fields(&mut row, self.metrics, &r.values)?;
        row.end()
    }
}

impl Serialize for MetricsCsvRow<'_, GroupRow> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.row;
        let mut row = s.serialize_struct("GroupRow", 4 + self.metrics.len())?;
        row.serialize_field("model", &r.model)?;
        row.serialize_field("prompt_id", &r.prompt_id)?;
        row.serialize_field("strategy", &r.strategy)?;
        row.serialize_field("n_samples", &r.n_samples)?;
        metric_fields(&mut row, self.metrics, &r.values)?;
        row.end()
    }
}

impl Serialize for MetricsCsvRow<'_, InputSampleRow> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.row;
        let mut row = s.serialize_struct("InputSampleRow", 2 + self.metrics.len())?;
        row.serialize_field("group", &r.group)?;
        row.serialize_field("index", &r.index)?;
        metric_fields(&mut row, self.metrics, &r.values)?;
        row.end()
    }
}

impl Serialize for MetricsCsvRow<'_, InputGroupRow> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.row;
        let mut row = s.serialize_struct("InputGroupRow", 2 + self.metrics.len())?;
        row.serialize_field("group", &r.group)?;
        row.serialize_field("n_samples", &r.n_samples)?;
        metric_fields(&mut row, self.metrics, &r.values)?;
        row.end()
    }
}

/// A metrics CSV of `rows` with one column per metric of `metrics`.
fn metrics_csv<R: Default>(rows: &[R], metrics: &[&'static Metric]) -> Result<Vec<u8>>
where
    for<'a> MetricsCsvRow<'a, R>: Serialize,
{
    let empty = R::default();
    let header = columns(&MetricsCsvRow {
        row: &empty,
        metrics,
    })?;
    write_csv(
        &header,
        rows.iter().map(|row| MetricsCsvRow { row, metrics }),
    )
}

/// `metrics_samples.csv`: one row per successful sample, one column per per-sample metric.
pub fn metrics_samples_csv(rows: &[SampleRow]) -> Result<Vec<u8>> {
    let metrics: Vec<&Metric> = catalog::of_level(Level::Sample).collect();
    metrics_csv(rows, &metrics)
}

/// `metrics_groups.csv`: one row per group, one column per per-group metric.
pub fn metrics_groups_csv(rows: &[GroupRow]) -> Result<Vec<u8>> {
    let metrics: Vec<&Metric> = catalog::of_level(Level::Group).collect();
    metrics_csv(rows, &metrics)
}

/// `declab metrics`: one row per input line (group, index, the metrics that need no trace).
pub fn input_samples_csv(rows: &[InputSampleRow]) -> Result<Vec<u8>> {
    metrics_csv(rows, &foreign::sample_columns())
}

/// `declab metrics`: one row per group.
pub fn input_groups_csv(rows: &[InputGroupRow]) -> Result<Vec<u8>> {
    metrics_csv(rows, &foreign::group_columns())
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
