//! Hugging Face folders and LoRA adapters on real weights (#18 items 1, 2, 5): the real GGUFs are
//! written out as transformers folders (dequantised, HF names and conventions), and declab's
//! folder loader is checked against three things it does not share code with:
//! * llama.cpp's logits on the same GGUF (the committed reference fixtures): the folder holds
//!   the GGUF's dequantised weights, so the two differ only in how activations are rounded;
//! * candle-transformers' own non-quantised Gemma 3 and Llama models on the same folder (they
//!   read transformers' conventions themselves: Gemma's `1 + w` norms, Llama's RoPE on halves);
//! * for LoRA, a folder the test merges itself (`W + (alpha / r) B A`, in f64).
//!
//! The thresholds are stated beside each assertion with the figures measured when they were set.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use declab::config::Weights;
use declab::engine::hf::{write_from_gguf, WriteOptions};
use declab::engine::LanguageModel;
use declab::reference::{check, Fixture, Summary};

fn fixture(name: &str) -> Fixture {
    Fixture::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/reference/{name}")),
    )
    .unwrap()
}

fn hf(folder: &Path, lora: Option<&Path>) -> Weights {
    Weights::Hf {
        folder: folder.to_path_buf(),
        lora: lora.map(Path::to_path_buf),
    }
}

fn load(w: &Weights) -> Box<dyn LanguageModel> {
    declab::engine::load_model_weights(w, &Device::Cpu)
        .unwrap()
        .0
}

/// log-softmax in f64.
fn log_softmax(l: &[f32]) -> Vec<f64> {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    l.iter().map(|&x| x as f64 - lse).collect()
}

/// KL(p || q) of two logit rows, and whether their argmaxes agree.
fn kl(p: &[f32], q: &[f32]) -> (f64, bool) {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    let k = lp
        .iter()
        .zip(&lq)
        .map(|(a, b)| a.exp() * (a - b))
        .sum::<f64>();
    let am = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold(0, |b, (i, &x)| if x > v[b] { i } else { b })
    };
    (k.max(0.0), am(p) == am(q))
}

/// The fixture's sequences' first `n` tokens, prefilled whole: the last position's logits.
fn prefill_rows(model: &dyn LanguageModel, fx: &Fixture, n: usize) -> Vec<Vec<f32>> {
    fx.sequences
        .iter()
        .map(|s| {
            let ids = &s.ids[..s.ids.len().min(n)];
            model.fork().forward(ids, 0).unwrap()
        })
        .collect()
}

fn folder_files(dir: &Path) -> Vec<PathBuf> {
    declab::engine::hf::weight_files(dir).unwrap()
}

/// candle-transformers' non-quantised Gemma 3 on the folder: the last position's logits.
fn candle_gemma_rows(dir: &Path, fx: &Fixture, n: usize) -> Vec<Vec<f32>> {
    use candle_transformers::models::gemma3;
    let cfg: gemma3::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let files = folder_files(dir);
    // SAFETY: the files are the test's own and are not modified while mapped.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu).unwrap()
    };
    let mut m = gemma3::Model::new(false, &cfg, vb).unwrap();
    fx.sequences
        .iter()
        .map(|s| {
            m.clear_kv_cache();
            let ids = &s.ids[..s.ids.len().min(n)];
            let x = Tensor::new(ids, &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            m.forward(&x, 0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect()
}

/// candle-transformers' non-quantised Llama on the folder: the last position's logits.
fn candle_llama_rows(dir: &Path, fx: &Fixture, n: usize) -> Vec<Vec<f32>> {
    use candle_transformers::models::llama;
    let cfg: llama::LlamaConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    let files = folder_files(dir);
    // SAFETY: as above.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu).unwrap()
    };
    let m = llama::Llama::load(vb, &cfg).unwrap();
    fx.sequences
        .iter()
        .map(|s| {
            let mut cache = llama::Cache::new(true, DType::F32, &cfg, &Device::Cpu).unwrap();
            let ids = &s.ids[..s.ids.len().min(n)];
            let x = Tensor::new(ids, &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            m.forward(&x, 0, &mut cache)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect()
}

struct Agreement {
    mean_kl: f64,
    max_kl: f64,
    top1: f64,
}

fn agreement(a: &[Vec<f32>], b: &[Vec<f32>]) -> Agreement {
    let ks: Vec<(f64, bool)> = a.iter().zip(b).map(|(x, y)| kl(x, y)).collect();
    Agreement {
        mean_kl: ks.iter().map(|k| k.0).sum::<f64>() / ks.len() as f64,
        max_kl: ks.iter().map(|k| k.0).fold(0.0, f64::max),
        top1: ks.iter().filter(|k| k.1).count() as f64 / ks.len() as f64,
    }
}

fn print(name: &str, s: &Summary) {
    eprintln!(
        "{name}: n {} top-1 {:.4} KL mean {:.5} p95 {:.5} max {:.5} |dH| {:.4}",
        s.positions, s.top1, s.mean_kl, s.p95_kl, s.max_kl, s.mean_abs_dh
    );
}

/// A real GGUF written out as a folder (`opts`), loaded by declab, and compared with llama.cpp's
/// fixture (every position), with candle-transformers' model on the folder (`candle_rows`) and
/// with the GGUF path (the prefill of each fixture sequence's first 48 tokens); batching is
/// checked on the folder's model too.
struct Comparison {
    llama_cpp: declab::reference::Report,
    candle: Agreement,
    gguf: Agreement,
}

fn compare(
    gguf: &Path,
    opts: WriteOptions,
    fixture_name: &str,
    vocab: usize,
    candle_rows: fn(&Path, &Fixture, usize) -> Vec<Vec<f32>>,
) -> Comparison {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    write_from_gguf(gguf, &dir, opts).unwrap();
    if opts.shards > 1 {
        assert!(dir.join("model.safetensors.index.json").is_file());
    }
    let fx = fixture(fixture_name);
    let model = load(&hf(&dir, None));
    let llama_cpp = check(model.as_ref(), vocab, &fx).unwrap();
    print("vs llama.cpp, decode", &llama_cpp.decode);
    print("vs llama.cpp, prefill", &llama_cpp.prefill);
    let n = 48;
    let ours = prefill_rows(model.as_ref(), &fx, n);
    let candle = agreement(&ours, &candle_rows(&dir, &fx, n));
    let g = load(&Weights::Gguf(gguf.to_path_buf()));
    let gguf = agreement(&ours, &prefill_rows(g.as_ref(), &fx, n));
    for (what, a) in [("candle-transformers", &candle), ("the GGUF path", &gguf)] {
        eprintln!(
            "vs {what}: KL mean {:.2e} max {:.2e} top-1 {}",
            a.mean_kl, a.max_kl, a.top1
        );
    }
    // batching never changes a row
    let streams: Vec<Vec<u32>> = (0..3).map(|r| fx.sequences[r].ids[..6].to_vec()).collect();
    declab::engine::check_batch_against_singles(
        model.as_ref(),
        &fx.sequences[0].ids[..5],
        &streams,
        &[(3, &[2, 0])],
    )
    .unwrap();
    Comparison {
        llama_cpp,
        candle,
        gguf,
    }
}

fn assert_within(s: &Summary, top1: f64, kl: f64, dh: f64, what: &str) {
    assert!(
        s.top1 >= top1 && s.mean_kl <= kl && s.mean_abs_dh <= dh,
        "{what}: top-1 {:.4} (>= {top1}), KL mean {:.5} (<= {kl}), |dH| {:.4} (<= {dh})",
        s.top1,
        s.mean_kl,
        s.mean_abs_dh
    );
}

/// Gemma 3 270M as an f32 folder in two shards with an index, as a trainer saves a large model.
#[test]
fn gemma3_hf_folder_agrees_with_llama_cpp_candle_and_the_gguf() {
    let gguf = common::real_models_dir().join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf");
    let opts = WriteOptions {
        bf16: false,
        shards: 2,
    };
    let c = compare(
        &gguf,
        opts,
        "gemma3-270m.json.gz",
        262_144,
        candle_gemma_rows,
    );
    // Measured when set (2026-12-01): llama.cpp decode top-1 0.954, KL mean 0.0046, |dH| 0.054
    // (prefill 0.976 / 0.0045 / 0.056) over 1,288 positions; the GGUF path itself is closer
    // (it rounds activations to 8 bits as llama.cpp does; the folder's f32 forward does not).
    // candle-transformers: KL mean 9e-7, max 2.4e-6 (its exact GELU against ggml's f16 table).
    // The GGUF path: KL mean 0.0058, max 0.011, top-1 7 of 7.
    assert_within(&c.llama_cpp.decode, 0.93, 0.01, 0.08, "decode vs llama.cpp");
    assert_within(
        &c.llama_cpp.prefill,
        0.93,
        0.01,
        0.08,
        "prefill vs llama.cpp",
    );
    let (a, b) = (&c.candle, &c.gguf);
    assert!(
        a.mean_kl < 1e-5 && a.max_kl < 1e-4 && a.top1 == 1.0,
        "vs candle-transformers"
    );
    assert!(
        b.mean_kl < 0.015 && b.max_kl < 0.03 && b.top1 == 1.0,
        "vs the GGUF path"
    );
}

/// SmolLM2 as a bf16 folder: candle-transformers' Llama reads transformers' q/k layout with
/// RoPE on halves, which checks that the writer undid llama.cpp's permutation and that the
/// loader pairs halves.
#[test]
fn smollm2_hf_folder_in_bf16_agrees_with_llama_cpp_candle_and_the_gguf() {
    let gguf = common::real_models_dir().join("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    let opts = WriteOptions {
        bf16: true,
        shards: 1,
    };
    let c = compare(
        &gguf,
        opts,
        "smollm2-135m.json.gz",
        49_152,
        candle_llama_rows,
    );
    // Measured when set: llama.cpp decode top-1 0.965, KL mean 0.0027, |dH| 0.052 (prefill
    // 0.940 / 0.0028 / 0.053); candle-transformers: KL 5e-12; the GGUF path: KL mean 0.0018.
    assert_within(&c.llama_cpp.decode, 0.93, 0.01, 0.08, "decode vs llama.cpp");
    assert_within(
        &c.llama_cpp.prefill,
        0.90,
        0.01,
        0.08,
        "prefill vs llama.cpp",
    );
    assert!(
        c.candle.mean_kl < 1e-6 && c.candle.top1 == 1.0,
        "vs candle-transformers"
    );
    assert!(
        c.gguf.mean_kl < 0.01 && c.gguf.top1 == 1.0,
        "vs the GGUF path"
    );
}

/// A LoRA adapter made here, on the real SmolLM2 written as an f32 folder, gives the logits of a
/// folder holding `W + (alpha / r) B A` merged by this test, and moves them away from the base.
#[test]
fn smollm2_lora_equals_the_merged_weights() {
    let models = common::real_models_dir();
    let gguf = models.join("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_from_gguf(
        &gguf,
        &base,
        WriteOptions {
            bf16: false,
            shards: 1,
        },
    )
    .unwrap();
    let (adapter, merged) = (tmp.path().join("adapter"), tmp.path().join("merged"));
    make_lora(&base, &adapter, &merged, 8, 16.0);
    let fx = fixture("smollm2-135m.json.gz");
    let n = 32;
    let with_lora = prefill_rows(load(&hf(&base, Some(&adapter))).as_ref(), &fx, n);
    let by_hand = prefill_rows(load(&hf(&merged, None)).as_ref(), &fx, n);
    let plain = prefill_rows(load(&hf(&base, None)).as_ref(), &fx, n);
    let same = agreement(&with_lora, &by_hand);
    let moved = agreement(&with_lora, &plain);
    let max_diff = with_lora
        .iter()
        .flatten()
        .zip(by_hand.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!(
        "lora vs merged: KL max {:.2e}, |dlogit| max {max_diff:.2e}; lora vs base KL mean {:.3}",
        same.max_kl, moved.mean_kl
    );
    // float tolerance: the two merges sum in different orders (f32 here, f64 in the test)
    assert!(same.max_kl < 1e-6 && max_diff < 1e-3, "lora vs merged");
    assert!(
        moved.mean_kl > 1e-3,
        "the adapter changes the model (KL {})",
        moved.mean_kl
    );
}

/// Write a PEFT adapter for q_proj, v_proj and down_proj of every layer of `base` (random A and
/// B, rank `r`), and the folder holding the merged weights.
fn make_lora(base: &Path, adapter: &Path, merged: &Path, r: usize, alpha: f64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let files = folder_files(base);
    let mut weights = candle_core::safetensors::load(&files[0], &Device::Cpu).unwrap();
    let mut lora = std::collections::HashMap::new();
    let targets: Vec<String> = weights
        .keys()
        .filter(|k| {
            k.ends_with("q_proj.weight")
                || k.ends_with("v_proj.weight")
                || k.ends_with("down_proj.weight")
        })
        .cloned()
        .collect();
    let scale = alpha / r as f64;
    for name in targets {
        let w = &weights[&name];
        let (n, k) = w.dims2().unwrap();
        let a: Vec<f32> = (0..r * k)
            .map(|_| rng.random::<f32>() * 0.2 - 0.1)
            .collect();
        let b: Vec<f32> = (0..n * r)
            .map(|_| rng.random::<f32>() * 0.1 - 0.05)
            .collect();
        let wv: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let mut m = wv.clone();
        for i in 0..n {
            for j in 0..k {
                let d: f64 = (0..r)
                    .map(|t| b[i * r + t] as f64 * a[t * k + j] as f64)
                    .sum();
                m[i * k + j] = (wv[i * k + j] as f64 + scale * d) as f32;
            }
        }
        let module = name.strip_suffix(".weight").unwrap();
        lora.insert(
            format!("base_model.model.{module}.lora_A.weight"),
            Tensor::from_vec(a, (r, k), &Device::Cpu).unwrap(),
        );
        lora.insert(
            format!("base_model.model.{module}.lora_B.weight"),
            Tensor::from_vec(b, (n, r), &Device::Cpu).unwrap(),
        );
        weights.insert(name, Tensor::from_vec(m, (n, k), &Device::Cpu).unwrap());
    }
    std::fs::create_dir_all(adapter).unwrap();
    std::fs::create_dir_all(merged).unwrap();
    candle_core::safetensors::save(&lora, adapter.join("adapter_model.safetensors")).unwrap();
    std::fs::write(
        adapter.join("adapter_config.json"),
        serde_json::json!({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": ["q_proj", "v_proj", "down_proj"], "bias": "none", "use_rslora": false}).to_string(),
    )
    .unwrap();
    candle_core::safetensors::save(&weights, merged.join("model.safetensors")).unwrap();
    std::fs::copy(base.join("config.json"), merged.join("config.json")).unwrap();
}

/// A tiny Hugging Face folder (from the tiny GGUF of `seed`) with its tokenizer.json.
fn tiny_hf(dir: &Path, seed: u64) -> PathBuf {
    let t = declab::engine::tiny::write(&dir.join(format!("tiny-gguf-{seed}")), seed).unwrap();
    let out = dir.join(format!("tiny-hf-{seed}"));
    write_from_gguf(
        &t.gguf,
        &out,
        WriteOptions {
            bf16: false,
            shards: 1,
        },
    )
    .unwrap();
    std::fs::copy(&t.tokenizer, out.join("tokenizer.json")).unwrap();
    out
}

fn experiment(dir: &Path, name: &str, models: &str) -> PathBuf {
    let yaml = format!(
        "name: {name}\nseed: 3\nmodels:\n{models}\nprompts:\n  - {{id: cat, text: \"the cat sat on the\"}}\nsamples: 2\nmax_new_tokens: 6\nstrategies:\n  - {{kind: greedy}}\n  - {{kind: temperature, temperature: 1.0}}\n"
    );
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, yaml).unwrap();
    p
}

/// A trainer's outputs as one grid: a folder (`hf:`), a LoRA on it (`base:` a model id), and a
/// series of three full checkpoints, written out of step order; each model's samples come from
/// its own weights, and the manifest records each model's files.
#[test]
fn a_grid_over_a_folder_a_lora_and_a_checkpoint_series_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = tiny_hf(d, 7);
    // a rank-2 adapter on every q_proj, large enough to change the samples
    let files = folder_files(&base);
    let w = candle_core::safetensors::load(&files[0], &Device::Cpu).unwrap();
    let mut lora = std::collections::HashMap::new();
    for (name, t) in w
        .iter()
        .filter(|(n, _)| n.ends_with("q_proj.weight") || n.ends_with("down_proj.weight"))
    {
        let (n, k) = t.dims2().unwrap();
        let m = name.strip_suffix(".weight").unwrap();
        let a = Tensor::arange(0f32, (2 * k) as f32, &Device::Cpu)
            .unwrap()
            .reshape((2, k))
            .unwrap()
            .sin()
            .unwrap();
        let b = Tensor::arange(0f32, (n * 2) as f32, &Device::Cpu)
            .unwrap()
            .reshape((n, 2))
            .unwrap()
            .cos()
            .unwrap();
        lora.insert(format!("base_model.model.{m}.lora_A.weight"), a);
        lora.insert(format!("base_model.model.{m}.lora_B.weight"), b);
    }
    let adapter = d.join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    candle_core::safetensors::save(&lora, adapter.join("adapter_model.safetensors")).unwrap();
    std::fs::write(adapter.join("adapter_config.json"), r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "down_proj"]}"#).unwrap();
    let runs = d.join("runs");
    for (step, seed) in [(300, 11), (20, 12), (1000, 13)] {
        let f = tiny_hf(d, seed);
        std::fs::create_dir_all(&runs).unwrap();
        std::fs::rename(&f, runs.join(format!("checkpoint-{step}"))).unwrap();
    }
    let file = experiment(
        d,
        "trainer",
        &format!(
            "  - {{id: sft, hf: {}}}\n  - {{id: sft-lora, base: sft, lora: {}}}\n  - {{id: ck, checkpoints: \"{}/checkpoint-*\"}}",
            base.display(),
            adapter.display(),
            runs.display()
        ),
    );
    let out = d.join("out");
    common::declab()
        .args([
            "run",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ])
        .assert()
        .success();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let ids: Vec<&str> = m["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sft", "sft-lora", "ck@20", "ck@300", "ck@1000"]);
    assert!(m["models"][1]["weights"]
        .as_str()
        .unwrap()
        .contains("+ LoRA"));
    let recs = common::read_records(&out.join("samples.jsonl"));
    let tokens = |model: &str| {
        let t: Vec<Vec<u32>> = recs
            .iter()
            .filter(|r| r.model == model)
            .map(|r| r.token_ids.clone())
            .collect();
        assert_eq!(t.len(), 4, "{model}");
        t
    };
    assert_ne!(
        tokens("sft"),
        tokens("sft-lora"),
        "the adapter changes the samples"
    );
    assert_ne!(tokens("ck@20"), tokens("ck@300"));
    assert!(out.join("report.md").is_file());
}

/// Bad folders and adapters are configuration errors at `validate` (exit 2), naming the file and
/// the fix, and `run` creates nothing.
#[test]
fn bad_folders_and_adapters_are_configuration_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let good = tiny_hf(d, 7);
    let copy = |name: &str| {
        let to = d.join(name);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&good).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
        to
    };
    let edit_config = |dir: &Path, key: &str, v: serde_json::Value| {
        let p = dir.join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        c[key] = v;
        std::fs::write(&p, c.to_string()).unwrap();
    };
    let rewrite = |dir: &Path, f: &dyn Fn(&mut std::collections::HashMap<String, Tensor>)| {
        let p = dir.join("model.safetensors");
        let mut w = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
        f(&mut w);
        candle_core::safetensors::save(&w, &p).unwrap();
    };

    let missing = copy("missing");
    rewrite(&missing, &|w| {
        w.remove("model.layers.1.mlp.up_proj.weight");
    });
    let shape = copy("shape");
    edit_config(&shape, "intermediate_size", serde_json::json!(96));
    let arch = copy("arch");
    edit_config(&arch, "model_type", serde_json::json!("qwen2"));
    let dtype = copy("dtype");
    rewrite(&dtype, &|w| {
        let t = w["model.norm.weight"].to_dtype(DType::U8).unwrap();
        w.insert("model.norm.weight".into(), t);
    });
    let adapter = d.join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    let lora: std::collections::HashMap<String, Tensor> = [
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            (2, 48),
        ),
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
            (64, 2),
        ),
    ]
    .into_iter()
    .map(|(n, s)| {
        (
            n.to_string(),
            Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap(),
        )
    })
    .collect();
    candle_core::safetensors::save(&lora, adapter.join("adapter_model.safetensors")).unwrap();
    std::fs::write(
        adapter.join("adapter_config.json"),
        r#"{"r": 2, "lora_alpha": 4}"#,
    )
    .unwrap();

    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("  - {{id: m, hf: {}}}", missing.display()),
            vec![
                "models[0].hf",
                "model.layers.1.mlp.up_proj.weight",
                "is missing",
                "incomplete",
            ],
        ),
        (
            format!("  - {{id: m, hf: {}}}", shape.display()),
            vec![
                "models[0].hf",
                "config.json implies",
                "do not belong together",
            ],
        ),
        (
            format!("  - {{id: m, hf: {}}}", arch.display()),
            vec![
                "config.json",
                "model_type `qwen2` is not supported",
                "gemma3_text",
            ],
        ),
        (
            format!("  - {{id: m, hf: {}}}", dtype.display()),
            vec![
                "model.safetensors",
                "`model.norm.weight` is U8",
                "f32, bf16 and f16",
            ],
        ),
        (
            format!(
                "  - {{id: sft, hf: {}}}\n  - {{id: l, base: sft, lora: {}}}",
                good.display(),
                adapter.display()
            ),
            vec![
                "models[1].lora",
                "adapter_model.safetensors",
                "do not fit the base",
                "trained on another model",
            ],
        ),
        (
            format!(
                "  - {{id: l, base: m, lora: {}}}\n  - {{id: m, gguf: {}}}",
                adapter.display(),
                d.join("tiny-gguf-7/tiny.gguf").display()
            ),
            vec![
                "models[0].base",
                "not a Hugging Face folder",
                "not to a GGUF",
            ],
        ),
        (
            format!("  - {{id: m, hf: {}, chat: true}}", good.display()),
            vec![
                "models[0].chat",
                "no chat template",
                "tokenizer_config.json",
            ],
        ),
        (
            format!("  - {{id: m, hf: {}}}", d.join("nowhere").display()),
            vec!["models[0].hf", "is not a folder"],
        ),
    ];
    for (i, (models, needles)) in cases.iter().enumerate() {
        let file = experiment(d, &format!("bad{i}"), models);
        let out = d.join(format!("out{i}"));
        let r = common::declab()
            .args(["validate", file.to_str().unwrap()])
            .assert()
            .code(2);
        let err = String::from_utf8_lossy(&r.get_output().stderr).to_string();
        assert!(
            err.contains(file.to_str().unwrap()),
            "case {i} names the file: {err}"
        );
        for n in needles {
            assert!(err.contains(n), "case {i}: {n:?} not in: {err}");
        }
        common::declab()
            .args([
                "run",
                file.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .assert()
            .code(2);
        assert!(!out.exists(), "case {i}: run created {}", out.display());
    }
}

/// A real-weights checkpoint series (#19 item 4): the real SmolLM2 written as a folder is the
/// base, and three LoRA adapter checkpoints of one random direction at growing scale stand in
/// for a fine-tuning run drifting from it. Under the base as the reference scorer the drift
/// shows (`nll_ref` of the last checkpoint above the first's), the rule's pick is the best of
/// summary.csv within its bound, and the gate between the first and the last checkpoint fails
/// on `nll_ref`.
#[test]
fn a_real_weights_lora_series_yields_a_chosen_checkpoint() {
    let models = common::real_models_dir();
    let gguf = models.join("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = d.join("base");
    write_from_gguf(
        &gguf,
        &base,
        WriteOptions {
            bf16: true,
            shards: 1,
        },
    )
    .unwrap();
    // the tokenizer embedded in the GGUF, saved where a transformers folder keeps it
    declab::engine::gguf_tokenizer::from_gguf_file(&gguf)
        .unwrap()
        .save(base.join("tokenizer.json"), false)
        .unwrap();
    let files = folder_files(&base);
    let w = candle_core::safetensors::load(&files[0], &Device::Cpu).unwrap();
    let mut targets: Vec<(&String, &Tensor)> = w
        .iter()
        .filter(|(n, _)| {
            n.ends_with("q_proj.weight")
                || n.ends_with("v_proj.weight")
                || n.ends_with("down_proj.weight")
        })
        .collect();
    targets.sort_by(|a, b| a.0.cmp(b.0));
    let r = 8;
    let mut lora = std::collections::HashMap::new();
    {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        for (name, t) in &targets {
            let (n, k) = t.dims2().unwrap();
            let m = name.strip_suffix(".weight").unwrap();
            let a: Vec<f32> = (0..r * k)
                .map(|_| rng.random::<f32>() * 0.2 - 0.1)
                .collect();
            let b: Vec<f32> = (0..n * r)
                .map(|_| rng.random::<f32>() * 0.1 - 0.05)
                .collect();
            lora.insert(
                format!("base_model.model.{m}.lora_A.weight"),
                Tensor::from_vec(a, (r, k), &Device::Cpu).unwrap(),
            );
            lora.insert(
                format!("base_model.model.{m}.lora_B.weight"),
                Tensor::from_vec(b, (n, r), &Device::Cpu).unwrap(),
            );
        }
    }
    // one direction at growing scale: alpha / r = 0.5, 2, 6
    for (step, alpha) in [(100, 4.0), (200, 16.0), (300, 48.0)] {
        let dir = d.join(format!("runs/sft/checkpoint-{step}"));
        std::fs::create_dir_all(&dir).unwrap();
        candle_core::safetensors::save(&lora, dir.join("adapter_model.safetensors")).unwrap();
        std::fs::write(
            dir.join("adapter_config.json"),
            serde_json::json!({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": ["q_proj", "v_proj", "down_proj"], "bias": "none", "use_rslora": false}).to_string(),
        )
        .unwrap();
    }
    let prompts = [
        "The lighthouse keeper had not seen a ship in eleven years, until",
        "Our new coffee blend tastes like",
        "My grandmother kept a box of letters that",
        "The spaceship's cook had one rule:",
        "When the power went out across the city,",
        "The old map showed a door under the library, and",
        "Customer: My order arrived with a cracked mug. What can you do?\\nSupport agent:",
        "The smallest dragon in the kingdom was afraid of fire, so she",
    ];
    let prompts: String = prompts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("  - {{id: p{i}, text: \"{t}\"}}\n"))
        .collect();
    let cfg = d.join("series.yaml");
    std::fs::write(
        &cfg,
        format!(
            "name: series\nseed: 5\nmodels:\n  - {{id: base, hf: base}}\n  - {{id: sft, base: base, checkpoints: \"runs/sft/checkpoint-*\"}}\nscorer: base\n\
prompts:\n{prompts}samples: 2\nmax_new_tokens: 20\nstrategies:\n  - {{kind: temperature, temperature: 0.8}}\n\
choose:\n  among: sft\n  maximize: distinct_2\n  subject_to:\n    - {{metric: nll_ref, max: 4.0}}\n"
        ),
    )
    .unwrap();
    let out = d.join("out");
    let run = common::declab()
        .args(["run", "--no-progress"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let err = String::from_utf8_lossy(&run.get_output().stderr).to_string();
    let mut rd = csv::Reader::from_path(out.join("summary.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    // model, strategy, metric, n_prompts, mean, ci_low, ci_high
    let mean = |model: &str, metric: &str| -> f64 {
        rows.iter()
            .find(|r| &r[0] == model && &r[2] == metric)
            .unwrap_or_else(|| panic!("{model} {metric}"))[4]
            .parse()
            .unwrap()
    };
    let nll: Vec<f64> = ["base", "sft@100", "sft@200", "sft@300"]
        .iter()
        .map(|m| mean(m, "nll_ref"))
        .collect();
    eprintln!(
        "nll_ref under the base: base {:.3}, @100 {:.3}, @200 {:.3}, @300 {:.3}",
        nll[0], nll[1], nll[2], nll[3]
    );
    assert!(
        nll[3] > nll[1] + 0.1,
        "the drift shows under the base scorer: {nll:?}"
    );
    let mut best: Option<(&str, f64)> = None;
    for id in ["sft@100", "sft@200", "sft@300"] {
        if mean(id, "nll_ref") <= 4.0 && best.is_none_or(|b| mean(id, "distinct_2") > b.1) {
            best = Some((id, mean(id, "distinct_2")));
        }
    }
    match best {
        Some((id, _)) => assert!(err.contains(&format!("chosen by the rule: {id}")), "{err}"),
        None => assert!(err.contains("the rule chose nothing"), "{err}"),
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Choosing a checkpoint of `sft`"),
        "{report}"
    );
    // the gate: the last checkpoint is significantly less likely under the base than the first
    common::declab()
        .args(["compare"])
        .arg(&out)
        .arg(&out)
        .args(["--models", "sft@100", "sft@300", "--metric", "nll_ref"])
        .assert()
        .code(1);
}
