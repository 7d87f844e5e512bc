//! `entropy_band`: the sample whose mean entropy lies closest to a band `[low, high]` (nats);
//! lowest distance wins, so among the samples inside the band the first one is chosen.
//! Originality without incoherence: neither the flattest nor the wildest sample.
//!
//! m = (1/n) Σ_i H(p_i);  score = max(low − m, 0, m − high)
//!
//! declab's own selector (the band is what entropy-targeting decoders aim at per step, e.g.
//! mirostat's τ, here applied to whole samples). Read from `trace.entropy`.

use std::sync::Arc;

use serde::Deserialize;
use serde_yaml::Mapping;

use super::{Candidate, Cell, Kind, Limits, Selector};
use crate::strategy::unit::{Checks, Range};
use crate::strategy::PathError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntropyBand {
    pub low: f64,
    pub high: f64,
}

pub const KIND: Kind = Kind {
    name: "entropy_band",
    example: "{kind: entropy_band, low: 2.0, high: 3.5}",
    parse,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    low: f64,
    high: f64,
}

fn parse(map: &Mapping, path: &str, _: &Limits) -> Result<Arc<dyn Selector>, Vec<PathError>> {
    let raw: Raw = super::block(map, path)?;
    let mut c = Checks::new(path);
    c.range("low", Range::NonNegative, Some(raw.low));
    c.range("high", Range::NonNegative, Some(raw.high));
    if c.is_clean() {
        c.require(
            raw.low <= raw.high,
            "high",
            format!(
                "the band is empty: high ({}) is below low ({}); entropies are in nats",
                raw.high, raw.low
            ),
        );
    }
    c.done(Arc::new(EntropyBand {
        low: raw.low,
        high: raw.high,
    }) as Arc<dyn Selector>)
}

/// Distance of `m` from `[low, high]` (0 inside).
pub fn distance(m: f64, low: f64, high: f64) -> f64 {
    (low - m).max(0.0).max(m - high)
}

impl Selector for EntropyBand {
    fn kind(&self) -> &'static str {
        KIND.name
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "low": self.low, "high": self.high })
    }
    fn default_id(&self) -> String {
        format!("entropy_band_{}-{}", self.low, self.high)
    }
    fn describe(&self) -> String {
        format!(
            "distance of the mean entropy from the band [{}, {}] nats, lowest wins (inside the band: the first sample)",
            self.low, self.high
        )
    }
    fn higher_wins(&self) -> bool {
        false
    }
    fn score(&self, c: &Candidate, _: &Cell) -> Option<f64> {
        c.mean_of(&c.trace.entropy)
            .map(|m| distance(m, self.low, self.high))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::trace;
    use super::super::{choose, parse_block, Candidate, Cell, Limits};
    use super::*;

    #[test]
    fn closest_to_the_band_wins() {
        assert_eq!(distance(1.0, 2.0, 3.0), 1.0);
        assert_eq!(distance(2.5, 2.0, 3.0), 0.0);
        assert_eq!(distance(3.25, 2.0, 3.0), 0.25);
        let flat = trace(&[(0.5, 0.0, 0.0, 0.0)]);
        let wild = trace(&[(3.25, 0.0, 0.0, 0.0)]);
        let inside = trace(&[(2.5, 0.0, 0.0, 0.0)]);
        let cands = [
            Candidate {
                index: 0,
                trace: &flat,
            },
            Candidate {
                index: 1,
                trace: &wild,
            },
            Candidate {
                index: 2,
                trace: &inside,
            },
        ];
        let sel = EntropyBand {
            low: 2.0,
            high: 3.0,
        };
        assert_eq!(choose(&sel, &cands, &Cell { seed: 0 }).unwrap().index, 2);
        assert_eq!(
            choose(&sel, &cands[..2], &Cell { seed: 0 }).unwrap().index,
            1
        );
    }

    #[test]
    fn an_empty_band_is_a_configuration_error() {
        let v: serde_yaml::Value =
            serde_yaml::from_str("{kind: entropy_band, low: 3, high: 2}").unwrap();
        let e = parse_block(&v, "select[0]", &Limits { max_new_tokens: 8 }).unwrap_err();
        assert!(
            e[0].to_string()
                .starts_with("select[0].high: the band is empty"),
            "{}",
            e[0]
        );
        let v: serde_yaml::Value = serde_yaml::from_str("{kind: entropy_band, low: 3}").unwrap();
        let e = parse_block(&v, "select[0]", &Limits { max_new_tokens: 8 }).unwrap_err();
        assert!(
            e[0].to_string().contains("missing field `high`"),
            "{}",
            e[0]
        );
    }
}
