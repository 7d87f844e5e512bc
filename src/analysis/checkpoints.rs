//! Choosing a checkpoint: for a checkpoint series (models `<series>@<step>`, as `checkpoints:`
//! names them) or, with `choose:` and no `among`, the experiment's models, each candidate's
//! fluency and originality with CIs (from the summary), the Pareto front of one fluency metric
//! against one originality metric, and the `choose:` rule's pick with its reasons.
//!
//! - fluency: `nll_ref` (under the one reference scorer; lower is better) and `coherence_embed`;
//! - originality: `distinct_2`, `self_bleu_4` (lower is more original), `diversity_embed` and
//!   `entropy_mean` (the checkpoint's own next-token entropy; checkpoints of one series share a
//!   tokenizer, so it compares along a series, though not across model families).
//!
//! The front uses the first fluency metric present (`nll_ref`, else `coherence_embed`) and the
//! first originality metric present (`diversity_embed`, else `distinct_2`): a candidate is on it
//! when no other candidate is at least as good on both means and better on one. The rule:
//! among the candidates whose means satisfy every bound, the best mean of the objective (ties to
//! the earlier step); the chosen candidate is compared with the runner-up on the objective over
//! prompts (paired bootstrap CI, Wilcoxon), so the report says whether the two can be told apart.

use crate::config::{series_of, ChooseRule};
use crate::stats::Estimate;

use super::catalog;
use super::compare::{paired_one, ComparisonRow, PairInput};
use super::design::Design;
use super::summary::{self, SummaryRow};
use super::table::PromptTable;

pub const FLUENCY: &[&str] = &["nll_ref", "coherence_embed"];
pub const ORIGINALITY: &[&str] = &[
    "distinct_2",
    "self_bleu_4",
    "diversity_embed",
    "entropy_mean",
];

/// Candidates weighed together: a series, or every model (`series` empty, steps `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub series: String,
    /// (step, model id), in step order.
    pub members: Vec<(Option<u64>, String)>,
    /// The strategy whose samples are weighed (the rule's, else the baseline).
    pub strategy: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FrontPoint {
    pub model: String,
    pub step: Option<u64>,
    pub fluency: Estimate,
    pub originality: Estimate,
    pub pareto: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Frontier {
    pub fluency: &'static str,
    pub originality: &'static str,
    pub points: Vec<FrontPoint>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub model: String,
    pub step: Option<u64>,
    pub objective: Option<Estimate>,
    /// Why it is out: each bound it misses, or a missing value.
    pub excluded: Vec<Exclusion>,
}

/// Why a candidate is out of the rule's reach (rendered by the report).
#[derive(Debug, Clone, PartialEq)]
pub enum Exclusion {
    /// The metric has no value for the candidate.
    Missing(String),
    Below {
        metric: String,
        value: f64,
        min: f64,
    },
    Above {
        metric: String,
        value: f64,
        max: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub rule: ChooseRule,
    pub candidates: Vec<Candidate>,
    pub chosen: Option<String>,
    pub runner_up: Option<String>,
    /// Chosen minus runner-up on the objective, over prompts.
    pub vs_runner_up: Option<ComparisonRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupAnalysis {
    pub group: Group,
    pub frontier: Option<Frontier>,
    pub choice: Option<Choice>,
}

/// The groups to weigh: each checkpoint series, and every model when the rule has no `among`.
pub fn groups(design: &Design) -> Vec<Group> {
    let rule = design.choose.as_ref();
    let strategy_for = |series: Option<&str>| match rule {
        Some(r) if r.among.as_deref() == series => r.strategy.clone(),
        _ => design.baseline.clone(),
    };
    let mut out: Vec<Group> = series_of(&design.models)
        .into_iter()
        .map(|(s, members)| Group {
            strategy: strategy_for(Some(&s)),
            members: members.into_iter().map(|(k, m)| (Some(k), m)).collect(),
            series: s,
        })
        .collect();
    if rule.is_some_and(|r| r.among.is_none()) {
        out.push(Group {
            series: String::new(),
            members: design.models.iter().map(|m| (None, m.clone())).collect(),
            strategy: strategy_for(None),
        });
    }
    out
}

pub fn analyze(
    design: &Design,
    rows: &[SummaryRow],
    table: &PromptTable,
    resamples: usize,
) -> Vec<GroupAnalysis> {
    groups(design)
        .into_iter()
        .map(|g| {
            let frontier = frontier(&g, rows);
            let choice = design
                .choose
                .as_ref()
                .filter(|r| r.among.as_deref().unwrap_or("") == g.series)
                .map(|r| choose(r, &g, rows, table, design.seed, resamples));
            GroupAnalysis {
                group: g,
                frontier,
                choice,
            }
        })
        .collect()
}

fn better(metric: &str, a: f64, b: f64) -> bool {
    match catalog::find(metric).and_then(|m| m.higher_is_better) {
        Some(false) => a < b,
        _ => a > b,
    }
}

fn frontier(g: &Group, rows: &[SummaryRow]) -> Option<Frontier> {
    let present = |m: &&&str| {
        g.members
            .iter()
            .any(|(_, id)| summary::find(rows, id, &g.strategy, m).is_some())
    };
    let fluency = catalog::find(FLUENCY.iter().find(present)?)?.name;
    let originality = catalog::find(["diversity_embed", "distinct_2"].iter().find(present)?)?.name;
    let mut points: Vec<FrontPoint> = g
        .members
        .iter()
        .filter_map(|(step, id)| {
            Some(FrontPoint {
                model: id.clone(),
                step: *step,
                fluency: summary::find(rows, id, &g.strategy, fluency)?.estimate,
                originality: summary::find(rows, id, &g.strategy, originality)?.estimate,
                pareto: false,
            })
        })
        .collect();
    let dominated: Vec<bool> = points
        .iter()
        .map(|p| {
            points.iter().any(|q| {
                let (qf, qo, pf, po) = (
                    q.fluency.point,
                    q.originality.point,
                    p.fluency.point,
                    p.originality.point,
                );
                let as_good = !better(fluency, pf, qf) && !better(originality, po, qo);
                as_good && (better(fluency, qf, pf) || better(originality, qo, po))
            })
        })
        .collect();
    for (p, d) in points.iter_mut().zip(dominated) {
        p.pareto = !d;
    }
    Some(Frontier {
        fluency,
        originality,
        points,
    })
}

fn choose(
    rule: &ChooseRule,
    g: &Group,
    rows: &[SummaryRow],
    table: &PromptTable,
    seed: u64,
    resamples: usize,
) -> Choice {
    let candidates: Vec<Candidate> = g
        .members
        .iter()
        .map(|(step, id)| {
            let objective =
                summary::find(rows, id, &rule.strategy, &rule.objective).map(|r| r.estimate);
            let mut excluded = Vec::new();
            if objective.is_none() {
                excluded.push(Exclusion::Missing(rule.objective.clone()));
            }
            for b in &rule.subject_to {
                match summary::find(rows, id, &rule.strategy, &b.metric) {
                    None => excluded.push(Exclusion::Missing(b.metric.clone())),
                    Some(r) => {
                        let x = r.estimate.point;
                        if let Some(lo) = b.min.filter(|lo| x < *lo) {
                            excluded.push(Exclusion::Below {
                                metric: b.metric.clone(),
                                value: x,
                                min: lo,
                            });
                        }
                        if let Some(hi) = b.max.filter(|hi| x > *hi) {
                            excluded.push(Exclusion::Above {
                                metric: b.metric.clone(),
                                value: x,
                                max: hi,
                            });
                        }
                    }
                }
            }
            Candidate {
                model: id.clone(),
                step: *step,
                objective,
                excluded,
            }
        })
        .collect();
    let mut ranked: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.excluded.is_empty())
        .collect();
    let key = |c: &Candidate| c.objective.map(|e| e.point).unwrap_or(f64::NAN);
    // stable: ties keep the earlier step first
    ranked.sort_by(|a, b| {
        let (x, y) = (key(a), key(b));
        let ord = x.total_cmp(&y);
        if rule.maximize {
            ord.reverse()
        } else {
            ord
        }
    });
    let chosen = ranked.first().map(|c| c.model.clone());
    let runner_up = ranked.get(1).map(|c| c.model.clone());
    let vs_runner_up = match (&chosen, &runner_up, catalog::find(&rule.objective)) {
        (Some(c), Some(r), Some(m)) => {
            match (
                table.get(c, &rule.strategy, m.name),
                table.get(r, &rule.strategy, m.name),
            ) {
                (Some(a), Some(b)) => {
                    let (a, b) = PromptTable::paired(a, b);
                    paired_one(
                        PairInput {
                            model: c.clone(),
                            strategy: rule.strategy.clone(),
                            reference: r.clone(),
                            metric: m.name,
                            a,
                            b,
                        },
                        seed,
                        "choose",
                        resamples,
                    )
                    .map(|mut row| {
                        row.p_holm = row.p_value;
                        row
                    })
                }
                _ => None,
            }
        }
        _ => None,
    };
    Choice {
        rule: rule.clone(),
        candidates,
        chosen,
        runner_up,
        vs_runner_up,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Bound;

    fn est(x: f64) -> Estimate {
        Estimate {
            point: x,
            ci_low: x - 0.1,
            ci_high: x + 0.1,
            std_err: 0.05,
        }
    }

    fn row(model: &str, metric: &'static str, x: f64) -> SummaryRow {
        SummaryRow {
            model: model.into(),
            strategy: "s".into(),
            metric,
            n_prompts: 8,
            estimate: est(x),
        }
    }

    fn design(choose: Option<ChooseRule>) -> Design {
        let strategy = crate::analysis::design::StrategyInfo::from_block(
            "s".into(),
            "greedy".into(),
            serde_json::Value::Null,
        );
        Design {
            name: "t".into(),
            seed: 1,
            models: ["ck@1000", "ck@20", "ck@500", "other"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            prompts: vec![],
            strategies: vec![strategy],
            baseline: "s".into(),
            samples: 1,
            max_new_tokens: 1,
            selectors: vec![],
            scorer: Some("other".into()),
            choose,
            calibrated_targets: Default::default(),
        }
    }

    /// Three checkpoints: @20 fluent and flat, @500 on the front, @1000 original but less
    /// fluent. Maximising diversity under an nll_ref bound picks @500 and says why @1000 is out.
    #[test]
    fn the_rule_picks_the_best_within_bounds_and_the_front_is_the_undominated() {
        let rows = vec![
            row("ck@20", "nll_ref", 2.0),
            row("ck@20", "diversity_embed", 0.2),
            row("ck@500", "nll_ref", 2.5),
            row("ck@500", "diversity_embed", 0.4),
            row("ck@1000", "nll_ref", 3.5),
            row("ck@1000", "diversity_embed", 0.5),
            // dominated by @500 on both
            row("other", "nll_ref", 9.0),
        ];
        let rule = ChooseRule {
            among: Some("ck".into()),
            strategy: "s".into(),
            objective: "diversity_embed".into(),
            maximize: true,
            subject_to: vec![Bound {
                metric: "nll_ref".into(),
                min: None,
                max: Some(3.0),
            }],
        };
        let d = design(Some(rule));
        let g = groups(&d);
        assert_eq!(g.len(), 1);
        let steps: Vec<Option<u64>> = g[0].members.iter().map(|m| m.0).collect();
        assert_eq!(
            steps,
            [Some(20), Some(500), Some(1000)],
            "step order, not id order"
        );
        let out = analyze(&d, &rows, &PromptTable::default(), 100);
        let fr = out[0].frontier.as_ref().unwrap();
        assert_eq!((fr.fluency, fr.originality), ("nll_ref", "diversity_embed"));
        assert!(
            fr.points.iter().all(|p| p.pareto),
            "each trades fluency for originality"
        );
        let ch = out[0].choice.as_ref().unwrap();
        assert_eq!(ch.chosen.as_deref(), Some("ck@500"));
        assert_eq!(ch.runner_up.as_deref(), Some("ck@20"));
        assert_eq!(
            ch.candidates[2].excluded,
            [Exclusion::Above {
                metric: "nll_ref".into(),
                value: 3.5,
                max: 3.0
            }]
        );
        // minimising nll_ref with no bound: @20
        let mut r2 = d.choose.clone().unwrap();
        r2.maximize = false;
        r2.objective = "nll_ref".into();
        r2.subject_to.clear();
        let out = analyze(&design(Some(r2)), &rows, &PromptTable::default(), 100);
        assert_eq!(
            out[0].choice.as_ref().unwrap().chosen.as_deref(),
            Some("ck@20")
        );
        // a dominated checkpoint is off the front
        let mut rows3 = rows.clone();
        rows3.push(row("ck@20", "nll_ref", 0.0));
        rows3.retain(|r| !(r.model == "ck@20" && r.metric == "nll_ref" && r.estimate.point == 2.0));
        rows3
            .iter_mut()
            .filter(|r| r.model == "ck@500" && r.metric == "diversity_embed")
            .for_each(|r| r.estimate = est(0.1));
        let out = analyze(&design(None), &rows3, &PromptTable::default(), 100);
        let p500 = out[0]
            .frontier
            .as_ref()
            .unwrap()
            .points
            .iter()
            .find(|p| p.model == "ck@500")
            .unwrap();
        assert!(!p500.pareto);
        assert!(out[0].choice.is_none());
    }
}
