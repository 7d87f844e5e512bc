//! Batched decoding (`--batch`) does not change any sample: the same experiment run one sample
//! at a time, in batches of 4 and all at once gives identical records, with samples that stop
//! at different steps (stop strings, EOS) and every stateful strategy in the batch. All at once
//! is a ragged batch: both prompts (of different lengths) share it, each at its own position.

mod common;

use common::*;

#[test]
fn batch_size_never_changes_a_sample() {
    let dir = tempfile::tempdir().unwrap();
    let strategies = "  - kind: greedy\n  - {kind: temperature, temperature: 1.5}\n  - {kind: top_p, top_p: 0.8, temperature: 1.2}\n  - {kind: min_p, min_p: 0.05, temperature: 1.0}\n  - {kind: mirostat, version: 2, mirostat_tau: 3.0, mirostat_eta: 0.1}\n  - {kind: target_entropy, target: 2.0, mode: feedback}\n  - {kind: entropy_switch, entropy_low: 1.0, entropy_high: 3.0, low: {kind: greedy}, mid: {kind: temperature, temperature: 1.0}, high: {kind: top_k, top_k: 5, temperature: 1.0}}\n";
    let cfg = tiny_experiment(dir.path(), "batch", strategies, 3, 20);
    // stop strings make samples end at different steps, so batches shrink as they go
    let yaml = std::fs::read_to_string(&cfg).unwrap() + "stop: [\"moon\", \"gold\"]\n";
    std::fs::write(&cfg, yaml).unwrap();
    let mut runs = Vec::new();
    for batch in ["1", "4", "256"] {
        let out = dir.path().join(format!("b{batch}"));
        declab()
            .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .args(["--batch", batch, "--no-progress"])
            .assert()
            .success();
        runs.push(without_timing(&read_records(&out.join("samples.jsonl"))));
    }
    assert_eq!(runs[0].len(), 2 * 7 * 3);
    let lengths: std::collections::BTreeSet<usize> =
        runs[0].iter().map(|r| r.token_ids.len()).collect();
    assert!(
        lengths.len() > 2,
        "samples should stop at different steps to exercise shrinking batches: {lengths:?}"
    );
    assert_eq!(runs[0], runs[1], "--batch 4 changed samples");
    assert_eq!(runs[0], runs[2], "--batch 256 changed samples");
}

#[test]
fn batch_must_be_positive() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(dir.path(), "b0", "  - kind: greedy\n", 1, 2);
    declab()
        .args(["run", cfg.to_str().unwrap(), "--batch", "0"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("--batch"));
}
