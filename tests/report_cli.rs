//! CLI tests of `declab report`, `declab metrics` and `declab compare` on small synthetic
//! results folders (and one real `declab run` on the tiny model), checking the written files,
//! values recomputed here from the metric library, and exit codes.

mod common;

use std::path::Path;

use declab::record::{SampleRecord, Timing, Trace};

const PROMPTS: usize = 8;

/// Word lists that differ per prompt so the paired differences have no ties.
fn text_for(strategy: &str, prompt: usize, sample: usize, repetitive_temp: bool) -> String {
    if strategy == "greedy" || repetitive_temp {
        // distinct_1 = 2 / (4 + prompt)
        let mut w = vec!["the"; 3 + prompt];
        w.push("end");
        w.join(" ")
    } else {
        (0..4 + prompt)
            .map(|i| format!("w{prompt}x{sample}y{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn record(
    strategy: &str,
    kind: &str,
    prompt: usize,
    sample: usize,
    repetitive_temp: bool,
) -> SampleRecord {
    let n = 5;
    SampleRecord {
        model: "m".into(),
        prompt_id: format!("p{prompt}"),
        strategy: strategy.into(),
        kind: kind.into(),
        params: serde_json::json!({"kind": kind}),
        sample_index: sample,
        seed: 1,
        status: "ok".into(),
        error: None,
        prompt: format!("prompt number {prompt} about the sea"),
        chat_prompt: None,
        text: text_for(strategy, prompt, sample, repetitive_temp),
        prompt_tokens: 4,
        token_ids: vec![1; n],
        text_ends: Vec::new(),
        stop_reason: "max_tokens".into(),
        trace: Trace {
            entropy: vec![1.0 + prompt as f32 * 0.1; n],
            varentropy: vec![0.5; n],
            temperature: vec![1.0; n],
            final_entropy: vec![0.8; n],
            kept: vec![10; n],
            logprob: vec![-1.5; n],
            p_final: vec![0.3; n],
            self_certainty: vec![9.0 + sample as f32; n],
            confidence: vec![4.0 - sample as f32 * 0.5; n],
            branch: None,
            controller: None,
            solve: None,
            forward_ms: vec![10.0; n - 1],
            sampler_us: vec![if strategy == "greedy" { 50.0 } else { 80.0 }; n],
        },
        timing: Timing {
            prefill_ms: 1.0,
            total_ms: 60.0,
        },
        reference: None,
    }
}

/// A results folder: 1 model x 8 prompts x {greedy, temp} x 2 samples, plus one failed sample.
fn write_results(dir: &Path, repetitive_temp: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut records = Vec::new();
    for p in 0..PROMPTS {
        for (s, kind) in [("greedy", "greedy"), ("temp", "temperature")] {
            for i in 0..2 {
                records.push(record(s, kind, p, i, repetitive_temp));
            }
        }
    }
    let mut failed = record("temp", "temperature", 0, 2, repetitive_temp);
    failed.status = "failed".into();
    failed.error = Some("step 0: logits contain NaN".into());
    records.push(failed);
    std::fs::write(
        dir.join("samples.jsonl"),
        declab::store::jsonl_bytes(&records).unwrap(),
    )
    .unwrap();
    let prompts: Vec<serde_json::Value> = (0..PROMPTS)
        .map(|p| serde_json::json!({"id": format!("p{p}"), "text": "x"}))
        .collect();
    let manifest = serde_json::json!({
        "declab_version": "0.1.0", "git_commit": null, "experiment": "synthetic",
        "config_file": "synthetic.yaml", "config_sha256": "abc", "seed": 5,
        "resolved_config": {
            "name": "synthetic", "seed": 5, "samples": 2, "max_new_tokens": 5, "baseline": "greedy",
            "models": [{"id": "m"}], "prompts": prompts,
            "strategies": [
                {"id": "greedy", "kind": "greedy", "params": {"kind": "greedy"}},
                {"id": "temp", "kind": "temperature", "params": {"kind": "temperature", "temperature": 1.0}}
            ]
        },
        "models": [], "threads": 1, "host_cpu": "test", "started_at": "t0", "finished_at": "t1",
        "status": "complete", "samples_total": 32, "samples_done": 33, "samples_failed": 1
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = r.headers().unwrap().iter().map(str::to_string).collect();
    let rows = r
        .records()
        .map(|x| x.unwrap().iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

fn col(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

#[test]
fn report_regenerates_every_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("res");
    write_results(&dir, false);
    // one of the 33 samples failed: the report is written for the others and the exit code says so
    common::declab()
        .arg("report")
        .arg(&dir)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("1 of 33 samples failed"));
    for f in [
        "summary.csv",
        "comparisons.csv",
        "latency.csv",
        "metrics_samples.csv",
        "metrics_groups.csv",
        "report.md",
        "plot_tradeoff.svg",
        "plot_entropy_by_position.svg",
        "plot_sampler_overhead.svg",
    ] {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    // no target_entropy strategy, no target plot
    assert!(!dir.join("plot_target_entropy.svg").exists());
    // no `select:`, no selection outputs
    for f in [
        "selections.csv",
        "selection_comparisons.csv",
        "selection_costs.csv",
        "plot_selection_gain.svg",
    ] {
        assert!(!dir.join(f).exists(), "{f} without selectors");
    }

    // summary: the mean over prompts of each prompt's mean distinct_1, recomputed here
    let (h, rows) = read_csv(&dir.join("summary.csv"));
    let find = |strategy: &str, metric: &str| {
        rows.iter()
            .find(|r| r[col(&h, "strategy")] == strategy && r[col(&h, "metric")] == metric)
            .cloned()
    };
    let row = find("greedy", "distinct_1").expect("greedy distinct_1 row");
    let expected: f64 = (0..PROMPTS)
        .map(|p| {
            declab::metrics::distinct_n(
                &declab::metrics::words(&text_for("greedy", p, 0, false)),
                1,
            )
        })
        .sum::<f64>()
        / PROMPTS as f64;
    let mean: f64 = row[col(&h, "mean")].parse().unwrap();
    assert!((mean - expected).abs() < 1e-12, "{mean} vs {expected}");
    assert_eq!(row[col(&h, "n_prompts")], PROMPTS.to_string());
    let (lo, hi): (f64, f64) = (
        row[col(&h, "ci_low")].parse().unwrap(),
        row[col(&h, "ci_high")].parse().unwrap(),
    );
    assert!(lo <= mean && mean <= hi && lo < hi);
    // the failed sample is excluded: temp's tokens come from ok samples only
    assert!(find("temp", "self_bleu_4").is_some());

    // comparisons: temp beats greedy on distinct_1 at every prompt, all differences distinct
    let (h, rows) = read_csv(&dir.join("comparisons.csv"));
    let c = rows
        .iter()
        .find(|r| r[col(&h, "strategy")] == "temp" && r[col(&h, "metric")] == "distinct_1")
        .expect("temp vs greedy");
    assert_eq!(c[col(&h, "baseline")], "greedy");
    let p: f64 = c[col(&h, "p_value")].parse().unwrap();
    assert!(
        (p - 2.0 / 2f64.powi(PROMPTS as i32)).abs() < 1e-12,
        "exact Wilcoxon p for {PROMPTS} positive differences: {p}"
    );
    assert_eq!(c[col(&h, "effect_size")], "1");
    assert!(c[col(&h, "diff")].parse::<f64>().unwrap() > 0.0);

    // raw metrics: one row per ok sample, one per group
    let (h, rows) = read_csv(&dir.join("metrics_samples.csv"));
    assert_eq!(rows.len(), PROMPTS * 4);
    assert!(h.contains(&"stop_reason".to_string()));
    let (_, rows) = read_csv(&dir.join("metrics_groups.csv"));
    assert_eq!(rows.len(), PROMPTS * 2);

    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("1 failed sample(s) excluded"), "{md}");
    assert!(!md.contains("Best-of-N") && !md.contains("selections.csv"));
    assert!(md.contains("| temp | ") && md.contains("greedy (baseline)"));
    assert!(md.contains("](plot_tradeoff.svg)"));
    let svg = std::fs::read_to_string(dir.join("plot_sampler_overhead.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("temp") && svg.trim_end().ends_with("</svg>"));

    // regenerating gives the same statistics (seeded bootstrap)
    let before = std::fs::read(dir.join("summary.csv")).unwrap();
    common::declab().arg("report").arg(&dir).assert().code(1);
    assert_eq!(before, std::fs::read(dir.join("summary.csv")).unwrap());
}

#[test]
fn report_on_a_folder_without_manifest_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = common::declab()
        .arg("report")
        .arg(tmp.path())
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&out);
    assert!(
        err.contains("manifest.json") && err.contains("results folder"),
        "{err}"
    );
}

#[test]
fn compare_gates_on_named_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    write_results(&a, false);
    write_results(&b, true);
    // identical runs: nothing changed
    common::declab()
        .args(["compare"])
        .arg(&a)
        .arg(&a)
        .args(["--metric", "distinct_1"])
        .assert()
        .code(0);
    // B made temp repetitive: distinct_1 (higher is better) dropped at every prompt
    let out = common::declab()
        .args(["compare"])
        .arg(&a)
        .arg(&b)
        .args(["--metric", "distinct_1", "--csv"])
        .arg(tmp.path().join("cmp.csv"))
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("temp") && l.contains("distinct_1") && l.contains("WORSE")),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("temp distinct_1"));
    let (h, rows) = read_csv(&tmp.path().join("cmp.csv"));
    assert!(rows.iter().any(|r| r[col(&h, "strategy")] == "temp"
        && r[col(&h, "metric")] == "distinct_1"
        && r[col(&h, "diff")].parse::<f64>().unwrap() < 0.0));
    // the reverse direction is an improvement, which does not fail the gate
    common::declab()
        .args(["compare"])
        .arg(&b)
        .arg(&a)
        .args(["--metric", "distinct_1"])
        .assert()
        .code(0);
    // without --metric: report only, exit 0
    common::declab()
        .args(["compare"])
        .arg(&a)
        .arg(&b)
        .assert()
        .code(0);
    // unknown metric: a usage error (exit 2) listing the known names
    let out = common::declab()
        .args(["compare"])
        .arg(&a)
        .arg(&b)
        .args(["--metric", "distinct_9"])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("self_bleu_4"));
}

#[test]
fn metrics_scores_foreign_generations() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("gen.jsonl");
    let lines = [
        ("b", "one two three four"),
        ("a", "x x x x"),
        ("b", "one two three five"),
    ];
    let body: String = lines
        .iter()
        .map(|(g, t)| {
            format!(
                "{}\n",
                serde_json::json!({"group": g, "text": t, "prompt": "count"})
            )
        })
        .collect();
    std::fs::write(&input, body).unwrap();
    let out = tmp.path().join("out");
    common::declab()
        .args(["metrics", "--no-embed", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let (h, rows) = read_csv(&out.join("metrics_samples.csv"));
    assert_eq!(&h[..2], &["group".to_string(), "index".to_string()]);
    assert!(
        !h.contains(&"nll_mean".to_string()),
        "no trace, no NLL: {h:?}"
    );
    let ids: Vec<(String, String)> = rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert_eq!(
        ids,
        vec![
            ("b".into(), "0".into()),
            ("a".into(), "0".into()),
            ("b".into(), "1".into())
        ]
    );
    for (row, (_, text)) in rows.iter().zip(lines) {
        let want = declab::metrics::distinct_n(&declab::metrics::words(text), 2);
        assert_eq!(row[col(&h, "distinct_2")].parse::<f64>().unwrap(), want);
        assert_eq!(
            row[col(&h, "coherence_embed")],
            "",
            "--no-embed leaves it empty"
        );
    }
    let (h, rows) = read_csv(&out.join("metrics_groups.csv"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][col(&h, "group")], "b");
    assert_eq!(rows[0][col(&h, "n_samples")], "2");
    let wb: Vec<Vec<&str>> = ["one two three four", "one two three five"]
        .iter()
        .map(|t| declab::metrics::words(t))
        .collect();
    let want = declab::metrics::self_bleu(&wb, 4).unwrap();
    assert!((rows[0][col(&h, "self_bleu_4")].parse::<f64>().unwrap() - want).abs() < 1e-12);
    assert_eq!(
        rows[1][col(&h, "self_bleu_4")],
        "",
        "a single-sample group has no self-BLEU"
    );

    // a malformed line names the file and line
    std::fs::write(
        &input,
        "{\"group\": \"a\", \"text\": \"x\"}\n{\"text\": 3}\n",
    )
    .unwrap();
    let err = common::declab()
        .args(["metrics", "--no-embed", "--input"])
        .arg(&input)
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&err).contains("gen.jsonl:2"));
}

#[test]
fn metrics_with_a_missing_embedder_says_run_make_models() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("gen.jsonl");
    std::fs::write(&input, "{\"group\": \"a\", \"text\": \"x\"}\n").unwrap();
    let err = common::declab()
        .args(["metrics", "--embedder"])
        .arg(tmp.path().join("nope"))
        .arg("--input")
        .arg(&input)
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&err);
    assert!(
        err.contains("make models") && err.contains("--no-embed"),
        "{err}"
    );
}

#[test]
fn run_writes_the_report_at_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let strategies = "  - kind: greedy\n  - kind: target_entropy\n    target: 1.0\n";
    let exp = common::tiny_experiment(tmp.path(), "tinyreport", strategies, 2, 6);
    let out = tmp.path().join("out");
    common::declab()
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .arg("--no-progress")
        .assert()
        .success();
    for f in [
        "summary.csv",
        "comparisons.csv",
        "report.md",
        "plot_entropy_by_position.svg",
        "plot_target_entropy.svg",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let (h, rows) = read_csv(&out.join("summary.csv"));
    let tokens = rows
        .iter()
        .find(|r| r[col(&h, "strategy")] == "greedy" && r[col(&h, "metric")] == "tokens")
        .expect("tokens row");
    assert_eq!(tokens[col(&h, "n_prompts")], "2");
    // `declab report` regenerates the same summary from the stored samples
    let before = std::fs::read(out.join("summary.csv")).unwrap();
    common::declab().arg("report").arg(&out).assert().success();
    assert_eq!(before, std::fs::read(out.join("summary.csv")).unwrap());
}

/// report.md's shape: its headings and the header row of every table.
fn report_shape(path: &Path) -> String {
    let report = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    let shape: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            l.starts_with('#')
                || lines.get(i + 1).is_some_and(|n| {
                    n.starts_with("|--") || n.starts_with("|:-") || n.starts_with("| --")
                })
        })
        .map(|(_, l)| *l)
        .collect();
    shape.join("\n")
}

/// The columns of every CSV a results folder holds (and of `declab metrics`' two files): a
/// metric's column is named by the metric, in registry order, and a renamed or reordered column
/// shows here.
#[test]
fn every_csv_keeps_its_columns() {
    let header = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines().next().unwrap().to_string()
    };
    let tmp = tempfile::tempdir().unwrap();
    let strategies = "  - kind: greedy\n  - {kind: temperature, temperature: 1.0}\n";
    let exp = common::tiny_experiment(tmp.path(), "columns", strategies, 2, 4);
    let out = tmp.path().join("out");
    common::declab()
        // no sentence embedder, whatever this checkout has fetched: the report's shape must not
        // depend on it (the CSV headers list every metric either way)
        .env("DECLAB_MODELS", tmp.path().join("no-models"))
        .arg("run")
        .arg(&exp)
        .arg("--out")
        .arg(&out)
        .arg("--no-progress")
        .assert()
        .success();
    insta::assert_snapshot!("samples_csv", header(&out.join("samples.csv")));
    insta::assert_snapshot!("summary_csv", header(&out.join("summary.csv")));
    insta::assert_snapshot!("comparisons_csv", header(&out.join("comparisons.csv")));
    insta::assert_snapshot!("latency_csv", header(&out.join("latency.csv")));
    insta::assert_snapshot!(
        "metrics_samples_csv",
        header(&out.join("metrics_samples.csv"))
    );
    insta::assert_snapshot!(
        "metrics_groups_csv",
        header(&out.join("metrics_groups.csv"))
    );
    insta::assert_snapshot!("report_md_shape", report_shape(&out.join("report.md")));

    let input = tmp.path().join("gen.jsonl");
    std::fs::write(&input, "{\"group\": \"a\", \"text\": \"x y\"}\n").unwrap();
    let scored = tmp.path().join("scored");
    common::declab()
        .args(["metrics", "--no-embed", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&scored)
        .assert()
        .success();
    insta::assert_snapshot!(
        "declab_metrics_samples_csv",
        header(&scored.join("metrics_samples.csv"))
    );
    insta::assert_snapshot!(
        "declab_metrics_groups_csv",
        header(&scored.join("metrics_groups.csv"))
    );
}

/// `select:` added to a finished experiment (the manifest's resolved config): `declab report`
/// writes the three selection CSVs, the report's "Best-of-N selection" section and the gain
/// plot. The traces are edited so the selectors' picks are known: self-certainty (9 + sample)
/// picks sample 1, DeepConf's group confidence (4 − sample / 2) and the log-likelihood
/// (−1 − sample / 2 − prompt / 20) pick sample 0, whose NLL is 0.5 lower.
#[test]
fn report_with_selectors_writes_the_selection_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("res");
    write_results(&dir, false);
    let mut records = common::read_records(&dir.join("samples.jsonl"));
    for r in &mut records {
        let p: f32 = r.prompt_id[1..].parse().unwrap();
        let lp = -1.0 - 0.5 * r.sample_index as f32 - 0.05 * p;
        r.trace.logprob = vec![lp; r.trace.logprob.len()];
    }
    std::fs::write(
        dir.join("samples.jsonl"),
        declab::store::jsonl_bytes(&records).unwrap(),
    )
    .unwrap();
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["resolved_config"]["select"] = serde_json::json!([
        {"kind": "self_certainty"},
        {"kind": "mean_logprob"},
        {"kind": "group_confidence", "window": 2},
        {"kind": "random"}
    ]);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    common::declab()
        // no sentence embedder: the tables' columns must not depend on this checkout's models
        .env("DECLAB_MODELS", tmp.path().join("no-models"))
        .arg("report")
        .arg(&dir)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("selections.csv"));

    // selections: one row per cell and selector, the picks the traces dictate
    let (h, rows) = read_csv(&dir.join("selections.csv"));
    assert_eq!(rows.len(), PROMPTS * 2 * 4);
    for r in &rows {
        let want = match r[col(&h, "selector")].as_str() {
            "self_certainty" => "1",
            "mean_logprob" | "group_confidence_w2" => "0",
            "random" => continue,
            other => panic!("unexpected selector {other}"),
        };
        assert_eq!(r[col(&h, "chosen_index")], want, "{r:?}");
        assert_eq!(r[col(&h, "n")], "2", "the failed sample is not a candidate");
    }

    // comparisons: against the mean of the two samples the NLL moves by exactly ±0.25
    let (h, rows) = read_csv(&dir.join("selection_comparisons.csv"));
    let diff = |selector: &str, reference: &str| -> f64 {
        rows.iter()
            .find(|r| {
                r[col(&h, "strategy")] == "temp"
                    && r[col(&h, "selector")] == selector
                    && r[col(&h, "reference")] == reference
                    && r[col(&h, "metric")] == "nll_mean"
            })
            .unwrap_or_else(|| panic!("no {selector} vs {reference} row"))[col(&h, "diff")]
        .parse()
        .unwrap()
    };
    assert!((diff("self_certainty", "mean_of_n") - 0.25).abs() < 1e-6);
    assert!((diff("mean_logprob", "mean_of_n") + 0.25).abs() < 1e-6);
    assert!(
        !rows
            .iter()
            .any(|r| r[col(&h, "selector")] == "random" && r[col(&h, "reference")] == "random"),
        "the control is not compared with itself"
    );

    // cost: two samples of five tokens per selected output
    let (h, rows) = read_csv(&dir.join("selection_costs.csv"));
    let temp = rows
        .iter()
        .find(|r| r[col(&h, "strategy")] == "temp")
        .expect("temp cost row");
    assert_eq!(temp[col(&h, "n")], "2");
    assert_eq!(temp[col(&h, "tokens_per_sample")], "5");
    assert_eq!(temp[col(&h, "tokens_per_selection")], "10");

    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for want in [
        "## Best-of-N selection",
        "N = 2 samples",
        "- `self_certainty`: mean over the steps of KL(U ‖ p)",
        "- `group_confidence_w2`: lowest mean token confidence",
        "| temp | self_certainty | 0.250 [0.250, 0.250] * |",
        "| temp | mean_logprob | -0.250 [-0.250, -0.250] * |",
        "A selected output costs N samples",
        "| m | temp | 2 | 5.00 | 10.00 |",
        "![Metric gain per selector](plot_selection_gain.svg)",
        "`selections.csv`, `selection_comparisons.csv`, `selection_costs.csv`",
    ] {
        assert!(md.contains(want), "no {want:?} in\n{md}");
    }
    let svg = std::fs::read_to_string(dir.join("plot_selection_gain.svg")).unwrap();
    assert!(
        svg.starts_with("<svg")
            && svg.contains("group_confidence_w2")
            && svg.contains("greedy")
            && svg.contains("nll_mean")
            && svg.trim_end().ends_with("</svg>")
    );
    insta::assert_snapshot!(
        "report_md_shape_select",
        report_shape(&dir.join("report.md"))
    );
}
