//! Nonparametric bootstrap with percentile confidence intervals.
//!
//! Resampling the median is done on the sorted sample: a resample is a multinomial count per
//! sorted position, and its median is found by walking the counts, so each resample costs
//! O(n) with no sort. Working on sorted data also makes the result independent of the input
//! order for a given seed.
//!
//! From [`LARGE_N`] runs up, drawing n indices B times dominates everything (a 1 GB trace has
//! millions of runs per group), so the resample median is drawn from its exact distribution
//! instead: the m-th smallest of n draws from the sorted sample is at or below position k
//! exactly when at least m draws fall at or below k, i.e. with probability
//! P(Binomial(n, k/n) ≥ m). Each of the B resample medians is one inverse-CDF draw (binary
//! search over k) — the same bootstrap distribution, at O(B log n) instead of O(B n). The
//! binomial tail uses the normal approximation with continuity correction, whose error at
//! these n (below 1e-5) is far under the Monte Carlo error of B = 500; for an even n the
//! resample median is its lower middle order statistic, which differs from the mean of the two
//! middle ones by less than one spacing of the data.

use rand::{RngExt as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::{StatsError, check_finite, median, percentile_sorted, variance};

/// Bootstrap settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// Number of resamples B (at least 10).
    pub resamples: usize,
    /// Confidence level, strictly between 0 and 1.
    pub level: f64,
    /// RNG seed: the same data and seed give the same interval.
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap { resamples: 500, level: 0.95, seed: DEFAULT_SEED }
    }
}

/// From this many values up, bootstrap medians are drawn from their exact distribution.
pub const LARGE_N: usize = 100_000;

/// "clockpat" in ASCII: the default seed.
pub const DEFAULT_SEED: u64 = 0x636c_6f63_6b70_6174;

impl Bootstrap {
    pub fn validate(&self) -> Result<(), StatsError> {
        if self.resamples < 10 {
            return Err(StatsError::TooFewResamples(self.resamples));
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(StatsError::LevelOutOfRange(self.level));
        }
        Ok(())
    }

    pub(crate) fn rng(&self) -> Xoshiro256PlusPlus {
        Xoshiro256PlusPlus::seed_from_u64(self.seed)
    }

    /// Percentile interval of a bootstrap distribution (sorted in place).
    pub(crate) fn interval(&self, estimate: f64, mut dist: Vec<f64>) -> Interval {
        dist.sort_unstable_by(f64::total_cmp);
        let alpha = (1.0 - self.level) / 2.0;
        Interval {
            estimate,
            lower: percentile_sorted(&dist, alpha),
            upper: percentile_sorted(&dist, 1.0 - alpha),
            level: self.level,
            resamples: dist.len(),
        }
    }
}

/// A point estimate with its bootstrap percentile interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
    pub level: f64,
    /// Resamples the interval was computed from.
    pub resamples: usize,
}

impl Interval {
    /// Whether every bound is finite (only finite values are ever published).
    pub fn is_finite(&self) -> bool {
        self.estimate.is_finite() && self.lower.is_finite() && self.upper.is_finite()
    }

    /// Whether `v` lies inside the interval.
    pub fn contains(&self, v: f64) -> bool {
        self.lower <= v && v <= self.upper
    }
}

/// Medians of `b` resamples of `sorted`, drawn from `rng`.
struct MedianResampler {
    counts: Vec<u32>,
}

impl MedianResampler {
    fn new(n: usize) -> Self {
        MedianResampler { counts: vec![0; n] }
    }

    /// One resample's median.
    fn draw(&mut self, sorted: &[f64], rng: &mut Xoshiro256PlusPlus) -> f64 {
        let n = sorted.len();
        self.counts.fill(0);
        for _ in 0..n {
            self.counts[rng.random_range(0..n)] += 1;
        }
        // 0-based ranks of the middle element(s) of the resample.
        let (k_lo, k_hi) = if n % 2 == 1 { (n / 2, n / 2) } else { (n / 2 - 1, n / 2) };
        let mut seen = 0usize;
        let mut lo = None;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c as usize;
            if lo.is_none() && seen > k_lo {
                lo = Some(sorted[i]);
            }
            if seen > k_hi {
                let lo = lo.unwrap_or(sorted[i]);
                return (lo + sorted[i]) / 2.0;
            }
        }
        // Unreachable: the counts sum to n > k_hi.
        sorted[n - 1]
    }
}

/// P(Binomial(n, p) ≥ m), normal approximation with continuity correction (n ≥ LARGE_N).
fn binomial_at_least(n: f64, p: f64, m: f64) -> f64 {
    if p <= 0.0 {
        return if m <= 0.0 { 1.0 } else { 0.0 };
    }
    if p >= 1.0 {
        return 1.0;
    }
    let z = (m - 0.5 - n * p) / (n * p * (1.0 - p)).sqrt();
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// One resample median of `sorted` (len ≥ LARGE_N) by inverse-CDF sampling of its rank.
fn large_median_draw(sorted: &[f64], rng: &mut Xoshiro256PlusPlus) -> f64 {
    let n = sorted.len();
    let m = n.div_ceil(2) as f64;
    let u: f64 = rng.random();
    // Smallest k (1-based) with P(median rank ≤ k) ≥ u.
    let (mut lo, mut hi) = (1usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if binomial_at_least(n as f64, mid as f64 / n as f64, m) >= u {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    sorted[lo - 1]
}

/// Resample medians of `sorted`, by the method its size calls for.
enum Medians {
    Counts(MedianResampler),
    Exact,
}

impl Medians {
    fn for_len(n: usize) -> Medians {
        if n >= LARGE_N { Medians::Exact } else { Medians::Counts(MedianResampler::new(n)) }
    }

    fn draw(&mut self, sorted: &[f64], rng: &mut Xoshiro256PlusPlus) -> f64 {
        match self {
            Medians::Counts(r) => r.draw(sorted, rng),
            Medians::Exact => large_median_draw(sorted, rng),
        }
    }
}

fn sorted_copy(xs: &[f64]) -> Vec<f64> {
    let mut s = xs.to_vec();
    s.sort_unstable_by(f64::total_cmp);
    s
}

/// Bootstrap percentile CI of the median.
pub fn median_ci(xs: &[f64], boot: &Bootstrap) -> Result<Interval, StatsError> {
    median_ci_owned(xs.to_vec(), boot)
}

/// `median_ci`, sorting `xs` in place instead of a copy (for columns of millions of runs).
pub fn median_ci_owned(mut xs: Vec<f64>, boot: &Bootstrap) -> Result<Interval, StatsError> {
    boot.validate()?;
    check_finite(&xs)?;
    xs.sort_unstable_by(f64::total_cmp);
    let sorted = xs;
    let mut rng = boot.rng();
    let mut r = Medians::for_len(sorted.len());
    let dist: Vec<f64> = (0..boot.resamples).map(|_| r.draw(&sorted, &mut rng)).collect();
    Ok(boot.interval(median(&sorted), dist))
}

/// Bootstrap percentile CI of the mean.
pub fn mean_ci(xs: &[f64], boot: &Bootstrap) -> Result<Interval, StatsError> {
    boot.validate()?;
    check_finite(xs)?;
    let sorted = sorted_copy(xs);
    let n = sorted.len();
    let mut rng = boot.rng();
    let dist: Vec<f64> =
        (0..boot.resamples).map(|_| (0..n).map(|_| sorted[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    Ok(boot.interval(super::mean(&sorted), dist))
}

/// Bootstrap percentile CI of median(a) − median(b), resampling each group on its own.
pub fn median_difference_ci(a: &[f64], b: &[f64], boot: &Bootstrap) -> Result<Interval, StatsError> {
    boot.validate()?;
    check_finite(a)?;
    check_finite(b)?;
    let (sa, sb) = (sorted_copy(a), sorted_copy(b));
    let mut rng = boot.rng();
    let (mut ra, mut rb) = (Medians::for_len(sa.len()), Medians::for_len(sb.len()));
    let dist: Vec<f64> = (0..boot.resamples).map(|_| ra.draw(&sa, &mut rng) - rb.draw(&sb, &mut rng)).collect();
    Ok(boot.interval(median(&sa) - median(&sb), dist))
}

/// Sample variance of one resample of `centred` (data minus its mean, for accuracy).
fn resample_variance(centred: &[f64], rng: &mut Xoshiro256PlusPlus) -> f64 {
    let n = centred.len();
    if n < 2 {
        return 0.0;
    }
    let (mut s, mut ss) = (0.0, 0.0);
    for _ in 0..n {
        let x = centred[rng.random_range(0..n)];
        s += x;
        ss += x * x;
    }
    ((ss - s * s / n as f64) / (n - 1) as f64).max(0.0)
}

/// Bootstrap percentile CI of var(a) / var(b). Resamples where var(b*) is 0 give +∞; the
/// interval is then not finite and callers must not publish it.
pub fn variance_ratio_ci(a: &[f64], b: &[f64], boot: &Bootstrap) -> Result<Interval, StatsError> {
    boot.validate()?;
    check_finite(a)?;
    check_finite(b)?;
    let centre = |xs: &[f64]| {
        let s = sorted_copy(xs);
        let m = super::mean(&s);
        s.into_iter().map(|x| x - m).collect::<Vec<f64>>()
    };
    let (ca, cb) = (centre(a), centre(b));
    let mut rng = boot.rng();
    let dist: Vec<f64> = (0..boot.resamples)
        .map(|_| {
            let va = resample_variance(&ca, &mut rng);
            let vb = resample_variance(&cb, &mut rng);
            if vb > 0.0 { va / vb } else { f64::INFINITY }
        })
        .collect();
    let vb = variance(b);
    let estimate = if vb > 0.0 { variance(a) / vb } else { f64::INFINITY };
    Ok(boot.interval(estimate, dist))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn boot() -> Bootstrap {
        Bootstrap::default()
    }

    #[test]
    fn settings_are_validated() {
        let b = Bootstrap { resamples: 9, ..boot() };
        assert_eq!(b.validate(), Err(StatsError::TooFewResamples(9)));
        for level in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            let b = Bootstrap { level, ..boot() };
            assert!(matches!(b.validate(), Err(StatsError::LevelOutOfRange(_))), "{level}");
        }
        assert!(median_ci(&[1.0, 2.0], &Bootstrap { resamples: 3, ..boot() }).is_err());
    }

    #[test]
    fn same_seed_same_interval_other_seed_other_interval() {
        let xs: Vec<f64> = (0..300).map(|i| ((i * 7919) % 1000) as f64).collect();
        let a = median_ci(&xs, &boot()).unwrap();
        assert_eq!(a, median_ci(&xs, &boot()).unwrap());
        let c = median_ci(&xs, &Bootstrap { seed: 1, ..boot() }).unwrap();
        assert_ne!((a.lower, a.upper), (c.lower, c.upper));
    }

    #[test]
    fn constant_data_has_a_point_interval() {
        let i = median_ci(&[5.0; 50], &boot()).unwrap();
        assert_eq!((i.estimate, i.lower, i.upper), (5.0, 5.0, 5.0));
        let r = variance_ratio_ci(&[1.0, 2.0, 3.0], &[5.0; 10], &boot()).unwrap();
        assert!(!r.is_finite());
    }

    #[test]
    fn difference_of_shifted_groups_is_the_shift() {
        let a: Vec<f64> = (0..400).map(|i| (i % 97) as f64).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 10.0).collect();
        let d = median_difference_ci(&b, &a, &boot()).unwrap();
        assert_eq!(d.estimate, 10.0);
        assert!(d.contains(10.0), "{d:?}");
        let wide: Vec<f64> = a.iter().map(|x| x * 3.0).collect();
        let r = variance_ratio_ci(&wide, &a, &boot()).unwrap();
        assert!((r.estimate - 9.0).abs() < 1e-9);
        assert!(r.contains(9.0) && r.lower > 5.0, "{r:?}");
    }

    #[test]
    fn the_large_n_method_agrees_with_resampling() {
        // Skewed data just above the threshold; both methods with B = 2000 so the comparison
        // is not drowned in Monte Carlo noise.
        let n = LARGE_N + 1;
        let xs: Vec<f64> = (0..n)
            .map(|i| {
                let u = ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64 / (1u64 << 53) as f64;
                1000.0 * (1.0 + 3.0 * u * u)
            })
            .collect();
        let b = Bootstrap { resamples: 2000, ..boot() };
        let exact = median_ci(&xs, &b).unwrap();
        let sorted = sorted_copy(&xs);
        let mut rng = b.rng();
        let mut r = MedianResampler::new(n);
        let dist: Vec<f64> = (0..b.resamples).map(|_| r.draw(&sorted, &mut rng)).collect();
        let resampled = b.interval(median(&sorted), dist);
        let width = resampled.upper - resampled.lower;
        assert!(width > 0.0);
        assert!((exact.lower - resampled.lower).abs() < 0.2 * width, "{exact:?} vs {resampled:?}");
        assert!((exact.upper - resampled.upper).abs() < 0.2 * width, "{exact:?} vs {resampled:?}");
        assert!(exact.contains(exact.estimate));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn median_lies_inside_its_interval(xs in prop::collection::vec(-1e9f64..1e9, 1..400), seed in any::<u64>()) {
            let i = median_ci(&xs, &Bootstrap { seed, ..boot() }).unwrap();
            prop_assert!(i.lower <= i.estimate && i.estimate <= i.upper, "{:?}", i);
        }

        #[test]
        fn input_order_does_not_matter(mut xs in prop::collection::vec(0f64..1e6, 2..300), seed in any::<u64>()) {
            let b = Bootstrap { seed, ..boot() };
            let a = median_ci(&xs, &b).unwrap();
            xs.reverse();
            let r = median_ci(&xs, &b).unwrap();
            prop_assert_eq!(a, r);
            let v1 = variance_ratio_ci(&xs, &xs[..xs.len() / 2 + 1], &b).unwrap();
            let mut shuffled = xs.clone();
            shuffled.rotate_left(xs.len() / 3);
            let v2 = variance_ratio_ci(&shuffled, &xs[..xs.len() / 2 + 1], &b).unwrap();
            prop_assert_eq!(v1.lower.to_bits(), v2.lower.to_bits());
        }
    }
}
