//! Bad input through the CLI: exit code 2, a message naming the file and the YAML path or line,
//! and no results folder created.

mod common;

use common::*;
use predicates::prelude::*;
use std::path::Path;

fn write(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn valid_body(dir: &Path) -> String {
    let m = tiny_model(dir);
    format!(
        "name: bad\nseed: 1\nmodels:\n  - id: tiny\n    gguf: {}\n    tokenizer: {}\nprompts:\n  - {{id: a, text: \"the cat\"}}\nmax_new_tokens: 4\nstrategies:\n  - kind: greedy\n",
        m.gguf.display(),
        m.tokenizer.display()
    )
}

/// Each case: (description, yaml transform, expected message fragments).
fn check(body: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "bad.yaml", body);
    let out = dir.path().join("results-out");
    for cmd in [
        vec!["validate", cfg.to_str().unwrap()],
        vec!["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()],
    ] {
        let mut a = declab()
            .args(&cmd)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("bad.yaml"));
        for n in needles {
            a = a.stderr(predicate::str::contains(*n));
        }
        let _ = a;
        assert!(
            !out.exists(),
            "no results folder may be created for an invalid config"
        );
    }
}

#[test]
fn malformed_yaml_reports_line_and_column() {
    check("name: x\nseed: 1\nmodels: [\n  - id: a\n", &["line "]);
}

#[test]
fn unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    check(
        &format!("{}sampels: 3\n", valid_body(dir.path())),
        &["unknown field `sampels`"],
    );
    check(
        &valid_body(dir.path())
            .replace("- kind: greedy", "- {kind: top_p, top_p: 0.9, top_pp: 0.8}"),
        &["strategies[0]", "unknown field `top_pp`"],
    );
}

#[test]
fn missing_model_file_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let body = valid_body(dir.path()).replace("tiny.gguf", "missing.gguf");
    check(&body, &["models[0].gguf", "does not exist", "make models"]);
}

#[test]
fn bad_values_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let body = valid_body(dir.path())
        .replace("max_new_tokens: 4", "max_new_tokens: 0")
        .replace("- kind: greedy", "- {kind: temperature, temperature: -1}");
    check(
        &body,
        &["max_new_tokens", "strategies[0].temperature", "-1"],
    );
}

#[test]
fn valid_file_validates() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "ok.yaml", &valid_body(dir.path()));
    declab()
        .args(["validate", cfg.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "ok: 1 models x 1 prompts x 1 strategies",
        ));
}

#[test]
fn not_a_gguf_is_a_configuration_error_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let body = valid_body(dir.path());
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, b"this is not a gguf file at all").unwrap();
    let m = tiny_model(dir.path());
    let body = body.replace(&m.gguf.display().to_string(), &fake.display().to_string());
    let cfg = write(dir.path(), "fake.yaml", &body);
    let out = dir.path().join("o");
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("fake.yaml"))
        .stderr(predicate::str::contains("models[0].gguf"))
        .stderr(predicate::str::contains("is not a GGUF file"));
    assert!(
        !out.exists(),
        "nothing is created for a configuration error"
    );
}

#[test]
fn truncated_gguf_is_a_configuration_error_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let body = valid_body(dir.path());
    let m = tiny_model(dir.path());
    let bytes = std::fs::read(&m.gguf).unwrap();
    std::fs::write(&m.gguf, &bytes[..bytes.len() - 1000]).unwrap();
    let cfg = write(dir.path(), "trunc.yaml", &body);
    let out = dir.path().join("o");
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("models[0].gguf").and(predicate::str::contains(
                "the file is truncated (re-run `make models`)",
            )),
        );
    assert!(!out.exists(), "nothing is created");
}

#[test]
fn tokenizer_larger_than_the_model_vocabulary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let body = valid_body(dir.path());
    let m = tiny_model(dir.path());
    // add 100 words to the tokenizer: 167 entries for a 67-row model
    let mut tok: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m.tokenizer).unwrap()).unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    let n = vocab.len();
    for i in 0..100 {
        vocab.insert(format!("extra{i}"), serde_json::json!(n + i));
    }
    std::fs::write(&m.tokenizer, serde_json::to_vec(&tok).unwrap()).unwrap();
    let cfg = write(dir.path(), "tok.yaml", &body);
    let out = dir.path().join("o");
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("do not belong together")
                .and(predicate::str::contains("167 tokens")),
        );
}

#[test]
fn gguf_alone_without_tokenizer_metadata_asks_for_a_tokenizer_json() {
    // the tiny GGUF has no `tokenizer.ggml.*` vocabulary: with `tokenizer:` left out, validate
    // and run stop before any folder exists, naming the key and the fix
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let body =
        valid_body(dir.path()).replace(&format!("    tokenizer: {}\n", m.tokenizer.display()), "");
    assert!(!body.contains("tokenizer"), "{body}");
    let cfg = write(dir.path(), "gguf-only.yaml", &body);
    let out = dir.path().join("o");
    for args in [
        vec!["validate", cfg.to_str().unwrap()],
        vec!["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()],
    ] {
        declab().args(&args).assert().code(2).stderr(
            predicate::str::contains("gguf-only.yaml")
                .and(predicate::str::contains("models[0]"))
                .and(predicate::str::contains("no `tokenizer.ggml.model`"))
                .and(predicate::str::contains("give `tokenizer:`")),
        );
        assert!(!out.exists(), "{}: no results folder", args[0]);
    }
}
