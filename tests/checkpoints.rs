//! Checkpoint series as models (#18 item 3): `{id: sft, checkpoints: "runs/sft/checkpoint-*"}`
//! expands to one model per folder, in step order, with ids `sft@<step>`, and runs as one grid.

mod common;

use common::{declab, read_records};
use predicates::prelude::*;

/// Three checkpoint folders (tiny models of different seeds, so different weights), written out
/// of step order, and a stray folder the pattern must not take.
fn series(dir: &std::path::Path) {
    for (step, seed) in [(1000, 3), (20, 5), (100, 7)] {
        declab::engine::tiny::write(&dir.join(format!("runs/sft/checkpoint-{step}")), seed)
            .unwrap();
    }
    std::fs::create_dir_all(dir.join("runs/sft/logs")).unwrap();
    // two folders of one step
    for name in ["a-0100", "b-100"] {
        std::fs::create_dir_all(dir.join("runs/dup").join(name)).unwrap();
    }
}

fn experiment(dir: &std::path::Path, models: &str) -> std::path::PathBuf {
    let path = dir.join("series.yaml");
    std::fs::write(
        &path,
        format!("name: series\nseed: 9\nmodels:\n{models}prompts:\n  - {{id: a, text: \"the cat sat on\"}}\nsamples: 2\nmax_new_tokens: 6\nstrategies:\n  - kind: greedy\n  - {{kind: temperature, temperature: 1.0}}\n"),
    )
    .unwrap();
    path
}

#[test]
fn a_checkpoint_series_runs_as_one_grid_in_step_order() {
    let dir = tempfile::tempdir().unwrap();
    series(dir.path());
    let cfg = experiment(
        dir.path(),
        "  - {id: sft, checkpoints: \"runs/sft/checkpoint-*\"}\n",
    );
    declab().args(["validate"]).arg(&cfg).assert().success();
    let out = dir.path().join("out");
    declab()
        .args(["run", "--no-progress"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let ids: Vec<&str> = manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sft@20", "sft@100", "sft@1000"]);
    for (m, step) in manifest["models"]
        .as_array()
        .unwrap()
        .iter()
        .zip([20, 100, 1000])
    {
        assert!(
            m["weights"]
                .as_str()
                .unwrap()
                .contains(&format!("checkpoint-{step}/tiny.gguf")),
            "{m}"
        );
    }
    let recs = read_records(&out.join("samples.jsonl"));
    assert_eq!(recs.len(), 3 * 2 * 2);
    // each checkpoint's own weights: the first step's entropy differs between them
    let first: std::collections::BTreeSet<u32> = recs
        .iter()
        .filter(|r| r.strategy == "greedy")
        .map(|r| r.trace.entropy[0].to_bits())
        .collect();
    assert_eq!(first.len(), 3, "{first:?}");
    // the report compares within each checkpoint like any model
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    for id in ["sft@20", "sft@100", "sft@1000"] {
        assert!(summary.contains(id), "{id}");
    }
}

#[test]
fn bad_checkpoint_patterns_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    series(dir.path());
    for (models, needle) in [
        (
            "  - {id: sft, checkpoints: \"runs/none/checkpoint-*\"}\n",
            "models[0].checkpoints: no folder matches",
        ),
        (
            "  - {id: sft, checkpoints: \"runs/sft/*\"}\n",
            "logs does not end in a step number",
        ),
        (
            "  - {id: sft, checkpoints: \"runs/dup/*\"}\n",
            "are both step 100",
        ),
        (
            "  - {id: sft, checkpoints: \"runs/sft/checkpoint-*\", gguf: x.gguf}\n",
            "give exactly one of `path`",
        ),
        (
            "  - {id: sft@20, path: runs/sft/checkpoint-20}\n  - {id: sft, checkpoints: \"runs/sft/checkpoint-*\"}\n",
            "is also another model's id",
        ),
    ] {
        let cfg = experiment(dir.path(), models);
        let out = dir.path().join("out");
        declab()
            .args(["run", "--no-progress"])
            .arg(&cfg)
            .arg("--out")
            .arg(&out)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(needle).and(predicate::str::contains("series.yaml")));
        assert!(!out.exists(), "{models}");
    }
}
