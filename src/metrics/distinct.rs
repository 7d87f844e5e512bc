//! Distinct-n: the share of unique word n-grams (Li et al., 2016,
//! "A Diversity-Promoting Objective Function for Neural Conversation
//! Models").
//!
//! Definitions, over words from [`crate::metrics::words()`]:
//! - [`distinct_n`]: `|set of n-grams of the sample| / (number of n-grams of
//!   the sample)`, where a sample of `L` words has `L - n + 1` n-grams.
//! - [`distinct_n_pooled`]: the same for a whole group of samples: n-grams
//!   are taken inside each sample (never across a sample boundary), the
//!   numerator is the number of unique n-grams in the union over all samples
//!   and the denominator the total n-gram count over all samples.
//!
//! Both return `0.0` when there is no n-gram at all (every sample shorter
//! than `n` words, or `n == 0`). Reference: the common Python
//! implementation `len(set(ngrams)) / len(ngrams)` with `ngrams` built by
//! `zip(*[words[i:] for i in range(n)])` per sample.
//!
//! Metrics: `distinct_{1,2,3}` per sample ([`DISTINCT_1`]...) and
//! `distinct_{1,2,3}_pooled` per group ([`DISTINCT_1_POOLED`]...), one name
//! per n.

use std::collections::HashSet;

use super::metric::{Compute, Family, GroupInput, Metric, Needs, SampleInput};

pub const DISTINCT_1: Metric = per_sample::<1>();
pub const DISTINCT_2: Metric = per_sample::<2>();
pub const DISTINCT_3: Metric = per_sample::<3>();
pub const DISTINCT_1_POOLED: Metric = pooled::<1>();
pub const DISTINCT_2_POOLED: Metric = pooled::<2>();
pub const DISTINCT_3_POOLED: Metric = pooled::<3>();

const fn per_sample<const N: usize>() -> Metric {
    Metric {
        name: ["distinct_1", "distinct_2", "distinct_3"][N - 1],
        family: Family::Diversity,
        higher_is_better: Some(true),
        unit: "fraction",
        needs: Needs::TEXT,
        description: [
            "unique words / words",
            "unique word bigrams / bigrams",
            "unique word trigrams / trigrams",
        ][N - 1],
        compute: Compute::Sample(of_sample::<N>),
    }
}

fn of_sample<const N: usize>(s: &SampleInput<'_>) -> Option<f64> {
    Some(distinct_n(&s.words, N))
}

const fn pooled<const N: usize>() -> Metric {
    Metric {
        name: [
            "distinct_1_pooled",
            "distinct_2_pooled",
            "distinct_3_pooled",
        ][N - 1],
        family: Family::Diversity,
        higher_is_better: Some(true),
        unit: "fraction",
        needs: Needs::TEXT,
        description: [
            "distinct_1 over the group's samples together",
            "distinct_2 over the group's samples together",
            "distinct_3 over the group's samples together",
        ][N - 1],
        compute: Compute::Group(of_group::<N>),
    }
}

fn of_group<const N: usize>(g: &GroupInput<'_>) -> Option<f64> {
    Some(distinct_n_pooled(&g.words, N))
}

/// Unique word n-grams / total word n-grams of one sample; `0.0` when the
/// sample has no n-gram (fewer than `n` words, or `n == 0`).
pub fn distinct_n(words: &[&str], n: usize) -> f64 {
    distinct_n_pooled_iter(std::iter::once(words), n)
}

/// Distinct-n over all samples of a group together: unique n-grams over the
/// union / total n-gram count over all samples. N-grams never cross sample
/// boundaries. `0.0` when no sample has an n-gram.
pub fn distinct_n_pooled(samples: &[Vec<&str>], n: usize) -> f64 {
    distinct_n_pooled_iter(samples.iter().map(Vec::as_slice), n)
}

fn distinct_n_pooled_iter<'a, 'w: 'a>(
    samples: impl Iterator<Item = &'a [&'w str]>,
    n: usize,
) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let mut unique: HashSet<&[&str]> = HashSet::new();
    let mut total = 0usize;
    for sample in samples {
        // `windows` yields nothing when the sample is shorter than `n`.
        for gram in sample.windows(n) {
            unique.insert(gram);
            total += 1;
        }
    }
    if total == 0 {
        0.0
    } else {
        unique.len() as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn each_n_has_its_name_and_computes_with_its_n() {
        for (m, n) in [(DISTINCT_1, 1), (DISTINCT_2, 2), (DISTINCT_3, 3)] {
            assert_eq!(m.name, format!("distinct_{n}"));
            let s = SampleInput::new("a b a b c");
            assert_eq!(m.of_sample(&s), Some(distinct_n(&s.words, n)));
        }
        for (m, n) in [
            (DISTINCT_1_POOLED, 1),
            (DISTINCT_2_POOLED, 2),
            (DISTINCT_3_POOLED, 3),
        ] {
            assert_eq!(m.name, format!("distinct_{n}_pooled"));
            let g = GroupInput::new(&["a b c", "a b d"]);
            assert_eq!(m.of_group(&g), Some(distinct_n_pooled(&g.words, n)));
        }
    }

    #[test]
    fn single_sample_values() {
        // unigrams: a b a b c -> {a,b,c} / 5
        assert_eq!(distinct_n(&w("a b a b c"), 1), 3.0 / 5.0);
        // bigrams: ab ba ab bc -> 3 / 4
        assert_eq!(distinct_n(&w("a b a b c"), 2), 3.0 / 4.0);
        assert_eq!(distinct_n(&w("a a a a"), 1), 0.25);
        assert_eq!(distinct_n(&w("a b c d"), 4), 1.0);
    }

    #[test]
    fn no_ngram_gives_zero() {
        assert_eq!(distinct_n(&[], 1), 0.0);
        assert_eq!(distinct_n(&w("a b"), 3), 0.0);
        assert_eq!(distinct_n(&w("a b"), 0), 0.0);
        assert_eq!(distinct_n_pooled(&[], 2), 0.0);
        assert_eq!(distinct_n_pooled(&[w("a"), w("")], 2), 0.0);
    }

    #[test]
    fn case_sensitive() {
        assert_eq!(distinct_n(&w("The the"), 1), 1.0);
    }

    #[test]
    fn pooled_counts_union_and_total() {
        // bigrams: s1 {ab, bc}, s2 {ab, bd} -> unique {ab, bc, bd} = 3, total 4
        let samples = vec![w("a b c"), w("a b d")];
        assert_eq!(distinct_n_pooled(&samples, 2), 0.75);
    }

    #[test]
    fn pooled_does_not_cross_sample_boundaries() {
        // If joined, "a b" + "c" would create the bigram (b, c); it must not.
        let samples = vec![w("a b"), w("c")];
        assert_eq!(distinct_n_pooled(&samples, 2), 1.0);
        let samples = vec![w("x"), w("y")];
        assert_eq!(distinct_n_pooled(&samples, 2), 0.0);
    }

    #[test]
    fn pooled_of_one_sample_equals_single() {
        let s = w("a b a b c a b");
        for n in 1..5 {
            assert_eq!(
                distinct_n_pooled(std::slice::from_ref(&s), n),
                distinct_n(&s, n)
            );
        }
    }
}
