//! What each subcommand does, on top of the library modules.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

use crate::cli::{Cli, Command};
use crate::error::ConfigError;
use crate::{config, runner, strategy};

pub fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run { file, out, fresh, cuda, no_progress } => run(file, out, fresh, cuda, no_progress),
        Command::Validate { file } => validate(file),
        Command::Dist { logits, strategy, seed } => dist(&logits, &strategy, seed),
    }
}

fn load_config(file: &PathBuf) -> Result<config::Experiment> {
    let exp = config::load(file)?;
    for w in &exp.warnings {
        eprintln!("declab: warning: {}: {w}", file.display());
    }
    Ok(exp)
}

fn validate(file: PathBuf) -> Result<i32> {
    let exp = load_config(&file)?;
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

fn run(file: PathBuf, out: Option<PathBuf>, fresh: bool, cuda: bool, no_progress: bool) -> Result<i32> {
    let exp = load_config(&file)?;
    let out_dir = out.unwrap_or_else(|| PathBuf::from("results").join(&exp.name));
    let flag = runner::stop_flag();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ndeclab: stopping after the current step (press Ctrl-C again to abort now)");
    });
    let opts = runner::RunOptions { out_dir, fresh, cuda, progress: if no_progress { Some(false) } else { None } };
    let s = runner::run(&exp, &opts)?;
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
    if s.samples_failed > 0 {
        eprintln!("declab: {} samples failed; see the `status` and `error` fields in samples.jsonl", s.samples_failed);
        return Ok(1);
    }
    Ok(0)
}

fn dist(logits_arg: &str, spec: &str, _seed: u64) -> Result<i32> {
    let text = if logits_arg == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading logits from standard input")?;
        s
    } else {
        std::fs::read_to_string(logits_arg).with_context(|| format!("cannot read logits file {logits_arg}"))?
    };
    let values: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| anyhow!("the logits must be a JSON array of numbers: {e}"))?;
    let mut logits = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let x = match v {
            serde_json::Value::Number(n) => n.as_f64().ok_or_else(|| anyhow!("logit {i} is not a number"))?,
            serde_json::Value::String(s) if s == "-inf" || s == "-Infinity" => f64::NEG_INFINITY,
            other => bail!("logit {i} is {other}; expected a number (or \"-inf\" for a masked token)"),
        };
        logits.push(x as f32);
    }
    if logits.is_empty() {
        bail!("the logits array is empty");
    }
    let block: serde_yaml::Value = serde_yaml::from_str(spec).map_err(|e| ConfigError::new(std::path::Path::new("--strategy"), vec![e.to_string()]))?;
    let map = block
        .as_mapping()
        .ok_or_else(|| ConfigError::new(std::path::Path::new("--strategy"), vec!["expected a strategy block such as '{kind: top_p, top_p: 0.9}'".into()]))?;
    let s = config::strategy::parse_single(map, "strategy")
        .map_err(|es| ConfigError::new(std::path::Path::new("--strategy"), es.into_iter().map(|e| e.to_string()).collect()))?;
    let mut sampler = strategy::Sampler::new(strategy::build(&s.processors, logits.len()));
    let d = sampler.final_distribution(&logits).map_err(|e| anyhow!("invalid logits: {e}"))?;
    let out = serde_json::json!({
        "strategy": s.id,
        "probs": d.probs,
        "entropy_nats": d.entropy_nats,
        "temperature": d.temperature,
        "kept": d.kept,
        "branch": d.effect.branch,
    });
    println!("{}", serde_json::to_string(&out)?);
    Ok(0)
}
