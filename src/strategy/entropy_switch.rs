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
//! controllers (mirostat, target_entropy's feedback) update only on the steps where their
//! branch ran (tested on real Gemma 3 rows).

use super::kernels::Candidates;
use super::unit::{Facts, Proc, ProcSpec};
use super::{Accepted, Effect, Processor, Scratch, StepCtx};
use serde::Serialize;

/// The validated switch (its YAML block is parsed in `config::strategy`, which parses the
/// nested branch blocks): thresholds in nats / nats², one chain per branch.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchSpec {
    pub entropy_low_nats: f64,
    pub entropy_high_nats: f64,
    pub varentropy_low_nats2: Option<f64>,
    pub varentropy_high_nats2: Option<f64>,
    pub low: Vec<ProcSpec>,
    pub mid: Vec<ProcSpec>,
    pub high: Vec<ProcSpec>,
}

impl Proc for SwitchSpec {
    fn op(&self) -> &'static str {
        "entropy_switch"
    }
    fn params(&self) -> serde_json::Value {
        super::unit::params_of(self)
    }
    fn build(&self, vocab: usize) -> Box<dyn Processor> {
        Box::new(EntropySwitch {
            entropy_low: self.entropy_low_nats,
            entropy_high: self.entropy_high_nats,
            varentropy_low: self.varentropy_low_nats2,
            varentropy_high: self.varentropy_high_nats2,
            low: super::build(&self.low, vocab),
            mid: super::build(&self.mid, vocab),
            high: super::build(&self.high, vocab),
        })
    }
    fn facts(&self) -> Facts {
        Facts {
            controller: true,
            branch: true,
            ..Facts::default()
        }
    }
    fn nested(&self) -> Vec<&ProcSpec> {
        self.low.iter().chain(&self.mid).chain(&self.high).collect()
    }
}

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
            mid: Box::new(Temperature { temperature: 0.7 }),
            high: Box::new(Temperature { temperature: 1.3 }),
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

    /// On real Gemma 3 rows (the committed bench fixture: 262,144 logits each, spread over the
    /// entropy range), a feedback controller in `mid` and mirostat in `high` change state only
    /// on the steps where their own branch shaped the sampled distribution.
    #[test]
    fn stateful_branches_update_only_on_their_own_steps_on_real_rows() {
        use crate::strategy::kernels::dist_stats;
        use crate::strategy::mirostat::Mirostat;
        use crate::strategy::target_entropy::{Feedback, Signal};
        use rand::SeedableRng;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches/fixtures/gemma3-270m-logits.f16");
        let rows = crate::bench::read_logit_fixture(&path).unwrap();
        let mut by_h: Vec<(f64, usize)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (dist_stats(r).entropy_nats, i))
            .collect();
        by_h.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(by_h[0].0 < by_h[1].0 && by_h[1].0 < by_h[2].0, "{by_h:?}");
        let (low, mid, high) = (by_h[0].1, by_h[1].1, by_h[2].1);
        let (tau, eta) = (3.0, 0.5);
        let sampler = || {
            Sampler::new(Box::new(EntropySwitch {
                entropy_low: (by_h[0].0 + by_h[1].0) / 2.0,
                entropy_high: (by_h[1].0 + by_h[2].0) / 2.0,
                varentropy_low: None,
                varentropy_high: None,
                low: Box::new(Greedy),
                mid: Box::new(Feedback::new(
                    2.0,
                    Signal::Entropy,
                    0.5,
                    0.05,
                    1.0,
                    0.05,
                    5.0,
                    0.5,
                )),
                high: Box::new(Mirostat::new(2, tau, eta, 1.0)),
            }))
        };
        let run = |order: &[usize]| {
            let mut s = sampler();
            s.reset(&[]);
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
            order
                .iter()
                .map(|&r| s.sample(&rows[r], &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        // feedback (entropy signal: its update depends on the sampled distribution, not on the
        // draw): the same state at its second step whether or not other branches ran between
        let alone = run(&[mid, mid]);
        let mixed = run(&[mid, low, high, low, mid]);
        assert_eq!(mixed[1].branch, Some("low"));
        assert_eq!(mixed[2].branch, Some("high"));
        assert_eq!(
            alone[1].controller, mixed[4].controller,
            "the feedback controller moved on steps where another branch sampled"
        );
        // mirostat: mu moves once, by its own step's surprise, across steps of other branches
        let steps = run(&[high, low, mid, low, high]);
        let mu0 = steps[0].controller.unwrap();
        let surprise = -steps[0].p_final.log2();
        let expect = mu0 - eta * (surprise - tau);
        let mu1 = steps[4].controller.unwrap();
        assert!(
            (mu1 - expect).abs() < 1e-12,
            "mirostat mu {mu1} vs {expect}"
        );
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
