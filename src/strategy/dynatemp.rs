//! `dynatemp`: llama.cpp's entropy-scaled temperature (`llama_sampler_temp_ext`, kalomaze's
//! koboldcpp PR #600 / llama.cpp PR #4972):
//! T_min = max(0, T - range), T_max = T + range; H = entropy (nats) of the current candidates,
//! normalised by ln(#candidates); T_dyn = T_min + (T_max - T_min)·(H/H_max)^exponent; then
//! logits /= T_dyn. range <= 0 is plain temperature. As in llama.cpp, the entropy is measured on
//! the candidates that survive earlier truncation (temperature runs last in llama.cpp's chain);
//! with a single candidate nothing is scaled. T_dyn = 0 is greedy. No sort: one softmax pass.

use super::kernels::Candidates;
use super::temperature::apply_temperature;
use super::unit::{self, Checks, Facts, Kind, PathError, ProcSpec, Range, Stateless};
use super::{min_p, top_k, top_p, Effect, Processor, Scratch, StepCtx};
use serde::{Deserialize, Serialize};
use serde_yaml::Mapping;

pub const KIND: Kind = Kind {
    name: "dynatemp",
    parse,
    abbrevs: &[("dynatemp_range", "range"), ("dynatemp_exponent", "exp")],
    id_first: &[],
    integer_keys: &[],
    examples: &["{kind: dynatemp, temperature: 0.8, dynatemp_range: 0.5}"],
};

/// The YAML block, with llama.cpp's defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Block {
    #[serde(default = "point_eight")]
    temperature: f64,
    dynatemp_range: f64,
    #[serde(default = "one")]
    dynatemp_exponent: f64,
    top_k: Option<f64>,
    top_p: Option<f64>,
    min_p: Option<f64>,
}

fn point_eight() -> f64 {
    0.8
}
fn one() -> f64 {
    1.0
}

fn parse(map: &Mapping, path: &str) -> Result<Vec<ProcSpec>, Vec<PathError>> {
    let b: Block = unit::block(map, path)?;
    let mut c = Checks::new(path);
    c.param(&super::temperature::PARAM, Some(b.temperature));
    c.range("dynatemp_range", Range::NonNegative, Some(b.dynatemp_range));
    c.range(
        "dynatemp_exponent",
        Range::Positive,
        Some(b.dynatemp_exponent),
    );
    // llama.cpp's order: truncation first, the temperature (temp_ext) last
    let mut v = unit::optional(
        &mut c,
        &[
            (&top_k::SIMPLE, b.top_k),
            (&top_p::SIMPLE, b.top_p),
            (&min_p::SIMPLE, b.min_p),
        ],
    );
    v.push(ProcSpec::new(DynaTemp {
        temperature: b.temperature,
        dynatemp_range: b.dynatemp_range,
        dynatemp_exponent: b.dynatemp_exponent,
    }));
    c.done(v)
}

#[derive(Debug, Clone, Serialize)]
pub struct DynaTemp {
    pub temperature: f64,
    pub dynatemp_range: f64,
    pub dynatemp_exponent: f64,
}

impl Stateless for DynaTemp {
    const OP: &'static str = "dynatemp";
    fn facts(&self) -> Facts {
        Facts {
            controller: true,
            ..Facts::default()
        }
    }
}

impl Processor for DynaTemp {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        if self.dynatemp_range <= 0.0 {
            return apply_temperature(cands, self.temperature);
        }
        if cands.len() <= 1 {
            return Effect::default();
        }
        let t_min = (self.temperature - self.dynatemp_range).max(0.0);
        let t_max = self.temperature + self.dynatemp_range;
        let h = cands.stats().entropy_nats;
        let h_max = (cands.len() as f64).ln();
        let h_norm = (h / h_max).clamp(0.0, 1.0);
        let t = t_min + (t_max - t_min) * h_norm.powf(self.dynatemp_exponent);
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
    fn temperature_follows_normalised_entropy() {
        let l = [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()];
        // H = 1.142120, H_max = ln 4 = 1.386294, H_norm = 0.823865
        // T = 0.5 + (1.5 - 0.5) * 0.823865 = 1.323865
        let mut s = Sampler::new(Box::new(DynaTemp {
            temperature: 1.0,
            dynatemp_range: 0.5,
            dynatemp_exponent: 1.0,
        }));
        let d = s.final_distribution(&l).unwrap();
        assert!((d.temperature - 1.323865).abs() < 1e-5, "{}", d.temperature);
        assert_close(&d.probs, &softmax_subset(&l, &[0, 1, 2, 3], 1.323865), 1e-5);
    }

    #[test]
    fn uniform_gets_max_temperature_and_range_zero_is_plain() {
        let mut s = Sampler::new(Box::new(DynaTemp {
            temperature: 1.0,
            dynatemp_range: 0.5,
            dynatemp_exponent: 2.0,
        }));
        assert!((s.final_distribution(&[0.0; 4]).unwrap().temperature - 1.5).abs() < 1e-9);
        let mut s = Sampler::new(Box::new(DynaTemp {
            temperature: 0.7,
            dynatemp_range: 0.0,
            dynatemp_exponent: 1.0,
        }));
        assert!((s.final_distribution(&[1.0, 0.0]).unwrap().temperature - 0.7).abs() < 1e-12);
    }
}
