//! Reliability: runs killed with SIGKILL resume to identical outputs; NaN logits fail the sample,
//! not the run; unwritable results folders give a clear error.

mod common;

use common::*;
use predicates::prelude::*;
use std::time::{Duration, Instant};

const STRATEGIES: &str = "  - kind: greedy\n  - {kind: temperature, temperature: 1.0}\n  - {kind: top_p, top_p: 0.9}\n  - {kind: target_entropy, target: 2.0}\n";

/// Start `declab run CFG --out OUT --no-progress` in the background.
fn spawn_run(
    cfg: &std::path::Path,
    out: &std::path::Path,
    stderr: std::process::Stdio,
) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("declab"))
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ])
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Wait until `samples` holds `n` lines, the child has exited, or 60 s have passed.
fn wait_for_lines(child: &mut std::process::Child, samples: &std::path::Path, n: usize) {
    let start = Instant::now();
    while count_lines(samples) < n
        && start.elapsed() < Duration::from_secs(60)
        && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn count_lines(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

#[test]
fn sigkill_at_several_points_then_resume_matches_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(dir.path(), "killme", STRATEGIES, 12, 16);
    let reference = dir.path().join("ref");
    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            reference.to_str().unwrap(),
        ])
        .assert()
        .success();
    let expected = without_timing(&read_records(&reference.join("samples.jsonl")));
    let total = expected.len();
    assert_eq!(total, 2 * 4 * 12);

    let out = dir.path().join("killed");
    let mut kills = 0;
    // kill after ~10%, ~40% and ~75% of the samples were written
    for fraction in [0.1, 0.4, 0.75] {
        let target = (total as f64 * fraction) as usize;
        let mut child = spawn_run(&cfg, &out, std::process::Stdio::null());
        let samples = out.join("samples.jsonl");
        wait_for_lines(&mut child, &samples, target);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        assert!(count_lines(&samples) <= total);
    }
    assert!(
        kills >= 1,
        "the run finished before any kill landed; make the grid bigger"
    );
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .success();
    let got = without_timing(&read_records(&out.join("samples.jsonl")));
    assert_eq!(
        got, expected,
        "resumed output must equal the uninterrupted run"
    );
    let csv_a = std::fs::read_to_string(out.join("samples.csv")).unwrap();
    assert_eq!(csv_a.lines().count(), total + 1);
}

#[test]
fn nan_logits_fail_the_sample_and_the_run_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = declab::engine::tiny::write_with(&dir.path().join("nan"), 3, true).unwrap();
    let yaml = format!(
        "name: nan\nseed: 1\nmodels:\n  - {{id: nan, gguf: {}, tokenizer: {}}}\nprompts:\n  - {{id: a, text: \"the cat\"}}\nsamples: 2\nmax_new_tokens: 4\nstrategies:\n  - kind: greedy\n  - {{kind: top_p, top_p: 0.9}}\n",
        m.gguf.display(),
        m.tokenizer.display()
    );
    let cfg = dir.path().join("nan.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = dir.path().join("out");
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("4 samples failed").and(predicate::str::contains("NaN")));
    let recs = read_records(&out.join("samples.jsonl"));
    assert_eq!(recs.len(), 4, "every cell still ran");
    for r in &recs {
        assert_eq!(r.status, "failed");
        assert_eq!(r.stop_reason, "error");
        assert!(r.error.as_deref().unwrap().contains("NaN"));
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["samples_failed"], 4);
}

/// Failed samples are kept and count as done until `--retry-failed` runs them again; `report`
/// (and so `merge`) exits 1 while any failed. The failure is made real by a model whose logits
/// are NaN, then replaced at the same path by a sound one (resume trusts the path today).
#[test]
fn retry_failed_runs_failed_samples_again_and_report_exits_1_on_failures() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("m");
    let m = declab::engine::tiny::write_with(&model_dir, 3, true).unwrap();
    let yaml = format!(
        "name: retry\nseed: 1\nmodels:\n  - {{id: m, gguf: {}, tokenizer: {}}}\nprompts:\n  - {{id: a, text: \"the cat\"}}\nsamples: 2\nmax_new_tokens: 4\nstrategies:\n  - kind: greedy\n  - {{kind: top_p, top_p: 0.9}}\n",
        m.gguf.display(),
        m.tokenizer.display()
    );
    let cfg = dir.path().join("retry.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        declab()
            .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .args(extra)
            .assert()
    };
    run(&[])
        .code(1)
        .stderr(predicate::str::contains("--retry-failed"));
    declab()
        .args(["report", out.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("4 of 4 samples failed"));
    // the same path now holds a sound model
    declab::engine::tiny::write_with(&model_dir, 3, false).unwrap();
    run(&[]).code(1).stderr(predicate::str::contains(
        "4 samples failed before and count as done",
    ));
    assert!(read_records(&out.join("samples.jsonl"))
        .iter()
        .all(|r| r.status == "failed"));
    run(&["--retry-failed"])
        .success()
        .stderr(predicate::str::contains("running 4 failed samples again"));
    let retried = without_timing(&read_records(&out.join("samples.jsonl")));
    assert!(retried.iter().all(|r| r.status == "ok"), "{retried:?}");
    // exactly what a fresh run of the sound model gives
    let fresh = dir.path().join("fresh");
    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            fresh.to_str().unwrap(),
        ])
        .assert()
        .success();
    assert_eq!(
        retried,
        without_timing(&read_records(&fresh.join("samples.jsonl")))
    );
    declab()
        .args(["report", out.to_str().unwrap()])
        .assert()
        .success();
}

#[test]
fn unwritable_results_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(dir.path(), "ro", "  - kind: greedy\n", 1, 4);
    // a results path below a regular file cannot be created (root ignores permission bits)
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = blocker.join("results");
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot create results folder"));
    // samples.jsonl that cannot be opened for appending: clear error, manifest intact
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("samples.jsonl")).unwrap();
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("samples.jsonl"));
}

/// A lock record as another declab process writes it (`src/store/lock.rs`).
fn lock_record(host: &str, pid: u32, token: &str) -> String {
    format!("declab lock\nhost={host}\npid={pid}\npid_start=1\npid_ns=pid:[1]\nboot_id=elsewhere\ntoken={token}\nstarted=2026-11-30T00:00:00Z\n")
}

#[test]
fn a_live_lock_blocks_a_second_run_and_a_stale_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(dir.path(), "lock", "  - kind: greedy\n", 1, 4);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let lock = out.join(".lock");
    // a run on another host whose heartbeat is fresh: refused, with who holds it and the fix
    std::fs::write(&lock, lock_record("node17", 4242, "abc")).unwrap();
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "in use by another declab process: a process on node17 (pid 4242)",
        ))
        .stderr(predicate::str::contains(format!("rm {}", lock.display())));
    assert!(!out.join("manifest.json").exists(), "nothing written");
    // its heartbeat stopped more than the lease ago: taken over, and released at the end
    let f = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(90))
        .unwrap();
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .success()
        .stderr(predicate::str::contains("taking over"));
    assert!(!lock.exists());
    // --fresh does not move a folder another process holds
    std::fs::write(&lock, lock_record("node17", 4242, "def")).unwrap();
    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--fresh",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("in use by another declab process"));
    assert!(out.join("samples.jsonl").is_file(), "not moved aside");
    // nor does report or merge write into it
    declab()
        .args(["report", out.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("in use by another declab process"));
}

/// Eight runs started at once on one folder: exactly one runs, the others are refused before
/// writing anything, and the folder ends as a single run leaves it.
#[test]
fn eight_concurrent_runs_on_one_folder_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    // long enough (a few seconds) that every contender starts while the winner runs
    let cfg = tiny_experiment(dir.path(), "race", STRATEGIES, 12, 32);
    let out = dir.path().join("out");
    let bin = assert_cmd::cargo::cargo_bin("declab");
    let children: Vec<_> = (0..8)
        .map(|_| {
            std::process::Command::new(&bin)
                .args(["run", "--no-progress", cfg.to_str().unwrap(), "--out"])
                .arg(&out)
                .env_remove("DECLAB_MODELS")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let results: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners = results.iter().filter(|r| r.status.success()).count();
    let refused = results
        .iter()
        .filter(|r| {
            r.status.code() == Some(1)
                && String::from_utf8_lossy(&r.stderr).contains("in use by another declab process")
        })
        .count();
    assert_eq!((winners, refused), (1, 7), "{:#?}", results);
    assert!(!out.join(".lock").exists());
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // the samples are a single run's
    let single = dir.path().join("single");
    declab()
        .args(["run", "--no-progress", cfg.to_str().unwrap(), "--out"])
        .arg(&single)
        .assert()
        .success();
    assert_eq!(
        without_timing(&read_records(&out.join("samples.jsonl"))),
        without_timing(&read_records(&single.join("samples.jsonl")))
    );
}

#[test]
fn sigint_stops_after_the_current_step_and_prints_how_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(dir.path(), "ctrlc", STRATEGIES, 40, 16);
    let out = dir.path().join("out");
    let mut child = spawn_run(&cfg, &out, std::process::Stdio::piped());
    let samples = out.join("samples.jsonl");
    wait_for_lines(&mut child, &samples, 10);
    // SAFETY: plain kill(2) on our own child
    unsafe { libc_kill(child.id() as i32, 2) };
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("Resume with: declab run"), "{stderr}");
    let recs = read_records(&samples);
    assert!(
        recs.len() >= 10 && recs.len() < 2 * 4 * 40,
        "{}",
        recs.len()
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "incomplete");
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(read_records(&samples).len(), 2 * 4 * 40);
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Resume adds samples only with the engine that wrote the folder's: a GGUF replaced behind the
/// same path, or a manifest from another declab version, stops the run before anything is
/// written, naming what changed; `--fresh` starts over.
#[test]
fn resume_refuses_samples_from_another_model_file_or_declab_version() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(
        dir.path(),
        "guard",
        "  - {kind: temperature, temperature: 1.0}\n",
        2,
        4,
    );
    let out = dir.path().join("out");
    let run = || {
        declab()
            .args([
                "run",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--no-progress",
            ])
            .assert()
    };
    run().success();
    let samples = std::fs::read(out.join("samples.jsonl")).unwrap();
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    // the same path now holds another model (another seed, the same size)
    let gguf = dir.path().join("tiny/tiny.gguf");
    let before = std::fs::read(&gguf).unwrap();
    let other = declab::engine::tiny::write(&dir.path().join("tiny8"), 8).unwrap();
    let replacement = std::fs::read(&other.gguf).unwrap();
    assert_ne!(before, replacement);
    std::fs::write(&gguf, &replacement).unwrap();
    run().failure().stderr(
        predicate::str::contains("model \"tiny\"")
            .and(predicate::str::contains("has changed"))
            .and(predicate::str::contains("--fresh")),
    );
    assert_eq!(std::fs::read(out.join("samples.jsonl")).unwrap(), samples);
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), manifest);
    // back to the original file: resumes (nothing to do)
    std::fs::write(&gguf, &before).unwrap();
    run().success();
    // a folder written by another declab version
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    m["declab_version"] = "0.0.1".into();
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    run()
        .failure()
        .stderr(predicate::str::contains("written by declab 0.0.1"));
    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
            "--fresh",
        ])
        .assert()
        .success();
}
