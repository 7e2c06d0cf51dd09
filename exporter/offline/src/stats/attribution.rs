//! Where a chain's variance comes from: each segment's share of the variance of the total,
//! `share_i = Cov(S_i, T) / Var(T)` with `T = Σ S_i`. Covariance is bilinear, so the shares sum
//! to 1: each segment gets its own variance plus half of every covariance it has with another.
//! A share can be negative (a segment that shrinks when the total grows) or above 1.
//!
//! CIs: pairs bootstrap (whole runs resampled, their segments together), percentile intervals
//! per share; a resample whose total is constant is skipped and counted. Per-share CIs need not
//! sum to 1.

use rand::{RngExt as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use super::{Bootstrap, StatsError, check_finite, percentile_sorted};

/// One segment's share of Var(total).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Share {
    pub share: f64,
    pub lower: f64,
    pub upper: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attribution {
    /// One per segment, in segment order.
    pub shares: Vec<Share>,
    pub runs: usize,
    pub resamples_used: usize,
    pub level: f64,
}

/// Shares of the rows `rows` (run indices) of `segments[i][r]`; None when the total is constant.
fn shares(segments: &[Vec<f64>], rows: &mut dyn Iterator<Item = usize>) -> Option<Vec<f64>> {
    let k = segments.len();
    let rows: Vec<usize> = rows.collect();
    let n = rows.len() as f64;
    // Centred first (two-pass): the shares then sum to 1 within rounding.
    let mean: Vec<f64> = segments.iter().map(|s| rows.iter().map(|&r| s[r]).sum::<f64>() / n).collect();
    let mut cov = vec![0.0; k];
    let mut var_t = 0.0;
    let mut d = vec![0.0; k];
    for &r in &rows {
        for i in 0..k {
            d[i] = segments[i][r] - mean[i];
        }
        let dt: f64 = d.iter().sum();
        var_t += dt * dt;
        for i in 0..k {
            cov[i] += d[i] * dt;
        }
    }
    (var_t > 0.0).then(|| cov.iter().map(|c| c / var_t).collect())
}

/// The variance attribution of a chain's segments (`segments[i][r]`: segment `i` of run `r`).
pub fn covariance_shares(segments: &[Vec<f64>], boot: &Bootstrap) -> Result<Attribution, StatsError> {
    boot.validate()?;
    let n = segments.first().map_or(0, Vec::len);
    for s in segments {
        check_finite(s)?;
        assert_eq!(s.len(), n, "every segment has a value per run");
    }
    if n < 3 {
        return Err(StatsError::Underdetermined { runs: n, coefficients: 3 });
    }
    let full = shares(segments, &mut (0..n)).ok_or_else(|| StatsError::Collinear("the total is constant".into()))?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(boot.seed);
    let mut dists: Vec<Vec<f64>> = vec![Vec::with_capacity(boot.resamples); segments.len()];
    let mut idx = vec![0usize; n];
    for _ in 0..boot.resamples {
        for i in idx.iter_mut() {
            *i = rng.random_range(0..n);
        }
        if let Some(s) = shares(segments, &mut idx.iter().copied()) {
            for (d, v) in dists.iter_mut().zip(s) {
                d.push(v);
            }
        }
    }
    let alpha = (1.0 - boot.level) / 2.0;
    let used = dists[0].len();
    let shares = full
        .iter()
        .zip(dists.iter_mut())
        .map(|(&share, d)| {
            d.sort_unstable_by(f64::total_cmp);
            let (lower, upper) = if d.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                (percentile_sorted(d, alpha), percentile_sorted(d, 1.0 - alpha))
            };
            Share { share, lower, upper }
        })
        .collect();
    Ok(Attribution { shares, runs: n, resamples_used: used, level: boot.level })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize, seed: u64, scale: f64) -> Vec<f64> {
        crate::stats::test_sequence(n, seed).map(|x| 1000.0 + (x % 1000) as f64 * scale).collect()
    }

    #[test]
    fn shares_sum_to_one_and_follow_the_variances() {
        // Independent segments: shares ≈ variance proportions 1 : 4 : 25 (scales 1, 2, 5).
        let s = vec![series(3000, 1, 1.0), series(3000, 2, 2.0), series(3000, 3, 5.0)];
        let a = covariance_shares(&s, &Bootstrap { resamples: 200, ..Default::default() }).unwrap();
        let sum: f64 = a.shares.iter().map(|x| x.share).sum();
        assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        let want = [1.0 / 30.0, 4.0 / 30.0, 25.0 / 30.0];
        for (sh, w) in a.shares.iter().zip(want) {
            assert!(sh.lower <= w && w <= sh.upper, "{sh:?} vs {w}");
        }
        assert_eq!(a.resamples_used, 200);
    }

    #[test]
    fn a_segment_that_moves_with_another_shares_their_covariance() {
        let a = series(500, 9, 1.0);
        let b: Vec<f64> = a.iter().map(|x| 2.0 * x).collect();
        let r = covariance_shares(&[a, b], &Bootstrap::default()).unwrap();
        // Var(T) = 9 Var(a); Cov(a, T) = 3 Var(a): shares 1/3 and 2/3.
        assert!((r.shares[0].share - 1.0 / 3.0).abs() < 1e-9);
        assert!((r.shares[1].share - 2.0 / 3.0).abs() < 1e-9);
        assert!(covariance_shares(&[vec![1.0; 10]], &Bootstrap::default()).is_err(), "constant total");
    }
}
