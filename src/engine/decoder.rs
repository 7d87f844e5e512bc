//! declab's batched forward pass for the decoder-only families it loads from GGUF: Gemma 3
//! (`gemma3`) and Llama (`llama`, e.g. SmolLM2). One code path: the families differ only in
//! what [`Family`] names (embedding scale, q/k norms, post-norms, the MLP activation, RoPE
//! pairing, sliding-window layers), each read from the GGUF metadata and checked against
//! llama.cpp's graph for that architecture (`src/models/{gemma3,llama}.cpp`) and the model's
//! published config.
//!
//! It started as candle-transformers 0.11.1's `quantized_gemma3` (MIT OR Apache-2.0,
//! huggingface/candle), read as a suspect: that file applies SiLU in the MLP where Gemma 3 uses
//! GELU with the tanh approximation (`hidden_activation: gelu_pytorch_tanh` in the published
//! config; `LLM_FFN_GELU` in llama.cpp's gemma3 graph; candle issue 3745, fix proposed in PR
//! 3747), and applies no sliding window when decoding one token. `tests/reference_logits.rs`
//! checks this forward against llama.cpp's logits on committed fixtures, so a change of either
//! fails `make test`. What else differs from candle, and why (measurements in
//! `bench/perf-notes.md`):
//! * RoPE sin/cos rows are computed per forward pass for the positions it covers (candle: one
//!   131,072-position table per layer, 2.25 GiB).
//! * On CPU, the Q8_0, Q5_0, Q4_1, Q4_K and Q6_K projections (q|k|v, gate|up, attention
//!   output, down, the tied output projection) run on declab's own kernels (`qrows.rs`), which
//!   give the same bits with AVX-512 VNNI, AVX2 or neither: each matrix held once, at its width,
//!   the token embedding matrix shared by the lookup and the output projection (candle: a 640
//!   MiB f32 copy). Gemma 3's Q4_K/Q6_K attention-output and down projections ran on candle's
//!   kernels until declab had its own: candle repacked each on one thread inside its first
//!   matmul (about 50 ms of every load) and kept both copies.
//! * Other types run on candle's kernels, whose AVX-512 VNNI and AVX2 tiers also agree bit for
//!   bit (`tests/portability.rs`). A group of projections that mixes in such a type runs on
//!   candle whole, with Q5_0 re-blocked as Q8_0 at load, exactly (same f16 scale, quants
//!   shifted by -16), and Q8_0 weights whose width is not a multiple of 256 zero-padded to one,
//!   the widths candle's fast x86 kernels take.
//! * A preallocated KV cache per layer (written in place, grown by doubling) instead of a
//!   concatenation per step, and a batch dimension: `B` sequences at the same position decode
//!   in one pass, so each weight is read once per step for all of them.
//! * Single-token attention groups the query heads that share a KV head (no `repeat_kv` copy).
//!   A sliding-window layer attends to the current position and the `window - 1` before it,
//!   as llama.cpp's `is_masked_swa` (masked when `p1 - p0 >= n_swa`) and Hugging Face's
//!   sliding-window mask do.
//!
//! Batching never changes a row's logits: each row is quantised and reduced on its own, and
//! the one kernel whose result depends on the row count (candle's Q6_K takes a compact path for
//! a single row and a repacked one for several) is always run with at least two rows. Weights
//! kept in f32/f16 run row by row. `tests/batching.rs` and the real-model tests check this.

use std::sync::Arc;

use candle_core::quantized::{
    ggml_file::qtensor_from_ggml, gguf_file, GgmlDType, QMatMul, QTensor,
};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};

use super::dense::DenseRows;
use super::hf::{HfModel, LayerNames};
use super::qrows::{QKind, QRows, QuantInput};
use super::qrows_cache::{Cache, Writer};

const DEFAULT_SLIDING_WINDOW_TYPE: usize = 6;
const DEFAULT_ROPE_FREQUENCY: f32 = 1_000_000.;
const DEFAULT_ROPE_FREQUENCY_SLIDING: f32 = 10_000.;
/// llama.cpp's default `rope.freq_base` for the llama architecture.
const DEFAULT_ROPE_FREQUENCY_LLAMA: f32 = 10_000.;

/// Where the families differ, each choice as llama.cpp's graph for the architecture makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Gemma 3: embeddings scaled by sqrt(width), RMS-normed q and k, a norm after attention and
    /// after the MLP, GELU (tanh) MLP, NeoX RoPE (halves), sliding-window layers.
    Gemma3,
    /// Llama: plain pre-norm blocks, SiLU MLP, RoPE on interleaved pairs (llama.cpp's
    /// `LLAMA_ROPE_TYPE_NORM`; the GGUF converter permutes q/k for it).
    Llama,
}

impl Family {
    /// Every `general.architecture` declab loads, with its family: the one list (an
    /// architecture joins it only with a check against llama.cpp's logits on committed
    /// fixtures, `tests/reference_logits.rs`).
    pub const ALL: [(&'static str, Family); 2] =
        [("gemma3", Family::Gemma3), ("llama", Family::Llama)];

    /// The family of a GGUF's `general.architecture`.
    pub fn of(architecture: &str) -> Option<Family> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == architecture)
            .map(|&(_, f)| f)
    }
}
/// Positions a KV cache holds when first allocated, unless `reserve` asked for more.
const INITIAL_CACHE: usize = 256;

/// A projection `x W^T` over a quantised (or float) weight.
#[derive(Debug, Clone)]
struct Linear {
    qt: Arc<QTensor>,
    mm: QMatMul,
    /// The weight's input width; narrower inputs are zero-padded to it (see [`pad_q8_0`]).
    k_pad: usize,
}

impl Linear {
    fn new(qt: QTensor) -> Result<Self> {
        Self::from_arc(Arc::new(qt))
    }

    fn from_arc(qt: Arc<QTensor>) -> Result<Self> {
        Ok(Self {
            mm: QMatMul::from_arc(qt.clone())?,
            k_pad: qt.shape().dims2()?.1,
            qt,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = &pad_input(x, self.k_pad)?;
        let dims = x.dims().to_vec();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        match &self.mm {
            QMatMul::QTensor(_) if self.qt.dtype() == GgmlDType::Q6K && rows == 1 => {
                // Same kernel as for a batch: pad to two rows and keep the first.
                let x2 = Tensor::cat(&[x, x], 0)?;
                self.mm.forward(&x2)?.narrow(0, 0, 1)
            }
            QMatMul::QTensor(_) => self.mm.forward(x),
            // gemm's blocking depends on the row count: run rows one by one.
            _ if rows > 1 => {
                let k = dims[dims.len() - 1];
                let flat = x.reshape((rows, k))?;
                let outs = (0..rows)
                    .map(|r| self.mm.forward(&flat.narrow(0, r, 1)?))
                    .collect::<Result<Vec<_>>>()?;
                let out = Tensor::cat(&outs, 0)?;
                let mut od = dims.clone();
                *od.last_mut().unwrap() = out.dim(1)?;
                out.reshape(od)
            }
            _ => self.mm.forward(x),
        }
    }
}

/// Several projections of the same input: one fused call where candle has one for these
/// weights (same quantised type, AVX-512 VNNI), separate calls otherwise.
fn project(ws: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
    if ws.iter().any(|w| w.k_pad != ws[0].k_pad) {
        return ws.iter().map(|w| w.forward(x)).collect();
    }
    let x = pad_input(x, ws[0].k_pad)?.contiguous()?;
    let same = ws.iter().all(|w| w.qt.dtype() == ws[0].qt.dtype());
    if same && ws[0].qt.dtype() != GgmlDType::Q6K && matches!(ws[0].mm, QMatMul::QTensor(_)) {
        let qts: Vec<&QTensor> = ws.iter().map(|w| w.qt.as_ref()).collect();
        if let Some(outs) = QTensor::gemv_fused_shared_lhs(&qts, &x)? {
            return Ok(outs);
        }
    }
    // `x` already has the weights' width, so `forward` pads nothing
    ws.iter().map(|w| w.forward(&x)).collect()
}

/// Zero columns appended to `x`'s last dimension up to `k_pad` (no-op when 0 or equal).
fn pad_input(x: &Tensor, k_pad: usize) -> Result<Tensor> {
    let k = x.dim(candle_core::D::Minus1)?;
    if k_pad == 0 || k_pad == k {
        return Ok(x.clone());
    }
    let mut zd = x.dims().to_vec();
    *zd.last_mut().unwrap() = k_pad - k;
    Tensor::cat(
        &[x, &Tensor::zeros(zd, x.dtype(), x.device())?],
        candle_core::D::Minus1,
    )
}

/// Append zero Q8_0 blocks to each row of a Q8_0 weight so its width is a multiple of 256.
/// candle's repacked AVX-512 VNNI kernels need that width (Gemma 3 270M's is 640: without
/// padding every projection from the residual stream, the 262,144-row output included, took
/// the scalar-per-block path); the extra products are exact zeros.
fn pad_q8_0(qt: QTensor, device: &Device) -> Result<QTensor> {
    let (n, k) = qt.shape().dims2()?;
    if qt.dtype() != GgmlDType::Q8_0 || k % 256 == 0 || k % 32 != 0 {
        return Ok(qt);
    }
    let k_pad = k.div_ceil(256) * 256;
    let data = qt.data()?;
    let row = k / 32 * 34;
    let row_pad = k_pad / 32 * 34;
    let mut out = vec![0u8; n * row_pad];
    for (src, dst) in data.chunks_exact(row).zip(out.chunks_exact_mut(row_pad)) {
        dst[..row].copy_from_slice(src);
    }
    qtensor_from_ggml(GgmlDType::Q8_0, &out, vec![n, k_pad], device)
}

/// Re-block Q5_0 as Q8_0 without changing any weight's value.
fn q5_0_to_q8_0(qt: QTensor, device: &Device) -> Result<QTensor> {
    let dims = qt.shape().dims().to_vec();
    let data = qt.data()?;
    const Q5: usize = 22;
    const Q8: usize = 34;
    let nblocks = data.len() / Q5;
    let mut out = vec![0u8; nblocks * Q8];
    for (src, dst) in data.chunks_exact(Q5).zip(out.chunks_exact_mut(Q8)) {
        dst[..2].copy_from_slice(&src[..2]);
        let qh = u32::from_le_bytes([src[2], src[3], src[4], src[5]]);
        let qs = &src[6..22];
        for j in 0..16 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let x0 = ((qs[j] & 0x0f) | xh0) as i32 - 16;
            let x1 = ((qs[j] >> 4) | xh1) as i32 - 16;
            dst[2 + j] = x0 as i8 as u8;
            dst[2 + j + 16] = x1 as i8 as u8;
        }
    }
    qtensor_from_ggml(GgmlDType::Q8_0, &out, dims, device)
}

/// RMS normalisation over the last dimension as ggml computes it (`ggml_compute_forward_rms_norm_f32`):
/// squares summed in f64, `scale = 1 / sqrtf(mean + eps)` in f32, then `x * scale * w`. The
/// same operations in the same order matter for what follows: a result one ulp away can flip a
/// value of the next projection's 8-bit input quantisation, and those flips compound through
/// the layers (see [`super::qrows`]'s quantiser). For Gemma the GGUF's weights already hold
/// the `1 + w` of Hugging Face's Gemma norm.
#[derive(Debug, Clone)]
struct RmsNorm {
    w: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    fn from_qtensor(w: QTensor, eps: f64) -> Result<Self> {
        let w = w
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self { w, eps: eps as f32 })
    }

    fn from_vec(w: Vec<f32>, eps: f64) -> Self {
        Self { w, eps: eps as f32 }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.w.len();
        if x.dim(candle_core::D::Minus1)? != n {
            candle_core::bail!("norm of width {n} on {:?}", x.shape());
        }
        let xs = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let norm = |row: &[f32]| -> Vec<f32> {
            let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
            let mean = (sum / n as f64) as f32;
            let scale = 1.0f32 / (mean + self.eps).sqrt();
            row.iter()
                .zip(&self.w)
                .map(|(&v, &w)| v * scale * w)
                .collect()
        };
        let rows = xs.len() / n;
        // a batch's rows on the pool (each row alone, so the same values either way)
        let out: Vec<f32> = if rows >= 4 {
            crate::pool::map(rows, |r| norm(&xs[r * n..(r + 1) * n])).concat()
        } else {
            xs.chunks_exact(n).flat_map(norm).collect()
        };
        Tensor::from_vec(out, x.shape(), x.device())
    }
}

/// RoPE frequencies; the sin/cos rows are computed per forward pass for the positions it covers
/// (no tables sized to the context: for Gemma 3's 32,768 positions those were 67 MB and 0.2 s
/// of every load). Same values as a table: `sin((p as f32) * theta)`.
#[derive(Debug, Clone)]
struct Rope {
    theta: Vec<f32>,
}

impl Rope {
    fn new(head_dim: usize, freq: f32) -> Self {
        let theta = (0..head_dim)
            .step_by(2)
            .map(|i| 1f32 / freq.powf(i as f32 / head_dim as f32))
            .collect();
        Self { theta }
    }

    /// `(cos, sin)` for positions `pos..pos + seq`, each `(seq, head_dim / 2)`.
    fn at(&self, pos: usize, seq: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let idx: Vec<f32> = (pos..pos + seq)
            .flat_map(|p| self.theta.iter().map(move |t| p as f32 * t))
            .collect();
        let idx = Tensor::from_vec(idx, (seq, self.theta.len()), device)?;
        Ok((idx.cos()?, idx.sin()?))
    }

    /// `(cos, sin)` for one token per row, row `r` at `positions[r]`: `(rows, 1, head_dim / 2)`
    /// (each row's values are those [`Rope::at`] gives for its position).
    fn rows(&self, positions: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let idx: Vec<f32> = positions
            .iter()
            .flat_map(|&p| self.theta.iter().map(move |t| p as f32 * t))
            .collect();
        let idx = Tensor::from_vec(idx, (positions.len(), 1, self.theta.len()), device)?;
        Ok((idx.cos()?, idx.sin()?))
    }
}

fn apply_rope(x: &Tensor, (cos, sin): &(Tensor, Tensor), interleaved: bool) -> Result<Tensor> {
    if interleaved {
        candle_nn::rotary_emb::rope_i(&x.contiguous()?, cos, sin)
    } else {
        candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)
    }
}

#[derive(Debug)]
struct Layer {
    /// q, k, v
    qkv: Proj,
    wo: Proj,
    /// Gemma 3 only (as are the post-norms).
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    attention_norm: RmsNorm,
    post_attention_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    post_ffn_norm: Option<RmsNorm>,
    /// gate, up
    gate_up: Proj,
    down: Proj,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    sliding_window: Option<usize>,
    global_rope: bool,
    /// The attention logits' scale: `1 / sqrt(head_dim)`, or Gemma's
    /// `query_pre_attn_scalar^-1/2` where a Hugging Face config gives one.
    attn_scale: f64,
}

#[derive(Debug)]
/// The token embedding matrix (for the lookup).
enum Embeddings {
    /// Q8_0 or Q5_0, held once in declab's layout and shared with the tied output projection.
    Own(Arc<QRows>),
    /// Anything else, through candle (zero-padded Q8_0 included; cut back on lookup).
    Candle(QMatMul),
    /// f32 rows (a Hugging Face checkpoint), shared with a tied output projection.
    Dense(Arc<DenseRows>),
}

impl Embeddings {
    /// `(batch, seq)` ids to `(batch, seq, width)` rows.
    fn lookup(&self, x: &Tensor, width: usize) -> Result<Tensor> {
        match self {
            Embeddings::Candle(mm) => mm.embedding(x)?.narrow(2, 0, width),
            Embeddings::Dense(rows) => lookup(x, width, rows.rows(), rows.cols(), |id, o| {
                o.copy_from_slice(rows.row(id))
            }),
            Embeddings::Own(rows) => lookup(x, width, rows.rows(), rows.cols(), |id, o| {
                rows.dequantize_row(id, o)
            }),
        }
    }
}

/// `(batch, seq)` ids to `(batch, seq, width)` rows of a `vocab` x `k` matrix, each row written
/// by `row(id, out)`; an id outside the vocabulary is an error.
fn lookup(
    x: &Tensor,
    width: usize,
    vocab: usize,
    k: usize,
    row: impl Fn(usize, &mut [f32]),
) -> Result<Tensor> {
    let (b, seq) = x.dims2()?;
    let ids = x.flatten_all()?.to_vec1::<u32>()?;
    let mut out = vec![0f32; ids.len() * k];
    for (&id, o) in ids.iter().zip(out.chunks_exact_mut(k)) {
        let id = id as usize;
        if id >= vocab {
            candle_core::bail!("token id {id} is outside the vocabulary of {vocab}");
        }
        row(id, o);
    }
    Tensor::from_vec(out, (b, seq, k), x.device())?.narrow(2, 0, width)
}

/// The output projection to the vocabulary.
#[derive(Debug)]
enum Output {
    Own(Arc<QRows>),
    Candle(Linear),
    Dense(Arc<DenseRows>),
}

impl Output {
    fn vocab(&self) -> usize {
        match self {
            Output::Own(rows) => rows.rows(),
            Output::Candle(l) => l.qt.shape().dims()[0],
            Output::Dense(rows) => rows.rows(),
        }
    }

    /// `(batch, width)` to `batch` rows of logits.
    fn logits(&self, x: &Tensor) -> Result<Vec<f32>> {
        match self {
            Output::Candle(l) => l.forward(x)?.flatten_all()?.to_dtype(DType::F32)?.to_vec1(),
            Output::Own(rows) => Ok(rows.matmul(&quantise(x, rows.cols())?).swap_remove(0)),
            Output::Dense(rows) => Ok(rows.matmul(&floats(x, rows.cols())?).swap_remove(0)),
        }
    }
}

/// Projections of one input (q|k|v, gate|up; or a single one): declab's kernels when every
/// weight is Q8_0, Q5_0 or Q4_1 (consecutive weights of the same type stacked into one matrix),
/// candle otherwise.
#[derive(Debug)]
enum Proj {
    Own(Vec<QRows>),
    Candle(Vec<Linear>),
    /// f32 weights (a Hugging Face checkpoint), stacked.
    Dense(DenseRows),
}

impl Proj {
    /// The output of a single projection.
    fn forward_one(&self, x: &Tensor) -> Result<Tensor> {
        let mut outs = self.forward(x)?;
        if outs.len() != 1 {
            candle_core::bail!("{} outputs where one was expected", outs.len());
        }
        Ok(outs.swap_remove(0))
    }

    /// One output per weight, `x`'s shape with the last dimension replaced.
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Proj::Candle(ws) => project(&ws.iter().collect::<Vec<_>>(), x),
            Proj::Dense(m) => {
                let dims = x.dims().to_vec();
                m.matmul(&floats(x, m.cols())?)
                    .into_iter()
                    .zip(m.parts())
                    .map(|(out, &n)| {
                        let mut od = dims.clone();
                        *od.last_mut().unwrap() = n;
                        Tensor::from_vec(out, od, x.device())
                    })
                    .collect()
            }
            Proj::Own(mats) => {
                let dims = x.dims().to_vec();
                let xq = quantise(x, mats[0].cols())?;
                let mut outs = Vec::new();
                for m in mats {
                    for (out, &n) in m.matmul(&xq).into_iter().zip(m.parts()) {
                        let mut od = dims.clone();
                        *od.last_mut().unwrap() = n;
                        outs.push(Tensor::from_vec(out, od, x.device())?);
                    }
                }
                Ok(outs)
            }
        }
    }
}

/// `x`'s rows (its last dimension, which must be `k` wide) quantised for declab's kernels.
fn quantise(x: &Tensor, k: usize) -> Result<QuantInput> {
    let width = x.dim(candle_core::D::Minus1)?;
    if width != k {
        candle_core::bail!("projection input is {width} wide, the weights {k}");
    }
    let xs = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(QuantInput::new(&xs, k))
}

/// `x`'s rows (its last dimension, which must be `k` wide) as f32, row-major.
fn floats(x: &Tensor, k: usize) -> Result<Vec<f32>> {
    let width = x.dim(candle_core::D::Minus1)?;
    if width != k {
        candle_core::bail!("projection input is {width} wide, the weights {k}");
    }
    x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// The packed-weight cache of the GGUF being loaded ([`super::qrows_cache`]): read from when
/// one exists for the file as it is, written while packing when none does.
pub(crate) enum PackCache {
    /// Neither read nor written (a GPU load, asked off, or no cache can be written here).
    Off,
    Read(Cache),
    Write(Writer),
}

impl PackCache {
    /// The cache of `gguf`: the one beside it when it is current, else a writer for one.
    pub(crate) fn beside(gguf: &std::path::Path) -> Self {
        match Cache::open(gguf) {
            Some(c) => PackCache::Read(c),
            None => Writer::create(gguf).map_or(PackCache::Off, PackCache::Write),
        }
    }

    /// Renames a cache written during this load into place.
    fn finish(self) {
        if let PackCache::Write(w) = self {
            w.finish();
        }
    }
}

/// A tensor's bytes in the mapped GGUF `data`, bounds checked.
fn tensor_bytes<'a, 'c>(
    ct: &'c gguf_file::Content,
    data: &'a [u8],
    name: &str,
) -> Result<(&'a [u8], &'c gguf_file::TensorInfo)> {
    let Some(info) = ct.tensor_infos.get(name) else {
        candle_core::bail!("cannot find tensor info for {name}")
    };
    let elems = info.shape.elem_count();
    let block = info.ggml_dtype.block_size();
    if !elems.is_multiple_of(block) {
        candle_core::bail!("{name}: {elems} elements are not a multiple of the block size {block}");
    }
    let size = elems / block * info.ggml_dtype.type_size();
    let start = (ct.tensor_data_offset as usize).saturating_add(info.offset as usize);
    match data.get(start..start.saturating_add(size)) {
        Some(bytes) => Ok((bytes, info)),
        None => candle_core::bail!(
            "tensor {name} needs {size} bytes at offset {start}, only {} remaining in file",
            data.len().saturating_sub(start)
        ),
    }
}

/// Weights read from the GGUF straight into [`QRows`] (CPU only), consecutive ones of the same
/// type stacked, or mapped from the cache where it holds them; `None` unless every one is a 2-D
/// Q8_0, Q5_0 or Q4_1 matrix of the same width. On every CPU: the kernels give the same bits
/// with AVX-512 VNNI, AVX2 or none.
fn own_rows(
    ct: &gguf_file::Content,
    data: &[u8],
    names: &[&str],
    device: &Device,
    cache: &mut PackCache,
) -> Result<Option<Vec<QRows>>> {
    if !device.is_cpu() {
        return Ok(None);
    }
    let mut infos = Vec::with_capacity(names.len());
    for name in names {
        let Some(info) = ct.tensor_infos.get(*name) else {
            candle_core::bail!("cannot find tensor info for {name}")
        };
        let kind = match info.ggml_dtype {
            GgmlDType::Q8_0 => QKind::Q8_0,
            GgmlDType::Q5_0 => QKind::Q5_0,
            GgmlDType::Q4_1 => QKind::Q4_1,
            GgmlDType::Q4K => QKind::Q4K,
            GgmlDType::Q6K => QKind::Q6K,
            _ => return Ok(None),
        };
        let dims = info.shape.dims();
        if dims.len() != 2 || dims[1] % kind.block_weights() != 0 {
            return Ok(None);
        }
        infos.push((*name, kind, dims[0], dims[1]));
    }
    if infos.iter().any(|i| i.3 != infos[0].3) {
        return Ok(None);
    }
    let mut mats = Vec::new();
    for run in infos.chunk_by(|a, b| a.1 == b.1) {
        let (kind, k) = (run[0].1, run[0].3);
        let parts: Vec<usize> = run.iter().map(|i| i.2).collect();
        let key = run.iter().map(|i| i.0).collect::<Vec<_>>().join("+");
        if let PackCache::Read(c) = cache {
            if let Some(rows) = c.get(&key, kind, k, &parts) {
                mats.push(rows);
                continue;
            }
        }
        let mut sources = Vec::with_capacity(run.len());
        for i in run {
            sources.push(tensor_bytes(ct, data, i.0)?.0);
        }
        let row = kind.row_bytes(k);
        let rows = QRows::from_gguf(kind, &parts, k, |p, first, buf| {
            buf.copy_from_slice(&sources[p][first * row..first * row + buf.len()]);
            Ok(())
        })
        .map_err(|e| candle_core::Error::Msg(format!("reading {}: {e}", run[0].0)))?;
        if let PackCache::Write(w) = cache {
            w.add(&key, &rows);
        }
        mats.push(rows);
    }
    Ok(Some(mats))
}

#[derive(Debug)]
struct Weights {
    family: Family,
    tok_embeddings: Embeddings,
    embedding_length: usize,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Output,
    /// Positions the model was trained for; a forward beyond them is refused.
    context_length: usize,
    rope_global: Rope,
    rope_sliding: Rope,
    /// RoPE on interleaved pairs (a Llama GGUF, whose q/k the converter permuted for it) or on
    /// halves (Gemma; a Llama Hugging Face checkpoint, `rotate_half`).
    rope_interleaved: bool,
}

/// One layer's keys and values for `batch` sequences: `(batch, n_kv_head, capacity, head_dim)`
/// buffers written in place; positions `0..len` are filled.
#[derive(Debug)]
struct KvCache {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl KvCache {
    fn capacity(&self) -> usize {
        self.k.dim(2).unwrap_or(0)
    }

    fn with_capacity(src: &KvCache, batch: usize, capacity: usize) -> Result<KvCache> {
        let (_b, h, _c, d) = src.k.dims4()?;
        let k = Tensor::zeros((batch, h, capacity, d), src.k.dtype(), src.k.device())?;
        let v = Tensor::zeros((batch, h, capacity, d), src.v.dtype(), src.v.device())?;
        if src.len > 0 {
            let (sk, sv) = (src.k.narrow(2, 0, src.len)?, src.v.narrow(2, 0, src.len)?);
            let reps = batch / src.k.dim(0)?;
            let (sk, sv) = if reps > 1 {
                (sk.repeat((reps, 1, 1, 1))?, sv.repeat((reps, 1, 1, 1))?)
            } else {
                (sk.contiguous()?, sv.contiguous()?)
            };
            k.slice_set(&sk, 2, 0)?;
            v.slice_set(&sv, 2, 0)?;
        }
        Ok(KvCache { k, v, len: src.len })
    }

    fn append(&mut self, k: &Tensor, v: &Tensor, reserve: usize) -> Result<()> {
        let (b, _h, s, _d) = k.dims4()?;
        if self.len + s > self.capacity() || self.k.dim(0)? != b {
            let cap = (self.len + s).max(reserve).max(2 * self.capacity());
            let cap = cap.max(INITIAL_CACHE);
            *self = if self.len == 0 {
                let shape = (b, k.dim(1)?, cap, k.dim(3)?);
                KvCache {
                    k: Tensor::zeros(shape, k.dtype(), k.device())?,
                    v: Tensor::zeros(shape, v.dtype(), v.device())?,
                    len: 0,
                }
            } else {
                KvCache::with_capacity(self, b, cap)?
            };
        }
        self.k.slice_set(&k.contiguous()?, 2, self.len)?;
        self.v.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += s;
        Ok(())
    }

    fn deep_copy(&self) -> Result<KvCache> {
        Ok(KvCache {
            k: self.k.copy()?,
            v: self.v.copy()?,
            len: self.len,
        })
    }
}

/// Gemma 3 weights (shared) plus one batch of sequences' KV caches.
pub struct ModelWeights {
    w: Arc<Weights>,
    caches: Vec<Option<KvCache>>,
    /// Positions to allocate for when a cache is created or grown.
    reserve: usize,
}

impl ModelWeights {
    /// The model of a GGUF whose header is `ct` and whole contents `data` (the file, mapped);
    /// the packed matrices come from, or go to, `cache`.
    pub fn from_gguf(
        ct: gguf_file::Content,
        data: &[u8],
        device: &Device,
        mut cache: PackCache,
    ) -> Result<Self> {
        let arch = match ct.metadata.get("general.architecture") {
            Some(v) => v.to_string()?.clone(),
            None => candle_core::bail!("cannot find general.architecture in metadata"),
        };
        let Some(family) = Family::of(&arch) else {
            candle_core::bail!("architecture `{arch}` has no forward pass in declab")
        };
        let prefix = arch.as_str();
        let md_get = |s: &str| {
            let key = format!("{prefix}.{s}");
            match ct.metadata.get(&key) {
                None => candle_core::bail!("cannot find {key} in metadata"),
                Some(v) => Ok(v),
            }
        };
        let head_count = md_get("attention.head_count")?.to_u32()? as usize;
        let head_count_kv = match md_get("attention.head_count_kv") {
            Ok(v) => v.to_u32()? as usize,
            Err(_) if family == Family::Llama => head_count,
            Err(e) => return Err(e),
        };
        let block_count = md_get("block_count")?.to_u32()? as usize;
        let embedding_length = md_get("embedding_length")?.to_u32()? as usize;
        if head_count == 0 || !embedding_length.is_multiple_of(head_count) {
            candle_core::bail!(
                "embedding_length {embedding_length} is not a multiple of head_count {head_count}"
            );
        }
        let key_length = match md_get("attention.key_length") {
            Ok(v) => v.to_u32()? as usize,
            Err(_) if family == Family::Llama => embedding_length / head_count,
            Err(e) => return Err(e),
        };
        let rms_norm_eps = md_get("attention.layer_norm_rms_epsilon")?.to_f32()? as f64;
        let context_length = md_get("context_length")?.to_u32()? as usize;
        if head_count_kv == 0 || !head_count.is_multiple_of(head_count_kv) {
            candle_core::bail!(
                "head_count {head_count} is not a multiple of head_count_kv {head_count_kv}"
            );
        }
        // (sliding window, every how many layers one is global, global and sliding RoPE bases)
        let (sliding_window_size, sliding_window_type, rope_freq_base, rope_freq_base_sliding) =
            match family {
                Family::Gemma3 => {
                    let base = md_get("rope.freq_base")
                        .and_then(|m| m.to_f32())
                        .unwrap_or(DEFAULT_ROPE_FREQUENCY);
                    (
                        Some(md_get("attention.sliding_window")?.to_u32()? as usize),
                        md_get("attention.sliding_window_type")
                            .and_then(|m| Ok(m.to_u32()? as usize))
                            .unwrap_or(DEFAULT_SLIDING_WINDOW_TYPE),
                        base,
                        md_get("rope.local_freq_base")
                            .and_then(|m| m.to_f32())
                            .unwrap_or(DEFAULT_ROPE_FREQUENCY_SLIDING),
                    )
                }
                Family::Llama => {
                    // Llama 3.x files carry RoPE frequency factors (`rope_freqs.weight`) or a
                    // scaling type; this forward implements plain RoPE only.
                    let scaled = ct.tensor_infos.contains_key("rope_freqs.weight")
                        || md_get("rope.scaling.type")
                            .and_then(|v| Ok(v.to_string()?.clone()))
                            .is_ok_and(|t| t != "none");
                    if scaled {
                        candle_core::bail!("RoPE scaling (rope_freqs.weight or rope.scaling.type) is not implemented for llama models");
                    }
                    if md_get("rope.dimension_count")
                        .is_ok_and(|v| v.to_u32().is_ok_and(|d| d as usize != key_length))
                    {
                        candle_core::bail!("partial RoPE (rope.dimension_count != head width) is not implemented for llama models");
                    }
                    let base = md_get("rope.freq_base")
                        .and_then(|m| m.to_f32())
                        .unwrap_or(DEFAULT_ROPE_FREQUENCY_LLAMA);
                    (None, 1, base, base)
                }
            };
        if sliding_window_type == 0 {
            candle_core::bail!("{prefix}.attention.sliding_window_type is 0");
        }

        let tensor = |name: &str| -> Result<QTensor> {
            let (bytes, info) = tensor_bytes(&ct, data, name)?;
            // copied out of the mapping
            let t = candle_core::quantized::ggml_file::qtensor_from_ggml(
                info.ggml_dtype,
                bytes,
                info.shape.dims().to_vec(),
                device,
            )?;
            if !device.is_cpu() {
                return Ok(t);
            }
            let t = if t.dtype() == GgmlDType::Q5_0 {
                q5_0_to_q8_0(t, device)?
            } else {
                t
            };
            if t.rank() == 2 {
                pad_q8_0(t, device)
            } else {
                Ok(t)
            }
        };
        let norm = |t: QTensor| RmsNorm::from_qtensor(t, rms_norm_eps);

        let (tok_embeddings, tied) =
            match own_rows(&ct, data, &["token_embd.weight"], device, &mut cache)? {
                Some(mut rows) => {
                    let rows = Arc::new(rows.swap_remove(0));
                    (Embeddings::Own(rows.clone()), Output::Own(rows))
                }
                None => {
                    let embd = Arc::new(tensor("token_embd.weight")?);
                    (
                        Embeddings::Candle(QMatMul::from_arc(embd.clone())?),
                        Output::Candle(Linear::from_arc(embd)?),
                    )
                }
            };
        let output = if ct.tensor_infos.contains_key("output.weight") {
            match own_rows(&ct, data, &["output.weight"], device, &mut cache)? {
                Some(mut rows) => Output::Own(Arc::new(rows.swap_remove(0))),
                None => Output::Candle(Linear::new(tensor("output.weight")?)?),
            }
        } else {
            tied
        };
        let final_norm = norm(tensor("output_norm.weight")?)?;

        let mut layers = Vec::with_capacity(block_count);
        for i in 0..block_count {
            let p = format!("blk.{i}");
            let mut proj = |names: &[&str]| -> Result<Proj> {
                let names: Vec<String> = names.iter().map(|n| format!("{p}.{n}.weight")).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                Ok(match own_rows(&ct, data, &names, device, &mut cache)? {
                    Some(mats) => Proj::Own(mats),
                    None => Proj::Candle(
                        names
                            .iter()
                            .map(|n| Linear::new(tensor(n)?))
                            .collect::<Result<_>>()?,
                    ),
                })
            };
            let qkv = proj(&["attn_q", "attn_k", "attn_v"])?;
            let gate_up = proj(&["ffn_gate", "ffn_up"])?;
            let wo = proj(&["attn_output"])?;
            let down = proj(&["ffn_down"])?;
            let t = |n: &str| tensor(&format!("{p}.{n}.weight"));
            // Gemma 3: every `sliding_window_type`-th layer is global (llama.cpp's
            // `set_swa_pattern`); the others attend within the window.
            let is_sliding = sliding_window_size.is_some() && (i + 1) % sliding_window_type > 0;
            let gemma = family == Family::Gemma3;
            let opt_norm = |n: &str| -> Result<Option<RmsNorm>> {
                if gemma {
                    Ok(Some(norm(t(n)?)?))
                } else {
                    Ok(None)
                }
            };
            let q_norm = opt_norm("attn_q_norm")?;
            let k_norm = opt_norm("attn_k_norm")?;
            let post_attention_norm = opt_norm("post_attention_norm")?;
            let post_ffn_norm = opt_norm("post_ffw_norm")?;
            layers.push(Layer {
                qkv,
                gate_up,
                wo,
                q_norm,
                k_norm,
                attention_norm: norm(t("attn_norm")?)?,
                post_attention_norm,
                ffn_norm: norm(t("ffn_norm")?)?,
                post_ffn_norm,
                down,
                n_head: head_count,
                n_kv_head: head_count_kv,
                head_dim: key_length,
                sliding_window: if is_sliding {
                    sliding_window_size
                } else {
                    None
                },
                global_rope: !is_sliding,
                attn_scale: 1.0 / (key_length as f64).sqrt(),
            });
        }
        let w = Weights {
            family,
            tok_embeddings,
            embedding_length,
            layers,
            norm: final_norm,
            output,
            context_length,
            rope_global: Rope::new(key_length, rope_freq_base),
            rope_sliding: Rope::new(key_length, rope_freq_base_sliding),
            rope_interleaved: family == Family::Llama,
        };
        cache.finish();
        Ok(Self {
            caches: (0..block_count).map(|_| None).collect(),
            w: Arc::new(w),
            reserve: 0,
        })
    }

    /// A Hugging Face checkpoint ([`HfModel`], already checked), its weights held in f32: on
    /// CPU on declab's dense kernel (batch-invariant, [`DenseRows`]), elsewhere through candle
    /// row by row. Only the conventions differ from a GGUF (see `hf.rs`): Gemma's norms get
    /// their `1 +`, Llama's RoPE pairs halves.
    pub fn from_hf(m: &HfModel, device: &Device) -> Result<Self> {
        let c = &m.config;
        let read = |name: &str| -> Result<Vec<f32>> {
            m.read(name)
                .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
        };
        let gemma = c.family == Family::Gemma3;
        let norm = |name: &str| -> Result<RmsNorm> {
            let mut w = read(name)?;
            if gemma {
                w.iter_mut().for_each(|v| *v += 1.0);
            }
            Ok(RmsNorm::from_vec(w, c.eps))
        };
        // (stacked weights, width, rows of each part)
        let dense = |names: &[&String], k: usize| -> Result<Proj> {
            let mut all = Vec::new();
            let mut parts = Vec::new();
            for n in names {
                let w = read(n)?;
                parts.push(w.len() / k);
                all.extend(w);
            }
            if device.is_cpu() {
                return Ok(Proj::Dense(DenseRows::new(all, k, parts)));
            }
            let mut ws = Vec::new();
            let mut start = 0;
            for &rows in &parts {
                let t = Tensor::from_slice(&all[start * k..(start + rows) * k], (rows, k), device)?;
                ws.push(Linear::new(QTensor::quantize(&t, GgmlDType::F32)?)?);
                start += rows;
            }
            Ok(Proj::Candle(ws))
        };
        let matrix = |name: &str| -> Result<Arc<DenseRows>> {
            let w = read(name)?;
            let rows = w.len() / c.hidden;
            Ok(Arc::new(DenseRows::new(w, c.hidden, vec![rows])))
        };
        let (tok_embeddings, tied) = {
            if device.is_cpu() {
                let rows = matrix("model.embed_tokens.weight")?;
                (Embeddings::Dense(rows.clone()), Output::Dense(rows))
            } else {
                let w = read("model.embed_tokens.weight")?;
                let t = Tensor::from_vec(w, (c.vocab, c.hidden), device)?;
                let qt = Arc::new(QTensor::quantize(&t, GgmlDType::F32)?);
                (
                    Embeddings::Candle(QMatMul::from_arc(qt.clone())?),
                    Output::Candle(Linear::from_arc(qt)?),
                )
            }
        };
        let output = if c.tied {
            tied
        } else if device.is_cpu() {
            Output::Dense(matrix("lm_head.weight")?)
        } else {
            match dense(&[&"lm_head.weight".to_string()], c.hidden)? {
                Proj::Candle(mut ws) => Output::Candle(ws.swap_remove(0)),
                _ => unreachable!("non-CPU projections run on candle"),
            }
        };
        let mut layers = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let n = LayerNames::new(c.family, i);
            let q_width = c.heads * c.head_dim;
            let g = n.gemma.as_ref();
            let opt = |name: Option<&String>| name.map(|n| norm(n)).transpose();
            let sliding = c.sliding[i];
            layers.push(Layer {
                qkv: dense(&[&n.q, &n.k, &n.v], c.hidden)?,
                wo: dense(&[&n.o], q_width)?,
                q_norm: opt(g.map(|g| &g.q_norm))?,
                k_norm: opt(g.map(|g| &g.k_norm))?,
                attention_norm: norm(&n.attn_norm)?,
                post_attention_norm: opt(g.map(|g| &g.post_attn_norm))?,
                ffn_norm: norm(&n.ffn_norm)?,
                post_ffn_norm: opt(g.map(|g| &g.post_ffn_norm))?,
                gate_up: dense(&[&n.gate, &n.up], c.hidden)?,
                down: dense(&[&n.down], c.intermediate)?,
                n_head: c.heads,
                n_kv_head: c.kv_heads,
                head_dim: c.head_dim,
                sliding_window: if sliding { c.sliding_window } else { None },
                global_rope: !sliding,
                attn_scale: c.attn_scale,
            });
        }
        let w = Weights {
            family: c.family,
            tok_embeddings,
            embedding_length: c.hidden,
            layers,
            norm: norm("model.norm.weight")?,
            output,
            context_length: c.context_length,
            rope_global: Rope::new(c.head_dim, c.rope_theta),
            rope_sliding: Rope::new(c.head_dim, c.rope_local),
            rope_interleaved: false,
        };
        Ok(Self {
            caches: (0..c.layers).map(|_| None).collect(),
            w: Arc::new(w),
            reserve: 0,
        })
    }

    /// An independent copy of this state (weights shared, caches copied).
    pub fn fork(&self) -> Result<Self> {
        Ok(Self {
            w: self.w.clone(),
            caches: self
                .caches
                .iter()
                .map(|c| c.as_ref().map(|c| c.deep_copy()).transpose())
                .collect::<Result<_>>()?,
            reserve: self.reserve,
        })
    }

    /// A state holding `n` copies of this single sequence, room for `positions` positions.
    pub fn replicate(&self, n: usize, positions: usize) -> Result<Self> {
        let caches = self
            .caches
            .iter()
            .map(|c| match c {
                Some(c) => {
                    if c.k.dim(0)? != 1 {
                        candle_core::bail!("replicate needs a single-sequence state");
                    }
                    let cap = positions.max(c.len);
                    Ok(Some(KvCache::with_capacity(c, n, cap)?))
                }
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            w: self.w.clone(),
            caches,
            reserve: positions,
        })
    }

    /// Keep only the sequences at `rows` (in that order).
    pub fn retain(&mut self, rows: &[usize]) -> Result<()> {
        for c in self.caches.iter_mut().flatten() {
            let dev = c.k.device().clone();
            let idx = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect(), rows.len(), &dev)?;
            c.k = c.k.index_select(&idx, 0)?;
            c.v = c.v.index_select(&idx, 0)?;
        }
        Ok(())
    }

    /// `x`: `(batch, seq_len)` token ids at positions `index_pos..`; returns the last
    /// position's logits, `batch` rows of the vocabulary, row-major (straight from declab's
    /// kernel when the output projection is its own: no tensor round trip, no copy).
    pub fn forward(&mut self, x: &Tensor, index_pos: usize) -> Result<Vec<f32>> {
        let (b_sz, seq_len) = x.dims2()?;
        let w = self.w.clone();
        check_context(&w, index_pos + seq_len)?;
        let mut segs = [Segment {
            caches: &mut self.caches,
            rows: b_sz,
            pos: index_pos,
            reserve: self.reserve,
        }];
        run(&w, x, &mut segs)
    }

    /// One token for each row of several states (segments) at once, each segment at its own
    /// position: `states[s] = (state, its rows)`, `tokens` holds every row of segment 0, then of
    /// segment 1, ..., and
    /// `positions[s]` is the position of segment s's token. The projections run on all the rows
    /// together (one read of each weight serves every segment); attention runs per segment on
    /// its own caches, as it would alone. Returns the logits, row after row.
    pub fn forward_segments(
        states: &mut [(&mut ModelWeights, usize)],
        tokens: &[u32],
        positions: &[usize],
        device: &Device,
    ) -> Result<Vec<f32>> {
        let Some(first) = states.first() else {
            candle_core::bail!("no segments");
        };
        let w = first.0.w.clone();
        if states.len() != positions.len() {
            candle_core::bail!(
                "{} positions for {} segments",
                positions.len(),
                states.len()
            );
        }
        let mut segs = Vec::with_capacity(states.len());
        for ((st, rows), &pos) in states.iter_mut().zip(positions) {
            if !Arc::ptr_eq(&st.w, &w) {
                candle_core::bail!("segments of one forward must share their weights");
            }
            check_context(&w, pos + 1)?;
            let rows = *rows;
            segs.push(Segment {
                caches: &mut st.caches,
                rows,
                pos,
                reserve: st.reserve,
            });
        }
        let total: usize = segs.iter().map(|s| s.rows).sum();
        if tokens.len() != total {
            candle_core::bail!("{} tokens for {total} rows", tokens.len());
        }
        let x = Tensor::new(tokens, device)?.unsqueeze(1)?;
        run(&w, &x, &mut segs)
    }
}

fn check_context(w: &Weights, end: usize) -> Result<()> {
    if end > w.context_length {
        candle_core::bail!(
            "positions up to {end} exceed the model's context length {}",
            w.context_length
        );
    }
    Ok(())
}

/// Rows of one batch state inside a forward: its layers' caches, its row count and position.
struct Segment<'a> {
    caches: &'a mut [Option<KvCache>],
    rows: usize,
    pos: usize,
    reserve: usize,
}

/// The forward pass over `x` (`(rows, seq_len)`, the segments' rows in order; `seq_len` > 1
/// only with one segment).
fn run(w: &Weights, x: &Tensor, segs: &mut [Segment]) -> Result<Vec<f32>> {
    let (b_sz, seq_len) = x.dims2()?;
    debug_assert_eq!(segs.iter().map(|s| s.rows).sum::<usize>(), b_sz);
    if seq_len > 1 && segs.len() > 1 {
        candle_core::bail!("a prompt of several tokens runs as a segment of its own");
    }
    // rows of the (possibly zero-padded) embedding matrix, cut to the model width
    let mut h = w.tok_embeddings.lookup(x, w.embedding_length)?;
    if w.family == Family::Gemma3 {
        h = (h * (w.embedding_length as f64).sqrt())?;
    }
    // one segment: (seq_len, head_dim / 2) rotations; several: one row of them per row
    let ropes = if let [s] = segs {
        (
            w.rope_global.at(s.pos, seq_len, x.device())?,
            w.rope_sliding.at(s.pos, seq_len, x.device())?,
        )
    } else {
        let at: Vec<usize> = segs
            .iter()
            .flat_map(|s| std::iter::repeat_n(s.pos, s.rows))
            .collect();
        (
            w.rope_global.rows(&at, x.device())?,
            w.rope_sliding.rows(&at, x.device())?,
        )
    };
    let ropes = Ropes {
        global: &ropes.0,
        sliding: &ropes.1,
        interleaved: w.rope_interleaved,
    };
    for (li, layer) in w.layers.iter().enumerate() {
        let residual = &h;
        let x = layer.attention_norm.forward(&h)?;
        let qkv = layer.qkv.forward(&x)?;
        let out = if let [s] = segs {
            attention(layer, &mut s.caches[li], &qkv, s.pos, &ropes, s.reserve)?
        } else {
            // norms and rotations on every row at once (each row at its segment's position),
            // then each segment's rows attend over its own cache
            let (q, k, v) = heads(layer, &qkv, &ropes)?;
            let mut parts = Vec::with_capacity(segs.len());
            let mut first = 0;
            for s in segs.iter_mut() {
                let (q, k, v) = (
                    q.narrow(0, first, s.rows)?,
                    k.narrow(0, first, s.rows)?,
                    v.narrow(0, first, s.rows)?,
                );
                parts.push(attend(
                    layer,
                    &mut s.caches[li],
                    &q,
                    &k,
                    &v,
                    s.pos,
                    s.reserve,
                )?);
                first += s.rows;
            }
            Tensor::cat(&parts, 0)?
        };
        let x = layer.wo.forward_one(&out)?;
        let x = maybe_norm(&layer.post_attention_norm, x)?;
        let x = (x + residual)?;
        let residual = &x;
        let y = layer.ffn_norm.forward(&x)?;
        let gu = layer.gate_up.forward(&y)?;
        let y = match w.family {
            Family::Gemma3 => geglu(&gu[0], &gu[1])?,
            Family::Llama => (candle_nn::ops::silu(&gu[0])? * &gu[1])?,
        };
        let y = layer.down.forward_one(&y)?;
        let y = maybe_norm(&layer.post_ffn_norm, y)?;
        h = (y + residual)?;
    }
    let x = h.i((.., seq_len - 1, ..))?.contiguous()?;
    let x = w.norm.forward(&x)?;
    let out = w.output.logits(&x)?;
    debug_assert_eq!(out.len(), b_sz * w.output.vocab());
    Ok(out)
}

/// Gemma 3's MLP: `gelu(gate) * up`, GELU with the tanh approximation, `0.5 x (1 + tanh(sqrt(2/pi)
/// (x + 0.044715 x^3)))` (Hugging Face's `gelu_pytorch_tanh`, llama.cpp's `LLM_FFN_GELU`),
/// computed as ggml's CPU backend does (`ggml_vec_geglu_f32` under `GGML_GELU_FP16`): the gate
/// rounded to f16 and looked up in a table of f16 GELU values, 0 at or below -10, the identity
/// at or above 10. The table's rounding (up to 2^-11 relative) is what llama.cpp computes; with
/// the exact function instead, this one step took the hidden state 3e-4 away from llama.cpp's.
fn geglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let x = half::f16::from_bits(bits).to_f32();
                let g = 0.5 * x * (1.0 + (0.797_884_6_f32 * x * (1.0 + 0.044715 * x * x)).tanh());
                half::f16::from_f32(g).to_f32()
            })
            .collect()
    });
    let gs = gate.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let us = up.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let out: Vec<f32> = gs
        .iter()
        .zip(&us)
        .map(|(&x, &u)| {
            if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x * u
            } else {
                table[half::f16::from_f32(x).to_bits() as usize] * u
            }
        })
        .collect();
    Tensor::from_vec(out, gate.shape(), gate.device())
}

fn maybe_norm(norm: &Option<RmsNorm>, x: Tensor) -> Result<Tensor> {
    match norm {
        Some(n) => n.forward(&x),
        None => Ok(x),
    }
}

/// The RoPE rows of one forward pass and how the family pairs dimensions.
struct Ropes<'a> {
    global: &'a (Tensor, Tensor),
    sliding: &'a (Tensor, Tensor),
    interleaved: bool,
}

/// Attention of one segment's rows: `qkv` their projected queries, keys and values
/// (`(rows, seq, width)` each); returns the heads' output, before the output projection.
fn attention(
    l: &Layer,
    cache: &mut Option<KvCache>,
    qkv: &[Tensor],
    pos: usize,
    ropes: &Ropes,
    reserve: usize,
) -> Result<Tensor> {
    let (q, k, v) = heads(l, qkv, ropes)?;
    attend(l, cache, &q, &k, &v, pos, reserve)
}

/// `qkv`'s rows as heads, `(rows, heads, seq, head_dim)`: queries and keys normed (Gemma 3)
/// and rotated, values as they are.
fn heads(l: &Layer, qkv: &[Tensor], ropes: &Ropes) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, seq, _) = qkv[0].dims3()?;
    let q = qkv[0]
        .reshape((b, seq, l.n_head, l.head_dim))?
        .transpose(1, 2)?;
    let k = qkv[1]
        .reshape((b, seq, l.n_kv_head, l.head_dim))?
        .transpose(1, 2)?;
    let v = qkv[2]
        .reshape((b, seq, l.n_kv_head, l.head_dim))?
        .transpose(1, 2)?;
    let q = maybe_norm(&l.q_norm, q.contiguous()?)?;
    let k = maybe_norm(&l.k_norm, k.contiguous()?)?;
    let rope = if l.global_rope {
        ropes.global
    } else {
        ropes.sliding
    };
    let q = apply_rope(&q, rope, ropes.interleaved)?;
    let k = apply_rope(&k, rope, ropes.interleaved)?;
    Ok((q, k, v))
}

/// One segment's attention on its cache: `q`, `k`, `v` its rows' heads at positions
/// `pos..pos + seq`; returns the heads' output `(rows, seq, heads * head_dim)`.
fn attend(
    l: &Layer,
    cache: &mut Option<KvCache>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pos: usize,
    reserve: usize,
) -> Result<Tensor> {
    let (b, _, seq, _) = q.dims4()?;
    let device = q.device();
    let c = cache.get_or_insert_with(|| KvCache {
        k: Tensor::zeros((0, 0, 0, 0), DType::F32, device).expect("empty tensor"),
        v: Tensor::zeros((0, 0, 0, 0), DType::F32, device).expect("empty tensor"),
        len: 0,
    });
    // Writing at `pos` rewinds a longer cache; a gap is an error.
    if c.len > pos {
        c.len = pos;
    } else if c.len < pos {
        candle_core::bail!("position {pos} but the KV cache holds {} positions", c.len);
    }
    c.append(k, v, reserve)?;
    let total = c.len;
    let scale = l.attn_scale;
    let n_rep = l.n_head / l.n_kv_head;

    let out = if seq == 1 {
        // The window holds the current position and the `window - 1` before it.
        let start = match l.sliding_window {
            Some(wsz) if total > wsz => total - wsz,
            _ => 0,
        };
        let k = c.k.narrow(2, start, total - start)?;
        let v = c.v.narrow(2, start, total - start)?;
        // (b, kv, n_rep, d): the query heads that share a KV head, as rows of one matmul.
        let q = q.reshape((b, l.n_kv_head, n_rep, l.head_dim))?;
        let att = (q.matmul(&k.t()?)? * scale)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        // v as the cache holds it (rows of `d`, batches strided by the capacity): no copy
        att.matmul(&v)?.reshape((b, 1, l.n_head * l.head_dim))?
    } else {
        let k = c.k.narrow(2, 0, total)?.contiguous()?;
        let v = c.v.narrow(2, 0, total)?.contiguous()?;
        let k = candle_transformers::utils::repeat_kv(k, n_rep)?;
        let v = candle_transformers::utils::repeat_kv(v, n_rep)?;
        let att = (q.matmul(&k.t()?)? * scale)?;
        let mask = causal_mask(seq, pos, l.sliding_window, device)?;
        let att = att.broadcast_add(&mask)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        att.matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, seq, l.n_head * l.head_dim))?
    };
    Ok(out)
}

/// Additive mask for `seq` new positions after `pos` cached ones: 0 where query i (at
/// position pos+i) may attend key j, -inf elsewhere (future, or outside the sliding window:
/// `qi - j >= window`, llama.cpp's `is_masked_swa`).
fn causal_mask(seq: usize, pos: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let total = pos + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| {
            let qi = pos + i;
            (0..total).map(move |j| {
                let future = j > qi;
                let outside = window.is_some_and(|wsz| j + wsz <= qi);
                if future || outside {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (seq, total), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The architectures declab loads are exactly those with a reference check
    /// (`tests/reference_logits.rs`); the ones it once listed without a check are refused.
    #[test]
    fn only_checked_architectures_have_a_family() {
        assert_eq!(Family::of("gemma3"), Some(Family::Gemma3));
        assert_eq!(Family::of("llama"), Some(Family::Llama));
        for unchecked in ["qwen3", "phi3", "gemma2", "gemma", ""] {
            assert_eq!(Family::of(unchecked), None, "{unchecked}");
        }
    }
}
