//! The analysis report: JSON, Markdown and exact histogram exports (CSV and JSON).

use std::{collections::BTreeMap, fmt::Write as _, fs, io, path::Path};

use clockpath_common::hist::{NUM_BUCKETS, bucket_le_ns, bucket_lower_ns};
use serde::Serialize;

use super::{AnalyzeOptions, Collected, GROUP_DIMENSIONS, GroupStats, column_names, groups_of, sessions_of};
use crate::trace::read::ReadStats;

#[derive(Clone, Debug, Serialize)]
pub struct ChainReport {
    pub chain: String,
    pub columns: Vec<String>,
    pub sessions: Vec<GroupStats>,
    /// dimension (env, governor, cstate) → groups
    pub groups: BTreeMap<String, Vec<GroupStats>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub files: Vec<String>,
    pub read: ReadStats,
    pub unknown_probes: BTreeMap<String, u64>,
    pub ambiguous_probes: BTreeMap<String, u64>,
    pub sigma: f64,
    pub resamples: usize,
    pub level: f64,
    pub reservoir: usize,
    pub chains: Vec<ChainReport>,
}

pub fn build(c: &Collected, opts: &AnalyzeOptions) -> Report {
    let chains = c
        .chains
        .iter()
        .filter_map(|(name, data)| {
            let shape = data.shape.as_ref()?;
            let groups = GROUP_DIMENSIONS
                .iter()
                .map(|d| (d.to_string(), groups_of(c, data, d, opts)))
                .filter(|(_, g)| !g.is_empty())
                .collect();
            Some(ChainReport {
                chain: name.clone(),
                columns: column_names(shape),
                sessions: sessions_of(c, data, opts),
                groups,
            })
        })
        .collect();
    Report {
        files: c.files.iter().map(|f| f.display().to_string()).collect(),
        read: c.read.clone(),
        unknown_probes: c.unknown_probes.clone(),
        ambiguous_probes: c.ambiguous_probes.clone(),
        sigma: opts.sigma,
        resamples: opts.bootstrap.resamples,
        level: opts.bootstrap.level,
        reservoir: opts.reservoir,
        chains,
    }
}

fn us(ns: f64) -> String {
    format!("{:.3}", ns / 1e3)
}

fn table(s: &mut String, columns: &[String], groups: &[GroupStats], first: &str) {
    let _ = writeln!(s, "| {first} | segment | n | rejected | median (µs) | CI (µs) | SD (µs) | note |");
    let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: | --- | ---: | --- |");
    for g in groups {
        for (name, col) in columns.iter().zip(&g.columns) {
            let ci = col.ci.map(|ci| format!("[{}, {}]", us(ci.lower), us(ci.upper))).unwrap_or_else(|| "—".into());
            let mut note = String::new();
            if !col.reliable {
                note.push_str("unreliable (n < 100)");
            }
            if (g.runs as u64) < g.seen {
                note.push_str(&format!(" sample of {} runs", g.seen));
            }
            let _ = writeln!(
                s,
                "| {} | {name} | {} | {} | {} | {ci} | {} | {} |",
                g.name,
                col.n,
                g.rejected,
                us(col.median),
                us(col.std_dev),
                note.trim()
            );
        }
    }
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# clockpath analysis\n");
    let _ = writeln!(s, "- inputs: {}", r.files.join(", "));
    let _ = writeln!(
        s,
        "- lines: {} ({} bytes), bad lines skipped: {}, partial last lines: {}",
        r.read.lines, r.read.bytes, r.read.bad_lines, r.read.partial_lines
    );
    let _ = writeln!(
        s,
        "- outlier rule: runs beyond ±{}σ from the median of the first segment are rejected (all their segments)",
        r.sigma
    );
    let _ = writeln!(
        s,
        "- bootstrap: B = {}, {} % percentile intervals; at most {} runs per session kept",
        r.resamples,
        r.level * 100.0,
        r.reservoir
    );
    if !r.unknown_probes.is_empty() {
        let u: Vec<String> = r.unknown_probes.iter().map(|(k, v)| format!("`{k}` ×{v}")).collect();
        let _ = writeln!(s, "- unknown probe names (ignored): {}", u.join(", "));
    }
    if !r.ambiguous_probes.is_empty() {
        let u: Vec<String> = r.ambiguous_probes.iter().map(|(k, v)| format!("`{k}` ×{v}")).collect();
        let _ = writeln!(s, "- probe names in several chains and no `chain` column (ignored): {}", u.join(", "));
    }
    for c in &r.chains {
        let _ = writeln!(s, "\n## {}\n\n### Sessions\n", c.chain);
        table(&mut s, &c.columns, &c.sessions, "session");
        for sess in &c.sessions {
            let o: Vec<String> =
                sess.outcomes.iter().filter(|(k, _)| **k != "completed").map(|(k, v)| format!("{k} {v}")).collect();
            if !o.is_empty() {
                let _ = writeln!(s, "\n{}: not complete: {}", sess.name, o.join(", "));
            }
        }
        for (dim, groups) in &c.groups {
            let _ = writeln!(s, "\n### By {dim}\n");
            table(&mut s, &c.columns, groups, dim);
        }
    }
    s
}

/// Histogram entries of every chain column: lower and upper bound (ns; the upper bound is
/// included), count.
#[derive(Clone, Debug, Serialize)]
pub struct HistogramEntry {
    pub chain: String,
    pub segment: String,
    pub lower_ns: u64,
    pub upper_ns: Option<u64>,
    pub count: u64,
}

pub fn histogram_entries(c: &Collected) -> Vec<HistogramEntry> {
    let mut out = Vec::new();
    for (name, d) in &c.chains {
        let Some(shape) = &d.shape else { continue };
        for (col, h) in column_names(shape).iter().zip(&d.histograms) {
            for (i, &n) in h.iter().enumerate().take(NUM_BUCKETS) {
                if n > 0 {
                    out.push(HistogramEntry {
                        chain: name.clone(),
                        segment: col.clone(),
                        lower_ns: bucket_lower_ns(i as u32),
                        upper_ns: bucket_le_ns(i as u32),
                        count: n,
                    });
                }
            }
        }
    }
    out
}

/// Write report.json, report.md, histograms.csv and histograms.json into `dir`.
pub fn write(dir: &Path, r: &Report, c: &Collected) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("report.json"), serde_json::to_string_pretty(r).map_err(io::Error::other)?)?;
    fs::write(dir.join("report.md"), markdown(r))?;
    let h = histogram_entries(c);
    let mut csv = String::from("chain,segment,lower_ns,upper_ns,count\n");
    for e in &h {
        let up = e.upper_ns.map_or_else(|| "inf".to_string(), |u| u.to_string());
        let _ = writeln!(csv, "{},{},{},{up},{}", e.chain, e.segment, e.lower_ns, e.count);
    }
    fs::write(dir.join("histograms.csv"), csv)?;
    fs::write(dir.join("histograms.json"), serde_json::to_string_pretty(&h).map_err(io::Error::other)?)?;
    Ok(())
}
