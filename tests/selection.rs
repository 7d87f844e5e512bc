//! Best-of-N selection on the real models (#17): Gemma 3 270M and SmolLM2-135M-Instruct sample
//! N candidates per prompt; every row of `selections.csv` is checked against an independent f64
//! recomputation of its selector's formula from the stored traces (1e-9) and against the
//! argmax-with-lowest-index rule; `declab report` on the stored folder chooses the same; and a
//! `select:` block added to a finished experiment generates nothing and still selects.

mod common;

use std::collections::BTreeMap;

use common::*;
use declab::record::SampleRecord;

const SELECT: &str = "select:\n  - {kind: self_certainty}\n  - {kind: mean_entropy}\n  - {kind: mean_logprob}\n  - {kind: group_confidence, window: 6}\n  - {kind: entropy_band, low: 1.5, high: 3.0}\n  - {kind: random}\n";

fn experiment(dir: &std::path::Path, select: bool) -> std::path::PathBuf {
    let m = real_models_dir();
    let yaml = format!(
        "name: sel\nseed: 11\nmodels:\n  - id: gemma3-270m\n    gguf: {m}/gemma-3-270m/gemma-3-270m-q4_k_m.gguf\n    tokenizer: {m}/gemma-3-270m/tokenizer.json\n  - id: smollm2-135m\n    gguf: {m}/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf\n\
prompts:\n  - {{id: fox, text: \"The quick brown fox\"}}\n  - {{id: tea, text: \"Introducing our new tea, brewed from leaves that only grow on\"}}\n  - {{id: robot, text: \"Once upon a time, a robot who collected lost socks decided to\"}}\n\
samples: 5\nmax_new_tokens: 20\nstrategies:\n  - {{kind: temperature, temperature: 1.0}}\n  - {{kind: min_p, min_p: 0.05, temperature: 1.3}}\n{}",
        if select { SELECT } else { "" },
        m = m.display()
    );
    let path = dir.join(if select { "sel.yaml" } else { "plain.yaml" });
    std::fs::write(&path, yaml).unwrap();
    path
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
}

/// The selectors' formulas, written again in plain f64 (higher is better for all of them here:
/// the lower-wins ones are negated).
fn reference(selector: &str, r: &SampleRecord, cell_random: Option<f64>) -> f64 {
    let t = &r.trace;
    match selector {
        "self_certainty" => mean(&t.self_certainty),
        "mean_entropy" => -mean(&t.entropy),
        "mean_logprob" => mean(&t.logprob),
        "group_confidence_w6" => {
            let c: Vec<f64> = t.confidence.iter().map(|&x| x as f64).collect();
            let w = 6.min(c.len());
            let mut best = f64::INFINITY;
            for s in 0..=c.len() - w {
                best = best.min(c[s..s + w].iter().sum::<f64>() / w as f64);
            }
            best
        }
        "entropy_band_1.5-3" => {
            let m = mean(&t.entropy);
            -(if m < 1.5 {
                1.5 - m
            } else if m > 3.0 {
                m - 3.0
            } else {
                0.0
            })
        }
        "random" => cell_random.expect("random's score comes from its row"),
        other => panic!("unexpected selector {other}"),
    }
}

fn selections(dir: &std::path::Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(dir.join("selections.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    r.records()
        .map(|x| {
            h.iter()
                .zip(x.unwrap().iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn every_selection_matches_its_formula_on_real_samples() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = experiment(dir.path(), true);
    let out = dir.path().join("out");
    declab()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert()
        .success();
    let records = read_records(&out.join("samples.jsonl"));
    let rows = selections(&out);
    // 2 models x 3 prompts x 2 strategies x 6 selectors
    assert_eq!(rows.len(), 72);
    for row in &rows {
        let cell: Vec<&SampleRecord> = records
            .iter()
            .filter(|r| {
                r.model == row["model"]
                    && r.prompt_id == row["prompt_id"]
                    && r.strategy == row["strategy"]
            })
            .collect();
        assert_eq!(cell.len(), 5);
        assert_eq!(row["n"], "5");
        let sel = row["selector"].as_str();
        let score: f64 = row["score"].parse().unwrap();
        let chosen: usize = row["chosen_index"].parse().unwrap();
        let picked = cell.iter().find(|r| r.sample_index == chosen).unwrap();
        for r in &cell {
            // the per-step fields cover every step, and KL(U || p) >= 0, -mean ln p(top 20) >= 0
            assert_eq!(r.trace.self_certainty.len(), r.token_ids.len());
            assert_eq!(r.trace.confidence.len(), r.token_ids.len());
            assert!(r.trace.self_certainty.iter().all(|&x| x >= 0.0));
            assert!(r.trace.confidence.iter().all(|&x| x >= 0.0));
        }
        if sel == "random" {
            continue; // its draws are checked by the selector's own tests
        }
        let want = reference(sel, picked, None);
        let sign = if matches!(sel, "mean_entropy" | "entropy_band_1.5-3") {
            -1.0
        } else {
            1.0
        };
        assert!(
            (sign * score - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{row:?}: {score} vs {want}"
        );
        // the best in the selector's direction, ties to the lowest index
        for r in &cell {
            let s = reference(sel, r, None);
            assert!(
                s < want || (s == want && r.sample_index >= chosen),
                "{row:?}: sample {} scores {s} > {want}",
                r.sample_index
            );
        }
    }
    // the selectors do not all agree with the random control (they read something)
    let differs = rows
        .chunks(6)
        .filter(|c| c[0]["chosen_index"] != c[5]["chosen_index"])
        .count();
    assert!(differs > 0);

    // `declab report` on the stored folder selects the same
    let before = std::fs::read(out.join("selections.csv")).unwrap();
    declab()
        .args(["report", out.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(std::fs::read(out.join("selections.csv")).unwrap(), before);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("self_certainty"));
}

#[test]
fn select_added_to_a_finished_run_generates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let plain = experiment(dir.path(), false);
    declab()
        .args([
            "run",
            plain.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .assert()
        .success();
    assert!(!out.join("selections.csv").exists());
    let before = std::fs::read(out.join("samples.jsonl")).unwrap();
    let with = experiment(dir.path(), true);
    let o = declab()
        .args([
            "run",
            with.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .assert()
        .success();
    let err = String::from_utf8_lossy(&o.get_output().stderr).to_string();
    assert!(err.contains("60 of 60 samples already done"), "{err}");
    assert_eq!(std::fs::read(out.join("samples.jsonl")).unwrap(), before);
    assert_eq!(selections(&out).len(), 72);
}
