//! `target_entropy`: steer the temperature so the entropy of the distribution sampled from
//! tracks a target.
//!
//! * `solve`: per step find T in [t_min, t_max] with H(softmax(l / T)) = target (nats) on the
//!   candidates this processor sees. H(T) is non-decreasing in T (dH/dT = Var_T(l)/T³ >= 0), so
//!   a safeguarded Newton iteration in ln T (bisection fallback) converges; tolerance 1e-5 nats.
//!   Unreachable targets clamp to t_min or t_max. This is the control loop of entropix's
//!   `temp_tune` (which uses Halley steps from T = 1), solved to convergence.
//! * `feedback`: a PI controller on ln T, stateful per sample (Mirostat's idea with a
//!   temperature actuator): e_t = realised - target, where realised is the entropy of the final
//!   distribution (`signal: entropy`) or the surprise -ln p_final of the drawn token
//!   (`signal: surprise`); ln T_{t+1} = ln t_init - kp·e_t - ki·Σ e, clamped to [t_min, t_max]
//!   with conditional integration (no wind-up while saturated).
//!
//! Truncation declared with the strategy runs after this temperature, so the realised entropy
//! can fall below the target; `feedback` on `entropy` compensates for that, `solve` does not.

use super::kernels::{entropy_at_temperature, Candidates};
use super::temperature::apply_temperature;
use super::{Accepted, Effect, Processor, Scratch, StepCtx};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    Entropy,
    Surprise,
}

#[derive(Debug)]
pub struct Solve {
    pub target_nats: f64,
    pub t_min: f64,
    pub t_max: f64,
}

/// Temperature in [t_min, t_max] whose softmax entropy over `logits` is `target` (nats).
pub fn solve_temperature(logits: &[f32], target: f64, t_min: f64, t_max: f64) -> f64 {
    solve_temperature_from(logits, target, t_min, t_max, None)
}

/// [`solve_temperature`] given, optionally, H and dH/dT at T = 1 (the entropy and varentropy of
/// the logits, usually known already: it saves a pass over the vocabulary). Each evaluation of
/// H(T) is a pass over the logits, so the bounds are evaluated only when Newton reaches them
/// (to tell an unreachable target), not up front.
pub fn solve_temperature_from(
    logits: &[f32],
    target: f64,
    t_min: f64,
    t_max: f64,
    at_one: Option<(f64, f64)>,
) -> f64 {
    let m = super::kernels::max_finite(logits);
    let (x_min, x_max) = (t_min.ln(), t_max.ln());
    // bracket in ln T; `*_seen`: H was evaluated there (below / above the target)
    let (mut lo, mut hi) = (x_min, x_max);
    let (mut lo_seen, mut hi_seen) = (false, false);
    // start from T = 1 when it is inside the bracket (entropix's T_init)
    let mut x = 0.0f64.clamp(x_min, x_max);
    let (mut h, mut dh_dt) = match at_one {
        Some(v) if x == 0.0 => v,
        _ => entropy_at_temperature(logits, m, x.exp()),
    };
    for _ in 0..60 {
        let t = x.exp();
        let err = h - target;
        if err.abs() < 1e-5 {
            return t;
        }
        if err > 0.0 {
            if x <= x_min {
                return t_min; // H(t_min) is already above the target
            }
            hi = x;
            hi_seen = true;
        } else {
            if x >= x_max {
                return t_max; // H(t_max) is still below the target
            }
            lo = x;
            lo_seen = true;
        }
        if hi - lo < 1e-12 {
            break;
        }
        // Newton in ln T: dH/d(ln T) = T · dH/dT; past an unseen bound, try the bound itself
        let slope = t * dh_dt;
        // a flat H (all logits equal, say) gives no slope: head for the bound the error points to
        let next = if slope > 1e-12 {
            x - err / slope
        } else if err > 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        x = if next > lo && next < hi {
            next
        } else if next <= lo && !lo_seen {
            lo
        } else if next >= hi && !hi_seen {
            hi
        } else {
            0.5 * (lo + hi)
        };
        (h, dh_dt) = entropy_at_temperature(logits, m, x.exp());
    }
    x.exp()
}

impl Processor for Solve {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        if cands.len() <= 1 {
            return Effect::temperature(1.0);
        }
        // H and dH/dT at T = 1 are the set's entropy and varentropy (cached when unchanged)
        let st = cands.stats();
        let at_one = Some((st.entropy_nats, st.varentropy_nats2));
        let t = solve_temperature_from(
            &cands.logits,
            self.target_nats,
            self.t_min,
            self.t_max,
            at_one,
        );
        let mut e = apply_temperature(cands, t);
        e.controller = Some(t);
        e
    }
}

#[derive(Debug)]
pub struct Feedback {
    pub target_nats: f64,
    pub signal: Signal,
    pub kp: f64,
    pub ki: f64,
    pub t_init: f64,
    pub t_min: f64,
    pub t_max: f64,
    integral: f64,
    last_error: f64,
}

impl Feedback {
    pub fn new(
        target_nats: f64,
        signal: Signal,
        kp: f64,
        ki: f64,
        t_init: f64,
        t_min: f64,
        t_max: f64,
    ) -> Self {
        Feedback {
            target_nats,
            signal,
            kp,
            ki,
            t_init,
            t_min,
            t_max,
            integral: 0.0,
            last_error: 0.0,
        }
    }

    fn raw_log_t(&self, integral: f64) -> f64 {
        self.t_init.ln() - self.kp * self.last_error - self.ki * integral
    }

    pub fn current_temperature(&self) -> f64 {
        self.raw_log_t(self.integral)
            .exp()
            .clamp(self.t_min, self.t_max)
    }
}

impl Processor for Feedback {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        let t = self.current_temperature();
        let mut e = apply_temperature(cands, t);
        e.controller = Some(t);
        e
    }

    fn accept(&mut self, a: &Accepted) {
        let realised = match self.signal {
            Signal::Entropy => a.final_entropy_nats,
            Signal::Surprise => -a.p_final.max(f64::MIN_POSITIVE).ln(),
        };
        self.last_error = realised - self.target_nats;
        // conditional integration: only integrate when it does not push further into saturation
        let candidate = self.integral + self.last_error;
        let t = self.raw_log_t(candidate).exp();
        let saturated_high = t > self.t_max && self.last_error < 0.0;
        let saturated_low = t < self.t_min && self.last_error > 0.0;
        if !(saturated_high || saturated_low) {
            self.integral = candidate;
        }
    }

    fn reset(&mut self, _prompt: &[u32]) {
        self.integral = 0.0;
        self.last_error = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::kernels::dist_stats;
    use crate::strategy::Sampler;
    use rand::SeedableRng;

    #[test]
    fn solve_hits_reachable_targets() {
        let l: Vec<f32> = (0..1000)
            .map(|i| -((i as f32) * 0.37).sqrt() * 2.0)
            .collect();
        for &target in &[0.1, 0.5, 1.0, 2.0, 4.0, 6.5] {
            let t = solve_temperature(&l, target, 0.01, 100.0);
            let scaled: Vec<f32> = l.iter().map(|x| x / t as f32).collect();
            let h = dist_stats(&scaled).entropy_nats;
            assert!(
                (h - target).abs() < 1e-3,
                "target {target}: got {h} at T {t}"
            );
        }
    }

    #[test]
    fn solve_clamps_unreachable_targets() {
        let l = [2.0f32, 1.0, 0.0];
        assert_eq!(solve_temperature(&l, 5.0, 0.1, 3.0), 3.0); // above ln 3
        assert_eq!(solve_temperature(&l, 0.0, 0.1, 3.0), 0.1);
    }

    #[test]
    fn feedback_moves_temperature_against_the_error_and_resets() {
        // flat distribution: entropy ln 50 = 3.9 > target 1 -> temperature must fall
        let l = vec![0.0f32; 50];
        let mut fb = Sampler::new(Box::new(Feedback::new(
            1.0,
            Signal::Entropy,
            0.5,
            0.1,
            1.0,
            0.05,
            3.0,
        )));
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let first = fb.sample(&l, &mut rng).unwrap();
        assert_eq!(first.controller, Some(1.0));
        let mut l2 = l.clone();
        l2[0] = 3.0;
        let mut last = 1.0;
        for _ in 0..20 {
            last = fb.sample(&l2, &mut rng).unwrap().controller.unwrap();
        }
        assert!(last < 0.9, "temperature should drop, got {last}");
        fb.reset(&[]);
        assert_eq!(fb.sample(&l, &mut rng).unwrap().controller, Some(1.0));
    }
}
