//! Across models: the same strategy on two models, and whether a strategy's effect differs
//! between them, on the same prompts. Each model is compared with the design's first model (the
//! reference model; for a checkpoint series, the first checkpoint), per metric that measures
//! the same thing for every model ([`crate::metrics::Needs::across_models`]: the text, its
//! embeddings, the reference scorer; not a model's own trace, whose likelihoods, entropies and
//! token counts differ in scale between models and tokenizers).
//!
//! - **model contrast** (`contrast = model`), per strategy: `B - A` over prompts, where A is the
//!   reference model and B the other; paired bootstrap CI, Wilcoxon signed-rank p, rank-biserial
//!   effect, as [`super::compare`] does between strategies;
//! - **interaction** (`contrast = interaction`), per non-baseline strategy S: the difference of
//!   differences `(S_B - base_B) - (S_A - base_A)` per prompt (prompts present in all four
//!   cells), its mean with a bootstrap CI and the Wilcoxon signed-rank p of the per-prompt
//!   values against 0: does S move the metric more on one model than on the other.
//!
//! Holm's adjustment runs over the strategies of one (contrast, model B, metric), as the
//! strategy comparisons' does over the strategies of one (model, metric).

use std::collections::BTreeMap;

use crate::stats::{holm, Estimate};

use super::catalog;
use super::compare::{paired_one, PairInput};
use super::design::Design;
use super::table::PromptTable;

/// What a row contrasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contrast {
    /// Model B minus model A under one strategy.
    Model,
    /// B's effect of the strategy against the baseline minus A's.
    Interaction,
}

impl Contrast {
    pub fn name(self) -> &'static str {
        match self {
            Contrast::Model => "model",
            Contrast::Interaction => "interaction",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelComparison {
    pub contrast: Contrast,
    pub strategy: String,
    /// The reference model (the design's first).
    pub model_a: String,
    pub model_b: String,
    pub metric: &'static str,
    pub n_prompts: usize,
    /// Mean over prompts of the contrast (see the module doc), with its 95% CI.
    pub diff: Estimate,
    pub p_value: f64,
    pub p_holm: f64,
    pub effect_size: f64,
    /// The smallest p-value these differences allow (see [`super::compare::ComparisonRow`]).
    pub min_p: f64,
}

/// Every model after the first against the first, per strategy (model contrast) and per
/// non-baseline strategy (interaction), for each metric comparable across models; empty with
/// one model. Order: contrast, model B, strategy (design order), metric (catalogue order).
pub fn compare_models(
    design: &Design,
    table: &PromptTable,
    resamples: usize,
) -> Vec<ModelComparison> {
    let Some((a, others)) = design.models.split_first() else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for b in others {
        for m in catalog::all().filter(|m| m.needs.across_models()) {
            for s in &design.strategies {
                let (Some(sa), Some(sb)) =
                    (table.get(a, &s.id, m.name), table.get(b, &s.id, m.name))
                else {
                    continue;
                };
                let (vb, va) = PromptTable::paired(sb, sa);
                rows.extend(one(
                    Contrast::Model,
                    a,
                    b,
                    &s.id,
                    m.name,
                    vb,
                    va,
                    design.seed,
                    resamples,
                ));
                if s.id == design.baseline {
                    continue;
                }
                let (Some(ba), Some(bb)) = (
                    table.get(a, &design.baseline, m.name),
                    table.get(b, &design.baseline, m.name),
                ) else {
                    continue;
                };
                let d: Vec<f64> = sa
                    .iter()
                    .filter_map(|(p, &x)| Some((sb.get(p)? - bb.get(p)?) - (x - ba.get(p)?)))
                    .collect();
                let zeros = vec![0.0; d.len()];
                rows.extend(one(
                    Contrast::Interaction,
                    a,
                    b,
                    &s.id,
                    m.name,
                    d,
                    zeros,
                    design.seed,
                    resamples,
                ));
            }
        }
    }
    let mut families: BTreeMap<(Contrast, String, &'static str), Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        families
            .entry((r.contrast, r.model_b.clone(), r.metric))
            .or_default()
            .push(i);
    }
    for idx in families.values() {
        let adjusted = holm(&idx.iter().map(|&i| rows[i].p_value).collect::<Vec<_>>());
        for (&i, p) in idx.iter().zip(adjusted) {
            rows[i].p_holm = p;
        }
    }
    let pos_s = |s: &str| design.strategies.iter().position(|x| x.id == s);
    let pos_b = |m: &str| design.models.iter().position(|x| x == m);
    let pos_k = |k: &str| catalog::all().position(|x| x.name == k);
    rows.sort_by_key(|r| {
        (
            r.contrast,
            pos_b(&r.model_b),
            pos_s(&r.strategy),
            pos_k(r.metric),
        )
    });
    rows
}

/// One contrast from its paired values (`x - y` per prompt); `None` without pairs. The
/// bootstrap seed label is `<contrast>/<model B>/<strategy>/<metric>` under the experiment seed.
#[allow(clippy::too_many_arguments)]
fn one(
    contrast: Contrast,
    a: &str,
    b: &str,
    strategy: &str,
    metric: &'static str,
    x: Vec<f64>,
    y: Vec<f64>,
    seed: u64,
    resamples: usize,
) -> Option<ModelComparison> {
    let r = paired_one(
        PairInput {
            model: b.to_string(),
            strategy: strategy.to_string(),
            reference: a.to_string(),
            metric,
            a: x,
            b: y,
        },
        seed,
        contrast.name(),
        resamples,
    )?;
    Some(ModelComparison {
        contrast,
        strategy: r.strategy,
        model_a: r.reference,
        model_b: r.model,
        metric,
        n_prompts: r.n_prompts,
        diff: r.diff,
        p_value: r.p_value,
        p_holm: r.p_holm,
        effect_size: r.effect_size,
        min_p: r.min_p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::design::StrategyInfo;

    fn design(models: &[&str]) -> Design {
        let strategy = |id: &str| {
            StrategyInfo::from_block(id.into(), "temperature".into(), serde_json::Value::Null)
        };
        Design {
            name: "t".into(),
            seed: 3,
            models: models.iter().map(|m| m.to_string()).collect(),
            prompts: vec![],
            strategies: vec![strategy("base"), strategy("hot")],
            baseline: "base".into(),
            samples: 1,
            max_new_tokens: 1,
            selectors: vec![],
            scorer: None,
            choose: None,
            calibrated_targets: Default::default(),
        }
    }

    fn cell(
        t: &mut PromptTable,
        model: &str,
        strategy: &str,
        metric: &'static str,
        values: &[f64],
    ) {
        t.cells.insert(
            (model.into(), strategy.into(), metric),
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| (format!("p{i:02}"), v))
                .collect(),
        );
    }

    /// Hand-made prompt values with known contrasts: B is 0.1 above A under the baseline and
    /// 0.3 above under `hot` (interaction +0.2 on every prompt); a metric of the models' own
    /// traces is never compared.
    #[test]
    fn contrasts_and_interaction_on_known_values() {
        let n = 8;
        let base_a: Vec<f64> = (0..n).map(|i| 0.4 + 0.01 * i as f64).collect();
        let hot_a: Vec<f64> = base_a.iter().map(|x| x + 0.05).collect();
        let base_b: Vec<f64> = base_a.iter().map(|x| x + 0.1).collect();
        let hot_b: Vec<f64> = hot_a.iter().map(|x| x + 0.3).collect();
        let mut t = PromptTable::default();
        cell(&mut t, "a", "base", "distinct_2", &base_a);
        cell(&mut t, "a", "hot", "distinct_2", &hot_a);
        cell(&mut t, "b", "base", "distinct_2", &base_b);
        cell(&mut t, "b", "hot", "distinct_2", &hot_b);
        // own-trace metric: present for both, never contrasted
        cell(&mut t, "a", "base", "nll_mean", &base_a);
        cell(&mut t, "b", "base", "nll_mean", &base_b);
        let rows = compare_models(&design(&["a", "b"]), &t, 400);
        assert!(rows.iter().all(|r| r.metric == "distinct_2"));
        let find = |c: Contrast, s: &str| {
            rows.iter()
                .find(|r| r.contrast == c && r.strategy == s)
                .unwrap()
        };
        let m_base = find(Contrast::Model, "base");
        assert!((m_base.diff.point - 0.1).abs() < 1e-12);
        assert_eq!(
            (m_base.model_a.as_str(), m_base.model_b.as_str()),
            ("a", "b")
        );
        assert!((m_base.p_value - 2.0 / 256.0).abs() < 1e-12);
        assert!(
            (m_base.p_holm - 4.0 / 256.0).abs() < 1e-12,
            "Holm over 2 strategies"
        );
        let m_hot = find(Contrast::Model, "hot");
        assert!((m_hot.diff.point - 0.3).abs() < 1e-12);
        let i_hot = find(Contrast::Interaction, "hot");
        assert!((i_hot.diff.point - 0.2).abs() < 1e-12);
        assert_eq!(i_hot.n_prompts, n);
        assert_eq!(i_hot.effect_size, 1.0);
        // a single interaction in its family: Holm leaves it
        assert_eq!(i_hot.p_holm, i_hot.p_value);
        assert!(rows
            .iter()
            .all(|r| !(r.contrast == Contrast::Interaction && r.strategy == "base")));
        // one model: nothing to compare
        assert!(compare_models(&design(&["a"]), &t, 400).is_empty());
    }

    /// No interaction: the same shift on both models gives a zero difference of differences,
    /// which no test calls significant (values in eighths, so the differences are exact).
    #[test]
    fn parallel_effects_have_no_interaction() {
        let base_a: Vec<f64> = (0..10).map(|i| ((i * 7) % 10) as f64 / 8.0).collect();
        let hot_a: Vec<f64> = base_a.iter().map(|x| x + 0.25).collect();
        let base_b: Vec<f64> = base_a.iter().map(|x| x * 2.0).collect();
        let hot_b: Vec<f64> = base_b.iter().map(|x| x + 0.25).collect();
        let mut t = PromptTable::default();
        cell(&mut t, "a", "base", "nll_ref", &base_a);
        cell(&mut t, "a", "hot", "nll_ref", &hot_a);
        cell(&mut t, "b", "base", "nll_ref", &base_b);
        cell(&mut t, "b", "hot", "nll_ref", &hot_b);
        let rows = compare_models(&design(&["a", "b"]), &t, 400);
        let i = rows
            .iter()
            .find(|r| r.contrast == Contrast::Interaction)
            .unwrap();
        assert_eq!(i.diff.point, 0.0);
        assert!(i.p_holm >= 0.05 || i.p_holm.is_nan());
        // while the model contrast under the baseline (B = 2A, A >= 0) is there
        let m = rows
            .iter()
            .find(|r| r.contrast == Contrast::Model && r.strategy == "base")
            .unwrap();
        assert!(m.diff.point > 0.0 && m.p_value < 0.05);
    }
}
