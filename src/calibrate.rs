//! Calibration of quantile thresholds: a model's own entropy distribution, measured once per
//! model, from which `{quantile: q}` thresholds and targets resolve to nats.
//!
//! The same `entropy_low: 1.0` means different things on two models: Gemma 3 and SmolLM2 have
//! different entropy profiles. Written as `entropy_low: {quantile: 0.25}`, the threshold is the
//! model's own 25th percentile of next-token entropy, so a strategy means the same *relative*
//! thing on every model (and keeps one id across them). The distribution is the per-token
//! entropy of the unmodified next-token distribution along one seeded sample per prompt of the
//! experiment, up to `calibration.tokens` tokens at `calibration.temperature` (default 64
//! tokens at 1.0: the model's own distribution); quantiles are NumPy's default (linear,
//! [`crate::stats::percentile`]) over the pooled tokens. The pass decodes like `run`
//! (batch-invariant rows, ChaCha seeds from the experiment seed), so it is reproducible
//! bit for bit and a resumed run reads its values back from the manifest.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{Calibration, Experiment};
use crate::engine::LoadedModel;
use crate::runner::{generate_batch, GenerateArgs, Job};
use crate::strategy::StrategySpec;

/// The levels every calibration reports (the experiment's own levels are added).
pub const LEVELS: [f64; 9] = [0.05, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.95];

/// The strategy id the calibration samples' seeds are derived under (no strategy id starts
/// with `@`).
const SEED_LABEL: &str = "@calibration";

/// One model's calibration, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCalibration {
    pub model: String,
    /// The weights it was measured on (a resumed run reuses it only for the same weights).
    pub weights_sha256: String,
    pub tokens_per_prompt: usize,
    pub temperature: f64,
    pub prompts: usize,
    /// Tokens whose entropy makes the distribution.
    pub n_tokens: usize,
    pub mean_nats: f64,
    /// Quantile level (as written, e.g. "0.25") -> entropy in nats.
    pub quantiles: BTreeMap<String, f64>,
    /// Strategy id -> key -> the resolved value in nats.
    pub resolved: BTreeMap<String, BTreeMap<String, f64>>,
}

/// The key of level `q` in [`ModelCalibration::quantiles`].
pub fn level_key(q: f64) -> String {
    format!("{q}")
}

/// Every level to report: [`LEVELS`] and those the strategies use, ascending.
pub fn levels(strategies: &[StrategySpec]) -> Vec<f64> {
    let mut v: Vec<f64> = LEVELS
        .iter()
        .copied()
        .chain(
            strategies
                .iter()
                .flat_map(|s| s.quantiles.iter().map(|q| q.q)),
        )
        .collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// The per-token entropies (nats) of the calibration samples of `model` (id `model_id`): one
/// sample per prompt of `exp`. Stops early (returning what it has) when `stop` is set.
pub fn entropies(
    exp: &Experiment,
    settings: &Calibration,
    model: &LoadedModel,
    model_id: &str,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let block: serde_yaml::Value = serde_yaml::from_str(&format!(
        "{{kind: temperature, temperature: {}}}",
        settings.temperature
    ))?;
    let strategy = crate::config::strategy::parse_single(
        block.as_mapping().expect("a mapping"),
        "calibration",
    )
    .map_err(|e| anyhow!("the calibration strategy: {e:?}"))?;
    let mut out = Vec::new();
    for prompt in &exp.prompts {
        let (ids, _) = model.encode_prompt(prompt)?;
        let mut prefilled = model.model.fork();
        let first = prefilled
            .forward(&ids, 0)
            .with_context(|| format!("calibration prefill of prompt {:?}", prompt.id))?;
        let args = GenerateArgs {
            model,
            prefilled: prefilled.as_ref(),
            first_logits: &first,
            prompt_ids: &ids,
            max_new_tokens: settings.tokens,
            stop: &exp.stop,
            stop_flag: stop,
        };
        let job = Job {
            strategy: &strategy,
            seed: crate::seed::sample_seed(exp.seed, model_id, &prompt.id, SEED_LABEL, 0),
        };
        let mut got = None;
        generate_batch(&args, &[job], |_, g| {
            got = Some(g);
            Ok(())
        })
        .with_context(|| format!("calibration sample of prompt {:?}", prompt.id))?;
        if let Some(g) = got {
            if let Some(e) = g.error {
                return Err(anyhow!("calibration sample of prompt {:?}: {e}", prompt.id));
            }
            out.extend(g.trace.entropy.iter().map(|&h| h as f64));
        }
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
    }
    Ok(out)
}

/// The calibration of a model from its entropies: the quantiles at `levels` and the resolved
/// thresholds of every quantile strategy.
pub fn summarize(
    model_id: &str,
    weights_sha256: &str,
    settings: &Calibration,
    prompts: usize,
    entropies: &[f64],
    levels: &[f64],
) -> Result<ModelCalibration> {
    let mut sorted: Vec<f64> = entropies
        .iter()
        .copied()
        .filter(|h| h.is_finite())
        .collect();
    if sorted.is_empty() {
        return Err(anyhow!(
            "the calibration of model {model_id:?} produced no token (every prompt ended at once); quantile thresholds cannot be resolved"
        ));
    }
    sorted.sort_by(f64::total_cmp);
    let quantiles = levels
        .iter()
        .map(|&q| {
            (
                level_key(q),
                crate::stats::percentile(&sorted, q).expect("q in (0, 1), data non-empty"),
            )
        })
        .collect();
    Ok(ModelCalibration {
        model: model_id.to_string(),
        weights_sha256: weights_sha256.to_string(),
        tokens_per_prompt: settings.tokens,
        temperature: settings.temperature,
        prompts,
        n_tokens: sorted.len(),
        mean_nats: sorted.iter().sum::<f64>() / sorted.len() as f64,
        quantiles,
        resolved: BTreeMap::new(),
    })
}

/// The experiment's strategies for this model: each quantile threshold replaced by the
/// calibration's value (recorded in `cal.resolved`); the others as they are.
pub fn resolve(
    strategies: &[StrategySpec],
    cal: &mut ModelCalibration,
) -> Result<Vec<StrategySpec>> {
    let mut out = Vec::with_capacity(strategies.len());
    cal.resolved.clear();
    for s in strategies {
        let mut missing = None;
        let (spec, values) = crate::config::strategy::resolve_quantiles(s, |q| {
            cal.quantiles
                .get(&level_key(q))
                .copied()
                .unwrap_or_else(|| {
                    missing = Some(q);
                    f64::NAN
                })
        })
        .map_err(|e| {
            anyhow!(
                "strategy {:?} on model {:?} with its calibrated thresholds: {}",
                s.id,
                cal.model,
                e.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        if let Some(q) = missing {
            return Err(anyhow!(
                "the calibration of model {:?} has no quantile {q}",
                cal.model
            ));
        }
        if !values.is_empty() {
            cal.resolved
                .insert(s.id.clone(), values.into_iter().collect());
        }
        out.push(spec);
    }
    Ok(out)
}

/// One model's calibration and the entropies it was made from.
pub struct Measured {
    pub calibration: ModelCalibration,
    pub entropies: Vec<f64>,
}

/// Calibrate one loaded model: its [`entropies`], then [`summarize`] at the experiment's
/// [`levels`] (thresholds not yet resolved); `None` when `stop` was set on the way, since a
/// partial pass would give other quantiles.
pub fn measure(
    exp: &Experiment,
    settings: &Calibration,
    model: &LoadedModel,
    model_id: &str,
    stop: &AtomicBool,
) -> Result<Option<Measured>> {
    let entropies = entropies(exp, settings, model, model_id, stop)?;
    if stop.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(None);
    }
    let calibration = summarize(
        model_id,
        &model.weights_sha256,
        settings,
        exp.prompts.len(),
        &entropies,
        &levels(&exp.strategies),
    )?;
    Ok(Some(Measured {
        calibration,
        entropies,
    }))
}

/// Calibrate every model of `exp` as `run` would (its `calibration:` settings, or the
/// defaults), resolving its quantile strategies; `declab calibrate`'s work.
pub fn measure_all(
    exp: &Experiment,
    device: &candle_core::Device,
    stop: &AtomicBool,
) -> Result<Vec<Measured>> {
    let settings = exp.calibration.clone().unwrap_or_default();
    let mut out = Vec::new();
    for m in &exp.models {
        let model =
            crate::engine::load(m, device).with_context(|| format!("loading model {:?}", m.id))?;
        let Some(mut measured) = measure(exp, &settings, &model, &m.id, stop)? else {
            break;
        };
        resolve(&exp.strategies, &mut measured.calibration)?;
        out.push(measured);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> StrategySpec {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        crate::config::strategy::parse_single(v.as_mapping().unwrap(), "s").unwrap()
    }

    /// Quantiles by NumPy's linear rule, and thresholds written back in the block's unit: the
    /// resolved processors are those of the same block written in nats.
    #[test]
    fn quantile_thresholds_resolve_to_the_models_values() {
        let settings = Calibration {
            tokens: 4,
            temperature: 1.0,
        };
        let switch = spec("{kind: entropy_switch, unit: bits, entropy_low: {quantile: 0.25}, entropy_high: {quantile: 0.75}, low: {kind: greedy}, mid: {kind: temperature, temperature: 0.8}, high: {kind: min_p, min_p: 0.1}}");
        let target = spec("{kind: target_entropy, target: {quantile: 0.5}}");
        let plain = spec("{kind: temperature, temperature: 0.7}");
        assert!(
            switch
                .id
                .starts_with("entropy_switch(low=q0.25,high=q0.75,"),
            "{}",
            switch.id
        );
        assert!(
            switch.needs_calibration() && target.needs_calibration() && !plain.needs_calibration()
        );
        let strategies = vec![switch.clone(), target.clone(), plain.clone()];
        // 0, 1, ..., 8 nats: the q-quantile is 8q
        let h: Vec<f64> = (0..9).rev().map(|i| i as f64).collect();
        let mut cal = summarize("m", "sha", &settings, 3, &h, &levels(&strategies)).unwrap();
        assert_eq!(cal.quantiles["0.25"], 2.0);
        assert_eq!(cal.quantiles["0.5"], 4.0);
        assert_eq!(cal.n_tokens, 9);
        let resolved = resolve(&strategies, &mut cal).unwrap();
        assert!(resolved.iter().all(|s| !s.needs_calibration()));
        assert_eq!(resolved[0].id, switch.id, "the id keeps the quantiles");
        assert_eq!(resolved[0].params, switch.params);
        let ln2 = std::f64::consts::LN_2;
        let by_hand = spec(&format!("{{kind: entropy_switch, unit: bits, entropy_low: {:?}, entropy_high: {:?}, low: {{kind: greedy}}, mid: {{kind: temperature, temperature: 0.8}}, high: {{kind: min_p, min_p: 0.1}}}}", 2.0 / ln2, 6.0 / ln2));
        assert_eq!(resolved[0].processors, by_hand.processors);
        let target_by_hand = spec("{kind: target_entropy, target: 4.0}");
        assert_eq!(resolved[1].processors, target_by_hand.processors);
        assert_eq!(resolved[2], plain);
        assert_eq!(cal.resolved[&switch.id]["entropy_low"], 2.0);
        assert_eq!(cal.resolved[&target.id]["target"], 4.0);
        assert!(!cal.resolved.contains_key(&plain.id));
        assert!(summarize("m", "sha", &settings, 3, &[], &LEVELS).is_err());
    }
}
