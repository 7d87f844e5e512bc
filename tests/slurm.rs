//! A real Slurm: `tests/slurm/slurm-test.sh` installs slurm-wlm and munge when missing (as root,
//! as CI runs), starts munged, slurmctld and slurmd on localhost with their own config, socket and
//! ports, submits a sharded tiny-model grid as a job array (`deploy/slurm/run-grid.sbatch`) and the
//! merge as a dependent job (`deploy/slurm/merge.sbatch`), and compares the merged samples with a
//! single-process run. Skipped, with the reason printed, where the daemons cannot be started.

mod common;

#[test]
fn sharded_grid_on_a_real_slurm_equals_the_single_process_run() {
    let dir = tempfile::tempdir().unwrap();
    let m = common::tiny_model(dir.path());
    let yaml = format!(
        "name: slurmgrid\nseed: 3\nmodels: [{{id: tiny, gguf: {}, tokenizer: {}}}]\nprompts: [{{id: a, text: \"the cat sat\"}}, {{id: b, text: \"once upon a time\"}}]\nsamples: 2\nmax_new_tokens: 6\nstrategies: [{{kind: greedy}}, {{kind: temperature, temperature: 1.0}}, {{kind: top_p, top_p: 0.9}}]\n",
        m.gguf.display(),
        m.tokenizer.display()
    );
    let cfg = dir.path().join("slurmgrid.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("declab");
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/slurm/slurm-test.sh"
        ))
        .arg(&bin)
        .arg(&cfg)
        .arg(&work)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => assert!(stdout.contains("PASS"), "{stdout}"),
        Some(77) => eprintln!("slurm test skipped: {stdout}"),
        code => panic!(
            "the Slurm test failed ({code:?}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
