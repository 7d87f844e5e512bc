//! `edt`: Entropy-based Dynamic Temperature (Zhang, Bao & Huang 2024, arXiv 2403.14541):
//! T = T0 · N^(θ / H) with N = 0.8 by default, H the entropy (nats) of the model's unmodified
//! next-token distribution. Since N < 1, T ∈ (0, T0]: T → 0 (greedy) as H → 0 and T → T0 as
//! H grows. The paper's text gives the formula but no reference code; the unit of H is taken as
//! nats, which is declab's choice and is documented here.

use super::kernels::Candidates;
use super::temperature::apply_temperature;
use super::unit::{self, Checks, Facts, Kind, PathError, ProcSpec, Range, Stateless};
use super::{min_p, top_p, Effect, Processor, Scratch, StepCtx};
use serde::{Deserialize, Serialize};
use serde_yaml::Mapping;

pub const KIND: Kind = Kind {
    name: "edt",
    parse,
    abbrevs: &[("edt_theta", "theta"), ("edt_n", "N")],
    id_first: &[],
    integer_keys: &[],
    examples: &["{kind: edt, temperature: 1.0, edt_theta: 0.5}"],
};

/// The YAML block, with the paper's N = 0.8.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Block {
    #[serde(default = "one")]
    temperature: f64,
    edt_theta: f64,
    #[serde(default = "point_eight")]
    edt_n: f64,
    top_p: Option<f64>,
    min_p: Option<f64>,
}

fn one() -> f64 {
    1.0
}
fn point_eight() -> f64 {
    0.8
}

fn parse(map: &Mapping, path: &str) -> Result<Vec<ProcSpec>, Vec<PathError>> {
    let b: Block = unit::block(map, path)?;
    let mut c = Checks::new(path);
    c.param(&super::temperature::PARAM, Some(b.temperature));
    c.range("edt_theta", Range::Positive, Some(b.edt_theta));
    c.range("edt_n", Range::OpenProbability, Some(b.edt_n));
    let mut v = vec![ProcSpec::new(Edt {
        temperature: b.temperature,
        edt_theta: b.edt_theta,
        edt_n: b.edt_n,
    })];
    v.extend(unit::optional(
        &mut c,
        &[(&top_p::SIMPLE, b.top_p), (&min_p::SIMPLE, b.min_p)],
    ));
    c.done(v)
}

#[derive(Debug, Clone, Serialize)]
pub struct Edt {
    pub temperature: f64,
    pub edt_theta: f64,
    pub edt_n: f64,
}

impl Stateless for Edt {
    const OP: &'static str = "edt";
    fn facts(&self) -> Facts {
        Facts {
            controller: true,
            ..Facts::default()
        }
    }
}

impl Edt {
    pub fn temperature_for(&self, entropy_nats: f64) -> f64 {
        if entropy_nats <= 0.0 {
            return 0.0;
        }
        self.temperature * self.edt_n.powf(self.edt_theta / entropy_nats)
    }
}

impl Processor for Edt {
    fn apply(&mut self, cands: &mut Candidates, ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        let t = self.temperature_for(ctx.base.entropy_nats);
        let mut e = apply_temperature(cands, t);
        e.controller = Some(t);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;
    use crate::strategy::Sampler;

    #[test]
    fn formula() {
        let e = Edt {
            temperature: 1.0,
            edt_theta: 0.5,
            edt_n: 0.8,
        };
        // H = ln 4: T = 0.8^(0.5/1.386294) = 0.92267
        assert!((e.temperature_for(4f64.ln()) - 0.8f64.powf(0.5 / 4f64.ln())).abs() < 1e-12);
        assert_eq!(e.temperature_for(0.0), 0.0);
        let mut s = Sampler::new(Box::new(Edt {
            temperature: 1.0,
            edt_theta: 0.5,
            edt_n: 0.8,
        }));
        let d = s.final_distribution(&[0.0; 4]).unwrap();
        assert_close(&d.probs, &[0.25; 4], 1e-9);
        assert!((d.temperature - 0.8f64.powf(0.5 / 4f64.ln())).abs() < 1e-9);
    }
}
