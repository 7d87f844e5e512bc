//! `declab bench`: sampler latency at real vocabulary sizes, as ratios to a one-pass floor
//! measured in the same run (so figures survive a noisy, shared machine), and the forward vs
//! sampler split in a short real-model generation, single stream and inside a batch. `--check`
//! compares the ratios and the batched shares with a committed baseline: the latency regression
//! gate (`make bench-check`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{self, ModelSpec};
use crate::engine;
use crate::strategy::kernels::Isa;
use crate::strategy::{self, kernels, Sampler, StrategySpec};

/// The strategies benchmarked: every kind's typical blocks (`config::strategy::examples`),
/// so a new strategy is benchmarked (and gated) as soon as it is registered.
pub fn strategies() -> Result<Vec<StrategySpec>> {
    config::strategy::examples()
        .iter()
        .map(|y| {
            let v: serde_yaml::Value = serde_yaml::from_str(y)?;
            let map = v
                .as_mapping()
                .ok_or_else(|| anyhow!("bench strategy {y} is not a mapping"))?;
            config::strategy::parse_single(map, "bench")
                .map_err(|e| anyhow!("bench strategy {y}: {}", e[0]))
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplerRow {
    pub strategy: String,
    pub vocab: usize,
    pub us_median: f64,
    pub us_p95: f64,
    /// Median over the same iterations of one max pass over the logits (the floor).
    pub floor_us: f64,
    /// us_median / floor_us: the machine-independent figure the regression gate compares.
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationRow {
    pub strategy: String,
    pub tokens: usize,
    pub forward_ms_median: f64,
    pub sampler_us_median: f64,
    pub overhead_pct: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub logits_source: String,
    pub host_cpu: String,
    pub sampler: Vec<SamplerRow>,
    /// What the selectors' per-step trace fields cost, per vocabulary size.
    #[serde(default)]
    pub fields: Vec<FieldsRow>,
    pub generation: Vec<GenerationRow>,
    /// The same split inside one batch holding every strategy (`--batch-tokens`).
    #[serde(default)]
    pub batched: Vec<BatchedRow>,
}

/// One strategy's rows in the batched generation: medians per token over its rows. The forward
/// is the step's wall time divided by the rows in the step (as in a grid's traces); the rows are
/// sampled one after another with the whole pool, so the sampler time is wall time too.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchedRow {
    pub strategy: String,
    /// Rows in the batch at its first step (all strategies together).
    pub batch: usize,
    pub tokens: usize,
    pub forward_ms_median: f64,
    pub sampler_us_median: f64,
    /// sampler / (forward + sampler), in percent: the sampler's share of a token's time.
    pub share_pct: f64,
}

/// The cost of the selectors' trace fields (`self_certainty`, `confidence`) in a step, beside the
/// step's one read of the logits, medians over the same interleaved iterations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FieldsRow {
    pub vocab: usize,
    /// The one read (check, copy, block maxima, moments, the finite logits' sum).
    pub one_read_us: f64,
    /// The finite logits' sum over the row's length on data in L1 (its compute, which is what it
    /// adds to the one read, where each block is summed right after it is scanned).
    pub sum_l1_us: f64,
    /// The top-20 from the blocks' maxima and the two fields' arithmetic.
    pub top20_us: f64,
    /// A greedy step (the cheapest full step), for scale.
    pub greedy_step_us: f64,
}

/// Time the selectors' fields against the one read and a greedy step, on the same rows.
pub fn bench_fields(rows: &[Vec<f32>], vocabs: &[usize], iters: usize) -> Result<Vec<FieldsRow>> {
    use crate::strategy::{kernels::Candidates, Confidence};
    let mut out = Vec::new();
    for &vocab in vocabs {
        let rows: Vec<&[f32]> = rows.iter().map(|r| &r[..vocab.min(r.len())]).collect();
        let mut greedy = Sampler::new(Box::new(crate::strategy::greedy::Greedy));
        let mut rng = crate::seed::rng(0);
        let (mut cands, mut top) = (Candidates::default(), Vec::new());
        let mut t = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let mut sink = 0f64;
        for i in 0..iters + 5 {
            let row = rows[i % rows.len()];
            let t0 = Instant::now();
            let base = cands.check_and_fill(row).map_err(|e| anyhow!("{e}"))?;
            let t1 = Instant::now();
            let c = Confidence::of_row(&cands, &base, &mut top);
            let t2 = Instant::now();
            sink += c.self_certainty + c.confidence;
            // the sum's compute on data in L1 (as in the one read, which sums each block right
            // after scanning it): a 16 KiB piece summed as many times as the row has pieces
            let piece = &row[..row.len().min(4096)];
            let t3 = Instant::now();
            for _ in 0..row.len().div_ceil(piece.len()) {
                sink += kernels::finite_sum_pass(std::hint::black_box(piece)).0;
            }
            let t4 = Instant::now();
            sink += greedy
                .sample(row, &mut rng)
                .map_err(|e| anyhow!("{e}"))?
                .token as f64;
            let t5 = Instant::now();
            if i >= 5 {
                for (v, (a, b)) in t.iter_mut().zip([(t0, t1), (t3, t4), (t1, t2), (t4, t5)]) {
                    v.push((b - a).as_secs_f64() * 1e6);
                }
            }
        }
        std::hint::black_box(sink);
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            percentile(v, 0.5)
        };
        out.push(FieldsRow {
            vocab,
            one_read_us: med(&mut t[0]),
            sum_l1_us: med(&mut t[1]),
            top20_us: med(&mut t[2]),
            greedy_step_us: med(&mut t[3]),
        });
    }
    Ok(out)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    crate::stats::percentile(sorted, q).unwrap_or(f64::NAN)
}

/// Real Gemma logit rows: the prompts' prefill logits and a few greedy steps after each.
pub fn real_logit_rows(spec: &ModelSpec, rows: usize) -> Result<Vec<Vec<f32>>> {
    let model = engine::load(spec, &candle_core::Device::Cpu)?;
    let prompts = [
        "The lighthouse keeper had not seen a ship in eleven years, until one foggy morning",
        "Write a short advertisement for a small bakery that only opens at midnight.",
        "Once upon a time, a robot who collected lost socks decided to",
    ];
    let mut out = Vec::new();
    let per_prompt = rows.div_ceil(prompts.len());
    for p in prompts {
        let ids = model.encode(p)?;
        let mut m = model.model.fork();
        let mut logits = m.forward(&ids, 0)?;
        for pos in ids.len()..ids.len() + per_prompt {
            out.push(logits.clone());
            let next = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as u32)
                .unwrap_or(0);
            logits = m.forward(&[next], pos)?;
        }
    }
    out.truncate(rows);
    Ok(out)
}

/// Magic bytes of a logit fixture file: then u32 LE rows, u32 LE vocab, rows·vocab f16 LE.
const FIXTURE_MAGIC: &[u8; 8] = b"DLOGIT16";

/// The committed fixture of real Gemma 3 270M logit rows the criterion benches read
/// (`make bench-fixture` regenerates it from the model).
pub const FIXTURE_PATH: &str = "benches/fixtures/gemma3-270m-logits.f16";

/// `n` of `rows` spread over their entropy range (lowest, highest and evenly between), so a
/// fixture holds a confident step, an uncertain one and the middle.
pub fn spread_by_entropy(rows: &[Vec<f32>], n: usize) -> Vec<Vec<f32>> {
    let mut by_h: Vec<(f64, usize)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (kernels::dist_stats(r).entropy_nats, i))
        .collect();
    by_h.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = n.min(rows.len()).max(1);
    (0..n)
        .map(|k| {
            let at = if n == 1 {
                0
            } else {
                k * (rows.len() - 1) / (n - 1)
            };
            rows[by_h[at].1].clone()
        })
        .collect()
}

/// Write logit rows as an f16 fixture (half the size of f32; the rounding, below 0.02 nats for
/// logits under 32, keeps the rows' shape, which is what latency depends on).
pub fn write_logit_fixture(path: &Path, rows: &[Vec<f32>]) -> Result<()> {
    let vocab = rows.first().map_or(0, |r| r.len());
    if rows.iter().any(|r| r.len() != vocab) {
        bail!("logit rows of different lengths");
    }
    let mut bytes = Vec::with_capacity(16 + rows.len() * vocab * 2);
    bytes.extend_from_slice(FIXTURE_MAGIC);
    bytes.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(vocab as u32).to_le_bytes());
    for r in rows {
        for &x in r {
            bytes.extend_from_slice(&half::f16::from_f32(x).to_le_bytes());
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::store::write_atomic(path, &bytes)
}

/// Read a fixture written by [`write_logit_fixture`].
pub fn read_logit_fixture(path: &Path) -> Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the logit fixture {} (regenerate it with `make bench-fixture`)",
            path.display()
        )
    })?;
    let bad = || anyhow!("{} is not a declab logit fixture", path.display());
    if bytes.len() < 16 || &bytes[..8] != FIXTURE_MAGIC {
        return Err(bad());
    }
    let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    let (rows, vocab) = (word(8), word(12));
    let size = rows.checked_mul(vocab).and_then(|n| n.checked_mul(2));
    if vocab == 0 || size.and_then(|n| n.checked_add(16)) != Some(bytes.len()) {
        return Err(bad());
    }
    Ok(bytes[16..]
        .chunks_exact(vocab * 2)
        .map(|row| {
            row.chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()
        })
        .collect())
}

/// Synthetic rows shaped like LM logits (a few dominant tokens over a long Gaussian tail).
pub fn synthetic_logit_rows(vocab: usize, rows: usize, seed: u64) -> Vec<Vec<f32>> {
    use rand::Rng;
    let mut rng = crate::seed::rng(seed);
    (0..rows)
        .map(|_| {
            (0..vocab)
                .map(|i| {
                    let u: f32 =
                        rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5;
                    let head = if i % 997 == 0 {
                        8.0 * rng.random::<f32>()
                    } else {
                        0.0
                    };
                    u * 3.0 + head
                })
                .collect()
        })
        .collect()
}

/// Time every strategy on every row (truncated to `vocab`), interleaved with the floor.
pub fn bench_samplers(
    strategies: &[StrategySpec],
    rows: &[Vec<f32>],
    vocabs: &[usize],
    iters: usize,
) -> Result<Vec<SamplerRow>> {
    let mut out = Vec::new();
    for &vocab in vocabs {
        let rows: Vec<&[f32]> = rows.iter().map(|r| &r[..vocab.min(r.len())]).collect();
        for s in strategies {
            let mut sampler = Sampler::new(strategy::build(&s.processors, vocab));
            let mut rng = crate::seed::rng(crate::seed::derive(&["bench", &s.id]));
            let mut times = Vec::with_capacity(iters);
            let mut floors = Vec::with_capacity(iters);
            let mut sink = 0f32;
            for i in 0..iters + 5 {
                let row = rows[i % rows.len()];
                // the floor reads another row, so that neither timing finds its row already in
                // cache from the other (with 8-9 rows of 1 MiB at 262k, a row is cold when read)
                let floor_row = rows[(i + rows.len() / 2) % rows.len()];
                if i % 64 == 0 {
                    sampler.reset(&[]);
                }
                let t0 = Instant::now();
                sink += kernels::max_finite(floor_row);
                let t1 = Instant::now();
                let step = sampler
                    .sample(row, &mut rng)
                    .map_err(|e| anyhow!("{}: {e}", s.id))?;
                let t2 = Instant::now();
                sink += step.token as f32;
                if i >= 5 {
                    floors.push((t1 - t0).as_secs_f64() * 1e6);
                    times.push((t2 - t1).as_secs_f64() * 1e6);
                }
            }
            std::hint::black_box(sink);
            times.sort_by(f64::total_cmp);
            floors.sort_by(f64::total_cmp);
            let us_median = percentile(&times, 0.5);
            let floor_us = percentile(&floors, 0.5).max(1e-3);
            out.push(SamplerRow {
                strategy: s.id.clone(),
                vocab,
                us_median,
                us_p95: percentile(&times, 0.95),
                floor_us,
                ratio: us_median / floor_us,
            });
        }
    }
    Ok(out)
}

/// The real model loaded once for the generation benches, with one prompt prefilled.
pub struct Prefilled {
    model: engine::LoadedModel,
    prompt_ids: Vec<u32>,
    prefilled: Box<dyn engine::LanguageModel>,
    first: Vec<f32>,
    stop: std::sync::atomic::AtomicBool,
}

impl Prefilled {
    pub fn load(spec: &ModelSpec) -> Result<Prefilled> {
        let model = engine::load(spec, &candle_core::Device::Cpu)?;
        let prompt_ids =
            model.encode("Once upon a time, in a small village by the sea, there lived")?;
        let mut prefilled = model.model.fork();
        let first = prefilled.forward(&prompt_ids, 0)?;
        Ok(Prefilled {
            model,
            prompt_ids,
            prefilled,
            first,
            stop: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn args(&self, tokens: usize) -> crate::runner::GenerateArgs<'_> {
        crate::runner::GenerateArgs {
            model: &self.model,
            prefilled: self.prefilled.as_ref(),
            first_logits: &self.first,
            prompt_ids: &self.prompt_ids,
            max_new_tokens: tokens,
            stop: &[],
            stop_flag: &self.stop,
        }
    }
}

/// A short generation per strategy on the real model: forward vs sampler time per token.
pub fn bench_generation(
    p: &Prefilled,
    strategies: &[StrategySpec],
    tokens: usize,
) -> Result<Vec<GenerationRow>> {
    let mut out = Vec::new();
    for s in strategies {
        let args = p.args(tokens);
        let job = crate::runner::Job {
            strategy: s,
            seed: crate::seed::derive(&["bench-gen", &s.id]),
        };
        let g = crate::runner::generate(&args, job)?;
        let fwd = crate::record::median(&g.trace.forward_ms).unwrap_or(f64::NAN);
        let smp = crate::record::median(&g.trace.sampler_us).unwrap_or(f64::NAN);
        out.push(GenerationRow {
            strategy: s.id.clone(),
            tokens: g.token_ids.len(),
            forward_ms_median: fwd,
            sampler_us_median: smp,
            overhead_pct: share_pct(fwd, smp),
        });
    }
    Ok(out)
}

/// Every strategy, `samples` rows each, decoded as one batch from one prompt (the way a grid
/// decodes a prompt's samples): each strategy's sampler time against the amortised forward.
pub fn bench_batched(
    p: &Prefilled,
    strategies: &[StrategySpec],
    tokens: usize,
    samples: usize,
) -> Result<Vec<BatchedRow>> {
    let args = p.args(tokens);
    let jobs: Vec<crate::runner::Job> = strategies
        .iter()
        .flat_map(|s| {
            (0..samples).map(move |k| crate::runner::Job {
                strategy: s,
                seed: crate::seed::derive(&["bench-batch", &s.id, &k.to_string()]),
            })
        })
        .collect();
    let batch = jobs.len();
    let mut done: Vec<Option<crate::runner::Generated>> = (0..batch).map(|_| None).collect();
    crate::runner::generate_batch(&args, &jobs, |j, g| {
        done[j] = Some(g);
        Ok(())
    })?;
    let mut out = Vec::new();
    for (si, s) in strategies.iter().enumerate() {
        let (mut fwd, mut smp, mut n) = (Vec::new(), Vec::new(), 0);
        for g in done[si * samples..(si + 1) * samples].iter().flatten() {
            fwd.extend_from_slice(&g.trace.forward_ms);
            smp.extend_from_slice(&g.trace.sampler_us);
            n += g.token_ids.len();
        }
        let f = crate::record::median(&fwd).unwrap_or(f64::NAN);
        let u = crate::record::median(&smp).unwrap_or(f64::NAN);
        out.push(BatchedRow {
            strategy: s.id.clone(),
            batch,
            tokens: n,
            forward_ms_median: f,
            sampler_us_median: u,
            share_pct: share_pct(f, u),
        });
    }
    Ok(out)
}

/// The sampler's share of a token's time, in percent: sampler / (forward + sampler).
fn share_pct(forward_ms: f64, sampler_us: f64) -> f64 {
    sampler_us / 1e3 / (forward_ms + sampler_us / 1e3) * 100.0
}

/// One generation table: per strategy, tokens, forward ms, sampler µs and the share (headed
/// `last`), as `(strategy, tokens, forward, sampler, share)` rows.
fn generation_table<'a>(
    title: &str,
    last: &str,
    rows: impl Iterator<Item = (&'a str, usize, f64, f64, f64)>,
) -> String {
    let mut s = format!("\n{title}\n");
    s += &format!(
        "{:<62} {:>7} {:>11} {:>11} {:>10}\n",
        "strategy", "tokens", "forward ms", "sampler us", last
    );
    for (strategy, tokens, fwd, smp, share) in rows {
        s += &format!("{strategy:<62} {tokens:>7} {fwd:>11.2} {smp:>11.1} {share:>9.2}%\n");
    }
    s
}

pub fn table(report: &BenchReport) -> String {
    let mut s = format!(
        "sampler latency ({}; floor = one max pass over the logits, same run)\n",
        report.logits_source
    );
    s += &format!(
        "{:<62} {:>7} {:>10} {:>10} {:>9} {:>8}\n",
        "strategy", "vocab", "us median", "us p95", "floor us", "ratio"
    );
    for r in &report.sampler {
        s += &format!(
            "{:<62} {:>7} {:>10.1} {:>10.1} {:>9.1} {:>8.1}\n",
            r.strategy, r.vocab, r.us_median, r.us_p95, r.floor_us, r.ratio
        );
    }
    if !report.fields.is_empty() {
        s += "\nselectors' trace fields per step (self_certainty, confidence; medians, same run)\n";
        s += &format!(
            "{:>7} {:>12} {:>15} {:>10} {:>15} {:>16}\n",
            "vocab",
            "one read us",
            "sum (in L1) us",
            "top-20 us",
            "greedy step us",
            "fields / greedy"
        );
        for f in &report.fields {
            s += &format!(
                "{:>7} {:>12.1} {:>15.1} {:>10.1} {:>15.1} {:>15.1}%\n",
                f.vocab,
                f.one_read_us,
                f.sum_l1_us,
                f.top20_us,
                f.greedy_step_us,
                (f.sum_l1_us + f.top20_us) / f.greedy_step_us * 100.0
            );
        }
    }
    if !report.generation.is_empty() {
        s += &generation_table(
            "real-model generation (medians per token)",
            "overhead",
            report.generation.iter().map(|g| {
                let (f, u) = (g.forward_ms_median, g.sampler_us_median);
                (g.strategy.as_str(), g.tokens, f, u, g.overhead_pct)
            }),
        );
    }
    if let Some(b) = report.batched.first() {
        s += &generation_table(
            &format!("real-model generation inside one batch of {} rows (every strategy; medians per token; forward amortised over the rows)", b.batch),
            "share",
            report.batched.iter().map(|g| {
                let (f, u) = (g.forward_ms_median, g.sampler_us_median);
                (g.strategy.as_str(), g.tokens, f, u, g.share_pct)
            }),
        );
    }
    s
}

pub fn csv(report: &BenchReport) -> Result<Vec<u8>> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    for r in &report.sampler {
        w.serialize(r)?;
    }
    Ok(w.into_inner()?)
}

/// Baseline file: floor-normalised ratios per (strategy, vocab).
#[derive(Debug, Serialize, Deserialize)]
pub struct Baseline {
    /// A strategy fails when its ratio exceeds baseline ratio x tolerance.
    pub tolerance: f64,
    pub rows: Vec<SamplerRow>,
    /// Each strategy's share of the per-token time inside a batch; fails above baseline share x
    /// `batched_tolerance`.
    #[serde(default)]
    pub batched: Vec<BatchedRow>,
    #[serde(default = "default_batched_tolerance")]
    pub batched_tolerance: f64,
    /// The instruction-set class of the host that measured it (`avx512`, `avx2`, `portable`);
    /// absent in the AVX-512 baseline written before classes had files of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isa: Option<String>,
}

/// The baseline file of this host's instruction-set class for the path given: `path` itself
/// on AVX-512 hosts (where `bench/baseline.json` was measured), `<stem>-<isa>.json` beside it on
/// the others. Ratios to the floor differ between classes (an AVX2 host runs the exp pass at
/// half the lanes while the floor stays bound by memory), so each class is gated against its
/// own measurement.
pub fn baseline_for(path: &Path, isa: Isa) -> PathBuf {
    if isa == Isa::Avx512 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map_or("baseline".into(), |s| s.to_string_lossy());
    path.with_file_name(format!("{stem}-{}.json", isa.name()))
}

/// The share is a ratio of two times measured in the same steps, steadier than a latency:
/// a tighter default than the single-row ratios' tolerance.
fn default_batched_tolerance() -> f64 {
    1.5
}

/// Compare with a baseline; returns the list of regressions (empty = pass).
/// Measured (strategy, vocab) rows the baseline has no row for: a strategy registered after the
/// baseline was written.
pub fn ungated(report: &BenchReport, baseline: &Baseline) -> Vec<(String, usize)> {
    report
        .sampler
        .iter()
        .filter(|r| {
            !baseline
                .rows
                .iter()
                .any(|b| b.strategy == r.strategy && b.vocab == r.vocab)
        })
        .map(|r| (r.strategy.clone(), r.vocab))
        .collect()
}

pub fn check(report: &BenchReport, baseline: &Baseline) -> Vec<String> {
    let mut bad = Vec::new();
    for b in &baseline.rows {
        match report
            .sampler
            .iter()
            .find(|r| r.strategy == b.strategy && r.vocab == b.vocab)
        {
            Some(r) if r.ratio > b.ratio * baseline.tolerance => bad.push(format!(
                "{} at vocab {}: ratio {:.1} > baseline {:.1} x tolerance {} ({:.1} us/token)",
                r.strategy, r.vocab, r.ratio, b.ratio, baseline.tolerance, r.us_median
            )),
            Some(_) => {}
            None => bad.push(format!(
                "{} at vocab {}: in the baseline but not measured",
                b.strategy, b.vocab
            )),
        }
    }
    for b in &baseline.batched {
        match report.batched.iter().find(|r| r.strategy == b.strategy) {
            Some(r) if r.share_pct > b.share_pct * baseline.batched_tolerance => bad.push(format!(
                "{} inside a batch: sampler share {:.2} % > baseline {:.2} % x tolerance {} ({:.1} us/token)",
                r.strategy, r.share_pct, b.share_pct, baseline.batched_tolerance, r.sampler_us_median
            )),
            Some(_) => {}
            None if report.batched.is_empty() => bad.push(format!(
                "{} inside a batch: in the baseline but the batched generation did not run (it needs the real model and --batch-tokens > 0)",
                b.strategy
            )),
            None => bad.push(format!(
                "{} inside a batch: in the baseline but not measured",
                b.strategy
            )),
        }
    }
    bad
}

pub fn default_model_spec() -> Option<ModelSpec> {
    let dir = std::env::var("DECLAB_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("models"));
    let gguf = dir.join("gemma-3-270m/gemma-3-270m-q4_k_m.gguf");
    let tokenizer = dir.join("gemma-3-270m/tokenizer.json");
    (gguf.is_file() && tokenizer.is_file()).then(|| ModelSpec {
        id: "gemma3-270m".into(),
        weights: crate::config::Weights::Gguf(gguf),
        tokenizer: Some(tokenizer),
        eos_tokens: vec![],
        chat: false,
    })
}

pub struct BenchOptions {
    pub vocabs: Vec<usize>,
    pub iters: usize,
    pub out: Option<PathBuf>,
    pub generation_tokens: usize,
    /// Tokens per row in the batched generation (0 skips it).
    pub batch_tokens: usize,
    pub batch_samples: usize,
    pub check: Option<PathBuf>,
    pub write_baseline: Option<(PathBuf, f64)>,
    /// Only write a logit fixture of this many rows here (from the real model), then stop.
    pub save_logits: Option<(PathBuf, usize)>,
}

pub fn run(opts: &BenchOptions) -> Result<i32> {
    let strategies = strategies()?;
    let spec = default_model_spec();
    if let Some((path, n)) = &opts.save_logits {
        let s = spec.as_ref().ok_or_else(|| {
            anyhow!("--save-logits needs the real model: run `make models` first")
        })?;
        let rows = spread_by_entropy(&real_logit_rows(s, 24)?, *n);
        write_logit_fixture(path, &rows)?;
        eprintln!(
            "declab: wrote {} real logit rows (vocab {}) to {}",
            rows.len(),
            rows[0].len(),
            path.display()
        );
        return Ok(0);
    }
    let max_vocab = opts.vocabs.iter().copied().max().unwrap_or(262_144);
    let (rows, source) = match &spec {
        Some(s) => (
            real_logit_rows(s, 9)?,
            format!("real Gemma 3 270M logits, {}", s.weights.describe()),
        ),
        None => (
            synthetic_logit_rows(max_vocab, 8, 1),
            "synthetic logits (run `make models` for real Gemma logits)".to_string(),
        ),
    };
    if let Some(v) = opts.vocabs.iter().find(|&&v| v > rows[0].len()) {
        bail!(
            "--vocab {v} exceeds the logit rows' vocabulary of {}",
            rows[0].len()
        );
    }
    let sampler = bench_samplers(&strategies, &rows, &opts.vocabs, opts.iters)?;
    let fields = bench_fields(&rows, &opts.vocabs, opts.iters)?;
    let prefilled = match &spec {
        Some(s) if opts.generation_tokens > 0 || opts.batch_tokens > 0 => Some(Prefilled::load(s)?),
        _ => None,
    };
    let generation = match (&prefilled, opts.generation_tokens) {
        (Some(p), n) if n > 0 => bench_generation(p, &strategies, n)?,
        _ => vec![],
    };
    let batched = match (&prefilled, opts.batch_tokens) {
        (Some(p), n) if n > 0 => bench_batched(p, &strategies, n, opts.batch_samples)?,
        _ => vec![],
    };
    let report = BenchReport {
        logits_source: source,
        host_cpu: crate::store::host_cpu(),
        sampler,
        fields,
        generation,
        batched,
    };
    print!("{}", table(&report));
    if let Some(dir) = &opts.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        crate::store::write_atomic(
            &dir.join("bench.json"),
            &serde_json::to_vec_pretty(&report)?,
        )?;
        crate::store::write_atomic(&dir.join("bench.csv"), &csv(&report)?)?;
    }
    let isa = Isa::detected();
    if let Some((path, tolerance)) = &opts.write_baseline {
        let path = &baseline_for(path, isa);
        let b = Baseline {
            tolerance: *tolerance,
            rows: report.sampler.clone(),
            batched: report.batched.clone(),
            batched_tolerance: default_batched_tolerance(),
            isa: Some(isa.name().to_string()),
        };
        crate::store::write_atomic(path, &serde_json::to_vec_pretty(&b)?)?;
        eprintln!("declab: wrote baseline {}", path.display());
    }
    if let Some(path) = &opts.check {
        let path = &baseline_for(path, isa);
        let b: Baseline = serde_json::from_slice(
            &std::fs::read(path)
                .with_context(|| format!("cannot read baseline {}", path.display()))?,
        )
        .with_context(|| format!("{} is not a bench baseline", path.display()))?;
        for (strategy, vocab) in ungated(&report, &b) {
            eprintln!(
                "declab: note: {strategy} at vocab {vocab} is measured but not in {}, so not gated; `make bench-baseline` (or adding its row) gates it",
                path.display()
            );
        }
        for r in report
            .batched
            .iter()
            .filter(|r| !b.batched.iter().any(|x| x.strategy == r.strategy))
        {
            eprintln!(
                "declab: note: {} inside a batch is measured but not in {}, so not gated; `make bench-baseline` gates it",
                r.strategy,
                path.display()
            );
        }
        let bad = check(&report, &b);
        if !bad.is_empty() {
            eprintln!(
                "declab: sampler latency regressed against {}:",
                path.display()
            );
            for b in &bad {
                eprintln!("  {b}");
            }
            return Ok(1);
        }
        eprintln!(
            "declab: bench-check passed against {} (ratios: tolerance x{}; shares inside a batch: {})",
            path.display(),
            b.tolerance,
            if b.batched.is_empty() {
                "none in the baseline".to_string()
            } else {
                format!("tolerance x{}", b.batched_tolerance)
            }
        );
    }
    Ok(0)
}

pub fn load_baseline(path: &Path) -> Result<Baseline> {
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(strategy: &str, ratio: f64) -> SamplerRow {
        SamplerRow {
            strategy: strategy.into(),
            vocab: 262_144,
            us_median: ratio * 10.0,
            us_p95: 0.0,
            floor_us: 10.0,
            ratio,
        }
    }

    #[test]
    fn fixture_round_trips_through_f16() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.f16");
        let rows = vec![
            vec![0.0f32, 1.5, f32::NEG_INFINITY, -3.25],
            vec![20.0f32, -7.5, 0.125, 2.0],
        ];
        write_logit_fixture(&path, &rows).unwrap();
        assert_eq!(read_logit_fixture(&path).unwrap(), rows);
        for bad in [
            &b"DLOGIT16\x01\0\0\0\x04\0\0\0"[..],
            &b"DLOGIT16\x01\0\0\0\0\0\0\0"[..],
            &b"DLOGIT16\xff\xff\xff\xff\xff\xff\xff\xff"[..],
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = read_logit_fixture(&path).unwrap_err().to_string();
            assert!(e.contains("is not a declab logit fixture"), "{e}");
        }
    }

    #[test]
    fn spread_by_entropy_takes_both_ends() {
        let rows: Vec<Vec<f32>> = (0..5).map(|i| vec![i as f32, 0.0, 0.0]).collect();
        // entropy falls as the first logit grows
        let picked = spread_by_entropy(&rows, 2);
        assert_eq!(picked, vec![rows[4].clone(), rows[0].clone()]);
    }

    #[test]
    fn check_flags_regressions_beyond_tolerance_and_missing_rows() {
        let baseline = Baseline {
            tolerance: 2.5,
            rows: vec![row("greedy", 10.0), row("top_p", 20.0), row("gone", 5.0)],
            batched: vec![],
            batched_tolerance: 1.5,
            isa: None,
        };
        let report = BenchReport {
            logits_source: String::new(),
            host_cpu: String::new(),
            sampler: vec![row("greedy", 24.0), row("top_p", 51.0)],
            fields: vec![],
            generation: vec![],
            batched: vec![],
        };
        let bad = check(&report, &baseline);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].starts_with("top_p at vocab 262144: ratio 51.0"));
        assert!(bad[1].contains("gone") && bad[1].contains("not measured"));
        // a strategy registered after the baseline is named, not silently skipped
        let mut report = report;
        report.sampler.push(row("top_a", 9.0));
        assert_eq!(
            ungated(&report, &baseline),
            vec![("top_a".to_string(), 262144)]
        );
    }

    fn share(strategy: &str, pct: f64) -> BatchedRow {
        BatchedRow {
            strategy: strategy.into(),
            batch: 34,
            tokens: 32,
            forward_ms_median: 2.0,
            sampler_us_median: pct * 20.0,
            share_pct: pct,
        }
    }

    #[test]
    fn each_isa_class_has_its_own_baseline_file() {
        let p = Path::new("bench/baseline.json");
        assert_eq!(baseline_for(p, Isa::Avx512), p);
        assert_eq!(
            baseline_for(p, Isa::Avx2),
            Path::new("bench/baseline-avx2.json")
        );
        assert_eq!(
            baseline_for(p, Isa::Portable),
            Path::new("bench/baseline-portable.json")
        );
    }

    #[test]
    fn check_gates_the_batched_share() {
        let baseline = Baseline {
            tolerance: 2.5,
            rows: vec![],
            batched: vec![share("greedy", 4.0), share("solve", 8.0)],
            batched_tolerance: 1.5,
            isa: None,
        };
        let mut report = BenchReport {
            logits_source: String::new(),
            host_cpu: String::new(),
            sampler: vec![],
            fields: vec![],
            generation: vec![],
            batched: vec![share("greedy", 5.9), share("solve", 12.1)],
        };
        let bad = check(&report, &baseline);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].starts_with("solve inside a batch: sampler share 12.10 %"),
            "{bad:?}"
        );
        // a baseline with batched rows cannot pass a run that skipped the batch
        report.batched.clear();
        let bad = check(&report, &baseline);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("did not run"), "{bad:?}");
        // an older baseline file (no batched rows) still reads
        let old: Baseline = serde_json::from_str(r#"{"tolerance": 2.0, "rows": []}"#).unwrap();
        assert!(old.batched.is_empty() && old.batched_tolerance == 1.5);
    }
}
