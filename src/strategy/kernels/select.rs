//! Choosing candidates by rank without sorting the vocabulary: the k-th largest logit (a cut
//! that holds at least k of them, then a selection on integer keys), the "head" of the
//! candidates near the maximum, grown until it holds the answer ([`widen_head`],
//! [`top_k_positions`]), and a lazy walk in ascending order of any key, in growing windows
//! ([`visit_in_key_order`]). No SIMD here: the passes these read through live in `scan`.

use super::scan::{f32_at_least, max_finite, values_f32};
use super::Candidates;

/// The `i`-th largest of `vals` (0-based) in f32's total order (`total_cmp`), with the larger
/// ones before it, as `select_nth_unstable_by` with a descending comparator leaves them: the
/// selection runs on integer keys (bits mapped so that unsigned order is descending total
/// order), which is cheaper than comparing floats through `total_cmp`.
fn select_desc(vals: &mut [f32], i: usize) -> f32 {
    // descending total order as unsigned order, and back
    let key = |b: u32| !(if b >> 31 == 1 { !b } else { b | 0x8000_0000 });
    let unkey = |k: u32| {
        let m = !k;
        if m >> 31 == 1 {
            m & 0x7FFF_FFFF
        } else {
            !m
        }
    };
    // SAFETY: f32 and u32 have the same size and alignment, and every bit pattern is valid for
    // both; `vals` is not used while `keys` lives
    let keys: &mut [u32] =
        unsafe { std::slice::from_raw_parts_mut(vals.as_mut_ptr().cast(), vals.len()) };
    for x in keys.iter_mut() {
        *x = key(*x);
    }
    keys.select_nth_unstable(i);
    for x in keys.iter_mut() {
        *x = unkey(*x);
    }
    vals[i]
}

/// The k-th largest logit (1 <= k <= len); `vals` is scratch (see `kth_largest_blocks`).
pub fn kth_largest(logits: &[f32], k: usize, vals: &mut Vec<f32>) -> f32 {
    kth_largest_blocks(logits, k, vals, &[])
}

/// [`kth_largest`] with the blocks' maxima (`&[]` when unknown). One compress pass collects the
/// logits at or above a cut that holds at least k of them, usually a few more than k, and a
/// selection runs on those (the selection, not the pass, is what costs when the cut is loose).
/// The cut:
/// * k <= blocks / 2: the k-th largest block maximum. The k largest maxima are k logits in k
///   distinct blocks, so at least k logits are at or above it.
/// * otherwise, on long rows: a rank taken from a strided sample of 4096 logits, with a margin
///   of three standard deviations (and 8) above the expected rank; if it falls short, or
///   neither applies, the cut widens from the maximum: 4, 8, 16, ... nats.
///
/// Afterwards `vals[..k]` holds the k largest logits (in no order).
pub(super) fn kth_largest_blocks(logits: &[f32], k: usize, vals: &mut Vec<f32>, bm: &[f32]) -> f32 {
    assert!(k >= 1 && k <= logits.len(), "k = {k} of {}", logits.len());
    let n = logits.len();
    const SAMPLE: usize = 4096;
    let cut = if !bm.is_empty() && k <= bm.len() / 2 {
        vals.clear();
        vals.extend_from_slice(bm);
        Some(select_desc(vals, k - 1))
    } else if n >= 4 * SAMPLE && k <= n - n / 8 {
        let stride = n / SAMPLE;
        vals.clear();
        vals.extend((0..SAMPLE).map(|i| logits[i * stride + stride / 2]));
        let r = (k * SAMPLE) as f64 / n as f64;
        let q = ((r + 3.0 * r.sqrt() + 8.0).ceil() as usize).min(SAMPLE);
        Some(select_desc(vals, q - 1))
    } else {
        None
    };
    if let Some(c) = cut {
        values_f32(logits, c, vals, bm);
    }
    if vals.len() < k || cut.is_none() {
        let max = if bm.is_empty() {
            max_finite(logits)
        } else {
            max_finite(bm)
        } as f64;
        let mut width = 4.0;
        loop {
            values_f32(logits, f32_at_least(max - width), vals, bm);
            if vals.len() >= k || width > 1e4 {
                break;
            }
            width *= 2.0;
        }
        if vals.len() < k {
            vals.clear();
            vals.extend_from_slice(logits);
        }
    }
    select_desc(vals, k - 1)
}

/// Positions of a "head" of the candidates, those within 4, 8, 16, ... nats of the maximum (all
/// of them past 64 nats, where p < 1.6e-28 each), grown until `enough(head, cut)` says it holds
/// the answer. Returns the cut (`-inf` once every candidate is in).
pub fn widen_head(
    cands: &Candidates,
    head: &mut Vec<usize>,
    mut enough: impl FnMut(&[usize], f64) -> bool,
) -> f64 {
    let max = cands.max_logit() as f64;
    let mut width = 4.0;
    loop {
        let cut = if width > 64.0 {
            f64::NEG_INFINITY
        } else {
            max - width
        };
        cands.positions_at_least(cut, head);
        if cut == f64::NEG_INFINITY || enough(head, cut) {
            return cut;
        }
        width *= 2.0;
    }
}

/// Positions of the `k` largest logits (ties: lower id first), in no particular order. Selects
/// among the candidates within 4, 8, 16, ... nats of the maximum, widening only while fewer than
/// `k` qualify ([`widen_head`]), so the usual case touches a few hundred tokens, not the
/// vocabulary.
pub fn top_k_positions(cands: &Candidates, k: usize, out: &mut Vec<usize>) {
    let k = k.min(cands.len());
    widen_head(cands, out, |head, _| head.len() >= k);
    if out.len() < k {
        out.clear();
        out.extend(0..cands.len());
    }
    if k > 0 && k < out.len() {
        let (logits, ids) = (cands.logits(), &cands.ids);
        out.select_nth_unstable_by(k - 1, |&a, &b| {
            logits[b].total_cmp(&logits[a]).then(ids[a].cmp(&ids[b]))
        });
    }
    out.truncate(k);
}

/// `(key, id)` in ascending order as one unsigned integer: the key's bits mapped so that
/// unsigned order is `partial_cmp`'s order (both zeros to one value), then the id, then the
/// position, which makes every entry distinct and is read back from the low bits. Sorting these
/// compares integers held in the array, where comparing through `keys[a]` and `ids[a]` chases
/// two indices per comparison.
#[inline]
fn packed(key: f64, id: u32, pos: usize) -> u128 {
    debug_assert!(!key.is_nan() && pos <= u32::MAX as usize);
    let b = (key + 0.0).to_bits(); // -0.0 + 0.0 = +0.0
    let ord = if b >> 63 == 1 { !b } else { b | (1 << 63) };
    ((ord as u128) << 64) | ((id as u128) << 32) | pos as u128
}

std::thread_local! {
    /// [`visit_in_key_order`]'s packed entries, kept between steps (a head of tens of thousands
    /// of candidates would otherwise be allocated, and its pages faulted in, every step).
    static PACKED: std::cell::RefCell<Vec<u128>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Positions of the candidates in ascending `key` order (ties: lower id first), produced lazily
/// in growing windows: the caller's `visit` is called on each position in order until it returns
/// `false`. Costs O(V) per window instead of a full sort; the window grows 8x when exhausted.
/// Keys are never NaN; equal keys (0.0 and -0.0 too) go by id. Sorted as integers ([`packed`]).
pub fn visit_in_key_order(keys: &[f64], ids: &[u32], mut visit: impl FnMut(usize) -> bool) {
    PACKED.with_borrow_mut(|all| {
        let n = keys.len();
        all.clear();
        all.extend((0..n).map(|i| packed(keys[i], ids[i], i)));
        let mut window = 256.min(n);
        let mut done = 0usize; // how many of the sorted prefix have been visited
        loop {
            // the `window` smallest entries, sorted, at the front (the ones already visited are
            // among them: a selection keeps every smaller entry before its pivot)
            if window < n {
                all.select_nth_unstable(window - 1);
            }
            all[..window].sort_unstable();
            for &e in &all[done..window] {
                if !visit(e as u32 as usize) {
                    return;
                }
            }
            done = window;
            if window >= n {
                return;
            }
            window = (window * 8).min(n);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::kernels::test_rows::big_row;
    use std::cmp::Ordering;

    /// The order visited: keys ascending by `partial_cmp`, ties by lower id.
    fn cmp_key(a: (f64, u32), b: (f64, u32)) -> Ordering {
        a.0.partial_cmp(&b.0)
            .unwrap_or(Ordering::Equal)
            .then(a.1.cmp(&b.1))
    }

    /// Over several windows, with ties, negative keys (top-p's), both zeros and ids not in
    /// position order.
    #[test]
    fn visit_order_matches_full_sort_with_ties() {
        let keys: Vec<f64> = (0..2000)
            .map(|i| match i % 11 {
                0 => 0.0,
                1 => -0.0,
                2 => -(((i * 31) % 13) as f64) * 0.125,
                _ => ((i * 7919) % 97) as f64,
            })
            .collect();
        let ids: Vec<u32> = (0..2000u32).map(|i| (i * 7) % 2003).collect();
        let mut seen = Vec::new();
        visit_in_key_order(&keys, &ids, |p| {
            seen.push(p);
            true
        });
        let mut expect: Vec<usize> = (0..2000).collect();
        expect.sort_by(|&a, &b| cmp_key((keys[a], ids[a]), (keys[b], ids[b])));
        assert_eq!(seen, expect);
        // stopped past the first window: the visits so far are the sorted prefix
        let mut seen = Vec::new();
        visit_in_key_order(&keys, &ids, |p| {
            seen.push(p);
            seen.len() < 300
        });
        assert_eq!(seen, expect[..300]);
    }

    #[test]
    fn integer_key_selection_is_total_order_selection() {
        let mut v: Vec<f32> = big_row(5_000);
        v.extend([
            0.0,
            -0.0,
            f32::NEG_INFINITY,
            -1e-30,
            1e-30,
            f32::MAX,
            -f32::MAX,
        ]);
        let mut sorted = v.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        for i in [0, 1, 7, 100, 2_500, v.len() - 3, v.len() - 1] {
            let mut w = v.clone();
            let x = select_desc(&mut w, i);
            assert_eq!(x.to_bits(), sorted[i].to_bits(), "rank {i}");
            assert!(w[..i].iter().all(|a| a.total_cmp(&x).is_ge()), "rank {i}");
            // the values themselves survive the round trip through the keys
            w.sort_by(|a, b| b.total_cmp(a));
            assert!(w
                .iter()
                .zip(&sorted)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn kth_largest_matches_a_sort() {
        let l = big_row(9_000);
        let mut sorted = l.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mut vals = Vec::new();
        for k in [1, 2, 40, 500, 8_000, 9_000] {
            assert_eq!(kth_largest(&l, k, &mut vals), sorted[k - 1], "k = {k}");
        }
    }

    /// Every cut of the k-th largest (block maxima, strided sample, widening) on a long row,
    /// with and without the blocks' maxima.
    #[test]
    fn kth_largest_on_long_rows() {
        let l = big_row(70_001);
        let mut sorted = l.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mut c = Candidates::default();
        c.check_and_fill(&l).unwrap();
        assert!(!c.known_block_max().is_empty());
        let mut vals = Vec::new();
        for k in [1, 5, 300, 137, 600, 5_000, 40_000, 61_000, 69_999, 70_001] {
            assert_eq!(
                c.kth_largest(k, &mut vals),
                sorted[k - 1],
                "k = {k}, blocks"
            );
            assert_eq!(kth_largest(&l, k, &mut vals), sorted[k - 1], "k = {k}");
        }
        let mut top = Vec::new();
        c.largest_values(100, &mut top);
        assert_eq!(top, sorted[..100]);
    }
}
