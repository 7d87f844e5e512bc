//! `repetition_penalty`: Hugging Face `RepetitionPenaltyLogitsProcessor` (Keskar et al. 2019):
//! for every distinct token already in the sequence (prompt included), score < 0 ? score·θ :
//! score/θ, once per token whatever its count.

use super::kernels::Candidates;
use super::unit::{Param, Proc, ProcSpec, Range, Simple};
use super::{Accepted, Effect, Processor, Scratch, StepCtx};

pub const PARAM: Param = Param {
    key: "repetition_penalty",
    abbrev: "rep",
    range: Range::Positive,
    example: "1.2",
};

/// Not a kind of its own: a parameter of the flat kinds and of `greedy`, and a chain element.
pub const SIMPLE: Simple = Simple {
    param: PARAM,
    kind: false,
    examples: &[],
    make: |repetition_penalty| ProcSpec::new(RepetitionPenalty::new(repetition_penalty)),
};

/// The spec is a fresh processor: `params` records the penalty, `build` starts a new sample's
/// state.
#[derive(Debug)]
pub struct RepetitionPenalty {
    pub repetition_penalty: f64,
    seen: Vec<bool>,
    /// The distinct tokens in `seen`, in first-seen order.
    seen_list: Vec<u32>,
}

impl RepetitionPenalty {
    pub fn new(repetition_penalty: f64) -> Self {
        RepetitionPenalty {
            repetition_penalty,
            seen: Vec::new(),
            seen_list: Vec::new(),
        }
    }

    fn mark(&mut self, token: u32) {
        let t = token as usize;
        if t >= self.seen.len() {
            self.seen.resize(t + 1, false);
        }
        if !self.seen[t] {
            self.seen[t] = true;
            self.seen_list.push(token);
        }
    }
}

impl Proc for RepetitionPenalty {
    fn op(&self) -> &'static str {
        "repetition_penalty"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "repetition_penalty": self.repetition_penalty })
    }
    fn build(&self, _vocab: usize) -> Box<dyn Processor> {
        Box::new(RepetitionPenalty::new(self.repetition_penalty))
    }
}

impl Processor for RepetitionPenalty {
    fn apply(&mut self, cands: &mut Candidates, ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        let theta = self.repetition_penalty as f32;
        let penalise = |l: &mut f32| *l = if *l < 0.0 { *l * theta } else { *l / theta };
        let in_id_order = cands.sorted_by_id && cands.len() == ctx.vocab_size;
        let (ids, logits) = cands.parts_mut();
        if in_id_order {
            // the full vocabulary in id order: position = token id, touch only the seen ones
            for &t in &self.seen_list {
                if let Some(l) = logits.get_mut(t as usize) {
                    penalise(l);
                }
            }
        } else {
            for (id, l) in ids.iter().zip(logits.iter_mut()) {
                if self.seen.get(*id as usize).copied().unwrap_or(false) {
                    penalise(l);
                }
            }
        }
        cands.touch();
        Effect::default()
    }

    fn accept(&mut self, a: &Accepted) {
        self.mark(a.token);
    }

    fn reset(&mut self, prompt: &[u32]) {
        self.seen.clear();
        self.seen_list.clear();
        for &t in prompt {
            self.mark(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;
    use crate::strategy::Sampler;

    #[test]
    fn penalises_seen_tokens_by_sign() {
        let l = [2.0f32, -1.0, 1.0, 0.5];
        let mut s = Sampler::new(Box::new(RepetitionPenalty::new(2.0)));
        s.reset(&[0, 1]);
        let p = s.final_distribution(&l).unwrap().probs;
        // token 0: 2/2 = 1; token 1: -1*2 = -2
        assert_close(
            &p,
            &softmax_subset(&[1.0, -2.0, 1.0, 0.5], &[0, 1, 2, 3], 1.0),
            1e-7,
        );
        let _ = final_probs(Box::new(RepetitionPenalty::new(2.0)), &l);
    }
}
