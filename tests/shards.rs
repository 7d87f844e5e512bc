//! Sharded runs: N shards as separate processes in parallel, merged, equal the single-process
//! run (timing aside); merge refuses missing, incomplete or mismatched shards; a shard resumes.

mod common;

use common::*;
use predicates::prelude::*;

const STRATEGIES: &str = "  - kind: greedy\n  - {kind: temperature, temperature: 1.0}\n  - {kind: top_p, top_p: 0.9}\n  - {kind: min_p, min_p: 0.1}\n  - {kind: target_entropy, target: 2.0}\n";

#[test]
fn parallel_shards_merge_to_the_single_process_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(dir.path(), "sharded", STRATEGIES, 3, 8);
    let single = dir.path().join("single");
    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            single.to_str().unwrap(),
        ])
        .assert()
        .success();

    let base = dir.path().join("results-sharded");
    let bin = assert_cmd::cargo::cargo_bin("declab");
    let children: Vec<_> = (0..3)
        .map(|k| {
            std::process::Command::new(&bin)
                .args([
                    "run",
                    cfg.to_str().unwrap(),
                    "--shard",
                    &format!("{k}/3"),
                    "--out",
                ])
                .arg(base.join("shards").join(format!("{k}-of-3")))
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    // each shard holds a third of the cells
    let sizes: Vec<usize> = (0..3)
        .map(|k| read_records(&base.join(format!("shards/{k}-of-3/samples.jsonl"))).len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 2 * 5 * 3);
    assert!(sizes.iter().all(|&n| n >= 9), "{sizes:?}");

    declab()
        .args(["merge", base.to_str().unwrap()])
        .assert()
        .success();
    let merged = read_records(&base.join("samples.jsonl"));
    let want = read_records(&single.join("samples.jsonl"));
    assert_eq!(
        without_timing(&merged),
        without_timing(&want),
        "merged shards must equal the single-process run"
    );
    let a = std::fs::read(base.join("samples.jsonl")).unwrap();
    assert_eq!(a.iter().filter(|&&b| b == b'\n').count(), 30);
    assert!(base.join("report.md").is_file() && base.join("summary.csv").is_file());
    // the merged report's sample viewer shows what the single run's shows (it holds no timing)
    let viewer_data = |dir: &std::path::Path| {
        let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
        let start = html.find("id=\"declab-data\">").unwrap();
        let end = start + html[start..].find("</script>").unwrap();
        html[start..end].to_string()
    };
    assert_eq!(viewer_data(&base), viewer_data(&single));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "complete");
    assert!(m.get("shard").is_none());
}

#[test]
fn merge_refuses_missing_incomplete_and_mismatched_shards() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(dir.path(), "bad", STRATEGIES, 2, 4);
    let base = dir.path().join("r");
    let run_shard = |k: usize, cfg: &std::path::Path| {
        declab()
            .args([
                "run",
                cfg.to_str().unwrap(),
                "--shard",
                &format!("{k}/2"),
                "--out",
            ])
            .arg(base.join(format!("shards/{k}-of-2")))
            .assert()
            .success();
    };
    run_shard(0, &cfg);
    declab()
        .args(["merge", base.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("missing shard folders")
                .and(predicate::str::contains("1-of-2")),
        );
    run_shard(1, &cfg);

    // drop a record from shard 1: incomplete, named by cell, with the resume command
    let p = base.join("shards/1-of-2/samples.jsonl");
    let recs = read_records(&p);
    std::fs::write(&p, declab::store::jsonl_bytes(&recs[1..]).unwrap()).unwrap();
    let lost = &recs[0];
    declab()
        .args(["merge", base.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("shard 1-of-2 is incomplete")
                .and(predicate::str::contains(format!(
                    "{}/{}/{}",
                    lost.model, lost.prompt_id, lost.strategy
                )))
                .and(predicate::str::contains("--shard 1/2")),
        );

    // resuming the shard fills the gap, then merge works
    declab()
        .args(["run", cfg.to_str().unwrap(), "--shard", "1/2", "--out"])
        .arg(base.join("shards/1-of-2"))
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming"));
    declab()
        .args(["merge", base.to_str().unwrap()])
        .assert()
        .success();

    // a shard whose manifest names another commit of the same version, then another version
    let mpath = base.join("shards/1-of-2/manifest.json");
    let original = std::fs::read(&mpath).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&original).unwrap();
    if m["git_commit"].is_string() {
        m["git_commit"] = "0123456789abcdef".into();
        std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
        declab()
            .args(["merge", base.to_str().unwrap()])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("built from commit 0123456789ab"));
    }
    m["declab_version"] = "0.0.1".into();
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    declab()
        .args(["merge", base.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("was run by declab 0.0.1"));
    std::fs::write(&mpath, &original).unwrap();

    // a shard run with another configuration
    let cfg2 = tiny_experiment(dir.path(), "bad", STRATEGIES, 2, 5);
    std::fs::remove_dir_all(base.join("shards/1-of-2")).unwrap();
    run_shard(1, &cfg2);
    declab()
        .args(["merge", base.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("another configuration"));
}

#[test]
fn bad_shard_argument_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(dir.path(), "arg", STRATEGIES, 1, 4);
    declab()
        .args(["run", cfg.to_str().unwrap(), "--shard", "3/3"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("0 <= K < N"));
}
