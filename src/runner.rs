//! Drives an experiment: for each model, each prompt (one shared prefill), each strategy and
//! sample, generate with the sample's own seeded RNG, time the forward pass and the sampler
//! separately, and append each finished sample to `samples.jsonl` at once (fsync per cell), so
//! a crash keeps what finished and a re-run resumes. At the end the records are rewritten in
//! canonical order with the final `manifest.json`, and returned: the runner generates and stores
//! (through [`crate::store`]); `samples.csv`, the statistics and the report are the command
//! layer's to write from what it returns.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::{Experiment, Prompt, Weights};
use crate::engine::{self, LanguageModel, LoadedModel};
use crate::grid::{GridIds, SampleKey, Shard};
use crate::record::{SampleRecord, Timing, Trace};
use crate::store::{self, JsonlAppender, Manifest, ModelInfo};
use crate::strategy::{self, Sampler, StrategySpec};
use crate::teacher;

/// Default `--batch`: candle's quantised kernels give each row the same result for any row
/// count; the throughput measured by batch size is in `bench/perf-notes.md` (section 4).
pub const DEFAULT_BATCH: u16 = 32;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out_dir: PathBuf,
    /// Move an existing results folder aside and start over.
    pub fresh: bool,
    pub cuda: bool,
    /// Show an interactive progress bar (default: when stderr is a terminal).
    pub progress: Option<bool>,
    /// Run only this shard's cells (see `grid`).
    pub shard: Option<Shard>,
    /// Most samples decoded together, of one prompt or of several (see [`plan_batches`]); 1
    /// decodes one sample at a time. Does not change any sample.
    pub batch: usize,
    /// Run again the samples recorded as failed (otherwise they count as done).
    pub retry_failed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub out_dir: PathBuf,
    pub samples_total: usize,
    pub samples_run: usize,
    pub samples_resumed: usize,
    pub samples_failed: usize,
    pub tokens_generated: usize,
    pub generate_seconds: f64,
    pub interrupted: bool,
}

/// What [`run`] leaves for the command layer: the counts, and the folder's records (canonical
/// order) and final manifest, from which it writes `samples.csv` and the statistics.
pub struct RunOutcome {
    pub summary: RunSummary,
    pub records: Vec<SampleRecord>,
    pub manifest: Manifest,
}

/// Set by the Ctrl-C handler; the runner stops after the current step.
pub fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone()
}

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    done: usize,
    tokens: usize,
    started: Instant,
}

impl Progress {
    fn new(total: usize, already: usize, interactive: bool) -> Self {
        let bar = interactive.then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} samples {msg} (ETA {eta})",
                )
                .expect("valid template"),
            );
            b.set_position(already as u64);
            b
        });
        Progress {
            bar,
            total,
            done: already,
            tokens: 0,
            started: Instant::now(),
        }
    }

    fn sample_done(&mut self, tokens: usize) {
        self.done += 1;
        self.tokens += tokens;
        if let Some(b) = &self.bar {
            b.set_position(self.done as u64);
            b.set_message(format!(
                "{:.1} tok/s",
                self.tokens as f64 / self.started.elapsed().as_secs_f64()
            ));
        }
    }

    fn cell_done(&self, label: &str) {
        if self.bar.is_none() {
            let secs = self.started.elapsed().as_secs_f64();
            eprintln!(
                "declab: [{}/{} samples] {label} ({:.1} tok/s, {:.0} s elapsed)",
                self.done,
                self.total,
                self.tokens as f64 / secs.max(1e-9),
                secs
            );
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Every configuration error that needs a model's files, found before any folder exists or any
/// weights are read (exit 2, the experiment file and YAML path named): a `gguf:` that is not a
/// GGUF file, its architecture and metadata, entropy targets vs ln V, a tokenizer declab cannot
/// build, `eos_tokens` missing from the vocabulary, a chat model without a template or whose
/// template fails to render a prompt, and prompts that do not fit the context with
/// `max_new_tokens` (no count can overflow there), and a GGUF whose header cannot be read
/// (truncated, corrupt). A file whose header reads but whose tensor data is cut short is found
/// when the weights load (exit 1).
pub fn preflight(exp: &Experiment) -> Result<()> {
    let mut errors = Vec::new();
    for (i, m) in exp.models.iter().enumerate() {
        // the key the weights were given under (a series' folders under `checkpoints`)
        let key = match &m.weights {
            Weights::Gguf(_) => "gguf",
            Weights::Hf { lora: Some(_), .. } => "lora",
            Weights::Hf { .. } => "hf",
        };
        if let Some(problem) = m.weights.gguf().and_then(engine::not_gguf) {
            errors.push(format!(
                "models[{i}].gguf: {problem}; give the path of a .gguf model file"
            ));
            continue;
        }
        let info = match engine::inspect_weights(&m.weights) {
            Ok(info) => info,
            Err(e) => {
                errors.push(match key {
                    "gguf" => format!("models[{i}].gguf: {e:#}"),
                    _ => format!("models[{i}].{key} (model {:?}): {e:#}", m.id),
                });
                continue;
            }
        };
        let tokenizer = engine::load_tokenizer(m).map_err(|e| match m.tokenizer {
            Some(_) => format!("models[{i}].tokenizer: {e:#}"),
            None => format!("models[{i}]: the GGUF's own tokenizer cannot be built: {e:#}"),
        });
        match tokenizer {
            Err(e) => errors.push(e),
            Ok(tok) => {
                for (j, t) in m.eos_tokens.iter().enumerate() {
                    if tok.token_to_id(t).is_none() {
                        errors.push(format!(
                            "models[{i}].eos_tokens[{j}]: {t:?} is not a token of {}; give a token of its vocabulary (e.g. \"<eos>\") or remove it",
                            m.tokenizer_source()
                        ));
                    }
                }
                // a chat model: its template exists, ends a reply with a token, and renders
                // every prompt
                let template = match m.chat.then(|| engine::chat::ChatTemplate::for_model(m)) {
                    None => None,
                    Some(Ok(t)) => {
                        if let Err(e) = engine::end_of_turn_id(&t, &tok) {
                            // (a template that does not parse: said once, here)
                            errors.push(format!("models[{i}].chat: {e:#}"));
                            continue;
                        }
                        Some(t)
                    }
                    Some(Err(e)) => {
                        errors.push(format!("models[{i}].chat: {e:#}"));
                        continue;
                    }
                };
                for (k, p) in exp.prompts.iter().enumerate() {
                    let (text, special) = match engine::chat::model_input(template.as_ref(), p) {
                        Ok(x) => x,
                        Err(e) => {
                            errors.push(format!(
                                "prompts[{k}]: the chat template of model {:?} ({}) cannot render {:?}: {e:#}; change the conversation, or the template",
                                m.id,
                                template.as_ref().map_or("", |t| t.source.as_str()),
                                p.id
                            ));
                            continue;
                        }
                    };
                    let n = tok
                        .encode(text.as_str(), special)
                        .map(|ids| ids.len())
                        .map_err(|e| anyhow::anyhow!("tokenizing prompt {:?}: {e}", p.id))?;
                    if n.saturating_add(exp.max_new_tokens) > info.context_length {
                        errors.push(format!(
                            "prompts[{k}]: {:?} is {n} tokens for model {:?}; with max_new_tokens {} it exceeds its context length {}; shorten the prompt or lower max_new_tokens",
                            p.id, m.id, exp.max_new_tokens, info.context_length
                        ));
                    }
                }
            }
        }
        check_against_vocab(exp, info.vocab_size)?;
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(crate::error::ConfigError::new(&exp.source, errors).into())
    }
}

/// Check constraints that need the model's vocabulary size (entropy targets within [0, ln V]).
fn check_against_vocab(exp: &Experiment, vocab_size: usize) -> Result<()> {
    let ln_v = (vocab_size as f64).ln();
    let mut errors = Vec::new();
    for s in &exp.strategies {
        for target in s.all_targets_nats().into_iter().filter(|&t| t > ln_v) {
            errors.push(format!("strategies: {}: target entropy {target:.3} nats exceeds ln V = {ln_v:.3} for a vocabulary of {vocab_size}; allowed: 0..={ln_v:.3}", s.id));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(crate::error::ConfigError::new(&exp.source, errors).into())
    }
}

/// What a sample's step needs besides its logits (shared by the rows sampled in parallel).
struct StepArgs<'a> {
    tokenizer: &'a engine::tokenizer::Tokenizer,
    eos_ids: &'a [u32],
    stop: &'a [String],
    max_new_tokens: usize,
    prompt_len: usize,
    context_length: usize,
}

/// Everything shared by the samples that decode from one prefilled prompt.
#[derive(Clone, Copy)]
pub struct GenerateArgs<'a> {
    pub model: &'a LoadedModel,
    pub prefilled: &'a dyn LanguageModel,
    pub first_logits: &'a [f32],
    pub prompt_ids: &'a [u32],
    pub max_new_tokens: usize,
    pub stop: &'a [String],
    pub stop_flag: &'a AtomicBool,
}

/// One sample to generate: its strategy and its seed.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub strategy: &'a StrategySpec,
    pub seed: u64,
}

pub struct Generated {
    pub token_ids: Vec<u32>,
    pub text: String,
    /// Where each token's text ends in `text` ([`crate::engine::offsets::text_ends`]).
    pub text_ends: Vec<u32>,
    pub stop_reason: String,
    pub trace: Trace,
    pub error: Option<String>,
}

/// One sample in progress: its sampler, RNG stream, tokens and trace.
struct SampleState {
    sampler: Sampler,
    rng: rand_chacha::ChaCha20Rng,
    trace: Trace,
    ids: Vec<u32>,
    stop_reason: String,
    text_cut: Option<String>,
    error: Option<String>,
    tracks_branch: bool,
    tracks_controller: bool,
}

impl SampleState {
    fn new(job: &Job, args: &GenerateArgs) -> Self {
        let procs = &job.strategy.processors;
        let mut sampler = Sampler::new(strategy::build(procs, args.model.vocab_size));
        sampler.reset(args.prompt_ids);
        SampleState {
            sampler,
            rng: crate::seed::rng(job.seed),
            trace: Trace::default(),
            ids: Vec::new(),
            stop_reason: "max_tokens".into(),
            text_cut: None,
            error: None,
            tracks_branch: job.strategy.tracks_branch(),
            tracks_controller: job.strategy.tracks_controller(),
        }
    }

    /// Sample token `i` from `logits`. `Some(token)` when the sample goes on (the token must
    /// be fed to the model), `None` when it has finished.
    fn step(&mut self, logits: &[f32], i: usize, args: &StepArgs) -> Result<Option<u32>> {
        let t0 = Instant::now();
        let step = match self.sampler.sample(logits, &mut self.rng) {
            Ok(s) => s,
            Err(e) => {
                self.error = Some(format!("step {i}: {e}"));
                self.stop_reason = "error".into();
                return Ok(None);
            }
        };
        let tr = &mut self.trace;
        tr.sampler_us
            .push((t0.elapsed().as_secs_f64() * 1e6) as f32);
        tr.entropy.push(step.entropy_nats as f32);
        tr.varentropy.push(step.varentropy_nats2 as f32);
        tr.temperature.push(step.temperature as f32);
        tr.final_entropy.push(step.final_entropy_nats as f32);
        tr.kept.push(step.kept);
        tr.logprob.push(step.logprob as f32);
        tr.p_final.push(step.p_final as f32);
        tr.self_certainty.push(step.self_certainty as f32);
        tr.confidence.push(step.confidence as f32);
        if self.tracks_branch {
            tr.branch
                .get_or_insert_with(Vec::new)
                .push(step.branch.unwrap_or("").to_string());
        }
        if self.tracks_controller {
            tr.controller
                .get_or_insert_with(Vec::new)
                .push(step.controller.map(|c| c as f32));
        }
        // created at the first step a solve ran, with the steps before it as null
        let before = tr.entropy.len() - 1;
        match (step.solve, tr.solve.as_mut()) {
            (Some(flag), None) => {
                let mut v = vec![None; before];
                v.push(Some(flag));
                tr.solve = Some(v);
            }
            (flag, Some(v)) => v.push(flag),
            (None, None) => {}
        }
        self.ids.push(step.token);
        if args.eos_ids.contains(&step.token) {
            self.stop_reason = "eos".into();
            return Ok(None);
        }
        if !args.stop.is_empty() {
            let text = engine::decode(args.tokenizer, &self.ids)?;
            if let Some(cut) = args.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                self.text_cut = Some(text[..cut].to_string());
                self.stop_reason = "stop_string".into();
                return Ok(None);
            }
        }
        if i + 1 == args.max_new_tokens {
            return Ok(None);
        }
        if args.prompt_len + i + 1 >= args.context_length {
            self.stop_reason = "context".into();
            return Ok(None);
        }
        Ok(Some(step.token))
    }

    fn finish(self, model: &LoadedModel) -> Result<Generated> {
        let full = model.decode(&self.ids)?;
        let text_ends = crate::engine::offsets::text_ends(
            &model.tokenizer,
            &self.ids,
            &full,
            self.text_cut.as_deref().unwrap_or(&full),
        )?;
        let text = self.text_cut.unwrap_or(full);
        Ok(Generated {
            token_ids: self.ids,
            text,
            text_ends,
            stop_reason: self.stop_reason,
            trace: self.trace,
            error: self.error,
        })
    }
}

/// Generate `jobs` from one prefilled prompt, decoding them together as a batch: one forward
/// pass per step for all unfinished samples. Each sample keeps its own sampler and RNG stream,
/// and a row's logits do not depend on the batch, so every sample is the one it would be
/// alone. `on_done(job index, sample)` is called as each sample finishes. A step's forward
/// time is recorded in each row's trace divided by the rows in the step (amortised).
pub fn generate_batch(
    args: &GenerateArgs,
    jobs: &[Job],
    mut on_done: impl FnMut(usize, Generated) -> Result<()>,
) -> Result<()> {
    generate_parts(&[(*args, jobs)], |_, j, g| on_done(j, g))
}

/// [`generate_batch`] for several prompts at once (ragged batching): part `p` is a prefilled
/// prompt with its jobs, and every part's rows decode in one batch, each part at its own
/// position ([`engine::batch_of`]). The parts share the model, `max_new_tokens`, the stop
/// strings and the stop flag (the first part's are used). `on_done(part, job index, sample)`.
pub fn generate_parts(
    parts: &[(GenerateArgs, &[Job])],
    mut on_done: impl FnMut(usize, usize, Generated) -> Result<()>,
) -> Result<()> {
    // (part, job) per sample, part after part: the batch's row order
    let samples: Vec<(usize, usize)> = parts
        .iter()
        .enumerate()
        .flat_map(|(p, (_, jobs))| (0..jobs.len()).map(move |j| (p, j)))
        .collect();
    let Some(&(first_part, _)) = samples.first() else {
        return Ok(());
    };
    let shared = &parts[first_part].0;
    let all_jobs = || parts.iter().flat_map(|(_, jobs)| jobs.iter());
    if let Some(j) = all_jobs().find(|j| j.strategy.needs_calibration()) {
        bail!(
            "strategy {:?} still holds quantile placeholders: it must be resolved against the model's calibration first",
            j.strategy.id
        );
    }
    let mut states: Vec<Option<SampleState>> = samples
        .iter()
        .map(|&(p, j)| Some(SampleState::new(&parts[p].1[j], &parts[p].0)))
        .collect();
    let vocab = shared.first_logits.len();
    let step_args: Vec<StepArgs> = parts
        .iter()
        .map(|(a, _)| StepArgs {
            tokenizer: &shared.model.tokenizer,
            eos_ids: &shared.model.eos_ids,
            stop: shared.stop,
            max_new_tokens: shared.max_new_tokens,
            prompt_len: a.prompt_ids.len(),
            context_length: shared.model.context_length,
        })
        .collect();
    let longest = parts
        .iter()
        .map(|(a, _)| a.prompt_ids.len())
        .max()
        .unwrap_or(0);
    let mut decoder: Option<Box<dyn engine::BatchDecoder>> = None;
    // live[r]: the sample decoded in row r (an index into `samples`, increasing)
    let mut live: Vec<usize> = (0..samples.len()).collect();
    let mut logits: Vec<f32> = Vec::new();
    for i in 0..shared.max_new_tokens {
        if shared.stop_flag.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        // the rows' samplers run one after another, each with the whole pool for its passes
        // (their two-half splits): the same throughput as rows side by side on the pool's
        // threads (bench/perf-notes.md), and a row's `sampler_us` is then wall time with the
        // machine to itself, the same kind of time as the amortised `forward_ms`
        let stepped: Vec<Result<Option<u32>>> = live
            .iter()
            .enumerate()
            .map(|(r, &k)| {
                let p = samples[k].0;
                let row = if i == 0 {
                    parts[p].0.first_logits
                } else {
                    &logits[r * vocab..(r + 1) * vocab]
                };
                states[k]
                    .as_mut()
                    .expect("live rows are unfinished")
                    .step(row, i, &step_args[p])
            })
            .collect();
        let mut keep = Vec::with_capacity(live.len());
        let mut tokens = Vec::with_capacity(live.len());
        for (r, result) in stepped.into_iter().enumerate() {
            let k = live[r];
            match result? {
                Some(t) => {
                    keep.push(r);
                    tokens.push(t);
                }
                None => {
                    let g = states[k].take().expect("unfinished").finish(shared.model)?;
                    on_done(samples[k].0, samples[k].1, g)?;
                }
            }
        }
        if keep.is_empty() {
            return Ok(());
        }
        let dec = match decoder.as_mut() {
            None => {
                // each row a copy of its part's prefilled state
                let models: Vec<&dyn LanguageModel> =
                    parts.iter().map(|(a, _)| a.prefilled).collect();
                let row_parts = keep.iter().map(|&r| samples[live[r]].0);
                decoder.insert(engine::batch_of_rows(
                    &models,
                    row_parts,
                    longest + shared.max_new_tokens,
                )?)
            }
            Some(d) => {
                if keep.len() < live.len() {
                    d.retain(&keep)?;
                }
                d
            }
        };
        live = keep.iter().map(|&r| live[r]).collect();
        let positions: Vec<usize> = live
            .iter()
            .map(|&k| parts[samples[k].0].0.prompt_ids.len() + i)
            .collect();
        let t1 = Instant::now();
        // the previous step's rows are consumed: free them before the next ones exist
        // (a batch of 27 at vocab 262k holds 28 MB of logits)
        drop(std::mem::take(&mut logits));
        logits = dec.step_rows(&tokens, &positions)?;
        let ms = (t1.elapsed().as_secs_f64() * 1e3 / live.len() as f64) as f32;
        for &k in &live {
            states[k]
                .as_mut()
                .expect("unfinished")
                .trace
                .forward_ms
                .push(ms);
        }
    }
    for (k, st) in states.iter_mut().enumerate() {
        if let Some(st) = st.take() {
            on_done(samples[k].0, samples[k].1, st.finish(shared.model)?)?;
        }
    }
    Ok(())
}

/// Generate one sample from a prefilled model state (a batch of one).
pub fn generate(args: &GenerateArgs, job: Job) -> Result<Generated> {
    let mut out = None;
    generate_batch(args, &[job], |_, g| {
        out = Some(g);
        Ok(())
    })?;
    out.ok_or_else(|| anyhow::anyhow!("generation produced no sample"))
}

/// Run an experiment into `opts.out_dir`.
pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<RunOutcome> {
    let hash = store::config_hash(exp);
    preflight(exp)?;
    store::prepare_out_dir(&opts.out_dir, opts.fresh)?;
    let _lock = store::DirLock::acquire(&opts.out_dir)?;
    let mut existing = store::load_existing(&opts.out_dir, opts.shard, &hash, &exp.name)?;
    // before the manifest is rewritten: samples made by another engine are never added to
    let prev = store::read_manifest(&opts.out_dir).ok();
    // the models that have samples keep their recorded files until this run loads them again,
    // so a run stopped before that still leaves their hashes for the next check
    let kept_models: Vec<ModelInfo> = prev
        .iter()
        .flat_map(|p| p.models.iter())
        .filter(|m| existing.iter().any(|r| r.model == m.id))
        .cloned()
        .collect();
    // (failed samples hold no model output and are left out of every statistic, so only
    // successful ones are checked: a broken model file replaced by a sound one may retry them)
    if let (true, Some(prev)) = (existing.iter().any(|r| r.ok()), prev.as_ref()) {
        let mut models = Vec::new();
        for m in exp
            .models
            .iter()
            .filter(|m| existing.iter().any(|r| r.ok() && r.model == m.id))
        {
            let (gguf, tok) = engine::file_hashes(m)
                .with_context(|| format!("hashing the files of model {:?}", m.id))?;
            models.push((m.id.clone(), gguf, tok));
        }
        let commit = store::git_commit();
        store::check_same_engine(
            &opts.out_dir,
            prev,
            &store::Engine {
                version: env!("CARGO_PKG_VERSION"),
                commit: commit.as_deref(),
                models,
                numerics: engine::Numerics::of(opts.cuda).name(),
                host: &store::host_name(),
                host_cpu: &store::host_cpu(),
            },
        )?;
    }
    let failed_before = existing.iter().filter(|r| !r.ok()).count();
    if failed_before > 0 && opts.retry_failed {
        existing.retain(|r| r.ok());
        store::write_samples(&opts.out_dir, &existing)?;
        eprintln!("declab: running {failed_before} failed samples again (--retry-failed)");
    } else if failed_before > 0 {
        eprintln!(
            "declab: {failed_before} samples failed before and count as done; --retry-failed runs them again"
        );
    }
    let samples_path = opts.out_dir.join(store::SAMPLES_JSONL);
    let grid = GridIds::from_experiment(exp);
    let expected = grid.expected_keys(opts.shard);
    let done: HashSet<SampleKey> = existing.iter().map(|r| r.key()).collect();
    let resumed = done.len();
    if resumed > 0 {
        eprintln!(
            "declab: resuming {}: {} of {} samples already done",
            opts.out_dir.display(),
            resumed,
            expected.len()
        );
    }
    let started_at = store::now();
    let mut manifest = Manifest {
        declab_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: store::git_commit(),
        experiment: exp.name.clone(),
        config_file: exp.source.display().to_string(),
        config_sha256: hash.clone(),
        resolved_config: serde_json::to_value(exp)?,
        seed: exp.seed,
        models: kept_models,
        threads: candle_core::utils::get_num_threads(),
        host_cpu: store::host_cpu(),
        host: store::host_name(),
        numerics: engine::Numerics::of(opts.cuda).name().to_string(),
        kernels: engine::kernels(opts.cuda),
        started_at,
        finished_at: None,
        status: "running".into(),
        samples_total: expected.len(),
        samples_done: resumed,
        samples_failed: existing.iter().filter(|r| !r.ok()).count(),
        shard: opts.shard,
        // a model with nothing left to run keeps its calibration (its samples used it)
        calibration: prev
            .iter()
            .flat_map(|p| p.calibration.iter())
            .filter(|c| exp.models.iter().any(|m| m.id == c.model))
            .cloned()
            .collect(),
    };
    store::write_manifest(&opts.out_dir, &manifest)?;

    let device = engine::device(opts.cuda)?;
    let mut out = JsonlAppender::open(&samples_path)?;
    let interactive = opts
        .progress
        .unwrap_or_else(|| std::io::stderr().is_terminal());
    let mut progress = Progress::new(expected.len(), resumed, interactive);
    let stop = stop_flag();
    let mut summary = RunSummary {
        out_dir: opts.out_dir.clone(),
        samples_total: expected.len(),
        samples_run: 0,
        samples_resumed: resumed,
        samples_failed: manifest.samples_failed,
        tokens_generated: 0,
        generate_seconds: 0.0,
        interrupted: false,
    };
    let gen_start = Instant::now();
    'models: for mspec in &exp.models {
        let pending_model = exp
            .prompts
            .iter()
            .any(|p| pending_for_prompt(&expected, &done, &mspec.id, p));
        let model = engine::load(mspec, &device)
            .with_context(|| format!("loading model {:?}", mspec.id))?;
        manifest.models.retain(|m| m.id != mspec.id);
        manifest.models.push(ModelInfo {
            id: mspec.id.clone(),
            weights: mspec.weights.describe(),
            weights_sha256: model.weights_sha256.clone(),
            tokenizer: mspec.tokenizer_source(),
            tokenizer_sha256: model.tokenizer_sha256.clone(),
            architecture: model.architecture.clone(),
            vocab_size: model.vocab_size,
            context_length: model.context_length,
            load_ms: model.load_ms,
        });
        if !pending_model {
            continue;
        }
        let strategies = match &exp.calibration {
            Some(settings) if exp.needs_calibration() => {
                let kept = prev.as_ref().and_then(|p| {
                    p.calibration.iter().find(|c| {
                        c.model == mspec.id
                            && c.weights_sha256 == model.weights_sha256
                            && c.tokens_per_prompt == settings.tokens
                            && c.temperature == settings.temperature
                    })
                });
                let mut cal = match kept {
                    Some(c) => c.clone(),
                    None => {
                        let t0 = Instant::now();
                        let Some(m) =
                            crate::calibrate::measure(exp, settings, &model, &mspec.id, &stop)?
                        else {
                            summary.interrupted = true;
                            break 'models;
                        };
                        eprintln!(
                            "declab: calibrated {:?}: {} tokens, entropy median {:.3} nats, in {:.1} s",
                            mspec.id,
                            m.calibration.n_tokens,
                            m.calibration.quantiles.get("0.5").copied().unwrap_or(f64::NAN),
                            t0.elapsed().as_secs_f64()
                        );
                        m.calibration
                    }
                };
                let resolved = crate::calibrate::resolve(&exp.strategies, &mut cal)?;
                manifest.calibration.retain(|c| c.model != mspec.id);
                manifest.calibration.push(cal);
                store::write_manifest(&opts.out_dir, &manifest)?;
                resolved
            }
            _ => exp.strategies.clone(),
        };
        // every pending sample of each prompt, in canonical order
        let mut work: Vec<(&Prompt, Vec<Pending>)> = Vec::new();
        for prompt in &exp.prompts {
            let mut pending = Vec::new();
            for strat in &strategies {
                for idx in 0..exp.samples {
                    let key = (mspec.id.clone(), prompt.id.clone(), strat.id.clone(), idx);
                    if done.contains(&key) || !expected.contains(&key) {
                        continue;
                    }
                    let seed =
                        crate::seed::sample_seed(exp.seed, &mspec.id, &prompt.id, &strat.id, idx);
                    pending.push((strat, idx, seed));
                }
            }
            if !pending.is_empty() {
                work.push((prompt, pending));
            }
        }
        let mut left_in_cell: HashMap<(&str, &str), usize> = HashMap::new();
        for (prompt, pending) in &work {
            for (strat, _, _) in pending {
                *left_in_cell
                    .entry((prompt.id.as_str(), strat.id.as_str()))
                    .or_default() += 1;
            }
        }
        let counts: Vec<usize> = work.iter().map(|w| w.1.len()).collect();
        // a prompt split over several batches (more samples than --batch) is prefilled once:
        // its batches follow one another, and the prefill is carried from one to the next
        let mut carried: Option<(usize, Prefill)> = None;
        for group in plan_batches(&counts, opts.batch) {
            let mut prompts = Vec::with_capacity(group.len());
            for (w, range) in &group {
                let prompt = work[*w].0;
                let pre = match carried.take() {
                    Some((cw, pre)) if cw == *w => pre,
                    _ => Prefill::new(&model, prompt)?,
                };
                let chunk = &work[*w].1[range.clone()];
                let jobs: Vec<Job> = chunk
                    .iter()
                    .map(|&(strategy, _, seed)| Job { strategy, seed })
                    .collect();
                prompts.push(PromptPart {
                    prompt,
                    chunk,
                    pre,
                    jobs,
                });
            }
            let parts: Vec<(GenerateArgs, &[Job])> = prompts
                .iter()
                .map(|pp| {
                    let args = GenerateArgs {
                        model: &model,
                        prefilled: pp.pre.prefilled.as_ref(),
                        first_logits: &pp.pre.first_logits,
                        prompt_ids: &pp.pre.prompt_ids,
                        max_new_tokens: exp.max_new_tokens,
                        stop: &exp.stop,
                        stop_flag: &stop,
                    };
                    (args, pp.jobs.as_slice())
                })
                .collect();
            let result = generate_parts(&parts, |p, j, g| {
                let pp = &prompts[p];
                let (strat, idx, seed) = pp.chunk[j];
                let total_ms = g.trace.forward_ms.iter().map(|&x| x as f64).sum::<f64>()
                    + g.trace.sampler_us.iter().map(|&x| x as f64).sum::<f64>() / 1e3;
                let rec = record(
                    exp,
                    &mspec.id,
                    pp.prompt,
                    strat,
                    idx,
                    seed,
                    &pp.pre.prompt_ids,
                    pp.pre.chat_prompt.as_deref(),
                    g,
                    pp.pre.prefill_ms,
                    total_ms,
                );
                if !rec.ok() {
                    summary.samples_failed += 1;
                    eprintln!(
                        "declab: sample failed: {}/{}/{} #{idx}: {}",
                        rec.model,
                        rec.prompt_id,
                        rec.strategy,
                        rec.error.as_deref().unwrap_or("")
                    );
                }
                summary.tokens_generated += rec.token_ids.len();
                progress.sample_done(rec.token_ids.len());
                out.append(&rec)?;
                summary.samples_run += 1;
                let left = left_in_cell
                    .get_mut(&(pp.prompt.id.as_str(), strat.id.as_str()))
                    .expect("counted");
                *left -= 1;
                if *left == 0 {
                    out.sync()?;
                    progress.cell_done(&format!("{} / {} / {}", mspec.id, pp.prompt.id, strat.id));
                }
                Ok(())
            });
            match result {
                Ok(()) => {}
                Err(_) if stop.load(Ordering::Relaxed) => {
                    summary.interrupted = true;
                    break 'models;
                }
                Err(e) => {
                    let ids: Vec<&str> = prompts.iter().map(|p| p.prompt.id.as_str()).collect();
                    return Err(e).with_context(|| {
                        format!("generating samples of {}/{}", mspec.id, ids.join("+"))
                    });
                }
            }
            out.sync()?;
            if let [(w, range)] = group.as_slice() {
                if range.end < counts[*w] {
                    drop(parts);
                    let pp = prompts.pop().expect("the group's one prompt");
                    carried = Some((*w, pp.pre));
                }
            }
        }
    }
    out.sync()?;
    progress.finish();
    summary.generate_seconds = gen_start.elapsed().as_secs_f64();

    // canonical order
    let mut records = store::read_samples(&samples_path)?.records;
    grid.sort_canonical(&mut records);
    if let (Some(scorer), false) = (exp.scorer.as_deref(), summary.interrupted) {
        score_references(exp, scorer, &device, &mut records, &stop)?;
        summary.interrupted = stop.load(Ordering::Relaxed);
    }
    let complete = records.len() == expected.len() && !summary.interrupted;
    store::write_samples(&opts.out_dir, &records)?;
    manifest.samples_done = records.len();
    manifest.samples_failed = records.iter().filter(|r| !r.ok()).count();
    manifest.finished_at = Some(store::now());
    manifest.status = if complete {
        "complete".into()
    } else {
        "incomplete".into()
    };
    store::write_manifest(&opts.out_dir, &manifest)?;
    Ok(RunOutcome {
        summary,
        records,
        manifest,
    })
}

/// The reference scorer's pass (`scorer:`): every successful sample without a score from
/// `scorer` gets one ([`teacher::reference_scores_groups`]). Consecutive prompts go together
/// until their samples fill a batch ([`teacher::BATCH`] rows), so a grid with a few samples a
/// prompt is forced in full batches; each prompt is prefilled once, and every score is the one
/// its prompt alone would get. Between those chunks it stops when asked; the samples left
/// unscored are scored by the next run.
fn score_references(
    exp: &Experiment,
    scorer: &str,
    device: &candle_core::Device,
    records: &mut [SampleRecord],
    stop: &AtomicBool,
) -> Result<()> {
    let unscored =
        |r: &SampleRecord| r.ok() && r.reference.as_ref().is_none_or(|s| s.model != scorer);
    let todo = records.iter().filter(|r| unscored(r)).count();
    if todo == 0 {
        return Ok(());
    }
    let spec =
        exp.models.iter().find(|m| m.id == scorer).ok_or_else(|| {
            anyhow::anyhow!("the scorer {scorer:?} is not a model of the experiment")
        })?;
    let t0 = Instant::now();
    let model = engine::load(spec, device)
        .with_context(|| format!("loading the reference scorer {scorer:?}"))?;
    eprintln!("declab: scoring {todo} samples under the reference scorer {scorer:?}");
    // each prompt with samples to score: its id, its ids under the scorer and the records
    let mut todo_prompts: Vec<(&str, Vec<u32>, Vec<usize>)> = Vec::new();
    for prompt in &exp.prompts {
        let idx: Vec<usize> = (0..records.len())
            .filter(|&i| records[i].prompt_id == prompt.id && unscored(&records[i]))
            .collect();
        if !idx.is_empty() {
            let (prompt_ids, _) = model.encode_prompt(prompt)?;
            todo_prompts.push((prompt.id.as_str(), prompt_ids, idx));
        }
    }
    let mut tokens = 0;
    let mut rest = todo_prompts.as_slice();
    while !rest.is_empty() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // prompts until their samples fill a batch (at least one prompt)
        let mut take = 0;
        let mut rows = 0;
        while take < rest.len() && (take == 0 || rows + rest[take].2.len() <= teacher::BATCH) {
            rows += rest[take].2.len();
            take += 1;
        }
        let (chunk, next) = rest.split_at(take);
        rest = next;
        let groups: Vec<(&[u32], Vec<&str>)> = chunk
            .iter()
            .map(|(_, ids, idx)| {
                let texts = idx.iter().map(|&i| records[i].text.as_str()).collect();
                (ids.as_slice(), texts)
            })
            .collect();
        let scores =
            teacher::reference_scores_groups(&model, scorer, &groups).with_context(|| {
                let ids: Vec<&str> = chunk.iter().map(|c| c.0).collect();
                format!("scoring the samples of prompts {ids:?} under {scorer:?}")
            })?;
        for ((_, _, idx), scores) in chunk.iter().zip(scores) {
            for (&i, score) in idx.iter().zip(scores) {
                tokens += score.logprob.len();
                records[i].reference = Some(score);
            }
        }
    }
    eprintln!(
        "declab: scored under {scorer:?}: {tokens} tokens in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A sample to run: its strategy, sample index and seed.
type Pending<'a> = (&'a StrategySpec, usize, u64);

/// A prompt's part of a batch: its samples, its prefilled state and what its records take.
struct PromptPart<'a> {
    prompt: &'a Prompt,
    /// the samples, in the jobs' order
    chunk: &'a [Pending<'a>],
    pre: Prefill,
    jobs: Vec<Job<'a>>,
}

/// A prompt encoded and prefilled: its ids, its chat rendering, the state after it, the logits
/// of its first token and how long the prefill took.
struct Prefill {
    prompt_ids: Vec<u32>,
    chat_prompt: Option<String>,
    prefilled: Box<dyn LanguageModel>,
    first_logits: Vec<f32>,
    prefill_ms: f64,
}

impl Prefill {
    fn new(model: &LoadedModel, prompt: &Prompt) -> Result<Prefill> {
        // (that it fits the context with max_new_tokens was checked by `preflight`)
        let (prompt_ids, chat_prompt) = model.encode_prompt(prompt)?;
        let mut prefilled = model.model.fork();
        let t0 = Instant::now();
        let first_logits = prefilled
            .forward(&prompt_ids, 0)
            .with_context(|| format!("prefill of prompt {:?}", prompt.id))?;
        Ok(Prefill {
            prompt_ids,
            chat_prompt,
            prefilled,
            first_logits,
            prefill_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// How the pending samples of a model's prompts (`counts[p]` for prompt p, in order) are cut
/// into batches of at most `batch` rows: `(prompt, range of its pending samples)` per part of
/// each batch. Consecutive prompts share a batch while their samples fit (ragged batching: a
/// grid with few samples per prompt still decodes in full batches); a prompt with more than
/// `batch` runs alone, in as few batches as it needs, of equal size: 36 samples at `--batch 32`
/// run as 18 + 18, not 32 + 4, so no strategy's samples end up alone in a small batch whose
/// amortised forward time would read as that strategy's overhead.
pub fn plan_batches(counts: &[usize], batch: usize) -> Vec<Vec<(usize, Range<usize>)>> {
    let batch = batch.max(1);
    let mut plan: Vec<Vec<(usize, Range<usize>)>> = Vec::new();
    let mut open: Vec<(usize, Range<usize>)> = Vec::new();
    let mut rows = 0;
    for (p, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        if rows + c > batch && !open.is_empty() {
            plan.push(std::mem::take(&mut open));
            rows = 0;
        }
        if c > batch {
            let n = c.div_ceil(batch);
            let size = c.div_ceil(n);
            plan.extend(
                (0..c)
                    .step_by(size)
                    .map(|s| vec![(p, s..(s + size).min(c))]),
            );
        } else {
            open.push((p, 0..c));
            rows += c;
        }
    }
    if !open.is_empty() {
        plan.push(open);
    }
    plan
}

fn pending_for_prompt(
    expected: &HashSet<SampleKey>,
    done: &HashSet<SampleKey>,
    model: &str,
    prompt: &Prompt,
) -> bool {
    expected
        .iter()
        .any(|k| k.0 == model && k.1 == prompt.id && !done.contains(k))
}

#[allow(clippy::too_many_arguments)]
fn record(
    _exp: &Experiment,
    model: &str,
    prompt: &Prompt,
    strat: &StrategySpec,
    idx: usize,
    seed: u64,
    prompt_ids: &[u32],
    chat_prompt: Option<&str>,
    g: Generated,
    prefill_ms: f64,
    total_ms: f64,
) -> SampleRecord {
    SampleRecord {
        model: model.to_string(),
        prompt_id: prompt.id.clone(),
        strategy: strat.id.clone(),
        kind: strat.kind.clone(),
        params: strat.params.clone(),
        sample_index: idx,
        seed,
        status: if g.error.is_some() {
            "failed".into()
        } else {
            "ok".into()
        },
        error: g.error,
        prompt: prompt.text.clone(),
        chat_prompt: chat_prompt.map(str::to_string),
        text: g.text,
        prompt_tokens: prompt_ids.len(),
        token_ids: g.token_ids,
        text_ends: g.text_ends,
        stop_reason: g.stop_reason,
        trace: g.trace,
        timing: Timing {
            prefill_ms,
            total_ms,
        },
        reference: None,
    }
}

#[cfg(test)]
mod tests {
    use super::plan_batches;

    #[test]
    fn prompts_share_batches_while_they_fit_and_large_ones_split_evenly() {
        // grid1-like: 27 samples a prompt at --batch 32, one prompt a batch
        let plan = plan_batches(&[27, 27, 27], 32);
        assert_eq!(
            plan,
            vec![vec![(0, 0..27)], vec![(1, 0..27)], vec![(2, 0..27)]]
        );
        // few samples a prompt: prompts packed together up to the batch
        let plan = plan_batches(&[6, 6, 6, 6, 6, 6], 32);
        assert_eq!(
            plan,
            vec![
                vec![(0, 0..6), (1, 0..6), (2, 0..6), (3, 0..6), (4, 0..6)],
                vec![(5, 0..6)]
            ]
        );
        // a prompt larger than the batch runs alone in equal batches: 36 at 32 is 18 + 18
        let plan = plan_batches(&[5, 36, 4, 0, 3], 32);
        assert_eq!(
            plan,
            vec![
                vec![(0, 0..5)],
                vec![(1, 0..18)],
                vec![(1, 18..36)],
                vec![(2, 0..4), (4, 0..3)]
            ]
        );
        // --batch 1: one sample at a time; nothing pending: no batch
        assert_eq!(
            plan_batches(&[2, 1], 1),
            vec![vec![(0, 0..1)], vec![(0, 1..2)], vec![(1, 0..1)]]
        );
        assert!(plan_batches(&[0, 0], 8).is_empty());
        // every sample planned once, no batch over the limit
        for batch in 1..40 {
            let counts = [7, 0, 33, 1, 12, 40, 2, 2];
            let plan = plan_batches(&counts, batch);
            let mut seen = vec![0; counts.len()];
            for b in &plan {
                assert!(b.iter().map(|(_, r)| r.len()).sum::<usize>() <= batch);
                for (p, r) in b {
                    assert_eq!(r.start, seen[*p], "batch {batch}: prompt {p} in order");
                    seen[*p] = r.end;
                }
            }
            assert_eq!(seen, counts, "batch {batch}");
        }
    }
}
