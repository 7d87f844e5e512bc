//! `top_p` (nucleus): Hugging Face `TopPLogitsWarper` with min_tokens_to_keep = 1. HF sorts
//! ascending and removes tokens whose cumulative probability is <= 1 - p; equivalently, in
//! descending order a token is kept iff the mass of the tokens before it is < p, so the token
//! that crosses p is kept. Ties are ordered by lower token id first (torch's sort is unstable,
//! so HF has no defined tie order). Found without a full sort: a 256-wide window selected with
//! `select_nth_unstable`, grown 8x only when the nucleus is larger.

use super::kernels::{self, visit_in_key_order, Candidates};
use super::unit::{Param, ProcSpec, Range, Simple, Stateless};
use super::{Effect, Processor, Scratch, StepCtx};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct TopP {
    pub top_p: f64,
}

/// Keep the smallest descending-probability prefix whose mass reaches `p` (at least one token).
pub fn apply_top_p(cands: &mut Candidates, p: f64, s: &mut Scratch) {
    if p >= 1.0 || cands.len() <= 1 {
        return;
    }
    // Head: the candidates within `width` nats of the maximum, widened until they hold mass p.
    // Every token outside the head has a lower logit than every token in it, so the nucleus
    // (a descending prefix) lies inside the head; usually a few hundred tokens.
    let stats = cands.stats();
    let mut head = std::mem::take(&mut s.order);
    kernels::widen_head(cands, &mut head, |head, _| {
        let mass: f64 = head
            .iter()
            .map(|&i| (cands.logits()[i] as f64 - stats.log_z).exp())
            .sum();
        mass >= p
    });
    s.keys.clear();
    s.keys.extend(
        head.iter()
            .map(|&i| -(cands.logits()[i] as f64 - stats.log_z).exp()),
    );
    s.ids.clear();
    s.ids.extend(head.iter().map(|&i| cands.ids[i]));
    let mut positions: Vec<usize> = Vec::new();
    let mut mass_before = 0.0;
    let keys = &s.keys;
    visit_in_key_order(keys, &s.ids, |h| {
        if !positions.is_empty() && mass_before >= p {
            return false;
        }
        positions.push(head[h]);
        mass_before += -keys[h];
        true
    });
    s.order = head;
    // the step's scratch buffers take the set's old ones, so a vocabulary-sized buffer is kept
    // for the next step instead of freed and allocated again (its pages faulted in anew)
    cands.keep_positions(&positions, &mut s.ids, &mut s.logits);
}

pub const PARAM: Param = Param {
    key: "top_p",
    abbrev: "p",
    range: Range::Probability,
    example: "0.9",
};

pub const SIMPLE: Simple = Simple {
    param: PARAM,
    kind: true,
    examples: &["{kind: top_p, top_p: 0.9, temperature: 1.0}"],
    make: |top_p| ProcSpec::new(TopP { top_p }),
};

impl Stateless for TopP {
    const OP: &'static str = "top_p";
}

impl Processor for TopP {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, s: &mut Scratch) -> Effect {
        apply_top_p(cands, self.top_p, s);
        Effect::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;

    // probs of [ln .5, ln .3, ln .15, ln .05] are exactly (.5, .3, .15, .05)
    fn l4() -> [f32; 4] {
        [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()]
    }

    #[test]
    fn crossing_token_is_kept() {
        let p = final_probs(Box::new(TopP { top_p: 0.7 }), &l4());
        assert_close(&p, &[0.625, 0.375, 0.0, 0.0], 1e-6);
    }

    #[test]
    fn small_p_keeps_the_top_token() {
        let p = final_probs(Box::new(TopP { top_p: 0.01 }), &l4());
        assert_close(&p, &[1.0, 0.0, 0.0, 0.0], 1e-9);
    }

    #[test]
    fn p_one_keeps_everything() {
        let p = final_probs(Box::new(TopP { top_p: 1.0 }), &l4());
        assert_close(&p, &[0.5, 0.3, 0.15, 0.05], 1e-6);
    }

    #[test]
    fn ties_prefer_lower_ids() {
        let l = [0.0f32, 0.0, 0.0, 0.0];
        let p = final_probs(Box::new(TopP { top_p: 0.5 }), &l);
        assert_close(&p, &[0.5, 0.5, 0.0, 0.0], 1e-9);
    }

    #[test]
    fn large_nucleus_grows_the_window() {
        let l: Vec<f32> = (0..5000).map(|i| -(i as f32) * 1e-4).collect();
        let p = final_probs(Box::new(TopP { top_p: 0.9 }), &l);
        let kept = p.iter().filter(|&&x| x > 0.0).count();
        assert!(kept > 4000 && kept < 5000, "{kept}");
        // kept set is a prefix of the descending order
        assert!(p[..kept].iter().all(|&x| x > 0.0));
    }
}
