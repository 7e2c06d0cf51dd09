//! A session's result: per-run records, the statistics over complete runs (3σ rejection,
//! medians with bootstrap CIs), interference medians, the kernel's own counts, and the files
//! it is written to (`summary.json`, `summary.md`, `traces.csv`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use clockpath_common::interference::{NAMES, SOURCES};
use clockpath_offline::{
    chain::ChainRecord,
    stats::{self, RunsAnalysis},
    trace,
};
use clockpath_probe::plan::ChainPlan;
use serde::Serialize;

use super::SessionError;
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
    pub runs: Vec<Run>,
}

/// The statistics of the complete runs: per segment (and total), after rejecting runs whose
/// first segment lies more than `windows.sigma` SDs from its median.
pub fn analyze(runs: &[Run], segments: &[String], windows: &WindowsConfig) -> Option<RunsAnalysis> {
    let complete: Vec<&Run> = runs.iter().filter(|r| r.missing.is_none()).collect();
    if complete.is_empty() {
        return None;
    }
    let mut columns: Vec<Vec<f64>> =
        (0..segments.len()).map(|i| complete.iter().map(|r| r.segments_ns[i] as f64).collect()).collect();
    if segments.len() > 1 {
        columns.push(complete.iter().map(|r| r.total_ns.unwrap_or(0) as f64).collect());
    }
    stats::analyze_runs(&columns, 0, windows.sigma, &windows.bootstrap).ok()
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
) -> Result<(), SessionError> {
    let err = |path: PathBuf| move |source| SessionError::Output { path, source };
    let p = dir.join("summary.json");
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .map_err(err(p.clone()))?;
    fs::write(&p, json).map_err(err(p.clone()))?;
    let p = dir.join("summary.md");
    fs::write(&p, markdown(report)).map_err(err(p.clone()))?;
    let p = dir.join("traces.csv");
    let shape = plan.shape();
    // The session's labels and each run's old and new clocksource, as columns analyze groups
    // and regresses by; interference per segment when the chain charges it.
    let labels: Vec<(String, String)> = report.labels.clone().into_iter().collect();
    let mut keys: Vec<String> = labels.iter().map(|(k, _)| k.clone()).collect();
    keys.extend(["old_clocksource".to_string(), "new_clocksource".to_string()]);
    let columns = trace::CsvColumns { interference: plan.charges_interference, labels: keys };
    let mut w = trace::TraceWriter::with_columns(&p, trace::Format::Csv, columns).map_err(err(p.clone()))?;
    for rec in records {
        for hit in trace::hits_of(rec, &shape, env, &labels) {
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
    if let Some(k) = &r.kernel {
        let _ = writeln!(
            s,
            "\nKernel: {} segments in the histograms, {} records received, {} lost.",
            k.hist_segments, k.segments_received, k.ring_lost_segments
        );
    }
    s
}
