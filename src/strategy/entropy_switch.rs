//! `entropy_switch`: choose a sub-chain per step from the entropy H (and optionally the
//! varentropy VH) of the model's unmodified next-token distribution, in the spirit of entropix
//! (xjdr-alt/entropix `sampler.py`). Thresholds carry a unit (nats by default, or bits as in
//! entropix, where VH is in bits²). Branch rule, evaluated in this order:
//!
//! * `low`  when H < entropy_low and (varentropy_low unset or VH < varentropy_low);
//! * `high` when H > entropy_high or (varentropy_high set and VH > varentropy_high);
//! * `mid`  otherwise.
//!
//! The branch taken is recorded per token. Every branch sees every accepted token (so
//! history-based processors such as a repetition penalty stay consistent); stateful
//! controllers (mirostat) update only on the steps where their branch ran.

use super::kernels::Candidates;
use super::{Accepted, Effect, Processor, Scratch, StepCtx};

pub struct EntropySwitch {
    /// Thresholds converted to nats / nats².
    pub entropy_low: f64,
    pub entropy_high: f64,
    pub varentropy_low: Option<f64>,
    pub varentropy_high: Option<f64>,
    pub low: Box<dyn Processor>,
    pub mid: Box<dyn Processor>,
    pub high: Box<dyn Processor>,
}

impl EntropySwitch {
    pub fn branch_for(&self, h: f64, vh: f64) -> &'static str {
        if h < self.entropy_low && self.varentropy_low.is_none_or(|v| vh < v) {
            "low"
        } else if h > self.entropy_high || self.varentropy_high.is_some_and(|v| vh > v) {
            "high"
        } else {
            "mid"
        }
    }
}

impl Processor for EntropySwitch {
    fn apply(&mut self, cands: &mut Candidates, ctx: &StepCtx, s: &mut Scratch) -> Effect {
        let branch = self.branch_for(ctx.base.entropy_nats, ctx.base.varentropy_nats2);
        let p = match branch {
            "low" => &mut self.low,
            "high" => &mut self.high,
            _ => &mut self.mid,
        };
        let mut e = p.apply(cands, ctx, s);
        e.branch = Some(branch);
        e
    }

    fn accept(&mut self, a: &Accepted) {
        self.low.accept(a);
        self.mid.accept(a);
        self.high.accept(a);
    }

    fn reset(&mut self, prompt: &[u32]) {
        self.low.reset(prompt);
        self.mid.reset(prompt);
        self.high.reset(prompt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::greedy::Greedy;
    use crate::strategy::temperature::Temperature;
    use crate::strategy::Sampler;

    fn switch() -> EntropySwitch {
        EntropySwitch {
            entropy_low: 0.5,
            entropy_high: 2.0,
            varentropy_low: None,
            varentropy_high: None,
            low: Box::new(Greedy),
            mid: Box::new(Temperature { t: 0.7 }),
            high: Box::new(Temperature { t: 1.3 }),
        }
    }

    #[test]
    fn branches_by_entropy() {
        let mut s = Sampler::new(Box::new(switch()));
        // peaked: H ~ 0.0005 -> greedy
        let d = s.final_distribution(&[10.0, 0.0, 0.0, 0.0]).unwrap();
        assert_eq!((d.effect.branch, d.temperature), (Some("low"), 0.0));
        // uniform over 4: H = 1.386 -> mid
        let d = s.final_distribution(&[0.0; 4]).unwrap();
        assert_eq!((d.effect.branch, d.temperature), (Some("mid"), 0.7));
        // uniform over 16: H = 2.77 -> high
        let d = s.final_distribution(&[0.0; 16]).unwrap();
        assert_eq!((d.effect.branch, d.temperature), (Some("high"), 1.3));
    }

    #[test]
    fn varentropy_can_force_high() {
        let mut sw = switch();
        sw.varentropy_high = Some(0.01);
        // moderately peaked: H between thresholds but VH > 0.01
        let l = [3.0f32, 1.0, 0.0, 0.0, -1.0, -2.0];
        let st = crate::strategy::kernels::dist_stats(&l);
        assert!(st.entropy_nats > 0.5 && st.entropy_nats < 2.0 && st.varentropy_nats2 > 0.01);
        assert_eq!(sw.branch_for(st.entropy_nats, st.varentropy_nats2), "high");
    }
}
