//! `top_k`: Hugging Face `TopKLogitsWarper` with min_tokens_to_keep = 1: k = min(max(k, 1), n);
//! remove tokens whose score is below the k-th largest score. Ties with the k-th value are all
//! kept, so more than k tokens can survive (llama.cpp keeps exactly k; declab follows HF).
//! O(n) with `select_nth_unstable`, no sort.

use super::kernels::Candidates;
use super::unit::{Param, ProcSpec, Range, Simple, Stateless};
use super::{Effect, Processor, Scratch, StepCtx};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct TopK {
    pub top_k: usize,
}

pub const PARAM: Param = Param {
    key: "top_k",
    abbrev: "k",
    range: Range::Count,
    example: "40",
};

pub const SIMPLE: Simple = Simple {
    param: PARAM,
    kind: true,
    examples: &["{kind: top_k, top_k: 40}"],
    make: |v| ProcSpec::new(TopK { top_k: v as usize }),
};

impl Stateless for TopK {
    const OP: &'static str = "top_k";
}

impl Processor for TopK {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, s: &mut Scratch) -> Effect {
        let n = cands.len();
        let k = self.top_k.max(1).min(n);
        if k == 0 || k >= n {
            return Effect::default();
        }
        // k-th largest value, found among the candidates near the maximum (no full copy/sort)
        let threshold = cands.kth_largest(k, &mut s.logits);
        cands.retain_logit_at_least(threshold);
        Effect::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;

    #[test]
    fn keeps_k_largest() {
        let l = [1.0f32, 4.0, 3.0, 2.0];
        let p = final_probs(Box::new(TopK { top_k: 2 }), &l);
        assert_close(&p, &softmax_subset(&l, &[1, 2], 1.0), 1e-7);
        // hand-computed: e^1/(e^1+1) = 0.7310586
        assert_close(&p, &[0.0, 0.73105858, 0.26894142, 0.0], 1e-6);
    }

    #[test]
    fn ties_at_kth_value_are_kept() {
        let l = [1.0f32, 3.0, 2.0, 2.0];
        let p = final_probs(Box::new(TopK { top_k: 2 }), &l);
        assert_close(&p, &softmax_subset(&l, &[1, 2, 3], 1.0), 1e-7);
    }

    #[test]
    fn k_zero_means_one_and_k_above_n_keeps_all() {
        let l = [1.0f32, 3.0, 2.0];
        assert_close(
            &final_probs(Box::new(TopK { top_k: 0 }), &l),
            &[0.0, 1.0, 0.0],
            0.0,
        );
        assert_close(
            &final_probs(Box::new(TopK { top_k: 10 }), &l),
            &softmax_subset(&l, &[0, 1, 2], 1.0),
            1e-7,
        );
    }
}
