//! `chain`: processors applied in order; a chain is itself a processor (llama.cpp's
//! `llama_sampler_chain`). Order is configuration, not code.

use super::kernels::Candidates;
use super::{Accepted, Effect, Processor, Scratch, StepCtx};

pub struct Chain {
    pub processors: Vec<Box<dyn Processor>>,
}

impl Processor for Chain {
    fn apply(&mut self, cands: &mut Candidates, ctx: &StepCtx, s: &mut Scratch) -> Effect {
        let mut effect = Effect::default();
        for p in &mut self.processors {
            // each processor starts on a settled set; only the last one's temperature is left
            // pending, for the final pass to fold in
            cands.settle();
            effect = effect.then(p.apply(cands, ctx, s));
        }
        effect
    }

    fn accept(&mut self, a: &Accepted) {
        for p in &mut self.processors {
            p.accept(a);
        }
    }

    fn reset(&mut self, prompt: &[u32]) {
        for p in &mut self.processors {
            p.reset(prompt);
        }
    }
}
