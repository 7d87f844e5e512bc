//! The one read of a row at the boundary, behind
//! [`Candidates::check_and_fill`](super::Candidates::check_and_fill): block by block,
//! its maximum and the NaN/+inf check, the copy into the candidate set (none when the set reads
//! the row in place, [`Candidates::check_and_view`](super::Candidates::check_and_view)), and the exp moments
//! relative to the running maximum (rescaled when a later block raises it); long rows as two
//! fixed halves, merged. Naming the bad logit is left to the plain scan (`scan`).

use std::mem::MaybeUninit;

use super::exp::exp2_nonpos;
use super::isa::{multiversion, Isa};
#[cfg(target_arch = "x86_64")]
use super::moments::{block_sums_avx2, block_sums_avx512};
use super::moments::{block_sums_portable, lanes_add, lanes_total, BlockSums, LANES};
use super::scan::scan_impl;
use super::{split_point, BLOCK};

/// Moments of a part of a row in log2 units relative to its largest logit `m` so far, for the
/// one-pass check-and-statistics of
/// [`Candidates::check_and_fill`](super::Candidates::check_and_fill): Σe block by block (as
/// `moments::moments_outer` sums it), Σe·y and Σe·y² in f64 lanes plus a scalar part (the last, short
/// block and the shifts' cross terms).
#[derive(Debug, Clone, Copy)]
pub(super) struct Online {
    pub(super) m: f32,
    s: f64,
    s1: [f64; LANES],
    s2: [f64; LANES],
    r1: f64,
    r2: f64,
    /// Σ and count of the finite logits: the row's mean logit, behind the mean of ln p
    /// (self-certainty).
    pub(super) fsum: FiniteSum,
    /// A NaN or +inf logit was seen.
    pub(super) bad: bool,
}

impl Online {
    const EMPTY: Online = Online {
        m: f32::NEG_INFINITY,
        s: 0.0,
        s1: [0.0; LANES],
        s2: [0.0; LANES],
        r1: 0.0,
        r2: 0.0,
        fsum: FiniteSum::EMPTY,
        bad: false,
    };

    /// Re-express the sums relative to a larger maximum: y -> y - δ with δ = (m' - m)·k, so
    /// Σe -> 2^-δ Σe, Σe·y -> 2^-δ (Σe·y - δ Σe), Σe·y² -> 2^-δ (Σe·y² - 2δ Σe·y + δ² Σe).
    /// Linear in the parts: each lane scales with its own Σe·y term; the δ·Σe terms (Σe is a
    /// scalar) go to the scalar part.
    fn shift_to(&mut self, m: f32, k: f32) {
        if m > self.m {
            if self.s > 0.0 {
                let d = (m as f64 - self.m as f64) * k as f64;
                let f = (-d).exp2();
                for j in 0..LANES {
                    let (a1, a2) = (self.s1[j], self.s2[j]);
                    self.s1[j] = f * a1;
                    self.s2[j] = f * (a2 - 2.0 * d * a1);
                }
                let (s, r1, r2) = (self.s, self.r1, self.r2);
                self.s = f * s;
                self.r1 = f * (r1 - d * s);
                self.r2 = f * (r2 - 2.0 * d * r1 + d * d * s);
            }
            self.m = m;
        }
    }

    fn merge(mut self, mut other: Online, k: f32) -> Online {
        let m = if other.m > self.m { other.m } else { self.m };
        self.shift_to(m, k);
        other.shift_to(m, k);
        for j in 0..LANES {
            self.s1[j] += other.s1[j];
            self.s2[j] += other.s2[j];
        }
        Online {
            m,
            s: self.s + other.s,
            r1: self.r1 + other.r1,
            r2: self.r2 + other.r2,
            fsum: self.fsum.merge(&other.fsum),
            bad: self.bad | other.bad,
            ..self
        }
    }

    /// Σe, Σe·y, Σe·y².
    pub(super) fn totals(&self) -> (f64, f64, f64) {
        (
            self.s,
            lanes_total(&self.s1) + self.r1,
            lanes_total(&self.s2) + self.r2,
        )
    }
}

/// One read of a row: per [`BLOCK`], its maximum and NaN/+inf check (the block is then in L1),
/// the running maximum raised and the sums shifted when the block holds a new maximum, the
/// block's exp moments relative to it, and the copy.
#[inline(always)]
fn fused_outer<const COPY: bool>(
    logits: &[f32],
    k: f32,
    block_max: &mut [f32],
    copy: &mut [MaybeUninit<f32>],
    block_sums: impl Fn(&[f32], f32) -> BlockSums,
) -> Online {
    let mut o = Online::EMPTY;
    for (i, block) in logits.chunks(BLOCK).enumerate() {
        let (bm, bad) = scan_impl(block);
        block_max[i] = bm;
        if COPY {
            for (d, &x) in copy[i * BLOCK..].iter_mut().zip(block) {
                d.write(x);
            }
        }
        if bad || o.bad {
            o.bad = true;
            continue; // an error follows; the copy is still completed
        }
        o.shift_to(bm, k);
        if o.m == f32::NEG_INFINITY {
            continue; // nothing live yet
        }
        o.fsum.add_block(block);
        if block.len() == BLOCK {
            let b = block_sums(block, o.m);
            o.s += b.total;
            lanes_add(&mut o.s1, &b.s1);
            lanes_add(&mut o.s2, &b.s2);
        } else {
            for &l in block {
                let y = (l - o.m) * k;
                if y >= -125.0 {
                    let e = exp2_nonpos(y) as f64;
                    o.s += e;
                    o.r1 += e * y as f64;
                    o.r2 += e * y as f64 * y as f64;
                }
            }
        }
    }
    o
}

const SUM_LANES: usize = 16;

/// Σ and count of the finite logits, block by block: a full block without a masked (-inf) logit
/// is summed in 4 × 16 f32 lanes (four independent chains, not one latency-bound one), the four
/// combined and added lane-wise into 16 f64 lanes; a short block or one holding a masked logit
/// goes to a scalar f64 part, leaving the masked ones out. The lanes are folded once, at the
/// end. A fixed order throughout, so every ISA gives the same bits.
#[derive(Debug, Clone, Copy)]
pub(super) struct FiniteSum {
    lanes: [f64; SUM_LANES],
    scalar: f64,
    n: usize,
}

impl FiniteSum {
    const EMPTY: FiniteSum = FiniteSum {
        lanes: [0.0; SUM_LANES],
        scalar: 0.0,
        n: 0,
    };

    #[inline(always)]
    fn add_block(&mut self, block: &[f32]) {
        const W: usize = 4 * SUM_LANES;
        if block.len() == BLOCK {
            let mut acc = [[0f32; SUM_LANES]; 4];
            for c in block.chunks_exact(W) {
                for (q, a) in acc.iter_mut().enumerate() {
                    for j in 0..SUM_LANES {
                        a[j] += c[q * SUM_LANES + j];
                    }
                }
            }
            let mut part = [0f32; SUM_LANES];
            for j in 0..SUM_LANES {
                part[j] = (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]);
            }
            // a masked logit makes its lane -inf (+inf and NaN rows are errors anyway)
            if part.iter().all(|x| x.is_finite()) {
                for (l, &p) in self.lanes.iter_mut().zip(&part) {
                    *l += p as f64;
                }
                self.n += BLOCK;
                return;
            }
        }
        for &l in block {
            if l > f32::NEG_INFINITY {
                self.scalar += l as f64;
                self.n += 1;
            }
        }
    }

    fn merge(&self, other: &FiniteSum) -> FiniteSum {
        let mut out = *self;
        for j in 0..SUM_LANES {
            out.lanes[j] += other.lanes[j];
        }
        out.scalar += other.scalar;
        out.n += other.n;
        out
    }

    /// Σ and count.
    pub(super) fn total(&self) -> (f64, usize) {
        (self.lanes.iter().sum::<f64>() + self.scalar, self.n)
    }
}

#[inline(always)]
fn finite_sum_blocks(logits: &[f32]) -> (f64, usize) {
    let mut f = FiniteSum::EMPTY;
    for block in logits.chunks(BLOCK) {
        f.add_block(block);
    }
    f.total()
}

multiversion! {
    /// The finite logits' Σ and count as the one-read pass forms them, block by block, as a
    /// pass of its own at the detected ISA: `declab bench` times it on a row just read, as an
    /// upper bound of what the sum adds to the one read (there the block is already in L1).
    pub fn finite_sum_pass / finite_sum_pass_at(logits: &[f32]) -> (f64, usize) = finite_sum_blocks
}

/// [`fused_outer`] at `isa` (lowered to what the CPU has).
fn fused_part(
    isa: Isa,
    logits: &[f32],
    k: f32,
    block_max: &mut [f32],
    copy: Option<&mut [MaybeUninit<f32>]>,
) -> Online {
    match copy {
        Some(c) => fused_part_at::<true>(isa, logits, k, block_max, c),
        None => fused_part_at::<false>(isa, logits, k, block_max, &mut []),
    }
}

fn fused_part_at<const COPY: bool>(
    isa: Isa,
    logits: &[f32],
    k: f32,
    block_max: &mut [f32],
    copy: &mut [MaybeUninit<f32>],
) -> Online {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        fn v4<const C: bool>(
            l: &[f32],
            k: f32,
            b: &mut [f32],
            c: &mut [MaybeUninit<f32>],
        ) -> Online {
            fused_outer::<C>(l, k, b, c, |x, m| block_sums_avx512::<false>(x, 1.0, m, k))
        }
        #[target_feature(enable = "avx2,fma")]
        fn v3<const C: bool>(
            l: &[f32],
            k: f32,
            b: &mut [f32],
            c: &mut [MaybeUninit<f32>],
        ) -> Online {
            fused_outer::<C>(l, k, b, c, |x, m| {
                block_sums_avx2::<false, true>(x, 1.0, m, k)
            })
        }
        match isa.min(Isa::cpu()) {
            // SAFETY: the CPU supports the level (clamped to `Isa::cpu()` above)
            Isa::Avx512 => return unsafe { v4::<COPY>(logits, k, block_max, copy) },
            Isa::Avx2 => return unsafe { v3::<COPY>(logits, k, block_max, copy) },
            Isa::Portable => {}
        }
    }
    fused_outer::<COPY>(logits, k, block_max, copy, |x, m| {
        block_sums_portable::<false>(x, 1.0, m, k)
    })
}

/// [`fused_stats_at`] at the detected ISA.
pub(super) fn fused_stats(
    logits: &[f32],
    block_max: &mut Vec<f32>,
    copy: Option<&mut Vec<f32>>,
) -> Online {
    fused_stats_at(Isa::detected(), logits, block_max, copy)
}

/// The check, the block maxima, the copy into `copy` and the exp moments of a row in one read,
/// as two fixed halves (on two threads when off the pool) for long rows, like
/// [`exp_moments_at`](super::moments::exp_moments_at).
fn fused_stats_at(
    isa: Isa,
    logits: &[f32],
    block_max: &mut Vec<f32>,
    mut copy: Option<&mut Vec<f32>>,
) -> Online {
    let k = std::f32::consts::LOG2_E;
    let n = logits.len();
    // each half writes its own piece of the presized block maxima (not two Vecs whose headers
    // share a cache line)
    block_max.clear();
    block_max.resize(n.div_ceil(BLOCK), f32::NEG_INFINITY);
    let dst = copy.as_mut().map(|c| {
        c.clear();
        c.reserve(n);
        &mut c.spare_capacity_mut()[..n]
    });
    let split = split_point(n);
    let out = if split == 0 {
        fused_part(isa, logits, k, block_max, dst)
    } else {
        let (la, lb) = logits.split_at(split);
        let (da, db) = match dst {
            Some(d) => {
                let (a, b) = d.split_at_mut(split);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let (ra, rb) = block_max.split_at_mut(split / BLOCK);
        let (a, b) = crate::pool::join(
            move || fused_part(isa, la, k, ra, da),
            move || fused_part(isa, lb, k, rb, db),
        );
        a.merge(b, k)
    };
    if let Some(c) = copy {
        // SAFETY: every element of the first n was written by the pass above
        unsafe { c.set_len(n) };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::kernels::test_rows::big_row;
    use crate::strategy::kernels::{Candidates, SPLIT_MIN};

    #[test]
    fn one_read_statistics_match_an_f64_reference_and_catch_bad_logits() {
        use crate::strategy::SampleError;
        let reference = |l: &[f32]| {
            let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = l.iter().map(|&x| (x as f64 - m).exp()).sum();
            let p: Vec<f64> = l.iter().map(|&x| (x as f64 - m).exp() / z).collect();
            let h: f64 = -p
                .iter()
                .filter(|&&x| x > 0.0)
                .map(|x| x * x.ln())
                .sum::<f64>();
            let v: f64 = p
                .iter()
                .filter(|&&x| x > 0.0)
                .map(|x| x * (-x.ln() - h).powi(2))
                .sum();
            (m + z.ln(), h, v)
        };
        // the maximum rises late (early blocks are rescaled), masked blocks come first, and
        // long rows are summed in halves
        let mut rising: Vec<f32> = (0..5_000).map(|i| i as f32 * 0.004 - 15.0).collect();
        rising[..700].fill(f32::NEG_INFINITY);
        for l in [big_row(9_999), rising, big_row(SPLIT_MIN + 4_321)] {
            let mut c = Candidates::default();
            let st = c.check_and_fill(&l).unwrap();
            let (log_z, h, v) = reference(&l);
            assert!((st.log_z - log_z).abs() < 1e-5, "{} vs {log_z}", st.log_z);
            assert!(
                (st.entropy_nats - h).abs() < 1e-5,
                "{} vs {h}",
                st.entropy_nats
            );
            assert!(
                (st.varentropy_nats2 - v).abs() < 1e-4,
                "{} vs {v}",
                st.varentropy_nats2
            );
            assert_eq!(c.logits(), l);
            // the finite logits' mean (masked ones left out) within f32 summation error
            let fin: Vec<f64> = l
                .iter()
                .filter(|x| x.is_finite())
                .map(|&x| x as f64)
                .collect();
            let (mean, n) = c.row_mean_logit();
            assert_eq!(n, fin.len());
            assert!(
                (mean - fin.iter().sum::<f64>() / n as f64).abs() < 1e-5,
                "{mean}"
            );
            assert_eq!(c.known_block_max().len(), l.len().div_ceil(BLOCK));
            // every ISA gives the same bits
            for isa in Isa::available() {
                let (mut b1, mut b2, mut c1, mut c2) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let a = fused_stats_at(Isa::Portable, &l, &mut b1, Some(&mut c1));
                let b = fused_stats_at(isa, &l, &mut b2, Some(&mut c2));
                // without the copy: the same statistics
                let mut b3 = Vec::new();
                let v = fused_stats_at(isa, &l, &mut b3, None);
                assert_eq!(b3, b2);
                assert_eq!(
                    (
                        v.totals().0.to_bits(),
                        v.totals().2.to_bits(),
                        v.m.to_bits()
                    ),
                    (
                        b.totals().0.to_bits(),
                        b.totals().2.to_bits(),
                        b.m.to_bits()
                    )
                );
                let (ta, tb) = (a.totals(), b.totals());
                assert_eq!(
                    (ta.0.to_bits(), ta.1.to_bits(), ta.2.to_bits()),
                    (tb.0.to_bits(), tb.1.to_bits(), tb.2.to_bits()),
                    "{isa:?}"
                );
                assert_eq!(b1, b2);
                let (sa, na) = a.fsum.total();
                let (sb, nb) = b.fsum.total();
                assert_eq!((sa.to_bits(), na), (sb.to_bits(), nb));
                assert_eq!(
                    finite_sum_pass_at(isa, &l),
                    finite_sum_pass_at(Isa::Portable, &l)
                );
                assert!(c2.iter().zip(&l).all(|(x, y)| x.to_bits() == y.to_bits()));
            }
        }
        let mut c = Candidates::default();
        let mut l = big_row(3_000);
        l[2_345] = f32::NAN;
        assert_eq!(c.check_and_fill(&l), Err(SampleError::NanLogit(2_345)));
        l[2_345] = 0.0;
        l[17] = f32::INFINITY;
        assert_eq!(c.check_and_fill(&l), Err(SampleError::InfiniteLogit(17)));
        assert_eq!(
            c.check_and_fill(&[f32::NEG_INFINITY; 300]),
            Err(SampleError::NoCandidate)
        );
        assert_eq!(c.check_and_fill(&[]), Err(SampleError::Empty));
    }
}
