//! Float projections for weights held in f32 (Hugging Face checkpoints, `engine::hf`): `x W^T`
//! with a fixed reduction order, so a row's result never depends on how many rows share the
//! call, on the thread count, or on the CPU's vector width.
//!
//! Each output is one dot product over the row: sixteen running sums (lane `i` adds the
//! products of columns `i, i + 16, ...`, then the leftover columns in order), combined pairwise
//! at the end. Every operation is an IEEE multiply or add in that order, without fused
//! multiply-add, so the AVX2 and AVX-512 builds of the loop (compiled from the same source with
//! wider registers) give the same bits as the baseline one. The weights are read once per call
//! for all input rows: a batch of B decodes costs about one weight read, not B.

use std::ops::Range;

/// Lanes of the running sums.
const L: usize = 16;

/// One or more f32 weight matrices of the same width, stacked (q|k|v, gate|up), row-major.
#[derive(Debug, Clone)]
pub struct DenseRows {
    w: Vec<f32>,
    k: usize,
    parts: Vec<usize>,
}

impl DenseRows {
    /// `parts` matrices of `k` columns, stacked in `w` (`sum(parts) * k` values).
    pub fn new(w: Vec<f32>, k: usize, parts: Vec<usize>) -> DenseRows {
        assert_eq!(w.len(), parts.iter().sum::<usize>() * k, "weight size");
        DenseRows { w, k, parts }
    }

    /// Rows of the first part (the vocabulary, for an embedding matrix).
    pub fn rows(&self) -> usize {
        self.parts[0]
    }

    pub fn parts(&self) -> &[usize] {
        &self.parts
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    /// Row `r` of the first part.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.w[r * self.k..(r + 1) * self.k]
    }

    /// `x W^T` for each part (`x`: `m` rows of `k`, row-major): `m` rows by `parts[p]` each.
    pub fn matmul(&self, x: &[f32]) -> Vec<Vec<f32>> {
        assert_eq!(x.len() % self.k, 0, "input width");
        let m = x.len() / self.k;
        let n: usize = self.parts.iter().sum();
        let mut all = vec![0f32; m * n];
        let out = SendPtr(all.as_mut_ptr());
        let dot = dot_fn();
        let run = |rows: Range<usize>| {
            for r in rows {
                let wr = &self.w[r * self.k..(r + 1) * self.k];
                for (a, xr) in x.chunks_exact(self.k).enumerate() {
                    // SAFETY: output (a, r) is written by the one task that owns weight row r.
                    unsafe { *out.at(a * n + r) = dot(wr, xr) };
                }
            }
        };
        if n * m * self.k < 1 << 16 {
            run(0..n);
        } else {
            crate::pool::for_each_chunk(n, run);
        }
        // split the stacked columns into the parts
        let mut outs: Vec<Vec<f32>> = self
            .parts
            .iter()
            .map(|&p| Vec::with_capacity(m * p))
            .collect();
        for row in all.chunks_exact(n) {
            let mut start = 0;
            for (o, &p) in outs.iter_mut().zip(&self.parts) {
                o.extend_from_slice(&row[start..start + p]);
                start += p;
            }
        }
        outs
    }
}

struct SendPtr(*mut f32);

impl SendPtr {
    /// # Safety
    /// `i` must lie inside the buffer, and no other task may write it.
    unsafe fn at(&self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

// SAFETY: used only for disjoint writes (see `matmul`).
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// The dot product in declab's fixed order (see the module documentation).
#[inline(always)]
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for i in 0..L {
            acc[i] += xa[i] * xb[i];
        }
    }
    for i in 0..ra.len() {
        acc[i] += ra[i] * rb[i];
    }
    let mut w = L;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    acc[0]
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    dot_generic(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_generic(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    dot_generic(a, b)
}

/// The widest build of the dot product this CPU runs (all give the same bits).
fn dot_fn() -> fn(&[f32], &[f32]) -> f32 {
    use super::qrows::Level;
    #[cfg(target_arch = "x86_64")]
    {
        fn avx2(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: chosen only when the CPU has AVX2 (`Level`).
            unsafe { dot_avx2(a, b) }
        }
        fn avx512(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: chosen only when the CPU has AVX-512F (`Level`).
            unsafe { dot_avx512(a, b) }
        }
        match Level::detected() {
            Level::Avx512Vnni => return avx512,
            Level::Avx2 => return avx2,
            Level::Portable => {}
        }
    }
    dot_portable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 - 0.5) * 4.0
            })
            .collect()
    }

    /// Every build of the dot product gives the same bits, for widths with and without a tail.
    #[test]
    fn builds_agree_bit_for_bit() {
        for k in [1, 15, 16, 17, 576, 640, 1000] {
            let (a, b) = (data(k, 1), data(k, 2));
            let p = dot_portable(&a, &b);
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    assert_eq!(unsafe { dot_avx2(&a, &b) }.to_bits(), p.to_bits(), "{k}");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    assert_eq!(unsafe { dot_avx512(&a, &b) }.to_bits(), p.to_bits(), "{k}");
                }
            }
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((p as f64 - exact).abs() < 1e-4 * (1.0 + exact.abs()), "{k}");
        }
    }

    /// A row's outputs do not depend on the other rows of the call, and parts split the
    /// stacked outputs in order.
    #[test]
    fn rows_are_independent_of_the_batch() {
        let k = 96;
        let parts = vec![50, 30, 70];
        let m = DenseRows::new(data(150 * k, 3), k, parts.clone());
        let x = data(9 * k, 4);
        let all = m.matmul(&x);
        for a in 0..9 {
            let one = m.matmul(&x[a * k..(a + 1) * k]);
            for (p, &n) in parts.iter().enumerate() {
                assert_eq!(one[p], all[p][a * n..(a + 1) * n], "row {a} part {p}");
            }
        }
        // part 1, row 0 against a plain dot product
        let want: f32 = dot_portable(&m.w[50 * k..51 * k], &x[..k]);
        assert_eq!(all[1][0].to_bits(), want.to_bits());
    }
}
