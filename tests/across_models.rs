//! Across models (#19 items 1 and 2): the reference scorer (`scorer:`) and the model
//! comparisons. The tiny models check the plumbing (resume, config errors, report files); the
//! real Gemma 3 and SmolLM2 check the promise: a text is scored under the scorer exactly as the
//! scorer would have scored its own generation, and the scores rank hot sampling below greedy
//! for both models.

mod common;

use std::path::Path;

use common::*;

fn two_tiny(dir: &Path, scorer: &str) -> std::path::PathBuf {
    let a = declab::engine::tiny::write(&dir.join("a"), 7).unwrap();
    let b = declab::engine::tiny::write(&dir.join("b"), 8).unwrap();
    let prompts: String = (0..7)
        .map(|i| format!("  - {{id: p{i}, text: \"the cat number {i} sat on the\"}}\n"))
        .collect();
    let yaml = format!(
        "name: two\nseed: 5\nmodels:\n  - {{id: a, gguf: {}, tokenizer: {}}}\n  - {{id: b, gguf: {}, tokenizer: {}}}\n{scorer}prompts:\n{prompts}samples: 2\nmax_new_tokens: 10\nbaseline: greedy\nstrategies:\n  - kind: greedy\n  - {{kind: temperature, temperature: [1.0, 2.0]}}\n",
        a.gguf.display(),
        a.tokenizer.display(),
        b.gguf.display(),
        b.tokenizer.display(),
    );
    let path = dir.join("two.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
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

/// A scorer added to a finished run scores its samples without generating any again; the
/// samples are otherwise unchanged, and `declab report` rebuilds the same comparisons.
#[test]
fn a_scorer_added_to_a_finished_run_scores_it_without_regenerating() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = two_tiny(dir.path(), "");
    declab()
        .args(["run", "--no-progress"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let before = read_records(&out.join("samples.jsonl"));
    assert!(before.iter().all(|r| r.reference.is_none()));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Across models"), "{report}");
    assert!(report.contains("No reference scorer is set"));
    let rows = csv_rows(&out.join("model_comparisons.csv"));
    assert!(rows.iter().all(|r| r["metric"] != "nll_ref"));

    let cfg = two_tiny(dir.path(), "scorer: b\n");
    let run = declab()
        .args(["run", "--no-progress"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let err = String::from_utf8_lossy(&run.get_output().stderr).to_string();
    assert!(err.contains("84 of 84 samples already done"), "{err}");
    assert!(
        err.contains("scoring 84 samples under the reference scorer \"b\""),
        "{err}"
    );
    let after = read_records(&out.join("samples.jsonl"));
    assert_eq!(before.len(), after.len());
    for (x, y) in before.iter().zip(&after) {
        let mut y = y.clone();
        let score = y.reference.take().expect("every ok sample is scored");
        assert_eq!(score.model, "b");
        assert_eq!(score.entropy.len(), score.logprob.len());
        assert_eq!(x, &y, "scoring changed nothing else");
    }
    assert!(after
        .iter()
        .any(|r| !r.reference.as_ref().unwrap().logprob.is_empty()));
    let rows = csv_rows(&out.join("model_comparisons.csv"));
    for contrast in ["model", "interaction"] {
        assert!(
            rows.iter()
                .any(|r| r["contrast"] == contrast && r["metric"] == "nll_ref"),
            "{contrast}"
        );
    }
    // only metrics that compare across models: no model's own trace
    for own in ["nll_mean", "entropy_mean", "tokens", "forward_ms_per_token"] {
        assert!(rows.iter().all(|r| r["metric"] != own), "{own}");
    }
    assert!(rows
        .iter()
        .all(|r| r["model_a"] == "a" && r["model_b"] == "b"));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("- Reference scorer: `b`"), "{report}");
    assert!(report.contains("### Interaction"));
    assert!(out.join("plot_model_effects.svg").is_file());
    let csv = std::fs::read(out.join("model_comparisons.csv")).unwrap();
    declab().args(["report"]).arg(&out).assert().success();
    assert_eq!(
        std::fs::read(out.join("model_comparisons.csv")).unwrap(),
        csv
    );
}

#[test]
fn a_scorer_that_is_no_model_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_tiny(dir.path(), "scorer: gemma\n");
    let out = dir.path().join("out");
    for cmd in ["validate", "run"] {
        let mut c = declab();
        c.arg(cmd).arg(&cfg);
        if cmd == "run" {
            c.arg("--out").arg(&out);
        }
        let a = c.assert().code(2);
        let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
        assert!(
            err.contains("scorer: \"gemma\" is not a model id of this file")
                && err.contains("\"a\", \"b\""),
            "{err}"
        );
    }
    assert!(!out.exists());
}

/// The real models, Gemma 3 270M as the scorer of its own samples and of SmolLM2's.
#[test]
fn real_models_under_one_reference_scorer() {
    let m = real_models_dir();
    let dir = tempfile::tempdir().unwrap();
    let prompts = [
        "The lighthouse keeper had not seen a ship in eleven years, until",
        "Once upon a time, a robot who collected lost socks decided to",
        "The smallest dragon in the kingdom was afraid of fire, so she",
        "Our new coffee blend tastes like",
        "The old map showed a door under the library, and",
        "When the power went out across the city,",
        "My grandmother kept a box of letters that",
        "The spaceship's cook had one rule:",
    ];
    let prompts: String = prompts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("  - {{id: p{i}, text: \"{t}\"}}\n"))
        .collect();
    let gemma_tok = m.join("gemma-3-270m/tokenizer.json");
    let yaml = format!(
        "name: scored\nseed: 11\nmodels:\n  - {{id: gemma, gguf: {m}/gemma-3-270m/gemma-3-270m-q4_k_m.gguf, tokenizer: {t}}}\n  - {{id: smol, gguf: {m}/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf}}\nscorer: gemma\n\
prompts:\n{prompts}samples: 2\nmax_new_tokens: 24\nbaseline: greedy\nstrategies:\n  - kind: greedy\n  - {{kind: temperature, temperature: 1.5}}\n",
        m = m.display(),
        t = gemma_tok.display()
    );
    let cfg = dir.path().join("scored.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = dir.path().join("out");
    declab()
        .args(["run", "--no-progress"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let recs = read_records(&out.join("samples.jsonl"));
    assert_eq!(recs.len(), 2 * 8 * 2 * 2);
    let tok = tokenizers::Tokenizer::from_file(&gemma_tok).unwrap();
    let mut same = 0;
    for r in &recs {
        let s = r.reference.as_ref().expect("scored");
        assert_eq!(s.model, "gemma");
        assert!(s.error.is_none());
        let ids = tok
            .encode(r.text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(s.logprob.len(), ids.len(), "one score per scorer token");
        assert!(s.logprob.iter().all(|x| x.is_finite() && *x <= 0.0));
        assert!(s.entropy.iter().all(|x| x.is_finite() && *x >= 0.0));
        // Gemma's own sample, re-tokenized to the tokens it drew: the scorer's figures are the
        // generation's own trace, bit for bit (same prefill, batch-invariant rows)
        let drawn = match r.stop_reason.as_str() {
            "eos" => &r.token_ids[..r.token_ids.len() - 1],
            _ => &r.token_ids[..],
        };
        if r.model == "gemma" && r.stop_reason != "stop_string" && ids == drawn {
            same += 1;
            assert_eq!(
                s.logprob[..],
                r.trace.logprob[..ids.len()],
                "{}/{}",
                r.prompt_id,
                r.strategy
            );
            assert_eq!(s.entropy[..], r.trace.entropy[..ids.len()]);
        }
    }
    eprintln!("{same} of Gemma's 32 samples re-tokenize to their own tokens and match its trace");
    assert!(
        same >= 16,
        "only {same} of Gemma's 32 samples re-tokenize to their own tokens"
    );
    // hot sampling is less likely under the one scorer than greedy, for both models, and
    // significantly so over 8 prompts
    let cmp = csv_rows(&out.join("comparisons.csv"));
    for model in ["gemma", "smol"] {
        let r = cmp
            .iter()
            .find(|r| {
                r["model"] == model
                    && r["strategy"] == "temperature(t=1.5)"
                    && r["metric"] == "nll_ref"
            })
            .unwrap();
        let diff: f64 = r["diff"].parse().unwrap();
        let p: f64 = r["p_holm"].parse().unwrap();
        eprintln!("{model}: nll_ref(t=1.5) - nll_ref(greedy) = {diff}, p_holm {p}");
        assert!(
            diff > 0.5 && p < 0.05,
            "{model}: nll_ref(t=1.5) - nll_ref(greedy) = {diff}, p_holm {p}"
        );
    }
    let rows = csv_rows(&out.join("model_comparisons.csv"));
    let inter = rows
        .iter()
        .find(|r| r["contrast"] == "interaction" && r["metric"] == "nll_ref")
        .unwrap();
    assert_eq!(inter["n_prompts"], "8");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("### `smol` − `gemma`, per strategy"),
        "{report}"
    );
}
