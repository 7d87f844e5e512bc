//! Sentence embeddings exactly as sentence-transformers computes them for all-MiniLM-L6-v2
//! (`SentenceTransformer("all-MiniLM-L6-v2").encode(texts, normalize_embeddings=False)`, whose
//! module list already ends in `Normalize`):
//!
//! 1. `tokenizer.json` (BERT word pieces, lower-cased), `[CLS] ... [SEP]`, truncated to
//!    `max_seq_length` word pieces (256 for this model, from `sentence_bert_config.json`; the
//!    128 stored in `tokenizer.json` is *not* what sentence-transformers uses), padded to the
//!    longest text of the batch;
//! 2. candle-transformers' `bert::BertModel` (F32, CPU) on `model.safetensors`;
//! 3. mean pooling of the last hidden states over the attention mask;
//! 4. L2 normalisation.
//!
//! Loading reads only the folder it is given: no hub download in library code. The tests pin
//! cosine similarities computed by an independent float64 NumPy BERT forward over the same
//! files, which reproduces the sentence-transformers quick-start values (0.6660, 0.1046,
//! 0.1411) for its three example sentences.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// all-MiniLM-L6-v2's `max_seq_length` (its `sentence_bert_config.json`).
pub const DEFAULT_MAX_SEQ_LEN: usize = 256;
/// Texts per forward pass.
pub const BATCH_SIZE: usize = 16;
/// Folder name of the default embedder under the models folder.
pub const DEFAULT_EMBEDDER: &str = "all-minilm-l6-v2";

/// The default embedder folder: `$DECLAB_MODELS/all-minilm-l6-v2` when `DECLAB_MODELS` is set,
/// else `models/all-minilm-l6-v2` under the current folder, else under the source checkout this
/// binary was built from (where `make models` puts it).
pub fn default_dir() -> PathBuf {
    if let Some(base) = std::env::var_os("DECLAB_MODELS").filter(|s| !s.is_empty()) {
        return PathBuf::from(base).join(DEFAULT_EMBEDDER);
    }
    let local = Path::new("models").join(DEFAULT_EMBEDDER);
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(DEFAULT_EMBEDDER)
}

/// A loaded sentence-transformers BERT embedder (mean pooling, normalised).
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    max_seq_len: usize,
    dir: PathBuf,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dir", &self.dir)
            .field("max_seq_len", &self.max_seq_len)
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

impl Embedder {
    /// Load a sentence-transformers folder holding `config.json`, `model.safetensors` and
    /// `tokenizer.json` (and optionally `sentence_bert_config.json`).
    pub fn load(dir: &Path) -> Result<Embedder> {
        let missing: Vec<&str> = ["config.json", "model.safetensors", "tokenizer.json"]
            .into_iter()
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            bail!(
                "the sentence embedder folder {} lacks {}; run `make models` to fetch all-MiniLM-L6-v2, or name another sentence-transformers folder",
                dir.display(),
                missing.join(", ")
            );
        }
        let config: Config = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)
            .with_context(|| {
                format!("{} is not a BERT config", dir.join("config.json").display())
            })?;
        let st_config = dir.join("sentence_bert_config.json");
        let max_seq_len = if st_config.is_file() {
            let c: SentenceBertConfig = serde_json::from_slice(&std::fs::read(&st_config)?)
                .with_context(|| format!("cannot parse {}", st_config.display()))?;
            c.max_seq_length
        } else {
            DEFAULT_MAX_SEQ_LEN
        }
        .min(config.max_position_embeddings);
        let device = Device::Cpu;
        // SAFETY: the file is mapped read-only and not modified while the model lives (candle's
        // documented requirement for mmaped safetensors).
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &device,
            )?
        };
        let model = BertModel::load(vb, &config)
            .with_context(|| format!("loading BERT weights from {}", dir.display()))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| {
            anyhow::anyhow!("cannot load {}: {e}", dir.join("tokenizer.json").display())
        })?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_len,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token: "[PAD]".into(),
            ..Default::default()
        }));
        Ok(Embedder {
            model,
            tokenizer,
            device,
            max_seq_len,
            dir: dir.to_path_buf(),
        })
    }

    /// Word pieces kept per text (including `[CLS]` and `[SEP]`).
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unit-length embeddings of `texts`, in order. Texts are batched by similar length
    /// ([`BATCH_SIZE`] per forward pass) to keep padding small; padding does not change a
    /// text's embedding (masked in attention and pooling).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(BATCH_SIZE) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            for (&i, e) in chunk.iter().zip(self.embed_batch(&batch)?) {
                out[i] = e;
            }
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing for the embedder: {e}"))?;
        let n = enc.len();
        let len = enc.first().map(|e| e.get_ids().len()).unwrap_or(0);
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &enc {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let type_ids = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?; // (n, len, hidden)
        let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let summed = hidden.broadcast_mul(&maskf)?.sum(1)?; // (n, hidden)
        let counts = maskf.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (n, 1)
        let pooled = summed.broadcast_div(&counts)?;
        // torch.nn.functional.normalize: x / max(||x||, 1e-12)
        let norms = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        let unit = pooled.broadcast_div(&norms)?;
        Ok(unit.to_vec2::<f32>()?)
    }
}

/// Cosine similarity of two vectors (computed in f64); 0 when either is all zeros.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_basics() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-12);
        assert!((cosine(&[1.0, 1.0], &[-1.0, -1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn missing_folder_says_run_make_models() {
        let e = Embedder::load(Path::new("/nonexistent/declab-embedder"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("make models"), "{e}");
    }

    /// Reference cosines from an independent float64 NumPy forward of the same BERT weights
    /// (hand-written BertModel + mean pooling + normalisation, tokenizers 0.22 on the same
    /// tokenizer.json with truncation at 256). The first three reproduce the
    /// sentence-transformers quick-start output for all-MiniLM-L6-v2 (0.6660, 0.1046, 0.1411).
    #[test]
    fn matches_sentence_transformers_reference() {
        let dir = default_dir();
        if !dir.join("model.safetensors").is_file() {
            panic!("the MiniLM embedder is missing at {}: run `make models` first (DECLAB_MODELS names the models folder)", dir.display());
        }
        let emb = Embedder::load(&dir).expect("load MiniLM");
        assert_eq!(emb.max_seq_len(), 256);
        let long =
            "The lighthouse keeper climbed the stairs every evening and watched the grey sea. "
                .repeat(30);
        let texts = [
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
            "A man is playing a guitar on stage.",
            "",
            long.as_str(),
            "A lighthouse keeper watches the sea at night.",
        ];
        let e = emb.embed(&texts).unwrap();
        for v in &e {
            assert_eq!(v.len(), 384);
            let norm: f64 = v
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>()
                .sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        }
        let cases = [
            (0, 1, 0.665955),
            (0, 2, 0.104584),
            (1, 2, 0.141145),
            (2, 3, 0.123500),
            (2, 4, 0.167167),
            // the long text (422 word pieces) is truncated to 256
            (5, 6, 0.640913),
            (0, 5, 0.118091),
        ];
        for (i, j, want) in cases {
            let got = cosine(&e[i], &e[j]);
            assert!(
                (got - want).abs() < 1e-4,
                "cos({i}, {j}) = {got}, reference {want}"
            );
        }
        // one text alone gives the same embedding as inside a padded batch
        let alone = emb.embed(&[texts[2]]).unwrap();
        assert!(cosine(&alone[0], &e[2]) > 1.0 - 1e-6);
    }
}
