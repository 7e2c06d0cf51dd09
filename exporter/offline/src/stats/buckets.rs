//! Distributions known only as histogram bucket counts (the exact histograms a Prometheus
//! server holds): the median and variance they imply, and bootstrap CIs by resampling the
//! counts (multinomial, as resampling the observations would give). A bucket count says
//! nothing about where in its bucket a value lay, so no estimate is finer than the width of
//! the bucket it falls in: [`BucketCounts::width_at_median`] is that resolution.

use rand_distr::{Binomial, Distribution as _};

use super::{Bootstrap, Interval, StatsError};

/// Counts per bucket: `counts[i]` values in (`bounds[i-1]`, `bounds[i]`], the last bucket
/// above the last finite bound (+Inf).
#[derive(Clone, Debug, PartialEq)]
pub struct BucketCounts {
    /// Finite upper bounds, increasing.
    pub bounds: Vec<f64>,
    /// `bounds.len() + 1` counts.
    pub counts: Vec<u64>,
}

impl BucketCounts {
    /// From cumulative `(le, count)` pairs as Prometheus gives them (any order, +Inf included,
    /// counts possibly fractional from `increase()`'s extrapolation and not quite monotonic):
    /// rounded, made non-decreasing, differenced.
    pub fn from_cumulative(mut le: Vec<(f64, f64)>) -> Result<BucketCounts, StatsError> {
        le.retain(|(b, c)| !b.is_nan() && c.is_finite());
        le.sort_by(|a, b| a.0.total_cmp(&b.0));
        if le.last().is_none_or(|(b, _)| *b != f64::INFINITY) {
            le.push((f64::INFINITY, le.last().map_or(0.0, |l| l.1)));
        }
        let mut counts = Vec::with_capacity(le.len());
        let mut below = 0u64;
        for (_, c) in &le {
            let cum = (c.max(0.0).round() as u64).max(below);
            counts.push(cum - below);
            below = cum;
        }
        let bounds = le.iter().map(|(b, _)| *b).filter(|b| b.is_finite()).collect();
        let h = BucketCounts { bounds, counts };
        if h.total() == 0 { Err(StatsError::Empty) } else { Ok(h) }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn lower(&self, i: usize) -> f64 {
        if i == 0 { 0.0 } else { self.bounds[i - 1] }
    }

    fn upper(&self, i: usize) -> f64 {
        self.bounds.get(i).copied().unwrap_or(f64::INFINITY)
    }

    /// The bucket holding rank `n / 2`.
    fn median_bucket(counts: &[u64]) -> (usize, f64) {
        let n: u64 = counts.iter().sum();
        let rank = n as f64 / 2.0;
        let mut below = 0u64;
        for (i, c) in counts.iter().enumerate() {
            if (below + c) as f64 >= rank && *c > 0 {
                return (i, (rank - below as f64) / *c as f64);
            }
            below += c;
        }
        (counts.len().saturating_sub(1), 1.0)
    }

    /// The median, interpolated linearly inside its bucket (as `histogram_quantile`); in the
    /// +Inf bucket, that bucket's lower bound.
    pub fn median(&self) -> f64 {
        self.median_of(&self.counts)
    }

    fn median_of(&self, counts: &[u64]) -> f64 {
        let (i, frac) = Self::median_bucket(counts);
        let (lo, hi) = (self.lower(i), self.upper(i));
        if hi.is_infinite() { lo } else { lo + (hi - lo) * frac }
    }

    /// Width of the bucket the median falls in: differences of medians smaller than this are
    /// below what the histogram resolves.
    pub fn width_at_median(&self) -> f64 {
        let (i, _) = Self::median_bucket(&self.counts);
        self.upper(i) - self.lower(i)
    }

    /// Variance with every value at its bucket's midpoint (+Inf bucket: its lower bound).
    pub fn variance(&self) -> f64 {
        self.variance_of(&self.counts)
    }

    fn variance_of(&self, counts: &[u64]) -> f64 {
        let n: u64 = counts.iter().sum();
        if n < 2 {
            return f64::NAN;
        }
        let mid = |i: usize| {
            let (lo, hi) = (self.lower(i), self.upper(i));
            if hi.is_infinite() { lo } else { (lo + hi) / 2.0 }
        };
        let mean = counts.iter().enumerate().map(|(i, c)| *c as f64 * mid(i)).sum::<f64>() / n as f64;
        counts.iter().enumerate().map(|(i, c)| *c as f64 * (mid(i) - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    }

    /// The variance that placing every value at its bucket's midpoint hides: a value spread
    /// evenly over a bucket of width w varies by w²/12 around the midpoint. The +Inf bucket is
    /// left out (unbounded: its values sit at its lower bound).
    pub fn binning_variance(&self) -> f64 {
        let n = self.total();
        if n == 0 {
            return f64::NAN;
        }
        let hidden: f64 = self
            .counts
            .iter()
            .enumerate()
            .filter(|(i, _)| self.upper(*i).is_finite())
            .map(|(i, c)| *c as f64 * (self.upper(i) - self.lower(i)).powi(2) / 12.0)
            .sum();
        hidden / n as f64
    }

    /// A multinomial resample of the counts: as many values, each bucket drawn with its
    /// observed probability (sequential conditional binomials: one draw per bucket).
    fn resample(&self, rng: &mut impl rand::Rng, out: &mut Vec<u64>) {
        out.clear();
        let mut left = self.total();
        let mut rest: u64 = self.total();
        for c in &self.counts {
            let k = if left == 0 || *c == 0 {
                0
            } else if *c >= rest {
                left
            } else {
                let p = *c as f64 / rest as f64;
                Binomial::new(left, p).map_or(0, |b| b.sample(rng))
            };
            out.push(k);
            left -= k;
            rest -= c;
        }
    }
}

/// Bootstrap percentile CI of median(a) − median(b), resampling each group's counts.
pub fn median_difference_ci(a: &BucketCounts, b: &BucketCounts, boot: &Bootstrap) -> Result<Interval, StatsError> {
    both(a, b, boot, |h, c| h.median_of(c), |x, y| x - y)
}

/// Bootstrap percentile CI of var(a) / var(b) (bucket midpoints).
pub fn variance_ratio_ci(a: &BucketCounts, b: &BucketCounts, boot: &Bootstrap) -> Result<Interval, StatsError> {
    both(a, b, boot, |h, c| h.variance_of(c), |x, y| x / y)
}

fn both(
    a: &BucketCounts,
    b: &BucketCounts,
    boot: &Bootstrap,
    stat: impl Fn(&BucketCounts, &[u64]) -> f64,
    combine: impl Fn(f64, f64) -> f64,
) -> Result<Interval, StatsError> {
    boot.validate()?;
    if a.total() == 0 || b.total() == 0 {
        return Err(StatsError::Empty);
    }
    let mut rng = boot.rng();
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    let dist: Vec<f64> = (0..boot.resamples)
        .map(|_| {
            a.resample(&mut rng, &mut ra);
            b.resample(&mut rng, &mut rb);
            combine(stat(a, &ra), stat(b, &rb))
        })
        .collect();
    Ok(boot.interval(combine(stat(a, &a.counts), stat(b, &b.counts)), dist))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn powers_of_two() -> Vec<f64> {
        (8..=20).map(|e| f64::from(1u32 << e)).collect()
    }

    /// Bucket counts of `values` on `bounds`.
    fn hist(bounds: &[f64], values: &[f64]) -> BucketCounts {
        let mut counts = vec![0u64; bounds.len() + 1];
        for v in values {
            counts[bounds.iter().position(|b| v <= b).unwrap_or(bounds.len())] += 1;
        }
        BucketCounts { bounds: bounds.to_vec(), counts }
    }

    #[test]
    fn cumulative_counts_from_prometheus_are_rounded_and_made_monotonic() {
        let h = BucketCounts::from_cumulative(vec![
            (f64::INFINITY, 10.2),
            (2.0, 4.4),
            (1.0, 4.6), // extrapolation made it larger than the next bucket's
            (4.0, 9.9),
        ])
        .unwrap();
        assert_eq!(h.bounds, [1.0, 2.0, 4.0]);
        assert_eq!(h.counts, [5, 0, 5, 0]);
        assert!(matches!(BucketCounts::from_cumulative(vec![(1.0, 0.0)]), Err(StatsError::Empty)));
    }

    #[test]
    fn the_median_lies_within_one_bucket_width_of_the_values_median() {
        let bounds = powers_of_two();
        let values: Vec<f64> = (0..10_001).map(|i| 3000.0 + (i % 1000) as f64 * 2.7).collect();
        let h = hist(&bounds, &values);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let exact = sorted[sorted.len() / 2];
        assert!((h.median() - exact).abs() <= h.width_at_median(), "{} vs {exact}", h.median());
        assert_eq!(h.width_at_median(), 4096.0, "the (4096, 8192] bucket");
    }

    #[test]
    fn differences_and_ratios_have_honest_intervals() {
        let bounds: Vec<f64> = (1..=100).map(|i| i as f64 * 10.0).collect();
        let a: Vec<f64> = (0..20_000).map(|i| 300.0 + (i % 200) as f64).collect();
        // b: the same spread, 50 higher; c: twice the spread around a's median.
        let b: Vec<f64> = a.iter().map(|v| v + 50.0).collect();
        let c: Vec<f64> = a.iter().map(|v| 399.5 + (v - 399.5) * 2.0).collect();
        let (ha, hb, hc) = (hist(&bounds, &a), hist(&bounds, &b), hist(&bounds, &c));
        let boot = Bootstrap::default();
        let d = median_difference_ci(&hb, &ha, &boot).unwrap();
        assert!(d.contains(50.0) && d.lower > 30.0 && d.upper < 70.0, "{d:?}");
        let same = median_difference_ci(&ha, &ha, &boot).unwrap();
        assert!(same.contains(0.0), "{same:?}");
        let r = variance_ratio_ci(&hc, &ha, &boot).unwrap();
        assert!(r.lower > 3.0 && r.upper < 5.0 && r.contains(4.0), "{r:?}");
        // Same data, same seed: same interval.
        assert_eq!(median_difference_ci(&hb, &ha, &boot).unwrap(), d);
    }

    #[test]
    fn resampling_keeps_the_total() {
        let h = hist(&powers_of_two(), &[300.0, 300.0, 700.0, 5000.0, 1e9]);
        let mut rng = Bootstrap::default().rng();
        let mut out = Vec::new();
        for _ in 0..100 {
            h.resample(&mut rng, &mut out);
            assert_eq!(out.iter().sum::<u64>(), 5);
            assert_eq!(out.len(), h.counts.len());
        }
    }
}
