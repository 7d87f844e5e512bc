//! Command-line interface (clap derive). Each subcommand is a thin call into the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "declab",
    version,
    about = "Run and compare LLM decoding strategies: seeded grids, per-token traces, statistics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment file; results go to results/<name>/ (or --out). Re-running resumes.
    Run {
        /// The experiment YAML file.
        file: PathBuf,
        /// Results folder (default: results/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Move an existing results folder aside (never deleted) and start over.
        #[arg(long)]
        fresh: bool,
        /// Run the model on the first CUDA GPU (needs a --features cuda build).
        #[arg(long)]
        cuda: bool,
        /// Plain log lines instead of a progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Run only shard K of N (0 <= K < N), into results/<name>/shards/K-of-N/ unless --out
        /// is given; `declab merge results/<name>` joins the shards.
        #[arg(long, value_name = "K/N")]
        shard: Option<String>,
        /// Most samples decoded together in one batch (1: one at a time); prompts with fewer
        /// samples share a batch. Batching does not change any sample, only the speed.
        #[arg(long, default_value_t = crate::runner::DEFAULT_BATCH, value_parser = clap::value_parser!(u16).range(1..=256))]
        batch: u16,
        /// Resuming, run again the samples that failed before (they count as done otherwise).
        #[arg(long)]
        retry_failed: bool,
    },
    /// Join the shards of a run (results/<name>/shards/K-of-N) into results/<name>/: checks
    /// they are complete and from the same config, models and declab version, then writes the
    /// merged samples, manifest, statistics and report.
    Merge {
        /// The run's folder (results/<name>).
        dir: PathBuf,
    },
    /// Check an experiment file without loading any model; exit code 2 on errors.
    Validate { file: PathBuf },
    /// Measure each model's own entropy distribution as `run` does for quantile thresholds
    /// (`entropy_low: {quantile: 0.25}`): one seeded sample per prompt (the file's
    /// `calibration:` settings), then print the quantiles and the thresholds they resolve to,
    /// and write calibration.json, calibration.csv and the histograms (calibration.svg).
    Calibrate {
        /// The experiment YAML file.
        file: PathBuf,
        /// Output folder (default: results/<name>-calibration).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a tiny random gemma3 GGUF + tokenizer.json (for trying configs and for tests).
    #[command(hide = true)]
    TinyModel {
        dir: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Show the final sampling distribution of a strategy on given logits, as JSON.
    Dist {
        /// A JSON array of logits, or - for standard input.
        #[arg(long)]
        logits: String,
        /// A strategy block in experiment syntax, e.g. '{kind: top_p, top_p: 0.9, temperature: 0.7}'.
        #[arg(long)]
        strategy: String,
        /// Also draw one token from that distribution with this seed's ChaCha stream (the draw
        /// a sample seeded with it makes at its first step) and print it as `token`.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Sampler latency per strategy at real vocabulary sizes (ratios to a one-pass floor
    /// measured in the same run), and forward vs sampler time in a short real-model run.
    Bench {
        /// Vocabulary sizes to time (the real logits are truncated to each).
        #[arg(long = "vocab", default_values_t = [32_768usize, 131_072, 262_144])]
        vocabs: Vec<usize>,
        /// Timed iterations per strategy and vocabulary size.
        #[arg(long, default_value_t = 60)]
        iters: usize,
        /// Tokens per strategy in the real-model generation (0 skips it).
        #[arg(long, default_value_t = 32)]
        tokens: usize,
        /// Tokens per row in the batched real-model generation: every strategy, `--batch-samples`
        /// samples each, decoded as one batch of one prompt as a grid runs; gives each
        /// strategy's share of the per-token time inside a batch (0 skips it).
        #[arg(long, default_value_t = 16)]
        batch_tokens: usize,
        /// Samples per strategy in the batched generation (rows = strategies x this).
        #[arg(long, default_value_t = 2)]
        batch_samples: usize,
        /// Write bench.json and bench.csv here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Compare with a baseline file; exit 1 when a strategy regressed beyond its tolerance.
        #[arg(long)]
        check: Option<PathBuf>,
        /// Write the measured ratios as a new baseline file.
        #[arg(long)]
        write_baseline: Option<PathBuf>,
        /// Tolerance stored in a new baseline (ratio may grow by this factor).
        #[arg(long, default_value_t = 2.0)]
        tolerance: f64,
        /// Only write real-model logit rows (spread over their entropy range) to this fixture
        /// file for the criterion benches, then stop (`make bench-fixture`).
        #[arg(long, value_name = "FILE")]
        save_logits: Option<PathBuf>,
        /// Rows in the fixture written by --save-logits.
        #[arg(long, default_value_t = 3, requires = "save_logits")]
        fixture_rows: usize,
    },
    /// Check a GGUF model's logits against llama.cpp's on the same file: teacher-forces the
    /// fixture's token sequences (made by scripts/logit-reference.sh) and prints top-1
    /// agreement, KL(llama.cpp || declab) and the entropy difference beside llama.cpp's
    /// agreement with itself; exit 1 when a threshold is missed (by default they follow that
    /// floor, see src/reference.rs).
    CheckModel {
        /// The GGUF model file.
        gguf: PathBuf,
        /// The reference fixture (gzip JSON) for that file.
        #[arg(long)]
        reference: PathBuf,
        /// Lowest acceptable top-1 agreement (default: from the fixture's floor, else 0.95).
        #[arg(long)]
        min_top1: Option<f64>,
        /// Highest acceptable mean KL in nats (default: from the floor, else 0.01).
        #[arg(long)]
        max_kl: Option<f64>,
        /// Highest acceptable mean |ΔH| in nats (default: from the floor, else 0.08).
        #[arg(long)]
        max_dh: Option<f64>,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Regenerate summary.csv, comparisons.csv, metrics_*.csv, report.md, report.html and the plots of a
    /// results folder from its samples.jsonl and manifest.json.
    Report {
        /// The results folder (results/<name>).
        dir: PathBuf,
        /// Sentence-transformers folder for the embedding metrics (default: the MiniLM fetched
        /// by `make models`; left out with a warning when absent).
        #[arg(long)]
        embedder: Option<PathBuf>,
    },
    /// Score generations made by any system: FILE.jsonl has one {"group", "text", "prompt"?}
    /// object per line; writes metrics_samples.csv and metrics_groups.csv.
    Metrics {
        #[arg(long)]
        input: PathBuf,
        /// Output folder (default: the input file's folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Sentence-transformers folder (default: the MiniLM fetched by `make models`).
        #[arg(long)]
        embedder: Option<PathBuf>,
        /// Skip the embedding metrics (coherence_embed, diversity_embed).
        #[arg(long, conflicts_with = "embedder")]
        no_embed: bool,
        /// A GGUF model (or a folder with one .gguf) to score the texts with, tokenized by the
        /// tokenizer.json beside it if there is one, else by the GGUF's own tokenizer: adds
        /// nll_mean and perplexity of each text given its prompt (one forward per token).
        #[arg(long)]
        scorer: Option<PathBuf>,
    },
    /// Best-of-N selection without generating: teacher-force candidates made by any system (or
    /// a declab samples.jsonl) through a scoring model and choose one per group per selector.
    ///
    /// Writes selections.csv (model, prompt_id, strategy, selector, n,
    /// chosen_index, score, as `run` writes it) and select_traces.jsonl (each candidate's
    /// entropy, varentropy, logprob, self_certainty and confidence per token). On a run's own
    /// samples.jsonl with the run's model it reproduces the run's selections exactly.
    ///
    /// Input lines: {"group": ..., "prompt": ..., "text": ..., "token_ids": [...]?}, one
    /// candidate per line (candidate index = order within its group, from 0; `token_ids`, when
    /// given, is used instead of tokenizing `text`, which is otherwise tokenized without special
    /// tokens after the prompt's ids as `run` encodes the prompt); or a declab samples.jsonl
    /// (group = model/prompt_id/strategy, index = sample_index, its token_ids; failed samples
    /// skipped). For generic input, selections.csv's model is the scorer's file stem,
    /// prompt_id the group and strategy empty. Exit 2 on usage or input errors, before
    /// anything is written.
    Select {
        /// Candidates, one JSON object per line (see above).
        #[arg(long)]
        input: PathBuf,
        /// The scoring model: a GGUF file (or a folder with one .gguf), tokenized by
        /// --tokenizer, else the tokenizer.json beside it, else the GGUF's own tokenizer.
        #[arg(long)]
        scorer: PathBuf,
        /// A tokenizer.json for the scorer.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// A selector, by kind name or as a block in experiment syntax (repeatable):
        /// `--selector self_certainty --selector '{kind: group_confidence, window: 8}'`.
        /// Default: self_certainty, mean_entropy, mean_logprob, group_confidence (window 16)
        /// and random (entropy_band needs a band, so it is never a default).
        #[arg(long = "selector", value_name = "KIND|BLOCK")]
        selectors: Vec<String>,
        /// Seed of the random selector's draws (default: for a samples.jsonl, the experiment
        /// seed in the manifest.json beside it, so random picks match the run's; else 0).
        #[arg(long)]
        seed: Option<u64>,
        /// Output folder (default: the input file's folder).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Compare two runs of the same experiment (before = A, after = B), per strategy and metric:
    /// B - A with a paired bootstrap CI over prompts and a Wilcoxon p-value (Holm across
    /// strategies). As a regression gate: exit 1 when a metric named with --metric got
    /// significantly worse (Holm-adjusted p < --alpha in its worse direction). With --models,
    /// one model of A against another of B (two checkpoints of one run: give its folder twice).
    Compare {
        /// Results folder of the reference run.
        a: PathBuf,
        /// Results folder of the new run.
        b: PathBuf,
        /// Compare model A_MODEL of run A with model B_MODEL of run B (e.g. two checkpoints:
        /// `declab compare results/ck results/ck --models sft@500 sft@1000 --metric nll_ref`).
        #[arg(long, num_args = 2, value_names = ["A_MODEL", "B_MODEL"])]
        models: Option<Vec<String>>,
        /// Metric to gate on (repeatable); without it every difference is shown and the exit
        /// code is 0.
        #[arg(long = "metric")]
        metrics: Vec<String>,
        /// Significance level of the gate.
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
        /// Also write the comparison table as CSV to this file.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Sentence-transformers folder for the embedding metrics.
        #[arg(long)]
        embedder: Option<PathBuf>,
    },
}
