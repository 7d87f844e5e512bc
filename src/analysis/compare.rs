//! Paired comparisons over prompts: every strategy against the experiment's baseline
//! ([`vs_baseline`]), or each strategy of run B against the same strategy of run A
//! ([`between_runs`]). Per (model, strategy, metric), over the prompts present on both sides:
//! the mean difference `a - b` with a paired percentile bootstrap 95% CI
//! ([`crate::stats::paired_bootstrap_diff`]), the two-sided Wilcoxon signed-rank p-value of the
//! differences ([`crate::stats::wilcoxon_signed_rank`]), the Holm-Bonferroni adjusted p across
//! the strategies of one (model, metric) ([`crate::stats::holm`]), and the matched-pairs
//! rank-biserial correlation ([`crate::stats::rank_biserial`]).
//!
//! With `n` prompts the smallest exact two-sided Wilcoxon p is `2 / 2^n` (0.125 for 4
//! prompts): significance at 0.05 needs at least 6 prompts without ties.

use std::collections::BTreeMap;

use crate::seed::stats_seed;
use crate::stats::{holm, paired_bootstrap_diff, rank_biserial, wilcoxon_signed_rank, Estimate};

use super::catalog;
use super::design::Design;
use super::summary::CONFIDENCE;
use super::table::PromptTable;

#[derive(Debug, Clone, PartialEq)]
pub struct ComparisonRow {
    pub model: String,
    pub strategy: String,
    /// What the strategy is compared with (the baseline strategy id, or "A" between runs).
    pub reference: String,
    pub metric: &'static str,
    pub n_prompts: usize,
    /// Mean of `value - reference value` over prompts, with its CI.
    pub diff: Estimate,
    pub p_value: f64,
    pub p_holm: f64,
    pub effect_size: f64,
    /// The smallest p-value this comparison's differences allow (every sign the same; pairs
    /// whose difference is zero do not count): at or above the gate's alpha, the comparison
    /// cannot be significant whatever the direction.
    pub min_p: f64,
}

/// One paired comparison to compute.
#[derive(Debug, Clone)]
pub struct PairInput {
    pub model: String,
    pub strategy: String,
    pub reference: String,
    pub metric: &'static str,
    /// Values of the strategy (or run B) and of the reference, paired by prompt.
    pub a: Vec<f64>,
    pub b: Vec<f64>,
}

/// Whether `row`'s data allow a p-value below `alpha` (false when its smallest attainable p is
/// at or above it, or unknown).
pub fn can_reach(row: &ComparisonRow, alpha: f64) -> bool {
    row.min_p < alpha
}

/// Smallest attainable two-sided exact Wilcoxon p-value with `n` pairs, none of them zero (the
/// best case for `n` prompts; a comparison's own figure is [`ComparisonRow::min_p`]).
pub fn min_p_value(n: usize) -> f64 {
    if n == 0 {
        1.0
    } else {
        (2.0 / 2f64.powi(n.min(1000) as i32)).min(1.0)
    }
}

/// Compute the comparisons; Holm runs over the inputs sharing (model, metric). `label` prefixes
/// the bootstrap seed labels.
pub fn paired_rows(
    inputs: Vec<PairInput>,
    seed: u64,
    label: &str,
    resamples: usize,
) -> Vec<ComparisonRow> {
    let mut rows: Vec<ComparisonRow> = inputs
        .into_iter()
        .filter_map(|inp| paired_one(inp, seed, label, resamples))
        .collect();
    let mut families: BTreeMap<(String, &'static str), Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        families
            .entry((r.model.clone(), r.metric))
            .or_default()
            .push(i);
    }
    for idx in families.values() {
        let adjusted = holm(&idx.iter().map(|&i| rows[i].p_value).collect::<Vec<_>>());
        for (&i, p) in idx.iter().zip(adjusted) {
            rows[i].p_holm = p;
        }
    }
    rows
}

/// One paired comparison without its Holm adjustment (`p_holm` is NaN): `None` without pairs.
/// The bootstrap seed is `stats_seed(seed, "<label>/<model>/<strategy>/<metric>")`.
pub fn paired_one(
    inp: PairInput,
    seed: u64,
    label: &str,
    resamples: usize,
) -> Option<ComparisonRow> {
    if inp.a.is_empty() {
        return None;
    }
    let s = stats_seed(
        seed,
        &format!("{label}/{}/{}/{}", inp.model, inp.strategy, inp.metric),
    );
    let diff = paired_bootstrap_diff(&inp.a, &inp.b, resamples, s, CONFIDENCE).ok()?;
    let diffs: Vec<f64> = inp.a.iter().zip(&inp.b).map(|(x, y)| x - y).collect();
    let (p_value, min_p) = wilcoxon_signed_rank(&diffs)
        .map(|w| (w.p_value, w.min_attainable_p))
        .unwrap_or((f64::NAN, f64::NAN));
    Some(ComparisonRow {
        model: inp.model,
        strategy: inp.strategy,
        reference: inp.reference,
        metric: inp.metric,
        n_prompts: diffs.len(),
        diff,
        p_value,
        p_holm: f64::NAN,
        effect_size: rank_biserial(&diffs),
        min_p,
    })
}

/// Every non-baseline strategy against the baseline, per model and metric (design order).
pub fn vs_baseline(design: &Design, table: &PromptTable, resamples: usize) -> Vec<ComparisonRow> {
    let mut inputs = Vec::new();
    for model in &design.models {
        for m in catalog::all() {
            let Some(base) = table.get(model, &design.baseline, m.name) else {
                continue;
            };
            for s in design.strategies.iter().filter(|s| s.id != design.baseline) {
                let Some(cur) = table.get(model, &s.id, m.name) else {
                    continue;
                };
                let (a, b) = PromptTable::paired(cur, base);
                inputs.push(PairInput {
                    model: model.clone(),
                    strategy: s.id.clone(),
                    reference: design.baseline.clone(),
                    metric: m.name,
                    a,
                    b,
                });
            }
        }
    }
    sort_rows(
        paired_rows(inputs, design.seed, "baseline", resamples),
        design,
    )
}

/// Run B against run A for every (model, strategy, metric) present in both, as `B - A`.
pub fn between_runs(
    design_a: &Design,
    table_a: &PromptTable,
    table_b: &PromptTable,
    resamples: usize,
) -> Vec<ComparisonRow> {
    let mut inputs = Vec::new();
    for model in &design_a.models {
        for m in catalog::all() {
            for s in &design_a.strategies {
                let (Some(a), Some(b)) = (
                    table_a.get(model, &s.id, m.name),
                    table_b.get(model, &s.id, m.name),
                ) else {
                    continue;
                };
                let (after, before) = PromptTable::paired(b, a);
                inputs.push(PairInput {
                    model: model.clone(),
                    strategy: s.id.clone(),
                    reference: "A".into(),
                    metric: m.name,
                    a: after,
                    b: before,
                });
            }
        }
    }
    sort_rows(
        paired_rows(inputs, design_a.seed, "runs", resamples),
        design_a,
    )
}

/// Order: model, strategy (design order), metric (catalogue order).
fn sort_rows(mut rows: Vec<ComparisonRow>, design: &Design) -> Vec<ComparisonRow> {
    let pos_m = |m: &str| {
        design
            .models
            .iter()
            .position(|x| x == m)
            .unwrap_or(usize::MAX)
    };
    let pos_s = |s: &str| {
        design
            .strategies
            .iter()
            .position(|x| x.id == s)
            .unwrap_or(usize::MAX)
    };
    let pos_k = |k: &str| {
        catalog::all()
            .position(|x| x.name == k)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by_key(|r| (pos_m(&r.model), pos_s(&r.strategy), pos_k(r.metric)));
    rows
}

/// Whether a comparison shows a significant change for the worse at `alpha` (Holm-adjusted p),
/// given the metric's direction; a metric without a better direction regresses on any
/// significant change.
pub fn is_significantly_worse(row: &ComparisonRow, alpha: f64) -> bool {
    // a NaN p-value is never significant
    if row.p_holm.is_nan() || row.p_holm >= alpha || row.diff.point == 0.0 {
        return false;
    }
    match catalog::find(row.metric).and_then(|m| m.higher_is_better) {
        Some(true) => row.diff.point < 0.0,
        Some(false) => row.diff.point > 0.0,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(strategy: &str, a: Vec<f64>, b: Vec<f64>) -> PairInput {
        PairInput {
            model: "m".into(),
            strategy: strategy.into(),
            reference: "base".into(),
            metric: "distinct_1",
            a,
            b,
        }
    }

    #[test]
    fn paired_rows_holm_and_direction() {
        // s1: all 8 differences +1 .. +8 (exact p = 2/256); s2: all zero (p = 1)
        let b = vec![0.0; 8];
        let a1: Vec<f64> = (1..=8).map(|i| i as f64).collect();
        let rows = paired_rows(
            vec![
                input("s1", a1, b.clone()),
                input("s2", b.clone(), b.clone()),
            ],
            1,
            "t",
            500,
        );
        assert_eq!(rows.len(), 2);
        assert!((rows[0].p_value - 2.0 / 256.0).abs() < 1e-12);
        assert!(
            (rows[0].p_holm - 4.0 / 256.0).abs() < 1e-12,
            "{}",
            rows[0].p_holm
        );
        assert_eq!(rows[1].p_holm, 1.0);
        assert_eq!(rows[0].effect_size, 1.0);
        assert_eq!(rows[0].diff.point, 4.5);
        assert!(rows[0].diff.ci_low <= 4.5 && 4.5 <= rows[0].diff.ci_high);
        // distinct_1 is higher-is-better: an increase is not a regression, a decrease is
        assert!(!is_significantly_worse(&rows[0], 0.05));
        let mut worse = rows[0].clone();
        worse.diff.point = -4.5;
        assert!(is_significantly_worse(&worse, 0.05));
        assert!(!is_significantly_worse(&rows[1], 0.05));
        // same inputs and seed, same CIs
        let again = paired_rows(
            vec![input("s1", (1..=8).map(|i| i as f64).collect(), b.clone())],
            1,
            "t",
            500,
        );
        assert_eq!(again[0].diff, rows[0].diff);
    }

    #[test]
    fn min_p() {
        assert_eq!(min_p_value(4), 0.125);
        assert!(min_p_value(6) < 0.05);
    }
}
