//! Decode speed of the real Gemma 3 270M: load, prefill, single-stream ms/token and batched
//! throughput for the batch sizes given as arguments, with a bit-identity check of row 0
//! against the single stream (development aid; `declab bench` is the maintained benchmark).
//! Run: cargo run --release --example decode_speed -- 1 9 27
use declab::config::ModelSpec;
use declab::engine;
use std::time::Instant;

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
    let dir = std::path::PathBuf::from("models/gemma-3-270m");
    let spec = ModelSpec {
        id: "g".into(),
        weights: declab::config::Weights::Gguf(dir.join("gemma-3-270m-q4_k_m.gguf")),
        tokenizer: Some(dir.join("tokenizer.json")),
        eos_tokens: vec![],
        chat: false,
    };
    let t = Instant::now();
    let m = engine::load(&spec, &candle_core::Device::Cpu)?;
    println!(
        "load {:.0} ms (reported {:.0})",
        t.elapsed().as_secs_f64() * 1e3,
        m.load_ms
    );
    println!("memory after load: {}", mem());
    let ids = m.encode("Once upon a time, in a small village by the sea, there lived")?;
    let mut pre = m.model.fork();
    let t = Instant::now();
    let first = pre.forward(&ids, 0)?;
    println!(
        "prefill {} tokens {:.1} ms",
        ids.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let first2 = pre.fork().forward(&ids, 0)?;
    println!("prefill again {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
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
    let bs: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    for &b in &bs {
        let mut dec = pre.batch(b, ids.len() + n + 1)?;
        let mut toks = vec![argmax(&first); b];
        let t = Instant::now();
        let mut same = true;
        for i in 0..n {
            let out = dec.step(&toks, ids.len() + i)?;
            let v = out.len() / b;
            if out[..v]
                .iter()
                .zip(&single[i])
                .any(|(a, c)| a.to_bits() != c.to_bits())
            {
                same = false;
            }
            for r in 0..b {
                toks[r] = argmax(&out[r * v..(r + 1) * v]);
            }
        }
        let el = t.elapsed().as_secs_f64();
        println!("batch {b:>3}: {:.1} ms/step, {:.1} tok/s aggregate, row0 bit-identical to single: {same}", el*1e3/n as f64, (n*b) as f64/el);
        println!("memory after batch {b}: {}", mem());
    }
    Ok(())
}
