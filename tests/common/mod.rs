//! Shared helpers for the CLI tests: a tiny generated model, experiment files, the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub fn declab() -> Command {
    let mut c = Command::cargo_bin("declab").expect("declab binary");
    c.env_remove("DECLAB_MODELS");
    c
}

/// A folder with a tiny random gemma3 GGUF + tokenizer.json.
pub fn tiny_model(dir: &Path) -> declab::engine::tiny::TinyModel {
    declab::engine::tiny::write(&dir.join("tiny"), 7).expect("write tiny model")
}

/// An experiment file over the tiny model with the given strategies block (YAML list items).
pub fn tiny_experiment(
    dir: &Path,
    name: &str,
    strategies: &str,
    samples: usize,
    max_new_tokens: usize,
) -> PathBuf {
    let m = tiny_model(dir);
    let yaml = format!(
        "name: {name}\nseed: 42\nmodels:\n  - id: tiny\n    gguf: {}\n    tokenizer: {}\nprompts:\n  - {{id: cat, text: \"the cat sat on the\"}}\n  - {{id: king, text: \"once upon a time there lived a\"}}\nsamples: {samples}\nmax_new_tokens: {max_new_tokens}\nstrategies:\n{strategies}",
        m.gguf.display(),
        m.tokenizer.display()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

pub fn read_records(path: &Path) -> Vec<declab::record::SampleRecord> {
    declab::store::read_samples(path)
        .expect("read samples")
        .records
}

pub fn without_timing(
    records: &[declab::record::SampleRecord],
) -> Vec<declab::record::SampleRecord> {
    records.iter().map(|r| r.without_timing()).collect()
}

/// The directory holding the real models (`make models`), or a panic explaining how to get them.
pub fn real_models_dir() -> PathBuf {
    let dir = std::env::var("DECLAB_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    let gguf = dir.join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf");
    assert!(
        gguf.is_file(),
        "the real-model tests need {}; run `make models` (make test does it for you)",
        gguf.display()
    );
    dir
}
