//! A tiny Gemma 3 model with random weights, written as a real GGUF (through candle's GGUF
//! writer) plus a word-level tokenizer.json, so tests exercise the same loader and forward pass
//! as the real model in milliseconds. Deterministic for a given seed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Words of the tiny vocabulary (after 4 special tokens).
const WORDS: &[&str] = &[
    "the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "tree", "and", "then", "it",
    "was", "happy", "sad", "big", "small", "red", "blue", "house", "river", "moon", "sun", "night",
    "day", "old", "new", "sang", "slept", "quietly", "loudly", "over", "near", "far", "away",
    "bird", "fish", "boat", "sea", "storm", "light", "dark", "story", "ended", "began", "again",
    "once", "upon", "time", "there", "lived", "king", "queen", "forest", "path", "stone", "gold",
    "silver", "door", "window", ".", ",",
];

pub struct TinyModel {
    pub gguf: PathBuf,
    pub tokenizer: PathBuf,
    pub vocab_size: usize,
}

/// Write `tiny.gguf` and `tokenizer.json` into `dir`.
pub fn write(dir: &Path, seed: u64) -> Result<TinyModel> {
    write_with(dir, seed, false)
}

/// Like [`write`]; `nan_output_norm` poisons the final norm with NaN so every logit is NaN
/// (for testing how runs handle a broken model).
pub fn write_with(dir: &Path, seed: u64, nan_output_norm: bool) -> Result<TinyModel> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let specials = ["<pad>", "<eos>", "<bos>", "<unk>"];
    let vocab: Vec<&str> = specials.iter().chain(WORDS.iter()).copied().collect();
    let vocab_size = vocab.len();
    let (hidden, n_head, n_kv, head_dim, ff, layers) =
        (64usize, 2usize, 1usize, 32usize, 128usize, 2usize);

    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let dev = Device::Cpu;
    let mut randn = |rows: usize, cols: usize, scale: f32| -> Result<Tensor> {
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
            .collect();
        Ok(Tensor::from_vec(data, (rows, cols), &dev)?)
    };
    let q8 = |t: Tensor| -> Result<QTensor> { Ok(QTensor::quantize(&t, GgmlDType::Q8_0)?) };
    let f32v = |n: usize, v: f32| -> Result<QTensor> {
        Ok(QTensor::quantize(
            &Tensor::full(v, n, &Device::Cpu)?,
            GgmlDType::F32,
        )?)
    };

    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    tensors.push((
        "token_embd.weight".into(),
        q8(randn(vocab_size, hidden, 1.0)?)?,
    ));
    // A small final-norm scale keeps the logits in a realistic range (entropy of 1-3 nats);
    // with 1.0 the tied embeddings make the model repeat its last token with p ~ 1.
    tensors.push((
        "output_norm.weight".into(),
        f32v(hidden, if nan_output_norm { f32::NAN } else { 0.1 })?,
    ));
    if nan_output_norm {
        // an f32 output head: the quantised (Q8) path would turn NaN activations into zeros
        tensors.push((
            "output.weight".into(),
            QTensor::quantize(&randn(vocab_size, hidden, 1.0)?, GgmlDType::F32)?,
        ));
    }
    for l in 0..layers {
        let p = format!("blk.{l}");
        tensors.push((
            format!("{p}.attn_q.weight"),
            q8(randn(n_head * head_dim, hidden, 0.3)?)?,
        ));
        tensors.push((
            format!("{p}.attn_k.weight"),
            q8(randn(n_kv * head_dim, hidden, 0.3)?)?,
        ));
        tensors.push((
            format!("{p}.attn_v.weight"),
            q8(randn(n_kv * head_dim, hidden, 0.3)?)?,
        ));
        tensors.push((
            format!("{p}.attn_output.weight"),
            q8(randn(hidden, n_head * head_dim, 0.3)?)?,
        ));
        tensors.push((format!("{p}.attn_q_norm.weight"), f32v(head_dim, 1.0)?));
        tensors.push((format!("{p}.attn_k_norm.weight"), f32v(head_dim, 1.0)?));
        for n in [
            "attn_norm",
            "post_attention_norm",
            "ffn_norm",
            "post_ffw_norm",
        ] {
            tensors.push((format!("{p}.{n}.weight"), f32v(hidden, 1.0)?));
        }
        tensors.push((format!("{p}.ffn_gate.weight"), q8(randn(ff, hidden, 0.3)?)?));
        tensors.push((format!("{p}.ffn_up.weight"), q8(randn(ff, hidden, 0.3)?)?));
        tensors.push((format!("{p}.ffn_down.weight"), q8(randn(hidden, ff, 0.3)?)?));
    }

    use gguf_file::Value as V;
    let md: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("gemma3".into())),
        (
            "general.name",
            V::String("declab tiny gemma3 (random weights)".into()),
        ),
        ("gemma3.context_length", V::U32(256)),
        ("gemma3.embedding_length", V::U32(hidden as u32)),
        ("gemma3.block_count", V::U32(layers as u32)),
        ("gemma3.feed_forward_length", V::U32(ff as u32)),
        ("gemma3.attention.head_count", V::U32(n_head as u32)),
        ("gemma3.attention.head_count_kv", V::U32(n_kv as u32)),
        ("gemma3.attention.key_length", V::U32(head_dim as u32)),
        ("gemma3.attention.value_length", V::U32(head_dim as u32)),
        ("gemma3.attention.layer_norm_rms_epsilon", V::F32(1e-6)),
        ("gemma3.attention.sliding_window", V::U32(8)),
        ("gemma3.rope.freq_base", V::F32(10000.0)),
        ("tokenizer.ggml.eos_token_id", V::U32(1)),
        ("tokenizer.ggml.bos_token_id", V::U32(2)),
    ];
    let md_refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let gguf = dir.join("tiny.gguf");
    let mut f = std::fs::File::create(&gguf)
        .with_context(|| format!("cannot create {}", gguf.display()))?;
    gguf_file::write(&mut f, &md_refs, &t_refs)?;

    let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let tok = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": "<unk>"}
    });
    let tokenizer = dir.join("tokenizer.json");
    std::fs::write(&tokenizer, serde_json::to_vec_pretty(&tok)?)
        .with_context(|| format!("cannot write {}", tokenizer.display()))?;
    Ok(TinyModel {
        gguf,
        tokenizer,
        vocab_size,
    })
}
