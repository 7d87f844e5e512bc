//! `target_entropy`: steer the temperature so the entropy of the distribution sampled from
//! tracks a target.
//!
//! * `solve`: per step find T in [t_min, t_max] with H(softmax(l / T)) = target (nats) on the
//!   candidates this processor sees. H(T) is non-decreasing in T (dH/dT = Var_T(l)/T³ >= 0), so
//!   a safeguarded Newton iteration in ln T (bisection fallback) converges; tolerance 1e-5 nats.
//!   Unreachable targets clamp to t_min or t_max. This is the control loop of entropix's
//!   `temp_tune` (which uses Halley steps from T = 1), solved to convergence. On long rows
//!   Newton runs on a cheap model of H(T) ([`Model`]) and every answer is checked by an exact
//!   pass, which is also the final pass the draw uses ([`solve_temperature`] is the plain form,
//!   one exact pass per Newton step).
//! * `feedback`: stateful per sample (Mirostat's idea with a temperature actuator): the solve
//!   above aims at a goal that an integrator moves from the error e_t = realised - target, where
//!   realised is the entropy of the final distribution (`signal: entropy`) or the surprise
//!   -ln p_final of the drawn token (`signal: surprise`), and the temperature is low-passed
//!   (`smoothing`); see [`Feedback`] for the law and why it has this shape.
//!
//! Truncation declared with the strategy runs after this temperature, so the realised entropy
//! can fall below the target; `feedback` on `entropy` compensates for that, `solve` does not.

use super::kernels::{entropy_at_temperature, Candidates};
use super::temperature::apply_temperature;
use super::unit::{self, Checks, Facts, Kind, PathError, Proc, ProcSpec, Range, Unit};
use super::{min_p, top_p, Accepted, Effect, Processor, Scratch, StepCtx};
use serde::{Deserialize, Serialize};
use serde_yaml::Mapping;

pub const KIND: Kind = Kind {
    name: "target_entropy",
    parse,
    abbrevs: &[],
    id_first: &["target"],
    integer_keys: &[],
    examples: &[
        "{kind: target_entropy, target: 2.5}",
        "{kind: target_entropy, target: 2.5, mode: feedback}",
    ],
};

#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Solve,
    Feedback,
}

/// The YAML block. Feedback defaults: kp = 0, ki = 0.05, smoothing = 0.5, t_init = 1 (see
/// [`Feedback`] for the law and why).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Block {
    target: f64,
    #[serde(default)]
    unit: Unit,
    #[serde(default = "solve")]
    mode: Mode,
    #[serde(default = "t_min")]
    t_min: f64,
    #[serde(default = "t_max")]
    t_max: f64,
    signal: Option<Signal>,
    kp: Option<f64>,
    ki: Option<f64>,
    t_init: Option<f64>,
    smoothing: Option<f64>,
    top_p: Option<f64>,
    min_p: Option<f64>,
}

fn solve() -> Mode {
    Mode::Solve
}
fn t_min() -> f64 {
    0.05
}
fn t_max() -> f64 {
    5.0
}

fn parse(map: &Mapping, path: &str) -> Result<Vec<ProcSpec>, Vec<PathError>> {
    let b: Block = unit::block(map, path)?;
    let mut c = Checks::new(path);
    c.range("target", Range::NonNegative, Some(b.target));
    c.range("t_min", Range::Positive, Some(b.t_min));
    c.require(
        b.t_max > b.t_min,
        "t_max",
        format!("t_max ({}) must be above t_min ({})", b.t_max, b.t_min),
    );
    c.range("kp", Range::NonNegative, b.kp);
    c.range("ki", Range::NonNegative, b.ki);
    c.range("t_init", Range::Positive, b.t_init);
    c.require(
        b.smoothing.is_none_or(|x| (0.0..1.0).contains(&x)),
        "smoothing",
        format!(
            "{} is out of range; allowed: 0 <= smoothing < 1 (0: no smoothing)",
            b.smoothing.unwrap_or(0.0)
        ),
    );
    if b.mode == Mode::Solve {
        for (k, present) in [
            ("signal", b.signal.is_some()),
            ("kp", b.kp.is_some()),
            ("ki", b.ki.is_some()),
            ("t_init", b.t_init.is_some()),
            ("smoothing", b.smoothing.is_some()),
        ] {
            c.require(
                !present,
                k,
                format!("`{k}` only applies to `mode: feedback`"),
            );
        }
    }
    let mode = match b.mode {
        Mode::Solve => TargetMode::Solve {
            t_min: b.t_min,
            t_max: b.t_max,
        },
        Mode::Feedback => TargetMode::Feedback {
            signal: b.signal.unwrap_or(Signal::Entropy),
            kp: b.kp.unwrap_or(0.0),
            ki: b.ki.unwrap_or(0.05),
            t_init: b.t_init.unwrap_or(1.0),
            smoothing: b.smoothing.unwrap_or(0.5),
            t_min: b.t_min,
            t_max: b.t_max,
        },
    };
    let mut v = vec![ProcSpec::new(TargetEntropy {
        target_nats: b.unit.to_nats(b.target),
        mode,
    })];
    v.extend(unit::optional(
        &mut c,
        &[(&top_p::SIMPLE, b.top_p), (&min_p::SIMPLE, b.min_p)],
    ));
    c.done(v)
}

/// The validated strategy (recorded as `op: target_entropy` with its mode's fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetEntropy {
    pub target_nats: f64,
    #[serde(flatten)]
    pub mode: TargetMode,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum TargetMode {
    Solve {
        t_min: f64,
        t_max: f64,
    },
    Feedback {
        signal: Signal,
        kp: f64,
        ki: f64,
        t_init: f64,
        smoothing: f64,
        t_min: f64,
        t_max: f64,
    },
}

impl Proc for TargetEntropy {
    fn op(&self) -> &'static str {
        "target_entropy"
    }
    fn params(&self) -> serde_json::Value {
        unit::params_of(self)
    }
    fn build(&self, _vocab: usize) -> Box<dyn Processor> {
        match self.mode {
            TargetMode::Solve { t_min, t_max } => Box::new(Solve {
                target_nats: self.target_nats,
                t_min,
                t_max,
            }),
            TargetMode::Feedback {
                signal,
                kp,
                ki,
                t_init,
                smoothing,
                t_min,
                t_max,
            } => Box::new(Feedback::new(
                self.target_nats,
                signal,
                kp,
                ki,
                t_init,
                t_min,
                t_max,
                smoothing,
            )),
        }
    }
    fn facts(&self) -> Facts {
        Facts {
            controller: true,
            target_nats: Some(self.target_nats),
            ..Facts::default()
        }
    }
}

/// How a step's solve ended: the entropy met the target within [`TOLERANCE`], the target was
/// out of reach and T clamped to a bound, or the iteration stopped (60 steps, or a bracket
/// collapsed to 1e-12 in ln T) without meeting the tolerance. Recorded per step in the trace
/// (`solve`) and counted per strategy in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SolveFlag {
    Met,
    ClampedMin,
    ClampedMax,
    Missed,
}

/// What a feedback controller regulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// Temperature in [t_min, t_max] whose softmax entropy over `logits` is `target` (nats): the
/// plain form, one exp pass over the logits per Newton step (the reference the processor's
/// faster path is tested against).
pub fn solve_temperature(logits: &[f32], target: f64, t_min: f64, t_max: f64) -> f64 {
    let m = super::kernels::max_finite(logits);
    newton_in_log_t(
        |t| entropy_at_temperature(logits, m, t),
        target,
        TOLERANCE,
        (t_min, t_max),
        (1.0, None),
    )
    .0
}

/// Entropy tolerance of the solve (nats).
const TOLERANCE: f64 = 1e-5;

/// Safeguarded Newton in ln T for H(T) = target on [t_min, t_max]. H is non-decreasing in T,
/// so a bracket is kept and a step leaving it bisects instead. `eval(t)` gives H and dH/dT;
/// `start` is the first T tried (clamped into the range), with H and dH/dT there when already
/// known. The bounds are evaluated only when Newton reaches them (to tell an unreachable
/// target, which clamps to the bound), not up front. The last T evaluated is the T returned,
/// except when a bound is returned for an unreachable target; the flag says which case ended it.
fn newton_in_log_t(
    mut eval: impl FnMut(f64) -> (f64, f64),
    target: f64,
    tolerance: f64,
    (t_min, t_max): (f64, f64),
    (start, known): (f64, Option<(f64, f64)>),
) -> (f64, SolveFlag) {
    let (x_min, x_max) = (t_min.ln(), t_max.ln());
    // bracket in ln T; `*_seen`: H was evaluated there (below / above the target)
    let (mut lo, mut hi) = (x_min, x_max);
    let (mut lo_seen, mut hi_seen) = (false, false);
    let x0 = start.ln();
    let mut x = x0.clamp(x_min, x_max);
    let (mut h, mut dh_dt) = match known {
        Some(v) if x == x0 => v,
        _ => eval(x.exp()),
    };
    for _ in 0..60 {
        let t = x.exp();
        let err = h - target;
        if err.abs() < tolerance {
            return (t, SolveFlag::Met);
        }
        if err > 0.0 {
            if x <= x_min {
                return (t_min, SolveFlag::ClampedMin); // H(t_min) is already above the target
            }
            hi = x;
            hi_seen = true;
        } else {
            if x >= x_max {
                return (t_max, SolveFlag::ClampedMax); // H(t_max) is still below the target
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
        (h, dh_dt) = eval(x.exp());
    }
    let flag = if (h - target).abs() < tolerance {
        SolveFlag::Met
    } else {
        SolveFlag::Missed
    };
    (x.exp(), flag)
}

/// Sets shorter than this are solved with exact passes only (they are cheap there).
const MODEL_MIN_LEN: usize = 1 << 14;
/// The model's head: the logits within this many nats of the maximum, narrowed while there are
/// more than [`HEAD_MAX`] of them (a wider head measured no fewer exact passes, only slower
/// model steps).
const HEAD_NATS: f64 = 12.0;
const HEAD_MAX: usize = 1 << 13;

/// H(T) of a candidate set, modelled at a fraction of an exp pass over the vocabulary: the
/// head (the logits within [`HEAD_NATS`] of the maximum, usually a few hundred to a few
/// thousand) exactly; the tail through its cumulant generating function K(β) = ln Σ e^{βd}
/// (d = logit - max), known with K' and K'' at anchors where the exact sums of the whole set
/// are known (T = 1 from the step's first pass, then each exact pass of the solve): a
/// second-order expansion about one anchor, the quintic through the last two (which brackets
/// or nearly brackets the answer once the first exact pass is in).
///
/// The solve runs Newton on the model, checks the result with one exact pass (also the final
/// pass the draw uses) and, if it misses the tolerance, anchors there and solves again.
/// Measured on real Gemma rows: one exact pass when T < 1 (the tail only shrinks), two when
/// T > 1 (against 4-7 for Newton on exact passes alone).
struct Model {
    head: Vec<f32>,
    max: f32,
    /// Every tail logit is below max - `width`; there are `tail_len` of them.
    width: f64,
    tail_len: f64,
    /// (β, [K, K', K'']) of the tail at the last two anchors.
    anchors: Vec<(f64, [f64; 3])>,
}

impl Model {
    fn new(cands: &Candidates, st: &super::kernels::DistStats) -> Model {
        let m = st.max_logit;
        let mut width = HEAD_NATS;
        let mut head = Vec::new();
        cands.values_at_least(m as f64 - width, &mut head);
        while head.len() > HEAD_MAX && width > 2.0 {
            width *= 0.75;
            let cut = super::kernels::f32_at_least(m as f64 - width);
            head.retain(|&l| l >= cut);
        }
        Model {
            tail_len: (cands.len() - head.len()) as f64,
            head,
            max: m,
            width,
            anchors: Vec::with_capacity(3),
        }
    }

    /// Σ e^{βd}, Σ d e^{βd}, Σ d² e^{βd} over the head.
    fn head(&self, beta: f64) -> [f64; 3] {
        let (s, s1, s2, _) = super::kernels::scaled_moments(&self.head, self.max, beta as f32);
        [s, s1 / beta, s2 / (beta * beta)]
    }

    /// K, K', K'' of the tail at β.
    fn tail(&self, beta: f64) -> Option<[f64; 3]> {
        match self.anchors.as_slice() {
            [] => None,
            [(b0, [k, k1, k2])] => {
                let db = beta - b0;
                Some([k + db * k1 + db * db * k2 / 2.0, k1 + db * k2, *k2])
            }
            [.., (ba, a), (bb, b)] => Some(quintic_hermite(beta, (*ba, *a), (*bb, *b))),
        }
    }

    fn sums(&self, beta: f64) -> [f64; 3] {
        let mut a = self.head(beta);
        if let Some([k, k1, k2]) = self.tail(beta) {
            // held to what the tail can hold: tail_len logits below -width
            let k = k.min(self.tail_len.ln() - beta * self.width);
            let (k1, k2) = (k1.min(-self.width), k2.max(0.0));
            let t0 = k.exp();
            a[0] += t0;
            a[1] += t0 * k1;
            a[2] += t0 * (k2 + k1 * k1);
        }
        a
    }

    /// H and dH/dT at T.
    fn eval(&self, t: f64) -> (f64, f64) {
        let beta = 1.0 / t;
        entropy_of_sums(self.sums(beta), beta)
    }

    /// Anchor the tail at β, where the whole set's sums (`exact`, as [`Self::sums`]) are known.
    fn anchor(&mut self, beta: f64, exact: [f64; 3]) {
        let h = self.head(beta);
        let t0 = exact[0] - h[0];
        // a tail within the rounding of the sums carries no weight the solve could see
        if t0 > 1e-9 * exact[0] {
            let k1 = (exact[1] - h[1]) / t0;
            let k2 = ((exact[2] - h[2]) / t0 - k1 * k1).max(0.0);
            if self.anchors.len() == 2 {
                self.anchors.remove(0);
            }
            // two anchors too close for the quintic: keep the new one alone
            if self
                .anchors
                .last()
                .is_some_and(|a| (a.0 - beta).abs() < 1e-6)
            {
                self.anchors.clear();
            }
            self.anchors.push((beta, [t0.ln(), k1, k2]));
        }
    }
}

/// The quintic through value, slope and curvature at two points, and its first two
/// derivatives, at x.
fn quintic_hermite(x: f64, (xa, a): (f64, [f64; 3]), (xb, b): (f64, [f64; 3])) -> [f64; 3] {
    let h = xb - xa;
    let u = (x - xa) / h;
    let (y0, d0, c0) = (a[0], a[1] * h, a[2] * h * h);
    let (y1, d1, c1) = (b[0], b[1] * h, b[2] * h * h);
    let dy = y1 - y0;
    let c = [
        y0,
        d0,
        c0 / 2.0,
        10.0 * dy - 6.0 * d0 - 4.0 * d1 - (3.0 * c0 - c1) / 2.0,
        -15.0 * dy + 8.0 * d0 + 7.0 * d1 + (3.0 * c0 - 2.0 * c1) / 2.0,
        6.0 * dy - 3.0 * (d0 + d1) - (c0 - c1) / 2.0,
    ];
    let (mut p, mut p1, mut p2) = (0.0, 0.0, 0.0);
    for i in (0..6).rev() {
        p2 = p2 * u + 2.0 * p1;
        p1 = p1 * u + p;
        p = p * u + c[i];
    }
    [p, p1 / h, p2 / (h * h)]
}

/// H and dH/dT from Σ e^{βd}, Σ d e^{βd}, Σ d² e^{βd}: H = ln S - β E[d], dH/dT = β³ Var(d).
fn entropy_of_sums([a0, a1, a2]: [f64; 3], beta: f64) -> (f64, f64) {
    let mean = a1 / a0;
    let var = (a2 / a0 - mean * mean).max(0.0);
    ((a0.ln() - beta * mean).max(0.0), beta * beta * beta * var)
}

/// The sums of [`Model::sums`] at β from statistics of the set scaled by β (relative to its
/// maximum): S = e^{log Z - max}, E[y] = ln S - H, E[y²] = Var + E[y]², with y = β d.
fn sums_from_stats(st: &super::kernels::DistStats, beta: f64) -> [f64; 3] {
    let ln_s = st.log_z - st.max_logit as f64;
    let s = ln_s.exp();
    let mean_y = ln_s - st.entropy_nats;
    [
        s,
        s * mean_y / beta,
        s * (st.varentropy_nats2 + mean_y * mean_y) / (beta * beta),
    ]
}

/// The f32 scale 1/T a trial temperature is applied with, or `None` in the greedy limit, where
/// [`apply_temperature`] keeps only the argmax: 1/T above 1e30 and a logit times it overflows,
/// i.e. the largest |logit| (`max_abs`, only needed when t_min is that small) times it.
fn trial_scale(t: f64, max_abs: f32) -> Option<f32> {
    let inv = (1.0 / t) as f32;
    let greedy = !inv.is_finite() || (inv > 1e30 && !(max_abs * inv).is_finite());
    (!greedy).then_some(inv)
}

/// H and dH/dT of the set at T, exactly: the final pass at that temperature (left pending and
/// its statistics cached, so the draw reuses the pass when T is the answer).
/// Also the whole set's sums at the β the pass used (the f32 1/T), to anchor the model there.
fn exact_at(cands: &mut Candidates, t: f64, max_abs: f32) -> (f64, f64, Option<(f64, [f64; 3])>) {
    let Some(inv) = trial_scale(t, max_abs) else {
        return (0.0, 0.0, None); // T -> 0: one token, no entropy
    };
    cands.set_pending_scale(inv);
    let st = cands.final_stats().stats;
    let beta = inv as f64;
    (
        st.entropy_nats,
        st.varentropy_nats2 / t,
        Some((beta, sums_from_stats(&st, beta))),
    )
}

impl Solve {
    /// The temperature, the largest |logit| when 1/t_min can reach the greedy limit (else 0),
    /// and how the solve ended; leaves a trial scale pending on `cands` (settled on entry).
    fn solve(&self, cands: &mut Candidates) -> (f64, f32, SolveFlag) {
        let st = cands.stats();
        let max_abs = if 1.0 / self.t_min > 1e30 {
            let finite = cands.logits().iter().filter(|l| l.is_finite());
            finite.fold(0.0f32, |a, l| a.max(l.abs()))
        } else {
            0.0
        };
        let range = (self.t_min, self.t_max);
        let target = self.target_nats;
        let at_one = (st.entropy_nats, st.varentropy_nats2);
        let done = |h: f64, t: f64| {
            if (h - target).abs() < TOLERANCE {
                Some(SolveFlag::Met)
            } else if h > target && t <= self.t_min {
                Some(SolveFlag::ClampedMin)
            } else if h < target && t >= self.t_max {
                Some(SolveFlag::ClampedMax)
            } else {
                None
            }
        };
        let mut from = (1.0, Some(at_one));
        if cands.len() >= MODEL_MIN_LEN {
            let mut model = Model::new(cands, &st);
            model.anchor(1.0, sums_from_stats(&st, 1.0));
            let mut t = 1.0;
            // model, exact check, anchor there: one or two exact passes, at most three here
            for _ in 0..3 {
                t = newton_in_log_t(
                    |t| model.eval(t),
                    target,
                    TOLERANCE / 10.0,
                    range,
                    (t, None),
                )
                .0;
                let (h, dh_dt, sums) = exact_at(cands, t, max_abs);
                if let Some(flag) = done(h, t) {
                    return (t, max_abs, flag);
                }
                from = (t, Some((h, dh_dt)));
                match sums {
                    Some((beta, s)) => model.anchor(beta, s),
                    None => break,
                }
            }
        }
        // exact passes from there
        let (t, flag) = newton_in_log_t(
            |t| {
                let (h, d, _) = exact_at(cands, t, max_abs);
                (h, d)
            },
            target,
            TOLERANCE,
            range,
            from,
        );
        (t, max_abs, flag)
    }
}

impl Processor for Solve {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        if cands.len() <= 1 {
            return Effect::temperature(1.0);
        }
        let (t, max_abs, flag) = self.solve(cands);
        let mut e = match trial_scale(t, max_abs) {
            // (the scale of the last pass when it was t's: its statistics stay cached)
            Some(inv) => {
                cands.set_pending_scale(inv);
                Effect::temperature(t)
            }
            None => {
                cands.set_pending_scale(1.0); // back to the unscaled logits
                apply_temperature(cands, t)
            }
        };
        e.controller = Some(t);
        e.solve = Some(flag);
        e
    }
}

/// `mode: feedback`: regulate the goal of the exact per-step solve from the integrated error
/// of the realised signal, and low-pass the temperature.
///
/// Each step: goal = target + offset − kp·e_prev (clamped to [0, ln n]); T* = the solve of
/// H(softmax(l / T*)) = goal on this step's candidates; ln T = smoothing·ln T_prev +
/// (1 − smoothing)·ln T* (T_prev = t_init before the first step). After the draw: e = realised −
/// target and offset ← offset − ki·e, except while the goal was out of reach in the direction
/// the error pushes (anti-windup), with |offset| bounded by max(target, 1).
///
/// Why this law (measured on Gemma 3 and SmolLM2, README "Strategies on real models"): H(T) on a 262,144-token row
/// rises from ~2 to ~12 nats between T = 1 and 2, so a controller acting on ln T with fixed
/// gains is either sluggish on flat rows or violent on peaked ones (the previous PI law on ln T
/// alternated between t_min and t_max). The solve inverts H(T) exactly each step, so the loop
/// only has to learn the slowly varying bias between the solved entropy and the realised signal
/// (truncation after the temperature, the smoothing, the surprise's expectation). E[surprise] of
/// a token drawn from the final distribution is that distribution's entropy, so the same law
/// serves both signals. The smoothing keeps the temperature from jumping with every row (the
/// plain solve moves ln T by a median 0.25–0.43 per step on grid1's prompts).
#[derive(Debug)]
pub struct Feedback {
    pub target_nats: f64,
    pub signal: Signal,
    pub kp: f64,
    pub ki: f64,
    pub t_init: f64,
    pub t_min: f64,
    pub t_max: f64,
    pub smoothing: f64,
    offset: f64,
    last_error: f64,
    log_t: f64,
    /// How this step's solve ended (anti-windup reads it).
    flag: Option<SolveFlag>,
    /// Whether this step's distribution went through [`Processor::apply`]: inside a branch of
    /// `entropy_switch` the controller learns only from the steps it shaped (as mirostat).
    applied: bool,
}

impl Feedback {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target_nats: f64,
        signal: Signal,
        kp: f64,
        ki: f64,
        t_init: f64,
        t_min: f64,
        t_max: f64,
        smoothing: f64,
    ) -> Self {
        Feedback {
            target_nats,
            signal,
            kp,
            ki,
            t_init,
            t_min,
            t_max,
            smoothing,
            offset: 0.0,
            last_error: 0.0,
            log_t: t_init.ln(),
            flag: None,
            applied: false,
        }
    }

    /// The entropy the next step's solve aims at.
    pub fn goal_nats(&self) -> f64 {
        self.target_nats + self.offset - self.kp * self.last_error
    }
}

impl Processor for Feedback {
    fn apply(&mut self, cands: &mut Candidates, _ctx: &StepCtx, _s: &mut Scratch) -> Effect {
        self.applied = true;
        if cands.len() <= 1 {
            self.flag = None;
            return Effect::temperature(1.0);
        }
        let goal = self.goal_nats().clamp(0.0, (cands.len() as f64).ln());
        let solve = Solve {
            target_nats: goal,
            t_min: self.t_min,
            t_max: self.t_max,
        };
        let (t_star, _, flag) = solve.solve(cands);
        self.flag = Some(flag);
        let log_t = (self.smoothing * self.log_t + (1.0 - self.smoothing) * t_star.ln())
            .clamp(self.t_min.ln(), self.t_max.ln());
        self.log_t = log_t;
        cands.set_pending_scale(1.0); // back to the unscaled logits
        let t = log_t.exp();
        let mut e = apply_temperature(cands, t);
        e.controller = Some(t);
        e
    }

    fn accept(&mut self, a: &Accepted) {
        if !std::mem::take(&mut self.applied) {
            return;
        }
        let Some(flag) = self.flag.take() else {
            return; // a single candidate: nothing was regulated
        };
        let realised = match self.signal {
            Signal::Entropy => a.final_entropy_nats,
            Signal::Surprise => -a.p_final.max(f64::MIN_POSITIVE).ln(),
        };
        let error = realised - self.target_nats;
        self.last_error = error;
        // anti-windup: no integration while the goal is out of reach in the direction the
        // error asks for
        let wound = (flag == SolveFlag::ClampedMax && error < 0.0)
            || (flag == SolveFlag::ClampedMin && error > 0.0);
        if !wound {
            let bound = self.target_nats.max(1.0);
            self.offset = (self.offset - self.ki * error).clamp(-bound, bound);
        }
    }

    fn reset(&mut self, _prompt: &[u32]) {
        self.offset = 0.0;
        self.last_error = 0.0;
        self.log_t = self.t_init.ln();
        self.flag = None;
        self.applied = false;
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

    /// Entropy (nats) of a probability vector, in f64.
    fn entropy(p: &[f64]) -> f64 {
        p.iter().filter(|&&x| x > 0.0).map(|&x| -x * x.ln()).sum()
    }

    /// The processor's solve (modelled, checked by exact passes) against Newton on exact passes
    /// alone, on rows long enough for the model: LM-shaped ones, a near-deterministic step (one
    /// token far above the bulk) and a flat one; targets below and above the entropy at T = 1
    /// (answers below and above 1) and unreachable ones on both sides.
    #[test]
    fn modelled_solve_agrees_with_exact_passes() {
        let mut rows = crate::bench::synthetic_logit_rows(40_000, 2, 5);
        let mut sharp = rows[0].clone();
        sharp[123] = 30.0;
        rows.push(sharp);
        rows.push(
            (0..30_000)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0)
                .collect(),
        );
        let (t_min, t_max) = (0.05, 5.0);
        for (r, row) in rows.iter().enumerate() {
            for target in [0.0, 0.3, 1.0, 2.5, 4.0, 7.0, 10.0, 11.0] {
                let mut s = Sampler::new(Box::new(Solve {
                    target_nats: target,
                    t_min,
                    t_max,
                }));
                let d = s.final_distribution(row).unwrap();
                let t = d.temperature;
                let reference = solve_temperature(row, target, t_min, t_max);
                let what = format!("row {r}, target {target}: T {t} vs {reference}");
                if reference == t_min || reference == t_max {
                    assert_eq!(t, reference, "{what}");
                } else {
                    assert!((d.entropy_nats - target).abs() < TOLERANCE, "{what}");
                    assert!((entropy(&d.probs) - target).abs() < 2e-5, "{what}");
                    assert!((t / reference - 1.0).abs() < 1e-3, "{what}");
                }
            }
        }
    }

    #[test]
    fn a_vanishing_temperature_bound_is_the_temperature_limit() {
        // target 0 is below every H(T) when the maximum is tied (H -> ln ties): T = t_min.
        // There, 1/T = 1e35 times logits up to 9.76 stays finite: the tied maxima share the
        // mass; with logits up to 9760 the product overflows, the greedy limit: one token.
        for (scale, kept) in [(0.01f32, 21), (10.0, 1)] {
            let row: Vec<f32> = (0..20_000)
                .map(|i| ((i * 31) % 977) as f32 * scale)
                .collect();
            let mut s = Sampler::new(Box::new(Solve {
                target_nats: 0.0,
                t_min: 1e-35,
                t_max: 5.0,
            }));
            let d = s.final_distribution(&row).unwrap();
            assert_eq!(d.kept, kept, "logits scaled by {scale}");
        }
    }

    #[test]
    fn solve_clamps_unreachable_targets() {
        let l = [2.0f32, 1.0, 0.0];
        assert_eq!(solve_temperature(&l, 5.0, 0.1, 3.0), 3.0); // above ln 3
        assert_eq!(solve_temperature(&l, 0.0, 0.1, 3.0), 0.1);
    }

    /// Every solve says how it ended, on a short row (exact passes only) and on the committed
    /// real Gemma 3 rows (262,144 logits: the model path): met for reachable targets, clamped
    /// to the bound for unreachable ones, and never `missed` on these rows.
    #[test]
    fn solve_flags_how_each_step_ended() {
        let flag_of = |logits: &[f32], target: f64, t_min: f64, t_max: f64| {
            let mut s = Sampler::new(Box::new(Solve {
                target_nats: target,
                t_min,
                t_max,
            }));
            s.final_distribution(logits).unwrap().effect.solve
        };
        let short = [2.0f32, 1.0, 0.0, -1.0, -2.5];
        assert_eq!(flag_of(&short, 1.0, 0.05, 5.0), Some(SolveFlag::Met));
        assert_eq!(flag_of(&short, 5.0, 0.05, 5.0), Some(SolveFlag::ClampedMax));
        assert_eq!(
            flag_of(&short, 0.001, 0.5, 5.0),
            Some(SolveFlag::ClampedMin)
        );
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches/fixtures/gemma3-270m-logits.f16");
        for row in crate::bench::read_logit_fixture(&path).unwrap() {
            assert!(row.len() >= MODEL_MIN_LEN);
            for target in [0.5, 1.5, 2.5, 4.0] {
                assert_eq!(
                    flag_of(&row, target, 0.05, 5.0),
                    Some(SolveFlag::Met),
                    "{target}"
                );
            }
            // beyond ln(262,144) = 12.48 nats: out of reach
            assert_eq!(flag_of(&row, 13.0, 0.05, 5.0), Some(SolveFlag::ClampedMax));
        }
    }

    #[test]
    fn feedback_solves_towards_its_goal_smooths_and_resets() {
        // a fixed 50-token row whose entropy at T = 1 (~3.3 nats) is above the target
        let l: Vec<f32> = (0..50).map(|i| -(i as f32) * 0.08).collect();
        let t_star = solve_temperature(&l, 1.0, 0.05, 3.0);
        assert!(t_star < 0.9, "{t_star}");
        let mut fb = Sampler::new(Box::new(Feedback::new(
            1.0,
            Signal::Entropy,
            0.0,
            0.05,
            1.0,
            0.05,
            3.0,
            0.5,
        )));
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        // first step: halfway (in ln T) from t_init = 1 to the solved T*
        let first = fb.sample(&l, &mut rng).unwrap();
        let want = (0.5 * t_star.ln()).exp();
        assert!(
            (first.controller.unwrap() - want).abs() < 1e-4,
            "{first:?} vs {want}"
        );
        // on a constant row T converges to T* and the realised entropy to the target
        let mut last = first;
        for _ in 0..100 {
            last = fb.sample(&l, &mut rng).unwrap();
        }
        assert!((last.final_entropy_nats - 1.0).abs() < 0.02, "{last:?}");
        fb.reset(&[]);
        let again = fb.sample(&l, &mut rng).unwrap();
        assert!((again.controller.unwrap() - want).abs() < 1e-4, "{again:?}");
    }
}
