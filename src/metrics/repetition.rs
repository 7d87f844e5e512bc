//! Sequence-level repetition, seq-rep-n (Welleck et al., 2020, "Neural Text
//! Generation with Unlikelihood Training", section 6: `seq-rep-4`).
//!
//! Definition: `seq-rep-n(x) = 1 - |unique n-grams(x)| / |n-grams(x)|`, i.e.
//! `1 - distinct_n(words, n)`, over words from [`crate::metrics::words()`];
//! `0.0` when the sample has no n-gram (fewer than `n` words, or `n == 0`)
//! instead of the undefined `1 - 0/0`. Reference: the paper's definition,
//! computed in Python as `1.0 - len(set(grams)) / len(grams)` over one
//! continuation; here over whitespace words rather than model tokens.

use super::distinct::distinct_n;
use super::metric::{Compute, Family, Metric, Needs};

/// `repetition_4`: seq-rep-4 of one sample.
pub const REPETITION_4: Metric = Metric {
    name: "repetition_4",
    family: Family::Diversity,
    higher_is_better: Some(false),
    unit: "fraction",
    needs: Needs::TEXT,
    description: "1 - distinct_4 (seq-rep-4, Welleck et al. 2020)",
    compute: Compute::Sample(|s| Some(repetition_4(&s.words))),
};

/// seq-rep-4: `1 - distinct_n(words, 4)`, or `0.0` when there is no 4-gram.
pub fn repetition_4(words: &[&str]) -> f64 {
    repetition_n(words, 4)
}

/// seq-rep-n: `1 - distinct_n(words, n)`, or `0.0` when there is no n-gram.
pub fn repetition_n(words: &[&str], n: usize) -> f64 {
    if n == 0 || words.len() < n {
        return 0.0;
    }
    1.0 - distinct_n(words, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn no_repeats_is_zero() {
        assert_eq!(repetition_4(&w("a b c d e f")), 0.0);
    }

    #[test]
    fn repeated_fourgrams() {
        // 4-grams: abcd bcda cdab dabc abcd -> 4 unique of 5 -> 1 - 0.8
        let r = repetition_4(&w("a b c d a b c d"));
        assert!((r - 0.2).abs() < 1e-15);
        // all the same word: 7 four-grams, 1 unique
        let r = repetition_4(&w("x x x x x x x x x x"));
        assert!((r - (1.0 - 1.0 / 7.0)).abs() < 1e-15);
    }

    #[test]
    fn short_sample_is_zero() {
        assert_eq!(repetition_4(&w("a a a")), 0.0);
        assert_eq!(repetition_4(&[]), 0.0);
        assert_eq!(repetition_n(&w("a a"), 0), 0.0);
    }
}
