//! ±kσ-from-median outlier rejection on a reference statistic.
//!
//! A run is rejected when its reference value (by default the first segment's delta) lies more
//! than `k` standard deviations from the median of all runs; σ is the sample standard deviation
//! of the reference values of all runs (before rejection). A rejected run drops all of its
//! segments. The median run is never rejected: for an odd number of runs its distance is 0, and
//! for an even number the two middle runs (whose mean is the median) are always kept, even when
//! a small `k` would put them outside.

use serde::Serialize;

use super::{StatsError, check_finite, std_dev};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rejection {
    /// `keep[i]`: run `i` is kept.
    pub keep: Vec<bool>,
    pub rejected: usize,
    pub median: f64,
    pub sigma: f64,
    pub k: f64,
}

impl Rejection {
    /// The kept values of `xs` (same length and order as the reference).
    pub fn kept<'a, T: Copy>(&'a self, xs: &'a [T]) -> impl Iterator<Item = T> + 'a {
        xs.iter().zip(&self.keep).filter(|(_, k)| **k).map(|(x, _)| *x)
    }
}

pub fn reject_outliers(reference: &[f64], k: f64) -> Result<Rejection, StatsError> {
    if !(k > 0.0 && k.is_finite()) {
        return Err(StatsError::BadSigmaMultiple(k));
    }
    check_finite(reference)?;
    let sigma = std_dev(reference);
    // One sorted copy gives the median and the middle runs (this runs on millions of runs).
    let mut sorted = reference.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let n = sorted.len();
    let (mid_lo, mid_hi) = (sorted[(n - 1) / 2], sorted[n / 2]);
    let m = if n % 2 == 1 { mid_hi } else { (mid_lo + mid_hi) / 2.0 };
    drop(sorted);
    let keep: Vec<bool> = reference.iter().map(|&x| x == mid_lo || x == mid_hi || (x - m).abs() <= k * sigma).collect();
    let rejected = keep.iter().filter(|k| !**k).count();
    Ok(Rejection { keep, rejected, median: m, sigma, k })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_far_values_only() {
        let mut xs: Vec<f64> = (0..100).map(|i| 100.0 + (i % 10) as f64).collect();
        xs.push(10_000.0);
        let r = reject_outliers(&xs, 3.0).unwrap();
        assert_eq!(r.rejected, 1);
        assert!(!r.keep[100]);
        assert_eq!(r.kept(&xs).count(), 100);
    }

    #[test]
    fn bad_sigma_multiples_are_refused() {
        for k in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(reject_outliers(&[1.0, 2.0], k), Err(StatsError::BadSigmaMultiple(_))));
        }
    }

    #[test]
    fn constant_data_keeps_everything() {
        let r = reject_outliers(&[7.0; 20], 3.0).unwrap();
        assert_eq!(r.rejected, 0);
    }

    #[test]
    fn with_n_up_to_k_squared_nothing_can_be_rejected() {
        // Eight runs near 20 µs and one at 1 s: the far run inflates σ to √9 = 3 of its own
        // distances at most.
        let mut xs = vec![20_000.0; 8];
        xs.push(1e9);
        assert_eq!(reject_outliers(&xs, 3.0).unwrap().rejected, 0);
        xs.insert(0, 20_000.0);
        assert_eq!(reject_outliers(&xs, 3.0).unwrap().rejected, 1, "ten runs: √10 > 3");
    }

    proptest! {
        #[test]
        fn never_removes_the_median_run(xs in prop::collection::vec(-1e6f64..1e6, 1..300), k in 0.01f64..5.0) {
            let r = reject_outliers(&xs, k).unwrap();
            let mut idx: Vec<usize> = (0..xs.len()).collect();
            idx.sort_by(|a, b| xs[*a].total_cmp(&xs[*b]));
            prop_assert!(r.keep[idx[(xs.len() - 1) / 2]]);
            prop_assert!(r.keep[idx[xs.len() / 2]]);
        }
    }
}
