//! Inference with the trace session as the sampling unit.
//!
//! Runs of one session share everything that makes sessions differ (the boot, the host's load,
//! the placement of the VM, the clocksource's calibration), so they are not independent draws
//! of an environment: pooling them as if they were gives intervals as narrow as the runs are
//! many, and a "difference" between two environments that is only the difference between their
//! sessions. Here each session contributes one value per column (its median, or the log of its
//! variance) and a group effect is estimated from those values by least squares, with strata of
//! other recorded factors as fixed effects; its interval is Student's t with the residual
//! degrees of freedom. The session-to-session spread is then in the interval, however many runs
//! each session has.

use statrs::distribution::{ContinuousCDF as _, StudentsT};

use super::{Interval, StatsError};

/// One session's value (its median, say) and where it belongs.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionValue {
    /// Group B (the one compared with the reference group A).
    pub in_b: bool,
    /// Index of the session's stratum (combination of the other factors' values).
    pub stratum: usize,
    pub value: f64,
}

/// A group effect estimated over sessions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SessionEffect {
    /// B − A (adjusted for the strata), its t interval (`resamples` 0: not a bootstrap).
    pub interval: Interval,
    pub std_error: f64,
    /// Residual degrees of freedom: sessions − 2 − (strata − 1).
    pub df: usize,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SessionEffectError {
    #[error("{sessions} session(s) leave no degrees of freedom for the between-session spread")]
    NoFreedom { sessions: usize },
    #[error("the groups cannot be told apart from the strata (every stratum holds one group only)")]
    Confounded,
    #[error(transparent)]
    Stats(#[from] StatsError),
}

/// Least squares of `value` on an intercept, the B indicator and stratum dummies; the B
/// coefficient with a t interval at `level`.
pub fn session_effect(sessions: &[SessionValue], level: f64) -> Result<SessionEffect, SessionEffectError> {
    if !(level > 0.0 && level < 1.0) {
        return Err(StatsError::LevelOutOfRange(level).into());
    }
    if let Some(v) = sessions.iter().find(|s| !s.value.is_finite()) {
        return Err(StatsError::NotFinite(v.value).into());
    }
    // Strata present, renumbered densely; the first is the baseline.
    let mut strata: Vec<usize> = sessions.iter().map(|s| s.stratum).collect();
    strata.sort_unstable();
    strata.dedup();
    let p = 2 + strata.len().saturating_sub(1);
    let n = sessions.len();
    let both = sessions.iter().any(|s| s.in_b) && sessions.iter().any(|s| !s.in_b);
    if both && !shares_a_stratum(sessions) {
        return Err(SessionEffectError::Confounded);
    }
    if !both || n <= p {
        return Err(SessionEffectError::NoFreedom { sessions: n });
    }
    let row = |s: &SessionValue| -> Vec<f64> {
        let mut r = vec![0.0; p];
        r[0] = 1.0;
        r[1] = f64::from(u8::from(s.in_b));
        if let Ok(k) = strata.binary_search(&s.stratum)
            && k > 0
        {
            r[1 + k] = 1.0;
        }
        r
    };
    let rows: Vec<Vec<f64>> = sessions.iter().map(row).collect();
    let values: Vec<f64> = sessions.iter().map(|s| s.value).collect();
    let fit = fit_sessions(&rows, &values).ok_or(SessionEffectError::Confounded)?;
    let df = n - p;
    let std_error = fit.std_error(1, df);
    let t = t_quantile(df, level);
    let estimate = fit.beta[1];
    Ok(SessionEffect {
        interval: Interval {
            estimate,
            lower: estimate - t * std_error,
            upper: estimate + t * std_error,
            level,
            resamples: 0,
        },
        std_error,
        df,
    })
}

/// [`session_effect`] of sessions' log variances, as a ratio b / a: the interval of the log
/// ratio exponentiated.
pub fn session_variance_ratio(log_variances: &[SessionValue], level: f64) -> Result<SessionEffect, SessionEffectError> {
    session_effect(log_variances, level).map(|e| SessionEffect {
        interval: Interval {
            estimate: e.interval.estimate.exp(),
            lower: e.interval.lower.exp(),
            upper: e.interval.upper.exp(),
            ..e.interval
        },
        ..e
    })
}

/// Whether some stratum has sessions of both groups (else B's effect is the strata's).
fn shares_a_stratum(sessions: &[SessionValue]) -> bool {
    sessions.iter().filter(|s| s.in_b).any(|b| sessions.iter().any(|a| !a.in_b && a.stratum == b.stratum))
}

/// The two-sided quantile of Student's t with `df` degrees of freedom at `level` (the
/// (1 + level)/2 quantile); NaN for no degree of freedom.
pub(super) fn t_quantile(df: usize, level: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, df as f64) {
        Ok(t) => t.inverse_cdf(0.5 + level / 2.0),
        Err(_) => f64::NAN,
    }
}

/// A least-squares fit over sessions, one row of the design each.
pub(super) struct SessionFit {
    /// Coefficients, the first (the intercept's) in the response's units.
    pub beta: Vec<f64>,
    /// (XᵀX)⁻¹.
    pub inv: Vec<Vec<f64>>,
    /// Residual sum of squares.
    pub rss: f64,
}

impl SessionFit {
    /// The standard error of coefficient `j` with `df` residual degrees of freedom.
    pub fn std_error(&self, j: usize, df: usize) -> f64 {
        (self.rss / df as f64 * self.inv[j][j]).max(0.0).sqrt()
    }
}

/// Least squares of `y` on the design `rows` (one row per session; the first column the
/// intercept, all ones), solved on the centred response: the fit is invariant, the sums stay
/// small for values near 1.111 s. None when XᵀX is singular.
pub(super) fn fit_sessions(rows: &[Vec<f64>], y: &[f64]) -> Option<SessionFit> {
    let p = rows.first().map_or(0, Vec::len);
    let centre = y.iter().sum::<f64>() / y.len() as f64;
    let mut xtx = vec![vec![0.0; p]; p];
    let mut xty = vec![0.0; p];
    for (r, v) in rows.iter().zip(y) {
        for a in 0..p {
            xty[a] += r[a] * (v - centre);
            for b in 0..p {
                xtx[a][b] += r[a] * r[b];
            }
        }
    }
    let inv = invert(xtx)?;
    let mut beta: Vec<f64> = (0..p).map(|a| (0..p).map(|b| inv[a][b] * xty[b]).sum()).collect();
    let rss: f64 = rows
        .iter()
        .zip(y)
        .map(|(r, v)| {
            let fit: f64 = r.iter().zip(&beta).map(|(x, b)| x * b).sum();
            (v - centre - fit).powi(2)
        })
        .sum();
    if let Some(intercept) = beta.first_mut() {
        *intercept += centre;
    }
    Some(SessionFit { beta, inv, rss })
}

/// Gauss–Jordan inverse with partial pivoting of a small symmetric matrix; None if singular.
fn invert(mut m: Vec<Vec<f64>>) -> Option<Vec<Vec<f64>>> {
    let p = m.len();
    let scale = m.iter().enumerate().map(|(i, r)| r[i].abs()).fold(0.0, f64::max).max(1.0);
    let mut inv: Vec<Vec<f64>> = (0..p).map(|i| (0..p).map(|j| f64::from(u8::from(i == j))).collect()).collect();
    for c in 0..p {
        let pivot = (c..p).max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))?;
        if m[pivot][c].abs() <= 1e-9 * scale {
            return None;
        }
        m.swap(c, pivot);
        inv.swap(c, pivot);
        let d = m[c][c];
        for j in 0..p {
            m[c][j] /= d;
            inv[c][j] /= d;
        }
        for r in 0..p {
            if r != c {
                let f = m[r][c];
                if f != 0.0 {
                    for j in 0..p {
                        m[r][j] -= f * m[c][j];
                        inv[r][j] -= f * inv[c][j];
                    }
                }
            }
        }
    }
    Some(inv)
}

/// The share of a group's variance that lies between its sessions (the intraclass
/// correlation, one-way random-effects ANOVA): 0 when sessions differ no more than their runs
/// let them, near 1 when the runs of a session agree and the sessions do not. None for fewer
/// than two sessions with runs.
pub fn between_session_share(sessions: &[&[f64]]) -> Option<f64> {
    let sessions: Vec<&[f64]> = sessions.iter().copied().filter(|s| !s.is_empty()).collect();
    let k = sessions.len();
    let total: usize = sessions.iter().map(|s| s.len()).sum();
    if k < 2 || total <= k {
        return None;
    }
    let means: Vec<f64> = sessions.iter().map(|s| super::mean(s)).collect();
    let grand = sessions.iter().flat_map(|s| s.iter()).sum::<f64>() / total as f64;
    let msb =
        sessions.iter().zip(&means).map(|(s, m)| s.len() as f64 * (m - grand).powi(2)).sum::<f64>() / (k - 1) as f64;
    let msw = sessions.iter().zip(&means).map(|(s, m)| s.iter().map(|x| (x - m).powi(2)).sum::<f64>()).sum::<f64>()
        / (total - k) as f64;
    let n0 =
        (total as f64 - sessions.iter().map(|s| (s.len() as f64).powi(2)).sum::<f64>() / total as f64) / (k - 1) as f64;
    let between = ((msb - msw) / n0).max(0.0);
    (between + msw > 0.0).then(|| between / (between + msw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(in_b: bool, stratum: usize, value: f64) -> SessionValue {
        SessionValue { in_b, stratum, value }
    }

    #[test]
    fn two_sample_t_matches_the_textbook() {
        // Pooled two-sample t: a = [1, 2, 3], b = [4, 6, 8]: difference 4, pooled variance
        // (2 + 8) / 4 = 2.5, SE √(2.5 (1/3 + 1/3)) = 1.29099, t(4, 0.975) = 2.776445.
        let s = [
            sv(false, 0, 1.0),
            sv(false, 0, 2.0),
            sv(false, 0, 3.0),
            sv(true, 0, 4.0),
            sv(true, 0, 6.0),
            sv(true, 0, 8.0),
        ];
        let e = session_effect(&s, 0.95).unwrap();
        assert_eq!(e.df, 4);
        assert!((e.interval.estimate - 4.0).abs() < 1e-12);
        assert!((e.std_error - 1.290_994_448_7).abs() < 1e-9, "{e:?}");
        assert!((e.interval.upper - (4.0 + 2.776_445_105 * 1.290_994_448_7)).abs() < 1e-6, "{e:?}");
    }

    #[test]
    fn strata_are_fixed_effects() {
        // Stratum 1 is 100 higher for both groups; B is 5 higher within each stratum.
        let s = [
            sv(false, 0, 10.0),
            sv(false, 0, 12.0),
            sv(true, 0, 15.0),
            sv(true, 0, 17.0),
            sv(false, 1, 110.0),
            sv(false, 1, 112.0),
            sv(true, 1, 115.0),
            sv(true, 1, 117.0),
        ];
        let e = session_effect(&s, 0.95).unwrap();
        assert!((e.interval.estimate - 5.0).abs() < 1e-9);
        assert_eq!(e.df, 5);
        assert!(e.interval.lower > 0.0, "{e:?}");
    }

    #[test]
    fn groups_that_never_share_a_stratum_are_confounded() {
        let s = [sv(false, 0, 1.0), sv(false, 0, 2.0), sv(true, 1, 3.0), sv(true, 1, 4.0)];
        assert_eq!(session_effect(&s, 0.95), Err(SessionEffectError::Confounded));
        let one_each = [sv(false, 0, 1.0), sv(true, 0, 2.0)];
        assert_eq!(session_effect(&one_each, 0.95), Err(SessionEffectError::NoFreedom { sessions: 2 }));
        let split = [sv(false, 0, 1.0), sv(true, 1, 2.0)];
        assert_eq!(session_effect(&split, 0.95), Err(SessionEffectError::Confounded));
    }

    #[test]
    fn between_session_share_separates_session_effects_from_run_noise() {
        let noise = |i: usize| ((i * 7919) % 101) as f64 / 100.0;
        let same: Vec<Vec<f64>> = (0..4).map(|s| (0..200).map(|i| noise(i + 13 * s)).collect()).collect();
        let refs: Vec<&[f64]> = same.iter().map(Vec::as_slice).collect();
        assert!(between_session_share(&refs).unwrap() < 0.02);
        let shifted: Vec<Vec<f64>> =
            same.iter().enumerate().map(|(s, v)| v.iter().map(|x| x + 10.0 * s as f64).collect()).collect();
        let refs: Vec<&[f64]> = shifted.iter().map(Vec::as_slice).collect();
        assert!(between_session_share(&refs).unwrap() > 0.99);
        assert_eq!(between_session_share(&refs[..1]), None);
    }
}
