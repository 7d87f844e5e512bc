//! The model side: a small trait over candle models (prefill, then one token per step with the
//! KV cache; logits of the last position as f32), GGUF loading by `general.architecture`, and
//! the tokenizer. Untrusted files are checked here: not-a-GGUF, missing metadata, an
//! unsupported architecture, a tokenizer that does not fit the model's vocabulary.

pub mod bpe;
pub mod chat;
mod decoder;
pub mod dense;
pub mod gguf_header;
pub mod gguf_tokenizer;
pub mod hf;
pub mod offsets;
pub mod qrows;
mod qrows_cache;
pub mod tiny;
pub mod tokenizer;

use std::path::Path;
use std::time::Instant;

use self::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use crate::config::{ModelSpec, Weights};

/// A causal language model with a KV cache.
pub trait LanguageModel: Send {
    /// Feed `tokens` at positions `pos..pos+len` and return the logits for the last one.
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>>;
    /// An independent copy, KV cache included (weights are shared, not copied).
    fn fork(&self) -> Box<dyn LanguageModel>;
    /// `n` copies of this sequence that decode together, one token per row per step, with
    /// room for `positions` positions in all. A row's logits do not depend on the batch.
    fn batch(&self, n: usize, positions: usize) -> Result<Box<dyn BatchDecoder>> {
        batch_of(&[(self.as_dyn(), n)], positions)
    }
    /// This model as a trait object (for [`batch_of`]).
    fn as_dyn(&self) -> &dyn LanguageModel;
    /// For [`batch_of`]: the concrete model behind the trait object.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Several prefilled sequences decoded together: `parts[i] = (sequence, n)` puts `n` copies
/// of sequence i in the batch, its rows after those of the parts before it, each part at its
/// own position (ragged batching: the prompts of a grid can share one batch, and so each
/// weight read). `positions`: room for that many positions per row. A row's logits do not
/// depend on the batch or on the other parts.
pub fn batch_of(
    parts: &[(&dyn LanguageModel, usize)],
    positions: usize,
) -> Result<Box<dyn BatchDecoder>> {
    let decoders: Option<Vec<&Decoder>> = parts
        .iter()
        .map(|(m, _)| m.as_any().downcast_ref::<Decoder>())
        .collect();
    if let Some(ds) = decoders.filter(|ds| !ds.is_empty()) {
        let segs = ds
            .iter()
            .zip(parts)
            .map(|(d, &(_, n))| Ok((d.inner.replicate(n, positions)?, n)))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Box::new(DecoderBatch {
            segs,
            device: ds[0].device.clone(),
        }));
    }
    Ok(Box::new(RowByRow {
        rows: parts
            .iter()
            .flat_map(|&(m, n)| (0..n).map(move |_| m.fork()))
            .collect(),
    }))
}

/// [`batch_of`] for rows given one by one: `row_parts[r]` is the index into `models` of the
/// prefilled sequence row `r` copies (the rows of a part consecutive, parts in order).
pub fn batch_of_rows(
    models: &[&dyn LanguageModel],
    row_parts: impl IntoIterator<Item = usize>,
    positions: usize,
) -> Result<Box<dyn BatchDecoder>> {
    let mut spec: Vec<(usize, usize)> = Vec::new();
    for p in row_parts {
        match spec.last_mut() {
            Some((last, n)) if *last == p => *n += 1,
            _ => spec.push((p, 1)),
        }
    }
    let spec: Vec<(&dyn LanguageModel, usize)> =
        spec.iter().map(|&(p, n)| (models[p], n)).collect();
    batch_of(&spec, positions)
}

/// Sequences decoded together, one token per row per step.
pub trait BatchDecoder: Send {
    fn rows(&self) -> usize;
    /// One token per row, row `r` at position `positions[r]`; the logits, row after row.
    /// Rows of one part of [`batch_of`] share a position.
    fn step_rows(&mut self, tokens: &[u32], positions: &[usize]) -> Result<Vec<f32>>;
    /// One token per row, every row at position `pos`.
    fn step(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        self.step_rows(tokens, &vec![pos; tokens.len()])
    }
    /// Keep only `rows` (indices into the current rows, in that order; the rows of a part of
    /// [`batch_of`] stay together, and the parts in their order).
    fn retain(&mut self, rows: &[usize]) -> Result<()>;
}

/// The batch of a model without a batched forward: one forward per row.
struct RowByRow {
    rows: Vec<Box<dyn LanguageModel>>,
}

impl BatchDecoder for RowByRow {
    fn rows(&self) -> usize {
        self.rows.len()
    }

    fn step_rows(&mut self, tokens: &[u32], positions: &[usize]) -> Result<Vec<f32>> {
        if tokens.len() != self.rows.len() || positions.len() != tokens.len() {
            bail!("{} tokens for a batch of {}", tokens.len(), self.rows.len());
        }
        let mut out = Vec::new();
        for ((m, &t), &pos) in self.rows.iter_mut().zip(tokens).zip(positions) {
            out.extend(m.forward(&[t], pos)?);
        }
        Ok(out)
    }

    fn retain(&mut self, rows: &[usize]) -> Result<()> {
        let mut old: Vec<Option<Box<dyn LanguageModel>>> = std::mem::take(&mut self.rows)
            .into_iter()
            .map(Some)
            .collect();
        self.rows = rows
            .iter()
            .map(|&r| old[r].take().ok_or_else(|| anyhow!("row {r} kept twice")))
            .collect::<Result<_>>()?;
        Ok(())
    }
}

/// declab's own forward (Gemma 3, Llama): batched natively.
struct Decoder {
    inner: decoder::ModelWeights,
    device: Device,
}

impl LanguageModel for Decoder {
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        let x = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        Ok(self.inner.forward(&x, pos)?)
    }

    fn fork(&self) -> Box<dyn LanguageModel> {
        Box::new(Decoder {
            inner: self.inner.fork().expect("copying a KV cache in memory"),
            device: self.device.clone(),
        })
    }

    fn as_dyn(&self) -> &dyn LanguageModel {
        self
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Parts of [`batch_of`] on declab's forward: each part a batch state of its own (its caches,
/// its position), all stepped in one forward ([`decoder::ModelWeights::forward_segments`]).
struct DecoderBatch {
    /// (state, rows) per part still in the batch
    segs: Vec<(decoder::ModelWeights, usize)>,
    device: Device,
}

impl BatchDecoder for DecoderBatch {
    fn rows(&self) -> usize {
        self.segs.iter().map(|s| s.1).sum()
    }

    fn step_rows(&mut self, tokens: &[u32], positions: &[usize]) -> Result<Vec<f32>> {
        let rows = self.rows();
        if tokens.len() != rows || positions.len() != rows {
            bail!("{} tokens for a batch of {rows}", tokens.len());
        }
        let mut pos = Vec::with_capacity(self.segs.len());
        let mut first = 0;
        for (_, n) in &self.segs {
            let p = positions[first];
            if positions[first..first + n].iter().any(|&q| q != p) {
                bail!("the rows of one part of a batch step at one position");
            }
            pos.push(p);
            first += n;
        }
        let mut states: Vec<(&mut decoder::ModelWeights, usize)> =
            self.segs.iter_mut().map(|(s, n)| (s, *n)).collect();
        Ok(decoder::ModelWeights::forward_segments(
            &mut states,
            tokens,
            &pos,
            &self.device,
        )?)
    }

    fn retain(&mut self, rows: &[usize]) -> Result<()> {
        // each kept row as (part, row within the part)
        let mut starts = Vec::with_capacity(self.segs.len());
        let mut total = 0;
        for (_, n) in &self.segs {
            starts.push(total);
            total += n;
        }
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for &r in rows {
            if r >= total {
                bail!("row {r} is not in a batch of {total}");
            }
            let part = starts.partition_point(|&s| s <= r) - 1;
            match groups.last_mut() {
                Some((p, mine)) if *p == part => mine.push(r - starts[part]),
                Some((p, _)) if *p > part => {
                    bail!("kept rows must keep the parts of the batch together and in order")
                }
                _ => groups.push((part, vec![r - starts[part]])),
            }
        }
        let mut old: Vec<Option<(decoder::ModelWeights, usize)>> = std::mem::take(&mut self.segs)
            .into_iter()
            .map(Some)
            .collect();
        for (part, mine) in groups {
            let (mut state, n) = old[part].take().expect("each part once");
            if mine.len() != n || mine.iter().enumerate().any(|(i, &r)| i != r) {
                state.retain(&mine)?;
            }
            self.segs.push((state, mine.len()));
        }
        Ok(())
    }
}

/// A loaded model with everything the runner needs.
pub struct LoadedModel {
    pub model: Box<dyn LanguageModel>,
    pub tokenizer: Tokenizer,
    pub architecture: String,
    pub vocab_size: usize,
    pub context_length: usize,
    /// Token ids that end a generation.
    pub eos_ids: Vec<u32>,
    /// The chat template every prompt is rendered with (`chat: true`).
    pub chat: Option<chat::ChatTemplate>,
    pub weights_sha256: String,
    pub tokenizer_sha256: String,
    pub load_ms: f64,
}

impl LoadedModel {
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    /// A prompt's token ids, and the rendered conversation for a chat model
    /// ([`chat::model_input`]).
    pub fn encode_prompt(
        &self,
        prompt: &crate::config::Prompt,
    ) -> Result<(Vec<u32>, Option<String>)> {
        let (text, special) = chat::model_input(self.chat.as_ref(), prompt)
            .with_context(|| format!("rendering prompt {:?}", prompt.id))?;
        let ids = self.encode_with(&text, special)?;
        Ok((ids, self.chat.is_some().then_some(text)))
    }

    fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let ids = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow!("tokenizing the prompt failed: {e}"))?;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            bail!(
                "the tokenizer produced token id {bad}, outside the model's vocabulary of {}",
                self.vocab_size
            );
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        decode(&self.tokenizer, ids)
    }
}

/// Text of `ids`, special tokens skipped (what [`LoadedModel::decode`] gives; for callers that
/// hold only the tokenizer).
pub fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String> {
    tokenizer
        .decode(ids, true)
        .map_err(|e| anyhow!("decoding tokens failed: {e}"))
}

/// The class of arithmetic a run's samples come from. Within a class every host computes the
/// same bits (`tests/portability.rs` runs the real models under emulated CPUs and compares);
/// across classes they may differ, so resume and merge refuse to mix them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numerics {
    /// An x86-64 CPU with AVX2, FMA and F16C (Haswell, 2013, and later; every AVX-512 CPU):
    /// declab's kernels at AVX2 or AVX-512 VNNI, candle's quantised kernels at their AVX2,
    /// AVX-VNNI or AVX-512 VNNI tier, gemm with FMA. All give the same bits.
    CpuAvx2,
    /// Any other CPU: the binary runs, but candle's and gemm's fallbacks (no FMA) round
    /// differently (on the tiny test model, 1 sample in 30 differed from the AVX2 class).
    CpuBaseline,
    /// A CUDA GPU.
    Cuda,
}

impl Numerics {
    /// This host's class (`DECLAB_SIMD` lowers the kernels, not the class: the lowered kernels
    /// give the same bits).
    pub fn of(cuda: bool) -> Numerics {
        use crate::strategy::kernels::Isa;
        if cuda {
            Numerics::Cuda
        } else if qrows::Level::at(Isa::cpu()) != qrows::Level::Portable {
            Numerics::CpuAvx2
        } else {
            Numerics::CpuBaseline
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Numerics::CpuAvx2 => "cpu-avx2",
            Numerics::CpuBaseline => "cpu-baseline",
            Numerics::Cuda => "cuda",
        }
    }
}

/// The kernel tiers this process runs with, in words, for the manifest: declab's projections
/// and samplers ([`qrows::Level`], [`crate::strategy::kernels::Isa`], both lowered by
/// `DECLAB_SIMD`) and candle's quantised matmuls (its `repack_x86::level`, which is private:
/// the same rule, read from the same variables, is repeated here).
pub fn kernels(cuda: bool) -> String {
    use crate::strategy::kernels::Isa;
    if cuda {
        return "cuda".into();
    }
    #[cfg(target_arch = "x86_64")]
    let candle = {
        let force = |v: &str| std::env::var(v).as_deref() == Ok("1");
        if !force("MISTRALRS_FORCE_AVX2")
            && !force("MISTRALRS_FORCE_AVXVNNI")
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            "avx512-vnni"
        } else if !force("MISTRALRS_FORCE_AVX2")
            && (force("MISTRALRS_FORCE_AVXVNNI") || std::arch::is_x86_feature_detected!("avxvnni"))
            && std::arch::is_x86_feature_detected!("avx2")
        {
            "avx-vnni"
        } else if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            "avx2"
        } else {
            "generic"
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let candle = "generic";
    format!(
        "projections {}, samplers {}, candle {candle}",
        qrows::Level::detected().name(),
        Isa::detected().name()
    )
}

pub fn device(cuda: bool) -> Result<Device> {
    if cuda {
        Device::new_cuda(0)
            .context("no CUDA device (build with --features cuda and run on a machine with a GPU)")
    } else {
        Ok(Device::Cpu)
    }
}

/// Hands the heap pages freed while loading back to the system. Parsing the tokenizer and the
/// GGUF header frees millions of small strings; glibc keeps those pages resident (only the top
/// of the heap is trimmed by `free`), which showed as ~40-60 MB of peak RSS in a run.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::config::hex(&h.finalize()))
}

/// [`sha256_file`], remembered in a `<file>.sha256` stamp beside the file together with the
/// file's size, modification time, inode and status-change time, and recomputed whenever one of
/// them differs (a 253 MB model takes 0.25 s to hash, a quarter of a load). A file replaced by
/// another (a new inode) or rewritten with its modification time set back (the status-change
/// time, which no user can set, moves) is hashed again. Where the stamp cannot be written (a
/// read-only folder) the hash is simply computed each time.
pub fn sha256_cached(path: &Path) -> Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
    let Some(key) = file_stamp(&meta) else {
        return sha256_file(path);
    };
    let stamp = beside(path, ".sha256");
    if let Ok(text) = std::fs::read_to_string(&stamp) {
        if let Some((hash, rest)) = text.trim_end().split_once(' ') {
            if rest == key && hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(hash.to_string());
            }
        }
    }
    let hash = sha256_file(path)?;
    write_beside(&stamp, format!("{hash} {key}\n").as_bytes());
    Ok(hash)
}

/// `path` with `suffix` appended to its file name (`tokenizer.json` -> `tokenizer.json.sha256`).
pub(crate) fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    std::path::PathBuf::from(p)
}

/// Writes a cache file beside a model file (a `.sha256` stamp, a tokenizer's tables) whole: a
/// temporary file of its own ([`temp_beside`]), then renamed, so a reader never sees half of it
/// and two writers never share a temporary. Failures are harmless (the next load computes
/// again), so they are not reported.
pub(crate) fn write_beside(target: &Path, bytes: &[u8]) {
    let tmp = temp_beside(target);
    if std::fs::write(&tmp, bytes).is_err() || std::fs::rename(&tmp, target).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// A temporary name beside `target`, named by this process and a counter: two processes, or two
/// threads of one process (tests loading the same model), never write the same temporary.
/// Temporaries of `target` that a killed process left behind are removed first
/// ([`sweep_stale_temps`]).
pub(crate) fn temp_beside(target: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    sweep_stale_temps(target);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    beside(target, &format!(".{}-{n}.tmp", std::process::id()))
}

/// Removes `target`'s temporaries (`<target>.<pid>-<n>.tmp`) that no writer has touched for an
/// hour: what a load killed while writing a cache leaves (243 MiB for Gemma 3's packed weights).
/// Age, not the process id: a writer in another PID namespace (another container sharing the
/// model folder), hidden from this `/proc` or on another host of a network filesystem would look
/// dead, and a live writer touches its temporary every few seconds (Gemma's cache is written in
/// about 2 s). Runs only when a cache is about to be written, so a load that reads its caches
/// lists no folder. Failures are ignored.
fn sweep_stale_temps(target: &Path) {
    const STALE: std::time::Duration = std::time::Duration::from_secs(3600);
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Some(prefix) = name.to_str().map(|n| format!("{n}.")) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let ours = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(".tmp"))
            .and_then(|f| f.split_once('-'))
            .is_some_and(|(pid, n)| {
                [pid, n]
                    .iter()
                    .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            });
        let stale = || {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE)
        };
        if ours && stale() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// What the caches beside a file are keyed on ([`stamp_key`]); `None` where the platform gives
/// no modification time.
pub(crate) fn file_stamp(meta: &std::fs::Metadata) -> Option<String> {
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(stamp_key(meta, modified))
}

/// What a hash stamp is keyed on: size and modification time, and on Unix the inode and the
/// status-change time.
fn stamp_key(meta: &std::fs::Metadata, modified: u128) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        format!(
            "{} {modified} ino {} ctime {}.{:09}",
            meta.len(),
            meta.ino(),
            meta.ctime(),
            meta.ctime_nsec()
        )
    }
    #[cfg(not(unix))]
    {
        format!("{} {modified}", meta.len())
    }
}

/// The sha256 of a model's GGUF and of its tokenizer (its tokenizer.json, or the GGUF's when the
/// tokenizer is the GGUF's own), as the manifest records them.
pub fn file_hashes(spec: &ModelSpec) -> Result<(String, String)> {
    let weights_sha256 = weights_sha256(&spec.weights)?;
    let tokenizer_sha256 = match &spec.tokenizer {
        Some(json) => sha256_cached(json)?,
        None => weights_sha256.clone(),
    };
    Ok((weights_sha256, tokenizer_sha256))
}

/// The sha256 of a model's weights: the GGUF's, or for a Hugging Face folder the sha256 of a
/// listing of its files (config.json, the safetensors shards, the adapter's two files) each
/// with its own sha256, so that a change to any of them changes it.
pub fn weights_sha256(w: &Weights) -> Result<String> {
    match w {
        Weights::Gguf(p) => sha256_cached(p),
        Weights::Hf { folder, lora } => {
            let mut listing = String::new();
            for f in &hf::source_files(folder, lora.as_deref())? {
                let name = f.file_name().unwrap_or_default().to_string_lossy();
                listing.push_str(&format!("{} {name}\n", sha256_cached(f)?));
            }
            Ok(crate::config::hex(&Sha256::digest(listing.as_bytes())))
        }
    }
}

fn md_u32(ct: &gguf_file::Content, key: &str, path: &Path) -> Result<usize> {
    let v = ct.metadata.get(key).ok_or_else(|| {
        anyhow!(
            "{}: the GGUF metadata has no `{key}`; the file is incomplete or not a supported model",
            path.display()
        )
    })?;
    Ok(v.to_u32()
        .or_else(|_| v.to_u64().map(|x| x as u32))
        .map_err(|e| anyhow!("{}: `{key}` is not an integer: {e}", path.display()))?
        as usize)
}

/// What the GGUF header says about a model, checked without reading the weights.
#[derive(Debug, Clone)]
pub struct WeightsInfo {
    pub architecture: String,
    pub vocab_size: usize,
    pub context_length: usize,
    /// The end-of-generation ids the weights' metadata names.
    pub eos_token_ids: Vec<u32>,
}

/// The first line of an error's message: candle appends a backtrace to its errors when
/// RUST_BACKTRACE is set, which a user's message should not carry.
pub(crate) fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// A file that knows its own position, so that asking for it costs no system call.
///
/// Through a plain `BufReader<File>` each ask is an `lseek`. candle's GGUF reader (still used
/// by `hf::write_from_gguf`) asks before every string it reads, 262,144 times for Gemma 3's
/// vocabulary (about 100 ms); declab's header reader asks once, where the tensor data begins.
pub(crate) struct PosFile {
    file: std::fs::File,
    pos: u64,
}

impl std::io::Read for PosFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for PosFile {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        if to == std::io::SeekFrom::Current(0) {
            return Ok(self.pos);
        }
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

/// A GGUF file opened for reading its header and tensors, buffered (the header holds ~800k
/// small values, which an unbuffered `File` reads with one system call each), with its length.
pub(crate) fn open_gguf(path: &Path) -> Result<(std::io::BufReader<PosFile>, u64)> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open model file {}", path.display()))?;
    let len = file.metadata()?.len();
    Ok((
        std::io::BufReader::with_capacity(1 << 16, PosFile { file, pos: 0 }),
        len,
    ))
}

/// A GGUF's header as read ([`gguf_header::read`]), with the reader left after it and the
/// file's length; an unreadable file is an error naming it and the fix. `with_vocabulary:
/// false` steps over the `tokenizer.ggml.*` arrays.
pub(crate) fn read_content(
    path: &Path,
    with_vocabulary: bool,
) -> Result<(std::io::BufReader<PosFile>, gguf_file::Content, u64)> {
    let (mut file, file_len) = open_gguf(path)?;
    let skip = |k: &str| !with_vocabulary && gguf_header::tokenizer_arrays(k);
    let ct = gguf_header::read(&mut file, skip).map_err(|e| {
        anyhow!(
            "{} is not a readable GGUF file ({}); re-run `make models` or check the path",
            path.display(),
            first_line(&e)
        )
    })?;
    Ok((file, ct, file_len))
}

/// A GGUF's header, checked, with the reader left after it. `with_vocabulary: false` steps
/// over the `tokenizer.ggml.*` arrays ([`gguf_header::tokenizer_arrays`]), which the weights
/// never read.
fn read_header(
    path: &Path,
    with_vocabulary: bool,
) -> Result<(std::io::BufReader<PosFile>, gguf_file::Content, WeightsInfo)> {
    let (file, ct, file_len) = read_content(path, with_vocabulary)?;
    let arch = match ct.metadata.get("general.architecture") {
        Some(v) => v
            .to_string()
            .map_err(|_| anyhow!("{}: `general.architecture` is not a string", path.display()))?
            .clone(),
        None => bail!(
            "{}: the GGUF metadata has no `general.architecture`",
            path.display()
        ),
    };
    if decoder::Family::of(&arch).is_none() {
        bail!(
            "{}: architecture `{arch}` is not supported; declab runs: {}",
            path.display(),
            decoder::Family::ALL.map(|(name, _)| name).join(", ")
        );
    }
    let context_length = md_u32(&ct, &format!("{arch}.context_length"), path)?;
    for key in ["block_count", "embedding_length", "attention.head_count"] {
        md_u32(&ct, &format!("{arch}.{key}"), path)?;
    }
    let vocab_tensor = ["output.weight", "token_embd.weight"]
        .iter()
        .find_map(|n| ct.tensor_infos.get(*n))
        .ok_or_else(|| {
            anyhow!(
                "{}: no `token_embd.weight` tensor; not a language model GGUF",
                path.display()
            )
        })?;
    let vocab_size = vocab_tensor.shape.dims()[0];
    let eos_token_id = ct
        .metadata
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok());
    // A truncated file fails here with a clear message instead of inside the loader.
    for (name, info) in &ct.tensor_infos {
        let bytes =
            info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let end = ct.tensor_data_offset + info.offset + bytes as u64;
        if end > file_len {
            bail!("{}: tensor `{name}` ends at byte {end} but the file has {file_len} bytes; the file is truncated (re-run `make models`)", path.display());
        }
    }
    Ok((
        file,
        ct,
        WeightsInfo {
            architecture: arch,
            vocab_size,
            context_length,
            eos_token_ids: eos_token_id.into_iter().collect(),
        },
    ))
}

/// Check a model file's header (format, architecture, metadata, size) without loading weights.
pub fn inspect(path: &Path) -> Result<WeightsInfo> {
    Ok(read_header(path, false)?.2)
}

/// What a Hugging Face folder's config says, in the terms of a GGUF's header.
fn hf_info(m: &hf::HfModel) -> WeightsInfo {
    WeightsInfo {
        architecture: m.config.architecture().to_string(),
        vocab_size: m.config.vocab,
        context_length: m.config.context_length,
        eos_token_ids: m.config.eos_ids.clone(),
    }
}

/// Check a model's weights without loading them: a GGUF's header, or a Hugging Face folder's
/// config, tensor headers and adapter ([`hf::HfModel::open`]).
pub fn inspect_weights(w: &Weights) -> Result<WeightsInfo> {
    match w {
        Weights::Gguf(p) => inspect(p),
        Weights::Hf { folder, lora } => Ok(hf_info(&hf::HfModel::open(folder, lora.as_deref())?)),
    }
}

/// Load a model and its tokenizer.
pub fn load(spec: &ModelSpec, device: &Device) -> Result<LoadedModel> {
    let start = Instant::now();
    // The tokenizer (a 33 MB JSON for Gemma 3, or the GGUF's own metadata read a second time)
    // is built and the files hashed on a second thread while the weights load. A tokenizer
    // built from the GGUF is recorded with the GGUF's hash: those bytes (and the declab
    // version, also in the manifest) determine it.
    std::thread::scope(|scope| {
        let side = scope.spawn(|| -> Result<(Tokenizer, String, String)> {
            let tokenizer = load_tokenizer(spec)?;
            let (weights_sha256, tokenizer_sha256) = file_hashes(spec)?;
            Ok((tokenizer, tokenizer_sha256, weights_sha256))
        });
        let loaded = load_model_weights(&spec.weights, device);
        let (tokenizer, tokenizer_sha256, weights_sha256) = side
            .join()
            .map_err(|_| anyhow!("the tokenizer thread panicked"))??;
        let (model, info) = loaded?;
        release_freed_memory();
        finish_load(
            spec,
            model,
            info,
            tokenizer,
            weights_sha256,
            tokenizer_sha256,
            start,
        )
    })
}

/// The token a chat template ends an assistant turn with: the first token of what it writes
/// after a reply, when that is one whole token of the vocabulary (`<end_of_turn>`,
/// `<|im_end|>`), not text.
pub fn end_of_turn_id(t: &chat::ChatTemplate, tokenizer: &Tokenizer) -> Result<u32> {
    let after = t.end_of_turn()?;
    let ids = tokenizer
        .encode(after.as_str(), false)
        .map_err(|e| anyhow!("tokenizing the end of a turn failed: {e}"))?;
    ids.first()
        .copied()
        .filter(|&id| {
            tokenizer
                .id_to_token(id)
                .is_some_and(|tok| tok.chars().count() > 1 && after.starts_with(&tok))
        })
        .ok_or_else(|| {
            anyhow!(
                "the chat template of {} ends a reply with {after:?}, which does not start with a token of the vocabulary; add the end-of-turn token to `eos_tokens`",
                t.source
            )
        })
}

/// A model's tokenizer: its `tokenizer.json`, or the one its GGUF describes when none is given.
pub fn load_tokenizer(spec: &ModelSpec) -> Result<Tokenizer> {
    match (&spec.tokenizer, &spec.weights) {
        (Some(json), _) => tokenizer::load(json),
        (None, Weights::Gguf(gguf)) => tokenizer::load_gguf(gguf),
        (None, Weights::Hf { folder, .. }) => bail!(
            "{} has no tokenizer.json; give the tokenizer as `tokenizer:`",
            folder.display()
        ),
    }
}

/// Why `path` is not a GGUF file (missing, unreadable, or without the `GGUF` magic), or `None`
/// when it starts as one. Only the first four bytes are read.
pub fn not_gguf(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)) {
        Err(e) => Some(format!("cannot read {}: {e}", path.display())),
        Ok(()) if &magic != b"GGUF" => Some(format!(
            "{} is not a GGUF file (it starts with {:?}, not \"GGUF\")",
            path.display(),
            String::from_utf8_lossy(&magic)
        )),
        Ok(()) => None,
    }
}

/// A model's weights, without its tokenizer: a GGUF, or a Hugging Face folder (with its
/// adapter merged).
pub fn load_model_weights(
    w: &Weights,
    device: &Device,
) -> Result<(Box<dyn LanguageModel>, WeightsInfo)> {
    match w {
        Weights::Gguf(p) => load_weights(p, device),
        Weights::Hf { folder, lora } => {
            let m = hf::HfModel::open(folder, lora.as_deref())?;
            let inner = decoder::ModelWeights::from_hf(&m, device).map_err(|e| {
                anyhow!(
                    "{}: loading the {} weights failed: {}",
                    w.describe(),
                    m.config.architecture(),
                    first_line(&e)
                )
            })?;
            let model: Box<dyn LanguageModel> = Box::new(Decoder {
                inner,
                device: device.clone(),
            });
            Ok((model, hf_info(&m)))
        }
    }
}

/// The model in a GGUF file, without its tokenizer (what a logit check needs).
pub fn load_weights(path: &Path, device: &Device) -> Result<(Box<dyn LanguageModel>, WeightsInfo)> {
    load_weights_with(path, device, true)
}

/// Where [`load_weights`] caches the packed matrices of the GGUF at `gguf`.
pub fn pack_cache_path(gguf: &Path) -> std::path::PathBuf {
    qrows_cache::cache_path(gguf)
}

/// [`load_weights`]; `pack_cache: false` neither reads nor writes the packed-weight cache
/// beside the file (`<file>.declab-qrows`), packing from the GGUF instead (tests compare the
/// two).
pub fn load_weights_with(
    path: &Path,
    device: &Device,
    pack_cache: bool,
) -> Result<(Box<dyn LanguageModel>, WeightsInfo)> {
    let (file, ct, info) = read_header(path, false)?;
    let arch = info.architecture.clone();
    // SAFETY: the mapping is read during this load only (every tensor is copied or packed out
    // of it); like llama.cpp's, it assumes the model file is not rewritten in place meanwhile.
    let data = unsafe { memmap2::Mmap::map(&file.get_ref().file) }
        .with_context(|| format!("cannot map model file {}", path.display()))?;
    drop(file);
    let model: Box<dyn LanguageModel> = {
        let d = device.clone();
        let ctx = |e: candle_core::Error| {
            anyhow!("{}: loading the {arch} weights failed: {e}", path.display())
        };
        let cache = match pack_cache && device.is_cpu() {
            true => decoder::PackCache::beside(path),
            false => decoder::PackCache::Off,
        };
        let inner = decoder::ModelWeights::from_gguf(ct, &data, device, cache).map_err(ctx)?;
        drop(data);
        // One throwaway step brings in the cache's pages now rather than inside the first timed
        // prefill (and packs any weights left on candle's fast kernels, which candle does in
        // their first matmul).
        inner
            .fork()
            .and_then(|mut m| m.forward(&Tensor::new(&[[0u32]], device)?, 0).map(|_| ()))
            .map_err(ctx)?;
        Box::new(Decoder { inner, device: d })
    };
    Ok((model, info))
}

fn finish_load(
    spec: &ModelSpec,
    model: Box<dyn LanguageModel>,
    info: WeightsInfo,
    tokenizer: Tokenizer,
    weights_sha256: String,
    tokenizer_sha256: String,
    start: Instant,
) -> Result<LoadedModel> {
    let path = spec.weights.path();
    let WeightsInfo {
        architecture: arch,
        vocab_size,
        context_length,
        eos_token_ids: eos_meta,
    } = info;
    // Added tokens beyond the model's vocabulary (Gemma 3's `<image_soft_token>`) are harmless
    // unless a prompt produces them (checked in `encode`); the base vocabulary must fit.
    let tok_vocab = tokenizer.vocab_size();
    if tok_vocab > vocab_size {
        bail!(
            "{} has {tok_vocab} tokens but the model {} has a vocabulary of {vocab_size}; they do not belong together",
            spec.tokenizer_source(),
            path.display()
        );
    }
    let mut eos_ids: Vec<u32> = eos_meta;
    for t in [
        "<eos>",
        "<end_of_turn>",
        "</s>",
        "<|endoftext|>",
        "<|im_end|>",
        "<|eot_id|>",
    ] {
        if let Some(id) = tokenizer.token_to_id(t) {
            eos_ids.push(id);
        }
    }
    for t in &spec.eos_tokens {
        let id = tokenizer.token_to_id(t).ok_or_else(|| {
            anyhow!(
                "model {}: eos token {t:?} is not in {}",
                spec.id,
                spec.tokenizer_source()
            )
        })?;
        eos_ids.push(id);
    }
    let chat = if spec.chat {
        let t = chat::ChatTemplate::for_model(spec)?;
        eos_ids.push(end_of_turn_id(&t, &tokenizer)?);
        Some(t)
    } else {
        None
    };
    eos_ids.sort_unstable();
    eos_ids.dedup();
    Ok(LoadedModel {
        chat,
        model,
        tokenizer,
        architecture: arch,
        vocab_size,
        context_length,
        eos_ids,
        weights_sha256,
        tokenizer_sha256,
        load_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// Checks that batching never changes a row: `streams` (one token per row per step, each after
/// `prefix`) decode as one batch of `model`, which keeps only the rows listed in `keeps` at
/// their steps (`(step, indices into the current rows)`), and every row's logits at every step
/// must be bit-identical to decoding that stream alone. The first mismatch is the error. Used by
/// the tiny model's tests and the real models' (`tests/real_model.rs`).
pub fn check_batch_against_singles(
    model: &dyn LanguageModel,
    prefix: &[u32],
    streams: &[Vec<u32>],
    keeps: &[(usize, &[usize])],
) -> Result<()> {
    check_parts_against_singles(model, &[(prefix, streams)], keeps)
}

/// [`check_batch_against_singles`] for a ragged batch ([`batch_of`]): part `p` is
/// `parts[p].1`'s streams after the prompt `parts[p].0`, so the parts step at different
/// positions; the rows are part 0's streams, then part 1's, and so on.
// `i` is a step, indexing each live stream (`streams[r][i]`), not one slice to iterate
#[allow(clippy::needless_range_loop)]
pub fn check_parts_against_singles(
    model: &dyn LanguageModel,
    parts: &[(&[u32], &[Vec<u32>])],
    keeps: &[(usize, &[usize])],
) -> Result<()> {
    // (prompt length, stream) per row
    let rows: Vec<(usize, &Vec<u32>)> = parts
        .iter()
        .flat_map(|(prefix, streams)| streams.iter().map(move |s| (prefix.len(), s)))
        .collect();
    let steps = rows.iter().map(|r| r.1.len()).min().unwrap_or(0);
    let mut pres = Vec::with_capacity(parts.len());
    for (prefix, _) in parts {
        let mut pre = model.fork();
        pre.forward(prefix, 0)?;
        pres.push(pre);
    }
    let longest = parts.iter().map(|p| p.0.len()).max().unwrap_or(0);
    // a small reservation, so the caches also grow while decoding
    let spec: Vec<(&dyn LanguageModel, usize)> = pres
        .iter()
        .zip(parts)
        .map(|(p, (_, streams))| (p.as_dyn(), streams.len()))
        .collect();
    let mut batch = batch_of(&spec, longest + 4)?;
    let mut singles: Vec<Box<dyn LanguageModel>> = pres
        .iter()
        .zip(parts)
        .flat_map(|(p, (_, streams))| streams.iter().map(move |_| p.fork()))
        .collect();
    let mut live: Vec<usize> = (0..rows.len()).collect();
    for i in 0..steps {
        if let Some((_, keep)) = keeps.iter().find(|(at, _)| *at == i) {
            batch.retain(keep)?;
            live = keep.iter().map(|&k| live[k]).collect();
        }
        let tokens: Vec<u32> = live.iter().map(|&r| rows[r].1[i]).collect();
        let positions: Vec<usize> = live.iter().map(|&r| rows[r].0 + i).collect();
        let out = batch.step_rows(&tokens, &positions)?;
        if batch.rows() != live.len() || out.len() % live.len() != 0 {
            bail!(
                "step {i}: {} rows and {} logits for {} sequences",
                batch.rows(),
                out.len(),
                live.len()
            );
        }
        let v = out.len() / live.len();
        for (row, &r) in live.iter().enumerate() {
            let alone = singles[r].forward(&[rows[r].1[i]], positions[row])?;
            let same = out[row * v..(row + 1) * v]
                .iter()
                .zip(&alone)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            if !same || alone.len() != v {
                bail!("step {i}, sequence {r}: the batched logits differ from decoding it alone");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (tempfile::TempDir, LoadedModel) {
        let dir = tempfile::tempdir().unwrap();
        let m = tiny::write(&dir.path().join("m"), 3).unwrap();
        let spec = ModelSpec {
            id: "tiny".into(),
            weights: Weights::Gguf(m.gguf),
            tokenizer: Some(m.tokenizer),
            eos_tokens: vec![],
            chat: false,
        };
        let loaded = load(&spec, &Device::Cpu).unwrap();
        (dir, loaded)
    }

    /// A temporary untouched for over an hour is removed when the next cache of the same file is
    /// written; a fresh one (a live writer's, whatever its process), another file's and other
    /// names stay.
    #[test]
    fn temporaries_of_killed_writers_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("m.gguf.declab-qrows");
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        // (name, old, kept)
        let names = [
            ("m.gguf.declab-qrows.4242-0.tmp", true, false),
            ("m.gguf.declab-qrows.1-12.tmp", true, false),
            ("m.gguf.declab-qrows.999999999-3.tmp", false, true),
            ("other.gguf.declab-qrows.4242-0.tmp", true, true),
            ("m.gguf.declab-qrows.4242-x.tmp", true, true),
            ("m.gguf.declab-qrows.-1.tmp", true, true),
            ("m.gguf.declab-qrows", true, true),
        ];
        for (name, old, _) in names {
            let f = std::fs::File::create(dir.path().join(name)).unwrap();
            if old {
                f.set_modified(two_hours_ago).unwrap();
            }
        }
        let tmp = temp_beside(&target);
        assert!(!tmp.exists());
        for (name, _, kept) in names {
            assert_eq!(dir.path().join(name).exists(), kept, "{name}");
        }
    }

    #[test]
    fn cached_hashes_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.gguf");
        std::fs::write(&f, b"one").unwrap();
        let h1 = sha256_cached(&f).unwrap();
        assert_eq!(h1, sha256_file(&f).unwrap());
        let stamp = dir.path().join("m.gguf.sha256");
        assert!(std::fs::read_to_string(&stamp).unwrap().starts_with(&h1));
        assert_eq!(sha256_cached(&f).unwrap(), h1, "from the stamp");
        // a different size: recomputed
        std::fs::write(&f, b"second").unwrap();
        let h2 = sha256_cached(&f).unwrap();
        assert_eq!(h2, sha256_file(&f).unwrap());
        assert_ne!(h1, h2);
        // a forged stamp for another size or time is ignored; a garbled one too
        std::fs::write(&stamp, format!("{} 1 2\n", "0".repeat(64))).unwrap();
        assert_eq!(sha256_cached(&f).unwrap(), h2);
        std::fs::write(&stamp, "garbage").unwrap();
        assert_eq!(sha256_cached(&f).unwrap(), h2);
        // the same size rewritten in place with its modification time set back: the
        // status-change time moves, so the stamp no longer matches
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        assert_eq!(sha256_cached(&f).unwrap(), h2);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, b"SECOND").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().modified().unwrap(), mtime);
        let h3 = sha256_cached(&f).unwrap();
        assert_eq!(h3, sha256_file(&f).unwrap());
        assert_ne!(h3, h2);
        // another file moved over it, same size and time: a new inode
        let other = dir.path().join("other");
        std::fs::write(&other, b"Second").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&other)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&other, &f).unwrap();
        assert_eq!(sha256_cached(&f).unwrap(), sha256_file(&f).unwrap());
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// One token at a time through the KV cache (grouped-query, windowed decode attention)
    /// gives the logits of a prefill over the whole sequence (masked attention), on a
    /// sequence longer than the tiny model's 8-token sliding window.
    #[test]
    fn decoding_step_by_step_matches_prefill_past_the_window() {
        let (_d, m) = tiny();
        let ids: Vec<u32> = (0..24).map(|i| 4 + (i * 7 % 60) as u32).collect();
        let mut whole = m.model.fork();
        let expect = whole.forward(&ids, 0).unwrap();
        let mut step = m.model.fork();
        let mut got = step.forward(&ids[..3], 0).unwrap();
        for (p, &t) in ids.iter().enumerate().skip(3) {
            got = step.forward(&[t], p).unwrap();
        }
        let d = max_abs_diff(&expect, &got);
        assert!(d < 1e-4, "decode vs prefill logits differ by {d}");
    }

    /// A batch row's logits are bit-identical to decoding that sequence alone, through
    /// retain (rows dropped, rows reordered) and cache growth.
    #[test]
    fn batched_rows_equal_single_sequences_bit_for_bit() {
        let (_d, m) = tiny();
        let streams: Vec<Vec<u32>> = (0..5)
            .map(|r| {
                (0..40)
                    .map(|i| 4 + ((r * 11 + i * 3) % 60) as u32)
                    .collect()
            })
            .collect();
        let keeps: [(usize, &[usize]); 2] = [(10, &[0, 2, 3, 4]), (25, &[3, 1])];
        check_batch_against_singles(m.model.as_ref(), &[5, 9, 13], &streams, &keeps).unwrap();
    }

    /// Prompts of different lengths in one batch (ragged): every row bit-identical to its
    /// stream alone, past the tiny model's 8-token sliding window, through retains that drop
    /// a whole part, rows of a part, and reorder rows within a part; rows that would mix the
    /// parts' order are refused.
    #[test]
    fn ragged_batches_of_prompts_equal_single_sequences_bit_for_bit() {
        let (_d, m) = tiny();
        let stream = |r: usize| -> Vec<u32> {
            (0..30)
                .map(|i| 4 + ((r * 13 + i * 5) % 60) as u32)
                .collect()
        };
        let a: Vec<Vec<u32>> = (0..3).map(stream).collect();
        let b: Vec<Vec<u32>> = (3..5).map(stream).collect();
        let c: Vec<Vec<u32>> = (5..9).map(stream).collect();
        let (pa, pb, pc): (Vec<u32>, Vec<u32>, Vec<u32>) =
            (vec![5, 9, 13], (4..15).collect(), vec![7]);
        // rows: a 0-2, b 3-4, c 5-8
        let keeps: [(usize, &[usize]); 3] = [
            (4, &[0, 2, 3, 4, 5, 6, 7, 8]), // a loses a row
            (9, &[0, 1, 4, 6, 7, 5]),       // b gone, c reordered
            (20, &[1, 3]),                  // one row of a and one of c
        ];
        check_parts_against_singles(m.model.as_ref(), &[(&pa, &a), (&pb, &b), (&pc, &c)], &keeps)
            .unwrap();
        let err =
            check_parts_against_singles(m.model.as_ref(), &[(&pa, &a), (&pb, &b)], &[(2, &[3, 0])])
                .unwrap_err();
        assert!(
            err.to_string().contains("parts of the batch together"),
            "{err}"
        );
    }
}
