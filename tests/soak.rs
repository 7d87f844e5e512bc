//! Soak: a real-model grid killed with SIGKILL at 20 random moments (drawn from a seeded ChaCha
//! stream over the whole run: model load, prefill, decode, appends, the statistics and the
//! report) resumes every time to the uninterrupted run's samples, timing aside.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{declab, read_records, real_models_dir, without_timing};
use rand::{Rng, SeedableRng};

/// The kills the README quotes.
const KILLS: usize = 20;

fn spawn(cfg: &Path, out: &Path) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("declab"))
        .args(["run", "--no-progress"])
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .env_remove("DECLAB_MODELS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn twenty_sigkills_at_random_moments_each_resume_to_the_same_samples() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = real_models_dir().join("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    let yaml = format!(
        "name: soak\nseed: 11\nmodels: [{{id: smol, gguf: {}}}]\nprompts:\n  - {{id: a, text: \"The old map showed a river where there was none, so\"}}\n  - {{id: b, text: \"Dear neighbour, about the goat in your garden:\"}}\nsamples: 4\nmax_new_tokens: 24\nstrategies:\n  - kind: greedy\n  - {{kind: min_p, min_p: 0.05, temperature: 1.3}}\n  - {{kind: target_entropy, target: 2.0, mode: feedback}}\n",
        gguf.display()
    );
    let cfg = dir.path().join("soak.yaml");
    std::fs::write(&cfg, yaml).unwrap();

    let reference = dir.path().join("ref");
    let t0 = Instant::now();
    declab()
        .args(["run", "--no-progress"])
        .arg(&cfg)
        .arg("--out")
        .arg(&reference)
        .assert()
        .success();
    let whole = t0.elapsed();
    let expected = without_timing(&read_records(&reference.join("samples.jsonl")));
    assert_eq!(expected.len(), 2 * 3 * 4);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20);
    let (mut kills, mut folders, mut attempts) = (0, 0, 0);
    // where the kills landed: before this run's first new sample, mid-grid, after the last one
    let mut phases = [0usize; 3];
    let lines = |p: &Path| {
        std::fs::read(p)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
    };
    while kills < KILLS {
        folders += 1;
        let out = dir.path().join(format!("killed{folders}"));
        // kill this folder's run again and again until one run gets to the end
        loop {
            attempts += 1;
            assert!(attempts < 200, "{kills} kills in {attempts} attempts");
            let at = whole.mul_f64(rng.random_range(0.0..1.0));
            let before = lines(&out.join("samples.jsonl"));
            let mut child = spawn(&cfg, &out);
            let start = Instant::now();
            while start.elapsed() < at && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let finished = child.try_wait().unwrap().is_some();
            if !finished {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
                let now = lines(&out.join("samples.jsonl"));
                phases[if now == expected.len() {
                    2
                } else if now > before {
                    1
                } else {
                    0
                }] += 1;
            }
            let status = child.wait().unwrap();
            if finished {
                assert!(status.success(), "run {attempts} failed: {status:?}");
                break;
            }
            // what a killed run leaves is always readable (a torn last line is dropped)
            if out.join("samples.jsonl").exists() {
                declab::store::read_samples(&out.join("samples.jsonl")).unwrap();
            }
            if kills == KILLS {
                // the last resume, uninterrupted
                declab()
                    .args(["run", "--no-progress"])
                    .arg(&cfg)
                    .arg("--out")
                    .arg(&out)
                    .assert()
                    .success();
                break;
            }
        }
        let got = without_timing(&read_records(&out.join("samples.jsonl")));
        assert_eq!(got, expected, "folder {folders} after kills");
        assert!(out.join("report.md").is_file());
        assert!(!out.join(".lock").exists());
    }
    eprintln!(
        "{kills} SIGKILLs in {attempts} runs over {folders} folders ({} before a run's first new sample: load, prefill; {} mid-grid; {} after the last sample: statistics, report); every resume matched",
        phases[0], phases[1], phases[2]
    );
    assert!(
        phases.iter().all(|&n| n > 0),
        "every phase was hit: {phases:?}"
    );
}
