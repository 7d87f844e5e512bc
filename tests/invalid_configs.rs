//! A corpus of invalid experiment files: each must exit with code 2 (configuration error), name
//! the problem and where, and create no results folder. Runs `declab validate` and `declab run`.

mod common;

use common::*;
use predicates::prelude::*;
use std::path::Path;

/// (case name, transform of the valid file, message fragments)
type Case = (&'static str, fn(&str) -> String, &'static [&'static str]);

fn rep(body: &str, from: &str, to: &str) -> String {
    assert!(body.contains(from), "template lacks {from:?}");
    body.replacen(from, to, 1)
}

const CASES: &[Case] = &[
    (
        "unclosed flow list",
        |b| rep(b, "prompts:\n", "prompts: [\n"),
        &["line "],
    ),
    (
        "tab indentation",
        |b| rep(b, "seed: 1\n", "seed: 1\n\tbad: 2\n"),
        &["line "],
    ),
    (
        "unknown top-level key",
        |b| format!("{b}sampels: 3\n"),
        &["unknown field `sampels`"],
    ),
    (
        "unknown model key",
        |b| rep(b, "  - id: tiny\n", "  - id: tiny\n    quant: q4\n"),
        &["unknown field `quant`"],
    ),
    (
        "unknown prompt key",
        |b| rep(b, "{id: a, text:", "{id: a, lang: en, text:"),
        &["unknown field `lang`"],
    ),
    (
        "unknown top_p key",
        |b| {
            rep(
                b,
                "- kind: greedy",
                "- {kind: top_p, top_p: 0.9, nucleus: 1}",
            )
        },
        &["strategies[0]", "unknown field `nucleus`"],
    ),
    (
        "unknown branch key",
        |b| {
            rep(b, "- kind: greedy", "- {kind: entropy_switch, entropy_low: 1, entropy_high: 2, low: {kind: greedy, x: 1}, mid: {kind: greedy}, high: {kind: greedy}}")
        },
        &["strategies[0].low", "unknown field `x`"],
    ),
    (
        "unknown target_entropy key",
        |b| {
            rep(
                b,
                "- kind: greedy",
                "- {kind: target_entropy, target: 2, gain: 1}",
            )
        },
        &["unknown field `gain`"],
    ),
    (
        "top_p zero",
        |b| rep(b, "- kind: greedy", "- {kind: top_p, top_p: 0}"),
        &["strategies[0].top_p", "0 < value <= 1"],
    ),
    (
        "top_p above one",
        |b| rep(b, "- kind: greedy", "- {kind: top_p, top_p: 1.5}"),
        &["strategies[0].top_p: 1.5"],
    ),
    (
        "negative min_p",
        |b| rep(b, "- kind: greedy", "- {kind: min_p, min_p: -0.1}"),
        &["strategies[0].min_p"],
    ),
    (
        "negative temperature",
        |b| {
            rep(
                b,
                "- kind: greedy",
                "- {kind: temperature, temperature: -1}",
            )
        },
        &["strategies[0].temperature", "0 <= temperature"],
    ),
    (
        "top_k zero",
        |b| rep(b, "- kind: greedy", "- {kind: top_k, top_k: 0}"),
        &[
            "strategies[0].top_k",
            "0 is out of range; allowed: an integer >= 1",
        ],
    ),
    (
        "typical above one",
        |b| rep(b, "- kind: greedy", "- {kind: typical_p, typical_p: 2}"),
        &["strategies[0].typical_p"],
    ),
    (
        "epsilon one",
        |b| {
            rep(
                b,
                "- kind: greedy",
                "- {kind: epsilon_cutoff, epsilon_cutoff: 1}",
            )
        },
        &["0 < value < 1"],
    ),
    (
        "mirostat version",
        |b| rep(b, "- kind: greedy", "- {kind: mirostat, version: 3}"),
        &["strategies[0].version", "1 or 2"],
    ),
    (
        "unordered thresholds",
        |b| {
            rep(b, "- kind: greedy", "- {kind: entropy_switch, entropy_low: 3, entropy_high: 1, low: {kind: greedy}, mid: {kind: greedy}, high: {kind: greedy}}")
        },
        &["ordered"],
    ),
    (
        "t_max below t_min",
        |b| {
            rep(
                b,
                "- kind: greedy",
                "- {kind: target_entropy, target: 2, t_min: 2, t_max: 1}",
            )
        },
        &["strategies[0].t_max"],
    ),
    (
        "target above ln V",
        |b| rep(b, "- kind: greedy", "- {kind: target_entropy, target: 50}"),
        &["exceeds ln V"],
    ),
    (
        "empty strategies",
        |b| rep(b, "strategies:\n  - kind: greedy\n", "strategies: []\n"),
        &["strategies: the list is empty"],
    ),
    (
        "empty prompts",
        |b| {
            rep(
                b,
                "prompts:\n  - {id: a, text: \"the cat\"}\n",
                "prompts: []\n",
            )
        },
        &["prompts: the list is empty"],
    ),
    (
        "empty models",
        |b| {
            let start = b.find("models:").unwrap();
            let end = b.find("prompts:").unwrap();
            format!("{}models: []\n{}", &b[..start], &b[end..])
        },
        &["models: the list is empty"],
    ),
    (
        "duplicate model ids",
        |b| {
            let start = b.find("  - id: tiny").unwrap();
            let end = b.find("prompts:").unwrap();
            let m = &b[start..end];
            rep(b, m, &format!("{m}{m}"))
        },
        &["duplicate model id"],
    ),
    (
        "duplicate prompt ids",
        |b| {
            rep(
                b,
                "  - {id: a, text: \"the cat\"}\n",
                "  - {id: a, text: \"the cat\"}\n  - {id: a, text: \"a dog\"}\n",
            )
        },
        &["duplicate prompt id \"a\""],
    ),
    (
        "duplicate strategy ids",
        |b| {
            rep(
                b,
                "  - kind: greedy\n",
                "  - kind: greedy\n  - kind: greedy\n",
            )
        },
        &["duplicate strategy id \"greedy\"", "name"],
    ),
    (
        "missing prompt file",
        |b| {
            rep(
                b,
                "  - {id: a, text: \"the cat\"}\n",
                "  - file: nowhere.jsonl\n",
            )
        },
        &["prompts[0].file", "nowhere.jsonl"],
    ),
    (
        "empty prompt file",
        |b| {
            rep(
                b,
                "  - {id: a, text: \"the cat\"}\n",
                "  - file: empty.jsonl\n",
            )
        },
        &["holds no prompts"],
    ),
    (
        "prompt file not JSONL",
        |b| {
            rep(
                b,
                "  - {id: a, text: \"the cat\"}\n",
                "  - file: notjson.jsonl\n",
            )
        },
        &["notjson.jsonl:1", "not a JSON object"],
    ),
    (
        "missing gguf",
        |b| rep(b, "tiny.gguf", "missing.gguf"),
        &["models[0].gguf", "does not exist", "make models"],
    ),
    (
        "missing tokenizer",
        |b| rep(b, "tokenizer.json", "nope.json"),
        &["models[0].tokenizer", "does not exist"],
    ),
    (
        "path and gguf together",
        |b| rep(b, "  - id: tiny\n", "  - id: tiny\n    path: somewhere\n"),
        &["models[0]", "exactly one of `path`"],
    ),
    (
        "zero max_new_tokens",
        |b| rep(b, "max_new_tokens: 4", "max_new_tokens: 0"),
        &["max_new_tokens: 0"],
    ),
    (
        "zero samples",
        |b| format!("{b}samples: 0\n"),
        &["samples: 0"],
    ),
    (
        "empty grid axis",
        |b| {
            rep(
                b,
                "- kind: greedy",
                "- {kind: temperature, temperature: []}",
            )
        },
        &["empty list"],
    ),
    (
        "unknown kind",
        |b| rep(b, "- kind: greedy", "- kind: beam_search"),
        &["unknown strategy kind `beam_search`", "top_p"],
    ),
    (
        "missing kind",
        |b| rep(b, "- kind: greedy", "- {top_p: 0.9}"),
        &["missing `kind`"],
    ),
    (
        "baseline not a strategy",
        |b| format!("{b}baseline: nucleus\n"),
        &["baseline: \"nucleus\"", "greedy"],
    ),
    (
        "name with a slash",
        |b| rep(b, "name: bad", "name: a/b"),
        &["name:"],
    ),
    (
        "unsupported version",
        |b| format!("version: 2\n{b}"),
        &["version: 2 is not supported"],
    ),
    (
        "missing seed",
        |b| rep(b, "seed: 1\n", ""),
        &["missing field `seed`"],
    ),
    (
        "negative seed",
        |b| rep(b, "seed: 1", "seed: -5"),
        &["seed", "line "],
    ),
    (
        "empty stop string",
        |b| format!("{b}stop: [\"\"]\n"),
        &["stop[0]"],
    ),
    (
        "unset env var in path",
        |b| rep(b, "gguf: ", "gguf: ${DECLAB_SURELY_UNSET_VAR}/"),
        &["DECLAB_SURELY_UNSET_VAR is not set"],
    ),
    (
        "eos token not in the vocabulary",
        |b| {
            rep(
                b,
                "  - id: tiny\n",
                "  - id: tiny\n    eos_tokens: [\"<no_such_token>\"]\n",
            )
        },
        &[
            "models[0].eos_tokens[0]",
            "<no_such_token>",
            "is not a token of",
        ],
    ),
    (
        "prompt longer than the context with max_new_tokens",
        |b| {
            let long = "the cat sat on the mat ".repeat(60);
            rep(b, "text: \"the cat\"", &format!("text: \"{long}\""))
        },
        &["prompts[0]", "exceeds its context length 256"],
    ),
    (
        "gguf path that is not a GGUF file",
        |b| {
            // point gguf: at the tokenizer.json next to it
            let line = b
                .lines()
                .find(|l| l.trim_start().starts_with("tokenizer: "))
                .unwrap();
            let tok = line
                .trim_start()
                .trim_start_matches("tokenizer: ")
                .to_string();
            let gguf_line = b
                .lines()
                .find(|l| l.trim_start().starts_with("gguf: "))
                .unwrap()
                .to_string();
            b.replacen(&gguf_line, &format!("    gguf: {tok}"), 1)
        },
        &["models[0].gguf", "is not a GGUF file"],
    ),
    (
        "samples at the top of u64",
        |b| format!("{b}samples: 18446744073709551615\n"),
        &[
            "samples: the grid expands to 18446744073709551615 samples",
            "limit of 10000000",
        ],
    ),
    (
        "a strategy block whose grid lists explode",
        |b| {
            let axis = |x: f64| {
                (1..=20)
                    .map(|i| format!("{}", x * i as f64))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            rep(
                b,
                "- kind: greedy",
                &format!(
                    "- {{kind: top_p, top_p: [{}], temperature: [{}], min_p: [{}], top_k: [{}]}}",
                    axis(0.04),
                    axis(0.1),
                    axis(0.01),
                    axis(1.0)
                ),
            )
        },
        &[
            "strategies[0]",
            "expand to 160000 strategies",
            "limit of 10000 per block",
        ],
    ),
    (
        "wrong type",
        |b| rep(b, "max_new_tokens: 4", "max_new_tokens: lots"),
        &["max_new_tokens", "invalid type"],
    ),
    (
        "feedback-only key in solve mode",
        |b| {
            rep(
                b,
                "- kind: greedy",
                "- {kind: target_entropy, target: 2, kp: 1}",
            )
        },
        &["only applies to `mode: feedback`"],
    ),
    (
        "chain element with two processors",
        |b| {
            rep(
                b,
                "- kind: greedy",
                "- {kind: chain, chain: [{top_k: 40, top_p: 0.9}]}",
            )
        },
        &["strategies[0].chain[0]", "one processor"],
    ),
    (
        "nested grid list",
        |b| {
            rep(b, "- kind: greedy", "- {kind: entropy_switch, entropy_low: 1, entropy_high: 2, low: {kind: temperature, temperature: [0.5, 1]}, mid: {kind: greedy}, high: {kind: greedy}}")
        },
        &["only expanded at the top level"],
    ),
    (
        "select with one sample per cell",
        |b| format!("{b}select: [{{kind: self_certainty}}]\n"),
        &["select: selection chooses among the samples", "samples"],
    ),
    (
        "unknown selector kind",
        |b| format!("{b}samples: 4\nselect: [{{kind: random}}, {{kind: best_of}}]\n"),
        &[
            "select[1].kind",
            "unknown selector kind \"best_of\"",
            "self_certainty",
        ],
    ),
    (
        "selector window longer than the text",
        |b| format!("{b}samples: 4\nselect: [{{kind: group_confidence, window: 16}}]\n"),
        &["select[0].window", "max_new_tokens is 4"],
    ),
    (
        "empty entropy band",
        |b| format!("{b}samples: 4\nselect: [{{kind: entropy_band, low: 3.0, high: 1.0}}]\n"),
        &["select[0].high", "the band is empty"],
    ),
    (
        "unknown selector field",
        |b| format!("{b}samples: 4\nselect: [{{kind: mean_entropy, lowest: true}}]\n"),
        &["select[0]", "unknown field `lowest`"],
    ),
    (
        "duplicate selector id",
        |b| format!("{b}samples: 4\nselect: [{{kind: random}}, {{kind: random}}]\n"),
        &["select[1]", "duplicate selector id \"random\""],
    ),
    (
        "NaN temperature",
        |b| {
            rep(
                b,
                "- kind: greedy",
                "- {kind: temperature, temperature: .nan}",
            )
        },
        &["strategies[0].temperature: NaN is out of range"],
    ),
    (
        "infinite temperature",
        |b| {
            rep(
                b,
                "- kind: greedy",
                "- {kind: temperature, temperature: .inf}",
            )
        },
        &["strategies[0].temperature: inf is out of range"],
    ),
    (
        "fractional top_k",
        |b| rep(b, "- kind: greedy", "- {kind: top_k, top_k: 2.5}"),
        &["strategies[0].top_k: 2.5", "an integer >= 1"],
    ),
    (
        "duplicate key",
        |b| rep(b, "seed: 1\n", "seed: 1\nseed: 2\n"),
        &["duplicate field `seed`"],
    ),
    (
        "seed as text",
        |b| rep(b, "seed: 1\n", "seed: abc\n"),
        &["line 2", "seed: invalid type"],
    ),
    (
        "max_new_tokens beyond 64 bits",
        |b| {
            rep(
                b,
                "max_new_tokens: 4",
                "max_new_tokens: 99999999999999999999999",
            )
        },
        &["line ", "max_new_tokens"],
    ),
    (
        "max_new_tokens at the top of usize",
        |b| {
            rep(
                b,
                "max_new_tokens: 4",
                "max_new_tokens: 18446744073709551615",
            )
        },
        &["prompts[0]", "exceeds its context length"],
    ),
    (
        "tokenizer that is not JSON",
        |b| model_file(b, "tokenizer: ", "notjson.json"),
        &["models[0].tokenizer", "not a valid tokenizer.json"],
    ),
    (
        "gguf that is a folder",
        |b| model_file(b, "gguf: ", "a-folder"),
        &["models[0].gguf", "is a folder"],
    ),
    (
        "gguf cut inside its header",
        |b| model_file(b, "gguf: ", "cut.gguf"),
        &["models[0].gguf", "not a readable GGUF file"],
    ),
    (
        "empty prompt text",
        |b| rep(b, "text: \"the cat\"", "text: \"\""),
        &["prompt \"a\" has empty text"],
    ),
    (
        "a list instead of a mapping",
        |_| "- a\n- b\n".into(),
        &["line 1", "expected struct"],
    ),
    (
        "an empty file",
        |_| String::new(),
        &["missing field `name`"],
    ),
    (
        "a conversation for a model without chat",
        |b| {
            rep(
                b,
                "{id: a, text: \"the cat\"}",
                "{id: a, messages: [{role: user, content: hi}]}",
            )
        },
        &[
            "prompt \"a\" is a conversation",
            "set `chat: true` on model \"tiny\"",
        ],
    ),
    (
        "text and messages together",
        |b| {
            rep(
                b,
                "{id: a, text: \"the cat\"}",
                "{id: a, text: x, messages: [{role: user, content: hi}]}",
            )
        },
        &["prompts[0]: give `text` or `messages`, not both"],
    ),
    (
        "an empty conversation",
        |b| rep(b, "{id: a, text: \"the cat\"}", "{id: a, messages: []}"),
        &["prompts[0]: `messages` is empty"],
    ),
    (
        "a message with an unknown field",
        |b| {
            rep(
                b,
                "{id: a, text: \"the cat\"}",
                "{id: a, messages: [{role: user, content: hi, name: bob}]}",
            )
        },
        &["unknown field `name`"],
    ),
    (
        "chat on a model without a template",
        |b| rep(b, "  - id: tiny\n", "  - id: tiny\n    chat: true\n"),
        &["models[0].chat: no chat template", "tokenizer_config.json"],
    ),
    (
        "a chat template that does not parse",
        |b| {
            model_file(
                &rep(b, "  - id: tiny\n", "  - id: tiny\n    chat: true\n"),
                "tokenizer: ",
                "badchat/tokenizer.json",
            )
        },
        &["models[0].chat", "does not parse"],
    ),
    (
        "a chat template that refuses the conversation",
        |b| {
            let b = model_file(
                &rep(b, "  - id: tiny\n", "  - id: tiny\n    chat: true\n"),
                "tokenizer: ",
                "chat/tokenizer.json",
            );
            rep(
                &b,
                "{id: a, text: \"the cat\"}",
                "{id: a, messages: [{role: system, content: be brief}, {role: user, content: hi}]}",
            )
        },
        &[
            "prompts[0]: the chat template of model \"tiny\"",
            "this model takes no system message",
        ],
    ),
];

/// The valid file with the model's `gguf:` (or `tokenizer:`) line pointing at `to`.
fn model_file(body: &str, key: &str, to: &str) -> String {
    let line = body
        .lines()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap();
    body.replacen(line, &format!("    {key}{to}"), 1)
}

fn base(dir: &Path) -> String {
    let m = tiny_model(dir);
    // a GGUF cut inside its header, a tokenizer that is not JSON, a folder where a file belongs
    let gguf = std::fs::read(&m.gguf).unwrap();
    std::fs::write(dir.join("cut.gguf"), &gguf[..100]).unwrap();
    std::fs::write(dir.join("notjson.json"), "not json").unwrap();
    std::fs::create_dir_all(dir.join("a-folder")).unwrap();
    // a tokenizer with a chat template that refuses system messages
    std::fs::create_dir_all(dir.join("chat")).unwrap();
    std::fs::copy(&m.tokenizer, dir.join("chat/tokenizer.json")).unwrap();
    std::fs::write(
        dir.join("chat/tokenizer_config.json"),
        r#"{"chat_template": "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('this model takes no system message') }}{% endif %}[{{ m.role }}] {{ m.content }}<eos>{% endfor %}"}"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("badchat")).unwrap();
    std::fs::copy(&m.tokenizer, dir.join("badchat/tokenizer.json")).unwrap();
    std::fs::write(
        dir.join("badchat/tokenizer_config.json"),
        r#"{"chat_template": "{% for m in messages %}{{ m.content }"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("empty.jsonl"), "\n").unwrap();
    std::fs::write(dir.join("notjson.jsonl"), "id: a, text: b\n").unwrap();
    format!(
        "name: bad\nseed: 1\nmodels:\n  - id: tiny\n    gguf: {}\n    tokenizer: {}\nprompts:\n  - {{id: a, text: \"the cat\"}}\nmax_new_tokens: 4\nstrategies:\n  - kind: greedy\n",
        m.gguf.display(),
        m.tokenizer.display()
    )
}

#[test]
fn corpus_has_at_least_seventy_cases() {
    assert!(CASES.len() >= 77, "{}", CASES.len());
}

#[test]
fn every_invalid_config_exits_2_with_a_located_message_and_no_results() {
    let dir = tempfile::tempdir().unwrap();
    let valid = base(dir.path());
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(&cfg, &valid).unwrap();
    declab()
        .args(["validate", cfg.to_str().unwrap()])
        .assert()
        .success();
    let mut failures = Vec::new();
    let mut messages = String::new();
    for (name, transform, needles) in CASES {
        std::fs::write(&cfg, transform(&valid)).unwrap();
        let out = dir.path().join("results-out");
        for args in [
            vec!["validate", cfg.to_str().unwrap()],
            vec!["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()],
        ] {
            let o = declab().args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            if args[0] == "validate" {
                let shown = stderr.replace(&dir.path().display().to_string(), "<dir>");
                messages.push_str(&format!("=== {name}\n{shown}\n"));
            }
            let mut ok = o.status.code() == Some(2) && stderr.contains("bad.yaml");
            for n in *needles {
                ok &= stderr.contains(n);
            }
            if !ok {
                failures.push(format!(
                    "{name} ({}): exit {:?}\n{stderr}",
                    args[0],
                    o.status.code()
                ));
            }
            if out.exists() {
                failures.push(format!("{name}: a results folder was created"));
                std::fs::remove_dir_all(&out).unwrap();
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
    // the whole messages, as a user reads them (tests/snapshots/; review with `cargo insta`)
    insta::assert_snapshot!("validate_messages", messages);
}

#[test]
fn a_huge_grid_warns_with_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!("{}samples: 5000\n", base(dir.path())).replace(
        "- kind: greedy",
        "- {kind: temperature, temperature: [0.5, 1.0]}",
    );
    let cfg = dir.path().join("big.yaml");
    std::fs::write(&cfg, body).unwrap();
    declab()
        .args(["validate", cfg.to_str().unwrap()])
        .assert()
        .success()
        .stderr(predicate::str::contains("warning").and(predicate::str::contains("10000 samples")));
}
