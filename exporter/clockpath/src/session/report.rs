//! A session's result: per-run records, the statistics over complete runs (3σ rejection,
//! medians with bootstrap CIs), interference medians, the kernel's own counts, and the files
//! it is written to (`summary.json`, `summary.md`, `traces.csv`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use clockpath_common::interference::{NAMES, SOURCES};
use clockpath_offline::{
    chain::ChainRecord,
    stats::{self, Interval, RunsAnalysis},
    trace,
};
use clockpath_probe::plan::ChainPlan;
use serde::Serialize;

use super::{Condition, SessionError, cpufreq, idle::Evidence, runner::Outcomes};
use crate::{config::WindowsConfig, daemon::summary::ChainSummary};

/// One switch and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub index: usize,
    pub old: String,
    pub new: String,
    /// Segment durations in ns (empty when the chain is missing).
    pub segments_ns: Vec<u64>,
    pub total_ns: Option<u64>,
    pub cpu: Option<u32>,
    /// Why there is no complete chain for this switch.
    pub missing: Option<String>,
    /// The probe point that ended each segment (target), to show which read was first.
    pub points: Vec<String>,
    /// Per segment, time (ns) charged to each interference source
    /// (irq, softirq, sched, hrtimer, kvm); None when the segment changed CPU.
    pub interference_ns: Vec<Option<[u64; SOURCES]>>,
    /// The C-state policy in force (sessions with `--cstates`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// One condition's (C-state policy, governor) runs, statistics, and the evidence that it held.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyReport {
    pub policy: String,
    pub runs: usize,
    pub completed: usize,
    pub analysis: Option<RunsAnalysis>,
    pub evidence: Option<Evidence>,
    /// With `--governors`: the governor, read back when the condition ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub governor: Option<cpufreq::Evidence>,
}

/// Policy `a` against policy `b`, per column (segments, then the total): difference of medians
/// (a − b, ns) and ratio of variances (a / b), each with its bootstrap CI.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyComparison {
    pub a: String,
    pub b: String,
    pub columns: Vec<ColumnComparison>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ColumnComparison {
    pub column: String,
    pub median_difference_ns: Option<Interval>,
    pub variance_ratio: Option<Interval>,
}

/// The session's result.
#[derive(Clone, Debug, Serialize)]
pub struct SessionReport {
    pub session_id: String,
    pub mode: String,
    pub chain: String,
    pub env: String,
    pub labels: BTreeMap<String, String>,
    pub original_clocksource: String,
    pub restored_clocksource: String,
    pub runs_requested: usize,
    pub runs_done: usize,
    pub completed: usize,
    pub missing: BTreeMap<String, usize>,
    pub segments: Vec<String>,
    pub analysis: Option<RunsAnalysis>,
    pub kernel: Option<ChainSummary>,
    /// Median time charged to each interference source, per segment (ns), over complete runs.
    pub interference_median_ns: BTreeMap<String, BTreeMap<String, f64>>,
    pub interrupted: bool,
    /// The machine, as it was when the session started.
    pub machine: crate::host::Machine,
    /// This machine's clocks against CLOCK_MONOTONIC at the session's start and end.
    pub clocks: crate::clockaudit::StartEnd,
    /// Ring buffer of the session (bytes).
    pub ring_bytes: u32,
    /// Order of the C-state policies over the runs (blocks, interleaved, random).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<PolicyComparison>,
    pub runs: Vec<Run>,
}

/// The statistics of the complete runs: per segment (and total), after rejecting runs whose
/// first segment lies more than `windows.sigma` SDs from its median.
pub fn analyze(runs: &[Run], segments: &[String], windows: &WindowsConfig) -> Option<RunsAnalysis> {
    analyze_columns(&columns(runs.iter(), segments), windows)
}

fn analyze_columns(columns: &[Vec<f64>], windows: &WindowsConfig) -> Option<RunsAnalysis> {
    if columns.first().is_none_or(Vec::is_empty) {
        return None;
    }
    stats::analyze_runs(columns, 0, windows.sigma, &windows.bootstrap).ok()
}

/// The complete runs' values of each column: the segments, then the total (with more than
/// one segment).
fn columns<'a>(runs: impl Iterator<Item = &'a Run>, segments: &[String]) -> Vec<Vec<f64>> {
    let complete: Vec<&Run> = runs.filter(|r| r.missing.is_none()).collect();
    let mut columns: Vec<Vec<f64>> =
        (0..segments.len()).map(|i| complete.iter().map(|r| r.segments_ns[i] as f64).collect()).collect();
    if segments.len() > 1 {
        columns.push(complete.iter().map(|r| r.total_ns.unwrap_or(0) as f64).collect());
    }
    columns
}

/// Per policy: its runs' statistics and the evidence it held.
pub fn per_policy(
    runs: &[Run],
    policies: &[Condition],
    outcomes: &Outcomes,
    segments: &[String],
    windows: &WindowsConfig,
) -> Vec<PolicyReport> {
    policies
        .iter()
        .zip(outcomes.evidence.iter().zip(&outcomes.governor_evidence))
        .map(|(p, (e, g))| {
            let label = p.label();
            PolicyReport {
                runs: under(runs, &label).count(),
                completed: under(runs, &label).filter(|r| r.missing.is_none()).count(),
                analysis: analyze_columns(&columns(under(runs, &label), segments), windows),
                evidence: e.clone(),
                governor: g.clone(),
                policy: label,
            }
        })
        .collect()
}

/// The runs under `policy`.
fn under<'a>(runs: &'a [Run], policy: &'a str) -> impl Iterator<Item = &'a Run> + 'a {
    runs.iter().filter(move |r| r.policy.as_deref() == Some(policy))
}

/// Every pair of policies: difference of medians and variance ratio with CIs, per column.
pub fn compare_policies(
    runs: &[Run],
    policies: &[Condition],
    segments: &[String],
    windows: &WindowsConfig,
) -> Vec<PolicyComparison> {
    let names: Vec<String> =
        segments.iter().cloned().chain((segments.len() > 1).then(|| "total".to_string())).collect();
    let mut out = Vec::new();
    for (i, a) in policies.iter().enumerate() {
        for b in &policies[i + 1..] {
            let (la, lb) = (a.label(), b.label());
            let (ca, cb) = (columns(under(runs, &la), segments), columns(under(runs, &lb), segments));
            let columns = names
                .iter()
                .zip(ca.iter().zip(&cb))
                .map(|(name, (x, y))| ColumnComparison {
                    column: name.clone(),
                    median_difference_ns: stats::median_difference_ci(x, y, &windows.bootstrap).ok(),
                    variance_ratio: stats::variance_ratio_ci(x, y, &windows.bootstrap).ok(),
                })
                .collect();
            out.push(PolicyComparison { a: a.label(), b: b.label(), columns });
        }
    }
    out
}

/// Median time charged to each interference source, per segment (ns), over complete runs.
pub fn interference_medians(runs: &[Run], segments: &[String]) -> BTreeMap<String, BTreeMap<String, f64>> {
    let complete: Vec<&Run> = runs.iter().filter(|r| r.missing.is_none()).collect();
    let mut out = BTreeMap::new();
    for (i, seg) in segments.iter().enumerate() {
        let mut per = BTreeMap::new();
        for (k, name) in NAMES.iter().enumerate() {
            let vals: Vec<f64> = complete
                .iter()
                .filter_map(|r| r.interference_ns.get(i).copied().flatten())
                .map(|v| v[k] as f64)
                .collect();
            if !vals.is_empty() {
                per.insert(name.to_string(), stats::median(&vals));
            }
        }
        out.insert(seg.clone(), per);
    }
    out
}

/// Why runs are missing, with how many each.
pub fn missing(runs: &[Run]) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for m in runs.iter().filter_map(|r| r.missing.as_ref()) {
        *out.entry(m.clone()).or_default() += 1;
    }
    out
}

pub fn write_outputs(
    dir: &Path,
    report: &SessionReport,
    records: &[ChainRecord],
    plan: &ChainPlan,
    env: &str,
    reference: &crate::pps::TimeReference,
) -> Result<(), SessionError> {
    let err = |path: PathBuf| move |source| SessionError::Output { path, source };
    let p = dir.join("summary.json");
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .map_err(err(p.clone()))?;
    clockpath_offline::outfile::write(&p, json.as_bytes()).map_err(err(p.clone()))?;
    let p = dir.join("summary.md");
    clockpath_offline::outfile::write(&p, markdown(report).as_bytes()).map_err(err(p.clone()))?;
    let p = dir.join("traces.csv");
    let shape = plan.shape();
    // The session's labels and each run's old and new clocksource, as columns analyze groups
    // and regresses by; interference per segment when the chain charges it.
    // The session's labels win over the machine's of the same name.
    let mut labels: Vec<(String, String)> = report.labels.clone().into_iter().collect();
    for (k, v) in report.machine.labels() {
        if !report.labels.contains_key(&k) {
            labels.push((k, v));
        }
    }
    let mut keys: Vec<String> = labels.iter().map(|(k, _)| k.clone()).collect();
    keys.extend(["old_clocksource".to_string(), "new_clocksource".to_string()]);
    if report.policies.iter().any(|p| p.evidence.is_some()) {
        keys.push(super::runner::CSTATE_LABEL.to_string());
    }
    if report.policies.iter().any(|p| p.governor.is_some()) {
        keys.push(super::runner::GOVERNOR_LABEL.to_string());
    }
    keys.push(clockpath_offline::analysis::align::REFERENCE_LABEL.to_string());
    let columns = trace::CsvColumns { interference: plan.charges_interference, reference: true, labels: keys };
    let mut w = trace::TraceWriter::with_columns(&p, trace::Format::Csv, columns).map_err(err(p.clone()))?;
    for rec in records {
        for mut hit in trace::hits_of(rec, &shape, env, &labels) {
            reference.stamp(&mut hit);
            w.write(&hit).map_err(err(p.clone()))?;
        }
    }
    w.finish().map_err(err(p))?;
    Ok(())
}

/// The summary as Markdown.
pub fn markdown(r: &SessionReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Session {}\n", r.session_id);
    let _ = writeln!(s, "- chain: `{}` ({} mode), env: {}", r.chain, r.mode, r.env);
    if !r.labels.is_empty() {
        let l: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(s, "- labels: {}", l.join(", "));
    }
    let _ = writeln!(
        s,
        "- runs: {} of {} done, {} complete{}",
        r.runs_done,
        r.runs_requested,
        r.completed,
        if r.interrupted { " (interrupted)" } else { "" }
    );
    let _ = writeln!(s, "- clocksource: {} before, {} after", r.original_clocksource, r.restored_clocksource);
    for (why, n) in &r.missing {
        let _ = writeln!(s, "- missing: {n} × {why}");
    }
    if let Some(a) = &r.analysis {
        let _ = writeln!(
            s,
            "- outliers rejected: {} (±{}σ on `{}`)\n",
            a.rejection.rejected,
            a.rejection.k,
            r.segments.first().map_or("", String::as_str)
        );
        let _ = writeln!(s, "| segment | n | median (µs) | 95 % CI (µs) | SD (µs) | reliable |");
        let _ = writeln!(s, "| --- | ---: | ---: | --- | ---: | --- |");
        let names = r.segments.iter().cloned().chain((r.segments.len() > 1).then(|| "total".to_string()));
        for (name, c) in names.zip(&a.columns) {
            let ci =
                c.ci.map(|ci| format!("[{:.3}, {:.3}]", ci.lower / 1e3, ci.upper / 1e3)).unwrap_or_else(|| "—".into());
            let _ = writeln!(
                s,
                "| {name} | {} | {:.3} | {ci} | {:.3} | {} |",
                c.n,
                c.median / 1e3,
                c.std_dev / 1e3,
                if c.reliable { "yes" } else { "no (n < 100)" }
            );
        }
    }
    for (seg, per) in &r.interference_median_ns {
        let parts: Vec<String> = per.iter().map(|(k, v)| format!("{k} {:.3}", v / 1e3)).collect();
        let _ = writeln!(s, "\nInterference charged to `{seg}` (median µs): {}", parts.join(", "));
    }
    let m = &r.machine;
    let _ = writeln!(s, "\n## Machine\n");
    let _ = writeln!(
        s,
        "- kernel {} ({}), {} vCPUs: {}; {} {}",
        m.environment.kernel,
        m.cmdline,
        m.vcpus,
        m.cpu_model,
        m.environment.env,
        if m.environment.hypervisor == "none" { String::new() } else { format!("({})", m.environment.hypervisor) }
    );
    let _ = writeln!(
        s,
        "- clocksources: {} (current {}); TSC flags: {}",
        m.environment.available_clocksources.join(", "),
        m.environment.current_clocksource,
        if m.tsc_flags.is_empty() { "none".into() } else { m.tsc_flags.join(", ") }
    );
    let _ = writeln!(
        s,
        "- cpufreq: {} / {}; cpuidle: {} / {}, states {}; C-state limit: {}",
        m.cpufreq_driver,
        m.environment.cpufreq_governor,
        m.cpuidle_driver,
        m.environment.cpuidle_governor,
        m.idle_state_latencies.join(", "),
        m.environment.cstate_limit
    );
    let sync = match &m.time_sync {
        Some(t) => format!(
            "{} (max error {} µs, estimated {} µs{})",
            if t.synchronised { "synchronised" } else { "NOT synchronised" },
            t.max_error_us,
            t.est_error_us,
            if t.pps_flags.is_empty() { String::new() } else { format!(", {}", t.pps_flags.join(" ")) }
        ),
        None => "unknown (adjtimex failed)".into(),
    };
    let _ = writeln!(s, "- time sync: {sync}; ring {} MiB; clockpath {}", r.ring_bytes >> 20, m.clockpath_version);
    if !r.policies.is_empty() {
        let governors = r.policies.iter().any(|p| p.governor.is_some());
        let _ = writeln!(
            s,
            "\n## C-state policies{} ({} schedule)\n",
            if governors { " and governors" } else { "" },
            r.schedule.as_deref().unwrap_or("blocks")
        );
        let _ = writeln!(
            s,
            "| policy | runs | complete | median total (µs) | 95 % CI (µs) | SD (µs) | disabled states | entered while held |{}",
            if governors { " governor read back |" } else { "" }
        );
        let _ = writeln!(
            s,
            "| --- | ---: | ---: | ---: | --- | ---: | --- | --- |{}",
            if governors { " --- |" } else { "" }
        );
        for p in &r.policies {
            let last = p.analysis.as_ref().and_then(|a| a.columns.last());
            let (med, ci, sd) = match last {
                Some(c) => (
                    format!("{:.3}", c.median / 1e3),
                    c.ci.map(|ci| format!("[{:.3}, {:.3}]", ci.lower / 1e3, ci.upper / 1e3))
                        .unwrap_or_else(|| "—".into()),
                    format!("{:.3}", c.std_dev / 1e3),
                ),
                None => ("—".into(), "—".into(), "—".into()),
            };
            let (disabled, entered) = match &p.evidence {
                Some(e) => (
                    if e.disabled.is_empty() { "none".to_string() } else { e.disabled.join(", ") },
                    format!(
                        "{} ({})",
                        if e.held { "none: held" } else { "DISABLED STATE ENTERED" },
                        e.entries.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
                    ),
                ),
                None => ("—".into(), "—".into()),
            };
            let governor = match &p.governor {
                Some(g) if g.held => format!(" {}: held |", g.governor),
                Some(g) => format!(
                    " CHANGED: {} |",
                    g.changed.iter().map(|c| format!("{} {}", c.policy, c.governor)).collect::<Vec<_>>().join(", ")
                ),
                None if governors => " — |".into(),
                None => String::new(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {med} | {ci} | {sd} | {disabled} | {entered} |{governor}",
                p.policy, p.runs, p.completed
            );
        }
        for c in &r.comparisons {
            let _ = writeln!(s, "\n{} vs {}:\n", c.a, c.b);
            let _ = writeln!(s, "| column | median difference (µs), 95 % CI | variance ratio, 95 % CI |");
            let _ = writeln!(s, "| --- | --- | --- |");
            for col in &c.columns {
                let d = col.median_difference_ns.map_or("—".into(), |i| {
                    format!("{:.3} [{:.3}, {:.3}]", i.estimate / 1e3, i.lower / 1e3, i.upper / 1e3)
                });
                let v = col
                    .variance_ratio
                    .map_or("—".into(), |i| format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.lower, i.upper));
                let _ = writeln!(s, "| {} | {d} | {v} |", col.column);
            }
        }
    }
    if let Some(k) = &r.kernel {
        let _ = writeln!(
            s,
            "\nKernel: {} segments in the histograms, {} records received, {} lost.",
            k.hist_segments, k.segments_received, k.ring_lost_segments
        );
    }
    s
}
