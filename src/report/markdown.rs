//! `report.md`: what was run (from the manifest), one table per metric family and model with
//! means, 95% CIs and significance marks against the baseline, the latency table, the best-of-N
//! selection section when the experiment has selectors ([`super::selection_md`]), and links to
//! the plots. A pure function returning the text.

use std::fmt::Write;

use crate::analysis::catalog::{self, Family, Level, Metric};
use crate::analysis::compare::{self, ComparisonRow};
use crate::analysis::summary::{self, SummaryRow};
use crate::analysis::{Analysis, DEFAULT_RESAMPLES};
use crate::store::Manifest;

/// Number with 3-4 significant digits for tables.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// A p-value: as [`fmt_num`], and in scientific notation below 0.001 (where `fmt_num` would
/// print 0.000).
pub fn fmt_p(p: f64) -> String {
    if p.is_finite() && p > 0.0 && p < 0.001 {
        format!("{p:.1e}")
    } else {
        fmt_num(p)
    }
}

/// Significance mark of a Holm-adjusted p-value.
pub fn mark(p_holm: f64) -> &'static str {
    if p_holm < 0.01 {
        " **"
    } else if p_holm < 0.05 {
        " *"
    } else {
        ""
    }
}

pub(crate) fn arrow(m: &Metric) -> &'static str {
    match m.higher_is_better {
        Some(true) => " ↑",
        Some(false) => " ↓",
        None => "",
    }
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The report's tables: family, level filter, title.
const SECTIONS: &[(Family, Option<Level>, &str)] = &[
    (
        Family::Diversity,
        Some(Level::Sample),
        "Diversity within a sample",
    ),
    (
        Family::Diversity,
        Some(Level::Group),
        "Diversity across the samples of a prompt",
    ),
    (Family::Coherence, None, "Coherence"),
    (Family::Entropy, None, "Entropy"),
    (Family::Length, None, "Length"),
    (Family::Latency, None, "Latency"),
];

/// The table of one family (optionally one level) for one model: a row per strategy, a column
/// per metric; `None` when no such metric has a value.
pub fn family_table(
    family: Family,
    level: Option<Level>,
    model: &str,
    strategies: &[String],
    baseline: &str,
    rows: &[SummaryRow],
    comparisons: &[ComparisonRow],
) -> Option<String> {
    let metrics: Vec<&Metric> = catalog::all()
        .filter(|m| {
            m.family == family
                && level.is_none_or(|l| m.level() == l)
                && rows.iter().any(|r| r.model == model && r.metric == m.name)
        })
        .collect();
    if metrics.is_empty() {
        return None;
    }
    let mut t = String::from("| strategy |");
    for m in &metrics {
        let _ = write!(t, " {}{} |", m.name, arrow(m));
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(metrics.len()));
    t.push('\n');
    for s in strategies {
        let name = if s == baseline {
            format!("{} (baseline)", esc(s))
        } else {
            esc(s)
        };
        let _ = write!(t, "| {name} |");
        for m in &metrics {
            match summary::find(rows, model, s, m.name) {
                Some(r) => {
                    let sig = comparisons
                        .iter()
                        .find(|c| c.model == model && &c.strategy == s && c.metric == m.name)
                        .map(|c| mark(c.p_holm))
                        .unwrap_or("");
                    let _ = write!(
                        t,
                        " {} [{}, {}]{sig} |",
                        fmt_num(r.estimate.point),
                        fmt_num(r.estimate.ci_low),
                        fmt_num(r.estimate.ci_high)
                    );
                }
                None => t.push_str(" |"),
            }
        }
        t.push('\n');
    }
    Some(t)
}

fn plot_title(name: &str) -> &'static str {
    match name {
        "plot_tradeoff.svg" => "Diversity vs fluency per strategy",
        "plot_entropy_by_position.svg" => "Entropy by token position",
        "plot_target_entropy.svg" => "Realised vs target entropy",
        "plot_sampler_overhead.svg" => "Sampler overhead per strategy",
        "plot_selection_gain.svg" => "Metric gain per selector",
        "plot_model_effects.svg" => "Each strategy's effect per model",
        "plot_checkpoints.svg" => "Fluency vs originality per checkpoint",
        _ => "Plot",
    }
}

/// The whole report.
pub fn report_md(a: &Analysis, m: &Manifest, plots: &[&str]) -> String {
    let d = &a.design;
    let mut o = String::new();
    let _ = writeln!(o, "# {}: decoding-strategy report\n", m.experiment);
    if let Some(desc) = m
        .resolved_config
        .get("description")
        .and_then(|v| v.as_str())
    {
        let _ = writeln!(o, "{desc}\n");
    }
    let _ = writeln!(o, "## What was run\n");
    let _ = writeln!(
        o,
        "- Experiment file: `{}` (sha256 of the resolved config `{}`), seed {}",
        m.config_file,
        short(&m.config_sha256),
        m.seed
    );
    let _ = writeln!(
        o,
        "- declab {}{}",
        m.declab_version,
        m.git_commit
            .as_ref()
            .map(|c| format!(" (commit {})", short(c)))
            .unwrap_or_default()
    );
    for mi in &m.models {
        let _ = writeln!(
            o,
            "- Model `{}`: {} ({}, sha256 `{}`), vocabulary {}, context {}",
            mi.id,
            mi.weights,
            mi.architecture,
            short(&mi.weights_sha256),
            mi.vocab_size,
            mi.context_length
        );
    }
    let _ = writeln!(
        o,
        "- Grid: {} model(s) x {} prompts x {} strategies x {} samples, up to {} new tokens each",
        d.models.len(),
        d.prompts.len(),
        d.strategies.len(),
        d.samples,
        d.max_new_tokens
    );
    let _ = writeln!(
        o,
        "- Status: {}; {} of {} samples done; {} failed sample(s) excluded from every metric",
        m.status, m.samples_done, m.samples_total, a.failed
    );
    let _ = writeln!(
        o,
        "- Host: {}, {} threads; started {}, finished {}",
        m.host_cpu,
        m.threads,
        m.started_at,
        m.finished_at.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        o,
        "- Sentence embedder: {}",
        a.embedder
            .as_deref()
            .unwrap_or("none (run `make models`; coherence_embed and diversity_embed are absent)")
    );
    if let Some(s) = &d.scorer {
        let _ = writeln!(
            o,
            "- Reference scorer: `{}` (every sample's text scored under it: `nll_ref`, `perplexity_ref`, `entropy_ref`)",
            esc(s)
        );
    }
    let _ = writeln!(
        o,
        "\n### Strategies\n\n| id | kind | parameters |\n|---|---|---|"
    );
    for s in &d.strategies {
        let base = if s.id == d.baseline {
            " (baseline)"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "| {}{base} | {} | `{}` |",
            esc(&s.id),
            s.kind,
            esc(&s.params.to_string())
        );
    }
    if !m.calibration.is_empty() {
        let _ = writeln!(
            o,
            "\n### Quantile thresholds\n\nA threshold written as `{{quantile: q}}` is the model's own q-quantile of next-token entropy, measured on one seeded sample per prompt before the model's grid (`declab calibrate` draws the distributions), so one strategy id holds a value per model:\n"
        );
        for c in &m.calibration {
            let _ = writeln!(
                o,
                "- `{}`: {} tokens ({} per prompt at T = {}), entropy median {} nats, quartiles {} and {}",
                esc(&c.model),
                c.n_tokens,
                c.tokens_per_prompt,
                c.temperature,
                c.quantiles.get("0.5").map(|x| fmt_num(*x)).unwrap_or_default(),
                c.quantiles.get("0.25").map(|x| fmt_num(*x)).unwrap_or_default(),
                c.quantiles.get("0.75").map(|x| fmt_num(*x)).unwrap_or_default(),
            );
        }
        let _ = write!(o, "\n| strategy |");
        for c in &m.calibration {
            let _ = write!(o, " {} (nats) |", esc(&c.model));
        }
        let _ = writeln!(o, "\n|---|{}", "---|".repeat(m.calibration.len()));
        for s in d
            .strategies
            .iter()
            .filter(|s| m.calibration.iter().any(|c| c.resolved.contains_key(&s.id)))
        {
            let _ = write!(o, "| {} |", esc(&s.id));
            for c in &m.calibration {
                let cell = c.resolved.get(&s.id).map(|v| {
                    v.iter()
                        .map(|(k, x)| format!("{k} {}", fmt_num(*x)))
                        .collect::<Vec<_>>()
                        .join(", ")
                });
                let _ = write!(o, " {} |", cell.unwrap_or_default());
            }
            o.push('\n');
        }
    }
    let n_prompts = d.prompts.len();
    let _ = writeln!(
        o,
        "\n### How to read the tables\n\n\
         The unit of analysis is the prompt: each prompt's samples are averaged (per-group metrics have one value per prompt), \
         then the table shows the mean over prompts with a 95% percentile bootstrap CI (B = {DEFAULT_RESAMPLES}, seeded from the experiment seed). \
         Each strategy is compared with the baseline `{}` on the same prompts: paired bootstrap CI of the difference, \
         two-sided Wilcoxon signed-rank test, Holm adjustment across the strategies of one metric; \
         `*` marks p_holm < 0.05 and `**` p_holm < 0.01 (all numbers in `comparisons.csv`). \
         ↑ = higher is better, ↓ = lower is better. \
         With {n_prompts} prompts the smallest attainable Wilcoxon p-value is {}{}{}.\n",
        d.baseline,
        fmt_p(compare::min_p_value(n_prompts)),
        if compare::min_p_value(n_prompts) >= 0.05 { ", so no difference can reach significance: add prompts to the experiment" } else { "" },
        blocked_note(&a.comparisons, "comparisons.csv")
    );
    let strategies: Vec<String> = d.strategies.iter().map(|s| s.id.clone()).collect();
    for model in &d.models {
        for &(fam, level, title) in SECTIONS {
            if let Some(t) = family_table(
                fam,
                level,
                model,
                &strategies,
                &d.baseline,
                &a.summary,
                &a.comparisons,
            ) {
                if d.models.len() > 1 {
                    let _ = writeln!(o, "## {title} (`{model}`)\n");
                } else {
                    let _ = writeln!(o, "## {title}\n");
                }
                o.push_str(&t);
                o.push('\n');
            }
        }
    }
    if !a.latency.is_empty() {
        let reference = d.latency_reference();
        let _ = writeln!(o, "## Per-token latency\n");
        let _ = writeln!(
            o,
            "Median and 95th percentile over every generated token; overhead = extra per-token time (forward + sampler) relative to `{reference}`, mean over prompts with a 95% bootstrap CI.\n"
        );
        let _ = writeln!(o, "| model | strategy | sampler us median | sampler us p95 | forward ms median | forward ms p95 | overhead vs {} (%) |\n|---|---|---|---|---|---|---|", esc(reference));
        for r in &a.latency {
            let f = |x: Option<f64>| x.map(fmt_num).unwrap_or_else(|| "n/a".into());
            let over = match r.overhead_pct {
                Some(e) => format!(
                    "{} [{}, {}]",
                    fmt_num(e.point),
                    fmt_num(e.ci_low),
                    fmt_num(e.ci_high)
                ),
                None if r.strategy == reference => "(reference)".into(),
                None => "n/a".into(),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {over} |",
                r.model,
                esc(&r.strategy),
                f(r.sampler_us_median),
                f(r.sampler_us_p95),
                f(r.forward_ms_median),
                f(r.forward_ms_p95)
            );
        }
        o.push('\n');
    }
    if !a.solve.is_empty() {
        let _ = writeln!(o, "## target_entropy's solve\n");
        let _ = writeln!(
            o,
            "Steps whose temperature was clamped (the target out of reach within [t_min, t_max]) or whose solve stopped without meeting its 1e-5 nats tolerance (per step in the trace's `solve` field).\n"
        );
        let _ = writeln!(
            o,
            "| model | strategy | solve steps | clamped to t_min | clamped to t_max | missed tolerance |\n|---|---|---|---|---|---|"
        );
        for c in &a.solve {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                c.model,
                esc(&c.strategy),
                c.steps,
                c.clamped_min,
                c.clamped_max,
                c.missed
            );
        }
        o.push('\n');
    }
    if let Some(section) = super::models_md::models_section(a) {
        o.push_str(&section);
    }
    if let Some(section) = super::checkpoints_md::checkpoints_section(a) {
        o.push_str(&section);
    }
    if let Some(section) = super::selection_md::selection_section(a) {
        o.push_str(&section);
    }
    if !plots.is_empty() {
        let _ = writeln!(o, "## Plots\n");
        for p in plots {
            let _ = writeln!(o, "### {}\n\n![{}]({p})\n", plot_title(p), plot_title(p));
        }
    }
    let _ = writeln!(
        o,
        "## Files\n\n`samples.jsonl` (every sample with its per-token trace), `metrics_samples.csv`, `metrics_groups.csv` (raw metric values), \
         `summary.csv`, `comparisons.csv`, `latency.csv`, {}{}`manifest.json`. Regenerate this report with `declab report <this folder>`.",
        match (d.models.len() > 1, a.checkpoints.is_empty()) {
            (false, _) => "",
            (true, true) => "`model_comparisons.csv`, ",
            (true, false) => "`model_comparisons.csv`, `checkpoints.csv`, ",
        },
        if d.selectors.is_empty() {
            ""
        } else {
            "`selections.csv`, `selection_comparisons.csv`, `selection_costs.csv`, "
        }
    );
    o
}

/// How many comparisons cannot reach p < 0.05 on their own data although the prompt count
/// would allow it: prompts where the two values are equal (common for discrete metrics) drop out
/// of the Wilcoxon test, and the exact test over tied ranks needs every remaining sign alike.
/// `file` is the CSV that holds the rows.
pub(crate) fn blocked_note(rows: &[ComparisonRow], file: &str) -> String {
    let possible: Vec<&ComparisonRow> = rows
        .iter()
        .filter(|r| compare::min_p_value(r.n_prompts) < 0.05)
        .collect();
    let blocked = possible
        .iter()
        .filter(|r| !compare::can_reach(r, 0.05))
        .count();
    if blocked == 0 {
        return String::new();
    }
    format!(
        "; on their own data {blocked} of these {} comparisons cannot (prompts with equal values drop out of the test; each comparison's smallest attainable p is in `{file}`'s `min_p`)",
        possible.len()
    )
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Estimate;

    fn est(point: f64, lo: f64, hi: f64) -> Estimate {
        Estimate {
            point,
            ci_low: lo,
            ci_high: hi,
            std_err: 0.0,
        }
    }

    /// Six prompts allow p = 0.031, but a comparison where two prompts tie (difference zero)
    /// rests on four, whose smallest p is 0.125: the report says so.
    #[test]
    fn the_report_names_comparisons_their_data_cannot_make_significant() {
        let row = |diffs: &[f64]| {
            let w = crate::stats::wilcoxon_signed_rank(diffs).unwrap();
            ComparisonRow {
                model: "m".into(),
                strategy: "t".into(),
                reference: "greedy".into(),
                metric: "distinct_1",
                n_prompts: diffs.len(),
                diff: est(0.1, 0.0, 0.2),
                p_value: w.p_value,
                p_holm: w.p_value,
                effect_size: 1.0,
                min_p: w.min_attainable_p,
            }
        };
        let free = row(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let tied = row(&[0.0, 2.0, 0.0, 4.0, 5.0, 6.0]);
        assert!((free.min_p - 0.03125).abs() < 1e-12);
        assert!((tied.min_p - 0.125).abs() < 1e-12);
        assert_eq!(
            blocked_note(std::slice::from_ref(&free), "comparisons.csv"),
            ""
        );
        let note = blocked_note(&[free, tied], "comparisons.csv");
        assert!(note.contains("1 of these 2 comparisons cannot"), "{note}");
    }

    #[test]
    fn family_table_snapshot() {
        let rows = vec![
            SummaryRow {
                model: "m".into(),
                strategy: "greedy".into(),
                metric: "distinct_1",
                n_prompts: 6,
                estimate: est(0.5, 0.4, 0.6),
            },
            SummaryRow {
                model: "m".into(),
                strategy: "t|1".into(),
                metric: "distinct_1",
                n_prompts: 6,
                estimate: est(0.75, 0.7, 0.8),
            },
            SummaryRow {
                model: "m".into(),
                strategy: "t|1".into(),
                metric: "self_bleu_4",
                n_prompts: 6,
                estimate: est(0.125, 0.1, 0.15),
            },
        ];
        let cmp = vec![ComparisonRow {
            model: "m".into(),
            strategy: "t|1".into(),
            reference: "greedy".into(),
            metric: "distinct_1",
            n_prompts: 6,
            diff: est(0.25, 0.2, 0.3),
            p_value: 0.03125,
            p_holm: 0.03125,
            effect_size: 1.0,
            min_p: 0.5,
        }];
        let t = family_table(
            Family::Diversity,
            None,
            "m",
            &["greedy".into(), "t|1".into()],
            "greedy",
            &rows,
            &cmp,
        )
        .unwrap();
        assert_eq!(
            t,
            "| strategy | distinct_1 ↑ | self_bleu_4 ↓ |\n|---|---|---|\n\
             | greedy (baseline) | 0.500 [0.400, 0.600] | |\n\
             | t\\|1 | 0.750 [0.700, 0.800] * | 0.125 [0.100, 0.150] |\n"
        );
        assert!(family_table(
            Family::Latency,
            None,
            "m",
            &["greedy".into()],
            "greedy",
            &rows,
            &cmp
        )
        .is_none());
    }

    #[test]
    fn number_format() {
        assert_eq!(fmt_num(1234.5), "1234");
        assert_eq!(fmt_num(123.45), "123.5");
        assert_eq!(fmt_num(2.346), "2.35");
        assert_eq!(fmt_num(0.01234), "0.012");
        assert_eq!(fmt_num(f64::NAN), "n/a");
        assert_eq!(mark(0.001), " **");
        assert_eq!(mark(0.2), "");
    }
}
