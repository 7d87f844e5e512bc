//! Wilcoxon signed-rank test (two-sided) on paired differences.
//!
//! Definition (Wilcoxon, 1945; Hollander & Wolfe, "Nonparametric Statistical
//! Methods", ch. 3):
//! - zero differences are dropped (Wilcoxon's "wilcox" zero method); `n_used`
//!   is the number of non-zero differences;
//! - the `|d_i|` are ranked 1..=n_used, tied magnitudes getting the average
//!   of their ranks; `W+` is the sum of the ranks of positive differences;
//! - exact p-value when `n_used <= 25`, ties or not: the null distribution of
//!   `W+` conditional on the observed (mid)ranks (each of the `2^n` sign
//!   patterns equally likely) is counted exactly by dynamic programming over
//!   the doubled ranks, which are integers even when ties average them, and
//!   `p = min(1, 2 * min(P(W+ <= w), P(W+ >= w)))`. Without ties this is the
//!   classical exact distribution; with ties it is the permutation
//!   distribution that SciPy's `method=PermutationMethod()` enumerates. The
//!   normal approximation is not used there: with ties at small `n` it is too
//!   liberal (all differences positive and tied: 0.072 at n = 4 where the
//!   exact p is 0.125);
//! - otherwise the normal approximation with tie and continuity corrections:
//!   `mu = n(n+1)/4`, `sigma^2 = (n(n+1)(2n+1) - sum_t (t^3 - t)/2) / 24`
//!   over tie groups of size `t`, `z = (W+ - mu - 0.5 sign(W+ - mu)) /
//!   sigma`, `p = 2 (1 - Phi(|z|))`;
//! - all differences zero (`n_used == 0`): `W+ = 0`, `p = 1.0`, `Exact`.
//!
//! Reference: `scipy.stats.wilcoxon(d, zero_method="wilcox",
//! correction=True, method=...)` (checked against SciPy 1.17.1) with
//! `method="exact"` for the exact branch without ties,
//! `method=PermutationMethod(n_resamples=inf)` for it with ties and zeros (a
//! committed table, `tests/fixtures/stats/wilcoxon_ties.json`, made by
//! `scripts/reference/wilcoxon_ties.py`) and `method="asymptotic"` for the
//! normal branch. SciPy's own `method="auto"` switches to its normal branch
//! above n = 50; this module's switch point is fixed at 25. SciPy reports
//! `min(W+, W-)` as its statistic; this module reports `W+`.

use super::StatsError;

/// Largest `n_used` for which the exact null distribution is used.
pub const EXACT_MAX_N: usize = 25;

/// How the p-value of a [`WilcoxonResult`] was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WilcoxonMethod {
    /// Exact null distribution of `W+` over the observed ranks (`n_used <= 25`).
    Exact,
    /// Normal approximation with tie and continuity corrections.
    Normal,
}

/// Result of [`wilcoxon_signed_rank`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WilcoxonResult {
    /// Sum of the ranks of the positive differences.
    pub statistic_w_plus: f64,
    /// Number of non-zero differences (the ones ranked).
    pub n_used: usize,
    /// Two-sided p-value, in `[0, 1]`.
    pub p_value: f64,
    /// Exact or normal approximation.
    pub method: WilcoxonMethod,
    /// The smallest two-sided p-value these differences' magnitudes allow (every sign the
    /// same): what the test can reach on this data at best, zeros and ties included.
    pub min_attainable_p: f64,
}

/// Signed ranks of the non-zero, non-NaN `diffs`: `(rank, is_positive)` for
/// each, plus the sizes of the tie groups (groups of size >= 2 only).
/// Ranks are 1-based with ties averaged.
pub(crate) fn signed_ranks(diffs: &[f64]) -> (Vec<(f64, bool)>, Vec<usize>) {
    let mut nonzero: Vec<(f64, bool)> = diffs
        .iter()
        .filter(|d| **d != 0.0 && !d.is_nan())
        .map(|&d| (d.abs(), d > 0.0))
        .collect();
    nonzero.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut ranked = Vec::with_capacity(nonzero.len());
    let mut ties = Vec::new();
    let mut i = 0;
    while i < nonzero.len() {
        let mut j = i + 1;
        while j < nonzero.len() && nonzero[j].0 == nonzero[i].0 {
            j += 1;
        }
        // Positions i..j (0-based) share the average of ranks i+1..=j.
        let avg = (i + 1 + j) as f64 / 2.0;
        ranked.extend(nonzero[i..j].iter().map(|&(_, pos)| (avg, pos)));
        if j - i > 1 {
            ties.push(j - i);
        }
        i = j;
    }
    (ranked, ties)
}

/// Number of sign patterns giving each value of `2 W+` for the doubled ranks
/// `ranks2` (`2 * rank`, integers even for averaged ties): `counts[w]` for `w`
/// in `0..=sum(ranks2)`; the counts sum to `2^n`.
fn exact_counts_doubled(ranks2: &[usize]) -> Vec<u64> {
    let max: usize = ranks2.iter().sum();
    let mut counts = vec![0u64; max + 1];
    counts[0] = 1;
    let mut reach = 0;
    for &r in ranks2 {
        reach += r;
        // Adding this rank with a positive sign shifts the distribution.
        for w in (r..=reach).rev() {
            counts[w] += counts[w - r];
        }
    }
    counts
}

/// The classical counts for ranks 1..=n, indexed by `W+` (tests and tables).
#[cfg(test)]
fn exact_counts(n: usize) -> Vec<u64> {
    let ranks2: Vec<usize> = (1..=n).map(|r| 2 * r).collect();
    exact_counts_doubled(&ranks2)
        .into_iter()
        .step_by(2)
        .collect()
}

/// Two-sided exact p of an observed `2 W+` from the counts of [`exact_counts_doubled`].
fn exact_p(counts: &[u64], w2: usize) -> f64 {
    let total: u64 = counts.iter().sum();
    let w = w2.min(counts.len() - 1);
    let le: u64 = counts[..=w].iter().sum();
    let ge: u64 = counts[w..].iter().sum();
    (2.0 * le.min(ge) as f64 / total as f64).min(1.0)
}

/// Complementary error function, accurate to about 1e-13 relative and
/// 5e-16 absolute for every `x` (checked against CPython's `math.erfc`).
///
/// `x < 2`: `1 - erf(x)` with the all-positive series
/// `erf(x) = 2/sqrt(pi) e^(-x^2) sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))`
/// (Abramowitz & Stegun 7.1.6); `x >= 2`: the continued fraction
/// `erfc(x) = e^(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`
/// (A&S 7.1.14) by the modified Lentz method. `statrs`' `erfc` is not used
/// because it is only accurate to about 1e-10 relative in this range.
fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    let two_over_sqrt_pi = std::f64::consts::FRAC_2_SQRT_PI;
    if x < 2.0 {
        let (mut term, mut sum) = (x, x);
        for n in 1..=200 {
            term *= 2.0 * x * x / f64::from(2 * n + 1);
            sum += term;
            if term <= sum * 1e-17 {
                break;
            }
        }
        1.0 - two_over_sqrt_pi * (-x * x).exp() * sum
    } else {
        const TINY: f64 = 1e-300;
        let (mut f, mut c, mut d) = (x, x, 0.0f64);
        for k in 1..=1000 {
            let a = f64::from(k) / 2.0;
            d = x + a * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = x + a / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-x * x).exp() * two_over_sqrt_pi / (2.0 * f)
    }
}

/// Standard normal upper tail `1 - Phi(z)`.
fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Two-sided Wilcoxon signed-rank test of the paired differences `diffs`
/// against a zero median (see the module docs). Errors on empty input or a
/// NaN/infinite difference.
pub fn wilcoxon_signed_rank(diffs: &[f64]) -> Result<WilcoxonResult, StatsError> {
    super::Sample::new(diffs)?;
    let (ranked, ties) = signed_ranks(diffs);
    let n = ranked.len();
    let w_plus: f64 = ranked.iter().filter(|r| r.1).map(|r| r.0).sum();
    // every sign positive: the most extreme W+ these magnitudes allow (ties or not)
    let w_max = (n * (n + 1)) as f64 / 2.0;
    let (p_value, min_attainable_p, method) = if n == 0 {
        (1.0, 1.0, WilcoxonMethod::Exact)
    } else if n <= EXACT_MAX_N {
        // Ranks are multiples of 1/2, so the doubled ranks and 2 W+ are exact integers.
        let ranks2: Vec<usize> = ranked
            .iter()
            .map(|r| (2.0 * r.0).round() as usize)
            .collect();
        let counts = exact_counts_doubled(&ranks2);
        let p = exact_p(&counts, (2.0 * w_plus).round() as usize);
        (p, exact_p(&counts, counts.len() - 1), WilcoxonMethod::Exact)
    } else {
        let p = |w: f64| normal_p(w, n, &ties);
        (p(w_plus), p(w_max), WilcoxonMethod::Normal)
    };
    Ok(WilcoxonResult {
        statistic_w_plus: w_plus,
        n_used: n,
        p_value,
        method,
        min_attainable_p,
    })
}

/// Two-sided p of `W+ = w_plus` by the normal approximation with tie and continuity
/// corrections (see the module docs).
fn normal_p(w_plus: f64, n: usize, ties: &[usize]) -> f64 {
    let nf = n as f64;
    let mean = nf * (nf + 1.0) / 4.0;
    let tie_term: f64 = ties
        .iter()
        .map(|&t| {
            let t = t as f64;
            t * t * t - t
        })
        .sum();
    let sd = ((nf * (nf + 1.0) * (2.0 * nf + 1.0) - tie_term / 2.0) / 24.0).sqrt();
    let dev = w_plus - mean;
    // Continuity correction towards the mean; none when W+ equals the mean.
    let corrected = if dev > 0.0 {
        dev - 0.5
    } else if dev < 0.0 {
        dev + 0.5
    } else {
        0.0
    };
    (2.0 * normal_sf((corrected / sd).abs())).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(d: &[f64]) -> WilcoxonResult {
        wilcoxon_signed_rank(d).expect("valid input")
    }

    fn check(d: &[f64], w_plus: f64, n: usize, p: f64, method: WilcoxonMethod) {
        let r = run(d);
        assert_eq!(r.statistic_w_plus, w_plus, "{d:?}");
        assert_eq!(r.n_used, n, "{d:?}");
        assert_eq!(r.method, method, "{d:?}");
        assert!((r.p_value - p).abs() < 1e-12, "{d:?}: {} vs {p}", r.p_value);
    }

    #[test]
    fn textbook_darwin_zea_mays() {
        // Darwin's Zea mays cross- vs self-fertilised height differences
        // (Fisher, "The Design of Experiments", 1935, ch. III; also the
        // example in SciPy's `wilcoxon` docs): W- = 24, exact two-sided
        // p = 2 * 676 / 32768 = 0.041259765625 (SciPy 1.17.1 agrees).
        let d = [
            6.0, 8.0, 14.0, 16.0, 23.0, 24.0, 28.0, 29.0, 41.0, -48.0, 49.0, 56.0, 60.0, -67.0,
            75.0,
        ];
        check(&d, 96.0, 15, 0.041259765625, WilcoxonMethod::Exact);
    }

    #[test]
    fn matches_scipy() {
        // Expected values from SciPy 1.17.1:
        // scipy.stats.wilcoxon(d, zero_method="wilcox", correction=True,
        //                      method=M).pvalue, with M as noted.
        use WilcoxonMethod::{Exact, Normal};
        // M="exact"; the two zeros are dropped.
        check(
            &[0.0, 1.5, -2.0, 3.0, 4.5, 0.0, 6.0, -0.5, 7.0],
            24.0,
            7,
            0.109375,
            Exact,
        );
        // d_i = (i+1) * (-1 if i % 3 == 0 else 1), i in 0..25 (M="exact")
        // and i in 0..26 (M="asymptotic").
        let d: Vec<f64> = (0..26)
            .map(|i| (i + 1) as f64 * if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        check(&d[..25], 208.0, 25, 0.23036134243011475, Exact);
        check(&d, 234.0, 26, 0.14072874277056632, Normal);
        // Ties at small n -> exact over the midranks (M=PermutationMethod(n_resamples=inf);
        // M="asymptotic" gave 0.6352893188352069): the 10-pair example of Wikipedia's
        // "Wilcoxon signed-rank test" (W = W+ - W- = 27 - 18 = 9).
        check(
            &[15.0, -7.0, 5.0, 20.0, 0.0, -9.0, 17.0, -12.0, 5.0, -10.0],
            27.0,
            9,
            0.6328125,
            Exact,
        );
        // d_i = ((7 i) % 11 - 5) / 2, i in 0..40: 3 zeros, many ties (M="asymptotic").
        let d: Vec<f64> = (0..40)
            .map(|i| (((i * 7) % 11) as f64 - 5.0) * 0.5)
            .collect();
        check(&d, 357.0, 37, 0.939582544280286, Normal);
        // W+ equals its mean after tie averaging: p = 1 (M=PermutationMethod).
        check(&[1.0, -1.0, 2.0, -2.0, 0.5], 8.0, 5, 1.0, Exact);
        check(&[-1.0, -2.0, -3.0, -4.0, -5.0], 0.0, 5, 0.0625, Exact);
        check(&[3.0], 1.0, 1, 1.0, Exact);
    }

    #[test]
    fn published_critical_values_two_sided_005() {
        // Two-sided alpha = 0.05 critical values of T = min(W+, W-) for
        // n = 6..=25, from the standard published table (as in Zar,
        // "Biostatistical Analysis", appendix; SciPy 1.17.1's exact test
        // gives the same):
        // T <= crit is significant, T = crit + 1 is not.
        let crit = [
            0, 2, 3, 5, 8, 10, 13, 17, 21, 25, 29, 34, 40, 46, 52, 58, 65, 73, 81, 89,
        ];
        for (k, &c) in crit.iter().enumerate() {
            let n = k + 6;
            for (t, significant) in [(c, true), (c + 1, false)] {
                // Negative signs on a set of ranks summing to t (greedy).
                let mut rem = t;
                let mut d = vec![0.0; n];
                for r in (1..=n).rev() {
                    let neg = r <= rem;
                    if neg {
                        rem -= r;
                    }
                    d[r - 1] = if neg { -(r as f64) } else { r as f64 };
                }
                let res = run(&d);
                assert_eq!(res.method, WilcoxonMethod::Exact);
                let w_minus = (n * (n + 1) / 2) as f64 - res.statistic_w_plus;
                assert_eq!(w_minus, t as f64);
                assert_eq!(
                    res.p_value <= 0.05,
                    significant,
                    "n={n} T={t} p={}",
                    res.p_value
                );
            }
        }
    }

    /// Exact under ties and zeros: SciPy's exact permutation p-values on a committed table of
    /// small-integer differences (`scripts/reference/wilcoxon_ties.py`), including the issue's
    /// all-tied cases (0.125, 0.0625, 0.03125 at n = 4, 5, 6, where the normal approximation
    /// gave 0.072, 0.037, 0.020).
    #[test]
    fn exact_under_ties_and_zeros_matches_scipy_permutation() {
        let table: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/stats/wilcoxon_ties.json"
        ))
        .unwrap();
        let cases = table["cases"].as_array().unwrap();
        assert!(cases.len() >= 25);
        let mut with_ties = 0;
        for c in cases {
            let d: Vec<f64> = c["d"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let expect = c["p"].as_f64().unwrap();
            let r = run(&d);
            if !signed_ranks(&d).1.is_empty() {
                with_ties += 1;
            }
            assert_eq!(r.method, WilcoxonMethod::Exact, "{d:?}");
            assert!(
                (r.p_value - expect).abs() < 1e-12,
                "{d:?}: {} vs SciPy {expect}",
                r.p_value
            );
            assert!(r.min_attainable_p <= r.p_value + 1e-15);
        }
        assert!(with_ties >= 20, "the table must exercise ties: {with_ties}");
        assert_eq!(run(&[1.0, 1.0, 1.0, 1.0]).p_value, 0.125);
    }

    /// The smallest attainable p follows the data: zeros are dropped, so they raise it.
    #[test]
    fn smallest_attainable_p_counts_only_nonzero_differences() {
        assert_eq!(
            run(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).min_attainable_p,
            2.0 / 64.0
        );
        assert_eq!(
            run(&[0.0, 2.0, 0.0, 4.0, -5.0, 6.0]).min_attainable_p,
            2.0 / 16.0
        );
        assert_eq!(run(&[0.0, 0.0]).min_attainable_p, 1.0);
    }

    #[test]
    fn exact_distribution_is_symmetric_and_complete() {
        for n in 1..=EXACT_MAX_N {
            let c = exact_counts(n);
            assert_eq!(c.iter().sum::<u64>(), 1u64 << n);
            assert!(c.iter().eq(c.iter().rev()));
        }
    }

    #[test]
    fn all_zero_and_invalid_input() {
        check(&[0.0, 0.0, -0.0], 0.0, 0, 1.0, WilcoxonMethod::Exact);
        assert_eq!(wilcoxon_signed_rank(&[]), Err(StatsError::Empty));
        assert!(matches!(
            wilcoxon_signed_rank(&[1.0, f64::NAN]),
            Err(StatsError::NonFinite { index: 1, .. })
        ));
    }

    #[test]
    fn erfc_matches_cpython() {
        // CPython 3.11.7 math.erfc (platform libm).
        let cases = [
            (-3.0, 1.9999779095030015),
            (0.0, 1.0),
            (0.1, 0.8875370839817152),
            (1.0, 0.15729920705028513),
            (
                1.4730826810016213 / std::f64::consts::SQRT_2,
                0.1407287427705665,
            ),
            (1.875, 0.008009942329880029),
            (2.0, 0.004677734981047265),
            (3.5, 7.430983723414128e-07),
            (8.0, 1.1224297172982928e-29),
            (26.0, 5.663192408856143e-296),
        ];
        for (x, e) in cases {
            let got = erfc(x);
            assert!(
                ((got - e) / e).abs() < 1e-13,
                "erfc({x}) = {got:e}, expected {e:e}"
            );
        }
        assert!(erfc(f64::NAN).is_nan());
        assert_eq!(erfc(40.0), 0.0);
    }

    #[test]
    fn ranks_average_ties() {
        let (r, ties) = signed_ranks(&[2.0, -1.0, 0.0, -2.0, 3.0]);
        assert_eq!(
            r,
            vec![(1.0, false), (2.5, true), (2.5, false), (4.0, true)]
        );
        assert_eq!(ties, vec![2]);
    }

    proptest! {
        #[test]
        fn p_value_in_unit_interval(d in prop::collection::vec(-20i32..20, 1..60)) {
            let d: Vec<f64> = d.into_iter().map(f64::from).collect();
            let r = wilcoxon_signed_rank(&d);
            prop_assert!(r.is_ok_and(|r| (0.0..=1.0).contains(&r.p_value)
                && r.statistic_w_plus >= 0.0
                && r.n_used <= d.len()));
        }

        #[test]
        fn flipping_signs_keeps_p(d in prop::collection::vec(-1e3f64..1e3, 1..40)) {
            let neg: Vec<f64> = d.iter().map(|x| -x).collect();
            let (a, b) = (wilcoxon_signed_rank(&d), wilcoxon_signed_rank(&neg));
            prop_assert!(matches!((a, b), (Ok(a), Ok(b)) if (a.p_value - b.p_value).abs() < 1e-12));
        }
    }
}
