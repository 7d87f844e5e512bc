//! `temperature`: divide the logits by T (Hugging Face `TemperatureLogitsWarper`).
//! T = 0 means greedy (llama.cpp's `temp` with T <= 0 keeps only the first maximum; HF
//! refuses T = 0 and asks for `do_sample=False`, which is the same thing).

use super::greedy::keep_argmax;
use super::kernels::Candidates;
use super::unit::{Facts, Param, ProcSpec, Range, Simple, Stateless};
use super::{Effect, Processor, Scratch, StepCtx};
use serde::Serialize;

pub const PARAM: Param = Param {
    key: "temperature",
    abbrev: "t",
    range: Range::Temperature,
    example: "0.8",
};

pub const SIMPLE: Simple = Simple {
    param: PARAM,
    kind: true,
    examples: &["{kind: temperature, temperature: 0.8}"],
    make: |temperature| ProcSpec::new(Temperature { temperature }),
};

#[derive(Debug, Clone, Serialize)]
pub struct Temperature {
    pub temperature: f64,
}

/// Apply temperature `t` to the candidates; `t <= 0` is greedy.
pub fn apply_temperature(cands: &mut Candidates, t: f64) -> Effect {
    cands.settle();
    let inv = (1.0 / t) as f32;
    // T so small that 1/T (or a logit times it) overflows f32 is the T -> 0 limit: greedy
    let overflows = || {
        !inv.is_finite()
            || (inv > 1e30
                && cands
                    .logits()
                    .iter()
                    .any(|&l| l.is_finite() && !(l * inv).is_finite()))
    };
    if t <= 0.0 || overflows() {
        keep_argmax(cands);
        return Effect::temperature(0.0);
    }
    if t != 1.0 {
        cands.scale(inv);
    }
    Effect::temperature(t)
}

impl Stateless for Temperature {
    const OP: &'static str = "temperature";
    fn facts(&self) -> Facts {
        Facts {
            greedy: self.temperature == 0.0,
            ..Facts::default()
        }
    }
}

impl Processor for Temperature {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        apply_temperature(cands, self.temperature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;

    #[test]
    fn vanishing_temperature_is_greedy() {
        // 1/T overflows f32 (EDT reaches T ~ 1e-97 on near-certain steps)
        // 1/T overflows f32 (1e-97, 1e-39), or a logit times 1/T does (299 · 1e37)
        for (t, l) in [
            (1e-97, [20.1f32, 29.9, -3.0]),
            (1e-39, [20.1, 29.9, -3.0]),
            (1e-37, [200.0, 299.0, -3.0]),
        ] {
            let p = final_probs(Box::new(Temperature { temperature: t }), &l);
            assert_eq!(p, vec![0.0, 1.0, 0.0], "T = {t}");
        }
    }

    #[test]
    fn scales_logits() {
        let l = [2.0f32, 1.0, 0.0, -1.0];
        let p = final_probs(Box::new(Temperature { temperature: 0.5 }), &l);
        assert_close(&p, &softmax_subset(&l, &[0, 1, 2, 3], 0.5), 1e-6);
        // hand-computed: softmax([4,2,0,-2])
        assert_close(&p, &[0.86495488, 0.11705891, 0.01584220, 0.00214401], 1e-6);
    }

    #[test]
    fn zero_is_greedy_and_huge_is_near_uniform() {
        let l = [2.0f32, 1.0, 2.0, -1.0];
        assert_eq!(
            final_probs(Box::new(Temperature { temperature: 0.0 }), &l),
            vec![1.0, 0.0, 0.0, 0.0]
        );
        let p = final_probs(Box::new(Temperature { temperature: 1e6 }), &l);
        assert_close(&p, &[0.25; 4], 1e-5);
    }
}
