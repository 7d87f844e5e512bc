//! `min_p`: Hugging Face `MinPLogitsWarper` (Nguyen et al. 2024, credited to @kalomaze):
//! probs = softmax(scores); remove tokens with p < min_p · p_max; the top token always stays.
//! One pass, no sort.

use super::kernels::Candidates;
use super::unit::{Param, ProcSpec, Range, Simple, Stateless};
use super::{Effect, Processor, Scratch, StepCtx};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct MinP {
    pub min_p: f64,
}

pub const PARAM: Param = Param {
    key: "min_p",
    abbrev: "min_p",
    range: Range::Probability,
    example: "0.05",
};

pub const SIMPLE: Simple = Simple {
    param: PARAM,
    kind: true,
    examples: &["{kind: min_p, min_p: 0.05, temperature: 1.0}"],
    make: |min_p| ProcSpec::new(MinP { min_p }),
};

impl Stateless for MinP {
    const OP: &'static str = "min_p";
}

impl Processor for MinP {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        if self.min_p <= 0.0 || cands.len() <= 1 {
            return Effect::default();
        }
        // p_i >= min_p·p_max  <=>  l_i >= l_max + ln(min_p): one pass in logit space, no
        // softmax (llama.cpp's formulation of the same rule)
        let threshold = cands.max_logit() as f64 + self.min_p.ln();
        cands.retain_at_least(threshold);
        Effect::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;

    #[test]
    fn relative_threshold() {
        let l = [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()];
        // threshold 0.4 * 0.5 = 0.2: keeps .5 and .3
        assert_close(
            &final_probs(Box::new(MinP { min_p: 0.4 }), &l),
            &[0.625, 0.375, 0.0, 0.0],
            1e-6,
        );
        // threshold 0.09 * 0.5 = 0.045: .05 is kept
        assert_close(
            &final_probs(Box::new(MinP { min_p: 0.09 }), &l),
            &[0.5, 0.3, 0.15, 0.05],
            1e-6,
        );
        // threshold 0.11 * 0.5 = 0.055: .05 is cut
        assert_close(
            &final_probs(Box::new(MinP { min_p: 0.11 }), &l),
            &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
            1e-6,
        );
    }

    #[test]
    fn min_p_one_keeps_ties_at_max() {
        let l = [1.0f32, 1.0, 0.0];
        assert_close(
            &final_probs(Box::new(MinP { min_p: 1.0 }), &l),
            &[0.5, 0.5, 0.0],
            1e-9,
        );
    }
}
