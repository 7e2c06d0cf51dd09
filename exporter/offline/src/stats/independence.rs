//! A model check: is a chain's total what its segments would give if they were independent?
//!
//! Under independence the total is distributed as the convolution of the segments'
//! distributions. For each quantile q the check reports Δ_q = Q_T(q) − Q_ind(q), the measured
//! total's quantile minus the independent sum's, with a bootstrap CI. A Δ whose CI excludes 0
//! says the segments are correlated (slow together when Δ > 0 at high q).
//!
//! Q_ind: for two segments exactly (the n₁n₂ sums, counted with a two-pointer sweep and the
//! order statistic found by bisection over integer nanoseconds); for more, from 2^18 sums drawn
//! independently (seeded).
//!
//! Intervals come from the null itself: B permutations of each segment but the first across the
//! runs break any dependence and keep every margin, so Δ_q of a permuted total is Δ_q as
//! independence makes it (its spread includes the total's sampling error at this n). A max-T
//! rule over the reported quantiles (each Δ standardised by its null SD, the level's quantile
//! of the largest) gives intervals of Δ_q minus its null mean that hold **together** at the
//! level: "consistent with independence" (every interval contains 0) is one test of the stated
//! size, not three. (Resampling the total and an independent sum separately, as before, drew
//! the null spread twice: intervals 2–3× too wide, a 0.5 correlation flagged in 12 % of
//! 300-run sessions.) Deterministic for a given seed.

use rand::{RngExt as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use super::{Bootstrap, StatsError, check_finite, percentile_sorted};

/// Quantiles the check reports.
pub const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];
/// Runs used at most (a uniform stride through the runs beyond it).
pub const MAX_RUNS: usize = 20_000;
/// Independent sums drawn for three or more segments.
const DRAWS: usize = 1 << 18;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QuantileCheck {
    pub q: f64,
    /// Q_T(q) and Q_ind(q), in the unit of the input (ns; `in_seconds` for reports).
    pub measured: f64,
    pub independent: f64,
    /// Δ_q = measured − independent, ns; and the interval of Δ_q beyond what independence
    /// gives at this n (Δ_q minus its null mean, simultaneous over the quantiles).
    pub difference: f64,
    pub lower: f64,
    pub upper: f64,
}

impl QuantileCheck {
    /// The same check with its values in seconds (the input in ns).
    pub fn in_seconds(&self) -> QuantileCheck {
        QuantileCheck {
            q: self.q,
            measured: self.measured / 1e9,
            independent: self.independent / 1e9,
            difference: self.difference / 1e9,
            lower: self.lower / 1e9,
            upper: self.upper / 1e9,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IndependenceCheck {
    pub runs: usize,
    pub quantiles: Vec<QuantileCheck>,
    pub level: f64,
    pub resamples: usize,
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_unstable_by(f64::total_cmp);
    v
}

/// #{(i, j): a_i + b_j ≤ t} for sorted `a`, `b`.
fn count_at_most(a: &[f64], b: &[f64], t: f64) -> u128 {
    let mut j = b.len();
    let mut n: u128 = 0;
    for &x in a {
        while j > 0 && x + b[j - 1] > t {
            j -= 1;
        }
        n += j as u128;
    }
    n
}

/// The m-th smallest (0-based) of the pairwise sums of sorted integer-valued `a` and `b`.
fn kth_sum(a: &[f64], b: &[f64], m: u128) -> f64 {
    let (mut lo, mut hi) = (a[0] + b[0], a[a.len() - 1] + b[b.len() - 1]);
    while lo < hi {
        let mid = ((lo + hi) / 2.0).floor();
        if count_at_most(a, b, mid) > m {
            hi = mid;
        } else {
            lo = mid + 1.0;
        }
    }
    lo
}

/// Quantile q of the distribution of a + b (a, b independent, each uniform over its values),
/// with numpy's linear interpolation between order statistics.
fn exact_pair_quantile(a: &[f64], b: &[f64], q: f64) -> f64 {
    let total = a.len() as u128 * b.len() as u128;
    let pos = q * (total - 1) as f64;
    let lo = pos.floor() as u128;
    let frac = pos - lo as f64;
    let x = kth_sum(a, b, lo);
    if frac == 0.0 || lo + 1 >= total {
        return x;
    }
    x + (kth_sum(a, b, lo + 1) - x) * frac
}

/// Check the total of `segments[i][r]` (finite, integer ns, equally long) against the
/// independent sum of its segments.
pub fn independence_check(segments: &[Vec<f64>], boot: &Bootstrap) -> Result<IndependenceCheck, StatsError> {
    boot.validate()?;
    let k = segments.len();
    if k < 2 {
        return Err(StatsError::Underdetermined { runs: 0, coefficients: 2 });
    }
    let full_n = segments[0].len();
    for s in segments {
        check_finite(s)?;
        assert_eq!(s.len(), full_n, "every segment has a value per run");
    }
    if full_n < 10 {
        return Err(StatsError::Underdetermined { runs: full_n, coefficients: 10 });
    }
    let stride = full_n.div_ceil(MAX_RUNS);
    let segs: Vec<Vec<f64>> = segments.iter().map(|s| s.iter().step_by(stride).copied().collect()).collect();
    let n = segs[0].len();
    let total: Vec<f64> = (0..n).map(|r| segs.iter().map(|s| s[r]).sum()).collect();
    let t_sorted = sorted(total.clone());
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(boot.seed);
    let independent: Vec<f64> = if k == 2 {
        let (a, b) = (sorted(segs[0].clone()), sorted(segs[1].clone()));
        QUANTILES.iter().map(|&q| exact_pair_quantile(&a, &b, q)).collect()
    } else {
        let draws = sorted((0..DRAWS).map(|_| segs.iter().map(|s| s[rng.random_range(0..n)]).sum::<f64>()).collect());
        QUANTILES.iter().map(|&q| percentile_sorted(&draws, q)).collect()
    };
    // The null: permuted totals.
    let mut null: Vec<Vec<f64>> = vec![Vec::with_capacity(boot.resamples); QUANTILES.len()];
    let mut perm: Vec<f64> = vec![0.0; n];
    let mut order: Vec<usize> = (0..n).collect();
    for _ in 0..boot.resamples {
        perm.copy_from_slice(&segs[0]);
        for s in &segs[1..] {
            // Fisher–Yates.
            for i in (1..n).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            for (p, &j) in perm.iter_mut().zip(&order) {
                *p += s[j];
            }
        }
        perm.sort_unstable_by(f64::total_cmp);
        for ((d, &q), ind) in null.iter_mut().zip(&QUANTILES).zip(&independent) {
            d.push(percentile_sorted(&perm, q) - ind);
        }
    }
    // Max-T over the quantiles: one critical value for all of them.
    let centre: Vec<f64> = null.iter().map(|d| super::mean(d)).collect();
    let spread: Vec<f64> = null.iter().map(|d| super::std_dev(d)).collect();
    let max_t: Vec<f64> = sorted(
        (0..boot.resamples)
            .map(|b| {
                (0..QUANTILES.len())
                    .filter(|&k| spread[k] > 0.0)
                    .map(|k| (null[k][b] - centre[k]).abs() / spread[k])
                    .fold(0.0, f64::max)
            })
            .collect(),
    );
    let critical = percentile_sorted(&max_t, boot.level);
    let quantiles = QUANTILES
        .iter()
        .zip(independent)
        .enumerate()
        .map(|(k, (&q, ind))| {
            let measured = percentile_sorted(&t_sorted, q);
            let excess = measured - ind - centre[k];
            QuantileCheck {
                q,
                measured,
                independent: ind,
                difference: measured - ind,
                lower: excess - critical * spread[k],
                upper: excess + critical * spread[k],
            }
        })
        .collect();
    Ok(IndependenceCheck { runs: n, quantiles, level: boot.level, resamples: boot.resamples })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize, seed: u64) -> Vec<f64> {
        crate::stats::test_sequence(n, seed).map(|x| 1000.0 + (x % 997) as f64).collect()
    }

    #[test]
    fn exact_pair_quantiles_match_the_brute_force_sum() {
        let a = sorted(series(40, 1));
        let b = sorted(series(30, 2));
        let all = sorted(a.iter().flat_map(|x| b.iter().map(move |y| x + y)).collect());
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(exact_pair_quantile(&a, &b, q), percentile_sorted(&all, q), "q {q}");
        }
    }

    #[test]
    fn independent_segments_pass_and_correlated_ones_do_not() {
        let boot = Bootstrap { resamples: 200, ..Default::default() };
        let ind = independence_check(&[series(2000, 3), series(2000, 4)], &boot).unwrap();
        for c in &ind.quantiles {
            assert!(c.lower <= 0.0 && 0.0 <= c.upper, "independent: {c:?}");
        }
        // The second segment is slow exactly when the first is: the tail of the total is
        // heavier than independence predicts.
        let a = series(2000, 5);
        let b = a.clone();
        let cor = independence_check(&[a, b], &boot).unwrap();
        assert!(cor.quantiles[2].lower > 0.0, "correlated: {:?}", cor.quantiles[2]);
        // Three segments go through the drawn sums.
        let three = independence_check(&[series(1000, 6), series(1000, 7), series(1000, 8)], &boot).unwrap();
        assert!(three.quantiles.iter().all(|c| c.lower <= 0.0 && 0.0 <= c.upper), "{three:?}");
    }
}
