//! declab's own encoder and decoder for the BPE tokenizers of declab's models: Gemma 3's
//! SentencePiece-style `tokenizer.json`, and the vocabularies built from a GGUF's metadata
//! (`gguf_tokenizer.rs`: SmolLM2's byte-level BPE, Gemma 3's SentencePiece one). It gives the
//! ids and text `tokenizers` gives, and is built in milliseconds from a cache.
//!
//! Why by hand: `tokenizers` 0.22 builds its BPE by looking up both halves and the joined string
//! of each merge in a string map (0.5-0.9 s of every load for Gemma 3's 514,906 merges, about
//! 150 ms for SmolLM2's 48,900), and its maps are private, so no cache can skip that. This
//! module holds the same tables as ids (the merges as `(left, right) -> (rank, merged)`), which
//! [`Bpe::to_bytes`] writes and [`Bpe::from_bytes`] reads back (`tokenizer.rs` keeps the file
//! beside the `tokenizer.json` or the GGUF).
//!
//! It covers two pipelines ([`Pipeline`]); [`Bpe::from_json`] takes only the first, the one
//! Gemma 3's file spells out, and refuses anything else (the caller then uses `tokenizers`):
//! * added tokens, none normalized, stripped or single-word, split off first by leftmost-longest
//!   match (`tokenizers`' `AddedVocabulary`, an Aho-Corasick automaton, `MatchKind::LeftmostLongest`);
//! * SentencePiece: the rest normalized by `Replace(" ", "▁")` (so the `Split(" ")`
//!   pre-tokenizer that may follow finds nothing to split); BPE with byte fallback (every
//!   `<0xXX>` in the vocabulary, so no unknown token): each character is its vocabulary token or
//!   its UTF-8 bytes' tokens; decoding as `Sequence[Replace("▁", " "), ByteFallback, Fuse]`;
//! * byte level: the rest split into words by `tokenizers`' own pre-tokenizer (digits, the GPT-2
//!   split, the byte-to-symbol mapping, the split at missing symbols), each symbol its
//!   vocabulary token or dropped (no unknown token, as `tokenizers`' BPE without one drops it);
//!   decoding by `tokenizers`' `ByteLevel` decoder;
//! * in both, no dropout, no subword prefix or suffix, merges applied lowest rank first,
//!   leftmost first, with the same queue and staleness check as `tokenizers`' `Word::merge_all`;
//!   the post-processor's tokens (BOS) around the text when special tokens are added; special
//!   added tokens skipped when decoding on request.
//!
//! `tests/real_model.rs` compares it with `tokenizers` on Gemma 3's file and on both GGUFs'
//! vocabularies (fixture texts and seeded random texts, encodings and decodings), and
//! `tests/tokenizer_reference.rs` holds its ids to llama.cpp's.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use anyhow::{anyhow, bail, ensure, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use tokenizers::models::bpe::{Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    Decoder, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, PreTokenizerWrapper,
};

/// What the encoder needs, all as ids.
pub struct Bpe {
    /// Every token's text (the model's vocabulary, then added tokens beyond it), in `blob`.
    blob: String,
    /// `ends[i]`: end of token `i` in `blob` (starts at `ends[i - 1]`, or 0).
    ends: Vec<u32>,
    /// Tokens of the model's vocabulary (`get_vocab_size(false)`).
    vocab_size: usize,
    /// The merges by left id: `merge_at[l]..merge_at[l + 1]` index `merges`, sorted by right
    /// id, each `(right, rank, merged)`; for a pair listed twice, the later entry (the one
    /// `tokenizers`' map, built by insertion, keeps).
    merge_at: Vec<u32>,
    merges: Vec<[u32; 3]>,
    /// Added tokens: id and whether special, in the file's order.
    added: Vec<(u32, bool)>,
    /// Ids added before and after the text when special tokens are added.
    before: Vec<u32>,
    after: Vec<u32>,
    /// How text becomes words and ids become text.
    pipeline: Pipeline,
    /// Derived on load: single-character tokens, byte tokens, the added tokens' automaton, and
    /// which ids are special.
    chars: Vec<(char, u32)>,
    /// The byte fallback tokens (SentencePiece only).
    bytes: [u32; 256],
    split: Option<AhoCorasick>,
    special: Vec<bool>,
}

impl std::fmt::Debug for Bpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Bpe({} tokens, {} merges, {} added)",
            self.ends.len(),
            self.merges.len(),
            self.added.len()
        )
    }
}

/// The two pipelines around the merges that this module covers.
#[derive(Debug, Clone)]
pub enum Pipeline {
    /// Gemma 3's: spaces as `▁`, no pre-tokenizer, characters missing from the vocabulary
    /// spelt as `<0xXX>` byte tokens; decoded by `Replace("▁", " ")`, `ByteFallback`, `Fuse`.
    SentencePiece,
    /// GPT-2's byte level (SmolLM2's, from its GGUF): the text split into words by this
    /// `tokenizers` pre-tokenizer, which also maps each byte to its symbol (`ByteLevel`),
    /// symbols missing from the vocabulary dropped (no unknown token, no byte fallback);
    /// decoded by `tokenizers`' `ByteLevel` decoder.
    ByteLevel(PreTokenizerWrapper),
}

#[derive(Deserialize)]
struct RawFile {
    version: String,
    truncation: Option<Value>,
    padding: Option<Value>,
    added_tokens: Vec<RawAdded>,
    normalizer: Option<Value>,
    pre_tokenizer: Option<Value>,
    post_processor: Option<Value>,
    decoder: Option<Value>,
    model: RawModel,
}

/// An entry of a tokenizer.json's `added_tokens` (also read by `tokenizer.rs`'s typed path).
#[derive(Deserialize)]
pub(crate) struct RawAdded {
    pub id: u32,
    pub content: String,
    pub single_word: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    pub normalized: bool,
    pub special: bool,
}

/// A tokenizer.json's BPE `model` section (also read by `tokenizer.rs`'s typed path).
#[derive(Deserialize)]
pub(crate) struct RawModel {
    #[serde(rename = "type")]
    pub kind: String,
    pub dropout: Option<f32>,
    pub unk_token: Option<String>,
    pub continuing_subword_prefix: Option<String>,
    pub end_of_word_suffix: Option<String>,
    pub fuse_unk: Option<bool>,
    pub byte_fallback: Option<bool>,
    pub ignore_merges: Option<bool>,
    pub vocab: Vocab,
    /// The `[left, right]` form (the legacy `"left right"` strings fail to parse, and the
    /// caller falls back to `tokenizers`' own reader).
    pub merges: Merges,
}

/// The byte fallback token of `b`, as `tokenizers` spells it (`format!("<{b:#04X}>")`).
fn byte_token(b: u8) -> String {
    format!("<{b:#04X}>")
}

impl Bpe {
    /// The encoder of a `tokenizer.json`'s text, or why this module does not cover it (the
    /// caller then uses `tokenizers`, which covers everything).
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawFile = serde_json::from_str(text).map_err(|e| anyhow!("{e}"))?;
        ensure!(raw.version == "1.0", "version {}", raw.version);
        ensure!(
            raw.truncation.is_none() && raw.padding.is_none(),
            "truncation or padding"
        );
        ensure!(
            raw.normalizer
                == Some(
                    json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"})
                ),
            "normalizer"
        );
        ensure!(
            raw.pre_tokenizer.is_none()
                || raw.pre_tokenizer
                    == Some(
                        json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false})
                    ),
            "pre-tokenizer"
        );
        ensure!(
            raw.decoder
                == Some(json!({"type": "Sequence", "decoders": [
                    {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                    {"type": "ByteFallback"},
                    {"type": "Fuse"}]})),
            "decoder"
        );
        let m = raw.model;
        ensure!(m.kind == "BPE", "model type {}", m.kind);
        ensure!(
            m.dropout.is_none_or(|p| p == 0.0)
                && m.continuing_subword_prefix.is_none()
                && m.end_of_word_suffix.is_none()
                && m.byte_fallback == Some(true)
                && m.ignore_merges != Some(true),
            "BPE options"
        );
        // the vocabulary: ids 0..n, each once
        let n = m.vocab.len();
        let mut texts: Vec<Option<String>> = vec![None; n];
        for (t, id) in m.vocab {
            let slot = texts
                .get_mut(id as usize)
                .ok_or_else(|| anyhow!("vocabulary id {id} out of 0..{n}"))?;
            ensure!(slot.is_none(), "vocabulary id {id} twice");
            *slot = Some(t);
        }
        let mut texts: Vec<String> = texts.into_iter().map(Option::unwrap).collect();
        let index: HashMap<&str, u32> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        if let Some(u) = &m.unk_token {
            ensure!(
                index.contains_key(u.as_str()),
                "unknown token {u:?} not in the vocabulary"
            );
        }
        let mut merges = Vec::with_capacity(m.merges.len());
        let mut joined = String::new();
        for (rank, (a, b)) in m.merges.iter().enumerate() {
            let id = |s: &str| {
                index
                    .get(s)
                    .copied()
                    .ok_or_else(|| anyhow!("merge token {s:?} not in the vocabulary"))
            };
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            merges.push((id(a)?, id(b)?, rank as u32, id(&joined)?));
        }
        // added tokens: those in the vocabulary keep its id; the others follow it in order
        let mut added = Vec::with_capacity(raw.added_tokens.len());
        let mut beyond: Vec<String> = Vec::new();
        for t in &raw.added_tokens {
            ensure!(
                !t.content.is_empty() && !t.normalized && !t.lstrip && !t.rstrip && !t.single_word,
                "added token {:?} is normalized, stripped or single-word",
                t.content
            );
            let id = match index.get(t.content.as_str()) {
                Some(&id) => id,
                None => match beyond.iter().position(|b| *b == t.content) {
                    Some(i) => (n + i) as u32,
                    None => {
                        beyond.push(t.content.clone());
                        (n + beyond.len() - 1) as u32
                    }
                },
            };
            ensure!(
                id == t.id,
                "added token {:?} has id {} where tokenizers gives {id}",
                t.content,
                t.id
            );
            added.push((id, t.special));
        }
        drop(index);
        texts.extend(beyond);
        let (before, after) = match raw.post_processor {
            None => (Vec::new(), Vec::new()),
            Some(p) => template(&p)?,
        };
        Self::from_parts(
            texts,
            n,
            merges,
            added,
            (before, after),
            Pipeline::SentencePiece,
        )
    }

    /// The encoder of a vocabulary (the model's `vocab_size` tokens, then added tokens beyond
    /// it), its merges as `(left, right, rank, merged)` ids (a pair listed twice keeps its
    /// later listing, as `tokenizers`' map does), its added tokens `(id, special)` in order, the
    /// ids the post-processor puts before and after a sequence, and the pipeline around the
    /// merges. Errors where the tables do not fit together.
    pub(crate) fn from_parts(
        texts: Vec<String>,
        vocab_size: usize,
        mut merges: Vec<(u32, u32, u32, u32)>,
        added: Vec<(u32, bool)>,
        (before, after): (Vec<u32>, Vec<u32>),
        pipeline: Pipeline,
    ) -> Result<Self> {
        let n = texts.len() as u32;
        ensure!(
            merges.iter().all(|m| m.0 < n && m.1 < n && m.3 < n),
            "merge id out of range"
        );
        // by pair, the last listing of a pair kept
        merges.sort_by_key(|m| (m.0, m.1));
        let mut kept: Vec<(u32, u32, u32, u32)> = Vec::with_capacity(merges.len());
        for m in merges {
            match kept.last_mut() {
                Some(k) if (k.0, k.1) == (m.0, m.1) => *k = m,
                _ => kept.push(m),
            }
        }
        let mut blob = String::with_capacity(texts.iter().map(String::len).sum());
        let mut ends = Vec::with_capacity(texts.len());
        for t in &texts {
            blob.push_str(t);
            ends.push(blob.len() as u32);
        }
        let mut merge_at = vec![0u32; texts.len() + 1];
        for k in &kept {
            merge_at[k.0 as usize + 1] += 1;
        }
        for i in 1..merge_at.len() {
            merge_at[i] += merge_at[i - 1];
        }
        let merges = kept.iter().map(|k| [k.1, k.2, k.3]).collect();
        Self::finish(
            blob,
            ends,
            vocab_size,
            (merge_at, merges),
            added,
            (before, after),
            pipeline,
        )
    }

    /// Derives the lookup tables from the stored ones.
    fn finish(
        blob: String,
        ends: Vec<u32>,
        vocab_size: usize,
        (merge_at, merges): (Vec<u32>, Vec<[u32; 3]>),
        added: Vec<(u32, bool)>,
        (before, after): (Vec<u32>, Vec<u32>),
        pipeline: Pipeline,
    ) -> Result<Self> {
        let mut b = Bpe {
            blob,
            ends,
            vocab_size,
            merge_at,
            merges,
            added,
            before,
            after,
            pipeline,
            chars: Vec::new(),
            bytes: [0; 256],
            split: None,
            special: Vec::new(),
        };
        ensure!(
            b.ends.windows(2).all(|w| w[0] <= w[1])
                && b.ends.last().is_none_or(|&e| e as usize == b.blob.len())
                && (0..b.ends.len()).all(|i| b.blob.is_char_boundary(b.start(i))),
            "token table out of order"
        );
        let n = b.ends.len() as u32;
        ensure!(
            b.vocab_size <= b.ends.len()
                && b.added.iter().all(|&(id, _)| id < n)
                && b.before.iter().chain(&b.after).all(|&id| id < n)
                && b.merges.iter().all(|&[r, _, m]| r < n && m < n),
            "id out of range"
        );
        ensure!(
            b.merge_at.len() == b.ends.len() + 1
                && b.merge_at[0] == 0
                && b.merge_at.windows(2).all(|w| w[0] <= w[1])
                && b.merge_at[b.ends.len()] as usize == b.merges.len()
                && b.merge_at.windows(2).all(|w| {
                    b.merges[w[0] as usize..w[1] as usize]
                        .windows(2)
                        .all(|p| p[0][0] < p[1][0])
                }),
            "merge table out of order"
        );
        // the model's vocabulary: single characters (looked up first, as `tokenizers` does)
        // and the byte fallback tokens (SentencePiece only: a byte-level vocabulary has none)
        let byte_tokens: HashMap<String, u8> = (0..=255u8).map(|v| (byte_token(v), v)).collect();
        let mut bytes = [None; 256];
        for id in 0..b.vocab_size as u32 {
            let t = b.text(id);
            let mut cs = t.chars();
            if let (Some(c), None) = (cs.next(), cs.next()) {
                b.chars.push((c, id));
            } else if let Some(&v) = (t.len() == 6).then(|| byte_tokens.get(t)).flatten() {
                bytes[v as usize].get_or_insert(id);
            }
        }
        // texts are unique, so each character once
        b.chars.sort_unstable();
        if matches!(b.pipeline, Pipeline::SentencePiece) {
            for (v, id) in bytes.iter().enumerate() {
                b.bytes[v] = id.ok_or_else(|| anyhow!("no byte token for {v}"))?;
            }
        }
        let mut special = vec![false; b.ends.len()];
        for &(id, s) in &b.added {
            special[id as usize] |= s;
        }
        b.special = special;
        if !b.added.is_empty() {
            let patterns: Vec<&str> = b.added.iter().map(|&(id, _)| b.text(id)).collect();
            b.split = Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .map_err(|e| anyhow!("added tokens: {e}"))?,
            );
        }
        Ok(b)
    }

    fn start(&self, id: usize) -> usize {
        if id == 0 {
            0
        } else {
            self.ends[id - 1] as usize
        }
    }

    /// The text of token `id` (which must exist).
    fn text(&self, id: u32) -> &str {
        &self.blob[self.start(id as usize)..self.ends[id as usize] as usize]
    }

    /// Tokens of the model's vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Token `id`'s text, for any id of the vocabulary or the added tokens.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.ends.len()).then(|| self.text(id))
    }

    /// The first id whose text is `t` (added tokens share their vocabulary id). A scan, for
    /// the few special tokens a load asks for: the token ends for the length, the bytes
    /// compared only there (about 0.3 ms for Gemma 3).
    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        let (blob, len) = (self.blob.as_bytes(), t.len());
        let mut start = 0usize;
        for (id, &end) in self.ends.iter().enumerate() {
            let end = end as usize;
            if end - start == len && &blob[start..end] == t.as_bytes() {
                return Some(id as u32);
            }
            start = end;
        }
        None
    }

    /// Ids of the special added tokens, in the file's order.
    pub fn special_ids(&self) -> Vec<u32> {
        self.added.iter().filter(|a| a.1).map(|a| a.0).collect()
    }

    /// The ids of `text`; with the post-processor's tokens around them when `add_special`.
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_special {
            ids.extend(&self.before);
        }
        let mut from = 0;
        if let Some(split) = &self.split {
            for m in split.find_iter(text) {
                self.encode_piece(&text[from..m.start()], &mut ids);
                ids.push(self.added[m.pattern().as_usize()].0);
                from = m.end();
            }
        }
        self.encode_piece(&text[from..], &mut ids);
        if add_special {
            ids.extend(&self.after);
        }
        ids
    }

    /// Text between added tokens: split into words by the pipeline, each word into characters
    /// (or their bytes), merged.
    fn encode_piece(&self, piece: &str, out: &mut Vec<u32>) {
        if piece.is_empty() {
            return;
        }
        match &self.pipeline {
            Pipeline::SentencePiece => self.encode_word(piece, out),
            Pipeline::ByteLevel(pre) => {
                let mut words = PreTokenizedString::from(piece);
                // `tokenizers`' own pre-tokenizers fail only on an invalid regex, which
                // building them already ruled out
                pre.pre_tokenize(&mut words)
                    .expect("a built pre-tokenizer does not fail");
                for (word, _, _) in
                    words.get_splits(OffsetReferential::Normalized, OffsetType::None)
                {
                    self.encode_word(word, out);
                }
            }
        }
    }

    /// One word: each character its vocabulary token; a character missing from the vocabulary
    /// becomes its byte tokens (SentencePiece) or is dropped (byte level, as `tokenizers`'
    /// BPE without an unknown token drops it); then the merges.
    fn encode_word(&self, piece: &str, out: &mut Vec<u32>) {
        if piece.is_empty() {
            return;
        }
        let sentencepiece = matches!(self.pipeline, Pipeline::SentencePiece);
        let mut word: Vec<Symbol> = Vec::with_capacity(piece.len());
        let mut utf8 = [0u8; 4];
        for c in piece.chars() {
            let c = if sentencepiece && c == ' ' {
                '\u{2581}'
            } else {
                c
            };
            match self.chars.binary_search_by_key(&c, |x| x.0) {
                Ok(i) => word.push(Symbol::new(self.chars[i].1, c.len_utf8())),
                Err(_) if sentencepiece => {
                    for &b in c.encode_utf8(&mut utf8).as_bytes() {
                        word.push(Symbol::new(self.bytes[b as usize], 1));
                    }
                }
                Err(_) => {}
            }
        }
        let n = word.len();
        for (i, s) in word.iter_mut().enumerate() {
            s.prev = i as isize - 1;
            s.next = if i + 1 < n { i as isize + 1 } else { -1 };
        }
        self.merge_all(&mut word);
        out.extend(word.iter().filter(|s| s.len > 0).map(|s| s.id));
    }

    /// `(rank, merged)` of the pair `(l, r)`, when it merges.
    fn merge(&self, l: u32, r: u32) -> Option<(u32, u32)> {
        let (a, z) = (
            self.merge_at[l as usize] as usize,
            self.merge_at[l as usize + 1] as usize,
        );
        let row = &self.merges[a..z];
        let i = row.binary_search_by_key(&r, |m| m[0]).ok()?;
        Some((row[i][1], row[i][2]))
    }

    /// `tokenizers`' `Word::merge_all` without dropout: the queue orders by (rank, position),
    /// an entry is stale when its symbol is gone, is last, or no longer pairs into the same
    /// merged id.
    fn merge_all(&self, word: &mut [Symbol]) {
        let mut queue: BinaryHeap<Reverse<(u32, usize, u32)>> = word
            .windows(2)
            .enumerate()
            .filter_map(|(pos, w)| {
                let (rank, new) = self.merge(w[0].id, w[1].id)?;
                Some(Reverse((rank, pos, new)))
            })
            .collect();
        while let Some(Reverse((_, pos, new))) = queue.pop() {
            if word[pos].len == 0 || word[pos].next == -1 {
                continue;
            }
            let next = word[pos].next as usize;
            let right = word[next];
            if self
                .merge(word[pos].id, right.id)
                .is_none_or(|(_, m)| m != new)
            {
                continue;
            }
            word[pos].id = new;
            word[pos].len += right.len;
            word[pos].next = right.next;
            word[next].len = 0;
            if right.next > -1 && (right.next as usize) < word.len() {
                word[right.next as usize].prev = pos as isize;
            }
            let cur = word[pos];
            if cur.prev >= 0 {
                let prev = cur.prev as usize;
                if let Some((rank, m)) = self.merge(word[prev].id, cur.id) {
                    queue.push(Reverse((rank, prev, m)));
                }
            }
            let nx = cur.next as usize;
            if cur.next >= 0 && nx < word.len() {
                if let Some((rank, m)) = self.merge(cur.id, word[nx].id) {
                    queue.push(Reverse((rank, pos, m)));
                }
            }
        }
    }

    /// The text of `ids`: unknown ids dropped, special added tokens too when `skip_special`,
    /// the rest through the pipeline's decoder.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let tokens = ids.iter().filter_map(|&id| {
            self.id_to_token(id)
                .filter(|_| !(skip_special && self.special[id as usize]))
        });
        match self.pipeline {
            Pipeline::SentencePiece => Self::decode_sentencepiece(tokens),
            Pipeline::ByteLevel(_) => {
                let tokens = tokens.map(str::to_string).collect();
                ByteLevel::new(false, true, true)
                    .decode(tokens)
                    .expect("the byte-level decoder does not fail")
            }
        }
    }

    /// `Replace("▁", " ")`, `ByteFallback`, `Fuse`: `▁` as a space, runs of byte tokens as
    /// their UTF-8 (or one U+FFFD per byte when they are not valid UTF-8), all joined.
    fn decode_sentencepiece<'a>(tokens: impl Iterator<Item = &'a str>) -> String {
        let mut out = String::new();
        let mut pending: Vec<u8> = Vec::new();
        let flush = |pending: &mut Vec<u8>, out: &mut String| {
            if pending.is_empty() {
                return;
            }
            match std::str::from_utf8(pending) {
                Ok(s) => out.push_str(s),
                Err(_) => out.extend(std::iter::repeat_n('\u{FFFD}', pending.len())),
            }
            pending.clear();
        };
        for t in tokens {
            let t = t.replace('\u{2581}', " ");
            // ByteFallback's test, as `tokenizers` writes it
            let byte = (t.len() == 6 && t.starts_with("<0x") && t.ends_with('>'))
                .then(|| u8::from_str_radix(&t[3..5], 16).ok())
                .flatten();
            match byte {
                Some(b) => pending.push(b),
                None => {
                    flush(&mut pending, &mut out);
                    out.push_str(&t);
                }
            }
        }
        flush(&mut pending, &mut out);
        out
    }

    /// The tables, for [`Bpe::from_bytes`]: little-endian counts and arrays.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(self.blob.len() + 16 * self.merges.len()));
        w.u32(self.vocab_size as u32);
        w.u32s(&self.ends);
        w.bytes(self.blob.as_bytes());
        w.u32s(&self.merge_at);
        w.u32s(self.merges.as_flattened());
        let added: Vec<u32> = self
            .added
            .iter()
            .flat_map(|&(id, s)| [id, s as u32])
            .collect();
        w.u32s(&added);
        w.u32s(&self.before);
        w.u32s(&self.after);
        match &self.pipeline {
            Pipeline::SentencePiece => w.u32(0),
            Pipeline::ByteLevel(pre) => {
                w.u32(1);
                let json = serde_json::to_vec(pre).expect("a pre-tokenizer serializes");
                w.bytes(&json);
            }
        }
        w.0
    }

    /// Reads what [`Bpe::to_bytes`] wrote; any inconsistency is an error (the caller rebuilds).
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        let mut r = Reader(data);
        let vocab_size = r.u32()? as usize;
        let ends = r.u32s()?;
        let blob = String::from_utf8(r.bytes()?.to_vec()).map_err(|e| anyhow!("{e}"))?;
        let merge_at = r.u32s()?;
        let flat = r.u32s()?;
        ensure!(flat.len() % 3 == 0, "merges");
        let merges = flat.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
        let added_flat = r.u32s()?;
        ensure!(added_flat.len() % 2 == 0, "added tokens");
        let added = added_flat
            .chunks_exact(2)
            .map(|c| (c[0], c[1] != 0))
            .collect();
        let before = r.u32s()?;
        let after = r.u32s()?;
        let pipeline = match r.u32()? {
            0 => Pipeline::SentencePiece,
            1 => Pipeline::ByteLevel(
                serde_json::from_slice(r.bytes()?).map_err(|e| anyhow!("pre-tokenizer: {e}"))?,
            ),
            other => bail!("pipeline {other}"),
        };
        ensure!(r.0.is_empty(), "trailing bytes");
        Self::finish(
            blob,
            ends,
            vocab_size,
            (merge_at, merges),
            added,
            (before, after),
            pipeline,
        )
    }
}

/// The ids a `TemplateProcessing` post-processor puts before and after a single sequence.
fn template(p: &Value) -> Result<(Vec<u32>, Vec<u32>)> {
    ensure!(
        p["type"] == "TemplateProcessing",
        "post-processor {}",
        p["type"]
    );
    let specials = &p["special_tokens"];
    let (mut before, mut after, mut seen) = (Vec::new(), Vec::new(), false);
    for item in p["single"]
        .as_array()
        .ok_or_else(|| anyhow!("template without `single`"))?
    {
        if let Some(s) = item.get("Sequence") {
            ensure!(!seen && s["id"] == "A", "template sequence {s}");
            seen = true;
        } else if let Some(t) = item.get("SpecialToken") {
            let name = t["id"]
                .as_str()
                .ok_or_else(|| anyhow!("template token {t}"))?;
            let ids: Vec<u32> = serde_json::from_value(specials[name]["ids"].clone())
                .map_err(|e| anyhow!("template token {name}: {e}"))?;
            if seen { &mut after } else { &mut before }.extend(ids);
        } else {
            bail!("template item {item}");
        }
    }
    ensure!(seen, "template without the sequence");
    Ok((before, after))
}

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: isize,
    next: isize,
    len: usize,
}

impl Symbol {
    fn new(id: u32, len: usize) -> Self {
        Symbol {
            id,
            prev: -1,
            next: -1,
            len,
        }
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32s(&mut self, v: &[u32]) {
        self.u32(v.len() as u32);
        for x in v {
            self.u32(*x);
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(self.0.len() >= n, "truncated");
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u32s(&mut self) -> Result<Vec<u32>> {
        let n = self.u32()? as usize;
        let b = self.take(n.checked_mul(4).ok_or_else(|| anyhow!("length"))?)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}
