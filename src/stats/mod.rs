//! Criterion-style statistics for comparing decoding strategies, with no
//! I/O: validated samples, bootstrap confidence intervals, the Wilcoxon
//! signed-rank test, Holm-Bonferroni adjustment and the matched-pairs
//! rank-biserial effect size.
//!
//! This file owns the shared error type [`StatsError`] and re-exports the
//! public API of the submodules; each submodule documents its exact
//! definition and the reference implementation it matches.

pub mod bootstrap;
pub mod effect;
pub mod estimate;
pub mod holm;
pub mod wilcoxon;

pub use bootstrap::{bootstrap_mean, paired_bootstrap_diff};
pub use effect::rank_biserial;
pub use estimate::{median, percentile, Estimate, Sample};
pub use holm::holm;
pub use wilcoxon::{wilcoxon_signed_rank, WilcoxonMethod, WilcoxonResult};

/// Why a statistic could not be computed from the given input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// The input has no values.
    #[error("empty sample")]
    Empty,
    /// The input has fewer values than the statistic needs.
    #[error("sample has {got} value(s), at least {needed} needed")]
    TooFewValues { needed: usize, got: usize },
    /// A value is NaN or infinite.
    #[error("value at index {index} is not finite ({value})")]
    NonFinite { index: usize, value: f64 },
    /// Paired inputs have different lengths.
    #[error("paired samples differ in length: {a} vs {b}")]
    LengthMismatch { a: usize, b: usize },
    /// The confidence level is not strictly between 0 and 1.
    #[error("confidence level {0} is not in the open interval (0, 1)")]
    InvalidConfidence(f64),
    /// Zero bootstrap resamples were requested.
    #[error("the number of bootstrap resamples must be at least 1")]
    NoResamples,
}
