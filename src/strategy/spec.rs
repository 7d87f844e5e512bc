//! A validated strategy (plain data, like candle's `Sampling` enum): an id, its kind and its
//! processor chain, and the questions the runner, the analysis and the bench ask of it. Parsing
//! YAML into these lives in the units ([`super::registry`]) and `config::strategy`.

use serde::Serialize;

use super::chain::Chain;
use super::unit::{Facts, ProcSpec};
use super::Processor;

/// A fully expanded, validated strategy: an id, its kind and its processor chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategySpec {
    pub id: String,
    pub kind: String,
    pub processors: Vec<ProcSpec>,
    /// The strategy block as written (after grid expansion), for records and reports.
    pub params: serde_json::Value,
    /// Thresholds and targets written as quantiles of the model's own entropy distribution
    /// (`entropy_low: {quantile: 0.25}`): until [`crate::config::strategy::resolve_quantiles`]
    /// replaces them with one model's values, `processors` hold placeholders and must not run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quantiles: Vec<QuantileParam>,
}

/// A block key whose value is a quantile of the model's entropy distribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantileParam {
    pub key: String,
    /// The quantile level, in (0, 1).
    pub q: f64,
}

impl StrategySpec {
    /// Whether its thresholds wait for a model's calibration ([`Self::quantiles`]).
    pub fn needs_calibration(&self) -> bool {
        !self.quantiles.is_empty()
    }

    /// Facts of every processor in the tree (branches included).
    fn all_facts(&self) -> impl Iterator<Item = Facts> + '_ {
        self.processors.iter().flat_map(ProcSpec::all_facts)
    }

    /// True when every step is an argmax (so every sample index gives the same text).
    pub fn is_greedy(&self) -> bool {
        matches!(self.processors.as_slice(), [p] if p.facts().greedy)
    }

    /// Whether a processor holds controller state worth tracing (`trace.controller`).
    pub fn tracks_controller(&self) -> bool {
        self.all_facts().any(|f| f.controller)
    }

    /// Whether a processor chooses branches (`trace.branch`).
    pub fn tracks_branch(&self) -> bool {
        self.all_facts().any(|f| f.branch)
    }

    /// The entropy the strategy itself aims at (a top-level target), in nats.
    pub fn target_nats(&self) -> Option<f64> {
        self.processors.iter().find_map(|p| p.facts().target_nats)
    }

    /// Every entropy target in the tree, branches included, in nats.
    pub fn all_targets_nats(&self) -> Vec<f64> {
        self.all_facts().filter_map(|f| f.target_nats).collect()
    }
}

/// Build the processor tree for a chain of specs.
pub fn build(chain: &[ProcSpec], vocab: usize) -> Box<dyn Processor> {
    if chain.len() == 1 {
        return chain[0].build(vocab);
    }
    Box::new(Chain {
        processors: chain.iter().map(|p| p.build(vocab)).collect(),
    })
}
