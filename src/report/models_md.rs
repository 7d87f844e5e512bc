//! `report.md`'s "Across models" section (with two models or more): each model against the
//! first under every strategy, and the model x strategy interaction (does a strategy's effect
//! against the baseline differ between the models), from [`crate::analysis::models`]. A pure
//! function of the analysis; absent with one model.

use std::fmt::Write;

use crate::analysis::catalog::{self, Metric};
use crate::analysis::compare;
use crate::analysis::models::{Contrast, ModelComparison};
use crate::analysis::Analysis;

use super::markdown::{arrow, esc, fmt_num, mark};

/// The metrics the tables show when present, in this order: fluency under the one reference
/// scorer, staying on topic, diversity within a sample and across a prompt's samples,
/// repetition, the scorer's uncertainty. Every metric comparable across models is in
/// `model_comparisons.csv`.
pub const HEADLINE: &[&str] = &[
    "nll_ref",
    "coherence_embed",
    "distinct_2",
    "self_bleu_4",
    "diversity_embed",
    "repetition_4",
    "entropy_ref",
];

/// The section, or `None` with fewer than two models.
pub fn models_section(a: &Analysis) -> Option<String> {
    let d = &a.design;
    let (first, others) = d.models.split_first()?;
    if others.is_empty() {
        return None;
    }
    let rows = &a.model_comparisons;
    let mut o = String::new();
    let _ = writeln!(o, "## Across models\n");
    let scorer = match &d.scorer {
        Some(s) => format!(
            "Fluency is compared under one reference scorer, `{}`: `nll_ref` is the mean −ln p of each text under it (re-tokenized by its tokenizer), so it means the same whichever model wrote the text; each model's own `nll_mean` does not (a sharper model finds its own text likelier) and is not compared.",
            esc(s)
        ),
        None => "No reference scorer is set, so fluency is not compared across models (each model's own `nll_mean` does not compare: a sharper model finds its own text likelier); add `scorer: <model id>` to the experiment for `nll_ref`.".into(),
    };
    let significant = rows.iter().filter(|r| r.p_holm < 0.05).count();
    let _ = writeln!(
        o,
        "Each model is compared with `{}` on the same prompts and seeds. Only metrics that measure the same thing for every model are compared: those of the text, of its embeddings and of the reference scorer, not those of a model's own trace (its entropy, likelihood and token counts differ in scale between models and tokenizers). {scorer}\n\n\
         A cell is the mean over prompts with a 95% paired bootstrap CI; `*` marks p_holm < 0.05 and `**` p_holm < 0.01 (two-sided Wilcoxon signed-rank over prompts, Holm across the strategies of one contrast, model and metric). \
         {significant} of the {} comparisons in `model_comparisons.csv` survive Holm at 0.05.\n",
        esc(first),
        rows.len()
    );
    let metrics: Vec<&Metric> = HEADLINE
        .iter()
        .filter_map(|n| catalog::find(n))
        .filter(|m| rows.iter().any(|r| r.metric == m.name))
        .collect();
    if metrics.is_empty() {
        return Some(o);
    }
    let strategies: Vec<&str> = d.strategies.iter().map(|s| s.id.as_str()).collect();
    for b in others {
        let _ = writeln!(
            o,
            "### `{}` − `{}`, per strategy\n\n{}",
            esc(b),
            esc(first),
            table(rows, Contrast::Model, b, &strategies, &metrics)
        );
        let non_base: Vec<&str> = strategies
            .iter()
            .copied()
            .filter(|s| *s != d.baseline)
            .collect();
        if non_base.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "### Interaction: the strategy's effect on `{}` minus its effect on `{}`\n\n\
             Per prompt, (strategy − `{}`) on `{}` minus the same on `{}`: a significant cell says the strategy moves the metric differently on the two models.\n\n{}",
            esc(b),
            esc(first),
            esc(&d.baseline),
            esc(b),
            esc(first),
            table(rows, Contrast::Interaction, b, &non_base, &metrics)
        );
    }
    let n_prompts = d.prompts.len();
    if compare::min_p_value(n_prompts) >= 0.05 {
        let _ = writeln!(
            o,
            "With {n_prompts} prompts no difference can reach significance: add prompts to the experiment.\n"
        );
    }
    Some(o)
}

/// A row per strategy, a column per metric: `diff [low, high]` and the mark.
fn table(
    rows: &[ModelComparison],
    contrast: Contrast,
    model_b: &str,
    strategies: &[&str],
    metrics: &[&Metric],
) -> String {
    let mut t = String::from("| strategy |");
    for m in metrics {
        let _ = write!(t, " Δ {}{} |", m.name, arrow(m));
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(metrics.len()));
    t.push('\n');
    for s in strategies {
        let _ = write!(t, "| {} |", esc(s));
        for m in metrics {
            match rows.iter().find(|r| {
                r.contrast == contrast
                    && r.model_b == model_b
                    && r.strategy == *s
                    && r.metric == m.name
            }) {
                Some(r) => {
                    let _ = write!(
                        t,
                        " {} [{}, {}]{} |",
                        fmt_num(r.diff.point),
                        fmt_num(r.diff.ci_low),
                        fmt_num(r.diff.ci_high),
                        mark(r.p_holm)
                    );
                }
                None => t.push_str(" |"),
            }
        }
        t.push('\n');
    }
    t
}
