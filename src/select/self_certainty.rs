//! `self_certainty`: the mean over the generated steps of KL(U ‖ p_i), the divergence of the
//! model's next-token distribution from uniform; highest wins.
//!
//! score = (1/n) Σ_i KL(U ‖ p_i),  KL(U ‖ p) = −ln V − (1/V) Σ_j ln p_j
//!
//! Kang, Zhao, Song (2025), "Scalable Best-of-N Selection for Large Language Models via
//! Self-Certainty", eq. 3 and its sentence-level average (the paper's "self-certainty"; its
//! Borda voting variant needs answers to vote on and is not here). Read from
//! `trace.self_certainty`, which the sampler takes over the unmodified distribution.

use std::sync::Arc;

use serde::Deserialize;
use serde_yaml::Mapping;

use super::{Candidate, Cell, Kind, Limits, Selector};
use crate::strategy::PathError;

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfCertainty;

pub const KIND: Kind = Kind {
    name: "self_certainty",
    example: "{kind: self_certainty}",
    parse,
};

fn parse(map: &Mapping, path: &str, _: &Limits) -> Result<Arc<dyn Selector>, Vec<PathError>> {
    super::block::<Empty>(map, path)?;
    Ok(Arc::new(SelfCertainty))
}

/// A block with no fields of its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Empty {}

impl Selector for SelfCertainty {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn default_id(&self) -> String {
        KIND.name.into()
    }
    fn describe(&self) -> String {
        "mean over the steps of KL(U ‖ p) = −ln V − mean_j ln p_j, highest wins (self-certainty, Kang et al. 2025)".into()
    }
    fn higher_wins(&self) -> bool {
        true
    }
    fn score(&self, c: &Candidate, _: &Cell) -> Option<f64> {
        c.mean_of(&c.trace.self_certainty)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::trace;
    use super::super::{choose, Candidate, Cell};
    use super::*;

    #[test]
    fn the_most_certain_sample_wins() {
        let a = trace(&[(1.0, -1.0, 3.0, 0.0), (1.0, -1.0, 5.0, 0.0)]); // mean 4
        let b = trace(&[(1.0, -1.0, 6.0, 0.0), (1.0, -1.0, 1.0, 0.0)]); // mean 3.5
        let cands = [
            Candidate {
                index: 0,
                trace: &b,
            },
            Candidate {
                index: 1,
                trace: &a,
            },
        ];
        let c = choose(&SelfCertainty, &cands, &Cell { seed: 0 }).unwrap();
        assert_eq!((c.index, c.score), (1, 4.0));
    }
}
