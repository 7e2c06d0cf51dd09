//! Statistics for sessions and windows, free of eBPF and I/O: exact median, standard
//! deviation, ±kσ-from-median outlier rejection, nonparametric bootstrap with percentile
//! confidence intervals, two-group comparisons and bootstrap (pairs) regression.
//!
//! Conventions (matching numpy/scipy, which the reference tests use):
//! - the median of an even number of values is the mean of the two middle ones;
//! - the standard deviation is the sample one (n − 1 in the denominator);
//! - percentiles interpolate linearly between order statistics (numpy's default), and a
//!   percentile CI at level L takes the (1−L)/2 and (1+L)/2 percentiles of the bootstrap
//!   distribution (`scipy.stats.bootstrap(..., method='percentile')`);
//! - resampling uses a seeded xoshiro256++ generator, so the same input, order and seed give
//!   the same result, bit for bit.

mod attribution;
mod bootstrap;
pub mod buckets;
mod group_median;
mod independence;
mod outliers;
mod regression;
mod runs;
mod sessions;

pub use attribution::{Attribution, Share, covariance_shares};
pub use bootstrap::{
    Bootstrap, Interval, mean_ci, median_ci, median_ci_owned, median_difference_ci, variance_ratio_ci,
};
pub use group_median::{GroupMedian, SessionSample, group_median, weighted_median, weighted_std_dev};
pub use independence::{IndependenceCheck, QuantileCheck, independence_check};
pub use outliers::{OutlierRule, Rejection, Spread, reject_outliers};
pub use regression::{
    Coefficient, Regression, bootstrap_regression, bootstrap_regression_by_session, variance_inflation,
};
pub use runs::{ColumnStats, RunsAnalysis, analyze_runs};
pub use sessions::{
    SessionEffect, SessionEffectError, SessionValue, between_session_share, session_effect, session_variance_ratio,
};

/// Below this many runs a confidence interval is flagged unreliable.
pub const RELIABLE_MIN_SAMPLES: usize = 100;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("bootstrap resamples must be at least 10, got {0}")]
    TooFewResamples(usize),
    #[error("confidence level must be strictly between 0 and 1, got {0}")]
    LevelOutOfRange(f64),
    #[error("the outlier σ multiple must be positive, got {0}")]
    BadSigmaMultiple(f64),
    #[error("no data")]
    Empty,
    #[error("data contains a value that is not finite ({0})")]
    NotFinite(f64),
    #[error("regression needs more runs ({runs}) than coefficients ({coefficients})")]
    Underdetermined { runs: usize, coefficients: usize },
    #[error("regression: {0}")]
    Collinear(String),
}

/// Reject NaN and infinities up front: nothing downstream has to think about them.
pub fn check_finite(xs: &[f64]) -> Result<(), StatsError> {
    if xs.is_empty() {
        return Err(StatsError::Empty);
    }
    match xs.iter().find(|x| !x.is_finite()) {
        Some(x) => Err(StatsError::NotFinite(*x)),
        None => Ok(()),
    }
}

/// Exact median (mean of the two middle values for even n). Reorders `xs`.
pub fn median_in_place(xs: &mut [f64]) -> f64 {
    let n = xs.len();
    assert!(n > 0, "median of no data");
    let mid = n / 2;
    let (lo, m, _) = xs.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *m;
    if n % 2 == 1 {
        upper
    } else {
        let lower = lo.iter().copied().max_by(f64::total_cmp).unwrap_or(upper);
        (lower + upper) / 2.0
    }
}

/// Exact median of `xs` (copied).
pub fn median(xs: &[f64]) -> f64 {
    median_in_place(&mut xs.to_vec())
}

pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample variance (n − 1); 0 for a single value.
pub fn variance(xs: &[f64]) -> f64 {
    let n = xs.len();
    if n < 2 {
        return 0.0;
    }
    let m = mean(xs);
    xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64
}

/// Sample standard deviation (n − 1).
pub fn std_dev(xs: &[f64]) -> f64 {
    variance(xs).sqrt()
}

/// Percentile `q` (0..=1) of sorted data, linearly interpolated (numpy's default method).
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    assert!(n > 0, "percentile of no data");
    let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// n, median and standard deviation of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Describe {
    pub n: usize,
    pub median: f64,
    pub std_dev: f64,
}

pub fn describe(xs: &[f64]) -> Result<Describe, StatsError> {
    check_finite(xs)?;
    Ok(Describe { n: xs.len(), median: median(xs), std_dev: std_dev(xs) })
}

/// A deterministic pseudo-random sequence (xorshift64) for the statistics tests: the same
/// numbers on every platform and rand version.
#[cfg(test)]
pub(crate) fn test_sequence(n: usize, seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed;
    (0..n).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_and_order_free() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[5.0]), 5.0);
        assert_eq!(median(&[1.0, 1.0, 1.0, 9.0]), 1.0);
    }

    #[test]
    fn sample_standard_deviation() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert!((std_dev(&xs) - 2.138089935299395).abs() < 1e-12);
        assert_eq!(std_dev(&[3.0]), 0.0);
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile_sorted(&s, 0.0), 1.0);
        assert_eq!(percentile_sorted(&s, 1.0), 4.0);
        assert!((percentile_sorted(&s, 0.025) - 1.075).abs() < 1e-12);
        assert!((percentile_sorted(&s, 0.5) - 2.5).abs() < 1e-12);
    }

    #[test]
    fn non_finite_values_are_refused() {
        assert_eq!(describe(&[]), Err(StatsError::Empty));
        assert!(matches!(describe(&[1.0, f64::NAN]), Err(StatsError::NotFinite(_))));
        assert!(matches!(describe(&[1.0, f64::INFINITY]), Err(StatsError::NotFinite(_))));
    }
}
