//! `epsilon_cutoff` and `eta_cutoff`: truncation sampling (Hewitt, Manning & Liang, 2022) with
//! Hugging Face `EpsilonLogitsWarper` / `EtaLogitsWarper` semantics (min_tokens_to_keep = 1):
//! remove tokens with p < threshold, but never a token tied with the top logit.
//! epsilon: threshold = ε. eta: threshold = min(ε, √ε · exp(-H)) with H the entropy (nats) of
//! the distribution the warper sees. (HF's docstring writes √(ε·e^-H); its code, and Hewitt's,
//! use √ε·e^-H, which is what declab implements.)

use super::kernels::{self, Candidates};
use super::{Effect, Processor, Scratch, StepCtx};

#[derive(Debug)]
pub struct Epsilon {
    pub epsilon: f64,
}

#[derive(Debug)]
pub struct Eta {
    pub epsilon: f64,
}

/// Remove p < threshold (in log space: l - log Z < ln threshold), keeping ties with the top.
fn cut_below(cands: &mut Candidates, threshold: f64, stats: &kernels::DistStats) {
    // l as f64 >= cut || l >= top  <=>  l >= min(cut as an exact f32 bound, top)
    let cut = kernels::f32_at_least(stats.log_z + threshold.ln());
    cands.retain_where(cut.min(stats.max_logit), |_| true);
}

impl Processor for Epsilon {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        if self.epsilon <= 0.0 || cands.len() <= 1 {
            return Effect::default();
        }
        let stats = cands.stats();
        cut_below(cands, self.epsilon, &stats);
        Effect::default()
    }
}

impl Processor for Eta {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        if self.epsilon <= 0.0 || cands.len() <= 1 {
            return Effect::default();
        }
        let stats = cands.stats();
        let eta = self
            .epsilon
            .min(self.epsilon.sqrt() * (-stats.entropy_nats).exp());
        cut_below(cands, eta, &stats);
        Effect::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;

    fn l4() -> [f32; 4] {
        [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()]
    }

    #[test]
    fn epsilon_cuts_small_probs() {
        assert_close(
            &final_probs(Box::new(Epsilon { epsilon: 0.1 }), &l4()),
            &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
            1e-6,
        );
        // everything below: the top token stays
        assert_close(
            &final_probs(Box::new(Epsilon { epsilon: 0.9 }), &l4()),
            &[1.0, 0.0, 0.0, 0.0],
            1e-9,
        );
    }

    #[test]
    fn eta_threshold_uses_entropy() {
        // H = 1.14212 nats; eps = 0.2: sqrt(.2)*exp(-H) = 0.14272 < .2 -> threshold .14272
        let p = final_probs(Box::new(Eta { epsilon: 0.2 }), &l4());
        assert_close(&p, &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0], 1e-6);
        // eps = 0.4: sqrt(.4)*exp(-H) = 0.20184 -> keeps .5, .3
        let p = final_probs(Box::new(Eta { epsilon: 0.4 }), &l4());
        assert_close(&p, &[0.625, 0.375, 0.0, 0.0], 1e-6);
    }
}
