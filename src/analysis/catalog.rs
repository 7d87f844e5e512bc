//! The metric catalogue: every metric declab reports, with its unique name (one name per
//! parameterisation, burn-train style), the level it is computed at (one sample, or the group of
//! samples of one model x prompt x strategy), its family in the report, and which direction is
//! better. Definitions live next to the computations in [`super::per_sample`] and
//! [`super::per_group`] (and the formulas in [`crate::metrics`]).

/// Where a metric is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// One value per generated sample.
    Sample,
    /// One value per group (the samples of one model x prompt x strategy).
    Group,
}

/// The report section a metric belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Diversity,
    Coherence,
    Entropy,
    /// Output length; not a quality measure but needed to read the others.
    Length,
    Latency,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Diversity,
        Family::Coherence,
        Family::Entropy,
        Family::Length,
        Family::Latency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Diversity => "diversity",
            Family::Coherence => "coherence",
            Family::Entropy => "entropy",
            Family::Length => "length",
            Family::Latency => "latency",
        }
    }
}

/// Metadata of one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricInfo {
    pub name: &'static str,
    pub level: Level,
    pub family: Family,
    /// `Some(true)` when larger is better, `Some(false)` when smaller is better, `None` when
    /// neither direction is better (entropy, length): `declab compare` then treats any
    /// significant change as a regression.
    pub higher_is_better: Option<bool>,
    /// Needs the run's per-token trace (unavailable for `declab metrics` on foreign outputs).
    pub needs_trace: bool,
    /// Needs the sentence embedder.
    pub needs_embedder: bool,
    pub description: &'static str,
}

const fn m(
    name: &'static str,
    level: Level,
    family: Family,
    higher_is_better: Option<bool>,
    needs_trace: bool,
    needs_embedder: bool,
    description: &'static str,
) -> MetricInfo {
    MetricInfo {
        name,
        level,
        family,
        higher_is_better,
        needs_trace,
        needs_embedder,
        description,
    }
}

use Family::*;
use Level::*;

/// Per-sample metrics, in column order.
pub const SAMPLE_METRICS: &[MetricInfo] = &[
    m(
        "distinct_1",
        Sample,
        Diversity,
        Some(true),
        false,
        false,
        "unique words / words",
    ),
    m(
        "distinct_2",
        Sample,
        Diversity,
        Some(true),
        false,
        false,
        "unique word bigrams / bigrams",
    ),
    m(
        "distinct_3",
        Sample,
        Diversity,
        Some(true),
        false,
        false,
        "unique word trigrams / trigrams",
    ),
    m(
        "repetition_4",
        Sample,
        Diversity,
        Some(false),
        false,
        false,
        "1 - distinct_4 (seq-rep-4, Welleck et al. 2020)",
    ),
    m(
        "compression_ratio",
        Sample,
        Diversity,
        Some(false),
        false,
        false,
        "UTF-8 bytes / gzip-9 bytes (higher = more redundant)",
    ),
    m(
        "nll_mean",
        Sample,
        Coherence,
        Some(false),
        true,
        false,
        "mean -ln p(token) under the unmodified model (nats/token)",
    ),
    m(
        "perplexity",
        Sample,
        Coherence,
        Some(false),
        true,
        false,
        "exp(nll_mean)",
    ),
    m(
        "coherence_embed",
        Sample,
        Coherence,
        Some(true),
        false,
        true,
        "cosine of MiniLM embeddings of prompt and continuation (Su et al. 2022)",
    ),
    m(
        "entropy_mean",
        Sample,
        Entropy,
        None,
        true,
        false,
        "mean entropy of the unmodified next-token distribution (nats)",
    ),
    m(
        "final_entropy_mean",
        Sample,
        Entropy,
        None,
        true,
        false,
        "mean entropy of the distribution sampled from (nats)",
    ),
    m(
        "tokens",
        Sample,
        Length,
        None,
        true,
        false,
        "generated tokens",
    ),
    m(
        "forward_ms_per_token",
        Sample,
        Latency,
        Some(false),
        true,
        false,
        "median forward-pass time per token (ms)",
    ),
    m(
        "sampler_us_per_token",
        Sample,
        Latency,
        Some(false),
        true,
        false,
        "median sampler time per token (us)",
    ),
    m(
        "sampler_overhead_pct",
        Sample,
        Latency,
        Some(false),
        true,
        false,
        "sampler / (forward + sampler) x 100, from the medians",
    ),
];

/// Per-group metrics, in column order.
pub const GROUP_METRICS: &[MetricInfo] = &[
    m(
        "self_bleu_4",
        Group,
        Diversity,
        Some(false),
        false,
        false,
        "mean BLEU-4 of each sample against the others (NLTK method1)",
    ),
    m(
        "distinct_1_pooled",
        Group,
        Diversity,
        Some(true),
        false,
        false,
        "distinct_1 over the group's samples together",
    ),
    m(
        "distinct_2_pooled",
        Group,
        Diversity,
        Some(true),
        false,
        false,
        "distinct_2 over the group's samples together",
    ),
    m(
        "distinct_3_pooled",
        Group,
        Diversity,
        Some(true),
        false,
        false,
        "distinct_3 over the group's samples together",
    ),
    m(
        "compression_ratio_pooled",
        Group,
        Diversity,
        Some(false),
        false,
        false,
        "compression ratio of the samples joined by newlines",
    ),
    m(
        "diversity_embed",
        Group,
        Diversity,
        Some(true),
        false,
        true,
        "1 - mean pairwise cosine of the continuations' MiniLM embeddings",
    ),
];

/// Every metric: the per-sample ones, then the per-group ones.
pub fn all() -> impl Iterator<Item = &'static MetricInfo> {
    SAMPLE_METRICS.iter().chain(GROUP_METRICS.iter())
}

pub fn find(name: &str) -> Option<&'static MetricInfo> {
    all().find(|m| m.name == name)
}

/// Position of a per-sample metric in [`SAMPLE_METRICS`].
pub fn sample_index(name: &str) -> Option<usize> {
    SAMPLE_METRICS.iter().position(|m| m.name == name)
}

/// Position of a per-group metric in [`GROUP_METRICS`].
pub fn group_index(name: &str) -> Option<usize> {
    GROUP_METRICS.iter().position(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_levels_consistent() {
        let mut names: Vec<&str> = all().map(|m| m.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        assert!(SAMPLE_METRICS.iter().all(|m| m.level == Level::Sample));
        assert!(GROUP_METRICS.iter().all(|m| m.level == Level::Group));
        assert_eq!(
            find("self_bleu_4").map(|m| m.higher_is_better),
            Some(Some(false))
        );
        assert!(find("nope").is_none());
    }
}
