//! Best-of-N selection in the analysis: every selector of the experiment (`select:`) applied to
//! the successful samples of every cell (model × prompt × strategy), and what it bought.
//!
//! * [`select_cells`]: one [`SelectionRow`] per (cell, selector): the chosen sample's index and
//!   score (`selections.csv`).
//! * [`compare`]: per (model, strategy, selector, per-sample metric), paired over prompts, the
//!   chosen sample's value against the `random` selector's pick (the control; vLLM dropped
//!   likelihood-ranked `best_of` because it tracked quality poorly, so a selector has to beat a
//!   random pick to count) and against the mean of the cell's N samples (what one sample gives
//!   on average): mean difference with a paired bootstrap CI, Wilcoxon signed-rank p, and Holm
//!   across the selectors of one (model, strategy, metric, reference). Latency metrics are left
//!   out (they measure the cost, reported by [`costs`]).
//! * [`costs`]: what one selected output costs against one sample: N samples' tokens and time.

use std::collections::{BTreeMap, HashMap};

use crate::metrics::{Family, Level};
use crate::record::SampleRecord;
use crate::select::{choose, Candidate, Cell, SelectorSpec};
use crate::stats::{bootstrap_mean, holm, Estimate};

use super::catalog;
use super::compare::{paired_one, ComparisonRow, PairInput};
use super::design::Design;
use super::summary::CONFIDENCE;
use super::table::PromptTable;
use super::SampleRow;

/// The reference a selection is compared with: the random pick.
pub const VS_RANDOM: &str = "random";
/// The reference a selection is compared with: the mean of the cell's samples.
pub const VS_MEAN: &str = "mean_of_n";

/// What one selector chose in one cell.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionRow {
    pub model: String,
    pub prompt_id: String,
    pub strategy: String,
    pub selector: String,
    /// Successful samples in the cell that had a score.
    pub n: usize,
    pub chosen_index: usize,
    pub score: f64,
}

/// A selector's chosen samples against a reference ([`VS_RANDOM`] or [`VS_MEAN`]);
/// `cmp.reference` names the reference, `cmp.strategy` the strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionComparison {
    pub selector: String,
    pub cmp: ComparisonRow,
}

/// What a selected output costs, per (model, strategy): the means over prompts of a cell's
/// totals (N samples) and of one sample's.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionCost {
    pub model: String,
    pub strategy: String,
    /// Mean samples per cell.
    pub n: f64,
    pub tokens_per_sample: f64,
    /// Tokens generated for one selected output (the cell's total).
    pub tokens_per_selection: f64,
    /// Forward (amortised, as traced) plus sampler time of one sample, ms.
    pub ms_per_sample: f64,
    /// The same for one selected output (the cell's total), with its CI over prompts.
    pub ms_per_selection: Estimate,
    /// Sampler share of that time (%): the selectors' trace fields are taken in the sampler.
    pub sampler_pct: f64,
}

/// The seed of one selector's draws in one cell.
pub fn cell(design: &Design, model: &str, prompt: &str, strategy: &str, selector: &str) -> Cell {
    Cell {
        seed: crate::seed::selection_seed(design.seed, model, prompt, strategy, selector),
    }
}

/// Apply every selector to every cell of `ok` (successful records in canonical order: a
/// cell's samples are contiguous).
pub fn select_cells(design: &Design, ok: &[&SampleRecord]) -> Vec<SelectionRow> {
    let mut rows = Vec::new();
    if design.selectors.is_empty() {
        return rows;
    }
    for group in ok.chunk_by(|a, b| {
        (&a.model, &a.prompt_id, &a.strategy) == (&b.model, &b.prompt_id, &b.strategy)
    }) {
        let r0 = group[0];
        let cands: Vec<Candidate> = group
            .iter()
            .map(|r| Candidate {
                index: r.sample_index,
                trace: &r.trace,
            })
            .collect();
        let key = CellKey {
            model: &r0.model,
            prompt_id: &r0.prompt_id,
            strategy: &r0.strategy,
        };
        rows.extend(select_cell(design.seed, &design.selectors, &key, &cands));
    }
    rows
}

/// Which cell (model, prompt, strategy) candidates belong to.
#[derive(Debug, Clone, Copy)]
pub struct CellKey<'a> {
    pub model: &'a str,
    pub prompt_id: &'a str,
    pub strategy: &'a str,
}

/// Every selector applied to the candidates of one cell, the random draws seeded as [`cell`]
/// seeds them from the experiment seed (`declab select` applies it to teacher-forced traces).
pub fn select_cell(
    experiment_seed: u64,
    selectors: &[SelectorSpec],
    key: &CellKey,
    cands: &[Candidate],
) -> Vec<SelectionRow> {
    let mut rows = Vec::new();
    for sel in selectors {
        let c = Cell {
            seed: crate::seed::selection_seed(
                experiment_seed,
                key.model,
                key.prompt_id,
                key.strategy,
                &sel.id,
            ),
        };
        if let Some(ch) = choose(sel.selector.as_ref(), cands, &c) {
            rows.push(SelectionRow {
                model: key.model.to_string(),
                prompt_id: key.prompt_id.to_string(),
                strategy: key.strategy.to_string(),
                selector: sel.id.clone(),
                n: ch.scored,
                chosen_index: ch.index,
                score: ch.score,
            });
        }
    }
    rows
}

/// The first `random` selector, the control.
pub fn control(selectors: &[SelectorSpec]) -> Option<&SelectorSpec> {
    selectors
        .iter()
        .find(|s| s.kind() == crate::select::random::KIND.name)
}

/// Paired comparisons of every selector's picks (see the module docs), in design order.
pub fn compare(
    design: &Design,
    rows: &[SelectionRow],
    samples: &[SampleRow],
    table: &PromptTable,
    resamples: usize,
) -> Vec<SelectionComparison> {
    let by_sample: HashMap<(&str, &str, &str, usize), &SampleRow> = samples
        .iter()
        .map(|s| {
            (
                (
                    s.model.as_str(),
                    s.prompt_id.as_str(),
                    s.strategy.as_str(),
                    s.sample_index,
                ),
                s,
            )
        })
        .collect();
    // (model, strategy, selector) -> prompt -> chosen index
    let mut chosen: BTreeMap<(&str, &str, &str), BTreeMap<&str, usize>> = BTreeMap::new();
    for r in rows {
        chosen
            .entry((&r.model, &r.strategy, &r.selector))
            .or_default()
            .insert(&r.prompt_id, r.chosen_index);
    }
    let values = |model: &str, strategy: &str, sel: &str, metric: &'static str| {
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        if let Some(per) = chosen.get(&(model, strategy, sel)) {
            for (&p, &i) in per {
                if let Some(v) = by_sample
                    .get(&(model, p, strategy, i))
                    .and_then(|s| s.values.get(metric))
                    .filter(|v| v.is_finite())
                {
                    out.insert(p.to_string(), v);
                }
            }
        }
        out
    };
    let control = control(&design.selectors).map(|s| s.id.as_str());
    let mut out: Vec<SelectionComparison> = Vec::new();
    for model in &design.models {
        for s in &design.strategies {
            for m in catalog::of_level(Level::Sample).filter(|m| m.family != Family::Latency) {
                let random = control.map(|c| values(model, &s.id, c, m.name));
                let mean = table.get(model, &s.id, m.name);
                let mut family: Vec<(usize, &str)> = Vec::new();
                for sel in &design.selectors {
                    let picked = values(model, &s.id, &sel.id, m.name);
                    if picked.is_empty() {
                        continue;
                    }
                    let refs = [
                        (
                            VS_RANDOM,
                            random.as_ref().filter(|_| Some(sel.id.as_str()) != control),
                        ),
                        (VS_MEAN, mean),
                    ];
                    for (reference, base) in refs {
                        let Some(base) = base else { continue };
                        let (a, b) = PromptTable::paired(&picked, base);
                        let inp = PairInput {
                            model: model.clone(),
                            strategy: s.id.clone(),
                            reference: reference.into(),
                            metric: m.name,
                            a,
                            b,
                        };
                        let label = format!("select/{}/{reference}", sel.id);
                        if let Some(cmp) = paired_one(inp, design.seed, &label, resamples) {
                            family.push((out.len(), reference));
                            out.push(SelectionComparison {
                                selector: sel.id.clone(),
                                cmp,
                            });
                        }
                    }
                }
                for reference in [VS_RANDOM, VS_MEAN] {
                    let idx: Vec<usize> = family
                        .iter()
                        .filter(|(_, r)| *r == reference)
                        .map(|(i, _)| *i)
                        .collect();
                    let adjusted =
                        holm(&idx.iter().map(|&i| out[i].cmp.p_value).collect::<Vec<_>>());
                    for (&i, p) in idx.iter().zip(adjusted) {
                        out[i].cmp.p_holm = p;
                    }
                }
            }
        }
    }
    out
}

/// One cell's (samples, tokens, ms, sampler ms), summed over its samples.
type CellTotals = (usize, usize, f64, f64);

/// The cost of one selected output against one sample, per (model, strategy) with samples.
pub fn costs(design: &Design, ok: &[&SampleRecord], resamples: usize) -> Vec<SelectionCost> {
    if design.selectors.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for model in &design.models {
        for s in &design.strategies {
            let mut per: BTreeMap<&str, CellTotals> = BTreeMap::new();
            for r in ok
                .iter()
                .filter(|r| &r.model == model && r.strategy == s.id)
            {
                let e = per.entry(&r.prompt_id).or_default();
                let fwd: f64 = r.trace.forward_ms.iter().map(|&x| x as f64).sum();
                let smp: f64 = r.trace.sampler_us.iter().map(|&x| x as f64 / 1000.0).sum();
                e.0 += 1;
                e.1 += r.token_ids.len();
                e.2 += fwd + smp;
                e.3 += smp;
            }
            if per.is_empty() {
                continue;
            }
            let k = per.len() as f64;
            let mean = |f: &dyn Fn(&CellTotals) -> f64| per.values().map(f).sum::<f64>() / k;
            let samples = mean(&|e| e.0 as f64);
            let cell_ms: Vec<f64> = per.values().map(|e| e.2).collect();
            let seed =
                crate::seed::stats_seed(design.seed, &format!("select-cost/{model}/{}", s.id));
            let Ok(ms_per_selection) = bootstrap_mean(&cell_ms, resamples, seed, CONFIDENCE) else {
                continue;
            };
            let total_ms: f64 = per.values().map(|e| e.2).sum();
            let sampler_ms: f64 = per.values().map(|e| e.3).sum();
            out.push(SelectionCost {
                model: model.clone(),
                strategy: s.id.clone(),
                n: samples,
                tokens_per_sample: per.values().map(|e| e.1 as f64).sum::<f64>()
                    / per.values().map(|e| e.0 as f64).sum::<f64>(),
                tokens_per_selection: mean(&|e| e.1 as f64),
                ms_per_sample: total_ms / per.values().map(|e| e.0 as f64).sum::<f64>(),
                ms_per_selection,
                sampler_pct: if total_ms > 0.0 {
                    sampler_ms / total_ms * 100.0
                } else {
                    0.0
                },
            });
        }
    }
    out
}
