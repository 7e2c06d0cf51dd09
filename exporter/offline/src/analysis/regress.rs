//! `clockpath regress`: what explains a chain's time — the investigation's "bootstrap
//! regression of the influence of individual path segments", and its comparison with an
//! analytical model of the path.
//!
//! - **Variance attribution**, per session: each segment's share of the variance of the total
//!   (covariance shares, summing to 1), with jackknife CIs.
//! - **Explanatory regression**, pooled over sessions: a segment (default: the reference one)
//!   on the interference charged to it (irq, softirq, sched, hrtimer, kvm ns, the sources that
//!   vary) and on session factors (env, cstate, governor, the clocksource pair, or any label) as
//!   indicator variables against a reference level; bootstrap CIs, R², variance inflation
//!   warnings, and a refusal when a factor asked for has one level only. Over several sessions
//!   the intercept and the session factors get intervals over sessions, the interference slopes
//!   over runs within sessions (`stats::bootstrap_regression_by_session`).
//! - **Outer on inner**: where an outer chain brackets this one (a degraded session's syscall
//!   around the kernel chain), the part of the path no probe of the inner chain covers: the
//!   median and mean of (outer − inner) per pair with CIs; the slope model's intercept is given
//!   as what it is, an extrapolation to zero inner time.
//! - **Model check**, per session: the total's quantiles against the independent sum of its
//!   segments (`stats::independence_check`).
//!
//! Every run goes through the same outlier rule as the report (±σ on the reference segment,
//! per session), except in the two regressions: a rule applied to their response (the
//! explained segment; the outer chain's time) would bias their slopes toward 0, so they keep
//! every run (the explanatory one says how many the rule would have removed). Durations are in ns internally, seconds in JSON.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{AnalyzeOptions, ChainData, Collected, RunRef, column_names, label_value};
use crate::stats::{self, Attribution, IndependenceCheck, QuantileCheck};

/// What to regress.
#[derive(Clone, Debug, Default)]
pub struct RegressOptions {
    /// The response of the explanatory regression (`a->b`); default the chain's first segment.
    pub segment: Option<String>,
    /// Factors to use; None: every one of env, cstate, governor, clocksource with two levels or
    /// more.
    pub factors: Option<Vec<String>>,
    /// A chain whose instances bracket this chain's (outer on inner).
    pub outer: Option<String>,
}

/// A factor in a regression: its name, each run's level, and its levels (the first is the
/// reference).
struct Factor {
    name: String,
    values: Vec<Option<String>>,
    levels: Vec<String>,
}

/// Factors considered when none are asked for.
pub const DEFAULT_FACTORS: &[&str] = &["env", "cstate", "governor", "clocksource"];

#[derive(Clone, Debug, Serialize)]
pub struct SessionAttribution {
    pub session: String,
    pub segments: Vec<String>,
    #[serde(flatten)]
    pub attribution: Attribution,
}

#[derive(Clone, Debug, Serialize)]
pub struct SessionCheck {
    pub session: String,
    /// Quantiles in seconds.
    pub runs: usize,
    /// In seconds.
    pub quantiles: Vec<QuantileCheck>,
    pub level: f64,
    /// Whether every difference's CI covers 0.
    pub consistent_with_independence: bool,
}

impl SessionCheck {
    fn new(session: String, c: IndependenceCheck) -> Self {
        let quantiles: Vec<QuantileCheck> = c.quantiles.iter().map(QuantileCheck::in_seconds).collect();
        let consistent = quantiles.iter().all(|q| q.lower <= 0.0 && 0.0 <= q.upper);
        SessionCheck { session, runs: c.runs, quantiles, level: c.level, consistent_with_independence: consistent }
    }
}

/// A regression coefficient with its CI; `unit` is `s` for durations, `1` for ratios (ns of
/// segment per ns of interference). `over` says what the interval resamples: `runs`, or
/// `sessions` for a session-level term (the intercept and session factors, when the runs come
/// from several sessions). Bounds are absent when the sessions leave no degree of freedom (the
/// warnings say so).
#[derive(Clone, Debug, Serialize)]
pub struct Coefficient {
    pub name: String,
    pub estimate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    pub unit: &'static str,
    pub over: &'static str,
}

impl Coefficient {
    fn from(c: &stats::Coefficient, duration: bool) -> Self {
        let s = if duration { 1e-9 } else { 1.0 };
        let bound = |v: f64| v.is_finite().then_some(v * s);
        Coefficient {
            name: c.name.clone(),
            estimate: c.estimate * s,
            lower: bound(c.lower),
            upper: bound(c.upper),
            unit: if duration { "s" } else { "1" },
            over: if c.by_session { "sessions" } else { "runs" },
        }
    }

    /// Whether the CI covers `v` (false without one).
    pub fn covers(&self, v: f64) -> bool {
        matches!((self.lower, self.upper), (Some(l), Some(u)) if l <= v && v <= u)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Explanatory {
    /// The segment explained.
    pub response: String,
    pub runs: usize,
    pub r_squared: f64,
    pub coefficients: Vec<Coefficient>,
    /// Each factor's reference level: its indicators are differences from it.
    pub reference_levels: BTreeMap<String, String>,
    /// Factors not used, and why.
    pub left_out: BTreeMap<String, String>,
    /// Collinearity and sample warnings.
    pub warnings: Vec<String>,
    pub resamples_used: usize,
    pub level: f64,
    /// Sessions the runs came from, and the degrees of freedom of the session-level terms'
    /// t intervals (absent: one session, or none left).
    pub sessions: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_df: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OuterInner {
    pub outer_chain: String,
    pub pairs: usize,
    /// The slope model's intercept (s: the outer time extrapolated to zero inner time, which
    /// is the uncovered part only when every slope is 1) and one slope per inner segment.
    pub coefficients: Vec<Coefficient>,
    pub r_squared: f64,
    /// The part no inner probe covers, per pair outer total − inner total (s): its median and
    /// mean, each with its CI.
    pub median_uncovered: f64,
    pub median_uncovered_lower: f64,
    pub median_uncovered_upper: f64,
    pub mean_uncovered: f64,
    pub mean_uncovered_lower: f64,
    pub mean_uncovered_upper: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChainRegression {
    pub chain: String,
    pub unit: &'static str,
    pub attribution: Vec<SessionAttribution>,
    pub explanatory: Option<Explanatory>,
    /// Why there is no explanatory regression.
    pub explanatory_refused: Option<String>,
    pub model_check: Vec<SessionCheck>,
    pub outer: Option<OuterInner>,
}

/// A refusal the user asked for explicitly (a factor with one level, an unknown segment).
#[derive(Debug, thiserror::Error)]
pub enum RegressError {
    #[error("no run of chain `{0}` in the input")]
    NoChain(String),
    #[error("chain `{chain}` has no segment `{segment}` (segments: {known})")]
    NoSegment { chain: String, segment: String, known: String },
    #[error("factor `{factor}` has one level only (`{level}`): nothing to compare")]
    OneLevel { factor: String, level: String },
    #[error("factor `{0}`: no run carries this label")]
    NoFactor(String),
    #[error("outer chain `{0}` is not in the input")]
    NoOuter(String),
}

/// The value of factor `f` for a run: a label, or the clocksource pair.
fn factor_value(labels: &[(String, String)], f: &str) -> Option<String> {
    if f == "clocksource" {
        let old = label_value(labels, "old_clocksource")?;
        let new = label_value(labels, "new_clocksource")?;
        return Some(format!("{old}->{new}"));
    }
    label_value(labels, f)
}

/// A session's runs kept by the outlier rule (on the reference segment).
fn kept_runs<'a>(runs: &[RunRef<'a>], rule: stats::OutlierRule) -> Vec<RunRef<'a>> {
    let reference: Vec<f64> = runs.iter().map(|r| r.values[0]).collect();
    let keep = rule.keep_mask(&reference);
    runs.iter().zip(keep).filter(|(_, k)| *k).map(|(r, _)| *r).collect()
}

/// Regress chain `chain` of `c`.
pub fn regress(
    c: &Collected,
    chain: &str,
    ro: &RegressOptions,
    opts: &AnalyzeOptions,
) -> Result<ChainRegression, RegressError> {
    let data = c.chains.get(chain).ok_or_else(|| RegressError::NoChain(chain.to_string()))?;
    let shape = data.shape.as_ref().ok_or_else(|| RegressError::NoChain(chain.to_string()))?;
    let cols = column_names(shape);
    let nseg = shape.segments();
    let segments: Vec<String> = cols[..nseg].to_vec();
    let response = match &ro.segment {
        None => 0,
        Some(s) => segments.iter().position(|x| x == s).ok_or_else(|| RegressError::NoSegment {
            chain: chain.to_string(),
            segment: s.clone(),
            known: segments.join(", "),
        })?,
    };
    // Per session, its runs in time order, and those the outlier rule keeps.
    let untrimmed: Vec<(String, Vec<RunRef>)> =
        data.sessions.iter().map(|(sid, s)| (sid.clone(), s.in_time_order())).collect();
    let sessions: Vec<(String, Vec<RunRef>)> =
        untrimmed.iter().map(|(sid, runs)| (sid.clone(), kept_runs(runs, opts.outlier_rule()))).collect();

    // Variance attribution and model check: per session, on its complete runs.
    let mut attribution = Vec::new();
    let mut model_check = Vec::new();
    if nseg > 1 {
        for (sid, runs) in &sessions {
            let complete: Vec<&RunRef> =
                runs.iter().filter(|r| r.values[..nseg].iter().all(|v| v.is_finite())).collect();
            let segs: Vec<Vec<f64>> = (0..nseg).map(|i| complete.iter().map(|r| r.values[i]).collect()).collect();
            if let Ok(a) = stats::covariance_shares(&segs, &opts.bootstrap) {
                attribution.push(SessionAttribution {
                    session: sid.clone(),
                    segments: segments.clone(),
                    attribution: a,
                });
            }
            if let Ok(m) = stats::independence_check(&segs, &opts.bootstrap) {
                model_check.push(SessionCheck::new(sid.clone(), m));
            }
        }
    }

    // The explanatory regression keeps every run: trimming on the response (the rule judges
    // the reference segment, the default response) cuts its tails and biases the slopes toward
    // 0 (an audit: true slope 1, mean estimate 0.979, CI covering 1 in 42 % of repeats).
    let beyond =
        untrimmed.iter().map(|(_, r)| r.len()).sum::<usize>() - sessions.iter().map(|(_, r)| r.len()).sum::<usize>();
    let (explanatory, explanatory_refused) = match explanatory(c, &untrimmed, &segments, response, ro, opts)? {
        Ok(mut e) => {
            if beyond > 0 {
                e.warnings.push(format!(
                    "every run is in this regression, including {beyond} beyond ±{}σ of its session's median (trimming on the response would bias the slopes toward 0): check them if they dominate",
                    opts.sigma
                ));
            }
            (Some(e), None)
        }
        Err(why) => (None, Some(why)),
    };
    let outer = match &ro.outer {
        None => None,
        Some(o) => Some(outer_on_inner(c, data, o, nseg, opts)?),
    };
    Ok(ChainRegression {
        chain: chain.to_string(),
        unit: "s",
        attribution,
        explanatory,
        explanatory_refused,
        model_check,
        outer,
    })
}

/// The explanatory regression; the inner Err is a reason the fit could not be made (reported),
/// the outer one a refusal of what was asked.
fn explanatory(
    c: &Collected,
    sessions: &[(String, Vec<RunRef>)],
    segments: &[String],
    response: usize,
    ro: &RegressOptions,
    opts: &AnalyzeOptions,
) -> Result<Result<Explanatory, String>, RegressError> {
    let (runs, session_of): (Vec<&RunRef>, Vec<u32>) = sessions
        .iter()
        .enumerate()
        .flat_map(|(k, (_, r))| r.iter().map(move |r| (r, k as u32)))
        .filter(|(r, _)| r.values[response].is_finite())
        .unzip();
    let labels: Vec<Vec<(String, String)>> = runs.iter().map(|r| c.labels(r.labels)).collect();
    let mut reference_levels = BTreeMap::new();
    let mut left_out = BTreeMap::new();
    let mut warnings = Vec::new();
    // Factors: their levels over the runs.
    let asked = ro.factors.is_some();
    let candidates: Vec<String> =
        ro.factors.clone().unwrap_or_else(|| DEFAULT_FACTORS.iter().map(|s| s.to_string()).collect());
    let mut factors: Vec<Factor> = Vec::new();
    for f in &candidates {
        let values: Vec<Option<String>> = labels.iter().map(|l| factor_value(l, f)).collect();
        let levels: BTreeSet<String> = values.iter().flatten().cloned().collect();
        match levels.len() {
            0 if asked => return Err(RegressError::NoFactor(f.clone())),
            0 => continue,
            1 if asked => {
                let level = levels.into_iter().next().unwrap_or_default();
                return Err(RegressError::OneLevel { factor: f.clone(), level });
            }
            1 => {
                let level = levels.into_iter().next().unwrap_or_default();
                left_out.insert(f.clone(), format!("one level only (`{level}`)"));
            }
            _ => {
                let levels: Vec<String> = levels.into_iter().collect();
                reference_levels.insert(f.clone(), levels[0].clone());
                factors.push(Factor { name: f.clone(), values, levels });
            }
        }
    }
    // Runs without a value for a used factor cannot be placed.
    let usable: Vec<usize> = (0..runs.len()).filter(|&i| factors.iter().all(|f| f.values[i].is_some())).collect();
    if usable.len() < runs.len() {
        warnings.push(format!("{} run(s) without a value for every factor were left out", runs.len() - usable.len()));
    }
    let y: Vec<f64> = usable.iter().map(|&i| runs[i].values[response]).collect();
    let mut names: Vec<String> = Vec::new();
    let mut x: Vec<Vec<f64>> = Vec::new();
    let mut duration = Vec::new();
    // Interference of the response segment, when every usable run has it and a source varies.
    let interference: Option<Vec<[u64; 5]>> = usable
        .iter()
        .map(|&i| {
            runs[i].interference.map(|v| v[response]).filter(|v| v[0] != clockpath_common::record::UNKNOWN_INTERFERENCE)
        })
        .collect();
    match interference {
        Some(iv) => {
            for (k, name) in clockpath_common::interference::NAMES.iter().enumerate() {
                let col: Vec<f64> = iv.iter().map(|v| v[k] as f64).collect();
                if col.iter().any(|v| *v != col[0]) {
                    names.push(format!("interference_{name}_ns"));
                    x.push(col);
                    duration.push(false);
                }
            }
        }
        None if usable.iter().any(|&i| runs[i].interference.is_some()) => {
            warnings.push("interference is not known for every run: left out".into());
        }
        None => {}
    }
    for f in &factors {
        for level in &f.levels[1..] {
            names.push(format!("{}={level}", f.name));
            x.push(usable.iter().map(|&i| if f.values[i].as_deref() == Some(level) { 1.0 } else { 0.0 }).collect());
            duration.push(true);
        }
    }
    if x.is_empty() {
        return Ok(Err(format!(
            "nothing to explain `{}` with: no interference that varies and no factor with two levels",
            segments[response]
        )));
    }
    match stats::variance_inflation(&x) {
        None => {
            let why = dependent_factors(&factors, &usable)
                .unwrap_or_else(|| "the predictors are exactly dependent".to_string());
            return Ok(Err(why));
        }
        Some(v) => {
            for (name, vif) in names.iter().zip(&v) {
                if *vif > 10.0 {
                    warnings
                        .push(format!("`{name}` is nearly a combination of the others (VIF {vif:.1}): its CI is wide"));
                }
            }
        }
    }
    let session: Vec<u32> = usable.iter().map(|&i| session_of[i]).collect();
    let fit = match stats::bootstrap_regression_by_session(&y, &x, &names, &session, &opts.bootstrap) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if (fit.resamples_used as f64) < 0.9 * opts.bootstrap.resamples as f64 {
        warnings.push(format!(
            "only {} of {} resamples could be fitted (a rare level dropped out): the CIs rest on fewer",
            fit.resamples_used, opts.bootstrap.resamples
        ));
    }
    if fit.sessions > 1 && fit.session_df.is_none() {
        let terms: Vec<&str> = fit.coefficients.iter().filter(|c| c.by_session).map(|c| c.name.as_str()).collect();
        warnings.push(format!(
            "{} sessions leave no degree of freedom for the session-level terms ({}): their intervals are absent; record more sessions",
            fit.sessions,
            terms.join(", ")
        ));
    }
    let mut coefficients = vec![Coefficient::from(&fit.coefficients[0], true)];
    coefficients.extend(fit.coefficients[1..].iter().zip(&duration).map(|(c, d)| Coefficient::from(c, *d)));
    Ok(Ok(Explanatory {
        sessions: fit.sessions,
        session_df: fit.session_df,
        response: segments[response].clone(),
        runs: fit.runs,
        r_squared: fit.r_squared,
        coefficients,
        reference_levels,
        left_out,
        warnings,
        resamples_used: fit.resamples_used,
        level: fit.level,
    }))
}

/// Two factors whose levels determine each other, named.
fn dependent_factors(factors: &[Factor], rows: &[usize]) -> Option<String> {
    for (i, a) in factors.iter().enumerate() {
        for b in &factors[i + 1..] {
            let (fa, va, fb, vb) = (&a.name, &a.values, &b.name, &b.values);
            let mut map: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            for &r in rows {
                if let (Some(a), Some(b)) = (&va[r], &vb[r]) {
                    map.entry(a).or_default().insert(b);
                }
            }
            if map.values().all(|s| s.len() == 1) {
                return Some(format!(
                    "factors `{fa}` and `{fb}` are exactly dependent (each level of `{fa}` has one of `{fb}`): regress on one of them (--factor)"
                ));
            }
        }
    }
    None
}

/// Outer chain on the inner one: pairs each complete outer instance with the complete inner
/// instance it contains (same session).
fn outer_on_inner(
    c: &Collected,
    inner: &ChainData,
    outer: &str,
    nseg: usize,
    opts: &AnalyzeOptions,
) -> Result<OuterInner, RegressError> {
    let od = c.chains.get(outer).ok_or_else(|| RegressError::NoOuter(outer.to_string()))?;
    let total = |r: &RunRef| -> Option<f64> {
        let t = if r.values.len() > 1 { r.values[r.values.len() - 1] } else { r.values[0] };
        t.is_finite().then_some(t)
    };
    let mut y = Vec::new();
    let mut x: Vec<Vec<f64>> = vec![Vec::new(); nseg];
    let mut uncovered = Vec::new();
    for (sid, os) in &od.sessions {
        let Some(is) = inner.sessions.get(sid) else { continue };
        let inner_runs: Vec<RunRef> = is
            .in_time_order()
            .into_iter()
            .filter(|r| r.values[..nseg].iter().all(|v| v.is_finite()) && total(r).is_some())
            .collect();
        // Every outer run: trimming on the response biases the slopes.
        for o in os.in_time_order() {
            let Some(t_out) = total(&o) else { continue };
            let end = o.start_ns as f64 + t_out;
            // The first inner instance starting inside the outer one, if it also ends inside.
            let i = inner_runs.partition_point(|r| r.start_ns < o.start_ns);
            let Some(r) = inner_runs.get(i) else { continue };
            let t_in = total(r).unwrap_or(f64::NAN);
            if r.start_ns as f64 + t_in > end {
                continue;
            }
            y.push(t_out);
            for (k, col) in x.iter_mut().enumerate() {
                col.push(r.values[k]);
            }
            uncovered.push(t_out - t_in);
        }
    }
    let names: Vec<String> =
        column_names(inner.shape.as_ref().ok_or_else(|| RegressError::NoChain(outer.to_string()))?)[..nseg]
            .iter()
            .map(|seg| format!("slope on `{seg}`"))
            .collect();
    let fit = stats::bootstrap_regression(&y, &x, &names, &opts.bootstrap)
        .map_err(|e| RegressError::NoOuter(format!("{outer} (no usable pairs with the inner chain: {e})")))?;
    let med =
        stats::median_ci(&uncovered, &opts.bootstrap).map_err(|e| RegressError::NoOuter(format!("{outer}: {e}")))?;
    let mean =
        stats::mean_ci(&uncovered, &opts.bootstrap).map_err(|e| RegressError::NoOuter(format!("{outer}: {e}")))?;
    let mut coefficients = vec![Coefficient::from(&fit.coefficients[0], true)];
    coefficients[0].name = "intercept (slope-model term, extrapolated to zero inner time)".into();
    coefficients.extend(fit.coefficients[1..].iter().map(|c| Coefficient::from(c, false)));
    Ok(OuterInner {
        outer_chain: outer.to_string(),
        pairs: y.len(),
        coefficients,
        r_squared: fit.r_squared,
        median_uncovered: med.estimate / 1e9,
        median_uncovered_lower: med.lower / 1e9,
        median_uncovered_upper: med.upper / 1e9,
        mean_uncovered: mean.estimate / 1e9,
        mean_uncovered_lower: mean.lower / 1e9,
        mean_uncovered_upper: mean.upper / 1e9,
    })
}

/// A coefficient as text: durations in a unit that reads, ratios as they are.
fn coefficient_row(c: &Coefficient) -> String {
    let over = if c.over == "sessions" { " (over sessions)" } else { "" };
    if c.unit == "s" {
        let u = super::units::Unit::for_values([Some(c.estimate), c.lower, c.upper].into_iter().flatten());
        let ci = match (c.lower, c.upper) {
            (Some(l), Some(h)) => format!("[{}, {}] {}{over}", u.format(l), u.format(h), u.symbol()),
            _ => "— (too few sessions)".to_string(),
        };
        format!("| {} | {} {} | {ci} |", c.name, u.format(c.estimate), u.symbol())
    } else {
        let ci = match (c.lower, c.upper) {
            (Some(l), Some(h)) => format!("[{l:.4}, {h:.4}]{over}"),
            _ => "— (too few sessions)".to_string(),
        };
        format!("| {} | {:.4} | {ci} |", c.name, c.estimate)
    }
}

/// The regression of a chain as Markdown.
pub fn markdown(r: &ChainRegression) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "## {}\n", r.chain);
    if !r.attribution.is_empty() {
        let _ = writeln!(s, "### Variance attribution: each segment's share of Var(total)\n");
        let segs = &r.attribution[0].segments;
        let level = r.attribution[0].attribution.level;
        let _ = writeln!(
            s,
            "| session | runs | {} |",
            segs.iter().map(|x| format!("`{x}` ({:.0} % CI)", level * 100.0)).collect::<Vec<_>>().join(" | ")
        );
        let _ = writeln!(s, "| --- | ---: |{}", " --- |".repeat(segs.len()));
        for a in &r.attribution {
            let cells: Vec<String> = a
                .attribution
                .shares
                .iter()
                .map(|sh| format!("{:.3} [{:.3}, {:.3}]", sh.share, sh.lower, sh.upper))
                .collect();
            let _ = writeln!(s, "| {} | {} | {} |", a.session, a.attribution.runs, cells.join(" | "));
        }
        let _ = writeln!(s, "\nShares sum to 1 per session; a share is Cov(segment, total) / Var(total).\n");
    }
    match (&r.explanatory, &r.explanatory_refused) {
        (Some(e), _) => {
            let _ = writeln!(
                s,
                "### `{}` explained by interference and session factors ({} runs of {} session(s), R² = {:.3}, {} resamples fitted)\n",
                e.response, e.runs, e.sessions, e.r_squared, e.resamples_used
            );
            let _ = writeln!(s, "| coefficient | estimate | {:.0} % CI |\n| --- | ---: | --- |", e.level * 100.0);
            for c in &e.coefficients {
                let _ = writeln!(s, "{}", coefficient_row(c));
            }
            if !e.reference_levels.is_empty() {
                let refs: Vec<String> = e.reference_levels.iter().map(|(f, l)| format!("{f}={l}")).collect();
                let _ = writeln!(
                    s,
                    "\nIndicators are differences from {}; interference slopes are ns of segment per ns charged.",
                    refs.join(", ")
                );
            }
            for (f, why) in &e.left_out {
                let _ = writeln!(s, "- factor `{f}` left out: {why}");
            }
            for w in &e.warnings {
                let _ = writeln!(s, "- warning: {w}");
            }
            let _ = writeln!(s);
        }
        (None, Some(why)) => {
            let _ = writeln!(s, "### Explanatory regression: not made\n\n{why}\n");
        }
        (None, None) => {}
    }
    if let Some(o) = &r.outer {
        let _ = writeln!(
            s,
            "### `{}` (outer) on this chain's segments ({} pairs, R² = {:.3})\n",
            o.outer_chain, o.pairs, o.r_squared
        );
        let _ = writeln!(s, "| coefficient | estimate | CI |\n| --- | ---: | --- |");
        for c in &o.coefficients {
            let _ = writeln!(s, "{}", coefficient_row(c));
        }
        let u = super::units::Unit::for_values([
            o.median_uncovered,
            o.median_uncovered_lower,
            o.median_uncovered_upper,
            o.mean_uncovered,
        ]);
        let _ = writeln!(
            s,
            "\nThe part of the outer chain no inner probe covers (outer − inner, per pair): median {} {sym} [{}, {}], mean {} {sym} [{}, {}]. The intercept is a term of the slope model, the outer time extrapolated to zero inner time: it is this part only when every slope is 1.\n",
            u.format(o.median_uncovered),
            u.format(o.median_uncovered_lower),
            u.format(o.median_uncovered_upper),
            u.format(o.mean_uncovered),
            u.format(o.mean_uncovered_lower),
            u.format(o.mean_uncovered_upper),
            sym = u.symbol(),
        );
    }
    if !r.model_check.is_empty() {
        let _ = writeln!(s, "### Model check: the total against the independent sum of its segments\n");
        let _ = writeln!(
            s,
            "| session | runs | quantile | measured | independent | difference (CI) |\n| --- | ---: | ---: | ---: | ---: | --- |"
        );
        for m in &r.model_check {
            for q in &m.quantiles {
                let u = super::units::Unit::for_values([q.measured, q.independent]);
                let du = super::units::Unit::for_values([q.difference, q.lower, q.upper]);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} {} | {} {} | {} [{}, {}] {} |",
                    m.session,
                    m.runs,
                    q.q,
                    u.format(q.measured),
                    u.symbol(),
                    u.format(q.independent),
                    u.symbol(),
                    du.format(q.difference),
                    du.format(q.lower),
                    du.format(q.upper),
                    du.symbol()
                );
            }
        }
        let far: Vec<&str> =
            r.model_check.iter().filter(|m| !m.consistent_with_independence).map(|m| m.session.as_str()).collect();
        let _ = writeln!(
            s,
            "\n{}\n",
            if far.is_empty() {
                "Every session's total is what independent segments would give (every difference's CI covers 0)."
                    .to_string()
            } else {
                format!("Correlated segments (a quantile's difference excludes 0) in: {}.", far.join(", "))
            }
        );
    }
    s
}
