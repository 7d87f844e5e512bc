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
        // ids sorted, unique and as many as the vocabulary: already the identity
        if !(self.sorted_by_id && self.ids.len() == logits.len()) {
            self.ids.clear();
            self.ids.extend(0..logits.len() as u32);
        }
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

    /// Position of the largest logit; the lowest token id wins ties. A vectorised max pass,
    /// then a scan for the first position holding it (ids ascending) or the lowest id among
    /// the positions holding it (unsorted).
    pub fn argmax_position(&self) -> Option<usize> {
        let m = max_finite(&self.logits);
        if m == f32::NEG_INFINITY {
            return None;
        }
        if self.sorted_by_id {
            return self.logits.iter().position(|&l| l == m);
        }
        self.logits
            .iter()
            .enumerate()
            .filter(|(_, &l)| l == m)
            .min_by_key(|(i, _)| self.ids[*i])
            .map(|(i, _)| i)
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

/// Largest logit (-inf when all are -inf). Lane-split so that it vectorises; NaN must have been
/// rejected by the caller (`check_logits`).
pub fn max_finite(logits: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = logits.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, &l) in lanes.iter_mut().zip(c) {
            *m = if l > *m { l } else { *m };
        }
    }
    let mut m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &l in rest {
        m = m.max(l);
    }
    m
}

/// exp(x) for x <= 0, written so LLVM vectorises it (libm's `expf` is a scalar call, ~4x
/// slower over a 262k vocabulary). x <= -87.3 (including -inf) gives 0. Range reduction
/// x = n·ln2 + r with |r| <= ln2/2 and a degree-7 Taylor polynomial: relative error < 3e-7
/// (tested against f64 `exp`).
#[inline(always)]
pub fn exp_nonpos(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // round-to-nearest by adding 1.5·2^23 (vectorises; `floor`/`as` casts may not)
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.max(-87.0);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // the low mantissa bits of t hold n (in [-126, 0]), so 2^n is built from bits directly
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// Σ e, Σ e·d, Σ e·d² with d = l - m, e = exp(d): the moments behind entropy and varentropy.
/// f32 exp, f64 accumulation in 8 lanes.
fn exp_moments(logits: &[f32], m: f32, scale: f32) -> (f64, f64, f64) {
    let (s, s1, s2, _) = exp_moments_count(logits, m, scale);
    (s, s1, s2)
}

/// [`exp_moments`] plus the number of non-zero weights. 16 f32 lanes accumulate blocks of 256
/// values, flushed into f64 per block: this vectorises (f64 accumulators in the inner loop do
/// not) and keeps the sums accurate to ~1e-7 relative.
fn exp_moments_count(logits: &[f32], m: f32, scale: f32) -> (f64, f64, f64, usize) {
    const LANES: usize = 16;
    const BLOCK: usize = 256;
    let (mut a, mut b, mut c2, mut count) = (0f64, 0f64, 0f64, 0usize);
    let blocks = logits.chunks_exact(BLOCK);
    let rest = blocks.remainder();
    for block in blocks {
        let mut s = [0f32; LANES];
        let mut s1 = [0f32; LANES];
        let mut s2 = [0f32; LANES];
        let mut n = [0u32; LANES];
        for c in block.chunks_exact(LANES) {
            for j in 0..LANES {
                let d = (c[j] - m) * scale;
                let e = exp_nonpos(d);
                // d is -inf for masked tokens (e = 0): clamp so that e·d is 0, not NaN
                let d = d.max(-100.0);
                n[j] += (e > 0.0) as u32;
                s[j] += e;
                s1[j] += e * d;
                s2[j] += e * d * d;
            }
        }
        a += s.iter().map(|&x| x as f64).sum::<f64>();
        b += s1.iter().map(|&x| x as f64).sum::<f64>();
        c2 += s2.iter().map(|&x| x as f64).sum::<f64>();
        count += n.iter().map(|&x| x as usize).sum::<usize>();
    }
    for &l in rest {
        let d = (l - m) * scale;
        let e = exp_nonpos(d) as f64;
        let d = if e > 0.0 { d as f64 } else { 0.0 };
        count += (e > 0.0) as usize;
        a += e;
        b += e * d;
        c2 += e * d * d;
    }
    (a, b, c2, count)
}

fn stats_from_moments(m: f32, s: f64, s1: f64, s2: f64) -> DistStats {
    let mean_d = s1 / s;
    DistStats {
        max_logit: m,
        log_z: m as f64 + s.ln(),
        entropy_nats: (s.ln() - mean_d).max(0.0),
        varentropy_nats2: (s2 / s - mean_d * mean_d).max(0.0),
    }
}

/// Summary of the final (sampled-from) distribution over the candidates' logits.
#[derive(Debug, Clone, Copy)]
pub struct FinalStats {
    pub stats: DistStats,
    /// Σ exp(l - max): the normaliser of the draw.
    pub sum: f64,
    /// Candidates with non-zero probability.
    pub kept: usize,
}

pub fn final_stats(logits: &[f32]) -> FinalStats {
    let m = max_finite(logits);
    if m == f32::NEG_INFINITY {
        let stats = DistStats {
            max_logit: m,
            log_z: f64::NEG_INFINITY,
            entropy_nats: 0.0,
            varentropy_nats2: 0.0,
        };
        return FinalStats {
            stats,
            sum: 0.0,
            kept: 0,
        };
    }
    let (s, s1, s2, kept) = exp_moments_count(logits, m, 1.0);
    FinalStats {
        stats: stats_from_moments(m, s, s1, s2),
        sum: s,
        kept,
    }
}

/// Inverse-CDF draw over softmax(logits) in the given order with u in [0,1): the first position
/// whose running weight exceeds u·S; returns (position, its unnormalised weight). Tokens with
/// zero weight are never chosen.
pub fn draw_from_logits(logits: &[f32], fin: &FinalStats, u: f64) -> (usize, f64) {
    let m = fin.stats.max_logit;
    let target = u * fin.sum;
    let mut run = 0.0;
    let mut last = (0, 0.0);
    for (i, &l) in logits.iter().enumerate() {
        let e = exp_nonpos(l - m) as f64;
        if e > 0.0 {
            run += e;
            last = (i, e);
            if run > target {
                return (i, e);
            }
        }
    }
    last
}

/// Entropy and varentropy of softmax(logits) without materialising probabilities:
/// H = ln S - (Σ e·d)/S, Var = (Σ e·d²)/S - ((Σ e·d)/S)².
pub fn dist_stats(logits: &[f32]) -> DistStats {
    let m = max_finite(logits);
    let (s, s1, s2) = exp_moments(logits, m, 1.0);
    stats_from_moments(m, s, s1, s2)
}

/// Softmax into `probs` (same order as `logits`), f64 normalisation.
pub fn softmax_into(logits: &[f32], probs: &mut Vec<f64>) -> DistStats {
    let m = max_finite(logits);
    probs.clear();
    probs.extend(logits.iter().map(|&l| exp_nonpos(l - m) as f64));
    let (mut s, mut s1, mut s2) = (0f64, 0f64, 0f64);
    for (&e, &l) in probs.iter().zip(logits) {
        if e > 0.0 {
            let d = (l - m) as f64;
            s += e;
            s1 += e * d;
            s2 += e * d * d;
        }
    }
    let inv = 1.0 / s;
    for p in probs.iter_mut() {
        *p *= inv;
    }
    stats_from_moments(m, s, s1, s2)
}

/// Entropy (nats) of softmax(logits / t), and its derivative dH/dT = Var_T(l) / T³.
pub fn entropy_at_temperature(logits: &[f32], max_logit: f32, t: f64) -> (f64, f64) {
    let beta = 1.0 / t;
    // moments of d·β with d = l - max; H = ln S - E[dβ], Var_T(l) = Var(dβ)/β²
    let (s, s1, s2) = exp_moments(logits, max_logit, beta as f32);
    let mean = s1 / s;
    let var = (s2 / s - mean * mean).max(0.0);
    let h = (s.ln() - mean).max(0.0);
    (h, var / t)
}

/// Positions (into `cands`) of the candidates with logit >= `cut`.
pub fn positions_at_least(logits: &[f32], cut: f64, out: &mut Vec<usize>) {
    out.clear();
    out.extend(
        logits
            .iter()
            .enumerate()
            .filter(|(_, &l)| l as f64 >= cut)
            .map(|(i, _)| i),
    );
}

/// Positions of the `k` largest logits in descending order (ties: lower id first). Selects
/// among the candidates within 16, 32, ... nats of the maximum, widening only while fewer than
/// `k` qualify, so the usual case touches a few hundred tokens instead of the vocabulary.
pub fn top_k_positions(cands: &Candidates, k: usize, out: &mut Vec<usize>) {
    let k = k.min(cands.len());
    let max = cands.max_logit() as f64;
    let mut width = 16.0;
    loop {
        positions_at_least(&cands.logits, max - width, out);
        if out.len() >= k || width > 1e4 {
            break;
        }
        width *= 2.0;
    }
    if out.len() < k {
        out.clear();
        out.extend(0..cands.len());
    }
    let cmp = |&a: &usize, &b: &usize| {
        cands.logits[b]
            .total_cmp(&cands.logits[a])
            .then(cands.ids[a].cmp(&cands.ids[b]))
    };
    if k < out.len() && k > 0 {
        out.select_nth_unstable_by(k - 1, cmp);
    }
    out.truncate(k);
    out.sort_unstable_by(cmp);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_f64_exp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let got = exp_nonpos(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0007;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos(-100.0), 0.0);
        assert_eq!(exp_nonpos(0.0), 1.0);
    }

    #[test]
    fn vectorised_stats_match_a_naive_f64_reference() {
        let logits: Vec<f32> = (0..10_007)
            .map(|i| ((i * 7919 % 1000) as f32 / 37.0).sin() * 9.0)
            .collect();
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = logits.iter().map(|&l| (l as f64 - m).exp()).sum();
        let p: Vec<f64> = logits.iter().map(|&l| (l as f64 - m).exp() / z).collect();
        let h: f64 = -p.iter().map(|x| x * x.ln()).sum::<f64>();
        let v: f64 = p.iter().map(|x| x * (-x.ln() - h).powi(2)).sum();
        let s = dist_stats(&logits);
        assert!(
            (s.entropy_nats - h).abs() < 1e-6,
            "{} vs {h}",
            s.entropy_nats
        );
        assert!(
            (s.varentropy_nats2 - v).abs() < 1e-5,
            "{} vs {v}",
            s.varentropy_nats2
        );
        assert_eq!(max_finite(&logits) as f64, m);
    }

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
        let l = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
        let fin = final_stats(&l);
        assert_eq!(fin.kept, 2);
        assert_eq!(draw_from_logits(&l, &fin, 0.0).0, 1);
        assert_eq!(draw_from_logits(&l, &fin, 0.49).0, 1);
        assert_eq!(draw_from_logits(&l, &fin, 0.51).0, 3);
        assert_eq!(draw_from_logits(&l, &fin, 0.999999).0, 3);
    }
}
