//! The exp moments behind entropy and varentropy: Σe, Σe·d, Σe·d² with d the logit's distance
//! to the maximum, in f32 lanes flushed into f64 once per [`BLOCK`] (an AVX-512 twin of the block
//! routine gives the same bits lane for lane), long rows as two fixed halves on the pool. Also
//! [`DistStats`] and what is built on the moments: [`dist_stats`], [`softmax_into`],
//! [`entropy_at_temperature`], [`scaled_moments`], and the plain moments of the finite logits
//! ([`finite_moments`], for top-n-sigma). The draw and its final pass are in `draw`; the one
//! read at the boundary, which sums these moments while it checks, in `one_read`.

use super::exp::{exp2_nonpos, exp_nonpos};
use super::isa::{multiversion, Isa};
use super::scan::max_finite;
use super::{split_point, BLOCK};

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

/// Σ e^{d·s}, Σ (d·s) e^{d·s}, Σ (d·s)² e^{d·s} with d = l - m (m >= every l), and the count of
/// non-zero terms: the vectorised pass behind entropy and varentropy, for processors that
/// model a distribution on a subset of its logits.
pub fn scaled_moments(logits: &[f32], m: f32, s: f32) -> (f64, f64, f64, usize) {
    exp_moments_at(Isa::detected(), logits, None, m, s, None, true)
}

/// Sums of one block: Σ e (reduced to f64 by [`tree_sum`]'s tree), and per lane Σ e·d, Σ e·d²
/// (f32) and the count of e > 0.
pub(super) struct BlockSums {
    pub(super) total: f64,
    pub(super) s1: [f32; LANES],
    pub(super) s2: [f32; LANES],
    pub(super) n: [u32; LANES],
}

/// Lanes of the moment passes (one AVX-512 register).
pub(super) const LANES: usize = 16;

/// Σ of 16 f32 lanes in f64 by a fixed tree (lane j + lane j+8, then +4, +2, +1): the same
/// result on every ISA, and four dependent adds instead of sixteen.
#[inline(always)]
fn tree_sum(x: &[f32; LANES]) -> f64 {
    let mut v = [0f64; 8];
    for j in 0..8 {
        v[j] = x[j] as f64 + x[j + 8] as f64;
    }
    let w = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (w[0] + w[2]) + (w[1] + w[3])
}

/// Add a block's f32 lane sums into f64 lane accumulators (reduced once, at the end, by
/// [`lanes_total`]): no horizontal reduction per block.
#[inline(always)]
pub(super) fn lanes_add(acc: &mut [f64; LANES], x: &[f32; LANES]) {
    for j in 0..LANES {
        acc[j] += x[j] as f64;
    }
}

/// Σ of f64 lane accumulators by the fixed tree of [`tree_sum`].
#[inline(always)]
pub(super) fn lanes_total(x: &[f64; LANES]) -> f64 {
    let mut v = [0f64; 8];
    for j in 0..8 {
        v[j] = x[j] + x[j + 8];
    }
    let w = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (w[0] + w[2]) + (w[1] + w[3])
}

/// The moments of one block in log2 units (y = (l - m)·k, e = 2^y): portable form (LLVM
/// vectorises it at the ISA it is compiled for).
// the lane index walks the input and four accumulators in step
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(super) fn block_sums_portable<const PRE: bool>(
    block: &[f32],
    pre: f32,
    m: f32,
    k: f32,
) -> BlockSums {
    let mut s = [0f32; LANES];
    let mut b = BlockSums {
        total: 0.0,
        s1: [0.0; LANES],
        s2: [0.0; LANES],
        n: [0; LANES],
    };
    for c in block.chunks_exact(LANES) {
        for j in 0..LANES {
            // a pending temperature: the scaled logit, rounded as `scale` rounds it
            let x = if PRE { c[j] * pre } else { c[j] };
            let y = (x - m) * k;
            let e = exp2_nonpos(y);
            // masked tokens (y = -inf, e = 0) add exactly 0, not 0·inf = NaN
            let live = y >= -125.0;
            let ey = if live { e * y } else { 0.0 };
            b.n[j] += live as u32;
            s[j] += if live { e } else { 0.0 };
            b.s1[j] += ey;
            // Σ e·y² as a fused multiply-add of e·y and y (one rounding, the same on every ISA)
            if live {
                b.s2[j] = ey.mul_add(y, b.s2[j]);
            }
        }
    }
    b.total = tree_sum(&s);
    b
}

/// [`block_sums_portable`] in AVX2 intrinsics, on two 8-lane registers: the same values, lane for
/// lane. Compiled for AVX2, the portable loop's conditional updates became masked stores
/// (`vmaskmovps`, `vpmaskmovd`) into the lane arrays, which AMD's Zen cores run as long
/// microcoded sequences: greedy at vocab 262k took 890 µs on a Zen 3 host, 10x its floor. Here
/// the lanes stay in registers, the conditions are blends and AND masks, and the arrays are
/// written once, in full.
///
/// Most blocks of a real row have no masked lane (a logit 87 nats under the maximum, -inf or
/// NaN), and for them the masks change nothing: the block is first summed without them
/// ([`block_sums_avx2_live`]), and summed again here only when a lane turns out not live.
/// Without `S2` the unmasked sum leaves Σe·y² out (zero; a pass whose caller needs no
/// varentropy: the draw's final pass), the other sums unchanged, bit for bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) fn block_sums_avx2<const PRE: bool, const S2: bool>(
    block: &[f32],
    pre: f32,
    m: f32,
    k: f32,
) -> BlockSums {
    if let Some(b) = block_sums_avx2_live::<PRE, S2>(block, pre, m, k) {
        return b;
    }
    block_sums_avx2_masked::<PRE>(block, pre, m, k)
}

/// [`block_sums_avx2`] for a block whose lanes are all live (y >= -125, so no clamp, no
/// masks, and each lane counts), or `None` when one is not: the same values, lane for lane, in
/// 20 instructions per 8 logits instead of 25. 2^n comes from the bits of y + 1.5·2^23 + 128
/// (even, so ties round as with 1.5·2^23 alone) shifted into the exponent: 2^(n+1) without the
/// bias subtraction, and the polynomial runs on halved coefficients, which gives exactly half
/// of each Horner step (a scaling by 2 is exact on normal numbers), so p/2 · 2^(n+1) is the
/// portable p · 2^n, bit for bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_sums_avx2_live<const PRE: bool, const S2: bool>(
    block: &[f32],
    pre: f32,
    m: f32,
    k: f32,
) -> Option<BlockSums> {
    use super::exp::EXP2_MAGIC;
    use std::arch::x86_64::*;
    let ps = _mm256_set1_ps;
    let (vm, vk, lim, vpre, half) = (ps(m), ps(k), ps(-125.0), ps(pre), ps(0.5));
    let magic = ps(EXP2_MAGIC + 128.0);
    let pc = super::exp::EXP2_P.map(|c| _mm256_set1_ps(c * 0.5));
    let zero = _mm256_setzero_ps();
    let mut s = [zero; 2];
    let mut s1 = [zero; 2];
    let mut s2 = [zero; 2];
    let mut dead = zero;
    for c in block.chunks_exact(LANES) {
        for h in 0..2 {
            // SAFETY: `c` holds 16 f32, this half reads 8 of them
            let x = unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * h)) };
            let x = if PRE { _mm256_mul_ps(x, vpre) } else { x };
            let y = _mm256_mul_ps(_mm256_sub_ps(x, vm), vk);
            // not live: y < -125 or NaN
            dead = _mm256_or_ps(dead, _mm256_cmp_ps::<_CMP_NGE_UQ>(y, lim));
            let t = _mm256_add_ps(y, magic);
            let nn = _mm256_sub_ps(t, magic);
            let f = _mm256_sub_ps(y, nn);
            let p = horner_avx2(f, &pc, half);
            // the low bits of t hold n + 128 (3..=128): shifted to the exponent, 2^(n+1)
            let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(t)));
            let e = _mm256_mul_ps(p, pow2);
            let ey = _mm256_mul_ps(e, y);
            s[h] = _mm256_add_ps(s[h], e);
            s1[h] = _mm256_add_ps(s1[h], ey);
            if S2 {
                s2[h] = _mm256_fmadd_ps(ey, y, s2[h]);
            }
        }
    }
    if _mm256_movemask_ps(dead) != 0 {
        return None;
    }
    Some(block_sums_from_avx2(
        &s,
        &s1,
        &s2,
        [(block.len() / LANES) as u32; LANES],
    ))
}

/// `last + f·P(f)` with P's coefficients `pc` (highest degree first), Horner by fused
/// multiply-adds as [`exp2_nonpos`] evaluates it: with `last` = 1 its 2^f, with halved
/// coefficients and `last` = 0.5 exactly half of it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn horner_avx2(
    f: std::arch::x86_64::__m256,
    pc: &[std::arch::x86_64::__m256; 6],
    last: std::arch::x86_64::__m256,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::_mm256_fmadd_ps;
    let mut p = _mm256_fmadd_ps(f, pc[0], pc[1]);
    for &c in &pc[2..] {
        p = _mm256_fmadd_ps(f, p, c);
    }
    _mm256_fmadd_ps(f, p, last)
}

/// A block's [`BlockSums`] from the AVX2 kernels' two 8-lane halves of Σe, Σe·y and Σe·y²
/// (lanes 0-7, then 8-15) and the live counts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn block_sums_from_avx2(
    s: &[std::arch::x86_64::__m256; 2],
    s1: &[std::arch::x86_64::__m256; 2],
    s2: &[std::arch::x86_64::__m256; 2],
    n: [u32; LANES],
) -> BlockSums {
    use std::arch::x86_64::_mm256_storeu_ps;
    let mut b = BlockSums {
        total: 0.0,
        s1: [0.0; LANES],
        s2: [0.0; LANES],
        n,
    };
    let mut sl = [0f32; LANES];
    for h in 0..2 {
        // SAFETY: each destination holds 16 lanes of 4 bytes; this half writes 8 of them
        unsafe {
            _mm256_storeu_ps(sl.as_mut_ptr().add(8 * h), s[h]);
            _mm256_storeu_ps(b.s1.as_mut_ptr().add(8 * h), s1[h]);
            _mm256_storeu_ps(b.s2.as_mut_ptr().add(8 * h), s2[h]);
        }
    }
    b.total = tree_sum(&sl);
    b
}

/// [`block_sums_avx2`] with every lane masked as [`block_sums_portable`] masks it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_sums_avx2_masked<const PRE: bool>(block: &[f32], pre: f32, m: f32, k: f32) -> BlockSums {
    use super::exp::{EXP2_BIAS, EXP2_MAGIC};
    use std::arch::x86_64::*;
    let ps = _mm256_set1_ps;
    let (vm, vk, lim, vpre, one) = (ps(m), ps(k), ps(-125.0), ps(pre), ps(1.0));
    let (magic, bias) = (ps(EXP2_MAGIC), _mm256_set1_epi32(EXP2_BIAS as i32));
    let pc = super::exp::EXP2_P.map(|c| _mm256_set1_ps(c));
    let zero = _mm256_setzero_ps();
    let mut s = [zero; 2];
    let mut s1 = [zero; 2];
    let mut s2 = [zero; 2];
    let mut n = [_mm256_setzero_si256(); 2];
    for c in block.chunks_exact(LANES) {
        for h in 0..2 {
            // SAFETY: `c` holds 16 f32, this half reads 8 of them
            let x = unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * h)) };
            let x = if PRE { _mm256_mul_ps(x, vpre) } else { x };
            let y = _mm256_mul_ps(_mm256_sub_ps(x, vm), vk);
            // exp2_nonpos(y), step for step: yc = max(y, -125) (NaN -> -125, as f32::max)
            let yc = _mm256_max_ps(y, lim);
            let t = _mm256_add_ps(yc, magic);
            let nn = _mm256_sub_ps(t, magic);
            let f = _mm256_sub_ps(yc, nn);
            let p = horner_avx2(f, &pc, one);
            let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_sub_epi32(
                _mm256_castps_si256(t),
                bias,
            )));
            // live = y >= -125 (false for NaN); e and e·y are 0 elsewhere
            let live = _mm256_cmp_ps::<_CMP_GE_OQ>(y, lim);
            let e = _mm256_and_ps(_mm256_mul_ps(p, pow2), live);
            let ey = _mm256_and_ps(_mm256_mul_ps(e, y), live);
            n[h] = _mm256_sub_epi32(n[h], _mm256_castps_si256(live)); // live lanes are -1
            s[h] = _mm256_add_ps(s[h], e);
            s1[h] = _mm256_add_ps(s1[h], ey);
            s2[h] = _mm256_blendv_ps(s2[h], _mm256_fmadd_ps(ey, y, s2[h]), live);
        }
    }
    let mut counts = [0u32; LANES];
    for (h, n) in n.iter().enumerate() {
        // SAFETY: `counts` holds 16 lanes of 4 bytes; this half writes 8 of them
        unsafe { _mm256_storeu_si256(counts.as_mut_ptr().add(8 * h).cast(), *n) };
    }
    block_sums_from_avx2(&s, &s1, &s2, counts)
}

/// [`block_sums_portable`] in AVX-512 intrinsics: the same values, lane for lane, on one 16-lane
/// register (LLVM's autovectoriser stops at 256-bit registers here), so the results are
/// bit-identical to the portable form. exp2 takes 2^n by `vscalefps` and rounds y by
/// `vrndscaleps` (exact, the same values as the portable bit tricks for y >= -125; the lanes
/// below are masked out, so y needs no clamp): 19 instructions per 16 logits instead of 24, on a
/// CPU whose 512-bit units retire about one per cycle.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
pub(super) fn block_sums_avx512<const PRE: bool>(
    block: &[f32],
    pre: f32,
    m: f32,
    k: f32,
) -> BlockSums {
    use std::arch::x86_64::*;
    let ps = _mm512_set1_ps;
    let (vm, vk, lim, zero) = (ps(m), ps(k), ps(-125.0), _mm512_setzero_ps());
    let (vpre, one) = (ps(pre), ps(1.0));
    let pc = super::exp::EXP2_P.map(|c| _mm512_set1_ps(c));
    let one_i = _mm512_set1_epi32(1);
    let (mut s, mut s1, mut s2, mut n) = (zero, zero, zero, _mm512_setzero_si512());
    const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    for c in block.chunks_exact(LANES) {
        // SAFETY: `c` holds exactly 16 f32
        let x = unsafe { _mm512_loadu_ps(c.as_ptr()) };
        let x = if PRE { _mm512_mul_ps(x, vpre) } else { x };
        let y = _mm512_mul_ps(_mm512_sub_ps(x, vm), vk);
        // exp2_nonpos(y): n = round(y) (ties to even, as the magic-number add), f = y - n
        let nn = _mm512_roundscale_ps::<NEAREST>(y);
        let f = _mm512_sub_ps(y, nn);
        let mut p = _mm512_fmadd_ps(f, pc[0], pc[1]);
        p = _mm512_fmadd_ps(f, p, pc[2]);
        p = _mm512_fmadd_ps(f, p, pc[3]);
        p = _mm512_fmadd_ps(f, p, pc[4]);
        p = _mm512_fmadd_ps(f, p, pc[5]);
        let p = _mm512_fmadd_ps(f, p, one);
        let live = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(y, lim);
        // p·2^n, exact: p in [0.7, 1.5] and n >= -125 keep it a normal number
        let e = _mm512_maskz_scalef_ps(live, p, nn);
        let ey = _mm512_maskz_mul_ps(live, e, y);
        n = _mm512_mask_add_epi32(n, live, n, one_i);
        s = _mm512_add_ps(s, e);
        s1 = _mm512_add_ps(s1, ey);
        s2 = _mm512_mask3_fmadd_ps(ey, y, s2, live);
    }
    // Σ e in f64 by tree_sum's tree, in registers: the two 8-lane halves converted and added
    // (lane j + lane j+8), then the upper half onto the lower (+4), again (+2), and the pair
    let v = _mm512_add_pd(
        _mm512_cvtps_pd(_mm512_castps512_ps256(s)),
        _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(s)),
    );
    let w = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd::<1>(v));
    let u = _mm_add_pd(_mm256_castpd256_pd128(w), _mm256_extractf128_pd::<1>(w));
    let total = _mm_cvtsd_f64(_mm_add_sd(u, _mm_unpackhi_pd(u, u)));
    let mut b = BlockSums {
        total,
        s1: [0.0; LANES],
        s2: [0.0; LANES],
        n: [0; LANES],
    };
    // SAFETY: each destination holds 16 lanes of 4 bytes
    unsafe {
        _mm512_storeu_ps(b.s1.as_mut_ptr(), s1);
        _mm512_storeu_ps(b.s2.as_mut_ptr(), s2);
        _mm512_storeu_si512(b.n.as_mut_ptr().cast(), n);
    }
    b
}

/// Σ e, Σ e·d, Σ e·d² with d = (l - m)·scale, e = exp(d), and the number of non-zero e: the
/// moments behind entropy and varentropy. Evaluated in log2 units (y = (l - m)·scale·log2 e,
/// e = 2^y; the y sums are turned into nats once, in f64). 16 f32 lanes accumulate blocks of
/// [`BLOCK`] values, flushed into f64 per block: this vectorises (f64 accumulators in the inner
/// loop do not) and keeps the sums accurate to ~1e-7 relative. `blocks`, when given, receives
/// each block's Σ e (the last block holds the remainder), for [`draw_from_logits`](super::draw_from_logits).
#[inline(always)]
fn moments_outer(
    logits: &[f32],
    pre: Option<f32>,
    m: f32,
    k: f32,
    mut blocks: Option<&mut [f64]>,
    block_sums: impl Fn(&[f32]) -> BlockSums,
) -> (f64, f64, f64, usize) {
    let (mut a, mut b, mut c2, mut count) = (0f64, 0f64, 0f64, 0usize);
    let (mut b_lanes, mut c2_lanes, mut n_lanes) = ([0f64; LANES], [0f64; LANES], [0u32; LANES]);
    let full = logits.chunks_exact(BLOCK);
    let rest = full.remainder();
    for (i, block) in full.enumerate() {
        let sums = block_sums(block);
        // a block's Σ e at once (the draw walks them; the total is their sequential sum), the
        // other sums lane by lane
        let bs = sums.total;
        if let Some(v) = blocks.as_deref_mut() {
            v[i] = bs;
        }
        a += bs;
        lanes_add(&mut b_lanes, &sums.s1);
        lanes_add(&mut c2_lanes, &sums.s2);
        for (acc, &x) in n_lanes.iter_mut().zip(&sums.n) {
            *acc += x;
        }
    }
    b += lanes_total(&b_lanes);
    c2 += lanes_total(&c2_lanes);
    count += n_lanes.iter().map(|&x| x as usize).sum::<usize>();
    let mut bs = 0f64;
    for &l in rest {
        let l = pre.map_or(l, |f| l * f);
        let y = (l - m) * k;
        let e = exp2_nonpos(y) as f64;
        if y >= -125.0 {
            count += 1;
            bs += e;
            b += e * y as f64;
            c2 += e * y as f64 * y as f64;
        }
    }
    if let Some(v) = blocks {
        if !rest.is_empty() {
            v[logits.len() / BLOCK] = bs;
        }
    }
    a += bs;
    let ln2 = std::f64::consts::LN_2;
    (a, b * ln2, c2 * ln2 * ln2, count)
}

/// [`moments_outer`] at `isa` (lowered to what the CPU has), over two halves for long rows.
///
/// With `second` false, Σe·y² may be left out (the AVX2 kernel skips it; the value returned is
/// then meaningless): Σe, Σe·y, the count and the blocks' sums are the same bits either way.
pub(super) fn exp_moments_at(
    isa: Isa,
    logits: &[f32],
    pre: Option<f32>,
    m: f32,
    scale: f32,
    blocks: Option<&mut Vec<f64>>,
    second: bool,
) -> (f64, f64, f64, usize) {
    // each part writes its blocks' sums into its own piece of one presized buffer (parts
    // pushing onto two Vecs whose headers share a cache line bounced it between the cores)
    let blocks = blocks.map(|v| {
        v.clear();
        v.resize(logits.len().div_ceil(BLOCK), 0.0);
        &mut v[..]
    });
    let split = split_point(logits.len());
    if split == 0 {
        return exp_moments_part(isa, logits, pre, m, scale, blocks, second);
    }
    let (la, lb) = logits.split_at(split);
    let (ra, rb) = match blocks {
        Some(v) => {
            let (a, b) = v.split_at_mut(split / BLOCK);
            (Some(a), Some(b))
        }
        None => (None, None),
    };
    let (a, b) = crate::pool::join(
        move || exp_moments_part(isa, la, pre, m, scale, ra, second),
        move || exp_moments_part(isa, lb, pre, m, scale, rb, second),
    );
    (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3)
}

/// One contiguous part of [`exp_moments_at`]; `pre`, a pending temperature's scale, multiplies
/// each logit first (a separate instantiation, so the unscaled passes pay nothing for it).
fn exp_moments_part(
    isa: Isa,
    logits: &[f32],
    pre: Option<f32>,
    m: f32,
    scale: f32,
    blocks: Option<&mut [f64]>,
    second: bool,
) -> (f64, f64, f64, usize) {
    type Out = (f64, f64, f64, usize);
    let k = scale * std::f32::consts::LOG2_E;
    let f = pre.unwrap_or(1.0);
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        fn v4<const PRE: bool>(l: &[f32], f: f32, m: f32, k: f32, b: Option<&mut [f64]>) -> Out {
            let pre = PRE.then_some(f);
            moments_outer(l, pre, m, k, b, |x| block_sums_avx512::<PRE>(x, f, m, k))
        }
        #[target_feature(enable = "avx2,fma")]
        fn v3<const PRE: bool, const S2: bool>(
            l: &[f32],
            f: f32,
            m: f32,
            k: f32,
            b: Option<&mut [f64]>,
        ) -> Out {
            let pre = PRE.then_some(f);
            moments_outer(l, pre, m, k, b, |x| block_sums_avx2::<PRE, S2>(x, f, m, k))
        }
        let l = logits;
        // SAFETY: the CPU supports the level (clamped to `Isa::cpu()`)
        match (isa.min(Isa::cpu()), pre.is_some(), second) {
            (Isa::Avx512, true, _) => return unsafe { v4::<true>(l, f, m, k, blocks) },
            (Isa::Avx512, false, _) => return unsafe { v4::<false>(l, f, m, k, blocks) },
            (Isa::Avx2, true, true) => return unsafe { v3::<true, true>(l, f, m, k, blocks) },
            (Isa::Avx2, true, false) => return unsafe { v3::<true, false>(l, f, m, k, blocks) },
            (Isa::Avx2, false, true) => return unsafe { v3::<false, true>(l, f, m, k, blocks) },
            (Isa::Avx2, false, false) => return unsafe { v3::<false, false>(l, f, m, k, blocks) },
            (Isa::Portable, ..) => {}
        }
    }
    if pre.is_some() {
        moments_outer(logits, pre, m, k, blocks, |x| {
            block_sums_portable::<true>(x, f, m, k)
        })
    } else {
        moments_outer(logits, pre, m, k, blocks, |x| {
            block_sums_portable::<false>(x, f, m, k)
        })
    }
}

fn exp_moments(logits: &[f32], m: f32, scale: f32) -> (f64, f64, f64) {
    let (s, s1, s2, _) = scaled_moments(logits, m, scale);
    (s, s1, s2)
}

pub(super) fn stats_from_moments(m: f32, s: f64, s1: f64, s2: f64) -> DistStats {
    let mean_d = s1 / s;
    DistStats {
        max_logit: m,
        log_z: m as f64 + s.ln(),
        entropy_nats: (s.ln() - mean_d).max(0.0),
        varentropy_nats2: (s2 / s - mean_d * mean_d).max(0.0),
    }
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

#[inline(always)]
fn finite_moments_impl(logits: &[f32], pivot: f32) -> (f32, f64, f64, usize) {
    // f32 lanes over blocks of BLOCK values, added into f64 lanes per block (f64 lanes in the
    // inner loop vectorise at half the width; a horizontal sum per block is a chain of scalar
    // adds); values are taken relative to `pivot` so that Σ(l - pivot)² keeps its precision
    // when the logits sit far from 0
    let mut mx = [f32::NEG_INFINITY; LANES];
    let (mut sum_lanes, mut sq_lanes) = ([0f64; LANES], [0f64; LANES]);
    let mut n = [0u32; LANES];
    let blocks = logits.chunks_exact(BLOCK);
    let rest = blocks.remainder();
    for block in blocks {
        let (mut s1, mut s2) = ([0f32; LANES], [0f32; LANES]);
        for c in block.chunks_exact(LANES) {
            for j in 0..LANES {
                let l = c[j];
                let finite = l > f32::NEG_INFINITY;
                let v = if finite { l - pivot } else { 0.0 };
                mx[j] = if l > mx[j] { l } else { mx[j] };
                s1[j] += v;
                s2[j] += v * v;
                n[j] += finite as u32;
            }
        }
        lanes_add(&mut sum_lanes, &s1);
        lanes_add(&mut sq_lanes, &s2);
    }
    let mut max = mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let (mut sum, mut sq) = (lanes_total(&sum_lanes), lanes_total(&sq_lanes));
    let mut count = n.iter().map(|&x| x as usize).sum::<usize>();
    for &l in rest {
        if l > f32::NEG_INFINITY {
            let v = (l - pivot) as f64;
            max = max.max(l);
            sum += v;
            sq += v * v;
            count += 1;
        }
    }
    (max, sum, sq, count)
}

multiversion! {
    /// [`finite_moments_at`] over one part of a row, about the given pivot.
    #[allow(dead_code)]
    fn finite_moments_part / finite_moments_part_at(logits: &[f32], pivot: f32) -> (f32, f64, f64, usize) = finite_moments_impl
}

/// Over the finite logits: max, Σ(l - pivot), Σ(l - pivot)² (f64), their count and the pivot
/// (the first finite logit).
pub fn finite_moments(logits: &[f32]) -> (f32, f64, f64, usize, f32) {
    finite_moments_at(Isa::detected(), logits)
}

/// [`finite_moments`] at `isa`; long rows as the two fixed halves of the one-read pass, each on
/// the thread (and core's cache) that wrote it.
pub fn finite_moments_at(isa: Isa, logits: &[f32]) -> (f32, f64, f64, usize, f32) {
    let pivot = logits
        .iter()
        .copied()
        .find(|l| l.is_finite())
        .unwrap_or(0.0);
    let split = split_point(logits.len());
    let (max, sum, sq, count) = if split == 0 {
        finite_moments_part_at(isa, logits, pivot)
    } else {
        let (la, lb) = logits.split_at(split);
        let (a, b) = crate::pool::join(
            || finite_moments_part_at(isa, la, pivot),
            || finite_moments_part_at(isa, lb, pivot),
        );
        (a.0.max(b.0), a.1 + b.1, a.2 + b.2, a.3 + b.3)
    };
    (max, sum, sq, count, pivot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::kernels::test_rows::big_row;
    use crate::strategy::kernels::SPLIT_MIN;

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
    fn finite_moments_match_an_f64_reference_on_long_rows() {
        // two halves summed apart (one past the split, -inf entries in both, values far from 0)
        let mut l: Vec<f32> = big_row(SPLIT_MIN * 2 + 301)
            .iter()
            .map(|x| x + 1000.0)
            .collect();
        for i in (0..l.len()).step_by(97) {
            l[i] = f32::NEG_INFINITY;
        }
        l[0] = f32::NEG_INFINITY;
        let (max, sum, sq, count, pivot) = finite_moments(&l);
        let finite: Vec<f64> = l
            .iter()
            .filter(|x| x.is_finite())
            .map(|&x| x as f64)
            .collect();
        let n = finite.len() as f64;
        let mean = finite.iter().sum::<f64>() / n;
        let var = finite.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        assert_eq!(pivot, l[1]);
        assert_eq!(count, finite.len());
        assert_eq!(max as f64, finite.iter().cloned().fold(f64::MIN, f64::max));
        let m = sum / count as f64;
        assert!((m + pivot as f64 - mean).abs() < 1e-9 * mean.abs(), "mean");
        let v = sq / count as f64 - m * m;
        assert!((v - var).abs() < 1e-5 * var, "variance {v} vs {var}");
    }

    /// The AVX2 block sums without masks (all lanes live) and with them give the portable
    /// bits, at exact ties of the rounding (y = k + 1/2, where an odd magic constant would round
    /// the other way), at the clamp's edge, and with a dead lane (-inf, NaN, y < -125) anywhere
    /// in the block, which sends the block to the masked form.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_block_sums_with_and_without_masks_give_the_portable_bits() {
        if !Isa::available().contains(&Isa::Avx2) {
            eprintln!("note: no AVX2 on this CPU; nothing to compare");
            return;
        }
        let key = |b: &BlockSums| {
            (
                b.total.to_bits(),
                b.s1.map(f32::to_bits),
                b.s2.map(f32::to_bits),
                b.n,
            )
        };
        // y = x with m = 0, k = 1: quarters from -125 to 0 (every half a tie), then the edge
        let live: Vec<f32> = (0..BLOCK)
            .map(|i| match i {
                0 => -125.0,
                1 => -124.5,
                2 => -0.5,
                3 => 0.0,
                _ => -((i * 37 % 501) as f32) / 4.0,
            })
            .collect();
        for (pre, scale) in [(false, 1.0f32), (true, 1.0), (true, 0.5)] {
            let run = |block: &[f32]| {
                // SAFETY: AVX2 and FMA are present (checked above)
                let (fast, full, lean) = unsafe {
                    if pre {
                        (
                            block_sums_avx2_live::<true, true>(block, scale, 0.0, 1.0),
                            block_sums_avx2::<true, true>(block, scale, 0.0, 1.0),
                            block_sums_avx2::<true, false>(block, scale, 0.0, 1.0),
                        )
                    } else {
                        (
                            block_sums_avx2_live::<false, true>(block, 1.0, 0.0, 1.0),
                            block_sums_avx2::<false, true>(block, 1.0, 0.0, 1.0),
                            block_sums_avx2::<false, false>(block, 1.0, 0.0, 1.0),
                        )
                    }
                };
                let want = if pre {
                    block_sums_portable::<true>(block, scale, 0.0, 1.0)
                } else {
                    block_sums_portable::<false>(block, 1.0, 0.0, 1.0)
                };
                assert_eq!(key(&full), key(&want), "pre {pre}, scale {scale}");
                // without Σe·y²: the other sums, bit for bit
                let (l, w) = (key(&lean), key(&want));
                assert_eq!((l.0, l.1, l.3), (w.0, w.1, w.3), "pre {pre}, scale {scale}");
                fast.map(|f| assert_eq!(key(&f), key(&want), "pre {pre}, scale {scale}"))
            };
            let scaled_live = live.iter().all(|&x| x * scale >= -125.0);
            assert_eq!(run(&live).is_some(), scaled_live);
            for (at, dead) in [(0, f32::NEG_INFINITY), (77, f32::NAN), (255, -125.01)] {
                let mut b = live.clone();
                b[at] = dead / if pre { scale } else { 1.0 };
                assert!(run(&b).is_none(), "a dead lane at {at} went unmasked");
            }
        }
    }

    #[test]
    fn every_isa_gives_bit_identical_moments() {
        if Isa::cpu() < Isa::Avx512 {
            eprintln!(
                "note: this CPU has no AVX-512; only {:?} compared",
                Isa::available()
            );
        }
        let l = big_row(20_011);
        let m = max_finite(&l);
        for isa in Isa::available() {
            for scale in [1.0f32, 0.7, 1.6] {
                let a = exp_moments_at(Isa::Portable, &l, None, m, scale, None, true);
                let b = exp_moments_at(isa, &l, None, m, scale, None, true);
                assert_eq!(
                    (a.0.to_bits(), a.1.to_bits(), a.2.to_bits(), a.3),
                    (b.0.to_bits(), b.1.to_bits(), b.2.to_bits(), b.3),
                    "{isa:?} at scale {scale}"
                );
            }
            let (mut ba, mut bb) = (Vec::new(), Vec::new());
            let a = exp_moments_at(Isa::Portable, &l, None, m, 1.0, Some(&mut ba), true);
            let b = exp_moments_at(isa, &l, None, m, 1.0, Some(&mut bb), true);
            assert_eq!(a.0.to_bits(), b.0.to_bits());
            assert_eq!(ba, bb);
            // a pending temperature folded into the pass
            let (mut ba, mut bb) = (Vec::new(), Vec::new());
            let a = exp_moments_at(
                Isa::Portable,
                &l,
                Some(1.3),
                m * 1.3,
                1.0,
                Some(&mut ba),
                true,
            );
            let b = exp_moments_at(isa, &l, Some(1.3), m * 1.3, 1.0, Some(&mut bb), true);
            assert_eq!(
                (a.0.to_bits(), a.1.to_bits(), a.2.to_bits(), a.3),
                (b.0.to_bits(), b.1.to_bits(), b.2.to_bits(), b.3),
                "{isa:?}, pending scale"
            );
            assert_eq!(ba, bb);
            // the draw's pass without Σe·y²: the other sums and the blocks, the same bits
            for pre in [None, Some(1.3f32)] {
                let mp = pre.map_or(m, |f| m * f);
                let full = exp_moments_at(isa, &l, pre, mp, 1.0, Some(&mut ba), true);
                let lean = exp_moments_at(isa, &l, pre, mp, 1.0, Some(&mut bb), false);
                assert_eq!(
                    (full.0.to_bits(), full.1.to_bits(), full.3),
                    (lean.0.to_bits(), lean.1.to_bits(), lean.3),
                    "{isa:?}, {pre:?} without the second moment"
                );
                assert_eq!(ba, bb);
            }
            let fa = finite_moments_at(Isa::Portable, &l);
            let fb = finite_moments_at(isa, &l);
            assert_eq!(
                (fa.0.to_bits(), fa.1.to_bits(), fa.2.to_bits(), fa.3),
                (fb.0.to_bits(), fb.1.to_bits(), fb.2.to_bits(), fb.3)
            );
            // rows long enough to be summed in halves
            let long = big_row(SPLIT_MIN + 777);
            let lm = max_finite(&long);
            let fa = finite_moments_at(Isa::Portable, &long);
            let fb = finite_moments_at(isa, &long);
            assert_eq!(
                (fa.0.to_bits(), fa.1.to_bits(), fa.2.to_bits(), fa.3),
                (fb.0.to_bits(), fb.1.to_bits(), fb.2.to_bits(), fb.3),
                "{isa:?}, long row"
            );
            let a = exp_moments_at(Isa::Portable, &long, None, lm, 0.9, None, true);
            let b = exp_moments_at(isa, &long, None, lm, 0.9, None, true);
            assert_eq!(
                (a.0.to_bits(), a.3),
                (b.0.to_bits(), b.3),
                "{isa:?}, long row"
            );
        }
    }
}
