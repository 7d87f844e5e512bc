//! A model's tokenizer, and loading a `tokenizer.json` fast with the same result as
//! `tokenizers`.
//!
//! A SentencePiece-style BPE file (Gemma 3's) gets declab's own encoder ([`super::bpe`]), built
//! once from the JSON and then read from a cache beside it (`<file>.declab-bpe`, keyed like the
//! `.sha256` stamps by the file's size, time and inode, with a checksum of its own). A model
//! given by its GGUF alone gets the same from the GGUF's metadata ([`load_gguf`]), cached
//! beside the GGUF alike.
//!
//! Any other file goes to `tokenizers`. `tokenizers` 0.22 reads the `model` section through an
//! untagged enum and a flattened `serde_json::Value` (a BTreeMap of the whole vocabulary), and
//! the merges through another untagged enum. For a plain BPE file this reads the same fields in
//! one typed pass and hands them to `tokenizers`' own builders, in the order its deserializer
//! uses (model, normalizer, pre-tokenizer, post-processor, decoder, then the added tokens
//! through `add_tokens`). Anything else (another model type, the legacy `"a b"` merge form,
//! truncation or padding settings) goes through `Tokenizer::from_str`.
//! Tests check each path against `tokenizers`' own: vocabulary, added tokens, encodings and
//! decodings.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::models::bpe::BPE;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
};

use super::bpe::{Bpe, RawAdded, RawModel};

/// A model's tokenizer: declab's own BPE where the file is one it covers, `tokenizers`
/// otherwise.
pub enum Tokenizer {
    Bpe(Box<Bpe>),
    Hf(Box<tokenizers::Tokenizer>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tokenizer::Bpe(b) => b.fmt(f),
            Tokenizer::Hf(t) => write!(f, "tokenizers({} tokens)", t.get_vocab_size(true)),
        }
    }
}

impl From<tokenizers::Tokenizer> for Tokenizer {
    fn from(t: tokenizers::Tokenizer) -> Self {
        Tokenizer::Hf(Box::new(t))
    }
}

impl Tokenizer {
    /// The ids of `text`, with the post-processor's special tokens (BOS) when `add_special`.
    /// Added tokens written in the text are always parsed.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Bpe(b) => Ok(b.encode(text, add_special)),
            Tokenizer::Hf(t) => Ok(t
                .encode(text, add_special)
                .map_err(|e| anyhow!("{e}"))?
                .get_ids()
                .to_vec()),
        }
    }

    /// The text of `ids`, special added tokens skipped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match self {
            Tokenizer::Bpe(b) => Ok(b.decode(ids, skip_special)),
            Tokenizer::Hf(t) => t.decode(ids, skip_special).map_err(|e| anyhow!("{e}")),
        }
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match self {
            Tokenizer::Bpe(b) => b.id_to_token(id).map(str::to_string),
            Tokenizer::Hf(t) => t.id_to_token(id),
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Tokenizer::Bpe(b) => b.token_to_id(token),
            Tokenizer::Hf(t) => t.token_to_id(token),
        }
    }

    /// Tokens of the model's vocabulary, without added tokens beyond it.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Bpe(b) => b.vocab_size(),
            Tokenizer::Hf(t) => t.get_vocab_size(false),
        }
    }

    /// Ids of the special added tokens (what decoding skips).
    pub fn special_ids(&self) -> Vec<u32> {
        match self {
            Tokenizer::Bpe(b) => b.special_ids(),
            Tokenizer::Hf(t) => {
                let mut ids: Vec<u32> = t
                    .get_added_tokens_decoder()
                    .into_iter()
                    .filter(|(_, a)| a.special)
                    .map(|(id, _)| id)
                    .collect();
                ids.sort_unstable();
                ids
            }
        }
    }
}

/// Reads `path` (a tokenizer.json): declab's own BPE from its cache or the file, else
/// `tokenizers` (with the fast path when the file allows it).
pub fn load(path: &Path) -> Result<Tokenizer> {
    if let Some(b) = read_cache(path) {
        return Ok(Tokenizer::Bpe(Box::new(b)));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read tokenizer file {}", path.display()))?;
    if let Ok(b) = Bpe::from_json(&text) {
        write_cache(path, &b);
        return Ok(Tokenizer::Bpe(Box::new(b)));
    }
    load_hf_text(path, text).map(Tokenizer::from)
}

/// The tokenizer a GGUF file's metadata describes ([`super::gguf_tokenizer`]): declab's own BPE
/// from its cache beside the file (`<file>.declab-bpe`, keyed by the GGUF's stamp) or from the
/// metadata, else `tokenizers`.
pub fn load_gguf(path: &Path) -> Result<Tokenizer> {
    if let Some(b) = read_cache(path) {
        return Ok(Tokenizer::Bpe(Box::new(b)));
    }
    let ct = super::read_content(path, true)?.1;
    let t = super::gguf_tokenizer::own_from_gguf(&ct, path)?;
    if let Tokenizer::Bpe(b) = &t {
        write_cache(path, b);
    }
    Ok(t)
}

/// `path` through `tokenizers` only (the fast typed reader where it applies): what declab's
/// own BPE is compared with.
pub fn load_hf(path: &Path) -> Result<tokenizers::Tokenizer> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read tokenizer file {}", path.display()))?;
    load_hf_text(path, text)
}

fn load_hf_text(path: &Path, text: String) -> Result<tokenizers::Tokenizer> {
    let invalid = |e: String| anyhow!("{} is not a valid tokenizer.json: {e}", path.display());
    match plain_bpe(&text) {
        Some(raw) => {
            // the text (33 MB for Gemma 3) is not needed while the BPE's maps are built, which
            // is when the load's memory peaks
            drop(text);
            build(raw).map_err(|e| invalid(e.to_string()))
        }
        None => tokenizers::Tokenizer::from_str(&text).map_err(|e| invalid(e.to_string())),
    }
}

/// Where the cache of `path`'s BPE tables lives.
pub fn cache_path(path: &Path) -> PathBuf {
    super::beside(path, ".declab-bpe")
}

/// First line of a cache file: the format, then the tokenizer file's stamp. The stamp covers
/// the file, not the code that read it: bump the version whenever `Bpe`'s tables or what
/// `gguf_tokenizer` makes of a GGUF's metadata change, or old caches keep the old tokenizer.
const CACHE_MAGIC: &str = "declab-bpe 2";

fn cache_stamp(path: &Path) -> Option<String> {
    let key = super::file_stamp(&std::fs::metadata(path).ok()?)?;
    Some(format!("{CACHE_MAGIC} {key}\n"))
}

/// The cached tables of `path`, when a cache exists for the file as it is now and is whole.
fn read_cache(path: &Path) -> Option<Bpe> {
    let stamp = cache_stamp(path)?;
    let data = std::fs::read(cache_path(path)).ok()?;
    let rest = data.strip_prefix(stamp.as_bytes())?;
    let (body, sum) = rest.split_at_checked(rest.len().checked_sub(32)?)?;
    (Sha256::digest(body).as_slice() == sum)
        .then(|| Bpe::from_bytes(body).ok())
        .flatten()
}

/// Writes the cache of `path` ([`super::write_beside`]: whole, and failures harmless, the next
/// load building from the file again).
fn write_cache(path: &Path, b: &Bpe) {
    let Some(stamp) = cache_stamp(path) else {
        return;
    };
    let body = b.to_bytes();
    let mut data = Vec::with_capacity(stamp.len() + body.len() + 32);
    data.extend_from_slice(stamp.as_bytes());
    data.extend_from_slice(&body);
    data.extend_from_slice(&Sha256::digest(&body));
    super::write_beside(&cache_path(path), &data);
}

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
    model: RawModel,
}

/// `Ok(None)` when the file is not a plain BPE tokenizer this path covers.
#[cfg(test)]
fn fast(text: &str) -> Result<Option<tokenizers::Tokenizer>> {
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

fn build(raw: RawTokenizer) -> Result<tokenizers::Tokenizer> {
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
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
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
        let slow = tokenizers::Tokenizer::from_str(text).unwrap();
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
        assert!(tokenizers::Tokenizer::from_str(&legacy).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let tiny = crate::engine::tiny::write(dir.path(), 1).unwrap();
        let text = std::fs::read_to_string(&tiny.tokenizer).unwrap();
        assert!(fast(&text).unwrap().is_none());
        assert!(matches!(load(&tiny.tokenizer).unwrap(), Tokenizer::Hf(_)));
        let t = load_hf(&tiny.tokenizer).unwrap();
        assert_eq!(
            t.get_vocab(true),
            tokenizers::Tokenizer::from_file(&tiny.tokenizer)
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

    /// declab's own BPE against `tokenizers` on `text`'s file: the same ids for every sample
    /// (with and without special tokens), the same text back for those ids and for `ids`.
    fn assert_own_bpe_agrees(text: &str, samples: &[String], ids: &[Vec<u32>]) {
        let own = Bpe::from_json(text).unwrap();
        let again = Bpe::from_bytes(&own.to_bytes()).unwrap();
        let hf = tokenizers::Tokenizer::from_str(text).unwrap();
        for b in [&own, &again] {
            assert_eq!(b.vocab_size(), hf.get_vocab_size(false));
            for s in samples {
                for special in [false, true] {
                    let want = hf.encode(s.as_str(), special).unwrap().get_ids().to_vec();
                    assert_eq!(b.encode(s, special), want, "{s:?}, special {special}");
                    for skip in [false, true] {
                        assert_eq!(b.decode(&want, skip), hf.decode(&want, skip).unwrap());
                    }
                }
            }
            for ids in ids {
                for skip in [false, true] {
                    assert_eq!(
                        b.decode(ids, skip),
                        hf.decode(ids, skip).unwrap(),
                        "{ids:?}"
                    );
                }
            }
        }
    }

    /// Random strings over `alphabet`, seeded.
    fn random_strings(alphabet: &[&str], n: usize, seed: u64) -> Vec<String> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                (0..rng.random_range(0..16))
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn own_bpe_encodes_and_decodes_like_tokenizers() {
        use rand::{Rng, SeedableRng};
        let alphabet = [
            "a",
            "b",
            "c",
            "ab",
            " ",
            "  ",
            "\u{2581}",
            "é",
            "🦀",
            "z",
            "<bos>",
            "<pad>",
            "<start_of_turn>",
            "<image_soft_token>",
            "<start_of",
            "<",
            ">",
            "\n",
        ];
        let samples = random_strings(&alphabet, 3000, 7);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        // byte tokens that split characters, special ids, ids beyond every table
        let ids: Vec<Vec<u32>> = (0..500)
            .map(|_| {
                (0..rng.random_range(0..12))
                    .map(|_| rng.random_range(0..280))
                    .collect()
            })
            .collect();
        assert_own_bpe_agrees(&gemma_like(), &samples, &ids);
        // a pair listed twice: the later rank holds, as in `tokenizers`' map
        let twice = gemma_like().replace(r#"["▁","b"]]"#, r#"["▁","b"],["a","b"]]"#);
        assert_ne!(twice, gemma_like(), "the replacement applied");
        assert_own_bpe_agrees(&twice, &samples, &ids);
        // overlapping pairs of one rank ("aaa"): the leftmost merges first
        let overlap = gemma_like()
            .replace(r#""bc":14"#, r#""aa":14"#)
            .replace(r#"["b","c"]"#, r#"["a","a"]"#);
        assert!(!overlap.contains(r#"["b","c"]"#) && overlap.contains(r#""aa":14"#));
        assert_own_bpe_agrees(&overlap, &samples, &ids);
    }

    #[test]
    fn own_bpe_refuses_what_it_does_not_implement() {
        let base = gemma_like();
        assert!(Bpe::from_json(&base).is_ok());
        for (from, to) in [
            (r#"{"type":"ByteFallback"},"#, ""),
            (r#""byte_fallback":true"#, r#""byte_fallback":false"#),
            (r#""dropout":null"#, r#""dropout":0.1"#),
            (r#""normalizer":{"#, r#""normalizer":{"prepend":"x","#),
            (r#""lstrip":false"#, r#""lstrip":true"#),
            (r#""<0x41>":"#, r#""<0x41>x":"#),
        ] {
            let changed = base.replacen(from, to, 1);
            assert_ne!(changed, base, "{from:?} is in the file");
            assert!(Bpe::from_json(&changed).is_err(), "{from:?} -> {to:?}");
        }
    }

    /// The cache beside a tokenizer.json: written on the first load, read on the next, ignored
    /// when damaged or when the file changes (rebuilt from the file each time).
    #[test]
    fn own_bpe_cache_is_written_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, gemma_like()).unwrap();
        let cache = cache_path(&path);
        let ids = |t: &Tokenizer| t.encode("abc ab<bos>🦀", true).unwrap();
        let first = load(&path).unwrap();
        assert!(matches!(first, Tokenizer::Bpe(_)));
        let want = ids(&first);
        assert!(cache.is_file(), "the first load writes the cache");
        assert!(read_cache(&path).is_some());
        assert_eq!(ids(&load(&path).unwrap()), want);
        // damaged: one byte flipped in the body, or cut short
        let good = std::fs::read(&cache).unwrap();
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        for damaged in [bad, good[..good.len() - 7].to_vec()] {
            std::fs::write(&cache, damaged).unwrap();
            assert!(read_cache(&path).is_none());
            assert_eq!(ids(&load(&path).unwrap()), want);
            assert!(
                read_cache(&path).is_some(),
                "a load rewrites a damaged cache"
            );
        }
        // the file changes: the cache of the old file is not used
        let edited = gemma_like().replace(r#"["a","b"],"#, "");
        assert_ne!(edited, gemma_like(), "the replacement applied");
        std::fs::write(&path, edited).unwrap();
        assert!(read_cache(&path).is_none());
        let changed = load(&path).unwrap();
        let hf = tokenizers::Tokenizer::from_file(&path).unwrap();
        assert_eq!(
            ids(&changed),
            hf.encode("abc ab<bos>🦀", true).unwrap().get_ids()
        );
        assert_ne!(ids(&changed), want);
    }
}
