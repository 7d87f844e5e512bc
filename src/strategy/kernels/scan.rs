//! Read-only passes over a row of logits, compiled per ISA: the largest logit, the boundary
//! check (NaN and +inf rejected, -inf masked), the first position holding a value, the threshold
//! scans that list the positions or the values at or above a cut (whole blocks skipped by their
//! maxima, 64-logit chunks by one vectorised compare), and the element-wise temperature scale.
//! Nothing here shrinks the candidate set (`compact`) or evaluates exp (`moments`).

use super::isa::{multiversion, Isa};
use super::{balanced_split, split_point, BLOCK};
use crate::strategy::SampleError;

/// The smallest f32 `c` with `c as f64 >= cut`, so that `l >= c` <=> `l as f64 >= cut` for every
/// f32 `l` (a NaN cut gives NaN: nothing passes, as in f64).
pub fn f32_at_least(cut: f64) -> f32 {
    let c = cut as f32; // nearest (saturating to ±inf)
    if (c as f64) < cut {
        c.next_up()
    } else {
        c
    }
}

/// Width of the lane split of the max passes: 2 AVX-512 registers, 4 AVX2, 8 SSE.
const MAX_LANES: usize = 32;
/// Logits per skip block of the selective filters.
pub(super) const SKIP: usize = 64;

#[inline(always)]
fn max_impl(logits: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; MAX_LANES];
    let chunks = logits.chunks_exact(MAX_LANES);
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

multiversion! {
    /// Largest logit (-inf when all are -inf). NaN must have been rejected by the caller
    /// (`check_and_max`).
    pub fn max_finite / max_finite_at(logits: &[f32]) -> f32 = max_impl
}

#[inline(always)]
pub(super) fn scan_impl(logits: &[f32]) -> (f32, bool) {
    let mut lanes = [f32::NEG_INFINITY; MAX_LANES];
    let mut bad = [0u32; MAX_LANES];
    let chunks = logits.chunks_exact(MAX_LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..MAX_LANES {
            let l = c[j];
            #[allow(clippy::eq_op)]
            let nan = l != l;
            bad[j] |= (nan | (l == f32::INFINITY)) as u32;
            lanes[j] = if l > lanes[j] { l } else { lanes[j] };
        }
    }
    // fold the lanes as a tree with the same comparison (a NaN is flagged by `bad`, so the
    // NaN-aware f32::max, a scalar chain per lane, is not needed): it runs once per block of
    // the one-read pass, where a scalar fold is a visible share of the pass
    let mut w = MAX_LANES;
    while w > 1 {
        w /= 2;
        for j in 0..w {
            lanes[j] = if lanes[j + w] > lanes[j] {
                lanes[j + w]
            } else {
                lanes[j]
            };
        }
    }
    let mut m = lanes[0];
    let mut any_bad = bad.iter().fold(0, |a, &b| a | b) != 0;
    for &l in rest {
        any_bad |= l.is_nan() | (l == f32::INFINITY);
        m = if l > m { l } else { m };
    }
    (m, any_bad)
}

multiversion! {
    /// Largest logit and whether any logit is NaN or +inf, in one pass.
    fn scan_logits / scan_logits_at(logits: &[f32]) -> (f32, bool) = scan_impl
}

/// Check logits at the boundary (NaN and +inf are rejected, -inf means "masked") and return the
/// largest, in one vectorised pass; the culprit is located only on failure.
pub fn check_and_max(logits: &[f32]) -> Result<f32, SampleError> {
    check_scanned(logits, scan_logits(logits))
}

/// [`check_and_max`] on a scan already made.
pub(super) fn check_scanned(logits: &[f32], (m, bad): (f32, bool)) -> Result<f32, SampleError> {
    if logits.is_empty() {
        return Err(SampleError::Empty);
    }
    if bad {
        for (i, &l) in logits.iter().enumerate() {
            if l.is_nan() {
                return Err(SampleError::NanLogit(i));
            }
            if l == f32::INFINITY {
                return Err(SampleError::InfiniteLogit(i));
            }
        }
    }
    if m == f32::NEG_INFINITY {
        return Err(SampleError::NoCandidate);
    }
    Ok(m)
}

#[inline(always)]
fn first_position_impl(logits: &[f32], m: f32) -> Option<usize> {
    let mut base = 0;
    for c in logits.chunks(SKIP) {
        let mut hit = 0u32;
        for &l in c {
            hit |= (l == m) as u32;
        }
        if hit != 0 {
            return c.iter().position(|&l| l == m).map(|i| base + i);
        }
        base += c.len();
    }
    None
}

multiversion! {
    /// First position holding exactly `m`.
    pub(super) fn first_position_of / first_position_of_at(logits: &[f32], m: f32) -> Option<usize> = first_position_impl
}

#[inline(always)]
fn scale_impl(logits: &mut [f32], f: f32) {
    for l in logits {
        *l *= f;
    }
}

multiversion! {
    pub(super) fn scale_in_place / scale_in_place_at(logits: &mut [f32], f: f32) -> () = scale_impl
}

/// `dst[i] = src[i] * f` (the products [`scale_in_place`] forms); `dst` as long as `src`.
#[inline(always)]
fn scale_into_impl(src: &[f32], dst: &mut [std::mem::MaybeUninit<f32>], f: f32) {
    for (d, &l) in dst.iter_mut().zip(src) {
        d.write(l * f);
    }
}

multiversion! {
    pub(super) fn scale_into / scale_into_at(src: &[f32], dst: &mut [std::mem::MaybeUninit<f32>], f: f32) -> () = scale_into_impl
}

#[inline(always)]
fn positions_impl(logits: &[f32], c: f32, out: &mut Vec<usize>, block_max: &[f32]) {
    out.clear();
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        // a whole block below `c` (known without reading it) is skipped
        if block_max.get(b).is_some_and(|&m| m < c) {
            continue;
        }
        let mut base = b * BLOCK;
        for chunk in block.chunks(SKIP) {
            let mut hit = 0u32;
            for &l in chunk {
                hit |= (l >= c) as u32;
            }
            if hit != 0 {
                for (i, &l) in chunk.iter().enumerate() {
                    if l >= c {
                        out.push(base + i);
                    }
                }
            }
            base += chunk.len();
        }
    }
}

multiversion! {
    #[allow(dead_code)] // only the `_at` form is called
    fn positions_f32_one / positions_f32_one_at(logits: &[f32], c: f32, out: &mut Vec<usize>, block_max: &[f32]) -> () = positions_impl
}

std::thread_local! {
    /// The second half's positions, kept between calls.
    static SECOND: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The positions of the logits >= `c`, in order, into `out`; whole blocks below `c` (by
/// `block_max`, when known) are skipped. A long row with many blocks to read is listed as two
/// parts on two threads (the pool's), cut where each holds half of the blocks to read
/// ([`balanced_split`]), the second part's positions appended after the first's: the same list.
pub(super) fn positions_f32(logits: &[f32], c: f32, out: &mut Vec<usize>, block_max: &[f32]) {
    positions_f32_at(Isa::detected(), logits, c, out, block_max)
}

/// [`positions_f32`] at `isa`.
pub(super) fn positions_f32_at(
    isa: Isa,
    logits: &[f32],
    c: f32,
    out: &mut Vec<usize>,
    block_max: &[f32],
) {
    let Some(split) = balanced_split(logits.len(), block_max, c) else {
        return positions_f32_one_at(isa, logits, c, out, block_max);
    };
    let (la, lb) = logits.split_at(split);
    let (ba, bb) = block_max.split_at(split / BLOCK);
    SECOND.with_borrow_mut(|second| {
        crate::pool::join(
            || positions_f32_one_at(isa, la, c, out, ba),
            || positions_f32_one_at(isa, lb, c, second, bb),
        );
        out.extend(second.iter().map(|&i| i + split));
    })
}

#[inline(always)]
fn values_impl(logits: &[f32], c: f32, out: &mut Vec<f32>, block_max: &[f32]) {
    out.clear();
    out.reserve(logits.len());
    let dst = &mut out.spare_capacity_mut()[..logits.len()];
    let mut w = 0;
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        if block_max.get(b).is_some_and(|&m| m < c) {
            continue;
        }
        for chunk in block.chunks(SKIP) {
            let mut hit = 0u32;
            for &l in chunk {
                hit |= (l >= c) as u32;
            }
            if hit != 0 {
                // branch-free: write every value, advance past the kept ones (w <= index)
                for &l in chunk {
                    dst[w].write(l);
                    w += (l >= c) as usize;
                }
            }
        }
    }
    // SAFETY: the first w elements were written above
    unsafe { out.set_len(w) };
}

/// [`values_impl`] with AVX-512's compress: 16 values compared and the kept ones packed in a
/// few instructions (the scalar form spends instructions on every value read).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn values_avx512(logits: &[f32], c: f32, out: &mut Vec<f32>, block_max: &[f32]) {
    use std::arch::x86_64::*;
    out.clear();
    // room for a whole register written at the last kept position
    out.reserve(logits.len() + 16);
    let dst = out.as_mut_ptr();
    let vc = _mm512_set1_ps(c);
    let mut w = 0;
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        if block_max.get(b).is_some_and(|&m| m < c) {
            continue;
        }
        let chunks = block.chunks_exact(16);
        let rest = chunks.remainder();
        for ch in chunks {
            // SAFETY: `ch` holds 16 f32; w + 16 <= logits.len() + 16, within the capacity
            unsafe {
                let x = _mm512_loadu_ps(ch.as_ptr());
                let k = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, vc);
                // branch-free: whether a register holds a kept value is as good as random
                // in a block that holds one (a mispredicted branch costs more than the store)
                _mm512_storeu_ps(dst.add(w), _mm512_maskz_compress_ps(k, x));
                w += k.count_ones() as usize;
            }
        }
        for &l in rest {
            if l >= c {
                // SAFETY: w < logits.len(), within the capacity
                unsafe { dst.add(w).write(l) };
                w += 1;
            }
        }
    }
    // SAFETY: the first w elements were written above
    unsafe { out.set_len(w) };
}

thread_local! {
    /// A half's output in [`values_f32`] (sized for a whole half, reused across steps).
    static HALF_VALUES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The logits >= `c`, in order, into `out` (blocks whose maximum is below `c` skipped). A long
/// row with many blocks to read is read as two parts on two threads, cut where each holds half
/// of those blocks ([`balanced_split`]); without every block's maximum, as the two fixed halves
/// of the one-read pass.
pub(super) fn values_f32(logits: &[f32], c: f32, out: &mut Vec<f32>, block_max: &[f32]) {
    let isa = Isa::detected();
    let split = if block_max.len() == logits.len().div_ceil(BLOCK) {
        balanced_split(logits.len(), block_max, c).unwrap_or(0)
    } else {
        split_point(logits.len())
    };
    if split == 0 {
        return values_f32_at(isa, logits, c, out, block_max);
    }
    let (la, lb) = logits.split_at(split);
    let (ba, bb) = block_max.split_at((split / BLOCK).min(block_max.len()));
    let half = |l: &[f32], bm: &[f32], out: &mut Vec<f32>| {
        HALF_VALUES.with_borrow_mut(|v| {
            values_f32_at(isa, l, c, v, bm);
            out.extend_from_slice(v);
        })
    };
    let mut second = Vec::new();
    out.clear();
    crate::pool::join(|| half(la, ba, out), || half(lb, bb, &mut second));
    out.append(&mut second);
}

fn values_f32_at(isa: Isa, logits: &[f32], c: f32, out: &mut Vec<f32>, block_max: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn v3(l: &[f32], c: f32, out: &mut Vec<f32>, bm: &[f32]) {
            values_impl(l, c, out, bm)
        }
        match isa.min(Isa::cpu()) {
            // SAFETY: the CPU supports the level (clamped to `Isa::cpu()`)
            Isa::Avx512 => return unsafe { values_avx512(logits, c, out, block_max) },
            Isa::Avx2 => return unsafe { v3(logits, c, out, block_max) },
            Isa::Portable => {}
        }
    }
    values_impl(logits, c, out, block_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::kernels::test_rows::big_row;
    use crate::strategy::kernels::{Candidates, PAR_BLOCKS, SPLIT_MIN};

    #[test]
    fn f32_threshold_is_exact() {
        for cut in [0.1f64, -3.3, 1e-40, 1e39, -1e39, 2.5, f64::NEG_INFINITY] {
            let c = f32_at_least(cut);
            assert!(c as f64 >= cut, "{cut}");
            assert!(
                c == f32::NEG_INFINITY || (c.next_down() as f64) < cut,
                "{cut}"
            );
        }
        assert!(f32_at_least(f64::NAN).is_nan());
    }

    /// A long row whose cut passes many blocks is listed in two halves on two threads; the
    /// list is the plain filter's, for a cut that passes few blocks (one thread), many, or all.
    #[test]
    fn positions_of_long_rows_in_two_halves_are_the_plain_filter() {
        let n = SPLIT_MIN * 2 + 4_321;
        // the blocks to read spread evenly, and only in the last fifth (a cut far past the middle)
        let even = big_row(n);
        let late: Vec<f32> = even
            .iter()
            .enumerate()
            .map(|(i, &x)| if i < n * 4 / 5 { x.min(-12.0) } else { x })
            .collect();
        for l in [even, late] {
            let mut c = Candidates::default();
            c.check_and_fill(&l).unwrap();
            let bm = c.known_block_max();
            assert!(!bm.is_empty());
            for cut in [21.5f32, 5.0, -11.9, f32::NEG_INFINITY] {
                let passing = bm.iter().filter(|&&m| m >= cut).count();
                let want: Vec<usize> = (0..l.len()).filter(|&i| l[i] >= cut).collect();
                let want_vals: Vec<f32> = want.iter().map(|&i| l[i]).collect();
                for isa in Isa::available() {
                    let mut got = vec![7];
                    positions_f32_at(isa, &l, cut, &mut got, bm);
                    assert_eq!(got, want, "{isa:?}, cut {cut} ({passing} blocks)");
                    // maxima for only part of the row: one thread, the same list
                    positions_f32_at(isa, &l, cut, &mut got, &bm[..bm.len() / 3]);
                    assert_eq!(got, want, "{isa:?}, cut {cut}, partial maxima");
                }
                let mut vals = vec![7.0];
                values_f32(&l, cut, &mut vals, bm);
                assert_eq!(vals, want_vals, "values, cut {cut}");
            }
            assert!(bm.iter().filter(|&&m| m >= 21.5).count() < PAR_BLOCKS);
        }
    }

    #[test]
    fn every_isa_gives_bit_identical_scans() {
        if Isa::cpu() < Isa::Avx512 {
            eprintln!(
                "note: this CPU has no AVX-512; only {:?} compared",
                Isa::available()
            );
        }
        let l = big_row(20_011);
        let m = max_finite_at(Isa::Portable, &l);
        for isa in Isa::available() {
            assert_eq!(max_finite_at(isa, &l).to_bits(), m.to_bits(), "{isa:?}");
            assert_eq!(scan_logits_at(isa, &l), scan_logits_at(Isa::Portable, &l));
            let (mut va, mut vb) = (Vec::new(), Vec::new());
            values_f32_at(Isa::Portable, &l, 12.5, &mut va, &[]);
            values_f32_at(isa, &l, 12.5, &mut vb, &[]);
            assert_eq!(va, vb, "{isa:?}");
            assert_eq!(
                va,
                l.iter().copied().filter(|&x| x >= 12.5).collect::<Vec<_>>()
            );
            let (mut pa, mut pb) = (Vec::new(), Vec::new());
            positions_f32_at(Isa::Portable, &l, 15.0, &mut pa, &[]);
            positions_f32_at(isa, &l, 15.0, &mut pb, &[]);
            assert_eq!(pa, pb);
            let (mut sa, mut sb) = (l.clone(), l.clone());
            scale_in_place_at(Isa::Portable, &mut sa, 1.0 / 0.7);
            scale_in_place_at(isa, &mut sb, 1.0 / 0.7);
            assert!(sa.iter().zip(&sb).all(|(x, y)| x.to_bits() == y.to_bits()));
            let mut sc = vec![std::mem::MaybeUninit::new(0f32); l.len()];
            scale_into_at(isa, &l, &mut sc, 1.0 / 0.7);
            // SAFETY: every element was written
            assert!(sc
                .iter()
                .zip(&sa)
                .all(|(x, y)| unsafe { x.assume_init() }.to_bits() == y.to_bits()));
            assert_eq!(
                first_position_of_at(isa, &l, m),
                l.iter().position(|&x| x == m)
            );
        }
    }

    /// The values above a cut on a long row, read as two halves, with and without the blocks'
    /// maxima.
    #[test]
    fn value_scans_on_long_rows() {
        let l = big_row(70_001);
        let mut sorted = l.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mut c = Candidates::default();
        c.check_and_fill(&l).unwrap();
        let mut vals = Vec::new();
        for cut in [
            sorted[0],
            sorted[17],
            sorted[4_000],
            sorted[69_000],
            f32::NEG_INFINITY,
        ] {
            let plain: Vec<f32> = l.iter().copied().filter(|&x| x >= cut).collect();
            c.values_at_least(cut as f64, &mut vals);
            assert_eq!(vals, plain, "cut {cut}, blocks");
            values_f32(&l, cut, &mut vals, &[]);
            assert_eq!(vals, plain, "cut {cut}");
        }
    }
}
