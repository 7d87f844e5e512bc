//! `edt`: Entropy-based Dynamic Temperature (Zhang, Bao & Huang 2024, arXiv 2403.14541):
//! T = T0 · N^(θ / H) with N = 0.8 by default, H the entropy (nats) of the model's unmodified
//! next-token distribution. Since N < 1, T ∈ (0, T0]: T → 0 (greedy) as H → 0 and T → T0 as
//! H grows. The paper's text gives the formula but no reference code; the unit of H is taken as
//! nats, which is declab's choice and is documented here.

use super::kernels::Candidates;
use super::temperature::apply_temperature;
use super::{Effect, Processor, Scratch, StepCtx};

#[derive(Debug)]
pub struct Edt {
    pub temperature: f64,
    pub theta: f64,
    pub n: f64,
}

impl Edt {
    pub fn temperature_for(&self, entropy_nats: f64) -> f64 {
        if entropy_nats <= 0.0 {
            return 0.0;
        }
        self.temperature * self.n.powf(self.theta / entropy_nats)
    }
}

impl Processor for Edt {
    fn apply(&mut self, cands: &mut Candidates, ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        let t = self.temperature_for(ctx.base.entropy_nats);
        let mut e = apply_temperature(cands, t);
        e.controller = Some(t);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;
    use crate::strategy::Sampler;

    #[test]
    fn formula() {
        let e = Edt {
            temperature: 1.0,
            theta: 0.5,
            n: 0.8,
        };
        // H = ln 4: T = 0.8^(0.5/1.386294) = 0.92267
        assert!((e.temperature_for(4f64.ln()) - 0.8f64.powf(0.5 / 4f64.ln())).abs() < 1e-12);
        assert_eq!(e.temperature_for(0.0), 0.0);
        let mut s = Sampler::new(Box::new(Edt {
            temperature: 1.0,
            theta: 0.5,
            n: 0.8,
        }));
        let d = s.final_distribution(&[0.0; 4]).unwrap();
        assert_close(&d.probs, &[0.25; 4], 1e-9);
        assert!((d.temperature - 0.8f64.powf(0.5 / 4f64.ln())).abs() < 1e-9);
    }
}
