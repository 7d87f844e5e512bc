//! Projections with declab's own quantised kernels: Q8_0, Q5_0, Q4_1, Q4_K and Q6_K matrices
//! read from the GGUF straight into a layout for AVX-512 VNNI, held once (built in memory at a
//! first load, then mapped from the cache beside the GGUF: `qrows_cache.rs`). The token
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
//! `u = w + offset` (Q8_0: +128; Q5_0: its stored 5-bit value, offset 16; Q4_1: its stored 4-bit
//! value, offset 0, the block's minimum `m` added as a float term), arranged as the operand of
//! `vpdpbusd`: chunk `j` (64 bytes) holds bytes `4j..4j+4` of the block for each of the 16 rows.
//! Q8_0 stores the 8 chunks as they are; Q5_0 and Q4_1 pack chunks `j` and `j + 4` as the low
//! and high nibbles of 4 lines, Q5_0 plus one line of fifth bits (one 64-bit mask per chunk).
//! The 16 f16 scales (and Q4_1's 16 f16 minima) of the (group, block) sit in separate arrays.
//!
//! The K kinds' 256-weight super-blocks are laid out as 8 blocks of 32 in the same tiles. Q4_K
//! (`w = d sc q - dmin m`) keeps its 4-bit `q` as Q4_1's nibbles; Q6_K (`w = d sc (q - 32)`, a
//! scale per 16 weights) keeps `q - 32 + 128` as Q8_0's bytes (one byte for 6.6 bits: more
//! memory than the file, for the simplest kernel). A last line per tile holds each row's two
//! 8-bit integer multipliers (Q4_K: `sc`, `m`; Q6_K: the two halves' `sc`), and the scale (and
//! minimum) arrays hold the super-block's `d` (and `-dmin`), so every factor is stored exactly.
//! The kernels multiply the exact integer block sums by those integers before converting to
//! float (Q4_K: `fma(dot sc, d d_x)` then `fma(sum(x) m, -dmin d_x)`; Q6_K: `fma(dot_lo sc_lo +
//! dot_hi sc_hi, d d_x)`; every integer below 2^24, so exact in f32). ggml computes the same
//! products against an input quantised per 256 (`block_q8_K`); here the input stays quantised
//! per 32, as for the other kinds, so one quantised input serves every matrix. The K kinds have
//! portable and AVX2 kernels; an AVX-512 CPU runs the AVX2 one (the same bits).
//! The input row is quantised to Q8_0 (per 32-block `d = max|x| / 127`, round to nearest, as
//! ggml's `quantize_row_q8_0`; for Q4_1 also `s = d * sum(q)` in f16, as `quantize_row_q8_1`),
//! and `sum(u x) - offset * sum(x)` is each block's exact integer dot product.
//!
//! Every output is computed the same way whatever the number of input rows, the thread count or
//! the instruction set: exact integer block sums, then `acc = fma(dot, d_w * d_x, acc)` (Q4_1:
//! then `acc = fma(m_w, s_x, acc)`; the K kinds as above) over the blocks in order. So batching
//! never changes a row's logits, and the AVX-512 VNNI, AVX2 and portable paths give the same
//! bits (tested): a CPU without AVX-512 computes the samples an AVX-512 server computes.

use half::f16;

use super::qrows_cache::{Plain, Slab};

/// Rows per group (one AVX-512 vector of outputs).
const G: usize = 16;
/// Input rows run together against one group's weights (one weight load serves them all).
const R: usize = 8;
/// Blocks ahead the AVX2 kernel prefetches.
const PF: usize = 8;

#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct Line([u8; 64]);

// SAFETY: 64 bytes, any values, no padding.
unsafe impl Plain for Line {}

/// The GGUF block formats these kernels take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QKind {
    Q8_0,
    Q5_0,
    Q4_1,
    /// 256-weight super-blocks of 8 sub-blocks of 32: `w = d sc q - dmin m` (`q` 4 bits, `sc`
    /// and `m` 6-bit integers per sub-block, `d` and `dmin` f16 per super-block).
    Q4K,
    /// 256-weight super-blocks of 16 sub-blocks of 16: `w = d sc (q - 32)` (`q` 6 bits, `sc` an
    /// 8-bit signed integer per sub-block, `d` f16 per super-block).
    Q6K,
}

impl QKind {
    /// Every kind, in the order of the kernels' const parameters (`K_Q8_0`, ...).
    pub(crate) const ALL: [QKind; 5] = [
        QKind::Q8_0,
        QKind::Q5_0,
        QKind::Q4_1,
        QKind::Q4K,
        QKind::Q6K,
    ];

    /// Bytes of one GGUF block ([`QKind::block_weights`] weights).
    pub fn block_bytes(self) -> usize {
        match self {
            QKind::Q8_0 => 34,
            QKind::Q5_0 => 22,
            QKind::Q4_1 => 20,
            QKind::Q4K => 144,
            QKind::Q6K => 210,
        }
    }

    /// Weights of one GGUF block (what a row's width must be a multiple of).
    pub fn block_weights(self) -> usize {
        match self {
            QKind::Q4K | QKind::Q6K => 256,
            _ => 32,
        }
    }

    /// Bytes of one GGUF row `k` wide.
    pub fn row_bytes(self, k: usize) -> usize {
        k / self.block_weights() * self.block_bytes()
    }

    /// Lines per (group, block) tile: the quants (Q8_0 and Q6_K 8 lines of bytes; Q5_0, Q4_1
    /// and Q4_K 4 lines of nibbles, Q5_0 plus 1 line of fifth bits), then for the K kinds 1
    /// line of per-row integer multipliers ([`QKind::has_mul`]).
    fn lines(self) -> usize {
        match self {
            QKind::Q8_0 => 8,
            QKind::Q5_0 => 5,
            QKind::Q4_1 => 4,
            QKind::Q4K => 5,
            QKind::Q6K => 9,
        }
    }

    /// What the stored unsigned value exceeds the weight by (Q6_K: the weight is `q - 32`).
    fn offset(self) -> i32 {
        match self {
            QKind::Q8_0 | QKind::Q6K => 128,
            QKind::Q5_0 => 16,
            QKind::Q4_1 | QKind::Q4K => 0,
        }
    }

    /// Whether blocks carry a minimum (`w = d q + m`).
    fn has_min(self) -> bool {
        matches!(self, QKind::Q4_1 | QKind::Q4K)
    }

    /// Whether the quants are whole bytes (else nibbles).
    fn bytes(self) -> bool {
        matches!(self, QKind::Q8_0 | QKind::Q6K)
    }

    /// Whether a tile's last line holds integer multipliers per row: Q4_K's `sc` (bytes 0-15)
    /// and `m` (16-31); Q6_K's `sc` of the block's first 16 weights (0-15) and last 16 (16-31).
    /// The f16 scale (and minimum) arrays then hold the super-block's `d` (and `-dmin`).
    fn has_mul(self) -> bool {
        matches!(self, QKind::Q4K | QKind::Q6K)
    }

    /// The 32 unsigned values `w + offset`, the scale and the minimum (zero where the format has
    /// none) of one GGUF block of 32 (Q8_0, Q5_0, Q4_1).
    fn unpack(self, blk: &[u8], u: &mut [u8; 32]) -> (f16, f16) {
        let d = f16::from_le_bytes([blk[0], blk[1]]);
        let mut m = f16::ZERO;
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
            QKind::Q4_1 => {
                m = f16::from_le_bytes([blk[2], blk[3]]);
                for j in 0..16 {
                    u[j] = blk[4 + j] & 0x0f;
                    u[j + 16] = blk[4 + j] >> 4;
                }
            }
            QKind::Q4K | QKind::Q6K => unreachable!("K super-blocks go through unpack_k"),
        }
        (d, m)
    }

    /// One GGUF super-block of a K kind as 8 blocks of 32: each block's unsigned values
    /// `w + offset` and its two multipliers (Q4_K: `sc`, `m`; Q6_K: the two halves' `sc`, as
    /// bytes), and the super-block's `d` and (Q4_K) `-dmin`. ggml's `dequantize_row_q4_K` and
    /// `dequantize_row_q6_K` (`ggml-quants.c`) read the same bits.
    fn unpack_k(self, blk: &[u8], u: &mut [[u8; 32]; 8], mul: &mut [[u8; 2]; 8]) -> (f16, f16) {
        match self {
            QKind::Q4K => {
                let d = f16::from_le_bytes([blk[0], blk[1]]);
                let dmin = f16::from_le_bytes([blk[2], blk[3]]);
                let (sc, qs) = (&blk[4..16], &blk[16..144]);
                for (j, mul) in mul.iter_mut().enumerate() {
                    // ggml's `get_scale_min_k4`
                    *mul = if j < 4 {
                        [sc[j] & 63, sc[j + 4] & 63]
                    } else {
                        [
                            (sc[j + 4] & 0x0f) | ((sc[j - 4] >> 6) << 4),
                            (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4),
                        ]
                    };
                }
                // sub-blocks 2p and 2p + 1: the low and high nibbles of qs[32p..32p + 32]
                for p in 0..4 {
                    for l in 0..32 {
                        let q = qs[32 * p + l];
                        u[2 * p][l] = q & 0x0f;
                        u[2 * p + 1][l] = q >> 4;
                    }
                }
                (d, -dmin)
            }
            QKind::Q6K => {
                let (ql, qh, sc) = (&blk[..128], &blk[128..192], &blk[192..208]);
                let d = f16::from_le_bytes([blk[208], blk[209]]);
                for (j, mul) in mul.iter_mut().enumerate() {
                    *mul = [sc[2 * j], sc[2 * j + 1]];
                }
                // each half of 128 weights: 64 bytes of low nibbles, 32 of high 2-bit pairs
                for n in 0..2 {
                    let (ql, qh) = (&ql[64 * n..64 * n + 64], &qh[32 * n..32 * n + 32]);
                    for l in 0..32 {
                        let q = [
                            (ql[l] & 0x0f) | ((qh[l] & 3) << 4),
                            (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4),
                            (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                            (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                        ];
                        for (i, q) in q.into_iter().enumerate() {
                            // weight 128 n + 32 i + l; stored as (q - 32) + 128
                            u[4 * n + i][l] = q + 96;
                        }
                    }
                }
                (d, f16::ZERO)
            }
            _ => unreachable!("blocks of 32 go through unpack"),
        }
    }
}

/// `n` copies of `v` in memory the kernel is asked to back with transparent huge pages
/// (`MADV_HUGEPAGE`, before the first write). A matrix read whole at every step (Gemma 3's
/// 178 MB output projection) then costs one TLB entry per 2 MiB instead of per 4 KiB, and
/// filling it at load takes 512 times fewer page faults. Where the kernel declines (huge pages
/// off, or another OS) this is a plain `vec![v; n]`.
fn vec_on_huge_pages<T: Clone>(n: usize, v: T) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(n);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = n * std::mem::size_of::<T>();
        if bytes >= 2 * HUGE {
            let start = out.as_mut_ptr() as usize;
            let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
            if hi > lo {
                // SAFETY: [lo, hi) lies inside the allocation `out` owns and has not touched;
                // the advice changes how pages are backed, not their contents.
                unsafe {
                    libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
    out.resize(n, v);
    out
}

/// Groups of 16 rows [`QRows::from_gguf`] reads at once (512 rows: Gemma 3's embedding, 348 KB).
const READ_GROUPS: usize = 32;

/// Lays out `buf`'s GGUF rows (`blocks` blocks of 32 each, group after group of 16 rows; the
/// last group may be short) into tiles: `quants`, `scales` and `mins` (empty unless the kind has
/// minima) start at the first group's tiles.
fn pack_groups(
    kind: QKind,
    blocks: usize,
    buf: &[u8],
    quants: &mut [Line],
    scales: &mut [f16],
    mins: &mut [f16],
) {
    let lines = kind.lines();
    let mut u = [0u8; 32];
    let (mut uk, mut mul) = ([[0u8; 32]; 8], [[0u8; 2]; 8]);
    for (r, row) in buf.chunks_exact(kind.row_bytes(blocks * 32)).enumerate() {
        let (g, lane) = (r / G, r % G);
        let at = lane * 4;
        if kind.has_mul() {
            for (sb, blk) in row.chunks_exact(kind.block_bytes()).enumerate() {
                let (d, m) = kind.unpack_k(blk, &mut uk, &mut mul);
                for j in 0..8 {
                    let t = g * blocks + sb * 8 + j;
                    let tile = &mut quants[t * lines..(t + 1) * lines];
                    scales[t * G + lane] = d;
                    if kind.has_min() {
                        mins[t * G + lane] = m;
                    }
                    write_quants(kind, tile, at, &uk[j]);
                    let last = &mut tile[lines - 1].0;
                    last[lane] = mul[j][0];
                    last[G + lane] = mul[j][1];
                }
            }
            continue;
        }
        for (b, blk) in row.chunks_exact(kind.block_bytes()).enumerate() {
            let t = g * blocks + b;
            let tile = &mut quants[t * lines..(t + 1) * lines];
            if kind == QKind::Q8_0 {
                // the stored byte is q + 128: four at a time
                scales[t * G + lane] = f16::from_le_bytes([blk[0], blk[1]]);
                for (j, line) in tile.iter_mut().enumerate() {
                    let q = u32::from_le_bytes(blk[2 + 4 * j..6 + 4 * j].try_into().unwrap());
                    line.0[at..at + 4].copy_from_slice(&(q ^ 0x8080_8080).to_le_bytes());
                }
                continue;
            }
            let (d, m) = kind.unpack(blk, &mut u);
            scales[t * G + lane] = d;
            if kind.has_min() {
                mins[t * G + lane] = m;
            }
            write_quants(kind, tile, at, &u);
            if kind == QKind::Q4_1 {
                continue;
            }
            // Q5_0's fifth bits: 4 per chunk for this lane, at bits j * 64 + at..
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

/// One row's 32 unsigned values of a block into its tile at byte `at` of each chunk: whole
/// bytes in lines 0-7, or nibbles (chunk `j` low, chunk `j + 4` high) in lines 0-3.
fn write_quants(kind: QKind, tile: &mut [Line], at: usize, u: &[u8; 32]) {
    if kind.bytes() {
        for (j, line) in tile[..8].iter_mut().enumerate() {
            line.0[at..at + 4].copy_from_slice(&u[4 * j..4 * j + 4]);
        }
        return;
    }
    for j in 0..4 {
        for i in 0..4 {
            let (lo, hi) = (u[j * 4 + i], u[(j + 4) * 4 + i]);
            tile[j].0[at + i] = (lo & 0x0f) | (hi << 4);
        }
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
    quants: Slab<Line>,
    /// `groups * blocks * 16` scales (zero for padding rows).
    scales: Slab<f16>,
    /// Q4_1's minima, laid out as `scales`; empty for the other kinds.
    mins: Slab<f16>,
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
    /// Per block: `d * sum` rounded to f16 (ggml's `block_q8_1.s`, for Q4_1's minima).
    s: Vec<f32>,
}

impl QuantInput {
    /// `x`: `m` rows of `k`.
    pub fn new(x: &[f32], k: usize) -> Self {
        assert!(k > 0 && x.len().is_multiple_of(k), "input is not m x k");
        let m = x.len() / k;
        // a batch's rows on the pool (each row alone, so the same quants either way)
        let rows = if m >= 4 {
            crate::pool::map(m, |r| quantize_row(&x[r * k..(r + 1) * k]))
        } else {
            x.chunks_exact(k).map(quantize_row).collect()
        };
        QuantInput { k, rows }
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }
}

impl QRows {
    /// Builds from GGUF blocks, part by part: `parts[p]` rows of `k` columns in `kind`, read by
    /// `fill(p, first_row, buf)` in runs of up to `READ_GROUPS * 16` rows, in file order (the
    /// file is never held whole).
    pub fn from_gguf(
        kind: QKind,
        parts: &[usize],
        k: usize,
        mut fill: impl FnMut(usize, usize, &mut [u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            k > 0 && k.is_multiple_of(kind.block_weights()),
            "{kind:?} width {k} is not a multiple of {}",
            kind.block_weights()
        );
        anyhow::ensure!(!parts.is_empty(), "no rows");
        let blocks = k / 32;
        let (starts, groups) = Self::group_starts(parts);
        let lines = kind.lines();
        // padding rows: u = offset, scale 0, so they contribute exact zeros
        let pad = if kind.bytes() { 0x80 } else { 0 };
        let mut quants = vec_on_huge_pages(groups * blocks * lines, Line([pad; 64]));
        if kind == QKind::Q5_0 {
            for t in 0..groups * blocks {
                quants[t * lines + 4] = Line([0xff; 64]);
            }
        }
        let mut scales = vec![f16::ZERO; groups * blocks * G];
        let mut mins = if kind.has_min() {
            vec![f16::ZERO; groups * blocks * G]
        } else {
            Vec::new()
        };
        let row_bytes = kind.row_bytes(k);
        let mut buf = vec![0u8; READ_GROUPS * G * row_bytes];
        let (tile_lines, tile_scales) = (blocks * lines, blocks * G);
        for (p, &n) in parts.iter().enumerate() {
            for r0 in (0..n).step_by(READ_GROUPS * G) {
                let rows = (READ_GROUPS * G).min(n - r0);
                let buf = &mut buf[..rows * row_bytes];
                fill(p, r0, buf)?;
                let (g, ng) = (starts[p] / G + r0 / G, rows.div_ceil(G));
                let q = &mut quants[g * tile_lines..(g + ng) * tile_lines];
                let s = &mut scales[g * tile_scales..(g + ng) * tile_scales];
                let m = match kind.has_min() {
                    true => &mut mins[g * tile_scales..(g + ng) * tile_scales],
                    false => &mut [][..],
                };
                // the two halves of the groups read on the pool's two threads
                let half = ng / 2;
                let (b0, b1) = buf.split_at(half * G * row_bytes);
                let (q0, q1) = q.split_at_mut(half * tile_lines);
                let (s0, s1) = s.split_at_mut(half * tile_scales);
                let (m0, m1) = m.split_at_mut(if m.is_empty() { 0 } else { half * tile_scales });
                crate::pool::join(
                    || pack_groups(kind, blocks, b0, q0, s0, m0),
                    || pack_groups(kind, blocks, b1, q1, s1, m1),
                );
            }
        }
        Ok(Self {
            kind,
            k,
            parts: parts.to_vec(),
            starts,
            quants: Slab::Owned(quants),
            scales: Slab::Owned(scales),
            mins: Slab::Owned(mins),
        })
    }

    /// The first group of each part, and the groups in all.
    fn group_starts(parts: &[usize]) -> (Vec<usize>, usize) {
        let mut starts = Vec::with_capacity(parts.len());
        let mut groups = 0;
        for &n in parts {
            starts.push(groups * G);
            groups += n.div_ceil(G);
        }
        (starts, groups)
    }

    /// A matrix from its packed arrays (as [`QRows::slab_bytes`] gave them, mapped back from a
    /// cache); `None` unless their lengths are those of `kind`, `k` and `parts`.
    pub(crate) fn from_slabs(
        kind: QKind,
        k: usize,
        parts: &[usize],
        quants: Slab<Line>,
        scales: Slab<f16>,
        mins: Slab<f16>,
    ) -> Option<Self> {
        if k == 0 || !k.is_multiple_of(kind.block_weights()) || parts.is_empty() {
            return None;
        }
        let (starts, groups) = Self::group_starts(parts);
        let tiles = groups * (k / 32);
        let n_mins = if kind.has_min() { tiles * G } else { 0 };
        (quants.len() == tiles * kind.lines() && scales.len() == tiles * G && mins.len() == n_mins)
            .then(|| Self {
                kind,
                k,
                parts: parts.to_vec(),
                starts,
                quants,
                scales,
                mins,
            })
    }

    /// The packed arrays (quants, scales, minima) as bytes, each with its element count.
    pub(crate) fn slab_bytes(&self) -> [(&[u8], usize); 3] {
        [
            (self.quants.as_bytes(), self.quants.len()),
            (self.scales.as_bytes(), self.scales.len()),
            (self.mins.as_bytes(), self.mins.len()),
        ]
    }

    pub fn kind(&self) -> QKind {
        self.kind
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

    /// Row `r` of the first part dequantised (`d * w`, Q4_1 `d * w + m`, as ggml's
    /// `dequantize_row_*`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.parts[0] && out.len() == self.k);
        let blocks = self.k / 32;
        let (g, lane) = (r / G, r % G);
        let (off, lines) = (self.kind.offset(), self.kind.lines());
        for b in 0..blocks {
            let t = g * blocks + b;
            let d = self.scales[t * G + lane].to_f32();
            let m = self.mins.get(t * G + lane).map_or(0.0, |m| m.to_f32());
            let tile = &self.quants[t * lines..(t + 1) * lines];
            for i in 0..32 {
                let w = stored(self.kind, tile, i / 4, lane * 4 + i % 4) as i32 - off;
                out[b * 32 + i] = match self.kind {
                    // ggml: `d1 * q - m1`, d1 = d * sc, m1 = dmin * m (m holds -dmin)
                    QKind::Q4K => {
                        let (sc, mm) = multipliers(self.kind, tile, lane);
                        (d * sc as f32) * w as f32 - (-m) * mm as f32
                    }
                    // ggml: `d * sc * q`
                    QKind::Q6K => {
                        let (lo, hi) = multipliers(self.kind, tile, lane);
                        let sc = if i < 16 { lo } else { hi };
                        (d * sc as f32) * w as f32
                    }
                    _ if self.kind.has_min() => d * w as f32 + m,
                    _ => d * w as f32,
                };
            }
        }
    }

    /// `x W^T` for each part: `x.rows()` rows by `parts[p]`, row-major.
    pub fn matmul(&self, x: &QuantInput) -> Vec<Vec<f32>> {
        assert_eq!(x.k, self.k, "input width");
        let m = x.rows();
        // not zeroed: every element is written below (zeroing the 262,144-wide output's rows was
        // a serial memset of 28 MB per step at 27 rows, while the pool's other thread waited)
        let mut outs: Vec<Vec<f32>> = self
            .parts
            .iter()
            .map(|&n| Vec::with_capacity(m * n))
            .collect();
        let ptrs: Vec<SendPtr> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();
        let blocks = self.k / 32;
        let lines = self.kind.lines();
        let groups = self.groups();
        let level = Level::detected();
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
                let mn = self
                    .mins
                    .get(g * blocks * G..(g + 1) * blocks * G)
                    .unwrap_or(&[]);
                for (a0, xr) in x.rows.chunks(R).enumerate() {
                    group_dot(self.kind, level, q, s, mn, xr, &mut acc[..xr.len()]);
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
        for (o, &n) in outs.iter_mut().zip(&self.parts) {
            // SAFETY: `run` wrote every (row, column) of every part: the groups cover each
            // part's columns (lanes = min(16, n - col)) for every input row.
            unsafe { o.set_len(m * n) };
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
/// Rounding is `round_ties_even`, which the baseline x86-64 target compiles to a `rintf` call
/// per value; with SSE4.1 (AVX2 level and up) the same function compiles to `roundps`, which
/// rounds the same way (tested: every level gives the portable bits).
fn quantize_row(x: &[f32]) -> QuantRow {
    #[cfg(target_arch = "x86_64")]
    if Level::detected() != Level::Portable {
        // SAFETY: AVX2 and FMA are present at every level above Portable.
        return unsafe { quantize_row_avx2(x) };
    }
    quantize_row_impl(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,sse4.1")]
unsafe fn quantize_row_avx2(x: &[f32]) -> QuantRow {
    quantize_row_impl(x)
}

#[inline(always)]
fn quantize_row_impl(x: &[f32]) -> QuantRow {
    let blocks = x.len() / 32;
    let mut q = vec![0i8; x.len()];
    let mut d = vec![0f32; blocks];
    let mut sum = vec![0i32; blocks];
    let mut sums = vec![0f32; blocks];
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
        sums[b] = f16::from_f32(db * s as f32).to_f32();
    }
    QuantRow { q, d, sum, s: sums }
}

/// The instruction set the projections run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Portable,
    Avx2,
    Avx512Vnni,
}

impl Level {
    /// The widest this CPU has, lowered by `DECLAB_SIMD` like the samplers' kernels
    /// ([`crate::strategy::kernels::Isa::detected`]).
    pub fn detected() -> Level {
        static L: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
        *L.get_or_init(|| Level::at(crate::strategy::kernels::Isa::detected()))
    }

    /// The widest level at or below `isa` that this CPU runs.
    pub fn at(isa: crate::strategy::kernels::Isa) -> Level {
        use crate::strategy::kernels::Isa;
        #[cfg(target_arch = "x86_64")]
        {
            let f16c = std::arch::is_x86_feature_detected!("f16c");
            if isa >= Isa::Avx512
                && f16c
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Level::Avx512Vnni;
            }
            if isa >= Isa::Avx2
                && f16c
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Level::Avx2;
            }
        }
        let _ = isa;
        Level::Portable
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512Vnni => "avx512-vnni",
        }
    }
}

/// The 16 outputs of one row group for each of up to `R` input rows.
#[inline]
fn group_dot(
    kind: QKind,
    level: Level,
    q: &[Line],
    s: &[f16],
    mn: &[f16],
    xs: &[QuantRow],
    acc: &mut [[f32; G]],
) {
    debug_assert!(xs.len() == acc.len() && xs.len() <= R);
    // the K kinds have no AVX-512 kernel: AVX2's (the same bits) runs on AVX-512 CPUs too
    let level = match (level, kind) {
        (Level::Avx512Vnni, QKind::Q4K | QKind::Q6K) => Level::Avx2,
        _ => level,
    };
    #[cfg(target_arch = "x86_64")]
    match level {
        Level::Avx512Vnni => {
            macro_rules! by_rows {
                ($k:expr) => {
                    // SAFETY: `Level::at` checked the CPU features.
                    unsafe {
                        match xs.len() {
                            8 => group_dot_vnni::<8, { $k }>(q, s, mn, xs, acc),
                            7 => group_dot_vnni::<7, { $k }>(q, s, mn, xs, acc),
                            6 => group_dot_vnni::<6, { $k }>(q, s, mn, xs, acc),
                            5 => group_dot_vnni::<5, { $k }>(q, s, mn, xs, acc),
                            4 => group_dot_vnni::<4, { $k }>(q, s, mn, xs, acc),
                            3 => group_dot_vnni::<3, { $k }>(q, s, mn, xs, acc),
                            2 => group_dot_vnni::<2, { $k }>(q, s, mn, xs, acc),
                            _ => group_dot_vnni::<1, { $k }>(q, s, mn, xs, acc),
                        }
                    }
                };
            }
            match kind {
                QKind::Q8_0 => by_rows!(K_Q8_0),
                QKind::Q5_0 => by_rows!(K_Q5_0),
                QKind::Q4_1 => by_rows!(K_Q4_1),
                QKind::Q4K | QKind::Q6K => unreachable!("lowered to AVX2 above"),
            }
            return;
        }
        Level::Avx2 => {
            // 4 rows at a time: their accumulators and dot sums fill the 16 ymm registers
            for (xr, ar) in xs.chunks(4).zip(acc.chunks_mut(4)) {
                macro_rules! by_rows {
                    ($k:expr) => {
                        // SAFETY: `Level::at` checked the CPU features.
                        unsafe {
                            match xr.len() {
                                4 => group_dot_avx2::<4, { $k }>(q, s, mn, xr, ar),
                                3 => group_dot_avx2::<3, { $k }>(q, s, mn, xr, ar),
                                2 => group_dot_avx2::<2, { $k }>(q, s, mn, xr, ar),
                                _ => group_dot_avx2::<1, { $k }>(q, s, mn, xr, ar),
                            }
                        }
                    };
                }
                match kind {
                    QKind::Q8_0 => by_rows!(K_Q8_0),
                    QKind::Q5_0 => by_rows!(K_Q5_0),
                    QKind::Q4_1 => by_rows!(K_Q4_1),
                    QKind::Q4K => by_rows!(K_Q4K),
                    QKind::Q6K => by_rows!(K_Q6K),
                }
            }
            return;
        }
        Level::Portable => {}
    }
    let _ = level;
    for (x, acc) in xs.iter().zip(acc) {
        group_dot_portable(kind, q, s, mn, x, acc)
    }
}

/// [`QKind`] as a const generic parameter of the SIMD kernels (an index into [`QKind::ALL`]).
const K_Q8_0: u8 = 0;
const K_Q5_0: u8 = 1;
const K_Q4_1: u8 = 2;
const K_Q4K: u8 = 3;
const K_Q6K: u8 = 4;

/// The stored unsigned value `w + offset` at chunk `j`, byte `at` (= lane * 4 + i) of one
/// (group, block) tile: the layout `from_gguf` writes, read back one value at a time.
#[inline]
fn stored(kind: QKind, tile: &[Line], j: usize, at: usize) -> u8 {
    if kind.bytes() {
        return tile[j].0[at];
    }
    let nib = (tile[j % 4].0[at] >> (4 * (j / 4))) & 0x0f;
    if kind != QKind::Q5_0 {
        return nib;
    }
    let bit = j * 64 + at;
    nib | (((tile[4].0[bit / 8] >> (bit % 8)) & 1) << 4)
}

/// Row `lane`'s two integer multipliers in a K kind's tile ([`QKind::has_mul`]): Q4_K's `sc`
/// and `m`; Q6_K's two halves' `sc` (signed).
#[inline]
fn multipliers(kind: QKind, tile: &[Line], lane: usize) -> (i32, i32) {
    let last = &tile[kind.lines() - 1].0;
    let (a, b) = (last[lane], last[G + lane]);
    match kind {
        QKind::Q6K => (a as i8 as i32, b as i8 as i32),
        _ => (a as i32, b as i32),
    }
}

/// The reference form of every kernel: one value at a time, in the order they all keep.
fn group_dot_portable(
    kind: QKind,
    q: &[Line],
    s: &[f16],
    mn: &[f16],
    x: &QuantRow,
    acc: &mut [f32; G],
) {
    *acc = [0.0; G];
    let lines = kind.lines();
    let off = kind.offset();
    for (b, (tile, sc)) in q.chunks_exact(lines).zip(s.chunks_exact(G)).enumerate() {
        let xb = &x.q[b * 32..(b + 1) * 32];
        // each row's exact integer sums over the block's two halves of 16, offset removed
        let mut dot = [[0i32; 2]; G];
        for j in 0..8 {
            for (lane, d) in dot.iter_mut().enumerate() {
                for t in 0..4 {
                    let w = stored(kind, tile, j, lane * 4 + t) as i32 - off;
                    d[j / 4] += w * xb[j * 4 + t] as i32;
                }
            }
        }
        for lane in 0..G {
            let scale = sc[lane].to_f32() * x.d[b];
            let [lo, hi] = dot[lane];
            match kind {
                QKind::Q4K => {
                    // d sc sum(q x) + (-dmin) m sum(x): both integer parts exact in f32
                    let (k, m) = multipliers(kind, tile, lane);
                    acc[lane] = (((lo + hi) * k) as f32).mul_add(scale, acc[lane]);
                    let min = mn[b * G + lane].to_f32() * x.d[b];
                    acc[lane] = ((x.sum[b] * m) as f32).mul_add(min, acc[lane]);
                }
                QKind::Q6K => {
                    let (k0, k1) = multipliers(kind, tile, lane);
                    acc[lane] = ((lo * k0 + hi * k1) as f32).mul_add(scale, acc[lane]);
                }
                _ => {
                    acc[lane] = ((lo + hi) as f32).mul_add(scale, acc[lane]);
                    if kind.has_min() {
                        acc[lane] = mn[b * G + lane].to_f32().mul_add(x.s[b], acc[lane]);
                    }
                }
            }
        }
    }
}

/// AVX-512 VNNI: one `vpdpbusd` per chunk gives the 16 lanes' 4-product sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma,f16c")]
unsafe fn group_dot_vnni<const N: usize, const K: u8>(
    q: &[Line],
    s: &[f16],
    mn: &[f16],
    xs: &[QuantRow],
    acc: &mut [[f32; G]],
) {
    use std::arch::x86_64::*;
    let blocks = xs[0].d.len();
    let kind = QKind::ALL[K as usize];
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
        if K == K_Q8_0 {
            for j in 0..8 {
                chunk(&mut dot, _mm512_load_si512(tile.add(j)), j);
            }
        } else {
            let bits = tile.add(4) as *const u64;
            for j in 0..4 {
                let v = _mm512_load_si512(tile.add(j));
                let mut lo = _mm512_and_si512(v, low);
                let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                if K == K_Q5_0 {
                    let klo: __mmask64 = std::ptr::read_unaligned(bits.add(j));
                    let khi: __mmask64 = std::ptr::read_unaligned(bits.add(j + 4));
                    lo = _mm512_mask_blend_epi8(klo, lo, _mm512_or_si512(lo, fifth));
                    hi = _mm512_mask_blend_epi8(khi, hi, _mm512_or_si512(hi, fifth));
                }
                chunk(&mut dot, lo, j);
                chunk(&mut dot, hi, j + 4);
            }
        }
        let ws = _mm512_cvtph_ps(_mm256_loadu_si256(s.as_ptr().add(b * G) as *const __m256i));
        let ms = if K == K_Q4_1 {
            _mm512_cvtph_ps(_mm256_loadu_si256(mn.as_ptr().add(b * G) as *const __m256i))
        } else {
            _mm512_setzero_ps()
        };
        for i in 0..N {
            let x = &xs[i];
            let corr = _mm512_set1_epi32(off * *x.sum.get_unchecked(b));
            let d = _mm512_sub_epi32(dot[i], corr);
            let scale = _mm512_mul_ps(ws, _mm512_set1_ps(*x.d.get_unchecked(b)));
            a[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), scale, a[i]);
            if K == K_Q4_1 {
                a[i] = _mm512_fmadd_ps(ms, _mm512_set1_ps(*x.s.get_unchecked(b)), a[i]);
            }
        }
    }
    for i in 0..N {
        _mm512_storeu_ps(acc[i].as_mut_ptr(), a[i]);
    }
}

/// AVX2 (Haswell and later): each 64-byte chunk as two 32-byte halves of 8 lanes; `vpmaddubsw`
/// then `vpmaddwd` against ones gives each lane's 4-product sum, as `vpdpbusd` does. `vpmaddubsw`
/// saturates at 16 bits, so Q8_0 (u up to 255) multiplies `|w|` by `x` carrying `w`'s sign
/// (ggml's `mul_sum_i8_pairs`): at most 2 * 128 * 127, and the sum is then `sum(w x)` itself,
/// the same integer as `sum(u x) - 128 sum(x)` (Q6_K's bytes likewise). Q5_0, Q4_1 and Q4_K
/// (u < 32) multiply directly.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_dot_avx2<const N: usize, const K: u8>(
    q: &[Line],
    s: &[f16],
    mn: &[f16],
    xs: &[QuantRow],
    acc: &mut [[f32; G]],
) {
    use std::arch::x86_64::*;
    let blocks = xs[0].d.len();
    let kind = QKind::ALL[K as usize];
    let lines = kind.lines();
    debug_assert!(q.len() == blocks * lines && s.len() == blocks * G && xs.len() == N);
    // whole bytes (Q8_0, Q6_K) are summed signed; the nibble kinds subtract `offset * sum(x)`
    let bytes = K == K_Q8_0 || K == K_Q6K;
    let off = if bytes { 0 } else { kind.offset() };
    let qp = q.as_ptr() as *const u8;
    let xp: [*const i32; N] = std::array::from_fn(|i| xs[i].q.as_ptr() as *const i32);
    let low = _mm256_set1_epi8(0x0f);
    let fifth = _mm256_set1_epi8(0x10);
    let flip = _mm256_set1_epi8(-128);
    let ones = _mm256_set1_epi16(1);
    // fifth bits: byte b of the result is 0xff where bit b of the 32-bit mask is set
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    // the 8 lanes' exact integer sums of block b, half h (32 bytes of each of its lines); Q6_K
    // keeps the block's second 16 weights (chunks 4-7) apart, in the second array
    let dots = |b: usize, h: usize| -> ([__m256i; N], [__m256i; N]) {
        let tile = qp.add(b * lines * 64 + h * 32);
        let mut dot = [_mm256_setzero_si256(); N];
        let mut dot2 = [_mm256_setzero_si256(); N];
        for j in 0..8 {
            let dot = if K == K_Q6K && j >= 4 {
                &mut dot2
            } else {
                &mut dot
            };
            let w = if bytes {
                _mm256_load_si256(tile.add(j * 64) as *const __m256i)
            } else {
                let v = _mm256_load_si256(tile.add((j % 4) * 64) as *const __m256i);
                let mut nib = if j < 4 {
                    _mm256_and_si256(v, low)
                } else {
                    _mm256_and_si256(_mm256_srli_epi16::<4>(v), low)
                };
                if K == K_Q5_0 {
                    let m = std::ptr::read_unaligned(
                        tile.add(4 * 64 - h * 32 + j * 8 + h * 4) as *const i32
                    );
                    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(m), spread);
                    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, select), select);
                    nib = _mm256_or_si256(nib, _mm256_and_si256(set, fifth));
                }
                nib
            };
            if bytes {
                let ws = _mm256_xor_si256(w, flip);
                let aw = _mm256_abs_epi8(ws);
                for i in 0..N {
                    let xv = _mm256_set1_epi32(std::ptr::read_unaligned(xp[i].add(b * 8 + j)));
                    let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, ws));
                    dot[i] = _mm256_add_epi32(dot[i], _mm256_madd_epi16(p, ones));
                }
            } else {
                for i in 0..N {
                    let xv = _mm256_set1_epi32(std::ptr::read_unaligned(xp[i].add(b * 8 + j)));
                    let p = _mm256_maddubs_epi16(w, xv);
                    dot[i] = _mm256_add_epi32(dot[i], _mm256_madd_epi16(p, ones));
                }
            }
        }
        (dot, dot2)
    };
    // acc = fma(dot, d_w * d_x, acc) (Q4_1: then fma(m_w, s_x, acc)), block by block in order
    let fold =
        |a: &mut [__m256; N], (dot, dot2): ([__m256i; N], [__m256i; N]), b: usize, h: usize| {
            let at = b * G + h * 8;
            let ws = _mm256_cvtph_ps(_mm_loadu_si128(s.as_ptr().add(at) as *const __m128i));
            let ms = if K == K_Q4_1 || K == K_Q4K {
                _mm256_cvtph_ps(_mm_loadu_si128(mn.as_ptr().add(at) as *const __m128i))
            } else {
                _mm256_setzero_ps()
            };
            if K == K_Q4K || K == K_Q6K {
                // the tile's last line: the lanes' two multipliers at bytes h * 8 and 16 + h * 8
                let mul = qp.add(b * lines * 64 + (lines - 1) * 64 + h * 8);
                let m0 = _mm_loadl_epi64(mul as *const __m128i);
                let m1 = _mm_loadl_epi64(mul.add(G) as *const __m128i);
                for i in 0..N {
                    let dx = _mm256_set1_ps(*xs[i].d.get_unchecked(b));
                    if K == K_Q6K {
                        let k0 = _mm256_cvtepi8_epi32(m0);
                        let k1 = _mm256_cvtepi8_epi32(m1);
                        let d = _mm256_add_epi32(
                            _mm256_mullo_epi32(dot[i], k0),
                            _mm256_mullo_epi32(dot2[i], k1),
                        );
                        a[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(ws, dx), a[i]);
                    } else {
                        let k = _mm256_cvtepu8_epi32(m0);
                        let m = _mm256_cvtepu8_epi32(m1);
                        let d = _mm256_mullo_epi32(dot[i], k);
                        a[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(ws, dx), a[i]);
                        let sm =
                            _mm256_mullo_epi32(_mm256_set1_epi32(*xs[i].sum.get_unchecked(b)), m);
                        a[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sm), _mm256_mul_ps(ms, dx), a[i]);
                    }
                }
                return;
            }
            for i in 0..N {
                let x = &xs[i];
                let corr = _mm256_set1_epi32(off * *x.sum.get_unchecked(b));
                let d = _mm256_sub_epi32(dot[i], corr);
                let scale = _mm256_mul_ps(ws, _mm256_set1_ps(*x.d.get_unchecked(b)));
                a[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), scale, a[i]);
                if K == K_Q4_1 {
                    a[i] = _mm256_fmadd_ps(ms, _mm256_set1_ps(*x.s.get_unchecked(b)), a[i]);
                }
            }
        };
    // Ahead of block b's first read: the lines PF blocks on (the next group's when b is near
    // the end; a prefetch past the matrix is harmless). From memory the kernel waits on loads
    // otherwise: Gemma 3's 168 MB output projection streamed at 7 GB/s a core on Zen 3, against
    // 12 GB/s for a plain read.
    let prefetch = |b: usize| {
        for l in 0..lines {
            let p = qp.wrapping_add((b + PF) * lines * 64 + l * 64);
            _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
        }
    };
    if N <= 2 {
        // both halves of each block at once: every line is read once
        let mut a = [[_mm256_setzero_ps(); N]; 2];
        for b in 0..blocks {
            prefetch(b);
            for (h, a) in a.iter_mut().enumerate() {
                let dot = dots(b, h);
                fold(a, dot, b, h);
            }
        }
        for (h, a) in a.iter().enumerate() {
            for i in 0..N {
                _mm256_storeu_ps(acc[i].as_mut_ptr().add(h * 8), a[i]);
            }
        }
    } else {
        // 3-4 rows: their accumulators and dot sums fill the registers for one half at a time;
        // the second pass finds the group's lines in L1
        for h in 0..2 {
            let mut a = [_mm256_setzero_ps(); N];
            for b in 0..blocks {
                if h == 0 {
                    prefetch(b);
                }
                let dot = dots(b, h);
                fold(&mut a, dot, b, h);
            }
            for i in 0..N {
                _mm256_storeu_ps(acc[i].as_mut_ptr().add(h * 8), a[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::kernels::Isa;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random GGUF blocks of `kind` for `n x k` weights (Q8_0 includes -128, the value that
    /// would overflow a plain `vpmaddubsw`).
    fn random_blocks(kind: QKind, n: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let mut out = Vec::with_capacity(n * kind.row_bytes(k));
        if kind.has_mul() {
            // K super-blocks: random quants and integer scales, f16 `d` (and `dmin`) in range
            let d = |rng: &mut ChaCha8Rng| f16::from_f32(rng.random_range(0.0001f32..0.004));
            for _ in 0..n * k / 256 {
                let mut blk: Vec<u8> = (0..kind.block_bytes()).map(|_| rng.random()).collect();
                match kind {
                    QKind::Q4K => {
                        blk[0..2].copy_from_slice(&d(rng).to_le_bytes());
                        blk[2..4].copy_from_slice(&d(rng).to_le_bytes());
                    }
                    _ => blk[208..210].copy_from_slice(&d(rng).to_le_bytes()),
                }
                out.extend_from_slice(&blk);
            }
            return out;
        }
        for _ in 0..n * k / 32 {
            let d = f16::from_f32(rng.random_range(0.001f32..0.05));
            out.extend_from_slice(&d.to_le_bytes());
            if kind == QKind::Q4_1 {
                let m = f16::from_f32(rng.random_range(-0.4f32..0.1));
                out.extend_from_slice(&m.to_le_bytes());
            }
            while out.len() % kind.block_bytes() != 0 {
                out.push(match kind {
                    QKind::Q8_0 => rng.random_range(-128i32..=127) as i8 as u8,
                    _ => rng.random(),
                });
            }
        }
        out
    }

    /// One GGUF block as ggml's `dequantize_row_*` reads it, written from the format (not from
    /// `unpack`): `(d, m, q)` with `w = d * q + m`.
    fn gguf_block(kind: QKind, b: &[u8]) -> (f32, f32, [i32; 32]) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let mut q = [0i32; 32];
        match kind {
            QKind::Q8_0 => {
                for (o, &v) in q.iter_mut().zip(&b[2..34]) {
                    *o = v as i8 as i32;
                }
                (d, 0.0, q)
            }
            QKind::Q5_0 => {
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                for j in 0..16 {
                    let xh0 = ((qh >> j) << 4) & 0x10;
                    let xh1 = (qh >> (j + 12)) & 0x10;
                    q[j] = ((b[6 + j] as u32 & 0x0f) | xh0) as i32 - 16;
                    q[j + 16] = ((b[6 + j] as u32 >> 4) | xh1) as i32 - 16;
                }
                (d, 0.0, q)
            }
            QKind::Q4_1 => {
                let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
                for j in 0..16 {
                    q[j] = (b[4 + j] & 0x0f) as i32;
                    q[j + 16] = (b[4 + j] >> 4) as i32;
                }
                (d, m, q)
            }
            QKind::Q4K | QKind::Q6K => unreachable!("K super-blocks: k_block"),
        }
    }

    /// One K super-block as ggml's `dequantize_row_q4_K` / `dequantize_row_q6_K` read it
    /// (`ggml-quants.c`), written from the format (not from `unpack_k`): for each run of 16
    /// weights `(scale, min, q)` with `w = scale * q - min` (Q6_K: `q` already less 32, min 0).
    #[allow(clippy::needless_range_loop)] // ggml's loops, index for index
    fn k_block(kind: QKind, b: &[u8]) -> Vec<(f32, f32, [i32; 16])> {
        let mut out = vec![(0f32, 0f32, [0i32; 16]); 16];
        match kind {
            QKind::Q4K => {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let min = f16::from_le_bytes([b[2], b[3]]).to_f32();
                let (scales, mut qs) = (&b[4..16], &b[16..144]);
                let scale_min = |j: usize| -> (u8, u8) {
                    if j < 4 {
                        (scales[j] & 63, scales[j + 4] & 63)
                    } else {
                        (
                            (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4),
                            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
                        )
                    }
                };
                let mut is = 0;
                for j in (0..256).step_by(64) {
                    let (sc, m) = scale_min(is);
                    let (d1, m1) = (d * sc as f32, min * m as f32);
                    let (sc, m) = scale_min(is + 1);
                    let (d2, m2) = (d * sc as f32, min * m as f32);
                    for l in 0..32 {
                        let (a, c) = ((j + l) / 16, (j + 32 + l) / 16);
                        out[a].0 = d1;
                        out[a].1 = m1;
                        out[a].2[l % 16] = (qs[l] & 0xF) as i32;
                        out[c].0 = d2;
                        out[c].1 = m2;
                        out[c].2[l % 16] = (qs[l] >> 4) as i32;
                    }
                    qs = &qs[32..];
                    is += 2;
                }
            }
            QKind::Q6K => {
                let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
                let (mut ql, mut qh, mut sc) = (&b[..128], &b[128..192], &b[192..208]);
                for n in (0..256).step_by(128) {
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        for (i, q) in [q1, q2, q3, q4].into_iter().enumerate() {
                            let e = n + l + 32 * i;
                            out[e / 16] = (d * (sc[is + 2 * i] as i8) as f32, 0.0, out[e / 16].2);
                            out[e / 16].2[e % 16] = q;
                        }
                    }
                    ql = &ql[64..];
                    qh = &qh[32..];
                    sc = &sc[8..];
                }
            }
            _ => unreachable!(),
        }
        out
    }

    fn dequantize_gguf(kind: QKind, data: &[u8]) -> Vec<f32> {
        if kind.has_mul() {
            return data
                .chunks_exact(kind.block_bytes())
                .flat_map(|b| k_block(kind, b))
                .flat_map(|(scale, min, q)| q.map(|q| scale * q as f32 - min))
                .collect();
        }
        data.chunks_exact(kind.block_bytes())
            .flat_map(|b| {
                let (d, m, q) = gguf_block(kind, b);
                q.map(|q| {
                    if kind.has_min() {
                        d * q as f32 + m
                    } else {
                        d * q as f32
                    }
                })
            })
            .collect()
    }

    fn build(kind: QKind, parts: &[usize], k: usize, data: &[Vec<u8>]) -> QRows {
        let row = kind.row_bytes(k);
        QRows::from_gguf(kind, parts, k, |p, first, buf| {
            buf.copy_from_slice(&data[p][first * row..first * row + buf.len()]);
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn rows_dequantise_like_ggml() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // 1100 rows: two whole reads of READ_GROUPS groups and a short one ending in a short group
        for (kind, n) in QKind::ALL
            .into_iter()
            .flat_map(|kind| [(kind, 37), (kind, 1100)])
        {
            let k = if kind.has_mul() { 512 } else { 96 };
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

    /// The K kinds' rows against candle's own dequantisation of the same GGUF bytes (an
    /// implementation of the formats independent of this file's).
    #[test]
    fn k_rows_dequantise_like_candle() {
        use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        for (kind, dtype) in [(QKind::Q4K, GgmlDType::Q4K), (QKind::Q6K, GgmlDType::Q6K)] {
            let (n, k) = (40, 768);
            let data = random_blocks(kind, n, k, &mut rng);
            let m = build(kind, &[n], k, std::slice::from_ref(&data));
            let qt =
                qtensor_from_ggml(dtype, &data, vec![n, k], &candle_core::Device::Cpu).unwrap();
            let want: Vec<f32> = qt
                .dequantize(&candle_core::Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
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
        let (parts, m) = ([100usize, 37, 64], 11);
        for kind in QKind::ALL {
            let k = if kind.has_mul() { 768 } else { 640 };
            let data: Vec<Vec<u8>> = parts
                .iter()
                .map(|&n| random_blocks(kind, n, k, &mut rng))
                .collect();
            let w = build(kind, &parts, k, &data);
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-3f32..3.0)).collect();
            let xq = QuantInput::new(&x, k);
            let outs = w.matmul(&xq);
            let row_bytes = kind.row_bytes(k);
            for (p, (&n, out)) in parts.iter().zip(&outs).enumerate() {
                assert_eq!(out.len(), m * n);
                let wf = dequantize_gguf(kind, &data[p]);
                for a in 0..m {
                    // reference: ggml's block dot products (Q8_0 input, Q4_1's minimum times
                    // the input block's f16 `s`), summed in f64
                    let xr = &xq.rows[a];
                    for r in 0..n {
                        let (mut want, mut size) = (0f64, 0f64);
                        let row = &data[p][r * row_bytes..(r + 1) * row_bytes];
                        if kind.has_mul() {
                            // per 16 weights: d_x (scale sum(q x) - min sum(x))
                            let halves = row
                                .chunks_exact(kind.block_bytes())
                                .flat_map(|b| k_block(kind, b));
                            for (h, (scale, min, q)) in halves.enumerate() {
                                let xq = &xr.q[h * 16..h * 16 + 16];
                                let qx: i64 = (0..16).map(|i| q[i] as i64 * xq[i] as i64).sum();
                                let sx: i64 = xq.iter().map(|&v| v as i64).sum();
                                let dx = xr.d[h / 2] as f64;
                                let (t, u) =
                                    (dx * scale as f64 * qx as f64, -dx * min as f64 * sx as f64);
                                want += t + u;
                                size += t.abs() + u.abs();
                            }
                        }
                        for (b, blk) in row
                            .chunks_exact(kind.block_bytes())
                            .enumerate()
                            .filter(|_| !kind.has_mul())
                        {
                            let (d, mw, q) = gguf_block(kind, blk);
                            let isum: i64 =
                                (0..32).map(|i| q[i] as i64 * xr.q[b * 32 + i] as i64).sum();
                            let t = d as f64 * xr.d[b] as f64 * isum as f64;
                            let u = mw as f64 * xr.s[b] as f64;
                            want += t + u;
                            size += t.abs() + u.abs();
                        }
                        // f32 scales and accumulation: relative to the size of the terms
                        let got = out[a * n + r] as f64;
                        assert!(
                            (got - want).abs() <= 1e-6 * size.max(1e-6),
                            "{kind:?} part {p} row {a} out {r}: {got} vs {want}"
                        );
                    }
                    // and close to the unquantised input (Q8_0's error, and Q4_1's f16 `s`)
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

    /// Every level this CPU runs gives the portable path's bits, for every kind and every
    /// number of rows per call (the SIMD kernels are specialised on it).
    #[test]
    fn every_instruction_set_agrees_bit_for_bit() {
        let levels: Vec<Level> = Isa::available().into_iter().map(Level::at).collect();
        eprintln!("levels compared with the portable path: {levels:?}");
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 64;
        for kind in QKind::ALL {
            let k = if kind.has_mul() { 768 } else { 640 };
            let data = random_blocks(kind, n, k, &mut rng);
            let w = build(kind, &[n], k, std::slice::from_ref(&data));
            let x: Vec<f32> = (0..R * k).map(|_| rng.random_range(-10f32..10.0)).collect();
            let xq = QuantInput::new(&x, k);
            let (blocks, lines) = (k / 32, kind.lines());
            for g in 0..n / G {
                let q = &w.quants[g * blocks * lines..(g + 1) * blocks * lines];
                let s = &w.scales[g * blocks * G..(g + 1) * blocks * G];
                let mn = w
                    .mins
                    .get(g * blocks * G..(g + 1) * blocks * G)
                    .unwrap_or(&[]);
                let want: Vec<[f32; G]> = xq
                    .rows
                    .iter()
                    .map(|x| {
                        let mut b = [0f32; G];
                        group_dot_portable(kind, q, s, mn, x, &mut b);
                        b
                    })
                    .collect();
                for &level in &levels {
                    for rows in 1..=R {
                        let mut a = vec![[0f32; G]; rows];
                        group_dot(kind, level, q, s, mn, &xq.rows[..rows], &mut a);
                        for i in 0..rows {
                            assert_eq!(
                                a[i].map(f32::to_bits),
                                want[i].map(f32::to_bits),
                                "{kind:?} {level:?} group {g}, {rows} rows, row {i}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The input quantiser gives the same bits with SSE4.1's rounding as with `rintf`,
    /// ties included (a block whose maximum is 127 scales by exactly 1, so x.5 values tie).
    #[test]
    fn input_quantiser_agrees_across_levels() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut x: Vec<f32> = (0..64 * 32)
            .map(|_| rng.random_range(-10f32..10.0))
            .collect();
        for (i, v) in x[..32].iter_mut().enumerate() {
            *v = if i == 0 { 127.0 } else { i as f32 - 15.5 };
        }
        x[32..64].fill(0.0);
        let want = quantize_row_impl(&x);
        assert_eq!(want.q[2], -14, "-13.5 ties to even");
        assert_eq!(want.q[3], -12, "-12.5 ties to even");
        #[cfg(target_arch = "x86_64")]
        if Level::detected() != Level::Portable {
            let got = unsafe { quantize_row_avx2(&x) };
            assert_eq!(got.q, want.q);
            assert_eq!(got.sum, want.sum);
            assert_eq!(
                got.d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.d.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            assert_eq!(
                got.s.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.s.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
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
