//! `report.md`'s "Choosing a checkpoint" section, from [`crate::analysis::checkpoints`]: per
//! checkpoint series (and per `choose:` among the experiment's models), a row per candidate with
//! its fluency and originality means and CIs and whether it is on the Pareto front, then the
//! rule's pick, why each other candidate lost, and whether the pick can be told apart from the
//! runner-up. Absent without a series or a rule.

use std::fmt::Write;

use crate::analysis::catalog::{self, Metric};
use crate::analysis::checkpoints::{Choice, Exclusion, GroupAnalysis, FLUENCY, ORIGINALITY};
use crate::analysis::summary;
use crate::analysis::Analysis;

use super::markdown::{arrow, esc, fmt_num, fmt_p};

pub fn checkpoints_section(a: &Analysis) -> Option<String> {
    if a.checkpoints.is_empty() {
        return None;
    }
    let mut o = String::new();
    for g in &a.checkpoints {
        let title = if g.group.series.is_empty() {
            "## Choosing a model\n".to_string()
        } else {
            format!("## Choosing a checkpoint of `{}`\n", esc(&g.group.series))
        };
        let _ = writeln!(o, "{title}");
        let _ = writeln!(
            o,
            "Under `{}`, mean over prompts with a 95% bootstrap CI. Fluency: `nll_ref` (the text under the one reference scorer) and `coherence_embed`; \
             originality: `distinct_2`, `self_bleu_4`, `diversity_embed` and the checkpoint's own `entropy_mean` (its tokens are the series' tokenizer's). {}\n",
            esc(&g.group.strategy),
            match &g.frontier {
                Some(f) => format!(
                    "The Pareto front is drawn on {} against {} (`plot_checkpoints.svg`): a checkpoint is on it when no other is at least as good on both and better on one.",
                    f.fluency, f.originality
                ),
                None => "No Pareto front: the fluency or originality metrics are absent (add `scorer:`, or run with the sentence embedder).".into(),
            }
        );
        o.push_str(&table(a, g));
        if let Some(c) = &g.choice {
            o.push_str(&choice_text(c));
        }
    }
    Some(o)
}

fn table(a: &Analysis, g: &GroupAnalysis) -> String {
    let metrics: Vec<&Metric> = FLUENCY
        .iter()
        .chain(ORIGINALITY)
        .filter_map(|m| catalog::find(m))
        .filter(|m| {
            g.group
                .members
                .iter()
                .any(|(_, id)| summary::find(&a.summary, id, &g.group.strategy, m.name).is_some())
        })
        .collect();
    let mut t = String::from("| checkpoint |");
    for m in &metrics {
        let _ = write!(t, " {}{} |", m.name, arrow(m));
    }
    t.push_str(" Pareto |\n|---|");
    t.push_str(&"---|".repeat(metrics.len() + 1));
    t.push('\n');
    let chosen = g.choice.as_ref().and_then(|c| c.chosen.as_deref());
    for (_, id) in &g.group.members {
        let mark = if chosen == Some(id.as_str()) {
            " **(chosen)**"
        } else {
            ""
        };
        let _ = write!(t, "| `{}`{mark} |", esc(id));
        for m in &metrics {
            match summary::find(&a.summary, id, &g.group.strategy, m.name) {
                Some(r) => {
                    let _ = write!(
                        t,
                        " {} [{}, {}] |",
                        fmt_num(r.estimate.point),
                        fmt_num(r.estimate.ci_low),
                        fmt_num(r.estimate.ci_high)
                    );
                }
                None => t.push_str(" |"),
            }
        }
        let on = g
            .frontier
            .as_ref()
            .and_then(|f| f.points.iter().find(|p| &p.model == id))
            .map(|p| if p.pareto { "yes" } else { "" })
            .unwrap_or("");
        let _ = writeln!(t, " {on} |");
    }
    t.push('\n');
    t
}

/// The rule, the pick and its reasons.
pub fn choice_text(c: &Choice) -> String {
    let r = &c.rule;
    let bounds: Vec<String> = r
        .subject_to
        .iter()
        .map(|b| match (b.min, b.max) {
            (Some(lo), Some(hi)) => format!("{lo} ≤ {} ≤ {hi}", b.metric),
            (Some(lo), None) => format!("{} ≥ {lo}", b.metric),
            (None, Some(hi)) => format!("{} ≤ {hi}", b.metric),
            (None, None) => String::new(),
        })
        .collect();
    let mut o = format!(
        "**Rule** (`choose:`): {} `{}` under `{}`{}.\n\n",
        if r.maximize { "maximise" } else { "minimise" },
        r.objective,
        esc(&r.strategy),
        if bounds.is_empty() {
            String::new()
        } else {
            format!(", subject to {}", bounds.join(", "))
        }
    );
    let n_ok = c
        .candidates
        .iter()
        .filter(|x| x.excluded.is_empty())
        .count();
    match &c.chosen {
        Some(id) => {
            let best = c
                .candidates
                .iter()
                .find(|x| &x.model == id)
                .and_then(|x| x.objective);
            let _ = write!(
                o,
                "**Chosen: `{}`**, the {} `{}` ({}) of the {n_ok} of {} candidates within the bounds",
                esc(id),
                if r.maximize { "highest" } else { "lowest" },
                r.objective,
                best.map(|e| format!("{} [{}, {}]", fmt_num(e.point), fmt_num(e.ci_low), fmt_num(e.ci_high)))
                    .unwrap_or_default(),
                c.candidates.len()
            );
            match (&c.runner_up, &c.vs_runner_up) {
                (Some(ru), Some(cmp)) => {
                    let _ = write!(
                        o,
                        ". Against the runner-up `{}`: {} [{}, {}] over {} prompts, Wilcoxon p = {} ({}).",
                        esc(ru),
                        fmt_num(cmp.diff.point),
                        fmt_num(cmp.diff.ci_low),
                        fmt_num(cmp.diff.ci_high),
                        cmp.n_prompts,
                        fmt_p(cmp.p_value),
                        if cmp.p_value < 0.05 {
                            "the two are told apart at 0.05"
                        } else {
                            "not told apart at 0.05: on these prompts the runner-up is as good a choice"
                        }
                    );
                }
                _ => o.push('.'),
            }
            o.push('\n');
        }
        None => {
            let _ = writeln!(
                o,
                "**No candidate satisfies every bound**; relax a bound or widen the series."
            );
        }
    }
    let out: Vec<String> = c
        .candidates
        .iter()
        .filter(|x| !x.excluded.is_empty())
        .map(|x| {
            let why: Vec<String> = x.excluded.iter().map(exclusion_text).collect();
            format!("`{}` ({})", esc(&x.model), why.join("; "))
        })
        .collect();
    if !out.is_empty() {
        let _ = writeln!(o, "\nOut of bounds: {}.", out.join(", "));
    }
    o.push('\n');
    o
}

/// `nll_ref 3.50 > max 3`, `no value of diversity_embed`.
fn exclusion_text(e: &Exclusion) -> String {
    match e {
        Exclusion::Missing(m) => format!("no value of {m}"),
        Exclusion::Below { metric, value, min } => {
            format!("{metric} {} < min {min}", fmt_num(*value))
        }
        Exclusion::Above { metric, value, max } => {
            format!("{metric} {} > max {max}", fmt_num(*value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusions_read_as_the_bound_missed() {
        let above = Exclusion::Above {
            metric: "nll_ref".into(),
            value: 3.5,
            max: 3.0,
        };
        assert_eq!(exclusion_text(&above), "nll_ref 3.50 > max 3");
        let below = Exclusion::Below {
            metric: "coherence_embed".into(),
            value: 0.25,
            min: 0.3,
        };
        assert_eq!(exclusion_text(&below), "coherence_embed 0.250 < min 0.3");
        assert_eq!(
            exclusion_text(&Exclusion::Missing("diversity_embed".into())),
            "no value of diversity_embed"
        );
    }
}
