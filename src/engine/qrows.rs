//! Projections from the residual stream with declab's own quantised kernels: Q8_0 and Q5_0
//! matrices read from the GGUF straight into a layout for AVX-512 VNNI, held once. The token
//! embedding matrix (Q8_0 in Gemma 3 270M) serves both the lookup (rows dequantised) and the
//! tied output projection; q|k|v and gate|up run as one call per quantisation type.
//!
//! Why not candle's `QMatMul` for these: candle 0.11.1's fast x86 kernels quantise the input in
//! 256-wide blocks, so a 640-wide model (Gemma 3 270M) needed its matrices zero-padded to 768
//! columns, had no fast kernel for Q5_0 at all (declab re-blocked it as Q8_0: 55 % more bytes),
//! and candle keeps a repacked copy of every weight beside the GGUF-layout one. Here each matrix
//! is held once, in its own width and at its file's size (Q8_0 34 bytes, Q5_0 22 bytes per 32
//! weights), which is what a memory-bound single-stream step streams.
//!
//! Layout: rows in groups of 16. For each (group, 32-wide block), the weights as unsigned bytes
//! `u = w + offset` (Q8_0: +128; Q5_0: its stored 5-bit value, offset 16), arranged as the
//! operand of `vpdpbusd`: chunk `j` (64 bytes) holds bytes `4j..4j+4` of the block for each of
//! the 16 rows. Q8_0 stores the 8 chunks as they are; Q5_0 packs chunks `j` and `j + 4` as the
//! low and high nibbles of 4 lines, plus one line of fifth bits (one 64-bit mask per chunk).
//! The 16 f16 scales of the (group, block) sit in a separate array. The input row is quantised
//! to Q8_0 (per 32-block `d = max|x| / 127`, round to nearest, as ggml's `quantize_row_q8_0`),
//! and `sum(u x) - offset * sum(x)` is each block's exact integer dot product.
//!
//! Every output is computed the same way whatever the number of input rows, the thread count or
//! the instruction set: exact integer block sums, then `acc = fma(dot, d_w * d_x, acc)` over the
//! blocks in order. So batching never changes a row's logits, and the portable path is
//! bit-identical to the AVX-512 one (tested).

use half::f16;

/// Rows per group (one AVX-512 vector of outputs).
const G: usize = 16;
/// Input rows run together against one group's weights (one weight load serves them all).
const R: usize = 8;

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// The GGUF block formats these kernels take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QKind {
    Q8_0,
    Q5_0,
}

impl QKind {
    /// Bytes of one 32-weight GGUF block.
    pub fn block_bytes(self) -> usize {
        match self {
            QKind::Q8_0 => 34,
            QKind::Q5_0 => 22,
        }
    }

    /// Lines of quants per (group, block) tile (Q5_0: 4 nibble lines + 1 line of fifth bits).
    fn lines(self) -> usize {
        match self {
            QKind::Q8_0 => 8,
            QKind::Q5_0 => 5,
        }
    }

    /// What the stored unsigned value exceeds the weight by.
    fn offset(self) -> i32 {
        match self {
            QKind::Q8_0 => 128,
            QKind::Q5_0 => 16,
        }
    }

    /// The 32 unsigned values `w + offset` and the scale of one GGUF block.
    fn unpack(self, blk: &[u8], u: &mut [u8; 32]) -> f16 {
        let d = f16::from_le_bytes([blk[0], blk[1]]);
        match self {
            QKind::Q8_0 => {
                for (o, &q) in u.iter_mut().zip(&blk[2..34]) {
                    *o = q ^ 0x80;
                }
            }
            QKind::Q5_0 => {
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                for j in 0..16 {
                    let q = blk[6 + j];
                    u[j] = (q & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
                    u[j + 16] = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
                }
            }
        }
        d
    }
}

/// A quantised matrix of `n` rows (one or more parts stacked, each starting on a group) by `k`.
pub struct QRows {
    kind: QKind,
    k: usize,
    /// Rows of each part; part `p` starts at row `starts[p]` (a multiple of 16).
    parts: Vec<usize>,
    starts: Vec<usize>,
    /// `groups * blocks * kind.lines()` lines.
    quants: Vec<Line>,
    /// `groups * blocks * 16` scales (zero for padding rows).
    scales: Vec<f16>,
}

impl std::fmt::Debug for QRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QRows({:?}, {:?} x {})", self.kind, self.parts, self.k)
    }
}

/// Input rows quantised to Q8_0 (shared by every matrix of the same input).
pub struct QuantInput {
    k: usize,
    rows: Vec<QuantRow>,
}

struct QuantRow {
    q: Vec<i8>,
    d: Vec<f32>,
    /// Per block: the sum of the quants (for the stored offset).
    sum: Vec<i32>,
}

impl QuantInput {
    /// `x`: `m` rows of `k`.
    pub fn new(x: &[f32], k: usize) -> Self {
        assert!(k > 0 && x.len().is_multiple_of(k), "input is not m x k");
        QuantInput {
            k,
            rows: x.chunks_exact(k).map(quantize_row).collect(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }
}

impl QRows {
    /// Builds from GGUF blocks, part by part: `parts[p]` rows of `k` columns in `kind`, read by
    /// `fill(p, first_row, buf)` in runs of up to 16 rows (the file is never held whole).
    pub fn from_gguf(
        kind: QKind,
        parts: &[usize],
        k: usize,
        mut fill: impl FnMut(usize, usize, &mut [u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            k > 0 && k.is_multiple_of(32),
            "{kind:?} width {k} is not a multiple of 32"
        );
        anyhow::ensure!(!parts.is_empty(), "no rows");
        let blocks = k / 32;
        let mut starts = Vec::with_capacity(parts.len());
        let mut groups = 0;
        for &n in parts {
            starts.push(groups * G);
            groups += n.div_ceil(G);
        }
        let lines = kind.lines();
        // padding rows: u = offset, scale 0, so they contribute exact zeros
        let pad = match kind {
            QKind::Q8_0 => 0x80,
            QKind::Q5_0 => 0,
        };
        let mut quants = vec![Line([pad; 64]); groups * blocks * lines];
        if kind == QKind::Q5_0 {
            for t in 0..groups * blocks {
                quants[t * lines + 4] = Line([0xff; 64]);
            }
        }
        let mut scales = vec![f16::ZERO; groups * blocks * G];
        let row_bytes = blocks * kind.block_bytes();
        let mut buf = vec![0u8; G * row_bytes];
        let mut u = [0u8; 32];
        for (p, &n) in parts.iter().enumerate() {
            for g0 in (0..n).step_by(G) {
                let rows = G.min(n - g0);
                let buf = &mut buf[..rows * row_bytes];
                fill(p, g0, buf)?;
                let g = starts[p] / G + g0 / G;
                for (lane, row) in buf.chunks_exact(row_bytes).enumerate() {
                    for (b, blk) in row.chunks_exact(kind.block_bytes()).enumerate() {
                        let t = g * blocks + b;
                        scales[t * G + lane] = kind.unpack(blk, &mut u);
                        let tile = &mut quants[t * lines..(t + 1) * lines];
                        let at = lane * 4;
                        match kind {
                            QKind::Q8_0 => {
                                for (j, v) in u.chunks_exact(4).enumerate() {
                                    tile[j].0[at..at + 4].copy_from_slice(v);
                                }
                            }
                            QKind::Q5_0 => {
                                for j in 0..4 {
                                    for i in 0..4 {
                                        let (lo, hi) = (u[j * 4 + i], u[(j + 4) * 4 + i]);
                                        tile[j].0[at + i] = (lo & 0x0f) | (hi << 4);
                                    }
                                }
                                // fifth bits: 4 per chunk for this lane, at bits j * 64 + at..
                                for j in 0..8 {
                                    let mut nib = 0u8;
                                    for i in 0..4 {
                                        nib |= ((u[j * 4 + i] >> 4) & 1) << i;
                                    }
                                    let bit = j * 64 + at;
                                    let hb = &mut tile[4].0[bit / 8];
                                    let shift = bit % 8; // 0 or 4
                                    *hb = (*hb & !(0x0f << shift)) | (nib << shift);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(Self {
            kind,
            k,
            parts: parts.to_vec(),
            starts,
            quants,
            scales,
        })
    }

    /// Rows of the first part (the vocabulary, for an embedding matrix).
    pub fn rows(&self) -> usize {
        self.parts[0]
    }

    /// Rows of each part.
    pub fn parts(&self) -> &[usize] {
        &self.parts
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    fn groups(&self) -> usize {
        self.scales.len() / (self.k / 32 * G)
    }

    /// Row `r` of the first part dequantised (`d * w`, as ggml's `dequantize_row_*`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.parts[0] && out.len() == self.k);
        let blocks = self.k / 32;
        let (g, lane) = (r / G, r % G);
        let (off, lines) = (self.kind.offset(), self.kind.lines());
        for b in 0..blocks {
            let t = g * blocks + b;
            let d = self.scales[t * G + lane].to_f32();
            let tile = &self.quants[t * lines..(t + 1) * lines];
            for i in 0..32 {
                let w = stored(self.kind, tile, i / 4, lane * 4 + i % 4) as i32 - off;
                out[b * 32 + i] = d * w as f32;
            }
        }
    }

    /// `x W^T` for each part: `x.rows()` rows by `parts[p]`, row-major.
    pub fn matmul(&self, x: &QuantInput) -> Vec<Vec<f32>> {
        assert_eq!(x.k, self.k, "input width");
        let m = x.rows();
        let mut outs: Vec<Vec<f32>> = self.parts.iter().map(|&n| vec![0f32; m * n]).collect();
        let ptrs: Vec<SendPtr> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();
        let blocks = self.k / 32;
        let lines = self.kind.lines();
        let groups = self.groups();
        let vnni = available();
        let run = |range: std::ops::Range<usize>| {
            let mut acc = [[0f32; G]; R];
            let mut p = 0;
            for g in range {
                while p + 1 < self.parts.len() && g * G >= self.starts[p + 1] {
                    p += 1;
                }
                // parts start on a group, so every group holds 1..=16 rows of one part
                let (n, col) = (self.parts[p], g * G - self.starts[p]);
                let lanes = G.min(n - col);
                let q = &self.quants[g * blocks * lines..(g + 1) * blocks * lines];
                let s = &self.scales[g * blocks * G..(g + 1) * blocks * G];
                for (a0, xr) in x.rows.chunks(R).enumerate() {
                    group_dot(self.kind, vnni, q, s, xr, &mut acc[..xr.len()]);
                    for (i, acc) in acc[..xr.len()].iter().enumerate() {
                        let a = a0 * R + i;
                        // SAFETY: each (part, row a, group) output range is written by one
                        // task only, and lies inside part p's output (a < m, col + lanes <= n).
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                acc.as_ptr(),
                                ptrs[p].0.add(a * n + col),
                                lanes,
                            );
                        }
                    }
                }
            }
        };
        // the pool candle's matmuls run on too (`crate::pool`); small matrices run inline
        if groups * m < 64 {
            run(0..groups);
        } else {
            crate::pool::for_each_chunk(groups, run);
        }
        outs
    }
}

struct SendPtr(*mut f32);
// SAFETY: used only for disjoint writes (see `matmul`).
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// ggml's `quantize_row_q8_0` as its x86 SIMD form computes it (`ggml-cpu/arch/x86/quants.c`):
/// per 32 values `d = max|x| / 127` (kept as f16), `q = round_half_even(x * (127 / max|x|))`.
/// Bit-for-bit the same quants matter: declab's first form (`x * (1 / d)`, rounded half away
/// from zero) flipped 13 of 10,240 quants of Gemma 3's first projection input against llama.cpp,
/// each flip moving an output row by up to 0.25 %, and those differences compounded through
/// the layers to a KL of 0.006 nats from llama.cpp's logits (`tests/reference_logits.rs`).
fn quantize_row(x: &[f32]) -> QuantRow {
    let blocks = x.len() / 32;
    let mut q = vec![0i8; x.len()];
    let mut d = vec![0f32; blocks];
    let mut sum = vec![0i32; blocks];
    for b in 0..blocks {
        let xb = &x[b * 32..(b + 1) * 32];
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let db = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        d[b] = f16::from_f32(db).to_f32();
        let mut s = 0i32;
        for (o, v) in q[b * 32..(b + 1) * 32].iter_mut().zip(xb) {
            *o = (v * id).round_ties_even() as i8;
            s += *o as i32;
        }
        sum[b] = s;
    }
    QuantRow { q, d, sum }
}

/// Whether this CPU runs the VNNI kernels (and `DECLAB_SIMD` is not `portable`). Elsewhere the
/// engine keeps candle's kernels for these weights: the portable path here is exact but scalar,
/// slower than candle's AVX2 code.
pub fn available() -> bool {
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
fn group_dot(
    kind: QKind,
    vnni: bool,
    q: &[Line],
    s: &[f16],
    xs: &[QuantRow],
    acc: &mut [[f32; G]],
) {
    debug_assert!(xs.len() == acc.len() && xs.len() <= R);
    #[cfg(target_arch = "x86_64")]
    if vnni {
        macro_rules! by_rows {
            ($k:literal) => {
                // SAFETY: `available()` checked the CPU features.
                unsafe {
                    match xs.len() {
                        8 => group_dot_vnni::<8, $k>(q, s, xs, acc),
                        7 => group_dot_vnni::<7, $k>(q, s, xs, acc),
                        6 => group_dot_vnni::<6, $k>(q, s, xs, acc),
                        5 => group_dot_vnni::<5, $k>(q, s, xs, acc),
                        4 => group_dot_vnni::<4, $k>(q, s, xs, acc),
                        3 => group_dot_vnni::<3, $k>(q, s, xs, acc),
                        2 => group_dot_vnni::<2, $k>(q, s, xs, acc),
                        _ => group_dot_vnni::<1, $k>(q, s, xs, acc),
                    }
                }
            };
        }
        match kind {
            QKind::Q8_0 => by_rows!(true),
            QKind::Q5_0 => by_rows!(false),
        }
        return;
    }
    let _ = vnni;
    for (x, acc) in xs.iter().zip(acc) {
        group_dot_portable(kind, q, s, x, acc)
    }
}

/// The stored unsigned value `w + offset` at chunk `j`, byte `at` (= lane * 4 + i) of one
/// (group, block) tile: the layout `from_gguf` writes, read back one value at a time.
#[inline]
fn stored(kind: QKind, tile: &[Line], j: usize, at: usize) -> u8 {
    match kind {
        QKind::Q8_0 => tile[j].0[at],
        QKind::Q5_0 => {
            let nib = (tile[j % 4].0[at] >> (4 * (j / 4))) & 0x0f;
            let bit = j * 64 + at;
            nib | (((tile[4].0[bit / 8] >> (bit % 8)) & 1) << 4)
        }
    }
}

fn group_dot_portable(kind: QKind, q: &[Line], s: &[f16], x: &QuantRow, acc: &mut [f32; G]) {
    *acc = [0.0; G];
    let lines = kind.lines();
    let off = kind.offset();
    for (b, (tile, sc)) in q.chunks_exact(lines).zip(s.chunks_exact(G)).enumerate() {
        let xb = &x.q[b * 32..(b + 1) * 32];
        let mut dot = [0i32; G];
        for j in 0..8 {
            for (lane, d) in dot.iter_mut().enumerate() {
                for t in 0..4 {
                    let u = stored(kind, tile, j, lane * 4 + t);
                    *d += u as i32 * xb[j * 4 + t] as i32;
                }
            }
        }
        let corr = off * x.sum[b];
        for lane in 0..G {
            let scale = sc[lane].to_f32() * x.d[b];
            acc[lane] = ((dot[lane] - corr) as f32).mul_add(scale, acc[lane]);
        }
    }
}

/// `Q8`: Q8_0 tiles (8 plain lines) when true, Q5_0 tiles (4 nibble lines + fifth bits) when
/// false.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma,f16c")]
unsafe fn group_dot_vnni<const N: usize, const Q8: bool>(
    q: &[Line],
    s: &[f16],
    xs: &[QuantRow],
    acc: &mut [[f32; G]],
) {
    use std::arch::x86_64::*;
    let blocks = xs[0].d.len();
    let kind = if Q8 { QKind::Q8_0 } else { QKind::Q5_0 };
    let (lines, off) = (kind.lines(), kind.offset());
    debug_assert!(q.len() == blocks * lines && s.len() == blocks * G && xs.len() == N);
    let mut a = [_mm512_setzero_ps(); N];
    let qp = q.as_ptr() as *const __m512i;
    let xp: [*const i32; N] = std::array::from_fn(|i| xs[i].q.as_ptr() as *const i32);
    let low = _mm512_set1_epi8(0x0f);
    let fifth = _mm512_set1_epi8(0x10);
    for b in 0..blocks {
        let mut dot = [_mm512_setzero_si512(); N];
        let tile = qp.add(b * lines);
        let chunk = |dot: &mut [__m512i; N], w: __m512i, j: usize| {
            for i in 0..N {
                let xv = _mm512_set1_epi32(std::ptr::read_unaligned(xp[i].add(b * 8 + j)));
                dot[i] = _mm512_dpbusd_epi32(dot[i], w, xv);
            }
        };
        if Q8 {
            for j in 0..8 {
                chunk(&mut dot, _mm512_load_si512(tile.add(j)), j);
            }
        } else {
            let bits = tile.add(4) as *const u64;
            for j in 0..4 {
                let v = _mm512_load_si512(tile.add(j));
                let lo = _mm512_and_si512(v, low);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                let klo: __mmask64 = std::ptr::read_unaligned(bits.add(j));
                let khi: __mmask64 = std::ptr::read_unaligned(bits.add(j + 4));
                let lo = _mm512_mask_blend_epi8(klo, lo, _mm512_or_si512(lo, fifth));
                let hi = _mm512_mask_blend_epi8(khi, hi, _mm512_or_si512(hi, fifth));
                chunk(&mut dot, lo, j);
                chunk(&mut dot, hi, j + 4);
            }
        }
        let ws = _mm512_cvtph_ps(_mm256_loadu_si256(s.as_ptr().add(b * G) as *const __m256i));
        for i in 0..N {
            let x = &xs[i];
            let corr = _mm512_set1_epi32(off * *x.sum.get_unchecked(b));
            let d = _mm512_sub_epi32(dot[i], corr);
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

    /// Random GGUF blocks of `kind` for `n x k` weights.
    fn random_blocks(kind: QKind, n: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let mut out = Vec::with_capacity(n * k / 32 * kind.block_bytes());
        for _ in 0..n * k / 32 {
            let d = f16::from_f32(rng.random_range(0.001f32..0.05));
            out.extend_from_slice(&d.to_le_bytes());
            for _ in 0..kind.block_bytes() - 2 {
                out.push(match kind {
                    QKind::Q8_0 => rng.random_range(-127i32..=127) as i8 as u8,
                    QKind::Q5_0 => rng.random(),
                });
            }
        }
        out
    }

    /// ggml's dequantisation of GGUF blocks, written from the format (not from `unpack`).
    fn dequantize_gguf(kind: QKind, data: &[u8]) -> Vec<f32> {
        data.chunks_exact(kind.block_bytes())
            .flat_map(|b| {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let w: Vec<f32> = match kind {
                    QKind::Q8_0 => b[2..].iter().map(|&q| d * q as i8 as f32).collect(),
                    QKind::Q5_0 => {
                        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                        let mut w = vec![0f32; 32];
                        for j in 0..16 {
                            let xh0 = ((qh >> j) << 4) & 0x10;
                            let xh1 = (qh >> (j + 12)) & 0x10;
                            w[j] = d * (((b[6 + j] as u32 & 0x0f) | xh0) as i32 - 16) as f32;
                            w[j + 16] = d * (((b[6 + j] as u32 >> 4) | xh1) as i32 - 16) as f32;
                        }
                        w
                    }
                };
                w
            })
            .collect()
    }

    fn build(kind: QKind, parts: &[usize], k: usize, data: &[Vec<u8>]) -> QRows {
        let row = k / 32 * kind.block_bytes();
        QRows::from_gguf(kind, parts, k, |p, first, buf| {
            buf.copy_from_slice(&data[p][first * row..first * row + buf.len()]);
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn rows_dequantise_like_ggml() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for kind in [QKind::Q8_0, QKind::Q5_0] {
            let (n, k) = (37, 96);
            let data = random_blocks(kind, n, k, &mut rng);
            let m = build(kind, &[n], k, std::slice::from_ref(&data));
            let want = dequantize_gguf(kind, &data);
            let mut row = vec![0f32; k];
            for r in 0..n {
                m.dequantize_row(r, &mut row);
                assert_eq!(row, want[r * k..(r + 1) * k], "{kind:?} row {r}");
            }
        }
    }

    #[test]
    fn matmul_matches_the_quantised_reference_and_is_row_independent() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        // parts not multiples of 16: padding groups inside and at the end
        let (parts, k, m) = ([100usize, 37, 64], 640, 11);
        for kind in [QKind::Q8_0, QKind::Q5_0] {
            let data: Vec<Vec<u8>> = parts
                .iter()
                .map(|&n| random_blocks(kind, n, k, &mut rng))
                .collect();
            let w = build(kind, &parts, k, &data);
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-3f32..3.0)).collect();
            let xq = QuantInput::new(&x, k);
            let outs = w.matmul(&xq);
            for (p, (&n, out)) in parts.iter().zip(&outs).enumerate() {
                assert_eq!(out.len(), m * n);
                let wf = dequantize_gguf(kind, &data[p]);
                for a in 0..m {
                    // reference: the same Q8_0 input quantisation, dot products in f64
                    let xr = &xq.rows[a];
                    let xd: Vec<f64> = (0..k)
                        .map(|i| xr.d[i / 32] as f64 * xr.q[i] as f64)
                        .collect();
                    for r in 0..n {
                        let terms = (0..k).map(|i| wf[r * k + i] as f64 * xd[i]);
                        let want: f64 = terms.clone().sum();
                        // f32 scales and accumulation: relative to the size of the terms
                        let size: f64 = terms.map(f64::abs).sum();
                        let got = out[a * n + r] as f64;
                        assert!(
                            (got - want).abs() <= 1e-6 * size,
                            "{kind:?} part {p} row {a} out {r}: {got} vs {want}"
                        );
                    }
                    // and close to the unquantised input (Q8_0's error)
                    let exact: f64 = (0..k).map(|i| wf[i] as f64 * x[a * k + i] as f64).sum();
                    let size: f64 = (0..k).map(|i| (wf[i] * x[a * k + i]).abs() as f64).sum();
                    assert!((out[a * n] as f64 - exact).abs() < 0.02 * size);
                }
            }
            // a row alone gives the same bits as within the batch
            for a in [0, 7, 8, 10] {
                let single = w.matmul(&QuantInput::new(&x[a * k..(a + 1) * k], k));
                for (p, &n) in parts.iter().enumerate() {
                    assert_eq!(single[p], outs[p][a * n..(a + 1) * n], "{kind:?} row {a}");
                }
            }
        }
    }

    #[test]
    fn vnni_and_portable_agree_bit_for_bit() {
        if !available() {
            return; // nothing to compare on this CPU
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (n, k) = (64, 640);
        for kind in [QKind::Q8_0, QKind::Q5_0] {
            let data = random_blocks(kind, n, k, &mut rng);
            let w = build(kind, &[n], k, std::slice::from_ref(&data));
            let x: Vec<f32> = (0..3 * k).map(|_| rng.random_range(-10f32..10.0)).collect();
            let xq = QuantInput::new(&x, k);
            let (blocks, lines) = (k / 32, kind.lines());
            for g in 0..n / G {
                let q = &w.quants[g * blocks * lines..(g + 1) * blocks * lines];
                let s = &w.scales[g * blocks * G..(g + 1) * blocks * G];
                let mut a = [[0f32; G]; 3];
                group_dot(kind, true, q, s, &xq.rows, &mut a);
                for (i, x) in xq.rows.iter().enumerate() {
                    let mut b = [0f32; G];
                    group_dot_portable(kind, q, s, x, &mut b);
                    assert_eq!(
                        a[i].map(f32::to_bits),
                        b.map(f32::to_bits),
                        "{kind:?} {g} {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn zero_input_and_bad_width() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let data = random_blocks(QKind::Q5_0, 16, 64, &mut rng);
        let w = build(QKind::Q5_0, &[16], 64, std::slice::from_ref(&data));
        let out = w.matmul(&QuantInput::new(&[0.0; 64], 64));
        assert!(out[0].iter().all(|&v| v == 0.0));
        let err = QRows::from_gguf(QKind::Q8_0, &[4], 40, |_, _, _| Ok(()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("multiple of 32"), "{err}");
    }
}
