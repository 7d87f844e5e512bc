//! The real Gemma 3 270M (fetched by `make models`) through the CLI: greedy output is coherent
//! English, identical across runs and sample indices; sampled outputs differ across sample
//! indices and are identical across runs, batched or one at a time.

mod common;

use common::*;

fn english_score(text: &str) -> f64 {
    const COMMON: &[&str] = &[
        "the", "a", "and", "to", "of", "in", "was", "he", "she", "it", "i", "you", "is", "for",
        "on", "that", "with", "his", "her", "they", "my", "we",
    ];
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return 0.0;
    }
    words
        .iter()
        .filter(|w| COMMON.contains(&w.as_str()))
        .count() as f64
        / words.len() as f64
}

#[test]
fn gemma3_greedy_is_coherent_and_everything_reproduces() {
    let models = real_models_dir();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: real\nseed: 7\nmodels:\n  - id: gemma3-270m\n    gguf: {m}/gemma-3-270m/gemma-3-270m-q4_k_m.gguf\n    tokenizer: {m}/gemma-3-270m/tokenizer.json\n\
prompts:\n  - {{id: fox, text: \"The quick brown fox\"}}\n  - {{id: story, text: \"Once upon a time, in a small village by the sea, there lived\"}}\n\
samples: 2\nmax_new_tokens: 24\nstrategies:\n  - kind: greedy\n  - {{kind: temperature, temperature: 1.0}}\n  - {{kind: top_p, top_p: 0.9, temperature: 1.0}}\n",
        m = models.display()
    );
    let cfg = dir.path().join("real.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", a.to_str().unwrap()])
        .assert()
        .success();
    // the second run decodes one sample at a time: batching must not change any sample
    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
            "--batch",
            "1",
        ])
        .assert()
        .success();
    let ra = read_records(&a.join("samples.jsonl"));
    let rb = read_records(&b.join("samples.jsonl"));
    assert_eq!(ra.len(), 12);
    assert_eq!(
        without_timing(&ra),
        without_timing(&rb),
        "the same YAML must give identical samples, batched (a) or not (b)"
    );

    for prompt in ["fox", "story"] {
        let greedy: Vec<_> = ra
            .iter()
            .filter(|r| r.prompt_id == prompt && r.strategy == "greedy")
            .collect();
        assert_eq!(
            greedy[0].text, greedy[1].text,
            "greedy is the same for every sample index"
        );
        let score = english_score(&greedy[0].text);
        assert!(
            greedy[0].token_ids.len() >= 8,
            "greedy stopped too early: {:?}",
            greedy[0].text
        );
        assert!(
            score >= 0.15,
            "greedy output does not look like English ({score:.2}): {:?}",
            greedy[0].text
        );
        for strat in ["temperature(t=1.0)", "top_p(p=0.9,t=1.0)"] {
            let s: Vec<_> = ra
                .iter()
                .filter(|r| r.prompt_id == prompt && r.strategy == strat)
                .collect();
            assert_ne!(
                s[0].token_ids, s[1].token_ids,
                "{strat}: sample indices must differ"
            );
        }
    }
    // traces look like a real distribution over Gemma's 262k vocabulary
    for r in &ra {
        assert!(r
            .trace
            .entropy
            .iter()
            .all(|&h| h >= 0.0 && (h as f64) <= (262144f64).ln()));
        assert!(r.trace.logprob.iter().all(|&l| l <= 0.0));
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        m["models"][0]["weights_sha256"],
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    );
    assert_eq!(m["models"][0]["vocab_size"], 262144);
}

/// `declab bench` on the real model: a short table written as JSON and CSV for every strategy,
/// and `--save-logits` writing a fixture of real rows the criterion benches can read.
#[test]
fn bench_measures_every_strategy_and_saves_a_real_logit_fixture() {
    let models = real_models_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    declab()
        .env("DECLAB_MODELS", &models)
        .args(["bench", "--vocab", "4096", "--iters", "3", "--tokens", "2"])
        .args(["--batch-tokens", "3", "--out", out.to_str().unwrap()])
        .assert()
        .success();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bench.json")).unwrap()).unwrap();
    let n = declab::config::strategy::examples().len();
    assert_eq!(report["sampler"].as_array().unwrap().len(), n);
    assert_eq!(report["generation"].as_array().unwrap().len(), n);
    // the batched generation: every strategy, two rows each, in one batch
    let batched = report["batched"].as_array().unwrap();
    assert_eq!(batched.len(), n);
    for row in batched {
        assert_eq!(row["batch"], 2 * n, "{row}");
        assert_eq!(row["tokens"], 6, "{row}");
        let share = row["share_pct"].as_f64().unwrap();
        assert!(share > 0.0 && share < 100.0, "{row}");
    }
    assert!(report["logits_source"]
        .as_str()
        .unwrap()
        .contains("real Gemma"));
    for row in report["sampler"].as_array().unwrap() {
        assert!(row["us_median"].as_f64().unwrap() > 0.0, "{row}");
    }
    let csv = std::fs::read_to_string(out.join("bench.csv")).unwrap();
    assert!(csv.lines().count() > n, "{csv}");

    let fixture = dir.path().join("f.f16");
    declab()
        .env("DECLAB_MODELS", &models)
        .args([
            "bench",
            "--save-logits",
            fixture.to_str().unwrap(),
            "--fixture-rows",
            "2",
        ])
        .assert()
        .success();
    let rows = declab::bench::read_logit_fixture(&fixture).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.len() == 262_144));
    // the rows span the entropy range: the first is the most confident
    let h = |r: &[f32]| declab::strategy::kernels::dist_stats(r).entropy_nats;
    assert!(
        h(&rows[0]) < h(&rows[1]),
        "{} vs {}",
        h(&rows[0]),
        h(&rows[1])
    );
}

/// declab's one-pass tokenizer.json reader builds the same `tokenizers` tokenizer as
/// `tokenizers`' own deserializer on the real Gemma 3 file (vocabulary, added tokens, merges,
/// encodings).
#[test]
fn fast_tokenizer_load_equals_tokenizers_own() {
    let path = real_models_dir().join("gemma-3-270m/tokenizer.json");
    let fast = declab::engine::tokenizer::load_hf(&path).unwrap();
    let slow = tokenizers::Tokenizer::from_file(&path).unwrap();
    assert_eq!(fast.get_vocab(true), slow.get_vocab(true));
    assert_eq!(
        fast.get_added_tokens_decoder(),
        slow.get_added_tokens_decoder()
    );
    assert_eq!(
        fast.to_string(false).unwrap(),
        slow.to_string(false).unwrap()
    );
    for s in [
        "The lighthouse keeper had not seen a ship in eleven years, until one foggy morning",
        "<start_of_turn>user\nWrite a haiku.<end_of_turn>\n<start_of_turn>model\n",
        "  spaces\t\ttabs\n\n\nnewlines 123456789 ünïcödé 漢字 🦀🦀 <unused7> <image_soft_token>",
    ] {
        for special in [false, true] {
            let (a, b) = (
                fast.encode(s, special).unwrap(),
                slow.encode(s, special).unwrap(),
            );
            assert_eq!(a.get_ids(), b.get_ids(), "{s:?}");
            assert_eq!(
                fast.decode(a.get_ids(), false).unwrap(),
                slow.decode(b.get_ids(), false).unwrap()
            );
        }
    }
}

/// Seeded random texts for comparing tokenizers: fragments that stress each step (spaces and
/// `▁`, runs of newlines and tabs that have their own merges, added tokens whole and cut,
/// characters outside the vocabulary that fall back to bytes or are missing byte symbols,
/// digits, contractions, combining marks, scripts) and tokens' decoded texts, joined.
fn random_texts(texts: &[String], n: usize, seed: u64) -> Vec<String> {
    use rand::{Rng, SeedableRng};
    const FRAGMENTS: &[&str] = &[
        " ",
        "  ",
        "   ",
        "\n",
        "\n\n",
        "\n\n\n\n",
        "\t",
        "\t\t",
        "\u{2581}",
        "\u{2581} ",
        "the",
        "The",
        " the",
        "ing",
        "un",
        "believ",
        "able",
        ".",
        ",",
        "!",
        "?",
        "'",
        "\"",
        "-",
        "0",
        "12",
        "345",
        "2026",
        "<",
        ">",
        "</",
        "<start_of_turn>",
        "<end_of_turn>",
        "<bos>",
        "<eos>",
        "<unused7>",
        "<image_soft_token>",
        "<start_of",
        "_turn>",
        "<0x0A>",
        "<pad>",
        "é",
        "e\u{301}",
        "ñ",
        "ß",
        "Ω",
        "ж",
        "中文",
        "漢字",
        "日本語",
        "한국어",
        "العربية",
        "हिन्दी",
        "🦀",
        "👩‍👩‍👧",
        "\u{1F9EA}",
        "\u{E000}",
        "\u{10FFFD}",
        "\u{FEFF}",
        "\u{200B}",
        "\r\n",
        "\u{7}",
        "http://",
        "www.",
        "```",
        "    ",
        "\\",
        "{\"a\": 1}",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<|im_",
        "'s",
        "'ll",
        " 're",
        "\u{4}",
        "\u{1D}",
        "x\u{13}y",
        "9876543210",
        "3.14",
        "  \n",
        " \t ",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let parts = rng.random_range(0..24);
            (0..parts)
                .map(|_| {
                    if rng.random_bool(0.3) {
                        texts[rng.random_range(0..texts.len())].clone()
                    } else {
                        FRAGMENTS[rng.random_range(0..FRAGMENTS.len())].to_string()
                    }
                })
                .collect()
        })
        .collect()
}

/// declab's own BPE (what `engine::tokenizer::load` gives for Gemma 3's file, built from the
/// JSON and read back from its cache) against `tokenizers` on the same file.
#[test]
fn own_bpe_equals_tokenizers_on_gemma() {
    use declab::engine::bpe::Bpe;
    use declab::engine::tokenizer::Tokenizer;
    let path = real_models_dir().join("gemma-3-270m/tokenizer.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let built = Bpe::from_json(&text).unwrap();
    let cached = Bpe::from_bytes(&built.to_bytes()).unwrap();
    let loaded = declab::engine::tokenizer::load(&path).unwrap();
    let hf = tokenizers::Tokenizer::from_file(&path).unwrap();
    assert_own_bpe_equals_tokenizers(
        "gemma-3-270m/tokenizer.json",
        vec![
            Tokenizer::Bpe(Box::new(built)),
            Tokenizer::Bpe(Box::new(cached)),
            loaded,
        ],
        &hf,
    );
}

/// The same comparison for the tokenizers declab builds from a GGUF's metadata: SmolLM2's
/// byte-level BPE and Gemma 3's SentencePiece vocabulary, each built from the header, read
/// back from its cache, and loaded as a run loads it, against the `tokenizers` tokenizer
/// built from the same metadata (which `tests/tokenizer_reference.rs` holds to llama.cpp).
#[test]
fn own_bpe_equals_tokenizers_on_the_gguf_vocabularies() {
    use declab::engine::bpe::Bpe;
    use declab::engine::gguf_tokenizer;
    use declab::engine::tokenizer::Tokenizer;
    for (name, path) in real_ggufs() {
        let mut file = std::fs::File::open(&path).unwrap();
        let ct = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
        let Tokenizer::Bpe(built) = gguf_tokenizer::own_from_gguf(&ct, &path).unwrap() else {
            panic!("{name}: the GGUF's tokenizer should build as declab's own BPE");
        };
        let cached = Bpe::from_bytes(&built.to_bytes()).unwrap();
        let loaded = declab::engine::tokenizer::load_gguf(&path).unwrap();
        let hf = gguf_tokenizer::from_gguf_file(&path).unwrap();
        assert_own_bpe_equals_tokenizers(
            name,
            vec![
                Tokenizer::Bpe(built),
                Tokenizer::Bpe(Box::new(cached)),
                loaded,
            ],
            &hf,
        );
    }
}

/// `ours` against `hf`: each is declab's own BPE; the vocabulary both ways, the special
/// tokens, the fixture texts and 3,000 seeded random texts encoded with and without special
/// tokens, and those ids plus random id sequences (tokens that split a character's bytes,
/// special and out-of-range ids) decoded with and without skipping.
fn assert_own_bpe_equals_tokenizers(
    name: &str,
    ours: Vec<declab::engine::tokenizer::Tokenizer>,
    hf: &tokenizers::Tokenizer,
) {
    use declab::engine::tokenizer::Tokenizer;
    use rand::{Rng, SeedableRng};
    for (k, t) in ours.iter().enumerate() {
        assert!(
            matches!(t, Tokenizer::Bpe(_)),
            "{name}: tokenizer {k} should be declab's own BPE"
        );
    }
    let total = hf.get_vocab_size(true) as u32;
    let vocab: Vec<String> = (0..total).map(|i| hf.id_to_token(i).unwrap()).collect();
    // each token's text, for the random texts; tokens that decode to a part of a character
    let decoded: Vec<String> = (0..total)
        .map(|i| hf.decode(&[i], false).unwrap())
        .collect();
    let partial: Vec<u32> = (0..total)
        .filter(|&i| decoded[i as usize].contains('\u{FFFD}'))
        .collect();
    assert!(!partial.is_empty(), "{name}: no byte tokens found");
    let mut specials: Vec<u32> = hf
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| id)
        .collect();
    specials.sort_unstable();
    let fixtures: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/tokenizer/texts.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut texts: Vec<String> = fixtures
        .iter()
        .map(|t| t["text"].as_str().unwrap().to_string())
        .collect();
    texts.extend(random_texts(&decoded, 3000, 21));
    texts.push(String::new());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(22);
    let mut id_runs: Vec<Vec<u32>> = (0..500)
        .map(|_| {
            (0..rng.random_range(0..30))
                .map(|_| match rng.random_range(0..4) {
                    0 => rng.random_range(0..total + 3),
                    1 => partial[rng.random_range(0..partial.len())],
                    2 => specials[rng.random_range(0..specials.len())],
                    _ => rng.random_range(0..4000),
                })
                .collect()
        })
        .collect();
    for (k, t) in ours.iter().enumerate() {
        assert_eq!(t.vocab_size(), hf.get_vocab_size(false), "{name} {k}");
        assert_eq!(t.special_ids(), specials, "{name} {k}");
        for (i, want) in vocab.iter().enumerate() {
            assert_eq!(
                t.id_to_token(i as u32).as_ref(),
                Some(want),
                "{name} {k}: id {i}"
            );
        }
        assert_eq!(t.id_to_token(total), None);
        for i in (0..total).step_by(997).chain([0, 1, 2, total - 1]) {
            assert_eq!(
                t.token_to_id(&vocab[i as usize]),
                hf.token_to_id(&vocab[i as usize])
            );
        }
        assert_eq!(t.token_to_id("no such token here"), None);
        for text in &texts {
            for special in [false, true] {
                let want = hf
                    .encode(text.as_str(), special)
                    .unwrap()
                    .get_ids()
                    .to_vec();
                let got = t.encode(text, special).unwrap();
                assert_eq!(got, want, "{name} {k}, add_special {special}: {text:?}");
                if k == 0 {
                    id_runs.push(want);
                }
            }
        }
        for ids in &id_runs {
            for skip in [false, true] {
                assert_eq!(
                    t.decode(ids, skip).unwrap(),
                    hf.decode(ids, skip).unwrap(),
                    "{name} {k}, skip {skip}: {ids:?}"
                );
            }
        }
    }
}

/// The second family: SmolLM2-135M-Instruct (llama architecture), given by its GGUF alone
/// (tokenizer from the file's metadata), through the same batched decoder. Greedy output is
/// English; batched and one-at-a-time runs give identical samples, so a row's logits do not
/// depend on the batch (candle's Q4_1 kernel included).
#[test]
fn smollm2_from_the_gguf_alone_decodes_batched_exactly_as_alone() {
    let models = real_models_dir();
    let gguf = models.join("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        gguf.is_file(),
        "this test needs {}; run `make models` (make test does it for you)",
        gguf.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: smol\nseed: 11\nmodels:\n  - id: smollm2-135m\n    gguf: {}\n\
prompts:\n  - {{id: fox, text: \"The quick brown fox\"}}\n  - {{id: story, text: \"Once upon a time, in a small village by the sea, there lived\"}}\n\
samples: 3\nmax_new_tokens: 24\nstrategies:\n  - kind: greedy\n  - {{kind: temperature, temperature: 1.0}}\n  - {{kind: target_entropy, target: 2.0, mode: solve}}\n",
        gguf.display()
    );
    let cfg = dir.path().join("smol.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (out, batch) in [(&a, "32"), (&b, "1")] {
        declab()
            .args(["run", cfg.to_str().unwrap(), "--no-progress"])
            .args(["--out", out.to_str().unwrap(), "--batch", batch])
            .assert()
            .success();
    }
    let ra = read_records(&a.join("samples.jsonl"));
    let rb = read_records(&b.join("samples.jsonl"));
    assert_eq!(ra.len(), 18);
    assert_eq!(without_timing(&ra), without_timing(&rb));
    for prompt in ["fox", "story"] {
        let g = ra
            .iter()
            .find(|r| r.prompt_id == prompt && r.strategy == "greedy")
            .unwrap();
        let score = english_score(&g.text);
        assert!(score >= 0.15, "not English ({score:.2}): {:?}", g.text);
    }
    for r in &ra {
        assert!(r
            .trace
            .entropy
            .iter()
            .all(|&h| h >= 0.0 && (h as f64) <= (49152f64).ln()));
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["models"][0]["vocab_size"], 49152);
    assert_eq!(m["models"][0]["architecture"], "llama");
}

/// Both real GGUFs (Gemma 3's and SmolLM2's), each as (name under models/, path), checked present.
fn real_ggufs() -> [(&'static str, std::path::PathBuf); 2] {
    let models = real_models_dir();
    [
        "gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
        "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf",
    ]
    .map(|file| {
        let path = models.join(file);
        assert!(
            path.is_file(),
            "run `make models`: {} is missing",
            path.display()
        );
        (file, path)
    })
}

/// On both real models (Gemma 3's own kernels and candle's Q4_K/Q6_K; SmolLM2's Q4_1 through
/// candle's generic kernel), a row's logits in a batch are bit-identical to decoding that
/// sequence alone, as rows are dropped from the batch, also when the batch holds several
/// prompts at different positions.
#[test]
fn real_models_give_every_batch_row_the_logits_it_gets_alone() {
    for (file, path) in real_ggufs() {
        let (m, _) = declab::engine::load_weights(&path, &candle_core::Device::Cpu).unwrap();
        let streams: Vec<Vec<u32>> = (0..5u32)
            .map(|r| (0..10u32).map(|i| 100 + r * 977 + i * 131).collect())
            .collect();
        let keeps: [(usize, &[usize]); 2] = [(4, &[0, 2, 3, 4]), (7, &[3, 1])];
        declab::engine::check_batch_against_singles(
            m.as_ref(),
            &[1, 450, 4996, 17354],
            &streams,
            &keeps,
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        // ragged: three prompts of different lengths in one batch, each part at its own
        // position, as the runner packs a grid's prompts; a part leaves, rows reorder
        let (pa, pb, pc): (Vec<u32>, Vec<u32>, Vec<u32>) = (
            vec![1, 450, 4996, 17354],
            (0..11u32).map(|i| 200 + i * 37).collect(),
            vec![1, 818],
        );
        let keeps: [(usize, &[usize]); 2] = [(3, &[0, 1, 3, 4]), (6, &[0, 3, 2])];
        declab::engine::check_parts_against_singles(
            m.as_ref(),
            &[
                (&pa, &streams[..2]),
                (&pb, &streams[2..3]),
                (&pc, &streams[3..]),
            ],
            &keeps,
        )
        .unwrap_or_else(|e| panic!("{file}, ragged: {e}"));
    }
}

/// `declab select` on a small Gemma 3 run's own samples.jsonl chooses what the run chose and
/// teacher-forces the very traces the run recorded (same prefill, batched rows equal to single
/// streams, same kernels).
#[test]
fn gemma3_select_on_a_runs_samples_reproduces_its_selections() {
    let models = real_models_dir();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: realsel\nseed: 11\nmodels:\n  - id: gemma3-270m\n    gguf: {m}/gemma-3-270m/gemma-3-270m-q4_k_m.gguf\n    tokenizer: {m}/gemma-3-270m/tokenizer.json\n\
prompts:\n  - {{id: fox, text: \"The quick brown fox\"}}\n  - {{id: story, text: \"Once upon a time, in a small village by the sea, there lived\"}}\n\
samples: 3\nmax_new_tokens: 12\nstrategies:\n  - {{kind: temperature, temperature: 1.0}}\n\
select:\n  - {{kind: self_certainty}}\n  - {{kind: mean_entropy}}\n  - {{kind: mean_logprob}}\n  - {{kind: group_confidence, window: 4}}\n  - {{kind: entropy_band, low: 1.0, high: 4.0}}\n  - {{kind: random}}\n",
        m = models.display()
    );
    let cfg = dir.path().join("realsel.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let run_out = dir.path().join("run");
    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            run_out.to_str().unwrap(),
        ])
        .assert()
        .success();
    let sel_out = dir.path().join("sel");
    let mut cmd = declab();
    cmd.args(["select", "--input"])
        .arg(run_out.join("samples.jsonl"))
        .arg("--scorer")
        .arg(models.join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf"))
        .arg("--out")
        .arg(&sel_out);
    for s in [
        "self_certainty",
        "mean_entropy",
        "mean_logprob",
        "{kind: group_confidence, window: 4}",
        "{kind: entropy_band, low: 1.0, high: 4.0}",
        "random",
    ] {
        cmd.args(["--selector", s]);
    }
    cmd.assert().success();
    let want = std::fs::read_to_string(run_out.join("selections.csv")).unwrap();
    let got = std::fs::read_to_string(sel_out.join("selections.csv")).unwrap();
    // a header and 2 prompts x 6 selectors (entropy_band may find no candidate in its band)
    assert!(want.lines().count() > 2 * 5, "{want}");
    assert_eq!(got, want, "select must choose what run chose");
    let records = read_records(&run_out.join("samples.jsonl"));
    assert_eq!(records.len(), 6);
    assert_traces_match(&records, &trace_lines(&sel_out.join("select_traces.jsonl")));
}

/// declab's GGUF header reader ([`declab::engine::gguf_header::read`]) gives candle's
/// `Content` on both real files: every metadata value, tensor info and the data offset, and
/// without the tokenizer arrays when told to step over them.
#[test]
fn gguf_header_reader_equals_candles_on_the_real_files() {
    use candle_core::quantized::gguf_file::Content;
    use declab::engine::gguf_header::{describe, read, tokenizer_arrays};
    for (file, path) in real_ggufs() {
        let open = || std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        let theirs = Content::read(&mut open()).unwrap();
        assert!(theirs.metadata.contains_key("tokenizer.ggml.tokens"));
        let all = read(&mut open(), |_| false).unwrap();
        assert_eq!(describe(&all), describe(&theirs), "{file}");
        let lean = read(&mut open(), tokenizer_arrays).unwrap();
        assert!(!lean.metadata.contains_key("tokenizer.ggml.tokens"));
        let (mut md, ti, off) = describe(&theirs);
        md.retain(|l| !tokenizer_arrays(l.split(" = ").next().unwrap()));
        assert_eq!(describe(&lean), (md, ti, off), "{file}");
    }
}

/// The packed-weight cache beside each GGUF (`<file>.declab-qrows`) gives the logits packing
/// from the GGUF gives, bit for bit, on both real models; a load that finds no cache writes one.
#[test]
fn packed_weight_cache_gives_the_logits_the_gguf_gives() {
    for (file, path) in real_ggufs() {
        let cpu = candle_core::Device::Cpu;
        let run = |pack_cache: bool| -> Vec<Vec<u32>> {
            let (mut m, _) = declab::engine::load_weights_with(&path, &cpu, pack_cache).unwrap();
            let mut out = vec![m.forward(&[2, 450, 4996, 17354, 603], 0).unwrap()];
            for (i, t) in [818u32, 235265, 1010].iter().enumerate() {
                out.push(m.forward(&[t % 49152], 5 + i).unwrap());
            }
            out.iter()
                .map(|l| l.iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        let from_gguf = run(false);
        let _ = run(true); // writes the cache where none was current
        let cache = declab::engine::pack_cache_path(&path);
        assert!(cache.is_file(), "{} was not written", cache.display());
        // a current cache exists now, so this load maps it
        assert!(
            run(true) == from_gguf,
            "{file}: the cached weights give other logits"
        );
    }
}
