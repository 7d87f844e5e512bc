//! The token embedding matrix of a GGUF model stored as Q8_0, held once and used twice: rows
//! are dequantised for the embedding lookup, and the (tied) output projection `x E^T` runs on
//! the same bytes with declab's own kernel.
//!
//! Why not candle's `QMatMul`: candle 0.11.1's fast x86 kernels quantise the input in 256-wide
//! blocks, so a 640-wide model (Gemma 3 270M) needed its 262,144 x 640 matrix zero-padded to 768
//! columns, and candle keeps a repacked copy of every weight beside the GGUF-layout one: three
//! copies of the largest tensor (about 600 MB), and 20 % more bytes to stream per token than the
//! unpadded matrix. This kernel reads the matrix once per step, in its own width.
//!
//! Layout: rows in groups of 16; for each group and 32-wide block, 8 chunks of 64 bytes, chunk
//! `j` holding bytes `4j..4j+4` of the block for each of the 16 rows (the operand layout of
//! AVX-512 VNNI's `vpdpbusd`), quants stored offset by 128 (as `u8`); the 16 f16 scales of the
//! (group, block) in a separate array. The input row is quantised to Q8_0 (per 32-block scale
//! `max|x| / 127`, round to nearest, as ggml's `quantize_row_q8_0`), and
//! `sum((w + 128) x) - 128 sum(x)` gives each block's exact integer dot product.
//!
//! Every output is computed the same way whatever the number of input rows, the thread count or
//! the instruction set: exact integer block sums, then `acc = fma(dot, d_w * d_x, acc)` over the
//! blocks in order. So batching never changes a row's logits, and the portable path is
//! bit-identical to the AVX-512 one (tested).

use half::f16;
use rayon::prelude::*;

/// Rows per group (one AVX-512 vector of outputs).
const G: usize = 16;
/// Input rows run together against one group's weights (one weight load serves them all).
const R: usize = 8;

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// A Q8_0 matrix of `n` rows by `k` columns in the layout above.
pub struct Q8Rows {
    n: usize,
    k: usize,
    /// `groups * blocks * 8` lines.
    quants: Vec<Line>,
    /// `groups * blocks * 16` scales (zero for the padding rows of the last group).
    scales: Vec<f16>,
}

/// One input row quantised to Q8_0, with the per-block correction for the +128 offset.
struct QuantRow {
    q: Vec<i8>,
    d: Vec<f32>,
    corr: Vec<i32>,
}

impl Q8Rows {
    /// Builds from GGUF Q8_0 bytes, row by row (`k / 32` blocks of 34 bytes per row), read by
    /// `fill(first_row, buf)` in runs of up to 16 rows so that the file is never held whole.
    pub fn from_q8_0_rows(
        n: usize,
        k: usize,
        mut fill: impl FnMut(usize, &mut [u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            k > 0 && k.is_multiple_of(32),
            "Q8_0 width {k} is not a multiple of 32"
        );
        let blocks = k / 32;
        let groups = n.div_ceil(G);
        let row_bytes = blocks * 34;
        let mut quants = vec![Line([0x80; 64]); groups * blocks * 8];
        let mut scales = vec![f16::ZERO; groups * blocks * G];
        let mut buf = vec![0u8; G * row_bytes];
        for g in 0..groups {
            let rows = G.min(n - g * G);
            let buf = &mut buf[..rows * row_bytes];
            fill(g * G, buf)?;
            for (r, row) in buf.chunks_exact(row_bytes).enumerate() {
                for (b, blk) in row.chunks_exact(34).enumerate() {
                    let t = g * blocks + b;
                    scales[t * G + r] = f16::from_le_bytes([blk[0], blk[1]]);
                    for (i, &q) in blk[2..].iter().enumerate() {
                        quants[t * 8 + i / 4].0[r * 4 + i % 4] = q ^ 0x80;
                    }
                }
            }
        }
        Ok(Self {
            n,
            k,
            quants,
            scales,
        })
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.quants.len() * 64 + self.scales.len() * 2
    }

    /// Row `r` dequantised (`d * q`, as ggml's `dequantize_row_q8_0`) into `out` (`k` long).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.n && out.len() == self.k);
        let blocks = self.k / 32;
        let (g, lane) = (r / G, r % G);
        for b in 0..blocks {
            let t = g * blocks + b;
            let d = self.scales[t * G + lane].to_f32();
            for i in 0..32 {
                let q = (self.quants[t * 8 + i / 4].0[lane * 4 + i % 4] ^ 0x80) as i8;
                out[b * 32 + i] = d * q as f32;
            }
        }
    }

    /// `x W^T` for `x` of `m` rows by `k`: `m` rows by `n`, row-major.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "input is not m x k");
        let xs: Vec<QuantRow> = x.chunks_exact(self.k).map(quantize_row).collect();
        let mut out = vec![0f32; m * self.n];
        let blocks = self.k / 32;
        let groups = self.n.div_ceil(G);
        let vnni = vnni();
        let out_ptr = SendPtr(out.as_mut_ptr());
        // Chunks of groups per task: enough to amortise scheduling, several per thread.
        let chunk = (groups / (rayon::current_num_threads() * 8)).clamp(1, 1024);
        (0..groups.div_ceil(chunk)).into_par_iter().for_each(|c| {
            let out_ptr = &out_ptr;
            let mut acc = [[0f32; G]; R];
            for g in c * chunk..((c + 1) * chunk).min(groups) {
                let q = &self.quants[g * blocks * 8..(g + 1) * blocks * 8];
                let s = &self.scales[g * blocks * G..(g + 1) * blocks * G];
                let lanes = G.min(self.n - g * G);
                for (a0, xr) in xs.chunks(R).enumerate() {
                    group_dot(vnni, q, s, xr, &mut acc[..xr.len()]);
                    for (i, acc) in acc[..xr.len()].iter().enumerate() {
                        let a = a0 * R + i;
                        // SAFETY: each (row a, group g) output range is written by one task
                        // only, and lies inside `out` (a < m, g * G + lanes <= n).
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                acc.as_ptr(),
                                out_ptr.0.add(a * self.n + g * G),
                                lanes,
                            );
                        }
                    }
                }
            }
        });
        out
    }
}

impl std::fmt::Debug for Q8Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q8Rows({} x {})", self.n, self.k)
    }
}

struct SendPtr(*mut f32);
// SAFETY: used only for disjoint writes (see `matmul`).
unsafe impl Sync for SendPtr {}

/// ggml's `quantize_row_q8_0`: per 32 values `d = max|x| / 127`, `q = round(x / d)`.
fn quantize_row(x: &[f32]) -> QuantRow {
    let blocks = x.len() / 32;
    let mut q = vec![0i8; x.len()];
    let mut d = vec![0f32; blocks];
    let mut corr = vec![0i32; blocks];
    for b in 0..blocks {
        let xb = &x[b * 32..(b + 1) * 32];
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let db = amax / 127.0;
        let id = if db != 0.0 { 1.0 / db } else { 0.0 };
        // the scale is stored as f16 in ggml's Q8_0; keep that rounding
        d[b] = f16::from_f32(db).to_f32();
        let mut sum = 0i32;
        for (o, v) in q[b * 32..(b + 1) * 32].iter_mut().zip(xb) {
            *o = (v * id).round() as i8;
            sum += *o as i32;
        }
        corr[b] = 128 * sum;
    }
    QuantRow { q, d, corr }
}

fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *V.get_or_init(|| {
            std::env::var("DECLAB_SIMD").ok().as_deref() != Some("portable")
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The 16 outputs of one row group for each of up to `R` input rows.
#[inline]
fn group_dot(vnni: bool, q: &[Line], s: &[f16], xs: &[QuantRow], acc: &mut [[f32; G]]) {
    debug_assert!(xs.len() == acc.len() && xs.len() <= R);
    #[cfg(target_arch = "x86_64")]
    if vnni {
        // SAFETY: `vnni()` checked the CPU features.
        unsafe {
            match xs.len() {
                8 => group_dot_vnni::<8>(q, s, xs, acc),
                7 => group_dot_vnni::<7>(q, s, xs, acc),
                6 => group_dot_vnni::<6>(q, s, xs, acc),
                5 => group_dot_vnni::<5>(q, s, xs, acc),
                4 => group_dot_vnni::<4>(q, s, xs, acc),
                3 => group_dot_vnni::<3>(q, s, xs, acc),
                2 => group_dot_vnni::<2>(q, s, xs, acc),
                _ => group_dot_vnni::<1>(q, s, xs, acc),
            }
        }
        return;
    }
    let _ = vnni;
    for (x, acc) in xs.iter().zip(acc) {
        group_dot_portable(q, s, x, acc)
    }
}

fn group_dot_portable(q: &[Line], s: &[f16], x: &QuantRow, acc: &mut [f32; G]) {
    *acc = [0.0; G];
    for (b, ((tile, sc), (&dx, &corr))) in q
        .chunks_exact(8)
        .zip(s.chunks_exact(G))
        .zip(x.d.iter().zip(&x.corr))
        .enumerate()
    {
        let xb = &x.q[b * 32..(b + 1) * 32];
        let mut dot = [0i32; G];
        for (j, line) in tile.iter().enumerate() {
            for (lane, d) in dot.iter_mut().enumerate() {
                for t in 0..4 {
                    *d += line.0[lane * 4 + t] as i32 * xb[j * 4 + t] as i32;
                }
            }
        }
        for lane in 0..G {
            let scale = sc[lane].to_f32() * dx;
            acc[lane] = ((dot[lane] - corr) as f32).mul_add(scale, acc[lane]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma,f16c")]
unsafe fn group_dot_vnni<const N: usize>(
    q: &[Line],
    s: &[f16],
    xs: &[QuantRow],
    acc: &mut [[f32; G]],
) {
    use std::arch::x86_64::*;
    let blocks = xs[0].d.len();
    debug_assert!(q.len() == blocks * 8 && s.len() == blocks * G && xs.len() == N);
    let mut a = [_mm512_setzero_ps(); N];
    let qp = q.as_ptr() as *const __m512i;
    let xp: [*const i32; N] = std::array::from_fn(|i| xs[i].q.as_ptr() as *const i32);
    for b in 0..blocks {
        let mut dot = [_mm512_setzero_si512(); N];
        for j in 0..8 {
            let w = _mm512_load_si512(qp.add(b * 8 + j));
            for i in 0..N {
                let xv = _mm512_set1_epi32(std::ptr::read_unaligned(xp[i].add(b * 8 + j)));
                dot[i] = _mm512_dpbusd_epi32(dot[i], w, xv);
            }
        }
        let ws = _mm512_cvtph_ps(_mm256_loadu_si256(s.as_ptr().add(b * G) as *const __m256i));
        for i in 0..N {
            let x = &xs[i];
            let d = _mm512_sub_epi32(dot[i], _mm512_set1_epi32(*x.corr.get_unchecked(b)));
            let scale = _mm512_mul_ps(ws, _mm512_set1_ps(*x.d.get_unchecked(b)));
            a[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), scale, a[i]);
        }
    }
    for i in 0..N {
        _mm512_storeu_ps(acc[i].as_mut_ptr(), a[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random GGUF Q8_0 rows (`n x k`).
    fn random_q8_0(n: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let mut out = Vec::with_capacity(n * k / 32 * 34);
        for _ in 0..n * k / 32 {
            let d = f16::from_f32(rng.random_range(0.001f32..0.05));
            out.extend_from_slice(&d.to_le_bytes());
            for _ in 0..32 {
                out.push(rng.random_range(-127i32..=127) as i8 as u8);
            }
        }
        out
    }

    fn build(n: usize, k: usize, data: &[u8]) -> Q8Rows {
        let row = k / 32 * 34;
        Q8Rows::from_q8_0_rows(n, k, |first, buf| {
            buf.copy_from_slice(&data[first * row..first * row + buf.len()]);
            Ok(())
        })
        .unwrap()
    }

    fn dequantize_gguf(data: &[u8]) -> Vec<f32> {
        data.chunks_exact(34)
            .flat_map(|b| {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                b[2..].iter().map(move |&q| d * q as i8 as f32)
            })
            .collect()
    }

    #[test]
    fn rows_dequantise_like_ggml() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (n, k) = (37, 96);
        let data = random_q8_0(n, k, &mut rng);
        let m = build(n, k, &data);
        let want = dequantize_gguf(&data);
        let mut row = vec![0f32; k];
        for r in 0..n {
            m.dequantize_row(r, &mut row);
            assert_eq!(row, want[r * k..(r + 1) * k], "row {r}");
        }
    }

    #[test]
    fn matmul_matches_the_quantised_reference_and_is_row_independent() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        // n not a multiple of 16: the last group is partly padding
        let (n, k, m) = (1000, 640, 5);
        let data = random_q8_0(n, k, &mut rng);
        let w = build(n, k, &data);
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-3f32..3.0)).collect();
        let out = w.matmul(&x, m);
        let wf = dequantize_gguf(&data);
        for a in 0..m {
            // reference: the same Q8_0 input quantisation, dot products in f64
            let xr = quantize_row(&x[a * k..(a + 1) * k]);
            let xd: Vec<f64> = (0..k)
                .map(|i| xr.d[i / 32] as f64 * xr.q[i] as f64)
                .collect();
            for r in 0..n {
                let want: f64 = (0..k).map(|i| wf[r * k + i] as f64 * xd[i]).sum();
                // f32 scales and accumulation: relative to the size of the terms summed
                let size: f64 = (0..k).map(|i| (wf[r * k + i] as f64 * xd[i]).abs()).sum();
                let got = out[a * n + r] as f64;
                assert!(
                    (got - want).abs() <= 1e-6 * size,
                    "row {a} out {r}: {got} vs {want}"
                );
            }
            // and close to the unquantised input (Q8_0's error)
            let exact: f64 = (0..k).map(|i| wf[i] as f64 * x[a * k + i] as f64).sum();
            assert!((out[a * n] as f64 - exact).abs() < 0.05 * (1.0 + exact.abs()));
            // a row alone gives the same bits as within the batch
            let single = w.matmul(&x[a * k..(a + 1) * k], 1);
            assert_eq!(single, out[a * n..(a + 1) * n]);
        }
    }

    #[test]
    fn vnni_and_portable_agree_bit_for_bit() {
        if !vnni() {
            return; // nothing to compare on this CPU
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (n, k) = (64, 640);
        let data = random_q8_0(n, k, &mut rng);
        let w = build(n, k, &data);
        let x: Vec<f32> = (0..k).map(|_| rng.random_range(-10f32..10.0)).collect();
        let xr = quantize_row(&x);
        let blocks = k / 32;
        for g in 0..n / G {
            let q = &w.quants[g * blocks * 8..(g + 1) * blocks * 8];
            let s = &w.scales[g * blocks * G..(g + 1) * blocks * G];
            let (mut a, mut b) = ([[0f32; G]; 1], [0f32; G]);
            group_dot(true, q, s, std::slice::from_ref(&xr), &mut a);
            group_dot_portable(q, s, &xr, &mut b);
            assert_eq!(a[0].map(f32::to_bits), b.map(f32::to_bits), "group {g}");
        }
    }

    #[test]
    fn zero_input_blocks_and_bad_width() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let data = random_q8_0(16, 64, &mut rng);
        let w = build(16, 64, &data);
        assert!(w.matmul(&[0.0; 64], 1).iter().all(|&v| v == 0.0));
        let err = Q8Rows::from_q8_0_rows(4, 40, |_, _| Ok(())).err().unwrap();
        assert!(err.to_string().contains("multiple of 32"), "{err}");
    }
}
