//! A real Slurm: `tests/slurm/slurm-test.sh` installs slurm-wlm and munge when missing only when
//! asked (`DECLAB_TEST_INSTALL=1`, as root, as `.ci/run` does), starts munged, slurmctld and slurmd on localhost with their own config, socket and
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

/// `make test` installs nothing unless asked: with slurm missing from PATH and no
/// DECLAB_TEST_INSTALL, the script skips without calling apt-get; asked, it calls it. A fake
/// apt-get on PATH records the call (nothing is installed either way).
#[test]
fn the_slurm_test_installs_packages_only_when_asked() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the install path is only reached as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("bin");
    std::fs::create_dir_all(&fake).unwrap();
    let marker = dir.path().join("apt-get-called");
    let apt = fake.join("apt-get");
    std::fs::write(
        &apt,
        format!("#!/bin/sh\necho \"$@\" >> {}\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&apt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // a PATH with the shell tools but without /usr/sbin, where slurmctld and munged live
    let path = format!("{}:/usr/bin:/bin", fake.display());
    let run = |ask: bool| {
        let mut c = std::process::Command::new("/bin/bash");
        c.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/slurm/slurm-test.sh"
        ))
        .args(["/bin/true", "/dev/null"])
        .arg(dir.path())
        .env("PATH", &path)
        .env_remove("DECLAB_TEST_INSTALL");
        if ask {
            c.env("DECLAB_TEST_INSTALL", "1");
        }
        c.output().unwrap()
    };
    let out = run(false);
    assert_eq!(
        out.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("DECLAB_TEST_INSTALL=1"));
    assert!(!marker.exists(), "apt-get was called without being asked");
    let out = run(true);
    assert_eq!(
        out.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        marker.exists(),
        "asked to install, the test did not call apt-get"
    );
}
