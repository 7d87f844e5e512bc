//! One binary for every x86-64 CPU, and the same samples on every CPU of one class of arithmetic
//! (`declab::engine::Numerics`), checked end to end through `declab run` on the real models:
//!
//! * in this process's CPU, every kernel tier declab and candle can be lowered to
//!   (`DECLAB_SIMD=avx2|portable`, candle's AVX-VNNI tier) gives the samples of the default run;
//! * under `qemu-x86_64 -cpu Haswell` (a CPU without AVX-512, where the CPU's own answers pick
//!   every tier: declab's, candle's and gemm's) both real models and the tiny model give the
//!   native run's samples;
//! * under `-cpu Nehalem` (no AVX at all) the same binary runs, records the other class, and
//!   resume and merge refuse to mix its samples with the AVX2 class's.
//!
//! The emulated runs need Debian's `qemu-user`: installed when asked (`DECLAB_TEST_INSTALL=1`,
//! as root, as `.ci/run` does), skipped with the reason printed otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{declab, read_records, real_models_dir, without_timing};
use declab::record::SampleRecord;

/// The run's samples without timing, in key order.
fn samples(dir: &Path) -> Vec<SampleRecord> {
    let mut r = without_timing(&read_records(&dir.join("samples.jsonl")));
    r.sort_by_key(|r| r.key());
    r
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Both real models, strategies that exercise every sampler kernel family.
fn real_grid(dir: &Path, models: &[&str], samples: usize, tokens: usize) -> PathBuf {
    let m = real_models_dir();
    let mut yaml =
        format!("name: port\nseed: 7\nsamples: {samples}\nmax_new_tokens: {tokens}\nmodels:\n");
    for id in models {
        let gguf = match *id {
            "gemma" => m.join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf"),
            _ => m.join("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"),
        };
        yaml += &format!("  - {{id: {id}, gguf: {}}}\n", gguf.display());
    }
    yaml += "prompts:\n  - {id: robot, text: \"Once upon a time, a robot who collected lost socks decided to\"}\n  - {id: sea, text: \"The lighthouse keeper had not seen a ship in eleven years, until\"}\n";
    yaml += "strategies:\n  - kind: greedy\n  - {kind: min_p, min_p: 0.05, temperature: 1.3}\n  - {kind: top_k, top_k: 40, temperature: 0.9}\n  - {kind: target_entropy, target: 2.0, mode: feedback}\n  - {kind: mirostat, mirostat_tau: 3.0}\n";
    let path = dir.join("port.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn tiny_grid(dir: &Path) -> PathBuf {
    common::tiny_experiment(
        dir,
        "tinyport",
        "  - kind: greedy\n  - {kind: temperature, temperature: 1.0}\n  - {kind: min_p, min_p: 0.05, temperature: 1.3}\n  - {kind: target_entropy, target: 2.0, mode: solve}\n",
        3,
        12,
    )
}

#[test]
fn every_kernel_tier_gives_the_same_samples_on_the_real_models() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = real_grid(dir.path(), &["gemma", "smol"], 2, 16);
    let base = dir.path().join("default");
    declab()
        .args(["run", "--no-progress", "--out"])
        .arg(&base)
        .arg(&cfg)
        .assert()
        .success();
    let want = samples(&base);
    assert_eq!(want.len(), 2 * 2 * 5 * 2);
    assert_eq!(
        manifest(&base)["numerics"],
        "cpu-avx2",
        "this test needs an AVX2 CPU"
    );
    let tiers: [(&str, &str, &str); 3] = [
        (
            "DECLAB_SIMD",
            "avx2",
            "projections avx2, samplers avx2, candle avx2",
        ),
        (
            "DECLAB_SIMD",
            "portable",
            "projections portable, samplers portable, candle avx2",
        ),
        ("MISTRALRS_FORCE_AVXVNNI", "1", "candle avx-vnni"),
    ];
    // candle's AVX-VNNI tier, forced on a CPU without AVX-VNNI, would stop on an illegal
    // instruction: it is compared only where the CPU has it
    let avx_vnni = std::arch::is_x86_feature_detected!("avxvnni");
    if !avx_vnni {
        eprintln!("this CPU has no AVX-VNNI: candle's AVX-VNNI tier is not compared");
    }
    for (i, (var, value, kernels)) in tiers
        .iter()
        .enumerate()
        .filter(|(_, (var, _, _))| avx_vnni || *var != "MISTRALRS_FORCE_AVXVNNI")
    {
        let out = dir.path().join(format!("tier{i}"));
        declab()
            .env(var, value)
            .args(["run", "--no-progress", "--shard", "0/1", "--out"])
            .arg(&out)
            .arg(&cfg)
            .assert()
            .success();
        let m = manifest(&out);
        assert!(
            m["kernels"].as_str().unwrap().contains(kernels),
            "{var}={value}: {}",
            m["kernels"]
        );
        assert_eq!(m["numerics"], "cpu-avx2");
        let got = samples(&out);
        for (a, b) in want.iter().zip(&got) {
            assert_eq!(a, b, "{var}={value} changed {:?}", a.key());
        }
        assert_eq!(want.len(), got.len());
    }
}

/// `qemu-x86_64`, installed when asked; `None` (test skipped) otherwise.
fn qemu() -> Option<PathBuf> {
    let find = || {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("qemu-x86_64"))
                .find(|q| q.is_file())
        })
    };
    if let Some(q) = find() {
        return Some(q);
    }
    if !common::install_when_asked("qemu-user", "qemu-x86_64") {
        return None;
    }
    find()
}

/// `declab ARGS` under an emulated CPU.
fn under(qemu: &Path, cpu: &str, args: &[&str]) -> std::process::Output {
    Command::new(qemu)
        .args(["-cpu", cpu])
        .arg(assert_cmd::cargo::cargo_bin("declab"))
        .args(args)
        .env_remove("DECLAB_MODELS")
        .output()
        .unwrap()
}

fn run_ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_emulated_cpu_without_avx512_computes_the_same_samples() {
    let Some(qemu) = qemu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // the tiny model (a longer grid) and both real models (a few tokens each: emulation runs
    // them at about 1 token/s); `--shard 0/1` leaves the statistics out, which are slow there
    let tiny = tiny_grid(dir.path());
    let real = real_grid(dir.path(), &["gemma", "smol"], 1, 4);
    for (name, cfg) in [("tiny", &tiny), ("real", &real)] {
        let native = dir.path().join(format!("{name}-native"));
        let haswell = dir.path().join(format!("{name}-haswell"));
        declab()
            .args(["run", "--no-progress", "--shard", "0/1", "--out"])
            .arg(&native)
            .arg(cfg)
            .assert()
            .success();
        let args = [
            "run",
            "--no-progress",
            "--shard",
            "0/1",
            "--out",
            &s(&haswell),
            &s(cfg),
        ];
        run_ok(
            under(&qemu, "Haswell", &args),
            "declab under qemu -cpu Haswell",
        );
        let m = manifest(&haswell);
        assert_eq!(m["numerics"], "cpu-avx2");
        assert_eq!(m["kernels"], "projections avx2, samplers avx2, candle avx2");
        let (want, got) = (samples(&native), samples(&haswell));
        assert!(!want.is_empty());
        assert_eq!(want.len(), got.len());
        for (a, b) in want.iter().zip(&got) {
            assert_eq!(a, b, "{name}: Haswell changed {:?}", a.key());
        }
    }
}

#[test]
fn a_cpu_without_avx2_runs_and_its_samples_are_never_mixed_with_the_avx2_class() {
    let Some(qemu) = qemu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cfg = tiny_grid(dir.path());

    // the same binary runs on a CPU without AVX (no SIGILL), and says which class it computed
    let old = dir.path().join("nehalem");
    let args = [
        "run",
        "--no-progress",
        "--shard",
        "0/1",
        "--out",
        &s(&old),
        &s(&cfg),
    ];
    run_ok(
        under(&qemu, "Nehalem", &args),
        "declab under qemu -cpu Nehalem",
    );
    let m = manifest(&old);
    assert_eq!(m["numerics"], "cpu-baseline");
    assert_eq!(
        m["kernels"],
        "projections portable, samplers portable, candle generic"
    );
    assert_eq!(samples(&old).len(), 2 * 4 * 3);

    // resuming an AVX2-class folder there is refused before anything is written
    let new = dir.path().join("native");
    declab()
        .args(["run", "--no-progress", "--shard", "0/1", "--out"])
        .arg(&new)
        .arg(&cfg)
        .assert()
        .success();
    let before = std::fs::read(new.join("samples.jsonl")).unwrap();
    let manifest_before = std::fs::read(new.join("manifest.json")).unwrap();
    let args = [
        "run",
        "--no-progress",
        "--shard",
        "0/1",
        "--out",
        &s(&new),
        &s(&cfg),
    ];
    let out = under(&qemu, "Nehalem", &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let host = declab::store::host_name();
    for want in [
        "holds samples that this run could not reproduce",
        "with cpu-avx2 arithmetic; this host",
        "computes with cpu-baseline arithmetic",
        host.as_str(),
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert_eq!(std::fs::read(new.join("samples.jsonl")).unwrap(), before);
    assert_eq!(
        std::fs::read(new.join("manifest.json")).unwrap(),
        manifest_before
    );

    // shards computed in the two classes are not merged
    let run = dir.path().join("run");
    declab()
        .args(["run", "--no-progress", "--shard", "0/2", "--out"])
        .arg(run.join("shards/0-of-2"))
        .arg(&cfg)
        .assert()
        .success();
    let shard1 = run.join("shards/1-of-2");
    let args = [
        "run",
        "--no-progress",
        "--shard",
        "1/2",
        "--out",
        &s(&shard1),
        &s(&cfg),
    ];
    run_ok(
        under(&qemu, "Nehalem", &args),
        "shard 1/2 under qemu -cpu Nehalem",
    );
    let out = declab().arg("merge").arg(&run).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("with cpu-baseline arithmetic but shard 0-of-2"),
        "{err}"
    );
    assert!(err.contains("their samples can differ"), "{err}");
    assert!(!run.join("samples.jsonl").exists(), "nothing merged");
}
