//! End-to-end CLI runs on a tiny generated gemma3 model: output files, columns, reproducibility,
//! resume, and the strategy kinds running through the real loader and forward pass.

mod common;

use common::*;
use predicates::prelude::*;

const STRATEGIES: &str = "  - kind: greedy\n  - kind: temperature\n    temperature: [0.7, 1.3]\n  - kind: top_p\n    top_p: 0.9\n    temperature: 1.0\n";

#[test]
fn run_writes_documented_outputs_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(dir.path(), "tinygrid", STRATEGIES, 3, 12);
    let out1 = dir.path().join("r1");
    let out2 = dir.path().join("r2");
    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            out1.to_str().unwrap(),
        ])
        .assert()
        .success();
    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            out2.to_str().unwrap(),
        ])
        .assert()
        .success();

    for f in ["samples.jsonl", "samples.csv", "manifest.json"] {
        assert!(out1.join(f).is_file(), "{f} missing");
    }
    let r1 = read_records(&out1.join("samples.jsonl"));
    // 2 prompts x 4 strategies x 3 samples
    assert_eq!(r1.len(), 24);
    let r2 = read_records(&out2.join("samples.jsonl"));
    assert_eq!(
        without_timing(&r1),
        without_timing(&r2),
        "two runs must give identical samples"
    );

    // traces have one entry per token; timing arrays have one forward per fed token
    for r in &r1 {
        assert_eq!(r.status, "ok");
        let n = r.token_ids.len();
        assert!((1..=12).contains(&n));
        assert_eq!(r.trace.entropy.len(), n);
        assert_eq!(r.trace.kept.len(), n);
        assert_eq!(r.trace.sampler_us.len(), n);
        assert!(r.trace.forward_ms.len() == n - 1 || r.trace.forward_ms.len() == n);
    }
    // greedy: identical for every sample index
    let greedy: Vec<_> = r1
        .iter()
        .filter(|r| r.strategy == "greedy" && r.prompt_id == "cat")
        .collect();
    assert_eq!(greedy.len(), 3);
    assert!(greedy.iter().all(|r| r.token_ids == greedy[0].token_ids));
    assert!(greedy
        .iter()
        .all(|r| r.trace.temperature.iter().all(|&t| t == 0.0)));
    // sampled: sample indices differ (at T = 1.3 on a random model, 12 tokens)
    let hot: Vec<_> = r1
        .iter()
        .filter(|r| r.strategy == "temperature(t=1.3)" && r.prompt_id == "cat")
        .collect();
    assert!(
        hot.windows(2).any(|w| w[0].token_ids != w[1].token_ids),
        "sampled outputs should differ across sample indices"
    );

    // CSV columns, in the documented order
    let csv = std::fs::read_to_string(out1.join("samples.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert_eq!(header, declab::report::csv_out::sample_columns().join(","));
    assert_eq!(
        csv::Reader::from_reader(csv.as_bytes()).records().count(),
        24
    );

    // manifest
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out1.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "complete");
    assert_eq!(m["samples_done"], 24);
    assert_eq!(m["models"][0]["architecture"], "gemma3");
    assert_eq!(m["models"][0]["weights_sha256"].as_str().unwrap().len(), 64);
    assert!(m["config_sha256"].as_str().unwrap().len() == 64);
    assert!(m["resolved_config"]["strategies"].as_array().unwrap().len() == 4);
}

#[test]
fn every_strategy_kind_runs_on_a_real_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    let strategies = "  - kind: greedy
  - {kind: temperature, temperature: 0.8}
  - {kind: top_k, top_k: 5}
  - {kind: top_p, top_p: 0.9}
  - {kind: min_p, min_p: 0.1, temperature: 1.5, temperature_last: true}
  - {kind: typical_p, typical_p: 0.9}
  - {kind: epsilon_cutoff, epsilon_cutoff: 0.01}
  - {kind: eta_cutoff, eta_cutoff: 0.01}
  - {kind: top_n_sigma, top_n_sigma: 1.0}
  - {kind: chain, chain: [{repetition_penalty: 1.3}, {top_k: 20}, {top_p: 0.95}, {temperature: 0.9}]}
  - {kind: entropy_switch, entropy_low: 2.0, entropy_high: 3.5, low: {kind: greedy}, mid: {kind: top_p, top_p: 0.9}, high: {kind: min_p, min_p: 0.2}}
  - {kind: target_entropy, target: 2.0}
  - {kind: target_entropy, target: 1.0, unit: bits, mode: feedback, signal: surprise}
  - {kind: mirostat, version: 1, mirostat_tau: 3.0}
  - {kind: mirostat, version: 2, mirostat_tau: 3.0}
  - {kind: dynatemp, temperature: 1.0, dynatemp_range: 0.5}
  - {kind: edt, temperature: 1.0, edt_theta: 0.5}
";
    let cfg = tiny_experiment(dir.path(), "kinds", strategies, 1, 8);
    let out = dir.path().join("out");
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .success();
    let recs = read_records(&out.join("samples.jsonl"));
    assert_eq!(recs.len(), 2 * 17);
    for r in &recs {
        assert_eq!(r.status, "ok", "{}", r.strategy);
        for (i, &p) in r.trace.p_final.iter().enumerate() {
            assert!(
                p > 0.0 && p <= 1.0,
                "{}: chosen token {i} has final probability {p}",
                r.strategy
            );
        }
    }
    let sw = recs.iter().find(|r| r.kind == "entropy_switch").unwrap();
    let branches = sw
        .trace
        .branch
        .as_ref()
        .expect("entropy_switch records its branches");
    assert_eq!(branches.len(), sw.token_ids.len());
    assert!(branches
        .iter()
        .all(|b| ["low", "mid", "high"].contains(&b.as_str())));
    let te = recs
        .iter()
        .find(|r| r.strategy == "target_entropy(target=2.0)")
        .unwrap();
    for (h, fe) in te.trace.entropy.iter().zip(&te.trace.final_entropy) {
        // reachable when the model's own entropy is above the target at T <= 5
        if *h > 2.0 {
            assert!(
                (fe - 2.0).abs() < 1e-3,
                "final entropy {fe} should hit the target 2.0"
            );
        }
    }
}

#[test]
fn resume_keeps_completed_samples_and_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(dir.path(), "resume", STRATEGIES, 2, 10);
    let full = dir.path().join("full");
    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            full.to_str().unwrap(),
        ])
        .assert()
        .success();
    let all = read_records(&full.join("samples.jsonl"));

    // simulate a crash: keep the first 5 records plus a torn half line, no samples.csv
    let part = dir.path().join("part");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::copy(full.join("manifest.json"), part.join("manifest.json")).unwrap();
    let mut bytes = declab::store::jsonl_bytes(&all[..5]).unwrap();
    let sixth = serde_json::to_string(&all[5]).unwrap();
    bytes.extend_from_slice(&sixth.as_bytes()[..sixth.len() / 2]);
    std::fs::write(part.join("samples.jsonl"), bytes).unwrap();

    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            part.to_str().unwrap(),
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming").and(predicate::str::contains("torn")));
    let resumed = read_records(&part.join("samples.jsonl"));
    assert_eq!(without_timing(&resumed), without_timing(&all));
    // the first five kept their original timings (they were not re-run)
    assert_eq!(resumed[..5], all[..5]);
}

#[test]
fn changed_config_is_refused_and_fresh_moves_the_old_folder_aside() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(dir.path(), "changed", "  - kind: greedy\n", 1, 4);
    let out = dir.path().join("out");
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .success();
    let cfg2 = tiny_experiment(
        dir.path(),
        "changed",
        "  - kind: greedy\n  - {kind: temperature, temperature: 0.5}\n",
        1,
        4,
    );
    declab()
        .args([
            "run",
            cfg2.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("different configuration")
                .and(predicate::str::contains("--fresh")),
        );
    declab()
        .args([
            "run",
            cfg2.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--fresh",
        ])
        .assert()
        .success();
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("out.old-"))
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the old folder is moved aside, never deleted"
    );
    assert_eq!(
        read_records(&aside[0].path().join("samples.jsonl")).len(),
        2
    );
    assert_eq!(read_records(&out.join("samples.jsonl")).len(), 4);
}

#[test]
fn dist_prints_the_final_distribution() {
    let out = declab()
        .args([
            "dist",
            "--logits",
            "-",
            "--strategy",
            "{kind: top_p, top_p: 0.7}",
        ])
        .write_stdin(format!(
            "[{}, {}, {}, {}]",
            0.5f32.ln(),
            0.3f32.ln(),
            0.15f32.ln(),
            0.05f32.ln()
        ))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let probs: Vec<f64> = v["probs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    for (p, e) in probs.iter().zip([0.625, 0.375, 0.0, 0.0]) {
        assert!((p - e).abs() < 1e-6, "{probs:?}");
    }
    assert_eq!(v["kept"], 2);
    assert_eq!(v["temperature"], 1.0);
    assert_eq!(v["strategy"], "top_p(p=0.7)");

    declab()
        .args([
            "dist",
            "--logits",
            "-",
            "--strategy",
            "{kind: top_p, top_p: 1.5}",
        ])
        .write_stdin("[1, 2]")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("top_p: 1.5 is out of range"));
    declab()
        .args(["dist", "--logits", "-", "--strategy", "{kind: greedy}"])
        .write_stdin("[]")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("empty"));
    declab()
        .args(["dist", "--logits", "-", "--strategy", "{kind: greedy}"])
        .write_stdin("[1, \"nan\"]")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("logit 1"));
}

/// `declab validate x.yaml | head`: a closed pipe ends the process quietly (it panicked in
/// `println!` before, since Rust ignores SIGPIPE).
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(dir.path(), "pipe", "  - kind: greedy\n", 1, 2);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_declab"))
        .args(["validate", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // closed before declab writes
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `dist --seed N` adds the token that seed's first draw picks: only kept tokens, the same token
/// for the same seed, and over many seeds the frequencies of the printed distribution.
#[test]
fn dist_seed_draws_from_the_final_distribution() {
    let logits = format!(
        "[{}, {}, {}, {}]",
        0.5f32.ln(),
        0.3f32.ln(),
        0.15f32.ln(),
        0.05f32.ln()
    );
    let token = |seed: Option<u64>| -> serde_json::Value {
        let mut cmd = declab();
        cmd.args([
            "dist",
            "--logits",
            "-",
            "--strategy",
            "{kind: top_p, top_p: 0.7}",
        ]);
        if let Some(s) = seed {
            cmd.args(["--seed", &s.to_string()]);
        }
        let out = cmd
            .write_stdin(logits.clone())
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()["token"].clone()
    };
    assert!(token(None).is_null(), "no --seed, no draw");
    let n = 120;
    let draws: Vec<u64> = (0..n).map(|s| token(Some(s)).as_u64().unwrap()).collect();
    assert!(
        draws.iter().all(|&t| t < 2),
        "only the nucleus {{0, 1}} is kept: {draws:?}"
    );
    assert_eq!(token(Some(7)).as_u64(), Some(draws[7]));
    // p(0) = 0.625 after top_p: 5 binomial standard errors
    let zeros = draws.iter().filter(|&&t| t == 0).count() as f64;
    let se = (0.625f64 * 0.375 / n as f64).sqrt() * n as f64;
    assert!(
        (zeros - 0.625 * n as f64).abs() < 5.0 * se,
        "{zeros} of {n}"
    );
}

#[test]
fn metrics_scorer_nll_matches_the_run_traces() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_experiment(
        dir.path(),
        "score",
        "  - {kind: temperature, temperature: 1.0}\n",
        4,
        10,
    );
    let out = dir.path().join("out");
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .success();
    let recs = read_records(&out.join("samples.jsonl"));
    let tok = tokenizers::Tokenizer::from_file(dir.path().join("tiny/tokenizer.json")).unwrap();
    // only samples whose text re-tokenizes to the generated ids (no special tokens, no EOS)
    let usable: Vec<_> = recs
        .iter()
        .filter(|r| tok.encode(r.text.as_str(), false).unwrap().get_ids() == r.token_ids.as_slice())
        .collect();
    assert!(
        usable.len() >= 2,
        "need samples that round-trip through the tokenizer"
    );
    let input: String = usable
        .iter()
        .map(|r| {
            serde_json::json!({"group": r.prompt_id, "text": r.text, "prompt": r.prompt})
                .to_string()
                + "\n"
        })
        .collect();
    let input_path = dir.path().join("gen.jsonl");
    std::fs::write(&input_path, input).unwrap();
    let mout = dir.path().join("m");
    declab()
        .args([
            "metrics",
            "--input",
            input_path.to_str().unwrap(),
            "--out",
            mout.to_str().unwrap(),
            "--no-embed",
            "--scorer",
        ])
        .arg(dir.path().join("tiny/tiny.gguf"))
        .assert()
        .success();
    let mut rdr = csv::Reader::from_path(mout.join("metrics_samples.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let col = headers
        .iter()
        .position(|h| h == "nll_mean")
        .expect("nll_mean column");
    let ppl = headers
        .iter()
        .position(|h| h == "perplexity")
        .expect("perplexity column");
    for (row, r) in rdr.records().zip(&usable) {
        let row = row.unwrap();
        let got: f64 = row[col].parse().unwrap();
        let want =
            -r.trace.logprob.iter().map(|&x| x as f64).sum::<f64>() / r.trace.logprob.len() as f64;
        assert!(
            (got - want).abs() < 1e-3,
            "scorer nll {got} vs run trace {want}"
        );
        assert!((row[ppl].parse::<f64>().unwrap() - got.exp()).abs() < 1e-3);
    }
}

#[test]
fn bench_save_logits_without_the_model_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.f16");
    declab()
        .env("DECLAB_MODELS", dir.path())
        .args(["bench", "--save-logits", out.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "--save-logits needs the real model",
        ))
        .stderr(predicates::str::contains("make models"));
    assert!(!out.exists(), "nothing may be written");
    // --fixture-rows only means something with --save-logits
    declab()
        .args(["bench", "--fixture-rows", "2"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("--save-logits"));
}

/// target_entropy's solve records how every step ended in the trace (`solve`), and the report
/// counts the clamped and missed steps per strategy: a target out of reach within [t_min,
/// t_max] (0.01 nats with t_min 1) clamps every step to t_min; a reachable one is met.
#[test]
fn solve_steps_are_flagged_in_the_trace_and_counted_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let strategies = "  - {kind: target_entropy, target: 1.0, mode: solve}\n  - {kind: target_entropy, target: 0.01, t_min: 1.0, mode: solve}\n  - kind: greedy\n";
    let cfg = tiny_experiment(dir.path(), "flags", strategies, 2, 6);
    let out = dir.path().join("out");
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .arg("--no-progress")
        .assert()
        .success();
    let records = read_records(&out.join("samples.jsonl"));
    for r in &records {
        let solve = r.trace.solve.as_ref();
        if r.strategy == "greedy" {
            assert!(solve.is_none(), "greedy has no solve: {solve:?}");
            continue;
        }
        let flags = solve.expect("a solve strategy records its flags");
        assert_eq!(flags.len(), r.token_ids.len(), "one flag per token");
        let expect = if r.strategy.contains("target=0.01") {
            declab::strategy::SolveFlag::ClampedMin
        } else {
            declab::strategy::SolveFlag::Met
        };
        assert!(
            flags.iter().all(|f| *f == Some(expect)),
            "{}: {flags:?}",
            r.strategy
        );
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## target_entropy's solve"), "{report}");
    let clamped: usize = records
        .iter()
        .filter(|r| r.strategy.contains("target=0.01"))
        .map(|r| r.token_ids.len())
        .sum();
    let row = report
        .lines()
        .find(|l| {
            l.contains("target=0.01") && l.contains("| tiny |") && l.matches('|').count() == 7
        })
        .unwrap_or_else(|| panic!("no solve row for target 0.01:\n{report}"));
    assert!(
        row.ends_with(&format!("| {clamped} | {clamped} | 0 | 0 |")),
        "{row}"
    );
}
