//! Matched-pairs rank-biserial correlation, the effect size reported next
//! to the Wilcoxon signed-rank test.
//!
//! Definition (Kerby, 2014, "The simple difference formula"; King & Minium):
//! over the non-zero differences, ranked by `|d|` with average ranks for
//! ties exactly as in [`super::wilcoxon_signed_rank`],
//! `r = (W+ - W-) / (W+ + W-)`, where `W+ + W- = n(n+1)/2`. It lies in
//! `[-1, 1]`: `1` when every non-zero difference is positive, `-1` when
//! every one is negative. `0.0` when there is no non-zero difference. NaN
//! differences are ignored (like zeros).
//!
//! Reference: pingouin's `wilcoxon(...)["RBC"]` and R's
//! `effectsize::rank_biserial(paired = TRUE)` use the same formula.

use super::wilcoxon::signed_ranks;

/// Matched-pairs rank-biserial correlation `(W+ - W-) / (W+ + W-)` over the
/// non-zero differences; `0.0` when there is none.
pub fn rank_biserial(diffs: &[f64]) -> f64 {
    let (ranked, _) = signed_ranks(diffs);
    let (mut w_plus, mut w_minus) = (0.0, 0.0);
    for (rank, positive) in ranked {
        if positive {
            w_plus += rank;
        } else {
            w_minus += rank;
        }
    }
    let total = w_plus + w_minus;
    if total == 0.0 {
        0.0
    } else {
        (w_plus - w_minus) / total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_worked() {
        // |d| ranks: 0.5 -> 1, 1 -> 2, 2 -> 3, 3 -> 4; zero dropped.
        // W+ = 1 + 3 + 4 = 8, W- = 2: r = 6 / 10.
        assert!((rank_biserial(&[3.0, -1.0, 0.0, 2.0, 0.5]) - 0.6).abs() < 1e-15);
        // Ties: |1|,|-1| share 1.5; W+ = 1.5 + 3, W- = 1.5 -> 3 / 6.
        assert!((rank_biserial(&[1.0, -1.0, 2.0]) - 0.5).abs() < 1e-15);
        // Darwin's data (see wilcoxon tests): W+ = 96, W- = 24 -> 0.6.
        let d = [
            6.0, 8.0, 14.0, 16.0, 23.0, 24.0, 28.0, 29.0, 41.0, -48.0, 49.0, 56.0, 60.0, -67.0,
            75.0,
        ];
        assert!((rank_biserial(&d) - 0.6).abs() < 1e-15);
    }

    #[test]
    fn extremes_and_empty() {
        assert_eq!(rank_biserial(&[1.0, 2.0, 3.0]), 1.0);
        assert_eq!(rank_biserial(&[-1.0, -2.0]), -1.0);
        assert_eq!(rank_biserial(&[]), 0.0);
        assert_eq!(rank_biserial(&[0.0, 0.0]), 0.0);
        assert_eq!(rank_biserial(&[f64::NAN, 2.0]), 1.0);
    }

    proptest! {
        #[test]
        fn bounded_and_antisymmetric(d in prop::collection::vec(-1e3f64..1e3, 0..40)) {
            let r = rank_biserial(&d);
            let neg: Vec<f64> = d.iter().map(|x| -x).collect();
            prop_assert!((-1.0..=1.0).contains(&r));
            prop_assert!((r + rank_biserial(&neg)).abs() < 1e-12);
        }
    }
}
