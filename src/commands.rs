//! What each subcommand does, on top of the library modules.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

use crate::analysis::{self, Design, TextEmbedder};
use crate::cli::{Cli, Command};
use crate::error::ConfigError;
use crate::record::SampleRecord;
use crate::store::{self, Manifest};
use crate::{config, report, runner, strategy, teacher};

pub fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run {
            file,
            out,
            fresh,
            cuda,
            no_progress,
            shard,
            batch,
            retry_failed,
        } => run(
            file,
            out,
            fresh,
            cuda,
            no_progress,
            retry_failed,
            shard.as_deref(),
            batch as usize,
        ),
        Command::Merge { dir } => {
            let s = {
                let _lock = store::DirLock::acquire(&dir)?;
                let s = crate::merge::merge(&dir)?;
                report::write_samples_csv(&dir, &s.records)?;
                s
            };
            eprintln!(
                "declab: merged {} shards ({} samples) into {}",
                s.shards,
                s.samples,
                dir.display()
            );
            report_cmd(&dir, None)
        }
        Command::Validate { file } => validate(file),
        Command::Calibrate { file, out } => calibrate_cmd(&file, out),
        Command::Dist {
            logits,
            strategy,
            seed,
        } => dist(&logits, &strategy, seed),
        Command::TinyModel { dir, seed } => {
            let m = crate::engine::tiny::write(&dir, seed)?;
            println!("{}\n{}", m.gguf.display(), m.tokenizer.display());
            Ok(0)
        }
        Command::Bench {
            vocabs,
            iters,
            tokens,
            batch_tokens,
            batch_samples,
            out,
            check,
            write_baseline,
            tolerance,
            save_logits,
            fixture_rows,
        } => crate::bench::run(&crate::bench::BenchOptions {
            vocabs,
            iters,
            out,
            generation_tokens: tokens,
            batch_tokens,
            batch_samples: batch_samples.max(1),
            check,
            write_baseline: write_baseline.map(|p| (p, tolerance)),
            save_logits: save_logits.map(|p| (p, fixture_rows.max(1))),
        }),
        Command::Report { dir, embedder } => report_cmd(&dir, embedder.as_deref()),
        Command::CheckModel {
            gguf,
            reference,
            min_top1,
            max_kl,
            max_dh,
            json,
        } => check_model(
            &gguf,
            &reference,
            [min_top1, max_kl, max_dh],
            json.as_deref(),
        ),
        Command::Metrics {
            input,
            out,
            embedder,
            no_embed,
            scorer,
        } => metrics_cmd(
            &input,
            out.as_deref(),
            embedder.as_deref(),
            no_embed,
            scorer.as_deref(),
        ),
        Command::Compare {
            a,
            b,
            models,
            metrics,
            alpha,
            csv,
            embedder,
        } => compare_cmd(
            &a,
            &b,
            models.as_deref(),
            &metrics,
            alpha,
            csv.as_deref(),
            embedder.as_deref(),
        ),
        Command::Select {
            input,
            scorer,
            tokenizer,
            selectors,
            seed,
            out,
        } => select_cmd(&SelectArgs {
            input: &input,
            scorer: &scorer,
            tokenizer: tokenizer.as_deref(),
            selectors: &selectors,
            seed,
            out: out.as_deref(),
        }),
    }
}

/// `bounds`: the command line's top-1, KL and |ΔH| bounds, each overriding the fixture's.
fn check_model(
    gguf: &std::path::Path,
    reference: &std::path::Path,
    bounds: [Option<f64>; 3],
    json: Option<&std::path::Path>,
) -> Result<i32> {
    use crate::reference::{Fixture, Thresholds};
    let fixture = Fixture::load(reference)?;
    let base = fixture
        .llama_cpp_self
        .as_ref()
        .map(Thresholds::from_floor)
        .unwrap_or_default();
    let thresholds = Thresholds {
        min_top1: bounds[0].unwrap_or(base.min_top1),
        max_mean_kl: bounds[1].unwrap_or(base.max_mean_kl),
        max_mean_abs_dh: bounds[2].unwrap_or(base.max_mean_abs_dh),
    };
    let (report, architecture) = crate::reference::check_file(gguf, &fixture, reference)?;
    println!(
        "{} ({architecture}) against {}\n",
        gguf.display(),
        fixture.reference
    );
    print!("{}", report.table());
    if let Some(path) = json {
        store::write_atomic(path, &serde_json::to_vec_pretty(&report)?)?;
    }
    let misses = report.misses(&thresholds);
    if misses.is_empty() {
        println!(
            "\npass: top-1 >= {:.4}, mean KL <= {:.5}, mean |ΔH| <= {:.4} (decode; prefill, on ~80 positions: {:.4}, {:.5}, {:.4})",
            thresholds.min_top1,
            thresholds.max_mean_kl,
            thresholds.max_mean_abs_dh,
            thresholds.prefill().min_top1,
            thresholds.prefill().max_mean_kl,
            thresholds.prefill().max_mean_abs_dh
        );
        Ok(0)
    } else {
        println!("\nFAIL: {}", misses.join("; "));
        Ok(1)
    }
}

fn load_config(file: &std::path::Path) -> Result<config::Experiment> {
    let exp = config::load(file)?;
    for w in &exp.warnings {
        eprintln!("declab: warning: {}: {w}", file.display());
    }
    Ok(exp)
}

fn validate(file: PathBuf) -> Result<i32> {
    let exp = load_config(&file)?;
    runner::preflight(&exp)?;
    println!(
        "{}: ok: {} models x {} prompts x {} strategies x {} samples = {} samples of up to {} tokens",
        file.display(),
        exp.models.len(),
        exp.prompts.len(),
        exp.strategies.len(),
        exp.samples,
        exp.total_samples(),
        exp.max_new_tokens
    );
    for s in &exp.strategies {
        println!("  {}", s.id);
    }
    Ok(0)
}

/// `declab calibrate`: each model's entropy quantiles (stdout), and calibration.json,
/// calibration.csv and calibration.svg in `out` (default results/<name>-calibration).
fn calibrate_cmd(file: &std::path::Path, out: Option<PathBuf>) -> Result<i32> {
    let exp = load_config(file)?;
    runner::preflight(&exp)?;
    let out =
        out.unwrap_or_else(|| PathBuf::from("results").join(format!("{}-calibration", exp.name)));
    let stop = runner::stop_flag();
    let measured = crate::calibrate::measure_all(&exp, &candle_core::Device::Cpu, &stop)?;
    let levels = crate::calibrate::levels(&exp.strategies);
    let mut table = String::from("model            tokens   mean");
    for q in &levels {
        table.push_str(&format!(" {:>7}", format!("q{q}")));
    }
    println!("{table}");
    for m in &measured {
        let c = &m.calibration;
        let mut line = format!("{:<16} {:>6} {:>6.3}", c.model, c.n_tokens, c.mean_nats);
        for q in &levels {
            line.push_str(&format!(
                " {:>7.3}",
                c.quantiles[&crate::calibrate::level_key(*q)]
            ));
        }
        println!("{line}");
    }
    for m in &measured {
        for (strategy, values) in &m.calibration.resolved {
            let v: Vec<String> = values
                .iter()
                .map(|(k, x)| format!("{k} = {x:.3} nats"))
                .collect();
            println!("{} on {}: {}", strategy, m.calibration.model, v.join(", "));
        }
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let cals: Vec<&crate::calibrate::ModelCalibration> =
        measured.iter().map(|m| &m.calibration).collect();
    store::write_atomic(
        &out.join("calibration.json"),
        &serde_json::to_vec_pretty(&cals)?,
    )?;
    let mut csv = String::from("model,level,nats\n");
    for c in &cals {
        for q in &levels {
            let key = crate::calibrate::level_key(*q);
            csv.push_str(&format!("{},{key},{}\n", c.model, c.quantiles[&key]));
        }
    }
    store::write_atomic(&out.join("calibration.csv"), csv.as_bytes())?;
    let hist: Vec<(&str, &[f64], &crate::calibrate::ModelCalibration)> = measured
        .iter()
        .map(|m| {
            (
                m.calibration.model.as_str(),
                m.entropies.as_slice(),
                &m.calibration,
            )
        })
        .collect();
    store::write_atomic(
        &out.join("calibration.svg"),
        report::plots::calibration_svg(&hist)?.as_bytes(),
    )?;
    eprintln!(
        "declab: wrote calibration.json, calibration.csv and calibration.svg to {}",
        out.display()
    );
    Ok(0)
}

#[allow(clippy::too_many_arguments)] // the `run` command's flags, passed through once
fn run(
    file: PathBuf,
    out: Option<PathBuf>,
    fresh: bool,
    cuda: bool,
    no_progress: bool,
    retry_failed: bool,
    shard: Option<&str>,
    batch: usize,
) -> Result<i32> {
    let exp = load_config(&file)?;
    let shard = shard
        .map(crate::grid::Shard::parse)
        .transpose()
        .map_err(|e| ConfigError::new(&file, vec![e.to_string()]))?;
    let out_dir = out.unwrap_or_else(|| {
        let base = PathBuf::from("results").join(&exp.name);
        match shard {
            Some(s) => base.join("shards").join(s.dir_name()),
            None => base,
        }
    });
    let flag = runner::stop_flag();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ndeclab: stopping after the current step (press Ctrl-C again to abort now)");
    });
    let opts = runner::RunOptions {
        out_dir,
        fresh,
        cuda,
        progress: if no_progress { Some(false) } else { None },
        shard,
        batch,
        retry_failed,
    };
    let runner::RunOutcome {
        summary: s,
        records,
        manifest,
    } = runner::run(&exp, &opts)?;
    report::write_samples_csv(&s.out_dir, &records)?;
    if opts.shard.is_none() {
        // a shard holds part of every comparison: statistics are computed after `declab merge`
        let embedder = analysis::load_embedder(None)?;
        write_report(
            &s.out_dir,
            &Design::from_experiment(&exp),
            &records,
            &manifest,
            embedder.as_ref().map(|e| e as &dyn TextEmbedder),
        )?;
    }
    let tps = s.tokens_generated as f64 / s.generate_seconds.max(1e-9);
    if s.interrupted {
        eprintln!(
            "declab: interrupted; {} samples are saved in {}. Resume with: declab run {} --out {}",
            s.samples_resumed + s.samples_run,
            s.out_dir.display(),
            file.display(),
            s.out_dir.display()
        );
        return Ok(130);
    }
    eprintln!(
        "declab: done: {} samples ({} new, {} resumed, {} failed), {} tokens in {:.1} s ({:.1} tok/s) -> {}",
        s.samples_total,
        s.samples_run,
        s.samples_resumed,
        s.samples_failed,
        s.tokens_generated,
        s.generate_seconds,
        tps,
        s.out_dir.display()
    );
    if opts.shard.is_none() {
        eprintln!(
            "declab: report: {} (open {} in a browser for the sample viewer)",
            s.out_dir.join("report.md").display(),
            s.out_dir.join("report.html").display()
        );
    }
    if s.samples_failed > 0 {
        eprintln!(
            "declab: {} samples failed; see the `status` and `error` fields in samples.jsonl; `declab run {} --out {} --retry-failed` runs them again",
            s.samples_failed,
            file.display(),
            s.out_dir.display()
        );
        return Ok(1);
    }
    Ok(0)
}

fn dist(logits_arg: &str, spec: &str, seed: Option<u64>) -> Result<i32> {
    let text = if logits_arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading logits from standard input")?;
        s
    } else {
        std::fs::read_to_string(logits_arg)
            .with_context(|| format!("cannot read logits file {logits_arg}"))?
    };
    let values: Vec<serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| anyhow!("the logits must be a JSON array of numbers: {e}"))?;
    let mut logits = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let x = match v {
            serde_json::Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| anyhow!("logit {i} is not a number"))?,
            serde_json::Value::String(s) if s == "-inf" || s == "-Infinity" => f64::NEG_INFINITY,
            other => {
                bail!("logit {i} is {other}; expected a number (or \"-inf\" for a masked token)")
            }
        };
        logits.push(x as f32);
    }
    if logits.is_empty() {
        bail!("the logits array is empty");
    }
    let block: serde_yaml::Value = serde_yaml::from_str(spec)
        .map_err(|e| ConfigError::new(std::path::Path::new("--strategy"), vec![e.to_string()]))?;
    let map = block.as_mapping().ok_or_else(|| {
        ConfigError::new(
            std::path::Path::new("--strategy"),
            vec!["expected a strategy block such as '{kind: top_p, top_p: 0.9}'".into()],
        )
    })?;
    let s = config::strategy::parse_single(map, "strategy").map_err(|es| {
        ConfigError::new(
            std::path::Path::new("--strategy"),
            es.into_iter().map(|e| e.to_string()).collect(),
        )
    })?;
    if let Some(q) = s.quantiles.first() {
        return Err(ConfigError::new(
            std::path::Path::new("--strategy"),
            vec![format!("strategy.{}: a quantile threshold is resolved from a model's entropy distribution by `declab run` (see `declab calibrate`); `dist` has no model: give the value in nats", q.key)],
        )
        .into());
    }
    let mut sampler = strategy::Sampler::new(strategy::build(&s.processors, logits.len()));
    let d = sampler
        .final_distribution(&logits)
        .map_err(|e| anyhow!("invalid logits: {e}"))?;
    let mut out = serde_json::json!({
        "strategy": s.id,
        "probs": d.probs,
        "entropy_nats": d.entropy_nats,
        "temperature": d.temperature,
        "kept": d.kept,
        "branch": d.effect.branch,
    });
    if let Some(seed) = seed {
        let mut fresh = strategy::Sampler::new(strategy::build(&s.processors, logits.len()));
        let step = fresh
            .sample(&logits, &mut crate::seed::rng(seed))
            .map_err(|e| anyhow!("invalid logits: {e}"))?;
        out["token"] = step.token.into();
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(0)
}

/// A results folder's records, manifest and design (from the manifest's resolved config).
fn load_results(dir: &std::path::Path) -> Result<(Vec<SampleRecord>, Manifest, Design)> {
    let manifest = store::read_manifest(dir)?;
    let design = Design::from_resolved_config(&manifest.resolved_config).with_context(|| {
        format!(
            "reading the experiment from {}",
            dir.join(store::MANIFEST_JSON).display()
        )
    })?;
    let samples_path = dir.join(store::SAMPLES_JSONL);
    let read = store::read_samples(&samples_path)?;
    if read.dropped_torn_line {
        eprintln!(
            "declab: warning: ignored a torn last line in {}",
            samples_path.display()
        );
    }
    Ok((read.records, manifest, design))
}

/// Analyse `records` and write what the report renders from it (summary.csv, comparisons.csv,
/// latency.csv, metrics_samples.csv, metrics_groups.csv, the SVG plots, report.md and report.html) into
/// `dir`.
fn write_report(
    dir: &std::path::Path,
    design: &Design,
    records: &[SampleRecord],
    manifest: &Manifest,
    embedder: Option<&dyn TextEmbedder>,
) -> Result<()> {
    let design = design.clone().with_calibration(&manifest.calibration);
    let a = analysis::analyze(&design, records, embedder, analysis::DEFAULT_RESAMPLES)?;
    report::write_folder(dir, &a, manifest, records)?;
    for c in a.checkpoints.iter().filter_map(|g| g.choice.as_ref()) {
        match &c.chosen {
            Some(id) => eprintln!(
                "declab: chosen by the rule: {id} ({} {} under {}; see report.md)",
                if c.rule.maximize { "highest" } else { "lowest" },
                c.rule.objective,
                c.rule.strategy
            ),
            None => eprintln!("declab: the rule chose nothing: no candidate satisfies every bound (see report.md)"),
        }
    }
    Ok(())
}

fn report_cmd(dir: &std::path::Path, embedder: Option<&std::path::Path>) -> Result<i32> {
    // not while a run (or another report) writes the folder
    let _lock = store::DirLock::acquire(dir)?;
    let (records, manifest, design) = load_results(dir)?;
    let emb = analysis::load_embedder(embedder)?;
    write_report(
        dir,
        &design,
        &records,
        &manifest,
        emb.as_ref().map(|e| e as &dyn TextEmbedder),
    )?;
    let selection = if design.selectors.is_empty() {
        ""
    } else {
        ", selections.csv, selection_comparisons.csv, selection_costs.csv"
    };
    eprintln!("declab: wrote report.md, report.html, summary.csv, comparisons.csv, latency.csv, metrics_samples.csv, metrics_groups.csv{selection} and plots to {}", dir.display());
    let failed = records.iter().filter(|r| !r.ok()).count();
    if failed > 0 {
        eprintln!(
            "declab: {failed} of {} samples failed (their `status` and `error` in samples.jsonl); the report covers the others; `declab run ... --retry-failed` runs them again",
            records.len()
        );
        return Ok(1);
    }
    Ok(0)
}

fn metrics_cmd(
    input: &std::path::Path,
    out: Option<&std::path::Path>,
    embedder: Option<&std::path::Path>,
    no_embed: bool,
    scorer: Option<&std::path::Path>,
) -> Result<i32> {
    use crate::analysis::foreign;
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let lines = foreign::parse_input(&text, &input.display().to_string())?;
    let emb = if no_embed {
        None
    } else {
        let dir = embedder
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(crate::embed::default_dir);
        Some(crate::embed::Embedder::load(&dir).context(
            "the embedding metrics need a sentence embedder; pass --no-embed to skip them",
        )?)
    };
    let (samples, groups) = foreign::score(
        &lines,
        emb.as_ref()
            .map(|e| e as &dyn crate::analysis::TextEmbedder),
    )?;
    let out_dir = match out {
        Some(o) => o.to_path_buf(),
        None => input
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut samples_csv = crate::report::summary::input_samples_csv(&samples)?;
    if let Some(scorer) = scorer {
        let nll = score_nll(scorer, &lines)?;
        samples_csv = append_nll_columns(&samples_csv, &nll)?;
    }
    store::write_atomic(&out_dir.join("metrics_samples.csv"), &samples_csv)?;
    store::write_atomic(
        &out_dir.join("metrics_groups.csv"),
        &crate::report::summary::input_groups_csv(&groups)?,
    )?;
    eprintln!(
        "declab: scored {} lines in {} groups -> {}/metrics_samples.csv, metrics_groups.csv",
        samples.len(),
        groups.len(),
        out_dir.display()
    );
    Ok(0)
}

fn compare_cmd(
    a: &std::path::Path,
    b: &std::path::Path,
    models: Option<&[String]>,
    metrics: &[String],
    alpha: f64,
    csv: Option<&std::path::Path>,
    embedder: Option<&std::path::Path>,
) -> Result<i32> {
    use crate::analysis::{self, catalog, compare};
    let unknown: Vec<&String> = metrics
        .iter()
        .filter(|m| catalog::find(m).is_none())
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = catalog::all().map(|m| m.name).collect();
        return Err(ConfigError::new(
            std::path::Path::new("--metric"),
            unknown
                .iter()
                .map(|m| format!("unknown metric {m:?}; known metrics: {}", known.join(", ")))
                .collect(),
        )
        .into());
    }
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(ConfigError::new(
            std::path::Path::new("--alpha"),
            vec![format!("{alpha} is not in (0, 1)")],
        )
        .into());
    }
    let (mut rec_a, man_a, mut design_a) = load_results(a)?;
    let (mut rec_b, man_b, mut design_b) = load_results(b)?;
    if let Some([ma, mb]) = models {
        // one model of each run, compared as if they were one model run twice
        let missing = |recs: &[SampleRecord], d: &Design, m: &str, dir: &std::path::Path| {
            (!recs.iter().any(|r| r.model == m)).then(|| {
                format!(
                    "model {m:?} has no sample in {}; its models: {}",
                    dir.display(),
                    d.models.join(", ")
                )
            })
        };
        let problems: Vec<String> = [
            missing(&rec_a, &design_a, ma, a),
            missing(&rec_b, &design_b, mb, b),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !problems.is_empty() {
            return Err(ConfigError::new(std::path::Path::new("--models"), problems).into());
        }
        rec_a.retain(|r| &r.model == ma);
        rec_b.retain(|r| &r.model == mb);
        for r in &mut rec_b {
            r.model = ma.clone();
        }
        design_a.models = vec![ma.clone()];
        design_b.models = vec![ma.clone()];
        eprintln!(
            "declab: comparing model {mb:?} of {} (B) with model {ma:?} of {} (A)",
            b.display(),
            a.display()
        );
    } else if man_a.config_sha256 != man_b.config_sha256 {
        eprintln!("declab: warning: {} and {} were run from different configurations; only the shared (model, strategy, prompt) cells are compared", a.display(), b.display());
    }
    let emb = analysis::load_embedder(embedder)?;
    let emb_ref = emb.as_ref().map(|e| e as &dyn analysis::TextEmbedder);
    let an_a = analysis::analyze(&design_a, &rec_a, emb_ref, analysis::DEFAULT_RESAMPLES)?;
    let an_b = analysis::analyze(&design_b, &rec_b, emb_ref, analysis::DEFAULT_RESAMPLES)?;
    let rows = compare::between_runs(
        &an_a.design,
        &an_a.table,
        &an_b.table,
        analysis::DEFAULT_RESAMPLES,
    );
    if let Some(path) = csv {
        store::write_atomic(
            path,
            &crate::report::summary::comparisons_csv_with(&rows, "reference")?,
        )?;
    }
    let shown: Vec<&compare::ComparisonRow> = rows
        .iter()
        .filter(|r| metrics.is_empty() || metrics.iter().any(|m| m == r.metric))
        .collect();
    let f = crate::report::markdown::fmt_num;
    println!(
        "{:<28} {:<24} {:>3} {:>10} {:>22} {:>8} {:>8}  verdict",
        "strategy", "metric", "n", "B - A", "95% CI", "p", "p_holm"
    );
    let mut worse = Vec::new();
    for r in &shown {
        let bad = !metrics.is_empty() && compare::is_significantly_worse(r, alpha);
        let verdict = if bad {
            "WORSE"
        } else if r.p_holm < alpha {
            "changed"
        } else {
            ""
        };
        let strategy = if an_a.design.models.len() > 1 {
            format!("{}/{}", r.model, r.strategy)
        } else {
            r.strategy.clone()
        };
        println!(
            "{:<28} {:<24} {:>3} {:>10} {:>22} {:>8} {:>8}  {verdict}",
            strategy,
            r.metric,
            r.n_prompts,
            f(r.diff.point),
            format!("[{}, {}]", f(r.diff.ci_low), f(r.diff.ci_high)),
            f(r.p_value),
            f(r.p_holm)
        );
        if bad {
            worse.push(format!("{} {}", strategy, r.metric));
        }
    }
    if shown.is_empty() {
        eprintln!(
            "declab: no (model, strategy, metric) cell is shared by {} and {}",
            a.display(),
            b.display()
        );
    }
    // Whether the gate can fail, from the data: a comparison's smallest attainable p counts only
    // the prompts whose values differ, and ties among the rest.
    let blocked: Vec<&&compare::ComparisonRow> = shown
        .iter()
        .filter(|r| !compare::can_reach(r, alpha))
        .collect();
    if !metrics.is_empty() && !shown.is_empty() && blocked.len() == shown.len() {
        let n_max = shown.iter().map(|r| r.n_prompts).max().unwrap_or(0);
        let best = shown.iter().map(|r| r.min_p).fold(f64::INFINITY, f64::min);
        eprintln!(
            "declab: warning: the gate cannot fail at alpha {alpha}: on this data the smallest attainable p-value is {} ({n_max} paired prompts at most; prompts with equal values in A and B drop out); add prompts to the experiment",
            f(best)
        );
    } else if !metrics.is_empty() && !blocked.is_empty() {
        let names: Vec<String> = blocked
            .iter()
            .map(|r| {
                format!(
                    "{} {} (smallest attainable p {})",
                    r.strategy,
                    r.metric,
                    f(r.min_p)
                )
            })
            .collect();
        eprintln!(
            "declab: warning: these gated comparisons cannot be significant at alpha {alpha} on their data: {}",
            names.join("; ")
        );
    }
    if !worse.is_empty() {
        eprintln!(
            "declab: significantly worse in B than in A: {}",
            worse.join("; ")
        );
        return Ok(1);
    }
    Ok(0)
}

/// Mean NLL (nats/token) of each text's tokens given its prompt under a scoring model,
/// teacher-forced ([`crate::teacher`]) after one prefill of the prompt. The text is tokenized on
/// its own (no special tokens) and appended to the prompt's ids (with BOS), so both sides of the
/// boundary are scored exactly as written.
fn score_nll(
    scorer: &std::path::Path,
    lines: &[crate::analysis::foreign::InputLine],
) -> Result<Vec<Option<f64>>> {
    let spec = scorer_spec(scorer, None)?;
    let model = crate::engine::load(&spec, &candle_core::Device::Cpu)
        .context("loading the --scorer model")?;
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        let ids = model.encode(l.prompt.as_deref().unwrap_or(""))?;
        let text_ids = teacher::text_ids(&model, &l.text)?;
        if text_ids.is_empty() || ids.is_empty() {
            out.push(None);
            continue;
        }
        if let Some(problem) = teacher::check_fits(&model, ids.len(), &text_ids) {
            bail!("{problem}");
        }
        let steps = teacher::force(&model, &ids, &[&text_ids])?;
        let nll: f64 = -steps[0].iter().map(|s| s.logprob).sum::<f64>();
        out.push(Some(nll / text_ids.len() as f64));
    }
    Ok(out)
}

/// The model a `--scorer` names: a GGUF file, or a folder with one; its tokenizer is
/// `tokenizer` when given, else the tokenizer.json beside the GGUF if there is one, else the
/// GGUF's own. Its id is the GGUF's file stem. A path that is no GGUF is a usage error.
fn scorer_spec(
    scorer: &std::path::Path,
    tokenizer: Option<&std::path::Path>,
) -> Result<config::ModelSpec> {
    let usage = |flag: &str, msg: String| ConfigError::new(std::path::Path::new(flag), vec![msg]);
    if crate::engine::hf::is_hf_folder(scorer) {
        let tokenizer = match tokenizer {
            Some(t) if !t.is_file() => {
                return Err(usage("--tokenizer", format!("cannot read {}", t.display())).into())
            }
            Some(t) => Some(t.to_path_buf()),
            None => Some(scorer.join("tokenizer.json")).filter(|t| t.is_file()),
        };
        if tokenizer.is_none() {
            return Err(usage(
                "--scorer",
                format!(
                    "{} has no tokenizer.json; give one with --tokenizer",
                    scorer.display()
                ),
            )
            .into());
        }
        return Ok(config::ModelSpec {
            id: scorer
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scorer".into()),
            weights: config::Weights::Hf {
                folder: scorer.to_path_buf(),
                lora: None,
            },
            tokenizer,
            eos_tokens: vec![],
            chat: false,
        });
    }
    let gguf = if scorer.is_dir() {
        std::fs::read_dir(scorer)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "gguf"))
            .ok_or_else(|| usage("--scorer", format!("no .gguf file in {}", scorer.display())))?
    } else {
        scorer.to_path_buf()
    };
    if let Some(problem) = crate::engine::not_gguf(&gguf) {
        return Err(usage("--scorer", format!("{problem}; give a .gguf model file")).into());
    }
    let tokenizer = match tokenizer {
        Some(t) if !t.is_file() => {
            return Err(usage("--tokenizer", format!("cannot read {}", t.display())).into())
        }
        Some(t) => Some(t.to_path_buf()),
        None => Some(gguf.with_file_name("tokenizer.json")).filter(|t| t.is_file()),
    };
    Ok(config::ModelSpec {
        id: gguf
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scorer".into()),
        weights: config::Weights::Gguf(gguf),
        tokenizer,
        eos_tokens: vec![],
        chat: false,
    })
}

struct SelectArgs<'a> {
    input: &'a std::path::Path,
    scorer: &'a std::path::Path,
    tokenizer: Option<&'a std::path::Path>,
    selectors: &'a [String],
    seed: Option<u64>,
    out: Option<&'a std::path::Path>,
}

/// The selectors `declab select` applies when none is given: every registered kind whose bare
/// block `{kind: K}` is complete (so not entropy_band, whose band has no default).
fn default_selectors() -> Vec<String> {
    let limits = crate::select::Limits {
        max_new_tokens: usize::MAX,
    };
    crate::select::KINDS
        .iter()
        .filter(|k| {
            let mut m = serde_yaml::Mapping::new();
            m.insert("kind".into(), k.name.into());
            crate::select::parse_block(&serde_yaml::Value::Mapping(m), "", &limits).is_ok()
        })
        .map(|k| k.name.to_string())
        .collect()
}

/// `--selector` arguments (a kind name or a block) as checked selectors; errors name the
/// argument.
fn parse_selectors(args: &[String]) -> Result<Vec<crate::select::SelectorSpec>> {
    let flag = std::path::Path::new("--selector");
    let args: Vec<String> = if args.is_empty() {
        default_selectors()
    } else {
        args.to_vec()
    };
    let mut blocks = Vec::with_capacity(args.len());
    let mut errors = Vec::new();
    for a in &args {
        match serde_yaml::from_str::<serde_yaml::Value>(a) {
            Ok(serde_yaml::Value::String(kind)) => {
                let mut m = serde_yaml::Mapping::new();
                m.insert("kind".into(), kind.into());
                blocks.push(serde_yaml::Value::Mapping(m));
            }
            Ok(v) => blocks.push(v),
            Err(e) => errors.push(format!("{a}: {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigError::new(flag, errors).into());
    }
    let limits = crate::select::Limits {
        max_new_tokens: usize::MAX,
    };
    crate::select::parse_list(&blocks, &limits, 2).map_err(|es| {
        // the paths are `select[i]...`: name the argument instead
        let named = es.iter().map(|e| {
            let i = e
                .path
                .strip_prefix("select[")
                .and_then(|r| r.split(']').next())
                .and_then(|i| i.parse::<usize>().ok());
            match i.and_then(|i| args.get(i)) {
                Some(a) => format!("{a}: {}", e.message),
                None => e.to_string(),
            }
        });
        ConfigError::new(flag, named.collect()).into()
    })
}

/// `declab select`: every check on the flags and the input first (exit 2, nothing written),
/// then the scorer, the candidates' tokens checked against it (exit 2), one teacher-forced
/// batch per group, the selections, and the two files.
fn select_cmd(a: &SelectArgs) -> Result<i32> {
    use crate::analysis::candidates::{self, InputKind, Tokens};
    use crate::analysis::selection::{select_cell, CellKey};
    let selectors = parse_selectors(a.selectors)?;
    let text = std::fs::read_to_string(a.input)
        .map_err(|e| ConfigError::new(a.input, vec![format!("cannot read it: {e}")]))?;
    let parsed = candidates::parse(&text).map_err(|es| ConfigError::new(a.input, es))?;
    let spec = scorer_spec(a.scorer, a.tokenizer)?;
    let dir = a
        .input
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let manifest = if parsed.kind == InputKind::Samples && dir.join(store::MANIFEST_JSON).is_file()
    {
        Some(store::read_manifest(dir)?)
    } else {
        None
    };
    let seed = a.seed.or(manifest.as_ref().map(|m| m.seed)).unwrap_or(0);
    let out_dir = a.out.unwrap_or(dir);
    let model = crate::engine::load(&spec, &candle_core::Device::Cpu)
        .context("loading the --scorer model")?;
    // another model may rerank a run's samples, but its traces are then not the run's
    for m in manifest.iter().flat_map(|m| &m.models) {
        if m.weights_sha256 != model.weights_sha256 {
            eprintln!(
                "declab: warning: the run's model {:?} ({}) is not the scorer {}: the traces and selections will differ from the run's",
                m.id,
                m.weights,
                spec.weights.describe()
            );
        }
    }

    // every candidate's tokens, checked before any forward pass
    let label = |g: &candidates::Group| match &g.model {
        Some(m) => format!("{m}/{}/{}", g.prompt_id, g.strategy),
        None => format!("group {:?}", g.prompt_id),
    };
    let mut errors = Vec::new();
    let mut work: Vec<(Vec<u32>, Vec<Vec<u32>>)> = Vec::with_capacity(parsed.groups.len());
    for g in &parsed.groups {
        let prompt_ids = match teacher::prompt_ids(&model, &g.prompt) {
            Ok(p) => p,
            Err(e) => {
                let line = g.candidates.first().map_or(0, |c| c.line);
                errors.push(format!("line {line}: {}: prompt: {e:#}", label(g)));
                continue;
            }
        };
        let mut texts = Vec::with_capacity(g.candidates.len());
        for c in &g.candidates {
            let at = || format!("line {}: {}, candidate {}", c.line, label(g), c.index);
            let ids = match &c.tokens {
                Tokens::Ids(ids) => ids.clone(),
                Tokens::Text(t) => match teacher::text_ids(&model, t) {
                    Ok(ids) => ids,
                    Err(e) => {
                        errors.push(format!("{}: {e:#}", at()));
                        continue;
                    }
                },
            };
            if let Some(problem) = teacher::check_fits(&model, prompt_ids.len(), &ids) {
                errors.push(format!("{}: {problem}", at()));
            }
            texts.push(ids);
        }
        work.push((prompt_ids, texts));
    }
    if !errors.is_empty() {
        return Err(ConfigError::new(a.input, errors).into());
    }

    // every group's candidates, the groups sharing batches (ragged: several prompts a batch)
    let groups: Vec<(&[u32], Vec<&[u32]>)> = work
        .iter()
        .map(|(prompt_ids, texts)| {
            (
                prompt_ids.as_slice(),
                texts.iter().map(Vec::as_slice).collect(),
            )
        })
        .collect();
    let forced_groups =
        teacher::force_groups(&model, &groups).context("teacher-forcing the candidates")?;
    let mut rows = Vec::new();
    let mut traces_jsonl: Vec<u8> = Vec::new();
    for (g, forced) in parsed.groups.iter().zip(&forced_groups) {
        let traces: Vec<crate::record::Trace> =
            forced.iter().map(|f| teacher::trace_of(f)).collect();
        let cands: Vec<crate::select::Candidate> = g
            .candidates
            .iter()
            .zip(&traces)
            .map(|(c, trace)| crate::select::Candidate {
                index: c.index,
                trace,
            })
            .collect();
        let key = CellKey {
            model: g.model.as_deref().unwrap_or(&spec.id),
            prompt_id: &g.prompt_id,
            strategy: &g.strategy,
        };
        rows.extend(select_cell(seed, &selectors, &key, &cands));
        for (c, t) in g.candidates.iter().zip(&traces) {
            let line = serde_json::json!({
                "model": key.model,
                "prompt_id": key.prompt_id,
                "strategy": key.strategy,
                "index": c.index,
                "tokens": t.entropy.len(),
                "entropy": t.entropy,
                "varentropy": t.varentropy,
                "logprob": t.logprob,
                "self_certainty": t.self_certainty,
                "confidence": t.confidence,
            });
            serde_json::to_writer(&mut traces_jsonl, &line)?;
            traces_jsonl.push(b'\n');
        }
    }
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    store::write_atomic(
        &out_dir.join(SELECTIONS_CSV),
        &report::summary::selections_csv(&rows)?,
    )?;
    store::write_atomic(&out_dir.join(SELECT_TRACES_JSONL), &traces_jsonl)?;
    let skipped = if parsed.skipped_failed > 0 {
        format!(" ({} failed samples skipped)", parsed.skipped_failed)
    } else {
        String::new()
    };
    eprintln!(
        "declab: scored {} candidates in {} groups with {}{skipped}; {} selectors -> {}/{SELECTIONS_CSV}, {SELECT_TRACES_JSONL}",
        parsed.candidates(),
        parsed.groups.len(),
        spec.id,
        selectors.len(),
        out_dir.display()
    );
    Ok(0)
}

/// What `declab select` writes (selections.csv has the columns `run` gives it).
const SELECTIONS_CSV: &str = "selections.csv";
const SELECT_TRACES_JSONL: &str = "select_traces.jsonl";

/// Add `nll_mean` and `perplexity` columns to a metrics_samples.csv (rows in input order).
fn append_nll_columns(csv_bytes: &[u8], nll: &[Option<f64>]) -> Result<Vec<u8>> {
    let mut r = csv::Reader::from_reader(csv_bytes);
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = r.headers()?.iter().map(str::to_string).collect();
    header.extend(["nll_mean".to_string(), "perplexity".to_string()]);
    w.write_record(&header)?;
    for (rec, n) in r.records().zip(nll) {
        let mut row: Vec<String> = rec?.iter().map(str::to_string).collect();
        row.push(n.map(|x| format!("{x:.6}")).unwrap_or_default());
        row.push(n.map(|x| format!("{:.6}", x.exp())).unwrap_or_default());
        w.write_record(&row)?;
    }
    Ok(w.into_inner()?)
}
