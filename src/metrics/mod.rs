//! Every metric declab reports, one unit each, and the one list of them ([`REGISTRY`]).
//!
//! A metric is a [`Metric`] value in the file that holds its formula and reference: its unique
//! name (one per parameterisation, burn-train style: `distinct_2`, `self_bleu_4`), level
//! (sample or group), report family, direction, unit, needs (trace, embedder) and computation.
//! [`sample_values`] and [`group_values`] evaluate the registry into [`MetricValues`], keyed by
//! name; the catalogue of the report and `declab compare`
//! ([`crate::analysis::catalog`]) and every metrics CSV column are derived from [`REGISTRY`],
//! in its order.
//!
//! The building blocks are pure, I/O-free functions: word splitting ([`words()`]), distinct-n
//! ([`distinct_n`], [`distinct_n_pooled`]), seq-rep-4 ([`repetition_4`]), gzip compression
//! ratio ([`compression_ratio`], [`compression_ratio_pooled`]) and Self-BLEU ([`self_bleu()`],
//! [`sentence_bleu`]). Each submodule documents the exact definition and the reference
//! implementation it matches.
//!
//! Adding a metric (README, "Adding a metric"): write its file with a `pub const` [`Metric`],
//! declare the module below and add one line to [`REGISTRY`].

pub mod coherence;
pub mod compression;
pub mod distinct;
pub mod diversity_embed;
pub mod entropy_mean;
#[cfg(test)]
mod example_kept_mean;
pub mod latency;
pub mod metric;
pub mod nll;
pub mod reference;
pub mod repetition;
pub mod self_bleu;
pub mod tokens;
pub mod vendi;
pub mod words;

pub use compression::{compression_ratio, compression_ratio_pooled, gzip_len};
pub use distinct::{distinct_n, distinct_n_pooled};
pub use metric::{
    Compute, Family, GroupInput, Level, Metric, MetricValues, Needs, SampleInput, TraceInput,
};
pub use repetition::{repetition_4, repetition_n};
pub use self_bleu::{self_bleu, sentence_bleu};
pub use words::words;

/// Every metric, once. The order is the column order of `metrics_samples.csv` and
/// `metrics_groups.csv` and the metric order of `summary.csv`, `comparisons.csv` and the
/// report's tables.
pub static REGISTRY: &[Metric] = &[
    // per sample
    distinct::DISTINCT_1,
    distinct::DISTINCT_2,
    distinct::DISTINCT_3,
    repetition::REPETITION_4,
    compression::COMPRESSION_RATIO,
    nll::NLL_MEAN,
    nll::PERPLEXITY,
    reference::NLL_REF,
    reference::PERPLEXITY_REF,
    coherence::COHERENCE_EMBED,
    entropy_mean::ENTROPY_MEAN,
    entropy_mean::FINAL_ENTROPY_MEAN,
    reference::ENTROPY_REF,
    tokens::TOKENS,
    latency::FORWARD_MS_PER_TOKEN,
    latency::SAMPLER_US_PER_TOKEN,
    latency::SAMPLER_OVERHEAD_PCT,
    // per group
    self_bleu::SELF_BLEU_4,
    distinct::DISTINCT_1_POOLED,
    distinct::DISTINCT_2_POOLED,
    distinct::DISTINCT_3_POOLED,
    compression::COMPRESSION_RATIO_POOLED,
    diversity_embed::DIVERSITY_EMBED,
    vendi::DIVERSITY_VENDI,
    // a metric added as the README says, for tests only
    #[cfg(test)]
    example_kept_mean::EXAMPLE_KEPT_MEAN,
];

/// The registered metrics of one level, in registry order.
pub fn of_level(level: Level) -> impl Iterator<Item = &'static Metric> {
    REGISTRY.iter().filter(move |m| m.level() == level)
}

/// The metric named `name`.
pub fn find(name: &str) -> Option<&'static Metric> {
    REGISTRY.iter().find(|m| m.name == name)
}

/// Every per-sample metric's value for one sample.
pub fn sample_values(input: &SampleInput<'_>) -> MetricValues {
    let mut values = MetricValues::default();
    for m in of_level(Level::Sample) {
        values.set(m, m.of_sample(input));
    }
    values
}

/// Every per-group metric's value for one group.
pub fn group_values(input: &GroupInput<'_>) -> MetricValues {
    let mut values = MetricValues::default();
    for m in of_level(Level::Group) {
        values.set(m, m.of_group(input));
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Trace;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = REGISTRY.iter().map(|m| m.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(
            find("self_bleu_4").map(|m| (m.level(), m.higher_is_better)),
            Some((Level::Group, Some(false)))
        );
        assert!(find("nope").is_none());
    }

    /// A metric's declared needs are what its computation uses: without a trace (or without
    /// embeddings) exactly the metrics that need one are undefined.
    #[test]
    fn needs_are_what_the_computation_reads() {
        let trace = Trace {
            entropy: vec![1.0, 2.0],
            final_entropy: vec![0.5, 0.5],
            logprob: vec![-1.0, -2.0],
            kept: vec![3, 5],
            forward_ms: vec![10.0],
            sampler_us: vec![100.0, 300.0],
            ..Default::default()
        };
        let (p, t) = (vec![1.0f32, 0.0], vec![0.5f32, 0.5]);
        let reference = crate::record::RefScore {
            model: "ref".into(),
            entropy: vec![2.0],
            logprob: vec![-1.0],
            error: None,
        };
        let full = SampleInput::new("a b c d e")
            .with_trace(&trace, 2)
            .with_embeddings(Some(&p), Some(&t))
            .with_reference(Some(&reference));
        let text_only = SampleInput::new("a b c d e");
        for m in of_level(Level::Sample) {
            assert!(m.of_sample(&full).is_some(), "{}", m.name);
            let needs_more = m.needs.trace || m.needs.embedder || m.needs.reference;
            assert_eq!(m.of_sample(&text_only).is_none(), needs_more, "{}", m.name);
        }
        let texts = ["a b c d e", "a b c d f"];
        let embs = vec![vec![1.0f32, 0.0], vec![0.0, 1.0]];
        let full = GroupInput::new(&texts).with_embeddings(Some(&embs));
        let text_only = GroupInput::new(&texts);
        for m in of_level(Level::Group) {
            assert!(!m.needs.trace, "{}: a group has no trace", m.name);
            assert!(
                !m.needs.reference,
                "{}: a group has no reference score",
                m.name
            );
            assert!(m.of_group(&full).is_some(), "{}", m.name);
            assert_eq!(
                m.of_group(&text_only).is_none(),
                m.needs.embedder,
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn sample_values_are_keyed_by_name() {
        let trace = Trace {
            entropy: vec![1.0, 2.0, 3.0],
            final_entropy: vec![0.5, 0.5, 2.0],
            logprob: vec![-1.0, -2.0, -3.0],
            forward_ms: vec![10.0, 30.0],
            sampler_us: vec![100.0, 300.0, 200.0],
            ..Default::default()
        };
        let (p, t) = (vec![1.0f32, 0.0], vec![1.0f32, 0.0]);
        let v = sample_values(
            &SampleInput::new("a b a b")
                .with_trace(&trace, 3)
                .with_embeddings(Some(&p), Some(&t)),
        );
        assert_eq!(v.get("distinct_1"), Some(0.5));
        assert_eq!(v.get("distinct_2"), Some(2.0 / 3.0));
        assert_eq!(v.get("distinct_3"), Some(1.0));
        assert_eq!(v.get("repetition_4"), Some(0.0));
        assert_eq!(v.get("nll_mean"), Some(2.0));
        assert_eq!(v.get("coherence_embed"), Some(1.0));
        assert_eq!(v.get("entropy_mean"), Some(2.0));
        assert_eq!(v.get("final_entropy_mean"), Some(1.0));
        assert_eq!(v.get("tokens"), Some(3.0));
        assert_eq!(v.get("forward_ms_per_token"), Some(20.0));
        assert_eq!(v.get("sampler_us_per_token"), Some(200.0));
        // per-group metrics are not per-sample values
        assert_eq!(v.get("self_bleu_4"), None);

        let v = sample_values(&SampleInput::new(""));
        assert_eq!(v.get("distinct_1"), Some(0.0));
        for name in ["nll_mean", "perplexity", "coherence_embed", "tokens"] {
            assert_eq!(v.get(name), None, "{name}");
        }
        let empty = Trace::default();
        let v = sample_values(&SampleInput::new("x").with_trace(&empty, 0));
        assert_eq!(v.get("tokens"), Some(0.0));
        assert_eq!(v.get("nll_mean"), None);
        assert_eq!(v.get("forward_ms_per_token"), None);
    }

    #[test]
    fn group_values_of_identical_samples() {
        let texts = ["a b c d e", "a b c d e"];
        let embs = vec![vec![1.0f32, 0.0], vec![1.0, 0.0]];
        let v = group_values(&GroupInput::new(&texts).with_embeddings(Some(&embs)));
        assert!((v.get("self_bleu_4").unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(v.get("distinct_1_pooled"), Some(0.5));
        assert!(v.get("diversity_embed").unwrap().abs() < 1e-12);
        let single = group_values(&GroupInput::new(&["a b"]));
        assert_eq!(single.get("self_bleu_4"), None);
        assert_eq!(single.get("diversity_embed"), None);
    }
}
