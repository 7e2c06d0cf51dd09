//! Two-group comparisons (`clockpath compare`): the difference of medians and the ratio of
//! variances, per chain column, with intervals and a one-line verdict.
//!
//! **The session is the sampling unit.** When a group has sessions of its own to compare
//! across, each session gives one median (and one variance) of its runs, and the groups are
//! compared over those ([`stats::session_effect`]: least squares with a t interval), so the
//! spread between sessions is in the interval however many runs each has. Other recorded
//! factors (env, governor, cstate) that vary among the sessions are strata: the effect is
//! estimated within each and combined; when the groups never meet in a stratum the comparison
//! is refused and the factor named. With exactly one session on each side nothing can be said
//! about the groups beyond those two sessions: the runs are then the unit (a bootstrap of each
//! session's runs), and the verdict says that it is about the two sessions.
//!
//! Minimums (below them the verdict is "too few to compare", with the counts): a session
//! counts with [`MIN_SESSION_RUNS`] kept runs in a column; the session-level model needs one
//! residual degree of freedom (three sessions, one on each side, with no strata); the run-level
//! comparison needs [`MIN_RUNS`] runs on each side.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{AnalyzeOptions, RunRef};
use crate::stats::{self, Interval, SessionEffectError, SessionValue};

/// Kept runs a session needs in a column to count as a session of the comparison.
pub const MIN_SESSION_RUNS: usize = 5;
/// Runs per side a run-level comparison (one session on each side) needs.
pub const MIN_RUNS: usize = 20;

/// One session's runs on one side of a comparison.
#[derive(Clone, Debug)]
pub struct SessionInput<'a> {
    pub name: String,
    /// Its values of the other recorded factors (env, governor, cstate): the strata.
    pub factors: BTreeMap<String, String>,
    pub runs: Vec<RunRef<'a>>,
}

/// One side of a comparison: a group name and its sessions.
#[derive(Clone, Debug)]
pub struct Side<'a> {
    pub name: String,
    pub sessions: Vec<SessionInput<'a>>,
}

/// What the intervals are over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingUnit {
    /// Session medians (and log variances) of each group.
    Session,
    /// The runs of one session on each side: a statement about those two sessions.
    Run,
    /// Observations counted in histogram buckets (`compare --prometheus`, one instance each
    /// side: a statement about those two instances).
    Observation,
    /// Instance medians (and log variances) of each group (`compare --prometheus`).
    Instance,
}

/// The units of a comparison's numbers (JSON readers need not guess).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Units {
    pub median_difference: &'static str,
    pub variance_ratio: &'static str,
    pub between_session_share: &'static str,
}

pub const UNITS: Units = Units {
    median_difference: "ns (b − a)",
    variance_ratio: "ratio (b / a)",
    between_session_share: "fraction of the group's variance",
};

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub chain: String,
    pub segment: String,
    pub a: String,
    pub b: String,
    pub unit: SamplingUnit,
    /// How the intervals were computed.
    pub method: String,
    /// Sessions and kept runs that entered the comparison on each side.
    pub a_sessions: usize,
    pub b_sessions: usize,
    pub a_runs: usize,
    pub b_runs: usize,
    /// Factors the effect was estimated within (they vary among the sessions).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub strata: Vec<String>,
    /// median(b) − median(a), ns; absent when it could not be estimated (`notes` say why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_difference: Option<Interval>,
    /// var(b) / var(a); absent when it could not be estimated (`notes` say why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variance_ratio: Option<Interval>,
    /// Residual degrees of freedom of the session-level model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degrees_of_freedom: Option<usize>,
    /// The share of each group's run variance that lies between its sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a_between_session_share: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b_between_session_share: Option<f64>,
    pub units: Units,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub verdict: String,
}

fn percent(level: f64) -> String {
    format!("{} %", (level * 100.0 * 10.0).round() / 10.0)
}

fn us(v: f64) -> String {
    format!("{:.3}", v / 1e3)
}

/// The verdict on the median difference (b − a, ns).
fn median_verdict(a: &str, b: &str, d: &Interval) -> String {
    if d.contains(0.0) {
        format!(
            "no median difference detected at {} (b − a = {} µs [{}, {}])",
            percent(d.level),
            us(d.estimate),
            us(d.lower),
            us(d.upper)
        )
    } else if d.estimate > 0.0 {
        format!("median {} µs [{}, {}] higher in {b}", us(d.estimate), us(d.lower), us(d.upper))
    } else {
        format!("median {} µs [{}, {}] higher in {a}", us(-d.estimate), us(-d.upper), us(-d.lower))
    }
}

/// The verdict on the variance ratio (b / a).
fn variance_verdict(a: &str, b: &str, r: &Interval) -> String {
    if r.contains(1.0) {
        format!(
            "no variance difference detected at {} (b / a = {:.2} [{:.2}, {:.2}])",
            percent(r.level),
            r.estimate,
            r.lower,
            r.upper
        )
    } else if r.estimate > 1.0 {
        format!("variance {:.2}× [{:.2}, {:.2}] higher in {b}", r.estimate, r.lower, r.upper)
    } else {
        format!("variance {:.2}× [{:.2}, {:.2}] higher in {a}", 1.0 / r.estimate, 1.0 / r.upper, 1.0 / r.lower)
    }
}

/// The verdict line: each part's finding, or why it has none.
pub fn verdict(a: &str, b: &str, d: Result<&Interval, &str>, r: Result<&Interval, &str>) -> String {
    let med = match d {
        Ok(d) => median_verdict(a, b, d),
        Err(why) => format!("median difference not estimated ({why})"),
    };
    let var = match r {
        Ok(r) => variance_verdict(a, b, r),
        Err(why) => format!("variance ratio not estimated ({why})"),
    };
    format!("{med}; {var}")
}

/// The factors that vary among the sessions of both sides, and each session's stratum.
fn strata(a: &Side, b: &Side) -> (Vec<String>, BTreeMap<String, usize>) {
    let all: Vec<&SessionInput> = a.sessions.iter().chain(&b.sessions).collect();
    let dims: BTreeSet<&String> = all.iter().flat_map(|s| s.factors.keys()).collect();
    let value = |s: &SessionInput, d: &str| s.factors.get(d).cloned().unwrap_or_else(|| "(none)".into());
    let varying: Vec<String> = dims
        .into_iter()
        .filter(|d| all.iter().map(|s| value(s, d)).collect::<BTreeSet<_>>().len() > 1)
        .cloned()
        .collect();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    let key = |s: &SessionInput| varying.iter().map(|d| format!("{d}={}", value(s, d))).collect::<Vec<_>>().join(",");
    for s in &all {
        let n = ids.len();
        ids.entry(key(s)).or_insert(n);
    }
    let of_session = all.iter().map(|s| (s.name.clone(), ids[&key(s)])).collect();
    (varying, of_session)
}

/// Each varying factor's values on each side.
fn confounding_factors(a: &Side, b: &Side, varying: &[String]) -> String {
    let values = |side: &Side, d: &str| {
        side.sessions
            .iter()
            .map(|s| s.factors.get(d).cloned().unwrap_or_else(|| "(none)".into()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join("|")
    };
    let per: Vec<String> = varying
        .iter()
        .map(|d| format!("`{d}` is {} in {} and {} in {}", values(a, d), a.name, values(b, d), b.name))
        .collect();
    per.join(", ")
}

/// Why the groups cannot be told apart.
fn confounding(a: &Side, b: &Side, varying: &[String]) -> String {
    format!(
        "confounded: {}; no stratum holds sessions of both groups, so their difference cannot be told from that of {}",
        confounding_factors(a, b, varying),
        varying.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(" and ")
    )
}

/// Compare group `b` with group `a` on every column.
pub fn compare(chain: &str, columns: &[String], a: &Side, b: &Side, opts: &AnalyzeOptions) -> Vec<Comparison> {
    // Each session's kept values per column, the outlier rule applied within the session.
    let kept = |side: &Side| -> Vec<Vec<Vec<f64>>> {
        side.sessions.iter().map(|s| super::runs::kept_columns(&s.runs, opts.outlier_rule()).0).collect()
    };
    let (kept_a, kept_b) = (kept(a), kept(b));
    let (varying, stratum_of) = strata(a, b);
    columns
        .iter()
        .enumerate()
        .map(|(c, col)| {
            let (ua, ub) = (usable(a, &kept_a, c, &stratum_of), usable(b, &kept_b, c, &stratum_of));
            let mut cmp = column(chain, col, (a, b), (&ua, &ub), &varying, opts);
            let dropped = (a.sessions.len() - ua.len()) + (b.sessions.len() - ub.len());
            if dropped > 0 {
                cmp.notes.push(format!(
                    "{dropped} session(s) left out: fewer than {MIN_SESSION_RUNS} kept runs in this column"
                ));
            }
            if !varying.is_empty() && cmp.unit == SamplingUnit::Session {
                cmp.strata = varying.clone();
            }
            if cmp.unit == SamplingUnit::Session || varying.is_empty() {
                return cmp;
            }
            // One session each that also differ in another factor: the statement is about the
            // two sessions anyway; say what else tells them apart.
            if ua.len() == 1 && ub.len() == 1 && ua[0].1 != ub[0].1 {
                cmp.notes.push(format!(
                    "the two sessions also differ in {}: the difference may be that factor's",
                    confounding_factors(a, b, &varying)
                ));
            }
            cmp
        })
        .collect()
}

/// A session usable in a column: its name, stratum and kept values.
type Usable<'a> = (&'a str, usize, &'a [f64]);

/// The sessions of `side` with at least `MIN_SESSION_RUNS` kept runs in column `c`.
fn usable<'s>(
    side: &'s Side,
    kept: &'s [Vec<Vec<f64>>],
    c: usize,
    stratum_of: &BTreeMap<String, usize>,
) -> Vec<Usable<'s>> {
    side.sessions
        .iter()
        .zip(kept)
        .filter_map(|(s, k)| {
            let v = k.get(c)?;
            (v.len() >= MIN_SESSION_RUNS).then(|| (s.name.as_str(), stratum_of[&s.name], v.as_slice()))
        })
        .collect()
}

/// One column's comparison over the usable sessions; `varying`: the factors that are strata.
fn column(
    chain: &str,
    segment: &str,
    (a, b): (&Side, &Side),
    (ua, ub): (&[Usable], &[Usable]),
    varying: &[String],
    opts: &AnalyzeOptions,
) -> Comparison {
    let runs = |u: &[Usable]| u.iter().map(|s| s.2.len()).sum::<usize>();
    let share = |u: &[Usable]| stats::between_session_share(&u.iter().map(|s| s.2).collect::<Vec<_>>());
    let mut out = Comparison {
        chain: chain.into(),
        segment: segment.into(),
        a: a.name.clone(),
        b: b.name.clone(),
        unit: SamplingUnit::Session,
        method: String::new(),
        a_sessions: ua.len(),
        b_sessions: ub.len(),
        a_runs: runs(ua),
        b_runs: runs(ub),
        strata: Vec::new(),
        median_difference: None,
        variance_ratio: None,
        degrees_of_freedom: None,
        a_between_session_share: share(ua),
        b_between_session_share: share(ub),
        units: UNITS,
        notes: Vec::new(),
        verdict: String::new(),
    };
    let level = opts.bootstrap.level;
    if ua.is_empty() || ub.is_empty() {
        out.verdict = format!(
            "too few to compare: {} session(s) in {} and {} in {} with at least {MIN_SESSION_RUNS} kept runs",
            ua.len(),
            a.name,
            ub.len(),
            b.name
        );
        return out;
    }
    if ua.len() == 1 && ub.len() == 1 {
        out.unit = SamplingUnit::Run;
        out.method =
            format!("bootstrap of each session's runs (B = {}), percentile intervals", opts.bootstrap.resamples);
        let (xa, xb) = (ua[0].2, ub[0].2);
        if xa.len() < MIN_RUNS || xb.len() < MIN_RUNS {
            out.verdict = format!(
                "too few to compare: {} and {} runs (one session each side; at least {MIN_RUNS} each, or more sessions)",
                xa.len(),
                xb.len()
            );
            return out;
        }
        out.notes.push(format!(
            "one session on each side ({} and {}): the intervals are about these two sessions, not about {} and {} in general (record more sessions to compare the groups)",
            ua[0].0, ub[0].0, a.name, b.name
        ));
        let d = stats::median_difference_ci(xb, xa, &opts.bootstrap).ok().filter(Interval::is_finite);
        let r = stats::variance_ratio_ci(xb, xa, &opts.bootstrap).ok().filter(Interval::is_finite);
        let r_why = "a session whose values are all equal has no variance to divide by";
        if r.is_none() {
            out.notes.push(format!("variance ratio: {r_why}"));
        }
        out.verdict = format!(
            "{}; between these two sessions only",
            verdict(&a.name, &b.name, d.as_ref().ok_or("no finite interval"), r.as_ref().ok_or(r_why))
        );
        out.median_difference = d;
        out.variance_ratio = r;
        return out;
    }
    // Session level: medians, and log variances of the sessions whose variance is not 0.
    let values = |f: &dyn Fn(&[f64]) -> f64| -> Vec<SessionValue> {
        ua.iter()
            .map(|s| (false, s))
            .chain(ub.iter().map(|s| (true, s)))
            .map(|(in_b, s)| SessionValue { in_b, stratum: s.1, value: f(s.2) })
            .filter(|v| v.value.is_finite())
            .collect()
    };
    let medians = values(&|x| stats::median(x));
    let log_vars = values(&|x| stats::variance(x).ln());
    let explain = |e: SessionEffectError, what: &str| -> String {
        match e {
            SessionEffectError::NoFreedom { sessions } => format!(
                "too few to compare: {sessions} session(s) with {what} leave no degrees of freedom for the spread between sessions"
            ),
            SessionEffectError::Confounded => confounding(a, b, varying),
            SessionEffectError::Stats(e) => e.to_string(),
        }
    };
    let effect = stats::session_effect(&medians, level);
    out.degrees_of_freedom = effect.as_ref().ok().map(|e| e.df);
    let d = effect.map(|e| e.interval).map_err(|e| explain(e, "a median"));
    let r = stats::session_variance_ratio(&log_vars, level)
        .map(|e| e.interval)
        .map_err(|e| explain(e, "a non-zero variance"));
    if log_vars.len() < medians.len() {
        out.notes.push(format!(
            "variance ratio over {} of {} sessions (the others' values are all equal)",
            log_vars.len(),
            medians.len()
        ));
    }
    out.method = format!(
        "t on session medians and log variances{} ({} df)",
        if varying.is_empty() { "" } else { ", within strata" },
        out.degrees_of_freedom.map_or("no".into(), |d| d.to_string())
    );
    for e in [&d, &r].into_iter().filter_map(|x| x.as_ref().err()) {
        if !out.notes.contains(e) {
            out.notes.push(e.clone());
        }
    }
    out.verdict = if let (Err(why), Err(_)) = (&d, &r) {
        if why.starts_with("too few") || why.starts_with("confounded") {
            why.clone()
        } else {
            verdict(&a.name, &b.name, Err(why), Err(why))
        }
    } else {
        format!(
            "{} ({} vs {} sessions)",
            verdict(&a.name, &b.name, d.as_ref().map_err(String::as_str), r.as_ref().map_err(String::as_str)),
            ub.len(),
            ua.len()
        )
    };
    out.median_difference = d.ok();
    out.variance_ratio = r.ok();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(e: f64, l: f64, u: f64) -> Interval {
        Interval { estimate: e, lower: l, upper: u, level: 0.95, resamples: 500 }
    }

    #[test]
    fn verdicts_read_like_sentences_and_never_claim_equality() {
        assert_eq!(
            verdict("host", "vm", Ok(&iv(100.0, -50.0, 200.0)), Ok(&iv(2.1, 1.6, 2.8))),
            "no median difference detected at 95 % (b − a = 0.100 µs [-0.050, 0.200]); variance 2.10× [1.60, 2.80] higher in vm"
        );
        assert_eq!(
            verdict("host", "vm", Ok(&iv(-5000.0, -6000.0, -4000.0)), Ok(&iv(1.0, 0.8, 1.2))),
            "median 5.000 µs [4.000, 6.000] higher in host; no variance difference detected at 95 % (b / a = 1.00 [0.80, 1.20])"
        );
        assert!(
            verdict("a", "b", Ok(&iv(1.0, 0.5, 2.0)), Ok(&iv(0.5, 0.25, 0.8)))
                .ends_with("variance 2.00× [1.25, 4.00] higher in a")
        );
        assert!(
            verdict("a", "b", Ok(&iv(1.0, 0.5, 2.0)), Err("constant"))
                .ends_with("variance ratio not estimated (constant)")
        );
    }

    fn runs(values: &[Vec<f64>]) -> Vec<RunRef<'_>> {
        values.iter().map(|v| RunRef { values: v, interference: None, labels: 0, start_ns: 0 }).collect()
    }

    /// A session: its name, its factors, its runs.
    type Session<'a> = (&'a str, &'a [(&'a str, &'a str)], Vec<RunRef<'a>>);

    fn side<'a>(name: &str, sessions: Vec<Session<'a>>) -> Side<'a> {
        Side {
            name: name.into(),
            sessions: sessions
                .into_iter()
                .map(|(n, f, runs)| SessionInput {
                    name: n.into(),
                    factors: f.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    runs,
                })
                .collect(),
        }
    }

    fn opts() -> AnalyzeOptions {
        AnalyzeOptions {
            read: Default::default(),
            reservoir: 1000,
            sigma: 3.0,
            spread: Default::default(),
            bootstrap: Default::default(),
            progress: false,
            sort_memory: 1 << 20,
            align: Default::default(),
            mixed_clocks: false,
        }
    }

    fn sample(centre: f64, n: usize, salt: usize) -> Vec<Vec<f64>> {
        (0..n).map(|i| vec![centre + ((i * 7919 + salt * 31) % 97) as f64]).collect()
    }

    #[test]
    fn one_session_each_is_a_statement_about_those_sessions() {
        let (x, y) = (sample(1000.0, 200, 1), sample(1100.0, 200, 2));
        let a = side("host", vec![("s1", &[], runs(&x))]);
        let b = side("vm", vec![("s2", &[], runs(&y))]);
        let c = &compare("ch", &["seg".into()], &a, &b, &opts())[0];
        assert_eq!(c.unit, SamplingUnit::Run);
        assert!(
            c.verdict.contains("higher in vm") && c.verdict.ends_with("between these two sessions only"),
            "{}",
            c.verdict
        );
        let few = sample(1000.0, 10, 3);
        let a = side("host", vec![("s1", &[], runs(&few))]);
        let c = &compare("ch", &["seg".into()], &a, &b, &opts())[0];
        assert!(c.verdict.starts_with("too few to compare: 10 and 200 runs"), "{}", c.verdict);
        assert!(c.median_difference.is_none());
    }

    #[test]
    fn sessions_are_the_unit_when_there_are_several() {
        // Three sessions per side, shifted by session: run-level intervals would call the
        // groups different; over sessions the shift is within the spread.
        let data: Vec<Vec<Vec<f64>>> = [0.0, 300.0, -250.0, 280.0, -300.0, 10.0]
            .iter()
            .enumerate()
            .map(|(i, s)| sample(1000.0 + s, 300, i))
            .collect();
        let a = side("host", (0..3).map(|i| (["a1", "a2", "a3"][i], &[][..], runs(&data[i]))).collect());
        let b = side("vm", (3..6).map(|i| (["b1", "b2", "b3"][i - 3], &[][..], runs(&data[i]))).collect());
        let c = &compare("ch", &["seg".into()], &a, &b, &opts())[0];
        assert_eq!((c.unit, c.a_sessions, c.b_sessions, c.degrees_of_freedom), (SamplingUnit::Session, 3, 3, Some(4)));
        assert!(c.verdict.starts_with("no median difference detected at 95 %"), "{}", c.verdict);
        assert!(c.a_between_session_share.unwrap() > 0.9, "{c:?}");
    }

    #[test]
    fn a_factor_that_splits_the_groups_is_named() {
        let (x, y, z, w) =
            (sample(1000.0, 100, 1), sample(1000.0, 100, 2), sample(2000.0, 100, 3), sample(2000.0, 100, 4));
        let a =
            side("host", vec![("a1", &[("cstate", "default")], runs(&x)), ("a2", &[("cstate", "default")], runs(&y))]);
        let b = side("vm", vec![("b1", &[("cstate", "max")], runs(&z)), ("b2", &[("cstate", "max")], runs(&w))]);
        let c = &compare("ch", &["seg".into()], &a, &b, &opts())[0];
        assert!(c.verdict.starts_with("confounded: `cstate` is default in host and max in vm"), "{}", c.verdict);
        assert!(c.median_difference.is_none());
        let b1 = side("vm", vec![("b1", &[("cstate", "max")], runs(&z))]);
        let a1 = side("host", vec![("a1", &[("cstate", "default")], runs(&x))]);
        let c = &compare("ch", &["seg".into()], &a1, &b1, &opts())[0];
        assert!(c.verdict.ends_with("between these two sessions only"), "{}", c.verdict);
        assert!(c.notes.iter().any(|n| n.starts_with("the two sessions also differ in `cstate`")), "{:?}", c.notes);
    }
}
