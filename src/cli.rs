//! Command-line interface (clap derive). Each subcommand is a thin call into the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "declab", version, about = "Run and compare LLM decoding strategies: seeded grids, per-token traces, statistics")]
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
    },
    /// Check an experiment file without loading any model; exit code 2 on errors.
    Validate {
        file: PathBuf,
    },
    /// Show the final sampling distribution of a strategy on given logits, as JSON.
    Dist {
        /// A JSON array of logits, or - for standard input.
        #[arg(long)]
        logits: String,
        /// A strategy block in experiment syntax, e.g. '{kind: top_p, top_p: 0.9, temperature: 0.7}'.
        #[arg(long)]
        strategy: String,
        /// Seed (only matters for strategies whose first step is random; none currently is).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}
