//! Tokenizers built from a GGUF file's own `tokenizer.ggml.*` metadata, for a model given by
//! `gguf:` alone (a `tokenizer.json` given with `tokenizer:` still wins). [`from_gguf`] builds an
//! ordinary `tokenizers::Tokenizer` from its builders; [`own_from_gguf`] builds declab's own BPE
//! ([`super::bpe`], what a run uses, cached beside the GGUF by `tokenizer.rs`) from the same
//! vocabulary, merges, added tokens and pre-tokenizer, where it covers the pipeline. Both give
//! the token ids llama.cpp's own tokenizer gives (`llama-tokenize`: BOS as the model asks, special tokens
//! parsed). This module owns the reading and checking of that metadata (it is untrusted: every
//! missing key, wrong type, length mismatch or id out of range is an error naming the file and
//! the key) and the mapping onto `tokenizers`; its only I/O is reading a GGUF header
//! ([`from_gguf_file`], [`check_file`]).
//!
//! References: llama.cpp 0c1e570 `src/llama-vocab.cpp` (`llama_vocab::impl::load`,
//! `llm_tokenizer_spm_session`, `llm_tokenizer_bpe_session`, `tokenizer_st_partition`,
//! `token_to_piece`) and `src/unicode.cpp` (`unicode_regex_split`, the GPT-2 split); Hugging
//! Face transformers' `convert_slow_tokenizer.py` (`SentencePieceExtractor`: BPE merges from
//! SentencePiece scores). Checked against `llama-tokenize` on `tests/fixtures/tokenizer/`
//! (`tests/tokenizer_reference.rs`, fixtures from `scripts/tokenizer-reference.sh`).
//!
//! Two vocabulary kinds are built, the ones verified there:
//! - `llama` (SentencePiece BPE, e.g. Gemma 3). llama.cpp repeatedly merges the adjacent pair
//!   whose concatenation is the vocabulary piece of highest score (leftmost on ties), then
//!   spells what is left as `<0xXX>` byte tokens. That is a BPE whose merges are every split of
//!   every piece into two pieces of the vocabulary, ranked by the piece's score (transformers'
//!   converter does the same), with byte fallback. Spaces become `▁` (a normalizer), with a
//!   leading `▁` on every stretch of text when `add_space_prefix` is set (Gemma 3 does not set
//!   it, so that branch is checked on a synthetic vocabulary only).
//! - `gpt2` with `tokenizer.ggml.pre = smollm` (byte-level BPE, e.g. SmolLM2): the GGUF's own
//!   merges; every digit alone (llama.cpp's first regex `\p{N}`), then the GPT-2 split, then the
//!   byte-to-unicode mapping (`tokenizers`' `Digits` and `ByteLevel` pre-tokenizers).
//!
//! Any other model or pre-tokenizer is refused with the fix (give `tokenizer:`). In both, the
//! control, user-defined and unknown tokens (llama.cpp's "special tokens cache") are added
//! tokens matched in the raw text before anything else: control and unknown ones are special
//! (dropped by `decode(.., true)`), user-defined ones (Gemma's runs of spaces, newlines and
//! tabs, HTML tags) are not. llama.cpp's per-model token attributes are followed where they
//! change ids for these kinds: control-looking texts (`CONTROL_LOOKING`) and Phi-3's
//! right-stripping special tokens (the latter not checked against a real Phi-3 file).
//!
//! Where `tokenizers` cannot follow llama.cpp exactly (none of it seen on the fixtures or on
//! 400 random mixed-script texts compared once against `llama-tokenize`):
//! - llama.cpp splits special tokens out longest token first over the whole text;
//!   `tokenizers` takes the leftmost-longest match. They differ only when the end of one
//!   special token is the start of another at least as long, which no pair in Gemma 3's 6,414
//!   or SmolLM2's 17 special tokens does.
//! - Two splits of one SentencePiece piece rank differently here but tie in llama.cpp (same
//!   score, leftmost first); they differ only when both are candidate pairs at once in a word.
//! - A character missing from a SentencePiece vocabulary goes to bytes at once here, while
//!   llama.cpp could still merge it with a neighbour into a longer piece; in Gemma 3 every
//!   character of every piece is a piece itself, but for the literal space, which the `▁`
//!   escaping keeps out of the text.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, Template, TemplateProcessing};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    SplitDelimiterBehavior, Tokenizer,
};

use super::bpe::{Bpe, Pipeline};
use super::tokenizer::Tokenizer as OwnTokenizer;

/// SentencePiece's escaped space.
const SPACE: &str = "\u{2581}";

/// What the fix is, in every "cannot build" message.
const FIX: &str = "give `tokenizer:` with the model's tokenizer.json";

/// Texts llama.cpp turns into control tokens whatever their stored type (its end-of-turn,
/// end-of-generation and fill-in-the-middle detection in `llama_vocab::impl::load`), which puts
/// them among the special tokens split out of the text. llama.cpp takes the FIM ones only while
/// no metadata key names that role, and only the first it meets; promoting every one differs
/// only for a vocabulary holding two such texts for one role, neither of them a control token.
const CONTROL_LOOKING: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
    "<|eom_id|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "</s>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "[e~[",
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

/// llama.cpp's `llama_token_type` (the values of `tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_code(code: i64) -> Option<TokenType> {
        Some(match code {
            0 => TokenType::Undefined,
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }

    /// In llama.cpp's special-tokens cache: matched in the text before tokenizing.
    fn is_split_out(self) -> bool {
        matches!(
            self,
            TokenType::Control | TokenType::UserDefined | TokenType::Unknown
        )
    }
}

/// The vocabulary kinds this module builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `tokenizer.ggml.model = llama`.
    SentencePiece,
    /// `tokenizer.ggml.model = gpt2`, `tokenizer.ggml.pre = smollm`.
    ByteLevelSmollm,
}

/// Reads the GGUF header of `path` (not the weights) and builds its tokenizer.
pub fn from_gguf_file(path: &Path) -> Result<Tokenizer> {
    from_gguf(&read_header(path)?, path)
}

/// Checks the GGUF header of `path` for a tokenizer this module builds (the vocabulary kind, the
/// token arrays, the ids and flags) without building it: the merges are left to the build.
/// What `declab validate` and a run's preflight check for a model given without `tokenizer:`.
pub fn check_file(path: &Path) -> Result<()> {
    let ct = read_header(path)?;
    let md = Metadata { ct: &ct, path };
    let kind = kind(&md)?;
    let vocab = read_vocabulary(&md, kind)?;
    read_flags(&md, kind, vocab.tokens.len())?;
    Ok(())
}

fn read_header(path: &Path) -> Result<Content> {
    Ok(super::read_content(path, true)?.1)
}

/// The tokenizer described by the `tokenizer.ggml.*` metadata of `ct`, read from `path` (which
/// only names the file in errors).
pub fn from_gguf(ct: &Content, path: &Path) -> Result<Tokenizer> {
    let md = Metadata { ct, path };
    let kind = kind(&md)?;
    let vocab = read_vocabulary(&md, kind)?;
    build(&md, kind, &vocab)
}

fn kind(md: &Metadata) -> Result<Kind> {
    let path = md.path.display();
    let model = md.string("tokenizer.ggml.model")?;
    Ok(match model.as_str() {
        "llama" => Kind::SentencePiece,
        "gpt2" => {
            let pre = md.optional_string("tokenizer.ggml.pre")?;
            match pre.as_deref() {
                Some("smollm") => Kind::ByteLevelSmollm,
                other => bail!(
                    "{path}: `tokenizer.ggml.pre` is {}; declab builds a `gpt2` tokenizer from GGUF metadata only for the pre-tokenizer `smollm`; {FIX}",
                    other.map_or("missing".to_string(), |p| format!("{p:?}"))
                ),
            }
        }
        other => bail!(
            "{path}: `tokenizer.ggml.model` is {other:?}; declab builds tokenizers from GGUF metadata only for `llama` (SentencePiece BPE) and `gpt2` with `tokenizer.ggml.pre` = `smollm`; {FIX}"
        ),
    })
}

/// The tokens, their types and (SentencePiece) scores, checked against each other.
struct Vocabulary {
    tokens: Vec<String>,
    types: Vec<TokenType>,
    scores: Vec<f32>,
}

fn read_vocabulary(md: &Metadata, kind: Kind) -> Result<Vocabulary> {
    let path = md.path.display();
    let mut tokens = md.string_array("tokenizer.ggml.tokens")?;
    if tokens.is_empty() {
        bail!("{path}: `tokenizer.ggml.tokens` is empty");
    }
    if u32::try_from(tokens.len()).is_err() {
        bail!(
            "{path}: `tokenizer.ggml.tokens` holds {} tokens, more than token ids can number",
            tokens.len()
        );
    }
    // as llama.cpp does: an empty token cannot be matched, but keeps its id
    for (i, t) in tokens.iter_mut().enumerate() {
        if t.is_empty() {
            *t = format!("[EMPTY_{i}]");
        }
    }
    let n = tokens.len();
    let types = match md.get("tokenizer.ggml.token_type") {
        None => vec![TokenType::Normal; n],
        Some(_) => {
            let codes = md.int_array("tokenizer.ggml.token_type")?;
            if codes.len() != n {
                bail!(
                    "{path}: `tokenizer.ggml.token_type` has {} entries but `tokenizer.ggml.tokens` has {n}; the file is inconsistent",
                    codes.len()
                );
            }
            codes
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    TokenType::from_code(c).ok_or_else(|| {
                        anyhow!("{path}: `tokenizer.ggml.token_type` of token {i} is {c}, not a llama.cpp token type (0-6)")
                    })
                })
                .collect::<Result<Vec<_>>>()?
        }
    };
    let scores = if kind == Kind::SentencePiece {
        let scores = md.float_array("tokenizer.ggml.scores")?;
        if scores.len() != n {
            bail!(
                "{path}: `tokenizer.ggml.scores` has {} entries but `tokenizer.ggml.tokens` has {n}; the file is inconsistent",
                scores.len()
            );
        }
        if let Some(i) = scores.iter().position(|s| s.is_nan()) {
            bail!("{path}: `tokenizer.ggml.scores` of token {i} is NaN");
        }
        scores
    } else {
        Vec::new()
    };
    Ok(Vocabulary {
        tokens,
        types,
        scores,
    })
}

/// The special token ids and flags llama.cpp reads, with its defaults per vocabulary kind (the
/// padding, separator and mask ids play no part in tokenizing and are not read).
struct Flags {
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

fn read_flags(md: &Metadata, kind: Kind, n_tokens: usize) -> Result<Flags> {
    let id = |key: &str| -> Result<Option<u32>> {
        let Some(id) = md.optional_u32(key)? else {
            return Ok(None);
        };
        if id as usize >= n_tokens {
            bail!(
                "{}: `{key}` is {id}, outside the vocabulary of {n_tokens} tokens",
                md.path.display()
            );
        }
        Ok(Some(id))
    };
    let sentencepiece = kind == Kind::SentencePiece;
    let flags = Flags {
        bos: id("tokenizer.ggml.bos_token_id")?,
        eos: id("tokenizer.ggml.eos_token_id")?,
        unk: id("tokenizer.ggml.unknown_token_id")?,
        add_bos: md
            .optional_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(sentencepiece),
        add_eos: md
            .optional_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false),
        add_space_prefix: md
            .optional_bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(sentencepiece),
    };
    if flags.add_bos && flags.bos.is_none() {
        bail!(
            "{}: `tokenizer.ggml.add_bos_token` is set but `tokenizer.ggml.bos_token_id` is missing",
            md.path.display()
        );
    }
    if flags.add_eos && flags.eos.is_none() {
        bail!(
            "{}: `tokenizer.ggml.add_eos_token` is set but `tokenizer.ggml.eos_token_id` is missing",
            md.path.display()
        );
    }
    if !sentencepiece && flags.add_space_prefix {
        // llama.cpp ignores it when tokenizing a BPE vocabulary but strips a space when
        // detokenizing; not worth reproducing until a model needs it
        bail!(
            "{}: `tokenizer.ggml.add_space_prefix` is set on a `gpt2` vocabulary, which declab does not build; {FIX}",
            md.path.display()
        );
    }
    Ok(flags)
}

/// The tokenizer `ct` describes, as declab's own BPE ([`Bpe`]) where it covers the pipeline,
/// else as `tokenizers` builds it ([`from_gguf`]). The own BPE covers both kinds but a
/// SentencePiece vocabulary with `add_space_prefix` or without all 256 byte tokens, and
/// Phi-3's stripping special tokens. The metadata is read and checked the same way in both.
pub fn own_from_gguf(ct: &Content, path: &Path) -> Result<OwnTokenizer> {
    let md = Metadata { ct, path };
    let kind = kind(&md)?;
    let v = read_vocabulary(&md, kind)?;
    let flags = read_flags(&md, kind, v.tokens.len())?;
    let (vocab, merges) = vocab_and_merges(&md, kind, &v)?;
    let added = added_tokens(&md, &v)?;
    let pipeline = match kind {
        Kind::SentencePiece if !flags.add_space_prefix => Some(Pipeline::SentencePiece),
        Kind::SentencePiece => None,
        Kind::ByteLevelSmollm => Some(Pipeline::ByteLevel(byte_level_pre(&v.tokens)?)),
    };
    let plain = added
        .iter()
        .all(|a| !(a.lstrip || a.rstrip || a.single_word || a.normalized));
    if let Some(pipeline) = pipeline.filter(|_| plain) {
        // every text was checked to be in the vocabulary by `vocab_and_merges`
        let id = |t: &str| vocab[t];
        let merges = merges
            .iter()
            .enumerate()
            .map(|(rank, (l, r))| (id(l), id(r), rank as u32, id(&format!("{l}{r}"))))
            .collect();
        let added = added.iter().map(|a| (id(&a.content), a.special)).collect();
        let before = flags.bos.filter(|_| flags.add_bos).into_iter().collect();
        let after = flags.eos.filter(|_| flags.add_eos).into_iter().collect();
        drop(vocab);
        let n = v.tokens.len();
        // a vocabulary the own BPE cannot hold (a byte token missing) goes to `tokenizers`
        if let Ok(b) = Bpe::from_parts(v.tokens, n, merges, added, (before, after), pipeline) {
            return Ok(OwnTokenizer::Bpe(Box::new(b)));
        }
    }
    from_gguf(ct, path).map(OwnTokenizer::from)
}

/// The vocabulary as a map (each text once) and the merges, in rank order.
fn vocab_and_merges(
    md: &Metadata,
    kind: Kind,
    v: &Vocabulary,
) -> Result<(Vocab, Vec<(String, String)>)> {
    let path = md.path.display();
    let mut vocab = Vocab::default();
    vocab.reserve(v.tokens.len());
    for (id, t) in v.tokens.iter().enumerate() {
        if let Some(first) = vocab.insert(t.clone(), id as u32) {
            // llama.cpp asserts on this too: one of the two ids could never be produced
            bail!("{path}: `tokenizer.ggml.tokens` holds {t:?} twice (ids {first} and {id})");
        }
    }
    let merges = match kind {
        Kind::SentencePiece => sentencepiece_merges(v, &vocab),
        Kind::ByteLevelSmollm => gguf_merges(md, &vocab)?,
    };
    Ok((vocab, merges))
}

/// The byte-level pre-tokenizer: every digit alone, the GPT-2 split and byte mapping, then
/// the split at byte symbols the vocabulary lacks.
fn byte_level_pre(tokens: &[String]) -> Result<PreTokenizerWrapper> {
    let mut pre = vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ];
    pre.extend(missing_bytes_split(tokens)?);
    Ok(PreTokenizerWrapper::Sequence(PreTokenizerSequence::new(
        pre,
    )))
}

fn build(md: &Metadata, kind: Kind, v: &Vocabulary) -> Result<Tokenizer> {
    let path = md.path.display();
    let flags = read_flags(md, kind, v.tokens.len())?;
    let (vocab, merges) = vocab_and_merges(md, kind, v)?;
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges);
    if kind == Kind::SentencePiece {
        builder = builder.byte_fallback(true).fuse_unk(true);
        if let Some(unk) = flags.unk {
            builder = builder.unk_token(v.tokens[unk as usize].clone());
        }
    }
    let bpe = builder.build().map_err(|e| {
        anyhow!("{path}: the vocabulary and merges do not form a BPE tokenizer: {e}")
    })?;
    let mut tokenizer = Tokenizer::new(bpe);
    match kind {
        Kind::SentencePiece => {
            let escape = NormalizerWrapper::Replace(
                Replace::new(" ", SPACE).map_err(|e| anyhow!("building the normalizer: {e}"))?,
            );
            // A leading `▁` on every stretch of text between special tokens, as llama.cpp
            // adds one at the start and after each special token.
            let normalizer = if flags.add_space_prefix {
                NormalizerWrapper::Sequence(NormalizerSequence::new(vec![
                    NormalizerWrapper::Prepend(Prepend::new(SPACE.to_string())),
                    escape,
                ]))
            } else {
                escape
            };
            let mut decoders = vec![
                DecoderWrapper::Replace(
                    Replace::new(SPACE, " ").map_err(|e| anyhow!("building the decoder: {e}"))?,
                ),
                DecoderWrapper::ByteFallback(ByteFallback::new()),
                DecoderWrapper::Fuse(Fuse::new()),
            ];
            if flags.add_space_prefix {
                decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
            }
            tokenizer
                .with_normalizer(Some(normalizer))
                .with_pre_tokenizer(None::<PreTokenizerWrapper>)
                .with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
                    decoders,
                ))));
        }
        Kind::ByteLevelSmollm => {
            tokenizer
                .with_normalizer(None::<NormalizerWrapper>)
                .with_pre_tokenizer(Some(byte_level_pre(&v.tokens)?))
                .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::new(
                    false, true, true,
                ))));
        }
    }
    tokenizer.with_post_processor(post_processor(&flags, &v.tokens)?);
    tokenizer.add_tokens(&added_tokens(md, v)?);
    Ok(tokenizer)
}

/// A byte-level vocabulary may lack some of the 256 byte symbols (SmolLM2 lacks 21: bytes
/// that never occur in UTF-8 and a few control characters). llama.cpp keeps such a symbol in
/// the word while merging, so nothing merges across it, and drops it at the end; `tokenizers`
/// drops it first, letting its neighbours merge. Splitting the word at those symbols (after the
/// byte mapping) gives llama.cpp's result: the lone symbol then tokenizes to nothing.
fn missing_bytes_split(tokens: &[String]) -> Result<Option<PreTokenizerWrapper>> {
    let vocab: HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let mut missing: Vec<char> = ByteLevel::alphabet()
        .into_iter()
        .filter(|c| !vocab.contains(c.encode_utf8(&mut [0; 4]) as &str))
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    missing.sort_unstable();
    let class: String = missing
        .iter()
        .map(|c| format!("\\x{{{:X}}}", *c as u32))
        .collect();
    let split = Split::new(
        SplitPattern::Regex(format!("[{class}]")),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| anyhow!("building the split at missing byte symbols: {e}"))?;
    Ok(Some(PreTokenizerWrapper::Split(split)))
}

/// BOS and EOS around each sequence, as the metadata asks (llama.cpp has no pairs; a pair
/// gets each sequence wrapped alike).
fn post_processor(flags: &Flags, tokens: &[String]) -> Result<Option<PostProcessorWrapper>> {
    let bos = flags.bos.filter(|_| flags.add_bos);
    let eos = flags.eos.filter(|_| flags.add_eos);
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let err = |e: String| anyhow!("building the BOS/EOS template: {e}");
    let mut specials = Vec::new();
    let mut single = Vec::new();
    let mut pair = Vec::new();
    if let Some(id) = bos {
        specials.push(
            SpecialToken::new("bos".into(), vec![id], vec![tokens[id as usize].clone()])
                .map_err(|e| err(e.to_string()))?,
        );
        single.push("bos");
        pair.push("bos");
    }
    single.push("$A");
    pair.push("$A");
    if let Some(id) = eos {
        specials.push(
            SpecialToken::new("eos".into(), vec![id], vec![tokens[id as usize].clone()])
                .map_err(|e| err(e.to_string()))?,
        );
        single.push("eos");
        pair.push("eos");
    }
    if bos.is_some() {
        pair.push("bos:1");
    }
    pair.push("$B:1");
    if eos.is_some() {
        pair.push("eos:1");
    }
    let template = TemplateProcessing::builder()
        .single(Template::try_from(single).map_err(err)?)
        .pair(Template::try_from(pair).map_err(err)?)
        .special_tokens(specials)
        .build()
        .map_err(|e| err(e.to_string()))?;
    Ok(Some(PostProcessorWrapper::Template(template)))
}

/// The tokens llama.cpp splits out of the text before tokenizing, as added tokens matched on
/// the raw text. Control and unknown tokens are special (skipped when decoding with
/// `skip_special_tokens`); user-defined ones are text.
fn added_tokens(md: &Metadata, v: &Vocabulary) -> Result<Vec<AddedToken>> {
    let control_looking: HashSet<&str> = CONTROL_LOOKING.iter().copied().collect();
    // llama.cpp strips the whitespace after Phi-3's special tokens (by the model's name)
    let name = md
        .optional_string("general.name")?
        .unwrap_or_default()
        .to_lowercase();
    let phi3 = name.contains("phi-3") || name.contains("phi3");
    let mut added = Vec::new();
    for (t, &ty) in v.tokens.iter().zip(&v.types) {
        let control = ty == TokenType::Control || control_looking.contains(t.as_str());
        if !(control || ty.is_split_out()) {
            continue;
        }
        let special = control || ty == TokenType::Unknown;
        let rstrip = phi3 && !matches!(t.as_str(), "<unk>" | "<s>" | "<|endoftext|>");
        added.push(
            AddedToken::from(t.clone(), special)
                .normalized(false)
                .rstrip(rstrip),
        );
    }
    Ok(added)
}

/// A SentencePiece vocabulary's merges: every split of every piece into two pieces of the
/// vocabulary, ranked by the merged piece's score (highest first). Splits of one piece tie in
/// llama.cpp, which takes the leftmost pair in the text; here they follow by split point.
fn sentencepiece_merges(v: &Vocabulary, vocab: &Vocab) -> Vec<(String, String)> {
    let mut splits: Vec<(u32, u32)> = Vec::new();
    for (id, piece) in v.tokens.iter().enumerate() {
        for (at, _) in piece.char_indices().skip(1) {
            if vocab.contains_key(&piece[..at]) && vocab.contains_key(&piece[at..]) {
                splits.push((id as u32, at as u32));
            }
        }
    }
    splits.sort_unstable_by(|a, b| {
        let (sa, sb) = (v.scores[a.0 as usize], v.scores[b.0 as usize]);
        sb.total_cmp(&sa).then(a.cmp(b))
    });
    splits
        .into_iter()
        .map(|(id, at)| {
            let piece = &v.tokens[id as usize];
            let (l, r) = piece.split_at(at as usize);
            (l.to_string(), r.to_string())
        })
        .collect()
}

/// `tokenizer.ggml.merges` ("left right" strings, rank = position). llama.cpp splits at the
/// first space after the first byte and keeps the first of duplicate pairs.
fn gguf_merges(md: &Metadata, vocab: &Vocab) -> Result<Vec<(String, String)>> {
    let path = md.path.display();
    let key = "tokenizer.ggml.merges";
    let raw = md.string_array(key)?;
    let mut seen = HashSet::with_capacity(raw.len());
    let mut merges = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        // a byte search: the first byte may begin a multi-byte character
        let at = m
            .bytes()
            .skip(1)
            .position(|b| b == b' ')
            .map(|p| p + 1)
            .ok_or_else(|| {
                anyhow!("{path}: `{key}` entry {i} ({m:?}) is not two tokens separated by a space")
            })?;
        let (l, r) = (&m[..at], &m[at + 1..]);
        for part in [l, r] {
            if !vocab.contains_key(part) {
                bail!("{path}: `{key}` entry {i} ({m:?}) names {part:?}, which is not in `tokenizer.ggml.tokens`");
            }
        }
        if !vocab.contains_key(&format!("{l}{r}")) {
            bail!("{path}: `{key}` entry {i} ({m:?}) makes {:?}, which is not in `tokenizer.ggml.tokens`", format!("{l}{r}"));
        }
        if seen.insert((l, r)) {
            merges.push((l.to_string(), r.to_string()));
        }
    }
    Ok(merges)
}

/// Typed access to the metadata, every error naming the file and the key.
struct Metadata<'a> {
    ct: &'a Content,
    path: &'a Path,
}

impl Metadata<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.ct.metadata.get(key)
    }

    fn missing(&self, key: &str) -> anyhow::Error {
        anyhow!(
            "{}: the GGUF metadata has no `{key}`, so declab cannot build the tokenizer from it; {FIX}",
            self.path.display()
        )
    }

    fn wrong(&self, key: &str, what: &str, v: &Value) -> anyhow::Error {
        anyhow!(
            "{}: `{key}` is a {:?}, not {what}",
            self.path.display(),
            v.value_type()
        )
    }

    fn string(&self, key: &str) -> Result<String> {
        self.optional_string(key)?.ok_or_else(|| self.missing(key))
    }

    fn optional_string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .to_string()
                .map(|s| Some(s.clone()))
                .map_err(|_| self.wrong(key, "a string", v)),
        }
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .to_bool()
                .map(Some)
                .map_err(|_| self.wrong(key, "a boolean", v)),
        }
    }

    fn optional_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => integer(v)
                .and_then(|i| u32::try_from(i).ok())
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a token id", v)),
        }
    }

    fn array(&self, key: &str) -> Result<&Vec<Value>> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.to_vec().map_err(|_| self.wrong(key, "an array", v))
    }

    /// The array `key`, each entry converted by `convert`; an entry it refuses is an error
    /// naming the key, the entry and what it should have been (`what`).
    fn typed_array<T>(
        &self,
        key: &str,
        what: &str,
        convert: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                convert(v).ok_or_else(|| {
                    anyhow!(
                        "{}: `{key}` entry {i} is a {:?}, not {what}",
                        self.path.display(),
                        v.value_type()
                    )
                })
            })
            .collect()
    }

    fn string_array(&self, key: &str) -> Result<Vec<String>> {
        self.typed_array(key, "a string", |v| v.to_string().ok().cloned())
    }

    fn int_array(&self, key: &str) -> Result<Vec<i64>> {
        self.typed_array(key, "an integer", integer)
    }

    fn float_array(&self, key: &str) -> Result<Vec<f32>> {
        self.typed_array(key, "a number", |v| match v {
            Value::F32(x) => Some(*x),
            Value::F64(x) => Some(*x as f32),
            // llama.cpp also reads int32 scores
            Value::I32(x) => Some(*x as f32),
            _ => None,
        })
    }
}

/// Any GGUF integer value, widened.
fn integer(v: &Value) -> Option<i64> {
    match *v {
        Value::U8(x) => Some(x.into()),
        Value::I8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::I16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::I32(x) => Some(x.into()),
        Value::U64(x) => i64::try_from(x).ok(),
        Value::I64(x) => Some(x),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::VersionedMagic;
    use std::collections::HashMap;

    const CONTROL: i32 = 3;
    const USER: i32 = 4;
    const BYTE: i32 = 6;
    const NORMAL: i32 = 1;

    fn content(metadata: Vec<(&str, Value)>) -> Content {
        Content {
            magic: VersionedMagic::GgufV3,
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    fn strings(v: &[String]) -> Value {
        Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
    }

    /// A small SentencePiece vocabulary: (piece, score, type), then the 256 byte tokens.
    /// "bc" scores above "ab" although its id is higher, and "abc" is not a piece, so "abc"
    /// tokenizes as a + bc only when merges follow scores (not ids).
    fn spm_pieces() -> Vec<(String, f32, i32)> {
        let mut v: Vec<(String, f32, i32)> = [
            ("<pad>", -1000.0, CONTROL),
            ("<eos>", -1000.0, CONTROL),
            ("<bos>", -1000.0, CONTROL),
            ("<unk>", -1000.0, CONTROL),
            ("<start_of_turn>", -1000.0, CONTROL),
            ("\n", 0.0, USER),
            ("  ", 0.0, USER),
            ("▁", -1.0, NORMAL),
            ("a", -2.0, NORMAL),
            ("b", -3.0, NORMAL),
            ("c", -4.0, NORMAL),
            ("ab", -20.0, NORMAL),
            ("bc", -10.0, NORMAL),
            ("▁a", -5.0, NORMAL),
            ("▁b", -6.0, NORMAL),
            ("aa", -7.0, NORMAL),
            ("aaa", -6.5, NORMAL),
            ("▁ab", -8.0, NORMAL),
        ]
        .into_iter()
        .map(|(t, s, ty)| (t.to_string(), s, ty))
        .collect();
        v.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, BYTE)));
        v
    }

    fn spm_metadata(
        pieces: &[(String, f32, i32)],
        add_space_prefix: bool,
    ) -> Vec<(&'static str, Value)> {
        let tokens: Vec<String> = pieces.iter().map(|p| p.0.clone()).collect();
        vec![
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            (
                "tokenizer.ggml.scores",
                Value::Array(pieces.iter().map(|p| Value::F32(p.1)).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(pieces.iter().map(|p| Value::I32(p.2)).collect()),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(2)),
            ("tokenizer.ggml.eos_token_id", Value::U32(1)),
            ("tokenizer.ggml.unknown_token_id", Value::U32(3)),
            ("tokenizer.ggml.padding_token_id", Value::U32(0)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
            (
                "tokenizer.ggml.add_space_prefix",
                Value::Bool(add_space_prefix),
            ),
        ]
    }

    fn spm(add_space_prefix: bool) -> Tokenizer {
        let ct = content(spm_metadata(&spm_pieces(), add_space_prefix));
        from_gguf(&ct, Path::new("spm.gguf")).unwrap()
    }

    /// Token ids of `pieces` in `t`'s vocabulary (the expected sequences are written as pieces).
    fn ids(t: &Tokenizer, pieces: &[&str]) -> Vec<u32> {
        pieces
            .iter()
            .map(|p| {
                t.token_to_id(p)
                    .unwrap_or_else(|| panic!("{p:?} is not a token"))
            })
            .collect()
    }

    fn encode(t: &Tokenizer, text: &str) -> Vec<u32> {
        t.encode(text, true).unwrap().get_ids().to_vec()
    }

    #[test]
    fn sentencepiece_merges_follow_scores_then_the_leftmost_pair() {
        let t = spm(false);
        // bc (-10) before ab (-20): a + bc, although ab has the lower id
        assert_eq!(encode(&t, "abc"), ids(&t, &["<bos>", "a", "bc"]));
        // four a's: the leftmost "aa" first, then "aa"+"a" = "aaa" (-6.5) beats "a"+"a"
        assert_eq!(encode(&t, "aaaa"), ids(&t, &["<bos>", "aaa", "a"]));
        // spaces become ▁ and merge forward; no space is added in front
        assert_eq!(encode(&t, "a b"), ids(&t, &["<bos>", "a", "▁b"]));
        assert_eq!(encode(&t, " ab"), ids(&t, &["<bos>", "▁ab"]));
    }

    #[test]
    fn sentencepiece_spells_unknown_characters_as_bytes() {
        let t = spm(false);
        // é is U+00E9, UTF-8 C3 A9; z is not a piece either
        assert_eq!(
            encode(&t, "aéz"),
            ids(&t, &["<bos>", "a", "<0xC3>", "<0xA9>", "<0x7A>"])
        );
        assert_eq!(t.decode(&encode(&t, "aéz b"), true).unwrap(), "aéz b");
    }

    #[test]
    fn special_and_user_defined_tokens_are_split_out_of_the_raw_text() {
        let t = spm(false);
        assert_eq!(
            encode(&t, "<start_of_turn>ab\nc  b"),
            ids(
                &t,
                &["<bos>", "<start_of_turn>", "ab", "\n", "c", "  ", "b"]
            )
        );
        assert_eq!(encode(&t, ""), ids(&t, &["<bos>"]));
        // control tokens are dropped when decoding, user-defined ones are text
        let text = t
            .decode(&encode(&t, "<start_of_turn>ab\nc  b"), true)
            .unwrap();
        assert_eq!(text, "ab\nc  b");
        // without special tokens: no BOS
        let plain = t.encode("ab", false).unwrap().get_ids().to_vec();
        assert_eq!(plain, ids(&t, &["ab"]));
    }

    #[test]
    fn add_space_prefix_puts_a_space_before_each_stretch_of_text() {
        let t = spm(true);
        assert_eq!(
            encode(&t, "ab<start_of_turn>a"),
            ids(&t, &["<bos>", "▁ab", "<start_of_turn>", "▁a"])
        );
        // decoding takes the added space off again
        assert_eq!(t.decode(&ids(&t, &["▁ab", "▁b"]), true).unwrap(), "ab b");
    }

    /// A small SmolLM-style byte-level vocabulary: two control tokens, the byte symbols but
    /// `Ć` (byte 0x06, missing as in SmolLM2), and the merges that make "hello" and " w".
    fn bpe_metadata(pre: &str, merges: &[&str]) -> Vec<(&'static str, Value)> {
        let mut tokens = vec!["<|endoftext|>".to_string(), "<|im_start|>".to_string()];
        let byte_chars = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet();
        let mut alphabet: Vec<char> = byte_chars.into_iter().filter(|&c| c != 'Ć').collect();
        alphabet.sort_unstable();
        tokens.extend(alphabet.iter().map(|c| c.to_string()));
        tokens.extend(["he", "ll", "hell", "hello", "Ġw"].map(String::from));
        let mut types = vec![Value::I32(CONTROL); 2];
        types.resize(tokens.len(), Value::I32(NORMAL));
        vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String(pre.into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            (
                "tokenizer.ggml.merges",
                Value::Array(
                    merges
                        .iter()
                        .map(|m| Value::String(m.to_string()))
                        .collect(),
                ),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(0)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ]
    }

    const MERGES: &[&str] = &["h e", "l l", "he ll", "hell o", "Ġ w", "h e"];

    #[test]
    fn smollm_splits_digits_then_words_then_merges_bytes() {
        let ct = content(bpe_metadata("smollm", MERGES));
        let t = from_gguf(&ct, Path::new("smol.gguf")).unwrap();
        assert_eq!(
            encode(&t, "hello world 42"),
            ids(&t, &["hello", "Ġw", "o", "r", "l", "d", "Ġ", "4", "2"])
        );
        // each digit alone, even inside a word; special tokens split out; no BOS
        assert_eq!(
            encode(&t, "<|im_start|>he12"),
            ids(&t, &["<|im_start|>", "he", "1", "2"])
        );
        assert_eq!(
            t.decode(&encode(&t, "<|im_start|>hello  wé\n"), true)
                .unwrap(),
            "hello  wé\n"
        );
    }

    #[test]
    fn a_byte_missing_from_the_vocabulary_blocks_merges_and_vanishes() {
        let ct = content(bpe_metadata("smollm", MERGES));
        let t = from_gguf(&ct, Path::new("smol.gguf")).unwrap();
        // as llama.cpp: "h" and "e" do not merge across the missing \x06, which gives nothing
        assert_eq!(encode(&t, "h\u{6}ello"), ids(&t, &["h", "e", "ll", "o"]));
        assert_eq!(encode(&t, "hello\u{6}"), ids(&t, &["hello"]));
    }

    /// declab's own BPE from the same metadata gives `tokenizers`' ids and texts where it
    /// covers the pipeline, and is `tokenizers` itself where it does not (`add_space_prefix`, a
    /// SentencePiece vocabulary without its byte tokens), also after its cache round trip.
    #[test]
    fn own_bpe_from_metadata_equals_tokenizers() {
        let mut no_bytes = spm_pieces();
        no_bytes.truncate(no_bytes.len() - 256);
        let cases = [
            ("spm", spm_metadata(&spm_pieces(), false), true),
            (
                "spm, space prefix",
                spm_metadata(&spm_pieces(), true),
                false,
            ),
            ("spm, no byte tokens", spm_metadata(&no_bytes, false), false),
            ("smollm", bpe_metadata("smollm", MERGES), true),
        ];
        let texts = [
            "",
            "abc aab aaab",
            "ab b<start_of_turn>c\n\n  a   b",
            "é中🦀 x\u{6}",
            "hello world 42",
            "<|im_start|>he12<|endoftext|>",
            "h\u{6}ello hello\u{6}",
            "<|im_start|>hello  wé\n",
            " 's 'll \t\t x  \n y",
        ];
        for (name, metadata, own) in cases {
            let ct = content(metadata);
            let path = Path::new("x.gguf");
            let hf = from_gguf(&ct, path).unwrap();
            let ours = own_from_gguf(&ct, path).unwrap();
            let mut tokenizers = vec![];
            match ours {
                OwnTokenizer::Bpe(b) => {
                    assert!(own, "{name}: built as declab's own BPE");
                    let back = Bpe::from_bytes(&b.to_bytes()).unwrap();
                    tokenizers.push(OwnTokenizer::Bpe(b));
                    tokenizers.push(OwnTokenizer::Bpe(Box::new(back)));
                }
                t @ OwnTokenizer::Hf(_) => {
                    assert!(!own, "{name}: left to tokenizers");
                    tokenizers.push(t);
                }
            }
            let n = hf.get_vocab_size(true) as u32;
            for t in &tokenizers {
                assert_eq!(t.vocab_size(), hf.get_vocab_size(false), "{name}");
                for text in texts {
                    for special in [false, true] {
                        let want = hf.encode(text, special).unwrap().get_ids().to_vec();
                        assert_eq!(t.encode(text, special).unwrap(), want, "{name}: {text:?}");
                    }
                }
                let all: Vec<u32> = (0..n + 2).collect();
                for skip in [false, true] {
                    assert_eq!(
                        t.decode(&all, skip).unwrap(),
                        hf.decode(&all, skip).unwrap(),
                        "{name}"
                    );
                    for id in 0..n {
                        assert_eq!(
                            t.decode(&[id], skip).unwrap(),
                            hf.decode(&[id], skip).unwrap(),
                            "{name}: id {id}"
                        );
                    }
                }
            }
        }
    }

    fn error(metadata: Vec<(&'static str, Value)>) -> String {
        let ct = content(metadata);
        format!("{:#}", from_gguf(&ct, Path::new("bad.gguf")).unwrap_err())
    }

    fn replaced(
        mut md: Vec<(&'static str, Value)>,
        key: &'static str,
        value: Option<Value>,
    ) -> Vec<(&'static str, Value)> {
        md.retain(|(k, _)| *k != key);
        if let Some(v) = value {
            md.push((key, v));
        }
        md
    }

    #[test]
    fn unsupported_vocabularies_name_the_key_and_the_fix() {
        let spm = spm_metadata(&spm_pieces(), false);
        let e = error(replaced(
            spm.clone(),
            "tokenizer.ggml.model",
            Some(Value::String("bert".into())),
        ));
        assert!(
            e.contains("bad.gguf")
                && e.contains("`tokenizer.ggml.model` is \"bert\"")
                && e.contains("give `tokenizer:`"),
            "{e}"
        );
        let e = error(bpe_metadata("llama-bpe", MERGES));
        assert!(
            e.contains("`tokenizer.ggml.pre` is \"llama-bpe\"") && e.contains("give `tokenizer:`"),
            "{e}"
        );
        let e = error(replaced(
            bpe_metadata("smollm", MERGES),
            "tokenizer.ggml.pre",
            None,
        ));
        assert!(e.contains("`tokenizer.ggml.pre` is missing"), "{e}");
        let e = error(replaced(spm, "tokenizer.ggml.model", None));
        assert!(
            e.contains("no `tokenizer.ggml.model`") && e.contains("give `tokenizer:`"),
            "{e}"
        );
    }

    #[test]
    fn malformed_metadata_is_an_error_with_context() {
        let pieces = spm_pieces();
        let spm = || spm_metadata(&pieces, false);
        let cases: Vec<(Vec<(&'static str, Value)>, &str)> = vec![
            (
                replaced(spm(), "tokenizer.ggml.tokens", None),
                "no `tokenizer.ggml.tokens`",
            ),
            (
                replaced(spm(), "tokenizer.ggml.tokens", Some(Value::U32(3))),
                "`tokenizer.ggml.tokens` is a U32, not an array",
            ),
            (
                replaced(spm(), "tokenizer.ggml.tokens", Some(Value::Array(vec![]))),
                "`tokenizer.ggml.tokens` is empty",
            ),
            (
                replaced(spm(), "tokenizer.ggml.scores", Some(Value::Array(vec![Value::F32(0.0)]))),
                "`tokenizer.ggml.scores` has 1 entries but `tokenizer.ggml.tokens` has 274",
            ),
            (
                replaced(spm(), "tokenizer.ggml.scores", None),
                "no `tokenizer.ggml.scores`",
            ),
            (
                replaced(spm(), "tokenizer.ggml.token_type", Some(Value::Array(vec![Value::I32(1); 3]))),
                "`tokenizer.ggml.token_type` has 3 entries",
            ),
            (
                replaced(spm(), "tokenizer.ggml.token_type", Some(Value::Array(vec![Value::I32(9); 274]))),
                "`tokenizer.ggml.token_type` of token 0 is 9",
            ),
            (
                replaced(spm(), "tokenizer.ggml.bos_token_id", Some(Value::U32(274))),
                "`tokenizer.ggml.bos_token_id` is 274, outside the vocabulary of 274 tokens",
            ),
            (
                replaced(spm(), "tokenizer.ggml.unknown_token_id", Some(Value::I32(-1))),
                "`tokenizer.ggml.unknown_token_id` is a I32, not a token id",
            ),
            (
                replaced(spm(), "tokenizer.ggml.add_bos_token", Some(Value::U8(1))),
                "`tokenizer.ggml.add_bos_token` is a U8, not a boolean",
            ),
            (
                replaced(spm(), "tokenizer.ggml.bos_token_id", None),
                "`tokenizer.ggml.add_bos_token` is set but `tokenizer.ggml.bos_token_id` is missing",
            ),
            (
                bpe_metadata("smollm", &["h e", "he"]),
                "`tokenizer.ggml.merges` entry 1 (\"he\") is not two tokens separated by a space",
            ),
            (
                bpe_metadata("smollm", &["h q", "he"]),
                "entry 0 (\"h q\") makes \"hq\", which is not in `tokenizer.ggml.tokens`",
            ),
            (
                replaced(bpe_metadata("smollm", MERGES), "tokenizer.ggml.merges", None),
                "no `tokenizer.ggml.merges`",
            ),
        ];
        for (md, needle) in cases {
            let e = error(md);
            assert!(
                e.contains("bad.gguf") && e.contains(needle),
                "{needle}: {e}"
            );
        }
        let mut dup = spm_pieces();
        dup[10].0 = "b".into();
        let e = error(spm_metadata(&dup, false));
        assert!(e.contains("holds \"b\" twice (ids 9 and 10)"), "{e}");
        let mut nan = spm_pieces();
        nan[9].1 = f32::NAN;
        let e = error(spm_metadata(&nan, false));
        assert!(
            e.contains("`tokenizer.ggml.scores` of token 9 is NaN"),
            "{e}"
        );
    }
}
