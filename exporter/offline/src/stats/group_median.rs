//! The median of a group of sessions (all runs with `env = host`, say), with the session as
//! the sampling unit and every session weighed by the runs it saw.
//!
//! A session may keep only a sample of its runs (the reservoir): pooling the kept runs would
//! give a session of 2 000 runs kept as 500 the weight of a session of 500. Each kept run
//! therefore stands for `seen / kept` runs of its session, and the group's median is the
//! weighted median of its runs: the median of every run the group's sessions saw.
//!
//! Runs of one session are not independent draws of the group (they share the session's
//! boot, load, placement), so the interval resamples *sessions*, whole, with their weights
//! (a one-stage cluster bootstrap). With k sessions that bootstrap underestimates the spread
//! by (k − 1)/k and its percentiles know nothing of how few the sessions are; the interval is
//! therefore estimate ± t(k − 1) · √(k / (k − 1)) · SD of the resampled medians, which for the
//! mean of equal sessions is exactly Student's interval over the session means. Two sessions
//! that disagree give a wide interval: they say little about the sessions not recorded. With
//! one session the interval is the run-level bootstrap of that session, and is a statement
//! about that session only.

use rand::RngExt as _;

use super::{Bootstrap, Interval, StatsError, check_finite, median_ci};

/// One session's values in the group, and the runs it stands for.
#[derive(Clone, Copy, Debug)]
pub struct SessionSample<'a> {
    /// Kept values (finite).
    pub values: &'a [f64],
    /// Runs the session saw in the group (≥ values.len(); more once its reservoir was full).
    pub seen: f64,
}

impl SessionSample<'_> {
    /// The runs each kept value stands for (seen / kept, at least 1).
    fn per_value(&self) -> f64 {
        self.seen.max(self.values.len() as f64) / self.values.len() as f64
    }
}

/// The weighted median of a group of sessions and its interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupMedian {
    pub interval: Interval,
    /// Sessions with values.
    pub sessions: usize,
    /// Degrees of freedom of the t interval (sessions − 1); None: one session, run-level.
    pub df: Option<usize>,
}

/// All values of the group sorted, each with the weight of one of its runs.
struct Pooled {
    /// (value, session) sorted by value.
    values: Vec<(f64, u32)>,
    /// Per session: the weight of each of its values (seen / kept).
    per_value: Vec<f64>,
    /// Per session: its values sorted.
    sorted: Vec<Vec<f64>>,
}

impl Pooled {
    fn new(sessions: &[SessionSample]) -> Pooled {
        let mut values: Vec<(f64, u32)> =
            sessions.iter().enumerate().flat_map(|(s, x)| x.values.iter().map(move |v| (*v, s as u32))).collect();
        values.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let per_value = sessions.iter().map(SessionSample::per_value).collect();
        let sorted = sessions
            .iter()
            .map(|s| {
                let mut v = s.values.to_vec();
                v.sort_unstable_by(f64::total_cmp);
                v
            })
            .collect();
        Pooled { values, per_value, sorted }
    }

    /// Weight at or below `x` with session `s` counted `times[s]` times.
    fn weight_at_or_below(&self, x: f64, times: &[f64]) -> f64 {
        self.sorted
            .iter()
            .enumerate()
            .filter(|(s, _)| times[*s] > 0.0)
            .map(|(s, v)| times[s] * self.per_value[s] * v.partition_point(|y| *y <= x) as f64)
            .sum()
    }

    /// The weighted median with session `s` counted `times[s]` times: the smallest value at
    /// which the weight at or below reaches half; the mean with the next value when it is
    /// exactly half (so equal weights give the usual median of an even number of values).
    fn median(&self, times: &[f64]) -> f64 {
        let total: f64 =
            self.sorted.iter().enumerate().map(|(s, v)| times[s] * self.per_value[s] * v.len() as f64).sum();
        let half = total / 2.0;
        let (mut lo, mut hi) = (0usize, self.values.len() - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.weight_at_or_below(self.values[mid].0, times) >= half * (1.0 - 1e-12) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let x = self.values[lo].0;
        let below = self.weight_at_or_below(x, times);
        if (below - half).abs() <= 1e-12 * total {
            // Exactly half at or below x: the median lies between x and the next value drawn.
            let next =
                self.values[lo..].iter().find(|(v, s)| *v > x && times[*s as usize] > 0.0).map_or(x, |(v, _)| *v);
            (x + next) / 2.0
        } else {
            x
        }
    }
}

/// The weighted median of the sessions' runs and its interval (see the module's notes).
pub fn group_median(sessions: &[SessionSample], boot: &Bootstrap) -> Result<GroupMedian, StatsError> {
    boot.validate()?;
    let sessions: Vec<SessionSample> = sessions.iter().copied().filter(|s| !s.values.is_empty()).collect();
    for s in &sessions {
        check_finite(s.values)?;
    }
    match sessions.as_slice() {
        [] => Err(StatsError::Empty),
        [one] => Ok(GroupMedian { interval: median_ci(one.values, boot)?, sessions: 1, df: None }),
        _ => {
            let k = sessions.len();
            let pooled = Pooled::new(&sessions);
            let estimate = pooled.median(&vec![1.0; k]);
            let mut rng = boot.rng();
            let mut times = vec![0.0; k];
            let mut medians = Vec::with_capacity(boot.resamples);
            for _ in 0..boot.resamples {
                times.fill(0.0);
                for _ in 0..k {
                    times[rng.random_range(0..k)] += 1.0;
                }
                medians.push(pooled.median(&times));
            }
            let sd = super::std_dev(&medians) * (k as f64 / (k - 1) as f64).sqrt();
            let df = k - 1;
            let t = super::sessions::t_quantile(df, boot.level);
            Ok(GroupMedian {
                interval: Interval {
                    estimate,
                    lower: estimate - t * sd,
                    upper: estimate + t * sd,
                    level: boot.level,
                    resamples: boot.resamples,
                },
                sessions: k,
                df: Some(df),
            })
        }
    }
}

/// The weighted median alone (no interval): every session counted once.
pub fn weighted_median(sessions: &[SessionSample]) -> Option<f64> {
    let sessions: Vec<SessionSample> = sessions.iter().copied().filter(|s| !s.values.is_empty()).collect();
    (!sessions.is_empty()).then(|| Pooled::new(&sessions).median(&vec![1.0; sessions.len()]))
}

/// The weighted standard deviation of the sessions' runs (each run weighing seen / kept of its
/// session; n − 1 in the denominator counted in runs seen).
pub fn weighted_std_dev(sessions: &[SessionSample]) -> f64 {
    let (mut w, mut sum) = (0.0, 0.0);
    for s in sessions.iter().filter(|s| !s.values.is_empty()) {
        let per = s.per_value();
        w += per * s.values.len() as f64;
        sum += per * s.values.iter().sum::<f64>();
    }
    if w <= 1.0 {
        return 0.0;
    }
    let mean = sum / w;
    let mut ss = 0.0;
    for s in sessions.iter().filter(|s| !s.values.is_empty()) {
        let per = s.per_value();
        ss += per * s.values.iter().map(|x| (x - mean).powi(2)).sum::<f64>();
    }
    (ss / (w - 1.0)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(values: &[f64], seen: f64) -> SessionSample<'_> {
        SessionSample { values, seen }
    }

    #[test]
    fn equal_weights_give_the_usual_median() {
        let (a, b) = ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]);
        assert_eq!(weighted_median(&[one(&a, 3.0), one(&b, 3.0)]), Some(3.5));
        let (a, b) = ([1.0, 1.0], [1.0, 9.0]);
        assert_eq!(weighted_median(&[one(&a, 2.0), one(&b, 2.0)]), Some(1.0));
        let (a, b) = ([1.0, 2.0], [2.0, 3.0, 7.0]);
        assert_eq!(weighted_median(&[one(&a, 2.0), one(&b, 3.0)]), Some(2.0));
    }

    #[test]
    fn a_capped_session_weighs_what_it_saw() {
        // The audit's case: 2 000 runs near 20 µs kept as 500, and 500 runs near 30 µs. The
        // median of the 2 500 runs seen is in the first session's upper part (rank 1 250 of
        // its 2 000 ≈ its 62.5th percentile), not between the two sessions.
        let a: Vec<f64> = (0..500).map(|i| 19_500.0 + 2.0 * i as f64).collect();
        let b: Vec<f64> = (0..500).map(|i| 29_500.0 + 2.0 * i as f64).collect();
        let m = weighted_median(&[one(&a, 2_000.0), one(&b, 500.0)]).unwrap();
        assert!((m - (19_500.0 + 0.625 * 1_000.0)).abs() < 4.0, "{m}");
        let unweighted = weighted_median(&[one(&a, 500.0), one(&b, 500.0)]).unwrap();
        assert!(unweighted > 20_000.0 && unweighted < 30_000.0 && (unweighted - 24_999.0).abs() < 1_001.0);
    }

    #[test]
    fn one_session_is_its_own_bootstrap_and_two_disagreeing_ones_are_wide() {
        let a: Vec<f64> = (0..300).map(|i| 20_000.0 + (i % 50) as f64).collect();
        let boot = Bootstrap::default();
        let g = group_median(&[one(&a, 300.0)], &boot).unwrap();
        assert_eq!((g.sessions, g.df), (1, None));
        assert_eq!(g.interval, median_ci(&a, &boot).unwrap());
        let b: Vec<f64> = a.iter().map(|x| x + 10_000.0).collect();
        let g = group_median(&[one(&a, 300.0), one(&b, 300.0)], &boot).unwrap();
        assert_eq!((g.sessions, g.df), (2, Some(1)));
        assert!(g.interval.lower < 20_000.0 && g.interval.upper > 30_000.0, "{:?}", g.interval);
    }

    #[test]
    fn same_seed_same_interval_and_weighted_sd() {
        let a: Vec<f64> = (0..100).map(|i| i as f64).collect();
        let b: Vec<f64> = (0..100).map(|i| 5.0 + i as f64).collect();
        let c: Vec<f64> = (0..100).map(|i| 2.0 + i as f64).collect();
        let s = [one(&a, 100.0), one(&b, 100.0), one(&c, 100.0)];
        let boot = Bootstrap::default();
        assert_eq!(group_median(&s, &boot).unwrap(), group_median(&s, &boot).unwrap());
        let all: Vec<f64> = a.iter().chain(&b).chain(&c).copied().collect();
        assert!((weighted_std_dev(&s) - super::super::std_dev(&all)).abs() < 1e-9);
    }
}
