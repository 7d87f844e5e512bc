//! Self-BLEU (Zhu et al., 2018, "Texygen"): how similar each sample of a
//! group is to the other samples (higher = less diverse).
//!
//! Definition: for a group of `k >= 2` samples (word lists from
//! [`crate::metrics::words()`]), each sample in turn is the hypothesis and the
//! other `k - 1` samples are its references; the score is the mean over the
//! `k` samples of [`sentence_bleu`] with uniform weights `1 / max_n`
//! (declab uses `max_n = 4`).
//!
//! [`sentence_bleu`] reproduces NLTK's
//! `nltk.translate.bleu_score.sentence_bleu(references, hypothesis,
//! weights=(1/max_n,)*max_n, smoothing_function=SmoothingFunction().method1)`
//! (checked against NLTK 3.10.4) step by step:
//! - modified precision `p_n = clipped / max(1, total)`: hypothesis n-gram
//!   counts clipped by the maximum count of that n-gram in any single
//!   reference; `total` is the hypothesis n-gram count (0 when the
//!   hypothesis is shorter than `n`, hence the `max(1, _)`);
//! - if the unigram numerator is 0 (including an empty hypothesis) the score
//!   is exactly `0.0`, before any smoothing;
//! - method1 smoothing: a precision whose numerator is 0 becomes
//!   `0.1 / denominator` (epsilon 0.1);
//! - brevity penalty with `r` = the reference length closest to the
//!   hypothesis length `c`, ties going to the shorter reference:
//!   `1` if `c > r`, `0` if `c == 0`, else `exp(1 - r / c)`;
//! - `BLEU = BP * exp(sum_n (1/max_n) * ln p_n)`.

use std::collections::HashMap;

use super::metric::{Compute, Family, Metric, Needs};

/// `self_bleu_4`: [`self_bleu()`] with `max_n = 4` over a group; needs at least 2 samples.
pub const SELF_BLEU_4: Metric = Metric {
    name: "self_bleu_4",
    family: Family::Diversity,
    higher_is_better: Some(false),
    unit: "BLEU (0-1)",
    needs: Needs::TEXT,
    description: "mean BLEU-4 of each sample against the others (NLTK method1)",
    compute: Compute::Group(|g| self_bleu(&g.words, 4)),
};

type Counts<'a> = HashMap<&'a [&'a str], usize>;

fn ngram_counts<'a>(words: &'a [&'a str], n: usize) -> Counts<'a> {
    let mut counts = HashMap::new();
    // `windows` yields nothing when the sample is shorter than `n`.
    for gram in words.windows(n) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

/// Per-sample n-gram counts for n = 1..=max_n (index `n - 1`).
fn all_counts<'a>(words: &'a [&'a str], max_n: usize) -> Vec<Counts<'a>> {
    (1..=max_n).map(|n| ngram_counts(words, n)).collect()
}

/// BLEU of `hyp` given precomputed n-gram counts of the hypothesis and of
/// each reference (and their lengths).
fn bleu_from_counts(
    hyp_len: usize,
    hyp_counts: &[Counts<'_>],
    refs: &[(usize, &[Counts<'_>])],
    max_n: usize,
) -> f64 {
    let mut numerators = Vec::with_capacity(max_n);
    let mut denominators = Vec::with_capacity(max_n);
    for (i, hyp_c) in hyp_counts.iter().enumerate() {
        let mut clipped = 0usize;
        let mut total = 0usize;
        for (gram, &count) in hyp_c {
            let max_ref = refs
                .iter()
                .map(|(_, rc)| rc[i].get(gram).copied().unwrap_or(0))
                .max()
                .unwrap_or(0);
            clipped += count.min(max_ref);
            total += count;
        }
        numerators.push(clipped);
        denominators.push(total.max(1));
    }
    // NLTK: no matching unigram (this covers the empty hypothesis) -> 0.
    if numerators.first().copied().unwrap_or(0) == 0 {
        return 0.0;
    }
    // Closest reference length; ties broken towards the shorter reference.
    let closest = refs
        .iter()
        .map(|&(len, _)| len)
        .min_by_key(|&len| (len.abs_diff(hyp_len), len))
        .unwrap_or(0);
    let bp = if hyp_len > closest {
        1.0
    } else if hyp_len == 0 {
        0.0
    } else {
        (1.0 - closest as f64 / hyp_len as f64).exp()
    };
    let weight = 1.0 / max_n as f64;
    let log_sum: f64 = numerators
        .iter()
        .zip(&denominators)
        .map(|(&num, &den)| {
            // method1: epsilon = 0.1 added to zero numerators.
            let p = if num == 0 {
                0.1 / den as f64
            } else {
                num as f64 / den as f64
            };
            weight * p.ln()
        })
        .sum();
    bp * log_sum.exp()
}

/// Sentence BLEU of `hypothesis` against `references` with uniform weights
/// `1 / max_n` and NLTK's smoothing method1 (see the module docs).
///
/// `None` when there is no reference or `max_n == 0` (NLTK raises there).
pub fn sentence_bleu(references: &[&[&str]], hypothesis: &[&str], max_n: usize) -> Option<f64> {
    if references.is_empty() || max_n == 0 {
        return None;
    }
    let hyp_counts = all_counts(hypothesis, max_n);
    let ref_counts: Vec<Vec<Counts<'_>>> =
        references.iter().map(|r| all_counts(r, max_n)).collect();
    let refs: Vec<(usize, &[Counts<'_>])> = references
        .iter()
        .zip(&ref_counts)
        .map(|(r, c)| (r.len(), c.as_slice()))
        .collect();
    Some(bleu_from_counts(
        hypothesis.len(),
        &hyp_counts,
        &refs,
        max_n,
    ))
}

/// Self-BLEU of a group: the mean over samples of [`sentence_bleu`] of each
/// sample against all the other samples. `None` when there are fewer than
/// two samples or `max_n == 0`.
pub fn self_bleu(samples: &[Vec<&str>], max_n: usize) -> Option<f64> {
    if samples.len() < 2 || max_n == 0 {
        return None;
    }
    let counts: Vec<Vec<Counts<'_>>> = samples.iter().map(|s| all_counts(s, max_n)).collect();
    let mut total = 0.0;
    for (i, sample) in samples.iter().enumerate() {
        let refs: Vec<(usize, &[Counts<'_>])> = samples
            .iter()
            .zip(&counts)
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, (s, c))| (s.len(), c.as_slice()))
            .collect();
        total += bleu_from_counts(sample.len(), &counts[i], &refs, max_n);
    }
    Some(total / samples.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(texts: &[&'static str]) -> Vec<Vec<&'static str>> {
        texts
            .iter()
            .map(|t| t.split_whitespace().collect())
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Expected values computed with NLTK 3.10.4 (Python 3.11.7):
    /// mean over i of `sentence_bleu([s_j for j != i], s_i,
    /// weights=(0.25,)*4, smoothing_function=SmoothingFunction().method1)`
    /// with `s = [t.split() for t in texts]`.
    const NLTK_SELF_BLEU: &[(&str, &[&str], f64)] = &[
        (
            "identical",
            &[
                "the cat sat on the mat",
                "the cat sat on the mat",
                "the cat sat on the mat",
            ],
            1.0,
        ),
        ("disjoint", &["a b c d e", "f g h i j", "k l m n o"], 0.0),
        (
            "short",
            &["the cat", "the dog", "a cat"],
            0.15896589908271216,
        ),
        (
            "with_empty",
            &[
                "the cat sat on the mat today",
                "",
                "the dog sat on the log today",
            ],
            0.12383371999422399,
        ),
        (
            "repeated_words",
            &[
                "the the the the the the",
                "the cat the cat the cat",
                "cat cat the the",
            ],
            0.11661380628129832,
        ),
        (
            "partial_overlap",
            &[
                "the quick brown fox jumps over the lazy dog",
                "a quick brown dog jumps over the lazy fox",
                "the slow brown fox walks past the lazy dog",
                "quick quick fox",
            ],
            0.2592494482866194,
        ),
        (
            "length_tie",
            &["a b c d e", "a b c", "a b c d e f g"],
            0.6345012720144877,
        ),
        (
            "two_samples",
            &[
                "I like green apples and red pears",
                "I like red apples and green pears very much",
            ],
            0.08393575272463369,
        ),
        ("single_words", &["x", "x", "y"], 0.11855196066926153),
        ("all_empty", &["", ""], 0.0),
        ("case", &["The Cat sat", "the cat sat"], 0.11362193664674995),
    ];

    #[test]
    fn self_bleu_matches_nltk() {
        for &(name, texts, expected) in NLTK_SELF_BLEU {
            let got = self_bleu(&group(texts), 4);
            assert!(
                got.is_some_and(|g| close(g, expected)),
                "{name}: got {got:?}, NLTK {expected}"
            );
        }
    }

    #[test]
    fn sentence_bleu_matches_nltk() {
        // NLTK 3.10.4, method1 smoothing, default weights unless noted.
        let h: &[&str] = &["a", "b", "c"];
        let refs: &[&[&str]] = &[&["a", "b", "c", "d"], &["a", "b"]];
        let got = sentence_bleu(refs, h, 4);
        assert!(got.is_some_and(|g| close(g, 0.5623413251903491)), "{got:?}");

        let h: &[&str] = &["a", "b", "c", "d", "e", "f", "g", "h"];
        let refs: &[&[&str]] = &[&["a", "b", "c", "d", "e", "f"]];
        let got = sentence_bleu(refs, h, 4);
        assert!(got.is_some_and(|g| close(g, 0.6803749333171202)), "{got:?}");

        let h: &[&str] = &["a", "b", "c", "z"];
        let refs: &[&[&str]] = &[&["x", "y"], &["a", "b", "c", "d", "e"]];
        let got = sentence_bleu(refs, h, 4);
        assert!(got.is_some_and(|g| close(g, 0.3096787331587729)), "{got:?}");

        // weights=(0.5, 0.5)
        let h: &[&str] = &["a", "b", "x", "c", "d"];
        let refs: &[&[&str]] = &[&["a", "b", "c", "d"]];
        let got = sentence_bleu(refs, h, 2);
        assert!(got.is_some_and(|g| close(g, 0.6324555320336759)), "{got:?}");
    }

    #[test]
    fn undefined_cases_are_none() {
        assert_eq!(self_bleu(&group(&["a b c"]), 4), None);
        assert_eq!(self_bleu(&[], 4), None);
        assert_eq!(self_bleu(&group(&["a", "a"]), 0), None);
        assert_eq!(sentence_bleu(&[], &["a"], 4), None);
    }

    #[test]
    fn empty_hypothesis_scores_zero() {
        let refs: &[&[&str]] = &[&["a", "b"]];
        assert_eq!(sentence_bleu(refs, &[], 4), Some(0.0));
    }

    #[test]
    fn order_of_samples_does_not_matter() {
        let a = self_bleu(&group(&["a b c d", "b c d e", "a b x d e"]), 4);
        let b = self_bleu(&group(&["a b x d e", "a b c d", "b c d e"]), 4);
        assert!(matches!((a, b), (Some(x), Some(y)) if close(x, y)));
    }
}
