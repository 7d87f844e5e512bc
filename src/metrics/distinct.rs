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

use std::collections::HashSet;

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
