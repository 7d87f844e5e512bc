//! Loading a `tokenizer.json` faster than `tokenizers`' own deserializer, with the same result.
//!
//! `tokenizers` 0.22 reads the `model` section through an untagged enum and a flattened
//! `serde_json::Value` (a BTreeMap of the whole vocabulary), and the merges through another
//! untagged enum: each buffers Gemma 3's 262,144-token vocabulary and 514,906 merges again
//! before the BPE is built (1.5 s of a 1.8 s load here). For a plain BPE file this reads the
//! same fields in one typed pass and hands them to `tokenizers`' own builders, in the order its
//! deserializer uses (model, normalizer, pre-tokenizer, post-processor, decoder, then the added
//! tokens through `add_tokens`). Anything else (another model type, the legacy `"a b"` merge
//! form, truncation or padding settings) goes through `Tokenizer::from_str`.
//! Tests check the two give the same vocabulary, added tokens, encodings and decodings.

use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    Tokenizer,
};

#[derive(Deserialize)]
struct RawTokenizer {
    version: String,
    truncation: Option<serde_json::Value>,
    padding: Option<serde_json::Value>,
    added_tokens: Vec<RawAdded>,
    normalizer: Option<NormalizerWrapper>,
    pre_tokenizer: Option<PreTokenizerWrapper>,
    post_processor: Option<PostProcessorWrapper>,
    decoder: Option<DecoderWrapper>,
    model: RawBpe,
}

#[derive(Deserialize)]
struct RawAdded {
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

#[derive(Deserialize)]
struct RawBpe {
    #[serde(rename = "type")]
    kind: String,
    dropout: Option<f32>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    end_of_word_suffix: Option<String>,
    fuse_unk: Option<bool>,
    byte_fallback: Option<bool>,
    ignore_merges: Option<bool>,
    vocab: Vocab,
    merges: Merges,
}

/// Reads `path` (a tokenizer.json), with the fast path when the file allows it.
pub fn load(path: &Path) -> Result<Tokenizer> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read tokenizer file {}", path.display()))?;
    let invalid = |e: String| anyhow!("{} is not a valid tokenizer.json: {e}", path.display());
    match plain_bpe(&text) {
        Some(raw) => {
            // the text (33 MB for Gemma 3) is not needed while the BPE's maps are built, which
            // is when the load's memory peaks
            drop(text);
            build(raw).map_err(|e| invalid(e.to_string()))
        }
        None => Tokenizer::from_str(&text).map_err(|e| invalid(e.to_string())),
    }
}

/// `Ok(None)` when the file is not a plain BPE tokenizer this path covers.
#[cfg(test)]
fn fast(text: &str) -> Result<Option<Tokenizer>> {
    plain_bpe(text).map(build).transpose()
}

/// The file's fields when it is a plain BPE tokenizer this path covers.
fn plain_bpe(text: &str) -> Option<RawTokenizer> {
    // anything else: `tokenizers` parses it (and words its own errors)
    let raw = serde_json::from_str::<RawTokenizer>(text).ok()?;
    (raw.version == "1.0"
        && raw.model.kind == "BPE"
        && raw.truncation.is_none()
        && raw.padding.is_none())
    .then_some(raw)
}

fn build(raw: RawTokenizer) -> Result<Tokenizer> {
    let m = raw.model;
    let mut b = BPE::builder().vocab_and_merges(m.vocab, m.merges);
    if let Some(p) = m.dropout {
        b = b.dropout(p);
    }
    if let Some(u) = m.unk_token {
        b = b.unk_token(u);
    }
    if let Some(p) = m.continuing_subword_prefix {
        b = b.continuing_subword_prefix(p);
    }
    if let Some(s) = m.end_of_word_suffix {
        b = b.end_of_word_suffix(s);
    }
    if let Some(f) = m.fuse_unk {
        b = b.fuse_unk(f);
    }
    if let Some(f) = m.byte_fallback {
        b = b.byte_fallback(f);
    }
    if let Some(i) = m.ignore_merges {
        b = b.ignore_merges(i);
    }
    let bpe = b.build().map_err(|e| anyhow!("{e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(raw.normalizer)
        .with_pre_tokenizer(raw.pre_tokenizer)
        .with_post_processor(raw.post_processor)
        .with_decoder(raw.decoder);
    let added: Vec<AddedToken> = raw
        .added_tokens
        .into_iter()
        .map(|t| AddedToken {
            content: t.content,
            single_word: t.single_word,
            lstrip: t.lstrip,
            rstrip: t.rstrip,
            normalized: t.normalized,
            special: t.special,
        })
        .collect();
    tokenizer.add_tokens(&added);
    Ok(tokenizer)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Asserts that the fast path applies to `text` and builds the same tokenizer as
    /// `tokenizers`' own deserializer, on `samples`.
    pub(crate) fn assert_same_as_tokenizers(text: &str, samples: &[&str]) {
        let fast = fast(text).unwrap().expect("the fast path applies");
        let slow = Tokenizer::from_str(text).unwrap();
        assert_eq!(fast.get_vocab(true), slow.get_vocab(true));
        assert_eq!(
            fast.get_added_tokens_decoder(),
            slow.get_added_tokens_decoder()
        );
        // the whole configuration, merges and all, serialises the same
        assert_eq!(
            fast.to_string(false).unwrap(),
            slow.to_string(false).unwrap()
        );
        for s in samples {
            for special in [false, true] {
                let a = fast.encode(*s, special).unwrap();
                let b = slow.encode(*s, special).unwrap();
                assert_eq!(a.get_ids(), b.get_ids(), "{s:?}");
                assert_eq!(
                    fast.decode(a.get_ids(), false).unwrap(),
                    slow.decode(b.get_ids(), false).unwrap()
                );
            }
        }
    }

    /// A small Gemma-style BPE file: SentencePiece-like normaliser, byte fallback, added tokens
    /// (special and not, one beyond the vocabulary), a BOS post-processor.
    fn gemma_like() -> String {
        let mut vocab = vec![
            "<pad>",
            "<eos>",
            "<bos>",
            "<unk>",
            "<start_of_turn>",
            "▁",
            "a",
            "b",
            "c",
            "ab",
            "abc",
            "▁a",
            "▁ab",
            "▁abc",
            "bc",
            "▁b",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        vocab.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        let vocab_json: serde_json::Map<String, serde_json::Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), serde_json::json!(i)))
            .collect();
        let n = vocab.len();
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [
                {"id": 0, "content": "<pad>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "<bos>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 4, "content": "<start_of_turn>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false},
                {"id": n, "content": "<image_soft_token>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
            "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}},
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]},
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab_json,
                "merges": [["a", "b"], ["▁", "a"], ["▁a", "b"], ["ab", "c"], ["▁ab", "c"], ["b", "c"], ["▁", "b"]]}
        })
        .to_string()
    }

    #[test]
    fn gemma_like_bpe_loads_the_same_both_ways() {
        assert_same_as_tokenizers(
            &gemma_like(),
            &[
                "abc ab a b c",
                " abcabc  bca",
                "<start_of_turn>abc<bos>x",
                "é ☃ 🦀 zz",
                "",
            ],
        );
    }

    #[test]
    fn other_files_take_tokenizers_own_path() {
        // legacy merges ("a b") and a non-BPE model: not covered, parsed by `tokenizers`
        let legacy = gemma_like().replace(
            r#"[["a","b"],["▁","a"],["▁a","b"],["ab","c"],["▁ab","c"],["b","c"],["▁","b"]]"#,
            r#"["a b","▁ a","▁a b","ab c","▁ab c","b c","▁ b"]"#,
        );
        assert_ne!(legacy, gemma_like(), "the replacement applied");
        assert!(fast(&legacy).unwrap().is_none());
        assert!(Tokenizer::from_str(&legacy).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let tiny = crate::engine::tiny::write(dir.path(), 1).unwrap();
        let text = std::fs::read_to_string(&tiny.tokenizer).unwrap();
        assert!(fast(&text).unwrap().is_none());
        let t = load(&tiny.tokenizer).unwrap();
        assert_eq!(
            t.get_vocab(true),
            Tokenizer::from_file(&tiny.tokenizer)
                .unwrap()
                .get_vocab(true)
        );
        // a broken file names itself
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{ not json").unwrap();
        let err = load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.json") && err.contains("not a valid tokenizer.json"),
            "{err}"
        );
    }
}
