//! Decode speed of a real model: load, prefill (16 and 512 tokens), single-stream ms/token and
//! batched throughput for the batch sizes given, each batch step followed by declab's greedy
//! sampler on every row (as a grid samples), with a bit-identity check of row 0 against the
//! single stream. The measuring half of `make bench-peer` (scripts/bench-peer.sh).
//! Run: cargo run --release --example decode_speed -- [gemma|smollm2] 1 9 27 (or `load`: the load
//! alone, as `make bench-peer` warms the files with)
use declab::config::ModelSpec;
use declab::engine;
use std::time::Instant;

/// CPU time of the process so far (s), from /proc/self/stat.
fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let t = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (t(11) + t(12)) / 100.0
}

/// Resident and peak resident memory so far (MiB), from /proc/self/status.
fn mem() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    format!("rss {:.0} MiB, peak {:.0} MiB", kb("VmRSS:"), kb("VmHWM:"))
}

#[allow(clippy::needless_range_loop)]
fn main() -> anyhow::Result<()> {
    let models = std::path::PathBuf::from(
        std::env::var("DECLAB_MODELS").unwrap_or_else(|_| "models".into()),
    );
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let which = match args.first().map(String::as_str) {
        Some("gemma") | Some("smollm2") => args.remove(0),
        _ => "gemma".to_string(),
    };
    let spec = if which == "smollm2" {
        ModelSpec {
            id: "s".into(),
            weights: declab::config::Weights::Gguf(
                models.join("smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ),
            tokenizer: None,
            eos_tokens: vec![],
            chat: false,
        }
    } else {
        declab::bench::default_model_spec().ok_or_else(|| {
            anyhow::anyhow!("no Gemma 3 270M in {}: run `make models`", models.display())
        })?
    };
    println!("model {which}");
    let t = Instant::now();
    let m = engine::load(&spec, &candle_core::Device::Cpu)?;
    println!(
        "load {:.0} ms (reported {:.0})",
        t.elapsed().as_secs_f64() * 1e3,
        m.load_ms
    );
    println!("memory after load: {}", mem());
    if args.first().map(String::as_str) == Some("load") {
        return Ok(());
    }
    let ids = m.encode("Once upon a time, in a small village by the sea, there lived")?;
    let mut pre = m.model.fork();
    let t = Instant::now();
    let first = pre.forward(&ids, 0)?;
    println!(
        "prompt {} tokens {:.1} ms",
        ids.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let first2 = pre.fork().forward(&ids, 0)?;
    println!("prompt again {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let _ = first2;
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32
    };
    // single stream
    let mut s = pre.fork();
    let mut tok = argmax(&first);
    let n = 32;
    let mut single = Vec::new();
    let t = Instant::now();
    for i in 0..n {
        let l = s.forward(&[tok], ids.len() + i)?;
        tok = argmax(&l);
        single.push(l);
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "single: {:.2} ms/token, {:.1} tok/s",
        el * 1e3 / n as f64,
        n as f64 / el
    );
    println!("memory after single stream: {}", mem());
    // prefill at 16 and 512 tokens: a paragraph repeated, cut to n ids; best of two runs
    let para =
        "The lighthouse keeper had not seen a ship in eleven years. Each evening he climbed the \
        hundred and twelve steps, trimmed the wick, wound the clockwork and wrote one line in the \
        log: no ships. The village below had forgotten him, and the gulls had not. ";
    let long: Vec<u32> = m.encode(&para.repeat(40))?;
    for n in [16usize, 512] {
        assert!(long.len() >= n, "the long prompt has {n} tokens");
        let mut best = f64::INFINITY;
        for _ in 0..2 {
            let mut f = m.model.fork();
            let t = Instant::now();
            f.forward(&long[..n], 0)?;
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        println!("prefill {n} tokens {best:.1} ms");
    }
    let bs: Vec<usize> = args
        .iter()
        .map(|a| a.parse().expect("a batch size"))
        .collect();
    for &b in &bs {
        let mut dec = pre.batch(b, ids.len() + n + 1)?;
        let mut toks = vec![argmax(&first); b];
        let t = Instant::now();
        let mut same = true;
        let mut forward = 0f64;
        let (mut sampling, mut again) = (0f64, 0f64);
        let greedy = declab::bench::strategies()?
            .into_iter()
            .find(|s| s.id == "greedy")
            .expect("greedy");
        let mut samplers: Vec<declab::strategy::Sampler> = (0..b)
            .map(|_| {
                declab::strategy::Sampler::new(declab::strategy::build(
                    &greedy.processors,
                    first.len(),
                ))
            })
            .collect();
        let mut rng = declab::seed::rng(1);
        let cpu0 = cpu_s();
        for i in 0..n {
            let ts = Instant::now();
            let out = dec.step(&toks, ids.len() + i)?;
            forward += ts.elapsed().as_secs_f64();
            let v = out.len() / b;
            if out[..v]
                .iter()
                .zip(&single[i])
                .any(|(a, c)| a.to_bits() != c.to_bits())
            {
                same = false;
            }
            let ts = Instant::now();
            for r in 0..b {
                toks[r] = samplers[r]
                    .sample(&out[r * v..(r + 1) * v], &mut rng)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .token;
            }
            sampling += ts.elapsed().as_secs_f64();
            if i == n - 1 {
                // diagnosis: the same rows again, now that they have been read once
                let ts = Instant::now();
                for r in 0..b {
                    samplers[r].sample(&out[r * v..(r + 1) * v], &mut rng).ok();
                }
                again = ts.elapsed().as_secs_f64();
            }
        }
        let el = t.elapsed().as_secs_f64();
        let cpu = cpu_s() - cpu0;
        println!("batch {b:>3}: {:.1} ms/step, {:.1} tok/s aggregate, row0 bit-identical to single: {same}", el*1e3/n as f64, (n*b) as f64/el);
        println!(
            "batch {b:>3} forward only: {:.1} ms/step, {:.1} tok/s",
            forward * 1e3 / n as f64,
            (n * b) as f64 / forward
        );
        println!(
            "batch {b:>3} greedy sampler: {:.1} us/row ({:.2} % of the step), the same rows again {:.1} us/row",
            sampling * 1e6 / (n * b) as f64,
            sampling / el * 100.0,
            again * 1e6 / b as f64
        );
        println!(
            "batch {b:>3} cores busy: {:.2} (CPU time / wall time)",
            cpu / el
        );
        println!("memory after batch {b}: {}", mem());
    }
    // ragged: the largest batch's rows spread over up to 9 prompts of different lengths (as
    // `declab run` packs a grid's prompts), forward only, against the same rows on one prompt
    if let Some(&b) = bs.iter().max() {
        let parts = b.min(9);
        let prompts: Vec<Box<dyn engine::LanguageModel>> = (0..parts)
            .map(|p| {
                let mut f = m.model.fork();
                f.forward(&long[..12 + 5 * p], 0)?;
                Ok(f)
            })
            .collect::<anyhow::Result<_>>()?;
        let spec: Vec<(&dyn engine::LanguageModel, usize)> = prompts
            .iter()
            .enumerate()
            .map(|(p, f)| (f.as_dyn(), b / parts + usize::from(p < b % parts)))
            .collect();
        let positions: Vec<usize> = (0..parts)
            .flat_map(|p| std::iter::repeat_n(12 + 5 * p, spec[p].1))
            .collect();
        let mut uniform = pre.batch(b, ids.len() + n + 1)?;
        let mut ragged = engine::batch_of(&spec, 12 + 5 * parts + n + 1)?;
        let toks = vec![argmax(&first); b];
        let (mut tu, mut tr) = (0f64, 0f64);
        for i in 0..n {
            let t = Instant::now();
            uniform.step(&toks, ids.len() + i)?;
            tu += t.elapsed().as_secs_f64();
            let at: Vec<usize> = positions.iter().map(|p| p + i).collect();
            let t = Instant::now();
            ragged.step_rows(&toks, &at)?;
            tr += t.elapsed().as_secs_f64();
        }
        println!(
            "ragged {b:>3} over {parts} prompts, forward only: {:.1} ms/step, {:.1} tok/s (one prompt, interleaved: {:.1} ms/step)",
            tr * 1e3 / n as f64,
            (n * b) as f64 / tr,
            tu * 1e3 / n as f64
        );
    }
    Ok(())
}
