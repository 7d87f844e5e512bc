//! Shared numeric kernels for the strategies: candidate sets, softmax, entropy, selection
//! and the categorical draw. Everything here is allocation-free on the hot path (buffers are
//! reused across steps) and never sorts the whole vocabulary.
//!
//! Probabilities are accumulated in f64 from f32 logits; this is where declab deliberately
//! differs from Hugging Face (which sums in f32): the kept sets can differ only when a
//! cumulative mass lands within f32 rounding of a threshold.

use std::cmp::Ordering;

/// The candidate tokens still in play at one step, as parallel arrays (token id, logit).
///
/// Processors shrink or rescale this set; `sorted_by_id` records whether `ids` is ascending,
/// which the draw relies on so that a sample never depends on the order a selection
/// algorithm left the candidates in.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
    pub sorted_by_id: bool,
}

impl Candidates {
    /// Reset to the full vocabulary, reusing the buffers.
    pub fn fill(&mut self, logits: &[f32]) {
        self.ids.clear();
        self.ids.extend(0..logits.len() as u32);
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        self.sorted_by_id = true;
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Keep the candidates for which `keep(index, logit)` is true, preserving their order.
    pub fn retain(&mut self, mut keep: impl FnMut(usize, f32) -> bool) {
        let mut w = 0;
        for r in 0..self.ids.len() {
            let l = self.logits[r];
            if keep(r, l) {
                self.ids[w] = self.ids[r];
                self.logits[w] = l;
                w += 1;
            }
        }
        self.ids.truncate(w);
        self.logits.truncate(w);
    }

    /// Keep candidates whose logit is >= `threshold`, and drop `-inf` ones.
    pub fn retain_logit_at_least(&mut self, threshold: f32) {
        self.retain(|_, l| l >= threshold && l > f32::NEG_INFINITY);
    }

    /// Keep exactly the candidates at the given positions (any order); leaves the set unsorted.
    pub fn keep_positions(
        &mut self,
        positions: &[usize],
        scratch_ids: &mut Vec<u32>,
        scratch_logits: &mut Vec<f32>,
    ) {
        scratch_ids.clear();
        scratch_logits.clear();
        for &p in positions {
            scratch_ids.push(self.ids[p]);
            scratch_logits.push(self.logits[p]);
        }
        std::mem::swap(&mut self.ids, scratch_ids);
        std::mem::swap(&mut self.logits, scratch_logits);
        self.sorted_by_id = false;
    }

    /// Sort by token id (cheap when the set is small; a no-op when already sorted).
    pub fn sort_by_id(&mut self) {
        if self.sorted_by_id {
            return;
        }
        let mut pairs: Vec<(u32, f32)> = self
            .ids
            .iter()
            .copied()
            .zip(self.logits.iter().copied())
            .collect();
        pairs.sort_unstable_by_key(|p| p.0);
        for (i, (id, l)) in pairs.into_iter().enumerate() {
            self.ids[i] = id;
            self.logits[i] = l;
        }
        self.sorted_by_id = true;
    }

    pub fn scale(&mut self, inv_temperature: f32) {
        for l in &mut self.logits {
            *l *= inv_temperature;
        }
    }

    pub fn max_logit(&self) -> f32 {
        max_finite(&self.logits)
    }

    /// Position of the largest logit; the lowest token id wins ties.
    pub fn argmax_position(&self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, &l) in self.logits.iter().enumerate() {
            if l.is_nan() || l == f32::NEG_INFINITY {
                continue;
            }
            best = match best {
                None => Some(i),
                Some(b) => {
                    let lb = self.logits[b];
                    if l > lb || (l == lb && self.ids[i] < self.ids[b]) {
                        Some(i)
                    } else {
                        Some(b)
                    }
                }
            };
        }
        best
    }

    /// Softmax of the candidates into `probs` (f64); returns the distribution's summary.
    pub fn softmax_into(&self, probs: &mut Vec<f64>) -> DistStats {
        softmax_into(&self.logits, probs)
    }
}

/// Summary of a distribution given by logits: entropy and varentropy in nats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistStats {
    pub max_logit: f32,
    /// ln Σ exp(l_i): the log partition function.
    pub log_z: f64,
    pub entropy_nats: f64,
    /// Var[-ln p] under p, in nats².
    pub varentropy_nats2: f64,
}

impl DistStats {
    /// ln p of a token given its logit.
    pub fn log_prob(&self, logit: f32) -> f64 {
        logit as f64 - self.log_z
    }
}

pub fn max_finite(logits: &[f32]) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for &l in logits {
        if l > m {
            m = l;
        }
    }
    m
}

/// One pass for max, one for Σe, Σe·d, Σe·d² with d = l - max: entropy and varentropy
/// without materialising probabilities. H = ln S - (Σ e·d)/S, Var = (Σ e·d²)/S - ((Σ e·d)/S)².
pub fn dist_stats(logits: &[f32]) -> DistStats {
    let m = max_finite(logits);
    let (mut s, mut s1, mut s2) = (0f64, 0f64, 0f64);
    for &l in logits {
        let d = l - m;
        let e = d.exp() as f64;
        if e > 0.0 {
            let d = d as f64;
            s += e;
            s1 += e * d;
            s2 += e * d * d;
        }
    }
    let mean_d = s1 / s;
    let entropy = (s.ln() - mean_d).max(0.0);
    let varentropy = (s2 / s - mean_d * mean_d).max(0.0);
    DistStats {
        max_logit: m,
        log_z: m as f64 + s.ln(),
        entropy_nats: entropy,
        varentropy_nats2: varentropy,
    }
}

/// Softmax into `probs` (same order as `logits`), f64 normalisation.
pub fn softmax_into(logits: &[f32], probs: &mut Vec<f64>) -> DistStats {
    let m = max_finite(logits);
    probs.clear();
    probs.reserve(logits.len());
    let (mut s, mut s1, mut s2) = (0f64, 0f64, 0f64);
    for &l in logits {
        let d = l - m;
        let e = d.exp() as f64;
        probs.push(e);
        if e > 0.0 {
            let d = d as f64;
            s += e;
            s1 += e * d;
            s2 += e * d * d;
        }
    }
    let inv = 1.0 / s;
    for p in probs.iter_mut() {
        *p *= inv;
    }
    let mean_d = s1 / s;
    DistStats {
        max_logit: m,
        log_z: m as f64 + s.ln(),
        entropy_nats: (s.ln() - mean_d).max(0.0),
        varentropy_nats2: (s2 / s - mean_d * mean_d).max(0.0),
    }
}

/// Entropy (nats) of softmax(logits / t), and its derivative dH/dT = Var_T(l) / T³.
pub fn entropy_at_temperature(logits: &[f32], max_logit: f32, t: f64) -> (f64, f64) {
    let beta = 1.0 / t;
    let beta32 = beta as f32;
    let (mut s, mut s1, mut s2) = (0f64, 0f64, 0f64);
    for &l in logits {
        // f32 exp, f64 accumulation: 2-4x faster than f64 exp, error ~1e-7 relative per term
        let d = l - max_logit; // <= 0, -inf for masked tokens
        let e = (d * beta32).exp();
        if e > 0.0 {
            let (e, d) = (e as f64, d as f64);
            s += e;
            s1 += e * d;
            s2 += e * d * d;
        }
    }
    let mean = s1 / s;
    let var = (s2 / s - mean * mean).max(0.0);
    // H = ln S - β·E[d]
    let h = (s.ln() - beta * mean).max(0.0);
    (h, var * beta * beta * beta)
}

/// Order candidates by a key (ascending), ties broken by lower token id.
#[inline]
fn cmp_key(a: (f64, u32), b: (f64, u32)) -> Ordering {
    a.0.partial_cmp(&b.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// Positions of the candidates in ascending `key` order (ties: lower id first), produced lazily
/// in growing windows: the caller's `visit` is called on each position in order until it returns
/// `false`. Costs O(V) per window instead of a full sort; the window grows 8x when exhausted.
pub fn visit_in_key_order(
    keys: &[f64],
    ids: &[u32],
    order: &mut Vec<usize>,
    mut visit: impl FnMut(usize) -> bool,
) {
    let n = keys.len();
    let mut window = 256.min(n);
    let mut done = 0usize; // how many of the sorted prefix have been visited
    loop {
        order.clear();
        order.extend(0..n);
        if window < n {
            order.select_nth_unstable_by(window - 1, |&a, &b| {
                cmp_key((keys[a], ids[a]), (keys[b], ids[b]))
            });
            order.truncate(window);
        }
        order.sort_unstable_by(|&a, &b| cmp_key((keys[a], ids[a]), (keys[b], ids[b])));
        for &pos in &order[done..] {
            if !visit(pos) {
                return;
            }
        }
        done = order.len();
        if window >= n {
            return;
        }
        window = (window * 8).min(n);
    }
}

/// Draw one position from unnormalised non-negative weights with u in [0,1): the first position
/// whose running sum exceeds u·total (inverse CDF). Positions with zero weight are never chosen.
pub fn draw_inverse_cdf(weights: &[f64], u: f64) -> usize {
    let total: f64 = weights.iter().sum();
    let target = u * total;
    let mut run = 0.0;
    let mut last_positive = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            run += w;
            last_positive = i;
            if run > target {
                return i;
            }
        }
    }
    last_positive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_uniform_is_ln_v() {
        let s = dist_stats(&[0.0; 8]);
        assert!((s.entropy_nats - 8f64.ln()).abs() < 1e-9);
        assert!(s.varentropy_nats2.abs() < 1e-12);
    }

    #[test]
    fn entropy_ignores_neg_inf() {
        let s = dist_stats(&[1.0, f32::NEG_INFINITY, 1.0]);
        assert!((s.entropy_nats - 2f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn varentropy_matches_definition() {
        let l = [2.0f32, 1.0, 0.0, -1.0];
        let mut p = Vec::new();
        let s = softmax_into(&l, &mut p);
        let h: f64 = -p.iter().map(|x| x * x.ln()).sum::<f64>();
        let v: f64 = p.iter().map(|x| x * (-x.ln() - h).powi(2)).sum();
        assert!((s.entropy_nats - h).abs() < 1e-7);
        assert!((s.varentropy_nats2 - v).abs() < 1e-7);
    }

    #[test]
    fn entropy_at_temperature_matches_softmax() {
        let l = [3.0f32, 1.0, 0.5, -2.0];
        let (h, _) = entropy_at_temperature(&l, 3.0, 0.5);
        let scaled: Vec<f32> = l.iter().map(|x| x / 0.5).collect();
        assert!((h - dist_stats(&scaled).entropy_nats).abs() < 1e-6);
    }

    #[test]
    fn derivative_matches_finite_difference() {
        let l = [3.0f32, 1.0, 0.5, -2.0, 0.1];
        // central difference with a step large enough for f32 exp (rounding ~1e-7)
        let (_, d) = entropy_at_temperature(&l, 3.0, 0.8);
        let (h1, _) = entropy_at_temperature(&l, 3.0, 0.8 - 1e-3);
        let (h2, _) = entropy_at_temperature(&l, 3.0, 0.8 + 1e-3);
        assert!(
            ((h2 - h1) / 2e-3 - d).abs() < 1e-3,
            "{} vs {d}",
            (h2 - h1) / 2e-3
        );
    }

    #[test]
    fn visit_order_matches_full_sort_with_ties() {
        let keys: Vec<f64> = (0..2000).map(|i| ((i * 7919) % 97) as f64).collect();
        let ids: Vec<u32> = (0..2000).collect();
        let mut order = Vec::new();
        let mut seen = Vec::new();
        visit_in_key_order(&keys, &ids, &mut order, |p| {
            seen.push(p);
            true
        });
        let mut expect: Vec<usize> = (0..2000).collect();
        expect.sort_by(|&a, &b| cmp_key((keys[a], ids[a]), (keys[b], ids[b])));
        assert_eq!(seen, expect);
    }

    #[test]
    fn draw_never_picks_zero_weight() {
        let w = [0.0, 0.5, 0.0, 0.5];
        assert_eq!(draw_inverse_cdf(&w, 0.0), 1);
        assert_eq!(draw_inverse_cdf(&w, 0.49), 1);
        assert_eq!(draw_inverse_cdf(&w, 0.51), 3);
        assert_eq!(draw_inverse_cdf(&w, 0.999999), 3);
    }
}
