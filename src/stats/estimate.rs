//! Point estimates with confidence intervals, validated samples, and the
//! order-statistic helpers [`median`] and [`percentile`].
//!
//! Definitions:
//! - [`Sample`]: a non-empty list of finite `f64` (NaN and +/-inf rejected),
//!   optionally with a minimum length; the statistics in this module only
//!   accept input through it, so every later computation is on finite data.
//! - [`percentile`]`(sorted, q)`, `q` in `[0, 1]`: linear interpolation
//!   between closest ranks, Hyndman & Fan (1996) definition 7, which is the
//!   default of NumPy's `np.percentile(x, 100 * q)` / `np.quantile(x, q)`
//!   (`method="linear"`) and R's `quantile(type = 7)`: with `h = (n - 1) q`,
//!   `x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h])`.
//! - [`median`]: `percentile(sorted copy, 0.5)`, i.e. the middle value, or
//!   the mean of the two middle values for even `n` (NumPy's `np.median`).

use super::StatsError;

/// A point estimate with a two-sided confidence interval and standard
/// error (criterion's `Estimate` without the confidence level).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The statistic on the original sample.
    pub point: f64,
    /// Lower end of the confidence interval.
    pub ci_low: f64,
    /// Upper end of the confidence interval.
    pub ci_high: f64,
    /// Standard error of the statistic.
    pub std_err: f64,
}

/// A validated sample: non-empty, every value finite, at least `min_len`
/// values.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    values: Vec<f64>,
}

impl Sample {
    /// A sample of at least one finite value.
    pub fn new(values: &[f64]) -> Result<Sample, StatsError> {
        Sample::with_min_len(values, 1)
    }

    /// A sample of at least `min_len` (and at least one) finite values.
    pub fn with_min_len(values: &[f64], min_len: usize) -> Result<Sample, StatsError> {
        if values.is_empty() {
            return Err(StatsError::Empty);
        }
        if values.len() < min_len {
            return Err(StatsError::TooFewValues {
                needed: min_len,
                got: values.len(),
            });
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(StatsError::NonFinite { index, value });
        }
        Ok(Sample {
            values: values.to_vec(),
        })
    }

    /// The values, in input order.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Number of values (always >= 1).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Always `false`: a `Sample` is never empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Arithmetic mean (sum / n).
    pub fn mean(&self) -> f64 {
        self.values.iter().sum::<f64>() / self.values.len() as f64
    }

    /// The values sorted ascending.
    pub fn sorted(&self) -> Vec<f64> {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// The `q`-quantile (`q` in `[0, 1]`) of an ascending-sorted slice by linear
/// interpolation between closest ranks (NumPy's default `linear` method, see
/// the module docs). `None` when `sorted` is empty or `q` is outside
/// `[0, 1]` or NaN. The slice is not checked for order: unsorted input gives
/// a meaningless (but finite-time, non-panicking) result.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor();
    let frac = h - lo;
    // `lo` is in [0, n - 1] because q is in [0, 1].
    let lo = lo as usize;
    let x_lo = *sorted.get(lo)?;
    match sorted.get(lo + 1) {
        Some(&x_hi) if frac > 0.0 => Some(x_lo + frac * (x_hi - x_lo)),
        _ => Some(x_lo),
    }
}

/// The median: middle value, or mean of the two middle values for an even
/// count. `None` when `values` is empty or contains NaN.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_rejects_bad_input() {
        assert_eq!(Sample::new(&[]), Err(StatsError::Empty));
        assert!(matches!(
            Sample::new(&[1.0, f64::NAN]),
            Err(StatsError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            Sample::new(&[f64::INFINITY]),
            Err(StatsError::NonFinite { index: 0, .. })
        ));
        assert_eq!(
            Sample::with_min_len(&[1.0], 2),
            Err(StatsError::TooFewValues { needed: 2, got: 1 })
        );
        let s = Sample::with_min_len(&[3.0, 1.0, 2.0], 2);
        assert!(s.is_ok_and(|s| s.len() == 3
            && !s.is_empty()
            && s.mean() == 2.0
            && s.sorted() == vec![1.0, 2.0, 3.0]
            && s.values() == [3.0, 1.0, 2.0]));
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // np.percentile([1, 2, 3, 4], [0, 10, 25, 50, 75, 90, 100])
        // = [1.0, 1.3, 1.75, 2.5, 3.25, 3.7, 4.0]
        let x = [1.0, 2.0, 3.0, 4.0];
        let expected = [
            (0.0, 1.0),
            (0.1, 1.3),
            (0.25, 1.75),
            (0.5, 2.5),
            (0.75, 3.25),
            (0.9, 3.7),
            (1.0, 4.0),
        ];
        for (q, e) in expected {
            let got = percentile(&x, q);
            assert!(got.is_some_and(|g| (g - e).abs() < 1e-12), "q={q}: {got:?}");
        }
        assert_eq!(percentile(&[7.0], 0.3), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&x, 1.5), None);
        assert_eq!(percentile(&x, -0.1), None);
        assert_eq!(percentile(&x, f64::NAN), None);
    }

    #[test]
    fn median_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }
}
