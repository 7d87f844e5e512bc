//! `report.md`'s "Best-of-N selection" section: the selectors of the experiment's `select:` list
//! (one line each, from the selector units), the chosen samples' headline metrics against the
//! `random` pick and against the mean of the N samples, how many comparisons survive Holm, and
//! what a selected output costs. A pure function of the analysis; absent without selectors, so
//! a report without `select:` is unchanged.

use std::fmt::Write;

use crate::analysis::catalog;
use crate::analysis::compare::{self, ComparisonRow};
use crate::analysis::selection::{SelectionComparison, VS_MEAN, VS_RANDOM};
use crate::analysis::Analysis;

use super::markdown::{arrow, blocked_note, esc, fmt_num, fmt_p, mark};

/// The metrics the tables show when present, in this order: fluency under the model, staying
/// on topic, diversity within the sample, how sure the model was, length. Every per-sample
/// metric is in `selection_comparisons.csv`.
pub const HEADLINE: &[&str] = &[
    "nll_mean",
    "coherence_embed",
    "distinct_2",
    "entropy_mean",
    "tokens",
];

/// The section, or `None` when the experiment has no selectors.
pub fn selection_section(a: &Analysis) -> Option<String> {
    let d = &a.design;
    if d.selectors.is_empty() {
        return None;
    }
    let rows = &a.selection_comparisons;
    let mut o = String::new();
    let _ = writeln!(o, "## Best-of-N selection\n");
    let min_n = a.selections.iter().map(|r| r.n).min();
    let fewer = match min_n {
        Some(n) if n < d.samples => {
            format!(" (down to {n} in a cell where samples failed or could not be scored)")
        }
        _ => String::new(),
    };
    let _ = writeln!(
        o,
        "Each selector picks one of the N = {} samples of every cell (model × prompt × strategy){fewer} by a score read from the samples' traces; \
         ties go to the lowest sample index, and the picks are in `selections.csv`. The selectors do not change the samples.\n",
        d.samples
    );
    for s in &d.selectors {
        let kind = if s.id.starts_with(s.kind()) {
            String::new()
        } else {
            format!(" (`{}`)", s.kind())
        };
        let _ = writeln!(
            o,
            "- `{}`{kind}: {}",
            esc(&s.id),
            esc(&s.selector.describe())
        );
    }
    let n_prompts = d.prompts.len();
    let all: Vec<ComparisonRow> = rows.iter().map(|r| r.cmp.clone()).collect();
    let surviving = |reference: &str| {
        rows.iter()
            .filter(|r| r.cmp.reference == reference && r.cmp.p_holm < 0.05)
            .count()
    };
    let _ = writeln!(
        o,
        "\nEach cell below is the mean over prompts of the chosen sample's value minus the reference's, with a 95% paired bootstrap CI; \
         the reference is the `random` selector's pick in the same cell, or the mean of the cell's N samples (what one sample gives on average). \
         `*` marks p_holm < 0.05 and `**` p_holm < 0.01 (two-sided Wilcoxon signed-rank over prompts, Holm across the selectors of one model, strategy, metric and reference). \
         ↑ = higher is better, so a positive difference is a gain; ↓ = lower is better, so a negative one is. \
         Every per-sample metric is in `selection_comparisons.csv` (latency metrics are left out: they are the cost, below). \
         With {n_prompts} prompts the smallest attainable Wilcoxon p-value is {}{}{}. \
         {} of the {} comparisons in `selection_comparisons.csv` survive Holm at 0.05 ({} against the random pick, {} against the mean of N). \
         The Wilcoxon test assumes differences symmetric about 0: against the random pick they are (the two picks are exchangeable when a selector reads nothing useful), \
         against the mean of N they need not be (a skewed metric, such as distinct_2 near its ceiling, can reject while the CI of the mean difference holds 0), \
         so the comparisons with the random pick are the test and those with the mean of N describe.\n",
        fmt_p(compare::min_p_value(n_prompts)),
        if compare::min_p_value(n_prompts) >= 0.05 {
            ", so no difference can reach significance: add prompts to the experiment"
        } else {
            ""
        },
        blocked_note(&all, "selection_comparisons.csv"),
        surviving(VS_RANDOM) + surviving(VS_MEAN),
        rows.len(),
        surviving(VS_RANDOM),
        surviving(VS_MEAN),
    );
    let several = d.models.len() > 1;
    let has_control = crate::analysis::selection::control(&d.selectors).is_some();
    for (reference, title) in [
        (VS_RANDOM, "Against the random pick"),
        (VS_MEAN, "Against the mean of the N samples"),
    ] {
        if reference == VS_RANDOM && !has_control {
            let _ = writeln!(
                o,
                "### {title}\n\nThere is no `random` selector, the control: add `{{kind: random}}` to `select:`.\n"
            );
            continue;
        }
        for model in &d.models {
            if several {
                let _ = writeln!(o, "### {title} (`{model}`)\n");
            } else {
                let _ = writeln!(o, "### {title}\n");
            }
            match gain_table(a, model, reference) {
                Some(t) => o.push_str(&t),
                None => o.push_str(
                    "No comparison could be made (no prompt with a pick on both sides).\n",
                ),
            }
            o.push('\n');
        }
    }
    if !a.selection_costs.is_empty() {
        let _ = writeln!(o, "### Cost of a selected output\n");
        let _ = writeln!(
            o,
            "A selected output costs N samples: N times the tokens and the time of one sample (means over prompts; time = forward + sampler time as traced, \
             with a 95% bootstrap CI over prompts). Scoring reads the stored traces and adds no model pass; \
             the per-step fields the selectors read are taken in the sampler, inside its share.\n"
        );
        let _ = writeln!(
            o,
            "| model | strategy | N | tokens per sample | tokens per selected output | ms per sample | ms per selected output | sampler share (%) |\n|---|---|---|---|---|---|---|---|"
        );
        for c in &a.selection_costs {
            let e = &c.ms_per_selection;
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} [{}, {}] | {} |",
                c.model,
                esc(&c.strategy),
                if c.n.fract() == 0.0 {
                    format!("{}", c.n)
                } else {
                    fmt_num(c.n)
                },
                fmt_num(c.tokens_per_sample),
                fmt_num(c.tokens_per_selection),
                fmt_num(c.ms_per_sample),
                fmt_num(e.point),
                fmt_num(e.ci_low),
                fmt_num(e.ci_high),
                fmt_num(c.sampler_pct)
            );
        }
        o.push('\n');
    }
    Some(o)
}

/// One model's table against one reference: a row per strategy × selector with a comparison,
/// a column per headline metric present; `None` when there is no such comparison.
pub fn gain_table(a: &Analysis, model: &str, reference: &str) -> Option<String> {
    let rows: Vec<&SelectionComparison> = a
        .selection_comparisons
        .iter()
        .filter(|r| r.cmp.model == model && r.cmp.reference == reference)
        .collect();
    let metrics: Vec<&catalog::Metric> = HEADLINE
        .iter()
        .filter(|m| rows.iter().any(|r| r.cmp.metric == **m))
        .filter_map(|m| catalog::find(m))
        .collect();
    if metrics.is_empty() {
        return None;
    }
    let mut t = String::from("| strategy | selector |");
    for m in &metrics {
        let _ = write!(t, " {}{} |", m.name, arrow(m));
    }
    t.push_str("\n|---|---|");
    t.push_str(&"---|".repeat(metrics.len()));
    t.push('\n');
    for s in &a.design.strategies {
        for sel in &a.design.selectors {
            let of = |metric: &str| {
                rows.iter().find(|r| {
                    r.cmp.strategy == s.id && r.selector == sel.id && r.cmp.metric == metric
                })
            };
            if !metrics.iter().any(|m| of(m.name).is_some()) {
                continue;
            }
            let _ = write!(t, "| {} | {} |", esc(&s.id), esc(&sel.id));
            for m in &metrics {
                match of(m.name) {
                    Some(r) => {
                        let e = &r.cmp.diff;
                        let _ = write!(
                            t,
                            " {} [{}, {}]{} |",
                            fmt_num(e.point),
                            fmt_num(e.ci_low),
                            fmt_num(e.ci_high),
                            mark(r.cmp.p_holm)
                        );
                    }
                    None => t.push_str(" |"),
                }
            }
            t.push('\n');
        }
    }
    Some(t)
}
