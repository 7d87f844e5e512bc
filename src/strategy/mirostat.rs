//! `mirostat` (Basu et al., ICLR 2021) with llama.cpp semantics (`llama_sampler_mirostat*`):
//! temperature first (llama.cpp's common chain is temp → mirostat), mu starts at 2·tau (and on
//! reset); surprise = -log2 p of the drawn token under the truncated, renormalised
//! distribution; mu ← mu - eta·(surprise - tau).
//!
//! * v2: keep tokens with -log2 p <= mu (at least the top one). llama.cpp sorts and cuts at the
//!   first token above mu; the kept set is identical, so no sort is needed here.
//! * v1: estimate the Zipf exponent s from the top m = 100 probabilities
//!   (s = Σ t_i b_i / Σ t_i², t_i = ln((i+2)/(i+1)), b_i = ln(p_i / p_{i+1}), i < m-1),
//!   k = ((s-1)·2^mu / (1 - V^-(s-1)))^(1/s) with V the model's vocabulary size, then keep the
//!   top max(k, 1) tokens (exactly k; ties broken by lower id).
//!
//! Differences from the paper's code (basusourya/mirostat): it uses tau = 3, eta = 1, n = 50000
//! as V, k = round(k) + 1 and the surprise of the *untruncated* probability; declab follows
//! llama.cpp (tau 5, eta 0.1, the real V, int(k), renormalised surprise).

use super::greedy::keep_argmax;
use super::kernels::{self, Candidates};
use super::temperature::apply_temperature;
use super::unit::{self, Checks, Facts, Kind, PathError, Proc, ProcSpec, Range};
use super::{Accepted, Effect, Processor, Scratch, StepCtx};
use serde::{Deserialize, Serialize};
use serde_yaml::Mapping;

pub const KIND: Kind = Kind {
    name: "mirostat",
    parse,
    abbrevs: &[("mirostat_tau", "tau"), ("mirostat_eta", "lr")],
    id_first: &[],
    integer_keys: &["version"],
    examples: &[
        "{kind: mirostat, version: 1}",
        "{kind: mirostat, version: 2}",
    ],
};

/// The YAML block, with llama.cpp's defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Block {
    #[serde(default = "two")]
    version: u8,
    #[serde(default = "five")]
    mirostat_tau: f64,
    #[serde(default = "a_tenth")]
    mirostat_eta: f64,
    #[serde(default = "one")]
    temperature: f64,
}

fn two() -> u8 {
    2
}
fn five() -> f64 {
    5.0
}
fn a_tenth() -> f64 {
    0.1
}
fn one() -> f64 {
    1.0
}

fn parse(map: &Mapping, path: &str) -> Result<Vec<ProcSpec>, Vec<PathError>> {
    let b: Block = unit::block(map, path)?;
    let mut c = Checks::new(path);
    c.require(
        b.version == 1 || b.version == 2,
        "version",
        format!("{} is not a mirostat version; allowed: 1 or 2", b.version),
    );
    c.range("mirostat_tau", Range::Positive, Some(b.mirostat_tau));
    c.range("mirostat_eta", Range::Positive, Some(b.mirostat_eta));
    c.param(&super::temperature::PARAM, Some(b.temperature));
    c.done(vec![ProcSpec::new(Spec {
        version: b.version,
        mirostat_tau: b.mirostat_tau,
        mirostat_eta: b.mirostat_eta,
        temperature: b.temperature,
    })])
}

/// The validated parameters (recorded as `op: mirostat`).
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub version: u8,
    pub mirostat_tau: f64,
    pub mirostat_eta: f64,
    pub temperature: f64,
}

impl Proc for Spec {
    fn op(&self) -> &'static str {
        "mirostat"
    }
    fn params(&self) -> serde_json::Value {
        unit::params_of(self)
    }
    fn build(&self, _vocab: usize) -> Box<dyn Processor> {
        Box::new(Mirostat::new(
            self.version,
            self.mirostat_tau,
            self.mirostat_eta,
            self.temperature,
        ))
    }
    fn facts(&self) -> Facts {
        Facts {
            controller: true,
            ..Facts::default()
        }
    }
}

#[derive(Debug)]
pub struct Mirostat {
    pub version: u8,
    pub mirostat_tau: f64,
    pub mirostat_eta: f64,
    pub temperature: f64,
    pub m: usize,
    mu: f64,
    applied: bool,
}

impl Mirostat {
    pub fn new(version: u8, mirostat_tau: f64, mirostat_eta: f64, temperature: f64) -> Self {
        Mirostat {
            version,
            mirostat_tau,
            mirostat_eta,
            temperature,
            m: 100,
            mu: 2.0 * mirostat_tau,
            applied: false,
        }
    }

    fn apply_v2(&self, cands: &mut Candidates) {
        // -log2 p <= mu  <=>  l - log Z >= -mu·ln 2 (log space, no softmax)
        let stats = cands.stats();
        let cut = stats.log_z - self.mu * std::f64::consts::LN_2;
        if (stats.max_logit as f64) < cut {
            keep_argmax(cands);
        } else {
            cands.retain_at_least(cut);
        }
    }

    fn apply_v1(&self, cands: &mut Candidates, s: &mut Scratch, vocab: usize) {
        let n = cands.len();
        // the m largest logits, descending (values suffice for the estimate)
        let mut top = std::mem::take(&mut s.logits);
        cands.largest_values(self.m.min(n), &mut top);
        let (mut sum_tb, mut sum_tt) = (0.0f64, 0.0f64);
        for i in 0..top.len().saturating_sub(1) {
            let t_i = ((i + 2) as f64 / (i + 1) as f64).ln();
            // ln(p_i / p_{i+1}) = l_i - l_{i+1}
            let b_i = (top[i] - top[i + 1]) as f64;
            sum_tb += t_i * b_i;
            sum_tt += t_i * t_i;
        }
        let s_hat = sum_tb / sum_tt;
        let eps_hat = s_hat - 1.0;
        let k =
            ((eps_hat * self.mu.exp2()) / (1.0 - (vocab as f64).powf(-eps_hat))).powf(1.0 / s_hat);
        let k = if k.is_finite() {
            (k as usize).clamp(1, n)
        } else {
            n
        };
        if k < n {
            self.keep_top(cands, k, &mut top, s);
        }
        s.logits = top;
    }

    /// Keep exactly the k largest (ties broken by lower id); `top` holds the set's largest
    /// values, descending.
    fn keep_top(&self, cands: &mut Candidates, k: usize, top: &mut Vec<f32>, s: &mut Scratch) {
        if cands.sorted_by_id {
            // in place (id order, so no sort afterwards): everything above the k-th logit,
            // then its ties, lowest ids first, up to k in all
            let (v, above, ties) = if k <= top.len() {
                let v = top[k - 1];
                let ties = top.iter().filter(|&&l| l == v).count();
                // all of v's ties are in `top` when a smaller value follows them there
                let all_seen = top.last().is_some_and(|&l| l < v);
                (
                    v,
                    top[..k].iter().filter(|&&l| l > v).count(),
                    all_seen.then_some(ties),
                )
            } else {
                let v = cands.kth_largest(k, top);
                // after the selection the k - 1 values before the k-th are all >= it, and
                // `top` holds every logit at or above it
                let ties = top.iter().filter(|&&l| l == v).count();
                (
                    v,
                    top[..k - 1].iter().filter(|&&l| l > v).count(),
                    Some(ties),
                )
            };
            if ties == Some(k - above) {
                // every tie is kept: a plain threshold (vectorised)
                cands.retain_ge(v);
                return;
            }
            // everything at or above v (vectorised), then the first of v's ties in id order
            // (a serial pass over the kept set only)
            cands.retain_ge(v);
            let mut ties_left = k - above;
            cands.retain(|_, l| {
                l > v
                    || (ties_left > 0 && {
                        ties_left -= 1;
                        true
                    })
            });
        } else {
            let mut positions = std::mem::take(&mut s.order);
            kernels::top_k_positions(cands, k, &mut positions);
            cands.keep_positions(&positions, &mut s.ids, top);
            s.order = positions;
        }
    }
}

impl Processor for Mirostat {
    fn apply(&mut self, cands: &mut Candidates, ctx: &StepCtx, s: &mut Scratch) -> Effect {
        let mut e = apply_temperature(cands, self.temperature);
        cands.settle();
        if cands.len() > 1 {
            if self.version == 1 {
                self.apply_v1(cands, s, ctx.vocab_size);
            } else {
                self.apply_v2(cands);
            }
        }
        self.applied = true;
        e.controller = Some(self.mu);
        e
    }

    fn accept(&mut self, a: &Accepted) {
        if std::mem::take(&mut self.applied) {
            let surprise = -a.p_final.max(f64::MIN_POSITIVE).log2();
            self.mu -= self.mirostat_eta * (surprise - self.mirostat_tau);
        }
    }

    fn reset(&mut self, _prompt: &[u32]) {
        self.mu = 2.0 * self.mirostat_tau;
        self.applied = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::*;
    use crate::strategy::Sampler;
    use rand::SeedableRng;

    #[test]
    fn v2_keeps_tokens_below_mu_and_updates_mu() {
        // p = (.5,.3,.15,.05): surprise bits (1, 1.737, 2.737, 4.322); tau=1 -> mu=2
        let l = [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()];
        let mut s = Sampler::new(Box::new(Mirostat::new(2, 1.0, 0.5, 1.0)));
        let d = s.final_distribution(&l).unwrap();
        assert_close(&d.probs, &[0.625, 0.375, 0.0, 0.0], 1e-6);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let step = s.sample(&l, &mut rng).unwrap();
        assert_eq!(step.controller, Some(2.0));
        let p = if step.token == 0 { 0.625f64 } else { 0.375 };
        let mu = 2.0 - 0.5 * (-p.log2() - 1.0);
        let next = s.sample(&l, &mut rng).unwrap();
        assert!((next.controller.unwrap() - mu).abs() < 1e-6);
        s.reset(&[]);
        assert_eq!(s.sample(&l, &mut rng).unwrap().controller, Some(2.0));
    }

    #[test]
    fn v1_in_place_keeps_the_same_tokens_as_the_positional_path() {
        // Zipf-shaped logits (-1.1 ln rank) on a 0.01 grid, so that the tail is in tied groups,
        // ids shuffled: the k-th logit is usually tied
        let n = 3000;
        let l: Vec<f32> = (0..n)
            .map(|i| {
                let rank = (i * 37) % n + 1;
                ((-1.1 * (rank as f64).ln()) / 0.01).round() as f32 * 0.01
            })
            .collect();
        let mut kept = Vec::new();
        for mu in [3.0, 6.0, 9.0, 11.0, 13.0] {
            let m = Mirostat::new(1, mu / 2.0, 0.1, 1.0);
            let mut s = Scratch::default();
            let mut in_place = Candidates::default();
            in_place.fill(&l);
            m.apply_v1(&mut in_place, &mut s, n);
            let mut positional = Candidates::default();
            positional.fill(&l);
            let reversed: Vec<usize> = (0..n).rev().collect();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            positional.keep_positions(&reversed, &mut a, &mut b);
            m.apply_v1(&mut positional, &mut s, n);
            positional.sort_by_id();
            assert_eq!(in_place.ids, positional.ids, "mu {mu}");
            kept.push(in_place.len());
        }
        // both branches of the in-place path (k within the top 100, and beyond) were taken
        assert!(
            kept.iter().any(|&k| k < 100) && kept.iter().any(|&k| k > 100 && k < n),
            "{kept:?}"
        );
    }

    #[test]
    fn v2_keeps_top_token_when_all_exceed_mu() {
        let l = [0.0f32; 8]; // each token has 3 bits of surprise; tau small -> mu < 3
        let p = final_probs(Box::new(Mirostat::new(2, 0.5, 0.1, 1.0)), &l);
        assert_close(&p, &[1.0, 0., 0., 0., 0., 0., 0., 0.], 0.0);
    }

    #[test]
    fn v1_zipf_estimate_gives_expected_k() {
        // exact Zipf with s = 2: p_i ∝ 1/i²; s_hat must be 2, eps 1
        let v = 1000usize;
        let l: Vec<f32> = (1..=v).map(|i| -2.0 * (i as f32).ln()).collect();
        // mu = 6 -> k = (1·64/(1-1/1000))^(1/2) = 8.004
        let mut s = Sampler::new(Box::new(Mirostat::new(1, 3.0, 0.1, 1.0)));
        let d = s.final_distribution(&l).unwrap();
        assert_eq!(d.kept, 8);
        assert!(d.probs[..8].iter().all(|&p| p > 0.0));
    }
}
