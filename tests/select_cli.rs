//! `declab select` on the tiny generated model: on a run's own samples.jsonl it reproduces the
//! run's selections.csv byte for byte and the stored traces bit for bit (teacher forcing takes
//! the run's path); usage and input errors exit 2 before anything is written.

mod common;

use common::*;

/// The selectors of the run's `select:` block and, in the same order, as `--selector` flags.
const SELECT_YAML: &str = "select:\n  - {kind: self_certainty}\n  - {kind: mean_entropy}\n  - {kind: mean_logprob}\n  - {kind: group_confidence, window: 4}\n  - {kind: entropy_band, low: 1.0, high: 4.0}\n  - {kind: random}\n";
const SELECT_FLAGS: &[&str] = &[
    "self_certainty",
    "mean_entropy",
    "{kind: mean_logprob}",
    "{kind: group_confidence, window: 4}",
    "{kind: entropy_band, low: 1.0, high: 4.0}",
    "random",
];

#[test]
fn select_on_a_runs_samples_reproduces_its_selections_and_traces() {
    let dir = tempfile::tempdir().unwrap();
    let strategies = format!(
        "  - {{kind: temperature, temperature: 1.0}}\n  - {{kind: top_p, top_p: 0.9}}\n{SELECT_YAML}"
    );
    let cfg = tiny_experiment(dir.path(), "sel", &strategies, 3, 12);
    let run_out = dir.path().join("run");
    declab()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            run_out.to_str().unwrap(),
        ])
        .assert()
        .success();
    let sel_out = dir.path().join("sel");
    let mut cmd = declab();
    cmd.args(["select", "--input"])
        .arg(run_out.join("samples.jsonl"))
        .arg("--scorer")
        .arg(dir.path().join("tiny/tiny.gguf"))
        .arg("--out")
        .arg(&sel_out);
    for s in SELECT_FLAGS {
        cmd.args(["--selector", s]);
    }
    cmd.assert().success();
    let want = std::fs::read_to_string(run_out.join("selections.csv")).unwrap();
    let got = std::fs::read_to_string(sel_out.join("selections.csv")).unwrap();
    // 2 prompts x 2 strategies x 6 selectors (entropy_band may find no candidate in its band)
    assert!(want.lines().count() > 2 * 2 * 5, "{want}");
    assert_eq!(got, want, "select must choose what run chose");
    let records = read_records(&run_out.join("samples.jsonl"));
    assert_traces_match(&records, &trace_lines(&sel_out.join("select_traces.jsonl")));

    // default output folder (the input's) and default selectors, seed from the manifest
    declab()
        .args(["select", "--input"])
        .arg(run_out.join("samples.jsonl"))
        .arg("--scorer")
        .arg(dir.path().join("tiny"))
        .assert()
        .success();
    let defaults = std::fs::read_to_string(run_out.join("selections.csv")).unwrap();
    let random_rows = |csv: &str| -> Vec<String> {
        csv.lines()
            .filter(|l| l.contains(",random,"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(random_rows(&defaults), random_rows(&want));
    assert!(defaults.contains(",group_confidence_w16,"), "{defaults}");

    // another model may rerank the samples, with a warning that they are not its own
    let other = declab::engine::tiny::write(&dir.path().join("other"), 8).unwrap();
    declab()
        .args(["select", "--input"])
        .arg(run_out.join("samples.jsonl"))
        .arg("--scorer")
        .arg(&other.gguf)
        .arg("--out")
        .arg(dir.path().join("other_sel"))
        .assert()
        .success()
        .stderr(predicates::str::contains("is not the scorer"));
}

#[test]
fn select_scores_generic_lines_in_groups_with_given_or_tokenized_text() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let input = dir.path().join("gen.jsonl");
    std::fs::write(
        &input,
        "{\"group\": \"q1\", \"prompt\": \"the cat sat on the\", \"text\": \"mat and\"}\n\
         {\"group\": \"q1\", \"prompt\": \"the cat sat on the\", \"text\": \"ignored\", \"token_ids\": [5, 6, 7]}\n\
         {\"group\": 2, \"prompt\": \"once upon a time\", \"text\": \"there\"}\n\
         {\"group\": \"q1\", \"prompt\": \"the cat sat on the\", \"text\": \"\"}\n",
    )
    .unwrap();
    declab()
        .args(["select", "--input"])
        .arg(&input)
        .arg("--scorer")
        .arg(&m.gguf)
        .args([
            "--selector",
            "mean_logprob",
            "--selector",
            "random",
            "--seed",
            "3",
        ])
        .assert()
        .success();
    let csv = std::fs::read_to_string(dir.path().join("selections.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "model,prompt_id,strategy,selector,n,chosen_index,score"
    );
    // the empty text has no score, except the random one
    assert!(rows[1].starts_with("tiny,q1,,mean_logprob,2,"), "{csv}");
    assert!(rows[2].starts_with("tiny,q1,,random,3,"), "{csv}");
    assert!(rows[3].starts_with("tiny,2,,mean_logprob,1,0,"), "{csv}");
    assert_eq!(rows.len(), 5);
    let traces = trace_lines(&dir.path().join("select_traces.jsonl"));
    assert_eq!(
        traces
            .iter()
            .map(|t| (t.prompt_id.as_str(), t.index, t.logprob.len()))
            .collect::<Vec<_>>()[1..],
        [("q1", 1, 3), ("q1", 2, 0), ("2", 0, traces[3].tokens)]
    );
}

#[test]
fn select_usage_and_input_errors_exit_2_naming_the_problem_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let good = dir.path().join("good.jsonl");
    std::fs::write(
        &good,
        "{\"group\": \"a\", \"prompt\": \"p\", \"text\": \"x\"}\n",
    )
    .unwrap();
    let bad_line = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad_line,
        "{\"group\": \"a\", \"prompt\": \"p\", \"text\": \"x\"}\n{\"group\": \"a\", \"text\": 3}\n",
    )
    .unwrap();
    let huge = dir.path().join("huge.jsonl");
    std::fs::write(
        &huge,
        "{\"group\": \"g\", \"prompt\": \"p\", \"token_ids\": [1]}\n{\"group\": \"g\", \"prompt\": \"p\", \"token_ids\": [4000000]}\n",
    )
    .unwrap();
    let cases: Vec<(Vec<String>, &str)> =
        vec![
        (
            vec!["--input".into(), good.display().to_string(), "--selector".into(), "best".into()],
            "unknown selector kind \"best\"",
        ),
        (
            vec![
                "--input".into(),
                good.display().to_string(),
                "--selector".into(),
                "{kind: group_confidence, window: 0}".into(),
            ],
            "window",
        ),
        (
            vec!["--input".into(), bad_line.display().to_string()],
            "bad.jsonl: line 2: missing or non-string `text`",
        ),
        (
            vec!["--input".into(), dir.path().join("none.jsonl").display().to_string()],
            "none.jsonl: cannot read it",
        ),
        (
            vec!["--input".into(), huge.display().to_string()],
            "line 2: group \"g\", candidate 1: token id 4000000 is outside the scorer's vocabulary",
        ),
    ];
    for (args, want) in cases {
        declab()
            .arg("select")
            .args(&args)
            .arg("--scorer")
            .arg(&m.gguf)
            .assert()
            .code(2)
            .stderr(predicates::str::contains(want));
    }
    declab()
        .args(["select", "--input"])
        .arg(&good)
        .arg("--scorer")
        .arg(&good)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("is not a GGUF file"));
    assert!(!dir.path().join("selections.csv").exists());
    assert!(!dir.path().join("select_traces.jsonl").exists());
}
