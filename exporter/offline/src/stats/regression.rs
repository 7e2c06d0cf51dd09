//! Bootstrap (pairs) regression: ordinary least squares of a response (the chain's total
//! delta) on its components (segment deltas, interference time), with an intercept, and
//! percentile CIs of each coefficient from resampled runs.
//!
//! Over several sessions ([`bootstrap_regression_by_session`]) runs are not independent: a
//! predictor that varies within sessions (interference) gets its percentile CI from runs
//! resampled within each session, but the intercept and a predictor constant within every
//! session (a session factor: env, governor) are estimated from differences *between*
//! sessions, and resampling runs would make their intervals as narrow as the runs are many.
//! Those are estimated over sessions: each session's mean response, less the within-session
//! predictors' part (their slopes from the pooled fit, at the session's mean values), is
//! regressed on an intercept and the session-level predictors by least squares, each session
//! one unit, with Student's t on G − (session-level terms) degrees of freedom (G sessions) —
//! for one factor of two levels exactly the two-sample t interval over session means. (A
//! cluster bootstrap of whole sessions was tried first: with 2 sessions per level it covered
//! 92.8 % at 95 %, as few clusters make it.) With no degree of freedom left the interval is
//! absent (NaN bounds, `session_df` None).

use rand::{RngExt as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use super::{Bootstrap, StatsError, check_finite, percentile_sorted};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Coefficient {
    pub name: String,
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
    /// The interval is over sessions (a session-level term); false: over runs.
    pub by_session: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Regression {
    /// `intercept` first, then one per predictor.
    pub coefficients: Vec<Coefficient>,
    pub runs: usize,
    /// Fraction of the response's variance the fit explains.
    pub r_squared: f64,
    /// Resamples that gave a solvable system (a resample can repeat runs until a predictor is
    /// constant; those are skipped).
    pub resamples_used: usize,
    pub level: f64,
    /// Sessions the runs came from (1: a single-session fit, every interval over runs).
    pub sessions: usize,
    /// Degrees of freedom of the session-level intervals; None: one session, or none left.
    pub session_df: Option<usize>,
}

/// Centre and scale of each predictor: the system is solved on standardized columns, which
/// keeps it well conditioned when a predictor varies little around a large value (a constant
/// 1.111 s offset, say), then mapped back.
struct Standardize {
    mean: Vec<f64>,
    scale: Vec<f64>,
    /// The response is centred too.
    y_mean: f64,
}

/// Solve the least-squares problem for rows `rows` (indices into the data); coefficients are
/// returned in the original units, intercept first.
fn ols(y: &[f64], cols: &[Vec<f64>], std: &Standardize, rows: &mut dyn Iterator<Item = usize>) -> Option<Vec<f64>> {
    let p = cols.len() + 1;
    let mut xtx = vec![0.0; p * p];
    let mut xty = vec![0.0; p];
    let mut row = vec![0.0; p];
    for r in rows {
        row[0] = 1.0;
        for (j, c) in cols.iter().enumerate() {
            row[j + 1] = (c[r] - std.mean[j]) / std.scale[j];
        }
        for a in 0..p {
            xty[a] += row[a] * (y[r] - std.y_mean);
            for b in 0..=a {
                xtx[a * p + b] += row[a] * row[b];
            }
        }
    }
    // Cholesky of the (scaled) normal matrix, lower triangle.
    let mut l = vec![0.0; p * p];
    for i in 0..p {
        for j in 0..=i {
            let mut s = xtx[i * p + j];
            for k in 0..j {
                s -= l[i * p + k] * l[j * p + k];
            }
            if i == j {
                if s <= 1e-9 * xtx[i * p + i].abs().max(1e-300) {
                    return None;
                }
                l[i * p + i] = s.sqrt();
            } else {
                l[i * p + j] = s / l[j * p + j];
            }
        }
    }
    let mut z = vec![0.0; p];
    for i in 0..p {
        let s: f64 = (0..i).map(|k| l[i * p + k] * z[k]).sum();
        z[i] = (xty[i] - s) / l[i * p + i];
    }
    let mut beta = vec![0.0; p];
    for i in (0..p).rev() {
        let s: f64 = (i + 1..p).map(|k| l[k * p + i] * beta[k]).sum();
        beta[i] = (z[i] - s) / l[i * p + i];
    }
    let mut out = vec![0.0; p];
    out[0] = beta[0] + std.y_mean;
    for j in 0..cols.len() {
        out[j + 1] = beta[j + 1] / std.scale[j];
        out[0] -= out[j + 1] * std.mean[j];
    }
    Some(out)
}

/// Regress `y` on the predictor columns `cols` (each as long as `y`), named `names`.
pub fn bootstrap_regression(
    y: &[f64],
    cols: &[Vec<f64>],
    names: &[String],
    boot: &Bootstrap,
) -> Result<Regression, StatsError> {
    let n = y.len();
    bootstrap_regression_rows(y, cols, names, boot, &mut |rng, idx| {
        idx.clear();
        idx.extend((0..n).map(|_| rng.random_range(0..n)));
    })
}

fn standardize(y: &[f64], cols: &[Vec<f64>]) -> Standardize {
    Standardize {
        mean: cols.iter().map(|c| super::mean(c)).collect(),
        scale: cols.iter().map(|c| super::std_dev(c)).collect(),
        y_mean: super::mean(y),
    }
}

/// The fit, and percentile CIs over resamples whose rows `draw` picks.
fn bootstrap_regression_rows(
    y: &[f64],
    cols: &[Vec<f64>],
    names: &[String],
    boot: &Bootstrap,
    draw: &mut dyn FnMut(&mut Xoshiro256PlusPlus, &mut Vec<usize>),
) -> Result<Regression, StatsError> {
    boot.validate()?;
    check_finite(y)?;
    for c in cols {
        check_finite(c)?;
        assert_eq!(c.len(), y.len(), "predictor columns must be as long as the response");
    }
    let n = y.len();
    let p = cols.len() + 1;
    if n <= p {
        return Err(StatsError::Underdetermined { runs: n, coefficients: p });
    }
    let std = standardize(y, cols);
    if let Some(j) = std.scale.iter().position(|s| *s == 0.0) {
        return Err(StatsError::Collinear(format!(
            "predictor {} is constant",
            names.get(j).map_or("?", String::as_str)
        )));
    }
    let full = ols(y, cols, &std, &mut (0..n))
        .ok_or_else(|| StatsError::Collinear("the predictors are linearly dependent".into()))?;
    let mean_y = super::mean(y);
    let (mut ss_res, mut ss_tot) = (0.0, 0.0);
    for r in 0..n {
        let fit = full[0] + cols.iter().enumerate().map(|(j, c)| full[j + 1] * c[r]).sum::<f64>();
        ss_res += (y[r] - fit).powi(2);
        ss_tot += (y[r] - mean_y).powi(2);
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(boot.seed);
    let mut dists: Vec<Vec<f64>> = vec![Vec::with_capacity(boot.resamples); p];
    let mut idx = Vec::with_capacity(n);
    for _ in 0..boot.resamples {
        draw(&mut rng, &mut idx);
        if let Some(beta) = ols(y, cols, &std, &mut idx.iter().copied()) {
            for (d, b) in dists.iter_mut().zip(beta) {
                d.push(b);
            }
        }
    }
    let used = dists[0].len();
    let alpha = (1.0 - boot.level) / 2.0;
    let coefficients = std::iter::once("intercept".to_string())
        .chain(names.iter().cloned())
        .zip(full.iter())
        .zip(dists.iter_mut())
        .map(|((name, &estimate), d)| {
            d.sort_unstable_by(f64::total_cmp);
            let (lower, upper) = if d.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                (percentile_sorted(d, alpha), percentile_sorted(d, 1.0 - alpha))
            };
            Coefficient { name, estimate, lower, upper, by_session: false }
        })
        .collect();
    Ok(Regression {
        coefficients,
        runs: n,
        r_squared: if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { 1.0 },
        resamples_used: used,
        level: boot.level,
        sessions: 1,
        session_df: None,
    })
}

/// [`bootstrap_regression`] of runs from several sessions (`session[r]`: run r's session):
/// see the module's notes. One session: the same as `bootstrap_regression`.
pub fn bootstrap_regression_by_session(
    y: &[f64],
    cols: &[Vec<f64>],
    names: &[String],
    session: &[u32],
    boot: &Bootstrap,
) -> Result<Regression, StatsError> {
    assert_eq!(session.len(), y.len(), "one session per run");
    let mut ids: Vec<u32> = session.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let g = ids.len();
    if g < 2 {
        return bootstrap_regression(y, cols, names, boot);
    }
    // Rows per session, in the order given.
    let rows: Vec<Vec<usize>> =
        ids.iter().map(|id| (0..y.len()).filter(|&r| session[r] == *id).collect::<Vec<usize>>()).collect();
    // Runs resampled within each session: the within-session predictors' intervals.
    let mut fit = bootstrap_regression_rows(y, cols, names, boot, &mut |rng, idx| {
        idx.clear();
        for r in &rows {
            for _ in 0..r.len() {
                idx.push(r[rng.random_range(0..r.len())]);
            }
        }
    })?;
    // Session-level terms: the intercept and predictors constant within every session.
    let between: Vec<bool> = std::iter::once(true)
        .chain(cols.iter().map(|c| rows.iter().all(|r| r.iter().all(|&i| c[i] == c[r[0]]))))
        .collect();
    let terms: Vec<usize> = (0..between.len()).filter(|&j| between[j]).collect();
    let df = g.checked_sub(terms.len()).filter(|d| *d >= 1);
    // Per session: its mean response less the within-session predictors' part.
    let mean_of = |c: &[f64], r: &[usize]| r.iter().map(|&i| c[i]).sum::<f64>() / r.len() as f64;
    let z: Vec<f64> = rows
        .iter()
        .map(|r| {
            let within: f64 = (0..cols.len())
                .filter(|&j| !between[j + 1])
                .map(|j| fit.coefficients[j + 1].estimate * mean_of(&cols[j], r))
                .sum();
            mean_of(y, r) - within
        })
        .collect();
    let x_of = |r: &[usize], j: usize| if j == 0 { 1.0 } else { cols[j - 1][r[0]] };
    let design: Vec<Vec<f64>> = rows.iter().map(|r| terms.iter().map(|&j| x_of(r, j)).collect()).collect();
    let solved = super::sessions::fit_sessions(&design, &z);
    let t = df.map_or(f64::NAN, |df| super::sessions::t_quantile(df, boot.level));
    for (a, &j) in terms.iter().enumerate() {
        let c = &mut fit.coefficients[j];
        c.by_session = true;
        let Some(solved) = &solved else {
            (c.lower, c.upper) = (f64::NAN, f64::NAN);
            continue;
        };
        c.estimate = solved.beta[a];
        let se = df.map_or(f64::NAN, |df| solved.std_error(a, df));
        c.lower = c.estimate - t * se;
        c.upper = c.estimate + t * se;
    }
    fit.sessions = g;
    fit.session_df = df;
    Ok(fit)
}

/// Variance inflation factor of each predictor: `1 / (1 − R_j²)`, R_j² from regressing column
/// j on the others, read off the inverse of the predictors' correlation matrix. None when the
/// predictors are exactly dependent (or one is constant).
pub fn variance_inflation(cols: &[Vec<f64>]) -> Option<Vec<f64>> {
    let p = cols.len();
    if p == 0 {
        return Some(Vec::new());
    }
    let n = cols[0].len() as f64;
    let z: Vec<Vec<f64>> = cols
        .iter()
        .map(|c| {
            let m = super::mean(c);
            let sd = super::std_dev(c);
            c.iter().map(|x| (x - m) / sd).collect()
        })
        .collect();
    if z.iter().any(|c| c.iter().any(|v| !v.is_finite())) {
        return None;
    }
    let mut r = vec![0.0; p * p];
    for i in 0..p {
        for j in 0..=i {
            let v = z[i].iter().zip(&z[j]).map(|(a, b)| a * b).sum::<f64>() / (n - 1.0);
            r[i * p + j] = v;
            r[j * p + i] = v;
        }
    }
    // Gauss–Jordan with partial pivoting on [R | I].
    let mut inv = vec![0.0; p * p];
    for i in 0..p {
        inv[i * p + i] = 1.0;
    }
    for col in 0..p {
        let piv = (col..p).max_by(|&a, &b| r[a * p + col].abs().total_cmp(&r[b * p + col].abs()))?;
        if r[piv * p + col].abs() < 1e-10 {
            return None;
        }
        for k in 0..p {
            r.swap(col * p + k, piv * p + k);
            inv.swap(col * p + k, piv * p + k);
        }
        let d = r[col * p + col];
        for k in 0..p {
            r[col * p + k] /= d;
            inv[col * p + k] /= d;
        }
        for row in 0..p {
            if row != col {
                let f = r[row * p + col];
                for k in 0..p {
                    r[row * p + k] -= f * r[col * p + k];
                    inv[row * p + k] -= f * inv[col * p + k];
                }
            }
        }
    }
    Some((0..p).map(|i| inv[i * p + i]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_known_coefficients() {
        // y = 5 + 2 a + 0.5 b + small deterministic noise
        let n = 300;
        let a: Vec<f64> = (0..n).map(|i| ((i * 37) % 101) as f64 * 1000.0).collect();
        let b: Vec<f64> = (0..n).map(|i| ((i * 53) % 89) as f64 * 10_000.0).collect();
        let y: Vec<f64> = (0..n).map(|i| 5.0 + 2.0 * a[i] + 0.5 * b[i] + ((i * 17) % 7) as f64).collect();
        let r = bootstrap_regression(&y, &[a, b], &["a".into(), "b".into()], &Bootstrap::default()).unwrap();
        let c = &r.coefficients;
        assert_eq!(c[1].name, "a");
        assert!((c[1].estimate - 2.0).abs() < 1e-3, "{c:?}");
        assert!((c[2].estimate - 0.5).abs() < 1e-3, "{c:?}");
        assert!(c[1].lower <= 2.0 && 2.0 <= c[1].upper + 1e-3, "{c:?}");
        assert!(r.r_squared > 0.999);
        assert_eq!(r.resamples_used, 500);
    }

    #[test]
    fn a_session_factor_gets_its_interval_from_sessions_and_a_within_slope_from_runs() {
        // Four sessions, two per level of a factor with no effect, each shifted by its own
        // large session effect; y = 2 a + noise within sessions.
        let effects = [300.0, -250.0, 180.0, -320.0];
        let (mut y, mut a, mut f, mut s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (k, e) in effects.iter().enumerate() {
            for i in 0..200 {
                let av = ((i * 37 + k * 11) % 101) as f64;
                a.push(av);
                f.push([0.0, 1.0, 1.0, 0.0][k]);
                s.push(k as u32);
                y.push(1000.0 + e + 2.0 * av + ((i * 17) % 7) as f64);
            }
        }
        let names = ["a".to_string(), "f".to_string()];
        let boot = Bootstrap::default();
        let runs = bootstrap_regression(&y, &[a.clone(), f.clone()], &names, &boot).unwrap();
        let by = bootstrap_regression_by_session(&y, &[a, f], &names, &s, &boot).unwrap();
        assert_eq!((by.sessions, by.session_df), (4, Some(2)), "4 sessions − intercept − f");
        let (fr, fs) = (&runs.coefficients[2], &by.coefficients[2]);
        assert!(!fr.by_session && fs.by_session && !by.coefficients[1].by_session);
        assert!(fs.lower < 0.0 && fs.upper > 0.0, "over sessions the factor has no effect: {fs:?}");
        // Over runs the interval knows nothing of how much sessions differ.
        assert!(fs.upper - fs.lower > 5.0 * (fr.upper - fr.lower), "{fr:?} {fs:?}");
        let slope = &by.coefficients[1];
        assert!(slope.lower <= 2.0 && 2.0 <= slope.upper && slope.upper - slope.lower < 2.0, "{slope:?}");
    }

    #[test]
    fn variance_inflation_flags_near_duplicates() {
        let a: Vec<f64> = (0..200).map(|i| ((i * 37) % 101) as f64).collect();
        let b: Vec<f64> = (0..200).map(|i| ((i * 53) % 89) as f64).collect();
        // a plus a little of something else: nearly a duplicate of a.
        let near: Vec<f64> = a.iter().enumerate().map(|(i, x)| x + 0.05 * ((i * 71) % 97) as f64).collect();
        let v = variance_inflation(&[a.clone(), b.clone()]).unwrap();
        assert!(v.iter().all(|x| (1.0..1.2).contains(x)), "{v:?}");
        let v = variance_inflation(&[a.clone(), b.clone(), near]).unwrap();
        assert!(v[0] > 10.0 && v[2] > 10.0, "{v:?}");
        let sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert!(variance_inflation(&[a, b, sum]).is_none(), "exactly dependent");
    }

    #[test]
    fn too_few_runs_is_an_error() {
        let e = bootstrap_regression(&[1.0, 2.0], &[vec![1.0, 2.0]], &["a".into()], &Bootstrap::default());
        assert!(matches!(e, Err(StatsError::Underdetermined { .. })));
    }

    #[test]
    fn a_constant_predictor_is_refused() {
        let y: Vec<f64> = (0..50).map(|i| i as f64).collect();
        let e = bootstrap_regression(&y, &[vec![3.0; 50]], &["c".into()], &Bootstrap::default());
        assert!(matches!(e, Err(StatsError::Collinear(_))));
    }

    #[test]
    fn a_large_constant_offset_does_not_break_the_fit() {
        // total = (1.111 s + small a) + b: the offset sits on the first component.
        let n = 300;
        let a: Vec<f64> = (0..n).map(|i| 1.111e9 + ((i * 37) % 101) as f64 * 100.0).collect();
        let b: Vec<f64> = (0..n).map(|i| ((i * 53) % 89) as f64 * 50.0).collect();
        let y: Vec<f64> = (0..n).map(|i| a[i] + b[i]).collect();
        let r = bootstrap_regression(&y, &[a, b], &["a".into(), "b".into()], &Bootstrap::default()).unwrap();
        assert!((r.coefficients[1].estimate - 1.0).abs() < 1e-6, "{:?}", r.coefficients);
        assert!((r.coefficients[2].estimate - 1.0).abs() < 1e-6, "{:?}", r.coefficients);
    }
}
