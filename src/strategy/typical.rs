//! `typical_p`: locally typical sampling (Meister et al., TACL 2023) with Hugging Face
//! `TypicalLogitsWarper` semantics, min_tokens_to_keep = 1:
//! H = -Σ p ln p; score_i = |-ln p_i - H|; in ascending score order, last = #(cumsum < mass)
//! (clamped to n-1); remove tokens whose score is > score[last]. Tokens tied with the boundary
//! score are therefore all kept. Ordered by score with a windowed selection, not a full sort.

use super::kernels::{self, visit_in_key_order, Candidates};
use super::unit::{Param, ProcSpec, Range, Simple, Stateless};
use super::{Effect, Processor, Scratch, StepCtx};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Typical {
    pub typical_p: f64,
}

pub const PARAM: Param = Param {
    key: "typical_p",
    abbrev: "typ",
    range: Range::Probability,
    example: "0.9",
};

pub const SIMPLE: Simple = Simple {
    param: PARAM,
    kind: true,
    examples: &["{kind: typical_p, typical_p: 0.9}"],
    make: |typical_p| ProcSpec::new(Typical { typical_p }),
};

impl Stateless for Typical {
    const OP: &'static str = "typical_p";
}

impl Processor for Typical {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, s: &mut Scratch) -> Effect {
        if self.typical_p >= 1.0 || cands.len() <= 1 {
            return Effect::default();
        }
        let stats = cands.stats();
        let h = stats.entropy_nats;
        let score = |l: f32| (-(stats.log_prob(l)) - h).abs();
        // Head: the candidates within `width` nats of the maximum. A token outside it has
        // surprise above s = log Z - (max - width), so score above s - H: the head's tokens
        // scoring <= s - H come first in score order, whatever lies outside. Widen until those
        // hold `mass`; then the boundary is among them. Usually a few hundred tokens.
        let mut head = Vec::new();
        kernels::widen_head(cands, &mut head, |head, cut| {
            let complete = stats.log_z - cut - h;
            let mass: f64 = head
                .iter()
                .map(|&i| cands.logits()[i])
                .filter(|&l| score(l) <= complete)
                .map(|l| stats.log_prob(l).exp())
                .sum();
            mass >= self.typical_p
        });
        s.keys.clear();
        s.keys
            .extend(head.iter().map(|&i| score(cands.logits()[i])));
        let head_ids: Vec<u32> = head.iter().map(|&i| cands.ids[i]).collect();
        let mut cum = 0.0;
        let mut boundary = f64::INFINITY;
        let keys = &s.keys;
        visit_in_key_order(keys, &head_ids, |j| {
            cum += stats.log_prob(cands.logits()[head[j]]).exp();
            if cum >= self.typical_p {
                boundary = keys[j];
                return false;
            }
            true
        });
        // never reached `mass` (rounding): HF clamps to the last index, i.e. keeps all
        // score(l) <= boundary needs l >= log Z - H - boundary; the 1e-3 margin dwarfs the
        // rounding of `score`, so the bound only lets blocks below it be skipped
        let lower = kernels::f32_at_least(stats.log_z - h - boundary - 1e-3);
        cands.retain_where(lower, |l| score(l) <= boundary);
        Effect::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;

    #[test]
    fn hand_computed_typical_set() {
        // p = (.5,.3,.15,.05): H = 1.1421 nats; -ln p = (.693,1.204,1.897,2.996)
        // scores = (.4490, .0619, .7550, 1.8536): order 1,0,2,3; cumsum .3,.8,.95,1
        // mass .5: first cumsum >= .5 is at token 0 -> keep scores <= .4490 -> {1, 0}
        let l = [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()];
        assert_close(
            &final_probs(Box::new(Typical { typical_p: 0.5 }), &l),
            &[0.625, 0.375, 0.0, 0.0],
            1e-6,
        );
        // mass .25: token 1 alone (cumsum .3 >= .25)
        assert_close(
            &final_probs(Box::new(Typical { typical_p: 0.25 }), &l),
            &[0.0, 1.0, 0.0, 0.0],
            1e-6,
        );
        // mass .9: {1,0,2}
        let p = final_probs(Box::new(Typical { typical_p: 0.9 }), &l);
        assert_close(&p, &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0], 1e-6);
    }

    #[test]
    fn uniform_keeps_all_ties() {
        let l = [0.0f32; 4];
        assert_close(
            &final_probs(Box::new(Typical { typical_p: 0.3 }), &l),
            &[0.25; 4],
            1e-9,
        );
    }
}
