//! `top_n_sigma`: Tang et al. 2024 ("Top-nσ: Not All Logits Are You Need") as implemented in
//! llama.cpp (`llama_sampler_top_n_sigma_apply`): keep logits >= max - n·σ, where σ is the
//! population standard deviation over the finite logits of the current candidates. n <= 0 is
//! a no-op. The mask is invariant to temperature applied before it.

use super::kernels::{self, Candidates};
use super::unit::{Param, ProcSpec, Range, Simple, Stateless};
use super::{Effect, Processor, Scratch, StepCtx};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct TopNSigma {
    pub top_n_sigma: f64,
}

pub const PARAM: Param = Param {
    key: "top_n_sigma",
    abbrev: "nsigma",
    range: Range::Positive,
    example: "1.0",
};

pub const SIMPLE: Simple = Simple {
    param: PARAM,
    kind: true,
    examples: &["{kind: top_n_sigma, top_n_sigma: 1.0}"],
    make: |top_n_sigma| ProcSpec::new(TopNSigma { top_n_sigma }),
};

impl Stateless for TopNSigma {
    const OP: &'static str = "top_n_sigma";
}

impl Processor for TopNSigma {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        if self.top_n_sigma <= 0.0 || cands.len() <= 1 {
            return Effect::default();
        }
        // one vectorised pass: max, Σl, Σl², count over the finite logits
        let (max, sum, sq, count, _pivot) = kernels::finite_moments(cands.logits());
        let max = max as f64;
        if count == 0 {
            return Effect::default();
        }
        // the variance is shift-invariant: the moments about the pivot give it directly
        let mean = sum / count as f64;
        let var = (sq / count as f64 - mean * mean).max(0.0);
        let threshold = max - self.top_n_sigma * var.sqrt();
        cands.retain_at_least(threshold);
        Effect::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;

    #[test]
    fn keeps_within_n_sigma_of_max() {
        // logits 4,3,2,1: mean 2.5, population std sqrt(1.25)=1.1180; n=1 -> threshold 2.882
        let l = [4.0f32, 3.0, 2.0, 1.0];
        assert_close(
            &final_probs(Box::new(TopNSigma { top_n_sigma: 1.0 }), &l),
            &softmax_subset(&l, &[0, 1], 1.0),
            1e-7,
        );
        // n=2 -> threshold 1.764: keeps 4,3,2
        assert_close(
            &final_probs(Box::new(TopNSigma { top_n_sigma: 2.0 }), &l),
            &softmax_subset(&l, &[0, 1, 2], 1.0),
            1e-7,
        );
    }

    #[test]
    fn ignores_neg_inf_in_sigma() {
        let l = [4.0f32, 3.0, f32::NEG_INFINITY, 2.0];
        // finite 4,3,2: mean 3, std .8165; n=1 -> 3.18: keeps only 4
        assert_close(
            &final_probs(Box::new(TopNSigma { top_n_sigma: 1.0 }), &l),
            &[1.0, 0.0, 0.0, 0.0],
            1e-9,
        );
    }
}
