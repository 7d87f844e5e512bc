//! Holm-Bonferroni step-down adjustment of p-values (Holm, 1979, "A Simple
//! Sequentially Rejective Multiple Test Procedure").
//!
//! Definition: with `m` p-values sorted ascending `p_(1) <= ... <= p_(m)`,
//! the adjusted value of the `k`-th smallest is
//! `min(1, max_{j <= k} (m - j + 1) p_(j))` (running maximum keeps the
//! adjusted values monotone in the raw ones); results are returned in the
//! input order. Rejecting the hypotheses whose adjusted p is `<= alpha`
//! controls the family-wise error rate at `alpha`.
//!
//! NaN inputs give NaN outputs at their positions; they still count in `m`
//! (the conservative choice) and are ordered after every other value.
//! Reference: `statsmodels.stats.multitest.multipletests(p,
//! method="holm")[1]` (checked against statsmodels 0.15.0) and R's
//! `p.adjust(p, "holm")`.

/// Holm-Bonferroni adjusted p-values, in the same order as `p_values`.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).filter(|&i| !p_values[i].is_nan()).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![f64::NAN; m];
    let mut running = 0.0f64;
    for (j, &i) in order.iter().enumerate() {
        let candidate = (m - j) as f64 * p_values[i];
        running = running.max(candidate);
        adjusted[i] = running.min(1.0);
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn assert_close(got: &[f64], expected: &[f64]) {
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-12, "{got:?} vs {expected:?}");
        }
    }

    #[test]
    fn hand_worked_example() {
        // m = 4; sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 gives
        // 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
        assert_close(&holm(&[0.01, 0.04, 0.03, 0.005]), &[0.03, 0.06, 0.06, 0.02]);
    }

    #[test]
    fn matches_statsmodels() {
        // statsmodels 0.15.0: multipletests(p, method="holm")[1]
        assert_close(
            &holm(&[0.2, 0.01, 0.9, 0.04, 0.04, 0.001]),
            &[0.4, 0.05, 0.9, 0.16, 0.16, 0.006],
        );
        assert_close(&holm(&[0.5]), &[0.5]);
        assert_close(
            &holm(&[0.3, 0.3, 0.3]),
            &[0.8999999999999999, 0.8999999999999999, 0.8999999999999999],
        );
        assert_close(
            &holm(&[0.02, 0.015, 0.6, 0.01, 0.035]),
            &[0.06, 0.06, 0.6, 0.05, 0.07],
        );
    }

    #[test]
    fn caps_at_one_and_handles_edge_cases() {
        assert_close(&holm(&[0.6, 0.7]), &[1.0, 1.0]);
        assert!(holm(&[]).is_empty());
        let r = holm(&[0.01, f64::NAN, 0.02]);
        // m = 3 including the NaN: 0.01 * 3, max(0.03, 0.02 * 2).
        assert!(r[1].is_nan());
        assert_close(&[r[0], r[2]], &[0.03, 0.04]);
    }

    proptest! {
        #[test]
        fn adjusted_between_raw_and_one_and_monotone(
            p in prop::collection::vec(0.0f64..=1.0, 0..30)
        ) {
            let adj = holm(&p);
            prop_assert_eq!(adj.len(), p.len());
            for (a, raw) in adj.iter().zip(&p) {
                prop_assert!(*a >= *raw && *a <= 1.0);
            }
            for i in 0..p.len() {
                for j in 0..p.len() {
                    if p[i] <= p[j] {
                        prop_assert!(adj[i] <= adj[j]);
                    }
                }
            }
        }
    }
}
