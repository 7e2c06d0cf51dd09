//! ±kσ-from-median outlier rejection on a reference statistic.
//!
//! A run is rejected when its reference value (by default the first segment's delta) lies more
//! than `k` σ from the median of all runs. σ is, by default, the sample standard deviation of
//! the reference values of all runs (before rejection): the investigation's rule. Its known
//! failures: one far run among n lies at most √n SDs out (it inflates σ itself), so with
//! n ≤ k² nothing can be rejected; and on a skewed segment the long tail inflates σ so that
//! the rule trims little there and never on the short side. [`Spread::Mad`] takes σ from the
//! median absolute deviation instead (× 1.4826, the normal consistency factor), which far runs
//! do not inflate; where more than half the values are equal the MAD is 0, and σ falls back to
//! the mean absolute deviation from the median × 1.2533 (also normal-consistent).
//!
//! A rejected run drops all of its segments. The median run is never rejected: for an odd
//! number of runs its distance is 0, and for an even number the two middle runs (whose mean is
//! the median) are always kept, even when a small `k` would put them outside.

use serde::{Deserialize, Serialize};

use super::{StatsError, check_finite, std_dev};

/// How the rule's σ is measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// The sample standard deviation (the investigation's rule).
    #[default]
    Sd,
    /// 1.4826 × the median absolute deviation from the median (robust to the runs it judges).
    Mad,
}

impl Spread {
    pub fn as_str(self) -> &'static str {
        match self {
            Spread::Sd => "sd",
            Spread::Mad => "mad",
        }
    }
}

/// The outlier rule: ±`k` σ from the median, σ measured as `spread` says.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OutlierRule {
    pub k: f64,
    pub spread: Spread,
}

impl From<f64> for OutlierRule {
    /// The investigation's rule: ±k sample SDs.
    fn from(k: f64) -> Self {
        OutlierRule { k, spread: Spread::Sd }
    }
}

impl OutlierRule {
    /// Judge `reference` (finite values).
    pub fn reject(&self, reference: &[f64]) -> Result<Rejection, StatsError> {
        reject_with(reference, self.k, self.spread)
    }

    /// Judge runs whose reference value may be missing (NaN): `keep` has one flag per run, and
    /// a run without a value is not judged and is kept. With no value at all nothing is judged
    /// (median and σ NaN, every run kept).
    pub fn judge_runs(&self, reference: &[f64]) -> Result<Rejection, StatsError> {
        let judged: Vec<f64> = reference.iter().copied().filter(|v| !v.is_nan()).collect();
        let mut rejection = if judged.is_empty() {
            Rejection { keep: Vec::new(), rejected: 0, median: f64::NAN, sigma: f64::NAN, k: self.k }
        } else {
            self.reject(&judged)?
        };
        drop(judged);
        let mut verdicts = rejection.keep.iter();
        rejection.keep = reference.iter().map(|v| v.is_nan() || verdicts.next().copied().unwrap_or(true)).collect();
        Ok(rejection)
    }

    /// [`Self::judge_runs`]' flags (true: kept); every run kept if the rule cannot judge (a bad
    /// `k`).
    pub fn keep_mask(&self, reference: &[f64]) -> Vec<bool> {
        self.judge_runs(reference).map_or_else(|_| vec![true; reference.len()], |r| r.keep)
    }
}

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

/// The investigation's rule: ±`k` sample SDs from the median.
pub fn reject_outliers(reference: &[f64], k: f64) -> Result<Rejection, StatsError> {
    reject_with(reference, k, Spread::Sd)
}

fn reject_with(reference: &[f64], k: f64, spread: Spread) -> Result<Rejection, StatsError> {
    if !(k > 0.0 && k.is_finite()) {
        return Err(StatsError::BadSigmaMultiple(k));
    }
    check_finite(reference)?;
    // One sorted copy gives the median and the middle runs (this runs on millions of runs).
    let mut sorted = reference.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let n = sorted.len();
    let (mid_lo, mid_hi) = (sorted[(n - 1) / 2], sorted[n / 2]);
    let m = if n % 2 == 1 { mid_hi } else { (mid_lo + mid_hi) / 2.0 };
    let sigma = match spread {
        Spread::Sd => std_dev(reference),
        Spread::Mad => {
            for x in sorted.iter_mut() {
                *x = (*x - m).abs();
            }
            let mad = super::median_in_place(&mut sorted);
            if mad > 0.0 { 1.4826 * mad } else { 1.2533 * super::mean(&sorted) }
        }
    };
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

    #[test]
    fn mad_rejects_what_one_far_run_hides_from_the_sd() {
        // The n ≤ k² case: the SD rule keeps the far run, the MAD rule does not.
        let mut xs: Vec<f64> = (0..8).map(|i| 20_000.0 + 10.0 * i as f64).collect();
        xs.push(1e9);
        let mad = OutlierRule { k: 3.0, spread: Spread::Mad };
        let r = mad.reject(&xs).unwrap();
        assert_eq!(r.rejected, 1);
        assert!(!r.keep[8]);
        // σ = 1.4826 × MAD: |x − 20 040| of 0..70 step 10 and the far run → MAD 20.
        assert!((r.sigma - 1.4826 * 20.0).abs() < 1e-9, "{}", r.sigma);
    }

    #[test]
    fn mad_of_mostly_tied_values_falls_back_to_the_mean_deviation() {
        // Six equal values of ten: the MAD is 0; a rule with σ 0 would reject every other run.
        let xs = [5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 6.0, 4.0, 5.5, 4.5];
        let r = OutlierRule { k: 3.0, spread: Spread::Mad }.reject(&xs).unwrap();
        assert!((r.sigma - 1.2533 * 0.3).abs() < 1e-9, "σ {}", r.sigma);
        assert_eq!(r.rejected, 0);
    }

    #[test]
    fn keep_mask_keeps_runs_without_a_reference_value() {
        let mut xs: Vec<f64> = (0..30).map(|i| 100.0 + i as f64).collect();
        xs.push(f64::NAN);
        xs.push(1e9);
        let keep = OutlierRule::from(3.0).keep_mask(&xs);
        assert_eq!(keep.len(), 32);
        assert!(keep[30], "not judged");
        assert!(!keep[31]);
        assert_eq!(keep.iter().filter(|k| !**k).count(), 1);
        assert!(OutlierRule::from(-1.0).keep_mask(&xs).iter().all(|k| *k), "a rule that cannot judge keeps all");
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
