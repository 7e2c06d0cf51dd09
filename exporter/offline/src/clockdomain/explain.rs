//! `clockpath explain`: is a segment's constant a clock-domain offset (two stages stamped on
//! different clocks) or a latency?
//!
//! A segment's duration is `t_late − t_early`. If the two stages were stamped on clocks Y and X,
//! it is the latency plus `offset(Y) − offset(X)`, where each offset is measured against
//! CLOCK_MONOTONIC by a clock audit ([`super::audit`]). For an observed constant this module
//! lists every candidate explanation — each difference of two audited clocks (across audits of
//! a host and its guest too), structural constants (whole seconds, whole hours, TAI − UTC, a PPS
//! phase modulo one second) and a clock difference plus whole seconds or hours — with its
//! predicted value and uncertainty (the offsets' uncertainties, plus their drift projected to
//! the trace's time), and the **residual**: the observed constant minus the prediction, with
//! the observed median's CI. A candidate explains the constant when its residual is a
//! plausible latency: `−U ≤ residual ≤ max_residual + U` (U: the prediction's uncertainty plus
//! the median CI's half-width). When none does, the verdict says so: never a forced match.
//!
//! Which segments look like offsets ([`looks_like_offset`]): median ≥ 1 ms and an
//! interquartile range ≤ 1 % of the median. Latencies of a millisecond or more vary by more
//! than that from run to run; a difference of two clocks' zero points does not vary at all.

use std::collections::BTreeMap;

use serde::Serialize;

use super::audit::{ClockAudit, Family};
use crate::stats::Interval;

/// A segment is a clock-domain candidate from this median up (ns).
pub const MIN_OFFSET_NS: f64 = 1e6;
/// … and when its interquartile range is at most this fraction of the median.
pub const MAX_RELATIVE_IQR: f64 = 0.01;
/// Default largest residual still called a latency (ns): 1 ms.
pub const DEFAULT_MAX_RESIDUAL_NS: f64 = 1e6;
/// TAI − UTC since 2017-01-01 (s).
pub const TAI_MINUS_UTC_S: i64 = 37;

/// A segment's observed durations, summarised.
#[derive(Clone, Debug, Serialize)]
pub struct Observed {
    /// `chain / segment`, or `--offset`.
    pub what: String,
    /// The stages at each end of the segment, when known (`switch_entry`, `first_read`).
    pub early_stage: Option<String>,
    pub late_stage: Option<String>,
    pub n: usize,
    pub median: Interval,
    pub iqr_ns: f64,
    /// CLOCK_MONOTONIC of the runs' median start (same boot as an audit: drift is projected).
    pub at_monotonic_ns: Option<u64>,
}

/// The documented rule: median ≥ 1 ms and IQR ≤ 1 % of the median.
pub fn looks_like_offset(o: &Observed) -> bool {
    o.median.estimate.abs() >= MIN_OFFSET_NS && o.iqr_ns <= MAX_RELATIVE_IQR * o.median.estimate.abs()
}

#[derive(Clone, Debug)]
pub struct ExplainOptions {
    pub max_residual_ns: f64,
    /// How well two machines' CLOCK_REALTIME agree when no PTP clock relates them (ns).
    pub sync_uncertainty_ns: f64,
    /// Candidates listed per segment (explaining ones first).
    pub top: usize,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions { max_residual_ns: DEFAULT_MAX_RESIDUAL_NS, sync_uncertainty_ns: 10e6, top: 5 }
    }
}

/// One term of an explanation.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Term {
    /// The late stage on `late`, the early one on `early`: `offset(late) − offset(early)`;
    /// with the clocks that read the same as each.
    ClockPair {
        late: String,
        early: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        late_same_as: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        early_same_as: Vec<String>,
    },
    WholeSeconds {
        seconds: i64,
    },
    WholeHours {
        hours: i64,
    },
    /// TAI − UTC, `sign` × 37 s.
    TaiMinusUtc {
        sign: i64,
    },
    /// A PPS source's phase plus whole seconds.
    PpsPhase {
        clock: String,
        seconds: i64,
    },
}

impl Term {
    fn describe(&self) -> String {
        match self {
            Term::ClockPair { late, early, late_same_as, early_same_as } => {
                let named = |n: &str, same: &[String]| {
                    if same.is_empty() { n.to_string() } else { format!("{n} (= {})", same.join(", ")) }
                };
                format!("{} − {}", named(late, late_same_as), named(early, early_same_as))
            }
            Term::WholeSeconds { seconds } => format!("{seconds} whole second(s)"),
            Term::WholeHours { hours } => format!("{hours} whole hour(s)"),
            Term::TaiMinusUtc { sign } => {
                format!("{}(TAI − UTC = {TAI_MINUS_UTC_S} s)", if *sign < 0 { "−" } else { "" })
            }
            Term::PpsPhase { clock, seconds } => format!("{clock} phase + {seconds} s"),
        }
    }

    /// Audited clock pairs are the most specific explanation, constants the least.
    fn specificity(&self) -> u8 {
        match self {
            Term::ClockPair { .. } => 0,
            Term::PpsPhase { .. } => 1,
            Term::TaiMinusUtc { .. } => 2,
            Term::WholeSeconds { .. } | Term::WholeHours { .. } => 3,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub terms: Vec<Term>,
    pub explanation: String,
    pub predicted_ns: f64,
    pub uncertainty_ns: f64,
    /// observed − predicted: the latency left to explain, with the median's CI.
    pub residual: Interval,
    pub explains: bool,
    /// Which stage is probably on which clock.
    pub stages: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub observed: Observed,
    /// Whether the segment looks like an offset by the rule (always true for `--offset`).
    pub looks_like_offset: bool,
    pub explained: bool,
    pub verdict: String,
    pub candidates: Vec<Candidate>,
}

/// A clock of one of the audits, offsets on a base common to all audits.
#[derive(Clone, Debug)]
struct Clock {
    name: String,
    /// Other audited clocks that read the same (offsets equal within their uncertainties).
    same_as: Vec<String>,
    family: Family,
    resolution: u64,
    /// Offset from the audits' common base at the audit's start, ns (f64: differences of
    /// offsets near 1e18 keep ns resolution only as long as they are taken in i128 first).
    offset: i128,
    uncertainty: f64,
    drift_ppm: f64,
    drift_uncertainty_ppm: f64,
    audit_mono: u64,
    boot_id: String,
    modulo: Option<u64>,
}

/// The audits' clocks on one base. One audit: its CLOCK_MONOTONIC. Several (a host and its
/// guests): the first audit's CLOCK_REALTIME; another audit joins through a PTP clock that
/// reads the first machine's realtime (`ptp_kvm`), else through its own CLOCK_REALTIME with
/// `sync_uncertainty_ns`. Names get the audit's hostname or environment as a prefix then.
fn clocks(audits: &[ClockAudit], opts: &ExplainOptions) -> (Vec<Clock>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let many = audits.len() > 1;
    let mut prefixes: BTreeMap<String, usize> = BTreeMap::new();
    for (i, a) in audits.iter().enumerate() {
        // Base: the offset of the common base clock on this machine, and its uncertainty.
        let realtime = a.clock("posix:realtime").and_then(|c| match &c.reading {
            super::audit::Reading::Measured(m) => Some(m),
            _ => None,
        });
        let (base, base_unc) = if !many {
            (0i128, 0.0)
        } else if i == 0 {
            match realtime {
                Some(m) => (m.offset_ns as i128, 0.0),
                None => {
                    notes.push(format!(
                        "audit of {} has no CLOCK_REALTIME: no clock of another audit can be related to it",
                        a.identity.hostname
                    ));
                    continue;
                }
            }
        } else {
            let ptp = a.measured().find(|(c, _)| c.family == Family::Ptp);
            match (ptp, realtime) {
                (Some((c, m)), _) => {
                    notes.push(format!(
                        "{} related to {} through {} (taken to read the first machine's CLOCK_REALTIME, as ptp_kvm does)",
                        a.identity.hostname, audits[0].identity.hostname, c.name
                    ));
                    (m.offset_ns as i128, m.uncertainty_ns as f64)
                }
                (None, Some(m)) => {
                    notes.push(format!(
                        "{} related to {} through both CLOCK_REALTIMEs, taken to agree within {}",
                        a.identity.hostname,
                        audits[0].identity.hostname,
                        super::audit::format_ns(opts.sync_uncertainty_ns)
                    ));
                    (m.offset_ns as i128, opts.sync_uncertainty_ns)
                }
                (None, None) => {
                    notes.push(format!(
                        "audit of {} has neither a PTP clock nor CLOCK_REALTIME: left out",
                        a.identity.hostname
                    ));
                    continue;
                }
            }
        };
        let prefix = if many {
            let p = if a.identity.hostname.is_empty() {
                a.identity.environment.clone()
            } else {
                a.identity.hostname.clone()
            };
            let n = prefixes.entry(p.clone()).or_default();
            *n += 1;
            if *n > 1 { format!("{p}#{n}/") } else { format!("{p}/") }
        } else {
            String::new()
        };
        for (c, m) in a.measured() {
            out.push(Clock {
                name: format!("{prefix}{}", c.name),
                same_as: Vec::new(),
                family: c.family,
                resolution: m.resolution_ns,
                offset: m.offset_ns as i128 - base,
                uncertainty: m.uncertainty_ns as f64 + base_unc,
                drift_ppm: m.drift_ppm,
                drift_uncertainty_ppm: m.drift_uncertainty_ppm,
                audit_mono: a.started_monotonic_ns,
                boot_id: a.identity.boot_id.clone(),
                modulo: m.modulo_ns,
            });
        }
        // The reference itself is a clock a stage may be stamped on.
        if a.clock(super::audit::REFERENCE).is_none() {
            out.push(Clock {
                name: format!("{prefix}{}", super::audit::REFERENCE),
                same_as: Vec::new(),
                family: Family::Posix,
                resolution: 1,
                offset: -base,
                uncertainty: base_unc,
                drift_ppm: 0.0,
                drift_uncertainty_ppm: 0.0,
                audit_mono: a.started_monotonic_ns,
                boot_id: a.identity.boot_id.clone(),
                modulo: None,
            });
        }
    }
    (same_clocks(out), notes)
}

/// Clocks whose offsets agree within their uncertainties and that drift alike are one clock
/// read through different interfaces (CLOCK_BOOTTIME, bpf_ktime_get_boot_ns, trace_clock=boot
/// without a suspend): one class, named by its tightest member of the most common interface
/// (clock_gettime first), the others listed. Tick-granular clocks stay apart.
fn same_clocks(mut clocks: Vec<Clock>) -> Vec<Clock> {
    clocks.sort_by_key(|c| (c.family, c.uncertainty as u64));
    let mut out: Vec<Clock> = Vec::new();
    for c in clocks {
        let same = |r: &Clock| {
            c.resolution <= 1
                && r.resolution <= 1
                && c.modulo.is_none()
                && r.modulo.is_none()
                && c.boot_id == r.boot_id
                && ((c.offset - r.offset).unsigned_abs() as f64) <= c.uncertainty + r.uncertainty
                && (c.drift_ppm - r.drift_ppm).abs() <= c.drift_uncertainty_ppm + r.drift_uncertainty_ppm
        };
        match out.iter_mut().find(|r| same(r)) {
            Some(r) => r.same_as.push(c.name),
            None => out.push(c),
        }
    }
    out
}

impl Clock {
    /// Offset projected to `at` (CLOCK_MONOTONIC of the same boot), and its uncertainty.
    fn at(&self, at: Option<u64>, boot_id: Option<&str>) -> (f64, f64) {
        // Projected only onto a trace known to be of the audit's boot: CLOCK_MONOTONIC of
        // another (or an unknown) boot says nothing about how long after the audit it was.
        let same_boot = boot_id.is_some_and(|b| b == self.boot_id);
        match at {
            Some(t) if same_boot && self.drift_uncertainty_ppm < 1000.0 => {
                let dt = t as f64 - self.audit_mono as f64;
                (
                    self.offset as f64 + self.drift_ppm * 1e-6 * dt,
                    self.uncertainty + self.drift_uncertainty_ppm * 1e-6 * dt.abs(),
                )
            }
            _ => (self.offset as f64, self.uncertainty),
        }
    }
}

/// Explain one observed segment against the audits.
pub fn explain(
    observed: Observed,
    audits: &[ClockAudit],
    boot_id: Option<&str>,
    opts: &ExplainOptions,
) -> (Explanation, Vec<String>) {
    let (clocks, notes) = clocks(audits, opts);
    let obs = observed.median.estimate;
    let half_ci = ((observed.median.upper - observed.median.lower) / 2.0).max(0.0);
    let mut cands: Vec<Candidate> = Vec::new();
    let stages = |late: &str, early: &str| match (&observed.late_stage, &observed.early_stage) {
        (Some(l), Some(e)) => Some(format!("{l} stamped on {late}, {e} on {early}")),
        _ => None,
    };
    let mut push = |terms: Vec<Term>, predicted: f64, unc: f64, stages: Option<String>| {
        let residual = Interval {
            estimate: obs - predicted,
            lower: observed.median.lower - predicted - unc,
            upper: observed.median.upper - predicted + unc,
            level: observed.median.level,
            resamples: observed.median.resamples,
        };
        let u = unc + half_ci;
        // Two terms are a weaker hypothesis (hundreds of them): they must fit 100× tighter.
        let bound = if terms.len() > 1 { opts.max_residual_ns / 100.0 } else { opts.max_residual_ns };
        let explains = residual.estimate >= -u && residual.estimate <= bound + u;
        let explanation = terms.iter().map(Term::describe).collect::<Vec<_>>().join(" + ");
        cands.push(Candidate {
            terms,
            explanation,
            predicted_ns: predicted,
            uncertainty_ns: unc,
            residual,
            explains,
            stages,
        });
    };
    let whole = |x: f64, unit: f64| (x / unit).round() as i64;
    // Structural constants on their own.
    let k = whole(obs, 1e9);
    if k != 0 {
        push(vec![Term::WholeSeconds { seconds: k }], k as f64 * 1e9, 0.0, None);
    }
    let h = whole(obs, 3.6e12);
    if h != 0 {
        push(vec![Term::WholeHours { hours: h }], h as f64 * 3.6e12, 0.0, None);
    }
    for sign in [1i64, -1] {
        push(vec![Term::TaiMinusUtc { sign }], (sign * TAI_MINUS_UTC_S) as f64 * 1e9, 0.0, None);
    }
    for c in clocks.iter().filter(|c| c.modulo.is_some()) {
        let (off, unc) = c.at(observed.at_monotonic_ns, boot_id);
        let k = whole(obs - off, 1e9);
        push(vec![Term::PpsPhase { clock: c.name.clone(), seconds: k }], off + k as f64 * 1e9, unc, None);
    }
    // Every ordered pair of clocks, alone and with whole seconds or hours.
    for late in clocks.iter().filter(|c| c.modulo.is_none()) {
        for early in clocks.iter().filter(|c| c.modulo.is_none()) {
            if late.name == early.name {
                continue;
            }
            let (lo, lu) = late.at(observed.at_monotonic_ns, boot_id);
            let (eo, eu) = early.at(observed.at_monotonic_ns, boot_id);
            // i128 first: offsets near the epoch (1.8e18 ns) lose ns in f64.
            let exact = (late.offset - early.offset) as f64;
            let drift = (lo - late.offset as f64) - (eo - early.offset as f64);
            let p = exact + drift;
            let unc = lu + eu;
            let pair = Term::ClockPair {
                late: late.name.clone(),
                early: early.name.clone(),
                late_same_as: late.same_as.clone(),
                early_same_as: early.same_as.clone(),
            };
            push(vec![pair.clone()], p, unc, stages(&late.name, &early.name));
            let k = whole(obs - p, 1e9);
            if k != 0 && (obs - p).abs() < 1e12 {
                push(
                    vec![pair.clone(), Term::WholeSeconds { seconds: k }],
                    p + k as f64 * 1e9,
                    unc,
                    stages(&late.name, &early.name),
                );
            }
            let h = whole(obs - p, 3.6e12);
            if h != 0 && (obs - p).abs() < 1e15 {
                push(
                    vec![pair, Term::WholeHours { hours: h }],
                    p + h as f64 * 3.6e12,
                    unc,
                    stages(&late.name, &early.name),
                );
            }
        }
    }
    rank(&mut cands);
    let explained = cands.first().is_some_and(|c| c.explains);
    let verdict = match cands.first() {
        Some(best) if best.explains => {
            let also = cands.iter().skip(1).filter(|c| c.explains).count();
            format!(
                "a clock-domain offset: {} = {} ± {}; residual {} [{}, {}] is the latency left to explain{}",
                best.explanation,
                super::audit::format_ns(best.predicted_ns),
                super::audit::format_ns(best.uncertainty_ns),
                super::audit::format_ns(best.residual.estimate),
                super::audit::format_ns(best.residual.lower),
                super::audit::format_ns(best.residual.upper),
                if also > 0 { format!(" ({also} other candidate(s) also agree: see the list)") } else { String::new() }
            )
        }
        _ => "not a known clock-domain offset; a real latency (no audited clock difference or structural constant comes within the residual bound)".into(),
    };
    let looks = looks_like_offset(&observed);
    cands.truncate(opts.top);
    (Explanation { observed, looks_like_offset: looks, explained, verdict, candidates: cands }, notes)
}

/// How much more a prediction's uncertainty weighs than its residual in the ranking.
const VAGUENESS_WEIGHT: f64 = 10.0;

/// Explaining candidates first; then by |residual| plus ten times the prediction's uncertainty:
/// the residual is a latency the trace may well hold (milliseconds for a message between
/// machines), the uncertainty is freedom the candidate takes, so a candidate that agrees only
/// because it is vague (a coarse clock's tick) ranks behind a precise one; among those within
/// the best one's score, the simpler and more specific.
fn rank(c: &mut [Candidate]) {
    let worst = |x: &Candidate| x.residual.estimate.abs() + VAGUENESS_WEIGHT * x.uncertainty_ns;
    c.sort_by(|a, b| b.explains.cmp(&a.explains).then(worst(a).total_cmp(&worst(b))));
    let Some(best) = c.first() else { return };
    if !best.explains {
        return;
    }
    let bound = worst(best) + (best.residual.upper - best.residual.lower) / 2.0;
    let tied = c.iter().take_while(|x| x.explains && x.residual.estimate.abs() <= bound).count();
    let key = |x: &Candidate| (x.terms.len(), x.terms.iter().map(Term::specificity).max().unwrap_or(0));
    c[..tied].sort_by(|a, b| key(a).cmp(&key(b)).then(worst(a).total_cmp(&worst(b))));
}

/// An observed constant given on the command line (`--offset SECONDS`): no spread known.
pub fn given_offset(seconds: f64) -> Observed {
    let ns = seconds * 1e9;
    Observed {
        what: format!("--offset {seconds}"),
        early_stage: None,
        late_stage: None,
        n: 1,
        median: Interval { estimate: ns, lower: ns, upper: ns, level: 0.95, resamples: 0 },
        iqr_ns: 0.0,
        at_monotonic_ns: None,
    }
}

/// Audits whose boot differs from the trace's (or from each other's on one machine).
pub fn boot_warnings(audits: &[ClockAudit], trace_boot: Option<&str>) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(tb) = trace_boot {
        for a in audits.iter().filter(|a| a.identity.boot_id != tb) {
            // Only audits of the machine that recorded the trace can be of "another boot"; a
            // guest's audit beside its host's is expected to differ.
            if a.identity.environment == "host" || audits.len() == 1 {
                w.push(format!(
                    "the audit of {} is of boot {}, the trace of boot {tb}: offsets between clocks hold per boot (suspend, boot-time zero points); audit the boot that recorded the trace",
                    a.identity.hostname, a.identity.boot_id
                ));
            }
        }
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for a in audits {
        if let Some(prev) = seen.insert(&a.identity.hostname, &a.identity.boot_id)
            && prev != a.identity.boot_id
        {
            w.push(format!(
                "two audits of {} from different boots ({prev}, {}): their offsets cannot both hold",
                a.identity.hostname, a.identity.boot_id
            ));
        }
    }
    w
}

/// The text `clockpath explain` prints for one segment.
pub fn render(e: &Explanation) -> String {
    use super::audit::format_ns;
    use std::fmt::Write as _;
    let o = &e.observed;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: median {} [{}, {}] over {} run(s), IQR {}{}",
        o.what,
        format_ns(o.median.estimate),
        format_ns(o.median.lower),
        format_ns(o.median.upper),
        o.n,
        format_ns(o.iqr_ns),
        if e.looks_like_offset {
            " — looks like a clock-domain offset (median ≥ 1 ms, IQR ≤ 1 % of it)"
        } else {
            ""
        }
    );
    let _ = writeln!(s, "  verdict: {}", e.verdict);
    for (i, c) in e.candidates.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {}. {} {} = {} ± {}; residual {} [{}, {}]{}",
            i + 1,
            if c.explains { "✔" } else { "✘" },
            c.explanation,
            format_ns(c.predicted_ns),
            format_ns(c.uncertainty_ns),
            format_ns(c.residual.estimate),
            format_ns(c.residual.lower),
            format_ns(c.residual.upper),
            c.stages.as_deref().map(|st| format!("\n       ({st})")).unwrap_or_default()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clockdomain::audit::{AuditedClock, Identity, Measured, Reading, SCHEMA};

    fn clock(name: &str, family: Family, offset_ns: i64, unc: u64) -> AuditedClock {
        AuditedClock {
            name: name.into(),
            family,
            description: String::new(),
            reading: Reading::Measured(Measured {
                offset_ns,
                uncertainty_ns: unc,
                offset_end_ns: offset_ns,
                uncertainty_end_ns: unc,
                drift_ppm: 0.0,
                drift_uncertainty_ppm: 0.01,
                resolution_ns: 1,
                ns_per_count: None,
                modulo_ns: None,
                per_cpu: vec![],
                cpu_spread_ns: None,
                note: None,
            }),
        }
    }

    fn audit(host: &str, boot: &str, clocks: Vec<AuditedClock>) -> ClockAudit {
        ClockAudit {
            schema: SCHEMA.into(),
            identity: Identity {
                boot_id: boot.into(),
                hostname: host.into(),
                environment: "host".into(),
                ..Default::default()
            },
            reference: "posix:monotonic".into(),
            started_monotonic_ns: 171_000_000_000_000,
            started_realtime_ns: 0,
            duration_ns: 500_000_000,
            clocks,
        }
    }

    /// The investigation's pair: 171224.645912321 − 171223.534912180 = 1.111000141 s.
    fn pair() -> Observed {
        let mut o = given_offset(1.111_000_141);
        o.early_stage = Some("switch_entry".into());
        o.late_stage = Some("first_read".into());
        o
    }

    fn base_clocks() -> Vec<AuditedClock> {
        vec![
            clock("posix:monotonic", Family::Posix, 0, 20),
            clock("posix:realtime", Family::Posix, 1_733_000_000_123_456_789, 20),
            clock("posix:boottime", Family::Posix, 0, 20),
            clock("ftrace:local", Family::Ftrace, 24_600_000, 600),
            clock("posix:monotonic_raw", Family::Posix, -216_000_000, 20),
        ]
    }

    #[test]
    fn the_investigations_pair_is_named_when_a_clock_pair_differs_by_it() {
        let mut clocks = base_clocks();
        // A suspend of 1.111 s: boottime is ahead of monotonic by exactly that.
        clocks[2] = clock("posix:boottime", Family::Posix, 1_111_000_000, 20);
        let (e, _) = explain(pair(), &[audit("h", "b", clocks)], None, &ExplainOptions::default());
        assert!(e.explained, "{}", render(&e));
        let best = &e.candidates[0];
        assert!(
            matches!(&best.terms[..], [Term::ClockPair { late, early, .. }] if late == "posix:boottime" && early == "posix:monotonic"),
            "{}",
            render(&e)
        );
        assert!((best.residual.estimate - 141.0).abs() < 1e-3, "{}", render(&e));
        assert_eq!(
            best.stages.as_deref(),
            Some("first_read stamped on posix:boottime, switch_entry on posix:monotonic")
        );
        assert!(e.verdict.starts_with("a clock-domain offset: posix:boottime − posix:monotonic"), "{}", e.verdict);
    }

    #[test]
    fn nothing_is_forced_when_no_clock_pair_or_constant_fits() {
        let (e, _) = explain(pair(), &[audit("h", "b", base_clocks())], None, &ExplainOptions::default());
        assert!(!e.explained, "{}", render(&e));
        assert!(e.verdict.starts_with("not a known clock-domain offset"), "{}", e.verdict);
        assert!(e.candidates.iter().all(|c| !c.explains));
    }

    #[test]
    fn whole_seconds_explain_and_a_clock_pair_plus_seconds_ranks_behind_a_pair_alone() {
        let mut o = given_offset(3.000_000_500);
        o.early_stage = Some("a".into());
        o.late_stage = Some("b".into());
        let (e, _) = explain(o, &[audit("h", "b", base_clocks())], None, &ExplainOptions::default());
        assert!(e.explained);
        assert_eq!(e.candidates[0].terms, vec![Term::WholeSeconds { seconds: 3 }], "{}", render(&e));
        // local − mono + 3 s is 24.6 ms off: no.
        let local = e.candidates.iter().find(|c| c.explanation.starts_with("ftrace:local − posix:monotonic + 3"));
        assert!(local.is_none_or(|c| !c.explains));
    }

    #[test]
    fn a_negative_residual_beyond_the_uncertainty_is_not_a_latency() {
        // 24.5 ms observed, local − mono is 24.6 ms ± 620 ns: the latency would be −100 µs.
        let (e, _) = explain(given_offset(0.0245), &[audit("h", "b", base_clocks())], None, &ExplainOptions::default());
        let local = e.candidates.iter().find(|c| c.explanation.starts_with("ftrace:local − posix:monotonic"));
        assert!(local.is_none_or(|c| !c.explains), "{}", render(&e));
        let (e, _) =
            explain(given_offset(0.024_607), &[audit("h", "b", base_clocks())], None, &ExplainOptions::default());
        assert!(e.candidates[0].explanation.starts_with("ftrace:local − posix:monotonic"), "{}", render(&e));
        assert!((e.candidates[0].residual.estimate - 7_000.0).abs() < 1.0);
    }

    #[test]
    fn drift_is_projected_to_the_traces_time() {
        let mut raw = clock("posix:monotonic_raw", Family::Posix, -216_000_000, 20);
        if let Reading::Measured(m) = &mut raw.reading {
            m.drift_ppm = -10.0;
        }
        let a = audit("h", "b", vec![clock("posix:monotonic", Family::Posix, 0, 20), raw]);
        let mut o = given_offset(0.216_036 + 0.000_002);
        // An hour after the audit, mono_raw has lost 36 ms more: mono − mono_raw = 252 ms.
        o.median.estimate = 252_000_000.0 + 2_000.0;
        o.median.lower = o.median.estimate;
        o.median.upper = o.median.estimate;
        o.at_monotonic_ns = Some(a.started_monotonic_ns + 3_600_000_000_000);
        let (e, _) = explain(o, &[a], Some("b"), &ExplainOptions::default());
        assert_eq!(e.candidates[0].explanation, "posix:monotonic − posix:monotonic_raw", "{}", render(&e));
        assert!((e.candidates[0].residual.estimate - 2_000.0).abs() < 1.0, "{}", render(&e));
    }

    #[test]
    fn a_host_and_its_guest_are_related_through_ptp_kvm() {
        // Host: realtime − mono = R_h. Guest: ptp0 (the host's realtime) − guest mono = P_g.
        // Then guest mono − host mono = R_h − P_g: the guest booted 1000.5 s after the host.
        let r_h = 1_733_000_000_000_000_000i64;
        let p_g = r_h + 1_000_500_000_000;
        let host = audit(
            "host",
            "hb",
            vec![clock("posix:monotonic", Family::Posix, 0, 20), clock("posix:realtime", Family::Posix, r_h, 20)],
        );
        let mut guest = audit(
            "guest",
            "gb",
            vec![
                clock("posix:monotonic", Family::Posix, 0, 20),
                clock("posix:realtime", Family::Posix, p_g + 3_000, 20),
                clock("ptp:ptp0", Family::Ptp, p_g, 800),
            ],
        );
        guest.identity.environment = "vm".into();
        // An entry stamped on the host's monotonic, a read on the guest's: −1000.5 s + 40 µs.
        let (e, notes) = explain(given_offset(-1000.5 + 40e-6), &[host, guest], None, &ExplainOptions::default());
        assert!(notes.iter().any(|n| n.contains("through ptp:ptp0")), "{notes:?}");
        assert_eq!(e.candidates[0].explanation, "guest/posix:monotonic − host/posix:monotonic", "{}", render(&e));
        assert!((e.candidates[0].residual.estimate - 40_000.0).abs() < 1.0, "{}", render(&e));
    }

    #[test]
    fn the_rule_separates_constants_from_latencies() {
        let mut o = pair();
        assert!(looks_like_offset(&o));
        o.iqr_ns = 50e6;
        assert!(!looks_like_offset(&o), "a 50 ms spread is a latency's");
        let mut small = given_offset(50e-6);
        small.iqr_ns = 0.0;
        assert!(!looks_like_offset(&small), "below 1 ms");
    }

    #[test]
    fn audits_of_other_boots_are_named() {
        let w = boot_warnings(&[audit("h", "b1", vec![])], Some("b2"));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("b1") && w[0].contains("b2"), "{w:?}");
        assert!(boot_warnings(&[audit("h", "b1", vec![])], Some("b1")).is_empty());
        let w = boot_warnings(&[audit("h", "b1", vec![]), audit("h", "b3", vec![])], None);
        assert!(w[0].contains("b1") && w[0].contains("b3"), "{w:?}");
    }
}
