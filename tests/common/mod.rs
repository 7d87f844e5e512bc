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

/// One line of `declab select`'s select_traces.jsonl.
#[derive(serde::Deserialize)]
pub struct TraceLine {
    pub model: String,
    pub prompt_id: String,
    pub strategy: String,
    pub index: usize,
    pub tokens: usize,
    pub entropy: Vec<f32>,
    pub varentropy: Vec<f32>,
    pub logprob: Vec<f32>,
    pub self_certainty: Vec<f32>,
    pub confidence: Vec<f32>,
}

pub fn trace_lines(path: &Path) -> Vec<TraceLine> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Each forced trace equals the stored one, bit for bit, and every ok record has one.
pub fn assert_traces_match(records: &[declab::record::SampleRecord], lines: &[TraceLine]) {
    let ok: Vec<_> = records.iter().filter(|r| r.ok()).collect();
    assert_eq!(lines.len(), ok.len());
    for (l, r) in lines.iter().zip(ok) {
        let at = format!(
            "{}/{}/{} #{}",
            r.model, r.prompt_id, r.strategy, r.sample_index
        );
        assert_eq!(
            (&l.model, &l.prompt_id, &l.strategy, l.index),
            (&r.model, &r.prompt_id, &r.strategy, r.sample_index)
        );
        assert_eq!(l.tokens, r.token_ids.len(), "{at}");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&l.entropy), bits(&r.trace.entropy), "entropy {at}");
        assert_eq!(
            bits(&l.varentropy),
            bits(&r.trace.varentropy),
            "varentropy {at}"
        );
        assert_eq!(bits(&l.logprob), bits(&r.trace.logprob), "logprob {at}");
        assert_eq!(
            bits(&l.self_certainty),
            bits(&r.trace.self_certainty),
            "self_certainty {at}"
        );
        assert_eq!(
            bits(&l.confidence),
            bits(&r.trace.confidence),
            "confidence {at}"
        );
    }
}

/// A CSV file's rows as column -> value maps (for the report's CSVs).
pub fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Install Debian `package` for a test that needs it, only when asked (`DECLAB_TEST_INSTALL=1`,
/// as root, as `.ci/run` does): apt-get install, else refresh the package lists and install.
/// `false`, after saying why the test skips, when not asked or apt-get cannot.
pub fn install_when_asked(package: &str, missing: &str) -> bool {
    let asked = std::env::var("DECLAB_TEST_INSTALL").as_deref() == Ok("1");
    // SAFETY: geteuid has no preconditions.
    if !asked || unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "skipped: {missing} is not installed (apt-get install {package}, or run with DECLAB_TEST_INSTALL=1 as root)"
        );
        return false;
    }
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "-q", "--no-install-recommends", package];
    let installed = apt(&install) || (apt(&["update", "-q"]) && apt(&install));
    if !installed {
        eprintln!("skipped: apt-get cannot install {package}");
    }
    installed
}

/// `declab run CFG --out OUT --no-progress`, which must succeed.
pub fn run_into(cfg: &Path, out: &Path) {
    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ])
        .assert()
        .success();
}
