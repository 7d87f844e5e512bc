//! `epsilon_cutoff` and `eta_cutoff`: truncation sampling (Hewitt, Manning & Liang, 2022) with
//! Hugging Face `EpsilonLogitsWarper` / `EtaLogitsWarper` semantics (min_tokens_to_keep = 1):
//! remove tokens with p < threshold, but never a token tied with the top logit.
//! epsilon: threshold = ε. eta: threshold = min(ε, √ε · exp(-H)) with H the entropy (nats) of
//! the distribution the warper sees. (HF's docstring writes √(ε·e^-H); its code, and Hewitt's,
//! use √ε·e^-H, which is what declab implements.)

use super::kernels::{self, Candidates};
use super::unit::{Param, ProcSpec, Range, Simple, Stateless};
use super::{Effect, Processor, Scratch, StepCtx};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Epsilon {
    pub epsilon_cutoff: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Eta {
    pub eta_cutoff: f64,
}

pub const EPSILON_PARAM: Param = Param {
    key: "epsilon_cutoff",
    abbrev: "eps",
    range: Range::OpenProbability,
    example: "0.0003",
};

pub const EPSILON_SIMPLE: Simple = Simple {
    param: EPSILON_PARAM,
    kind: true,
    examples: &["{kind: epsilon_cutoff, epsilon_cutoff: 0.0003}"],
    make: |epsilon_cutoff| ProcSpec::new(Epsilon { epsilon_cutoff }),
};

pub const ETA_PARAM: Param = Param {
    key: "eta_cutoff",
    abbrev: "eta",
    range: Range::OpenProbability,
    example: "0.002",
};

pub const ETA_SIMPLE: Simple = Simple {
    param: ETA_PARAM,
    kind: true,
    examples: &["{kind: eta_cutoff, eta_cutoff: 0.002}"],
    make: |eta_cutoff| ProcSpec::new(Eta { eta_cutoff }),
};

impl Stateless for Epsilon {
    const OP: &'static str = "epsilon_cutoff";
}

impl Stateless for Eta {
    const OP: &'static str = "eta_cutoff";
}

/// Remove p < threshold (in log space: l - log Z < ln threshold), keeping ties with the top.
fn cut_below(cands: &mut Candidates, threshold: f64, stats: &kernels::DistStats) {
    // l as f64 >= cut || l >= top  <=>  l >= min(cut as an exact f32 bound, top)
    let cut = kernels::f32_at_least(stats.log_z + threshold.ln());
    cands.retain_where(cut.min(stats.max_logit), |_| true);
}

impl Processor for Epsilon {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        if self.epsilon_cutoff <= 0.0 || cands.len() <= 1 {
            return Effect::default();
        }
        let stats = cands.stats();
        cut_below(cands, self.epsilon_cutoff, &stats);
        Effect::default()
    }
}

impl Processor for Eta {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        if self.eta_cutoff <= 0.0 || cands.len() <= 1 {
            return Effect::default();
        }
        let stats = cands.stats();
        let eta = self
            .eta_cutoff
            .min(self.eta_cutoff.sqrt() * (-stats.entropy_nats).exp());
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
            &final_probs(
                Box::new(Epsilon {
                    epsilon_cutoff: 0.1,
                }),
                &l4(),
            ),
            &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
            1e-6,
        );
        // everything below: the top token stays
        assert_close(
            &final_probs(
                Box::new(Epsilon {
                    epsilon_cutoff: 0.9,
                }),
                &l4(),
            ),
            &[1.0, 0.0, 0.0, 0.0],
            1e-9,
        );
    }

    #[test]
    fn eta_threshold_uses_entropy() {
        // H = 1.14212 nats; eps = 0.2: sqrt(.2)*exp(-H) = 0.14272 < .2 -> threshold .14272
        let p = final_probs(Box::new(Eta { eta_cutoff: 0.2 }), &l4());
        assert_close(&p, &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0], 1e-6);
        // eps = 0.4: sqrt(.4)*exp(-H) = 0.20184 -> keeps .5, .3
        let p = final_probs(Box::new(Eta { eta_cutoff: 0.4 }), &l4());
        assert_close(&p, &[0.625, 0.375, 0.0, 0.0], 1e-6);
    }
}
