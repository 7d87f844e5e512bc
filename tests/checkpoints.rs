//! Checkpoint series as models (#18 item 3): `{id: sft, checkpoints: "runs/sft/checkpoint-*"}`
//! expands to one model per folder, in step order, with ids `sft@<step>`, and runs as one grid.

mod common;

use common::{csv_rows, declab, read_records};
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

/// Choosing a checkpoint (#19 item 4): the rule's pick is the best mean of its objective in
/// summary.csv among the checkpoints within the bounds; checkpoints.csv, the report and the
/// Pareto plot say which and why; `declab compare --models` compares two checkpoints of the
/// run.
#[test]
fn a_choose_rule_names_the_checkpoint_and_why() {
    let dir = tempfile::tempdir().unwrap();
    series(dir.path());
    declab::engine::tiny::write(&dir.path().join("runs/base"), 11).unwrap();
    let prompts: String = (0..6)
        .map(|i| format!("  - {{id: p{i}, text: \"the cat {i} sat on\"}}\n"))
        .collect();
    let cfg = dir.path().join("choose.yaml");
    std::fs::write(
        &cfg,
        format!(
            "name: choose\nseed: 9\nmodels:\n  - {{id: base, path: runs/base}}\n  - {{id: sft, checkpoints: \"runs/sft/checkpoint-*\"}}\nscorer: base\n\
prompts:\n{prompts}samples: 2\nmax_new_tokens: 8\nbaseline: greedy\nstrategies:\n  - kind: greedy\n  - {{kind: temperature, temperature: 1.0}}\n\
choose:\n  among: sft\n  strategy: temperature(t=1.0)\n  maximize: distinct_2\n  subject_to:\n    - {{metric: nll_ref, max: 100}}\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = declab()
        .args(["run", "--no-progress"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let err = String::from_utf8_lossy(&run.get_output().stderr).to_string();
    // the pick, recomputed from summary.csv
    let summary = csv_rows(&out.join("summary.csv"));
    let mean = |model: &str, metric: &str| -> f64 {
        summary
            .iter()
            .find(|r| {
                r["model"] == model
                    && r["strategy"] == "temperature(t=1.0)"
                    && r["metric"] == metric
            })
            .unwrap()["mean"]
            .parse()
            .unwrap()
    };
    let mut best = ("", f64::NEG_INFINITY);
    for id in ["sft@20", "sft@100", "sft@1000"] {
        assert!(mean(id, "nll_ref") <= 100.0);
        if mean(id, "distinct_2") > best.1 {
            best = (id, mean(id, "distinct_2"));
        }
    }
    assert!(
        err.contains(&format!("chosen by the rule: {}", best.0)),
        "{err}"
    );
    let rows = csv_rows(&out.join("checkpoints.csv"));
    let chosen: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| r["chosen"] == "true")
        .map(|r| r["model"].as_str())
        .collect();
    assert_eq!(chosen.into_iter().collect::<Vec<_>>(), [best.0]);
    assert!(rows
        .iter()
        .all(|r| r["series"] == "sft" && r["strategy"] == "temperature(t=1.0)"));
    let steps: Vec<&str> = rows.iter().map(|r| r["step"].as_str()).collect();
    assert_eq!(steps.first(), Some(&"20"));
    assert!(rows.iter().any(|r| r["pareto"] == "true"));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Choosing a checkpoint of `sft`"),
        "{report}"
    );
    assert!(
        report.contains(&format!("**Chosen: `{}`**", best.0)),
        "{report}"
    );
    assert!(report.contains("Against the runner-up"), "{report}");
    assert!(out.join("plot_checkpoints.svg").is_file());

    // a rule nothing satisfies says so
    let tight = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("max: 100", "max: 0.001");
    std::fs::write(&cfg, tight).unwrap();
    let again = declab()
        .args(["run", "--no-progress"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let err = String::from_utf8_lossy(&again.get_output().stderr).to_string();
    assert!(
        err.contains("96 of 96 samples already done"),
        "the rule is not part of the config hash: {err}"
    );
    assert!(err.contains("the rule chose nothing"), "{err}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("**No candidate satisfies every bound**"));
    assert!(report.contains("> max 0.001"), "{report}");

    // two checkpoints of the run: a model against itself changes nothing (exit 0), an unknown
    // model is a usage error (exit 2)
    let same = declab()
        .args(["compare"])
        .arg(&out)
        .arg(&out)
        .args(["--models", "sft@20", "sft@20", "--metric", "distinct_2"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&same.get_output().stdout).to_string();
    assert!(
        text.contains("distinct_2") && !text.contains("WORSE"),
        "{text}"
    );
    declab()
        .args(["compare"])
        .arg(&out)
        .arg(&out)
        .args(["--models", "sft@20", "sft@7"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("model \"sft@7\" has no sample"));
}

#[test]
fn bad_choose_rules_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    series(dir.path());
    for (choose, needle) in [
        (
            "{among: nope, maximize: distinct_2}",
            "choose.among: \"nope\" is not a checkpoint series",
        ),
        (
            "{among: sft, maximize: distinct_2, minimize: tokens}",
            "give exactly one of `maximize",
        ),
        (
            "{among: sft, maximize: distinct_9}",
            "choose.maximize: unknown metric \"distinct_9\"",
        ),
        (
            "{among: sft, maximize: nll_ref}",
            "nll_ref is a reference scorer's metric; add `scorer:",
        ),
        (
            "{among: sft, strategy: top_p, maximize: distinct_2}",
            "choose.strategy: \"top_p\" is not a strategy id",
        ),
        (
            "{among: sft, maximize: distinct_2, subject_to: [{metric: tokens}]}",
            "choose.subject_to[0]: give `min`, `max` or both",
        ),
        (
            "{among: sft, maximize: distinct_2, best: 1}",
            "unknown field `best`",
        ),
    ] {
        let path = dir.path().join("bad.yaml");
        std::fs::write(
            &path,
            format!("name: bad\nseed: 9\nmodels:\n  - {{id: sft, checkpoints: \"runs/sft/checkpoint-*\"}}\nprompts:\n  - {{id: a, text: \"the cat sat on\"}}\nmax_new_tokens: 6\nstrategies:\n  - kind: greedy\nchoose: {choose}\n"),
        )
        .unwrap();
        declab()
            .arg("validate")
            .arg(&path)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(needle));
    }
}
