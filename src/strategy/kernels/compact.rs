//! Shrinking the candidate set in place: the kept candidates (logit at or above a lower bound,
//! and a predicate) are moved to the front in order, with whole blocks skipped by their maxima and
//! 64-logit chunks by one vectorised compare; where the CPU has AVX-512, the pure threshold filter
//! packs 16 candidates at a time by compress. Ids are either implicit (the full vocabulary:
//! position = id) or compacted alongside the logits. Only [`Candidates`](super::Candidates) calls
//! these.

use super::isa::Isa;
use super::scan::SKIP;
use super::{balanced_split, BLOCK};

/// Before compacting `n` candidates: with `identity` (implicit ids), `ids` emptied with room for
/// the kept ids plus `slack` (a full register written at the last kept position); otherwise it
/// must hold the n ids being compacted in place.
#[inline(always)]
fn ids_for_compaction(ids: &mut Vec<u32>, identity: bool, n: usize, slack: usize) {
    if identity {
        ids.clear();
        ids.reserve(n + slack);
    } else {
        assert_eq!(ids.len(), n);
    }
}

/// One part of a compaction, compacted on its own (the two parts of a long row on two
/// threads): its source, its destination (the source itself in place), its ids (compacted in
/// place, or written fresh when they are implicit), its length and the id of its first
/// position (implicit ids: position + `first`).
#[derive(Clone, Copy)]
struct Part {
    src: *const f32,
    dst: *mut f32,
    ids: *mut u32,
    n: usize,
    first: usize,
}

// SAFETY: the two parts of a row cover disjoint ranges of its buffers, each handed to one thread
unsafe impl Send for Part {}

impl Part {
    /// The part's positions from `at` on (a block boundary).
    fn from(self, at: usize) -> Part {
        assert!(at <= self.n, "a part cut past its end");
        // SAFETY (of the offsets): at <= n (asserted), within each buffer's n positions
        unsafe {
            Part {
                src: self.src.add(at),
                dst: self.dst.add(at),
                ids: self.ids.add(at),
                n: self.n - at,
                first: self.first + at,
            }
        }
    }
}

/// # Safety
/// `src` is readable and `dst` writable for `n` values; they are the same buffer (in place) or
/// do not overlap. `ids` is writable for `n` ids, and readable (the ids being compacted) unless
/// `identity`.
#[inline(always)]
unsafe fn retain_where_impl<F: Fn(f32) -> bool>(
    identity: bool,
    Part {
        src,
        dst,
        ids: id_out,
        n,
        first,
    }: Part,
    lower: f32,
    keep: &F,
    block_max: &[f32],
) -> usize {
    let mut w = 0;
    let mut r = 0;
    while r < n {
        // a whole block below `lower` (known without reading it) is skipped
        if r % BLOCK == 0 && block_max.get(r / BLOCK).is_some_and(|&m| m < lower) {
            r = (r + BLOCK).min(n);
            continue;
        }
        let end = (r + SKIP).min(n);
        let mut hit = 0u32;
        for i in r..end {
            hit |= (unsafe { *src.add(i) } >= lower) as u32;
        }
        if hit != 0 {
            // branch-free: write every candidate, advance past the kept ones (w <= i, so the
            // writes land on positions already read): faster than a kept/dropped branch
            // (figures in bench/perf-notes.md). The path of CPUs without AVX-512 compress
            for i in r..end {
                let l = unsafe { *src.add(i) };
                let take = l >= lower && keep(l);
                // SAFETY: w <= i < n, within the part's ids; ids are read and written only
                // through this pointer in the loop
                let id = if identity {
                    (first + i) as u32
                } else {
                    unsafe { id_out.add(i).read() }
                };
                unsafe { id_out.add(w).write(id) };
                // SAFETY: w <= i < n (in place: a position already read)
                unsafe { dst.add(w).write(l) };
                w += take as usize;
            }
        }
        r = end;
    }
    w
}

/// The pure-threshold filter (`l >= c`) with AVX-512's compress: 16 logits compared, the kept
/// ones and their ids packed into place by two instructions and two full-register stores (at
/// w <= i, so they only overwrite logits already loaded). Returns the new length.
/// # Safety
/// As [`retain_where_impl`], and `dst` has room for `n + 16` values (a full register is stored
/// at the last kept position) unless it is `src` (in place: stores land below `r + 16 <= n`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn retain_ge_avx512(
    ids: &mut Vec<u32>,
    identity: bool,
    (src, dst, n): Rows,
    c: f32,
    block_max: &[f32],
) -> usize {
    use std::arch::x86_64::*;
    ids_for_compaction(ids, identity, n, 16);
    let ip = ids.as_mut_ptr();
    let vc = _mm512_set1_ps(c);
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut w = 0;
    let mut r = 0;
    while r < n {
        if r % BLOCK == 0 && block_max.get(r / BLOCK).is_some_and(|&m| m < c) {
            r = (r + BLOCK).min(n);
            continue;
        }
        let end = (r + BLOCK - r % BLOCK).min(n);
        while r + 16 <= end {
            // SAFETY: r + 16 <= n; the stores write 16 lanes at w <= r, i.e. below r + 16
            // (logits and, when compacting, ids: positions already loaded) or into the
            // reserved n + 16 (fresh ids)
            unsafe {
                let x = _mm512_loadu_ps(src.add(r));
                let k = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, vc);
                if k != 0 {
                    let id = if identity {
                        _mm512_add_epi32(iota, _mm512_set1_epi32(r as i32))
                    } else {
                        _mm512_loadu_si512(ip.add(r).cast())
                    };
                    _mm512_storeu_ps(dst.add(w), _mm512_maskz_compress_ps(k, x));
                    _mm512_storeu_si512(ip.add(w).cast(), _mm512_maskz_compress_epi32(k, id));
                    w += k.count_ones() as usize;
                }
            }
            r += 16;
        }
        while r < end {
            // SAFETY: w <= r < n
            unsafe {
                let l = *src.add(r);
                if l >= c {
                    let id = if identity { r as u32 } else { *ip.add(r) };
                    *dst.add(w) = l;
                    *ip.add(w) = id;
                    w += 1;
                }
            }
            r += 1;
        }
    }
    if identity {
        // SAFETY: the first w ids were written above
        unsafe { ids.set_len(w) };
    }
    w
}

/// The rows a compaction reads and writes: source, destination (the source itself to compact in
/// place) and length.
type Rows = (*const f32, *mut f32, usize);

/// [`retain_where_impl`] on one part at the detected ISA (generic, so dispatched by hand).
///
/// # Safety
/// As [`retain_where_impl`].
unsafe fn retain_where_part<F: Fn(f32) -> bool>(
    identity: bool,
    part: Part,
    lower: f32,
    keep: &F,
    bm: &[f32],
) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        unsafe fn v4<F: Fn(f32) -> bool>(id: bool, p: Part, lo: f32, k: &F, bm: &[f32]) -> usize {
            retain_where_impl(id, p, lo, k, bm)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn v3<F: Fn(f32) -> bool>(id: bool, p: Part, lo: f32, k: &F, bm: &[f32]) -> usize {
            retain_where_impl(id, p, lo, k, bm)
        }
        match Isa::detected() {
            // SAFETY: `Isa::detected` never exceeds what the CPU supports
            Isa::Avx512 => return unsafe { v4(identity, part, lower, keep, bm) },
            Isa::Avx2 => return unsafe { v3(identity, part, lower, keep, bm) },
            Isa::Portable => {}
        }
    }
    retain_where_impl(identity, part, lower, keep, bm)
}

/// [`retain_where_part`] over a whole row, returning the new length. With `identity`, the ids
/// are implicit (position = id) and the kept ones are pushed onto the empty `ids`; otherwise
/// `ids` is compacted in place. A long row with many blocks to read is compacted as two parts
/// on the pool's two threads (`keep` runs on both, in either order), cut where each holds half
/// of those blocks ([`balanced_split`]); the second part's kept candidates are then moved down
/// behind the first's: the same result. (The blocks' maxima are known only for the full
/// vocabulary, so the two parts always have implicit ids; the in-place ids are handled alike.)
///
/// # Safety
/// As [`retain_where_impl`].
unsafe fn retain_where_rows<F: Fn(f32) -> bool + Sync>(
    ids: &mut Vec<u32>,
    identity: bool,
    (src, dst, n): Rows,
    lower: f32,
    keep: &F,
    bm: &[f32],
) -> usize {
    ids_for_compaction(ids, identity, n, 0);
    let whole = Part {
        src,
        dst,
        ids: ids.as_mut_ptr(),
        n,
        first: 0,
    };
    let w = match balanced_split(n, bm, lower) {
        None => unsafe { retain_where_part(identity, whole, lower, keep, bm) },
        Some(split) => {
            let (ba, bb) = bm.split_at(split / BLOCK);
            let first = Part { n: split, ..whole };
            let second = whole.from(split);
            // SAFETY: the parts cover the disjoint ranges 0..split and split..n of each buffer
            let (w1, w2) = crate::pool::join(
                move || unsafe { retain_where_part(identity, first, lower, keep, ba) },
                move || unsafe { retain_where_part(identity, second, lower, keep, bb) },
            );
            // SAFETY: the second part's w2 kept values and ids lie at split.., within the
            // buffers; w1 <= split, so they move down (`copy` allows the overlap)
            unsafe {
                std::ptr::copy(dst.add(split), dst.add(w1), w2);
                std::ptr::copy(whole.ids.add(split), whole.ids.add(w1), w2);
            }
            w1 + w2
        }
    };
    if identity {
        // SAFETY: the first w ids were written above
        unsafe { ids.set_len(w) };
    }
    w
}

/// The pure-threshold filter (`l >= c`) at the detected ISA: AVX-512's compress where the CPU
/// has it, else [`retain_where_rows`] with no further predicate; returns the new length.
///
/// # Safety
/// As [`retain_ge_avx512`].
unsafe fn retain_ge_rows(
    ids: &mut Vec<u32>,
    identity: bool,
    rows: Rows,
    c: f32,
    bm: &[f32],
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if Isa::detected() == Isa::Avx512 {
        // SAFETY: the CPU has AVX-512 (`Isa::detected`)
        return unsafe { retain_ge_avx512(ids, identity, rows, c, bm) };
    }
    retain_where_rows(ids, identity, rows, c, &|_| true, bm)
}

/// Where a compaction reads and writes: `logits` in place, or a row read in place (`src`, which
/// is left as it is) into `dst`.
pub(super) enum Target<'a> {
    InPlace(&'a mut Vec<f32>),
    Into {
        src: &'a [f32],
        dst: &'a mut Vec<f32>,
    },
}

impl Target<'_> {
    /// Run `f` on the target's rows and leave the destination holding the `w` kept values.
    fn run(self, f: impl FnOnce(Rows) -> usize) -> usize {
        match self {
            Target::InPlace(l) => {
                let n = l.len();
                let p = l.as_mut_ptr();
                let w = f((p, p, n));
                l.truncate(w);
                w
            }
            Target::Into { src, dst } => {
                let n = src.len();
                dst.clear();
                dst.reserve(n + 16);
                let w = f((src.as_ptr(), dst.as_mut_ptr(), n));
                // SAFETY: the compaction wrote the first w values of `dst`
                unsafe { dst.set_len(w) };
                w
            }
        }
    }
}

/// Keep the values `l >= lower && keep(l)` (and their ids), in order; returns how many. A long
/// row may be compacted as two parts on two threads: `keep` runs on both, in either order, so it
/// must not depend on the candidates it saw before.
pub(super) fn retain_where_dispatch<F: Fn(f32) -> bool + Sync>(
    ids: &mut Vec<u32>,
    identity: bool,
    target: Target<'_>,
    lower: f32,
    keep: F,
    bm: &[f32],
) -> usize {
    // SAFETY: `Target::run` hands over one valid buffer (in place), or a source and a distinct
    // destination with room for n + 16 values
    target.run(|rows| unsafe { retain_where_rows(ids, identity, rows, lower, &keep, bm) })
}

/// Keep the values `l >= c` (and their ids), in order; returns how many.
pub(super) fn retain_ge_dispatch(
    ids: &mut Vec<u32>,
    identity: bool,
    target: Target<'_>,
    c: f32,
    bm: &[f32],
) -> usize {
    // SAFETY: as in `retain_where_dispatch`
    target.run(|rows| unsafe { retain_ge_rows(ids, identity, rows, c, bm) })
}

#[cfg(test)]
mod tests {
    use crate::strategy::kernels::test_rows::big_row;
    use crate::strategy::kernels::Candidates;

    #[test]
    fn selective_filters_match_a_plain_scan() {
        let l = big_row(10_000);
        for cut in [f64::NEG_INFINITY, -11.5, 0.1, 17.999_999_9, 19.0, 30.0] {
            let mut pos = Vec::new();
            let mut plain = Candidates::default();
            plain.fill(&l);
            plain.positions_at_least(cut, &mut pos);
            let want: Vec<usize> = (0..l.len()).filter(|&i| l[i] as f64 >= cut).collect();
            assert_eq!(pos, want, "cut {cut}");
            let mut c = Candidates::default();
            c.fill(&l);
            c.retain_at_least(cut);
            assert_eq!(c.ids, want.iter().map(|&i| i as u32).collect::<Vec<_>>());
        }
        let mut c = Candidates::default();
        c.fill(&l);
        c.retain_where(0.0, |x| x < 10.0);
        let want: Vec<u32> = (0..l.len() as u32)
            .filter(|&i| (0.0..10.0).contains(&l[i as usize]))
            .collect();
        assert_eq!(c.ids, want);
    }

    /// A long row whose blocks to read lie off-centre is compacted as two unequal parts on two
    /// threads: the same ids and values as the plain filter, for a row copied into the set and
    /// one read in place, for the threshold and a predicate, for cuts reading many blocks (two
    /// parts) and few (one).
    #[test]
    fn compaction_in_two_parts_is_the_plain_filter() {
        use crate::strategy::kernels::{balanced_split, SPLIT_MIN};
        let n = SPLIT_MIN * 2 + 4_321;
        // the high logits only in the last fifth of the row (the cut lands far past the middle)
        let l: Vec<f32> = big_row(n)
            .into_iter()
            .enumerate()
            .map(|(i, x)| if i < n * 4 / 5 { x.min(-2.0) } else { x })
            .collect();
        let pred = |x: f32| !(3.0..6.0).contains(&x);
        for cut in [0.0f32, 19.0, f32::NEG_INFINITY] {
            for view in [false, true] {
                for with_pred in [false, true] {
                    let mut c = Candidates::default();
                    if view {
                        // SAFETY: `l` outlives `c`'s reads below
                        unsafe { c.check_and_view(&l) }.unwrap();
                    } else {
                        c.check_and_fill(&l).unwrap();
                    }
                    let bm = c.known_block_max();
                    let reads = bm.iter().filter(|&&m| m >= cut).count();
                    let split = balanced_split(n, bm, cut);
                    if cut == 0.0 {
                        // two parts, the first holding most of the row
                        assert!(split.is_some_and(|s| s > n * 4 / 5), "{split:?}");
                    } else if cut == 19.0 {
                        assert_eq!(split, None, "few blocks to read: one part");
                    }
                    if with_pred {
                        c.retain_where(cut, pred);
                    } else {
                        c.retain_ge(cut);
                    }
                    let want: Vec<u32> = (0..n as u32)
                        .filter(|&i| {
                            let x = l[i as usize];
                            x >= cut && (!with_pred || pred(x))
                        })
                        .collect();
                    let vals: Vec<f32> = want.iter().map(|&i| l[i as usize]).collect();
                    let what = format!("cut {cut}, view {view}, predicate {with_pred}");
                    assert_eq!(c.ids, want, "{what}, {reads} blocks read");
                    assert_eq!(c.logits(), vals, "{what}");
                    c.end_view();
                }
            }
        }
    }

    /// The vectorised threshold filter against the generic one on a long row, on the full set
    /// (implicit ids, blocks' maxima known) and again on a compacted one.
    #[test]
    fn threshold_compaction_matches_the_generic_filter_on_long_rows() {
        let l = big_row(70_001);
        let mut sorted = l.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mut c = Candidates::default();
        c.check_and_fill(&l).unwrap();
        for cut in [
            sorted[0],
            sorted[17],
            sorted[4_000],
            sorted[69_000],
            f32::NEG_INFINITY,
        ] {
            let (mut a, mut b) = (c.clone(), c.clone());
            a.retain_ge(cut);
            b.retain_where(cut, |_| true);
            assert_eq!((&a.ids, a.logits()), (&b.ids, b.logits()), "cut {cut}");
            // and again on the compacted set (ids no longer the identity)
            let lower = sorted[100];
            let (mut a2, mut b2) = (a.clone(), b.clone());
            a2.retain_ge(lower);
            b2.retain_where(lower, |_| true);
            assert_eq!(
                (&a2.ids, a2.logits()),
                (&b2.ids, b2.logits()),
                "cut {cut}, then {lower}"
            );
        }
    }
}
