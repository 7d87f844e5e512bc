//! What the analysis needs to know about an experiment: the order of models, prompts and
//! strategies, each strategy's kind and parameters, the baseline and the seed. Built from a
//! validated [`Experiment`] (at the end of a run) or from a manifest's `resolved_config` (for
//! `declab report` on a stored folder, which must not need the model files).

use anyhow::{anyhow, Result};
use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::Experiment;

#[derive(Debug, Clone, PartialEq)]
pub struct StrategyInfo {
    pub id: String,
    pub kind: String,
    /// The strategy block as written (after grid expansion).
    pub params: Value,
    /// The entropy the strategy aims at (nats), as its typed spec states it; `None` for a
    /// quantile target, whose value is per model ([`Design::target_of`]).
    pub target_nats: Option<f64>,
}

impl StrategyInfo {
    /// From a stored block (a manifest's or a record's `params`): the typed spec is parsed
    /// again from the block as written, so the analysis never reads parameters itself.
    pub(crate) fn from_block(id: String, kind: String, params: Value) -> StrategyInfo {
        let target_nats = serde_yaml::to_value(&params)
            .ok()
            .and_then(|v| {
                v.as_mapping()
                    .and_then(|m| crate::config::strategy::parse_single(m, "params").ok())
            })
            // a quantile target has its value per model ([`Design::target_of`])
            .filter(|spec| !spec.needs_calibration())
            .and_then(|spec| spec.target_nats());
        StrategyInfo {
            id,
            kind,
            params,
            target_nats,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    pub name: String,
    pub seed: u64,
    pub models: Vec<String>,
    pub prompts: Vec<String>,
    pub strategies: Vec<StrategyInfo>,
    pub baseline: String,
    pub samples: usize,
    pub max_new_tokens: usize,
    /// Best-of-N selectors applied to every cell (`select:`).
    pub selectors: Vec<crate::select::SelectorSpec>,
    /// The reference scorer's model id (`scorer:`).
    pub scorer: Option<String>,
    /// The rule that picks one model (`choose:`).
    pub choose: Option<crate::config::ChooseRule>,
    /// Quantile targets resolved per model: (model, strategy id) -> nats (from the manifest's
    /// calibration, [`Design::with_calibration`]).
    pub calibrated_targets: BTreeMap<(String, String), f64>,
}

impl Design {
    pub fn from_experiment(exp: &Experiment) -> Design {
        Design {
            name: exp.name.clone(),
            seed: exp.seed,
            models: exp.models.iter().map(|m| m.id.clone()).collect(),
            prompts: exp.prompts.iter().map(|p| p.id.clone()).collect(),
            strategies: exp
                .strategies
                .iter()
                .map(|s| StrategyInfo {
                    id: s.id.clone(),
                    kind: s.kind.clone(),
                    params: s.params.clone(),
                    target_nats: s.target_nats().filter(|_| !s.needs_calibration()),
                })
                .collect(),
            baseline: exp.baseline.clone(),
            samples: exp.samples,
            max_new_tokens: exp.max_new_tokens,
            selectors: exp.select.clone(),
            scorer: exp.scorer.clone(),
            choose: exp.choose.clone(),
            calibrated_targets: BTreeMap::new(),
        }
    }

    /// From the `resolved_config` object of a manifest (the serialised [`Experiment`]).
    pub fn from_resolved_config(v: &Value) -> Result<Design> {
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| anyhow!("the manifest's resolved_config has no `{k}`"))
        };
        let ids = |k: &str| -> Result<Vec<String>> {
            field(k)?
                .as_array()
                .ok_or_else(|| anyhow!("resolved_config.{k} is not a list"))?
                .iter()
                .map(|x| {
                    x.get("id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| anyhow!("resolved_config.{k}: an item has no id"))
                })
                .collect()
        };
        let strategies = field("strategies")?
            .as_array()
            .ok_or_else(|| anyhow!("resolved_config.strategies is not a list"))?
            .iter()
            .map(|s| {
                Ok(StrategyInfo::from_block(
                    s.get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| anyhow!("a strategy has no id"))?
                        .to_string(),
                    s.get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    s.get("params").cloned().unwrap_or(Value::Null),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Design {
            name: field("name")?.as_str().unwrap_or("").to_string(),
            seed: field("seed")?
                .as_u64()
                .ok_or_else(|| anyhow!("resolved_config.seed is not an unsigned integer"))?,
            models: ids("models")?,
            prompts: ids("prompts")?,
            baseline: v
                .get("baseline")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| strategies.first().map(|s| s.id.clone()))
                .unwrap_or_default(),
            strategies,
            samples: v.get("samples").and_then(Value::as_u64).unwrap_or(0) as usize,
            max_new_tokens: v.get("max_new_tokens").and_then(Value::as_u64).unwrap_or(0) as usize,
            selectors: selectors_of(v)?,
            scorer: v.get("scorer").and_then(Value::as_str).map(str::to_string),
            choose: match v.get("choose") {
                Some(c) => Some(
                    serde_json::from_value(c.clone())
                        .map_err(|e| anyhow!("resolved_config.choose: {e}"))?,
                ),
                None => None,
            },
            calibrated_targets: BTreeMap::new(),
        })
    }

    /// With the quantile targets a run resolved per model (the manifest's `calibration`).
    pub fn with_calibration(mut self, cals: &[crate::calibrate::ModelCalibration]) -> Design {
        for c in cals {
            for (strategy, values) in &c.resolved {
                if let Some(&t) = values.get("target") {
                    self.calibrated_targets
                        .insert((c.model.clone(), strategy.clone()), t);
                }
            }
        }
        self
    }

    /// The entropy target of strategy `s` on `model` in nats: its own, or the model's
    /// calibrated value of a quantile target.
    pub fn target_of(&self, model: &str, s: &StrategyInfo) -> Option<f64> {
        s.target_nats.or_else(|| {
            self.calibrated_targets
                .get(&(model.to_string(), s.id.clone()))
                .copied()
        })
    }

    pub fn strategy(&self, id: &str) -> Option<&StrategyInfo> {
        self.strategies.iter().find(|s| s.id == id)
    }

    /// The latency reference: the first strategy of kind `greedy`, else the baseline.
    pub fn latency_reference(&self) -> &str {
        self.strategies
            .iter()
            .find(|s| s.kind == "greedy")
            .map(|s| s.id.as_str())
            .unwrap_or(&self.baseline)
    }

    /// Add ids seen in records but not declared (records from an edited config), at the end.
    pub fn extend_with(
        &mut self,
        model: &str,
        prompt: &str,
        strategy: &str,
        kind: &str,
        params: &Value,
    ) {
        if !self.models.iter().any(|m| m == model) {
            self.models.push(model.to_string());
        }
        if !self.prompts.iter().any(|p| p == prompt) {
            self.prompts.push(prompt.to_string());
        }
        if self.strategy(strategy).is_none() {
            self.strategies.push(StrategyInfo::from_block(
                strategy.to_string(),
                kind.to_string(),
                params.clone(),
            ));
        }
    }
}

/// The `select` list of a resolved config (each item as [`crate::select::SelectorSpec`]
/// serialises it), parsed again; absent is empty.
fn selectors_of(v: &Value) -> Result<Vec<crate::select::SelectorSpec>> {
    let Some(list) = v.get("select").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let limits = crate::select::Limits {
        max_new_tokens: usize::MAX,
    };
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let y = serde_yaml::to_value(item)?;
            crate::select::parse_block(&y, &format!("select[{i}]"), &limits).map_err(|es| {
                anyhow!(
                    "resolved_config.select[{i}]: {}",
                    es.iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_resolved_config_and_targets() {
        let v = serde_json::json!({
            "name": "x", "seed": 7, "samples": 2, "max_new_tokens": 8, "baseline": "b",
            "models": [{"id": "m"}], "prompts": [{"id": "p1", "text": "t"}],
            "strategies": [
                {"id": "a", "kind": "greedy", "params": {"kind": "greedy"}},
                {"id": "b", "kind": "target_entropy", "params": {"kind": "target_entropy", "target": 1.0, "unit": "bits"}}
            ]
        });
        let d = Design::from_resolved_config(&v).unwrap();
        assert_eq!(d.seed, 7);
        assert_eq!(d.baseline, "b");
        assert_eq!(d.latency_reference(), "a");
        assert!((d.strategies[1].target_nats.unwrap() - std::f64::consts::LN_2).abs() < 1e-12);
        assert_eq!(d.strategies[0].target_nats, None);
        assert!(Design::from_resolved_config(&serde_json::json!({"name": "x"})).is_err());
    }
}
