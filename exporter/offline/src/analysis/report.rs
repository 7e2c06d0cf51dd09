//! The analysis report: JSON (durations in SI seconds, said so in `unit`), Markdown (one table
//! per segment, each in the unit that reads best; the clock offsets on reference time when
//! hits have one) and exact histogram exports (CSV and JSON).

use std::{collections::BTreeMap, fmt::Write as _, fs, io, path::Path};

use clockpath_common::hist::{NUM_BUCKETS, bucket_le_ns, bucket_lower_ns};
use rayon::prelude::*;
use serde::Serialize;

use super::{
    AnalyzeOptions, Collected, GROUP_DIMENSIONS, GroupStats, OrderStats,
    align::{self, ClockOffset},
    column_names, groups_of,
    phases::{self, Phases},
    sessions_of,
    units::Unit,
};
use crate::{stats::ColumnStats, trace::read::ReadStats};

/// A column's statistics, in seconds.
#[derive(Clone, Debug, Serialize)]
pub struct ColumnReport {
    pub n: usize,
    pub median: f64,
    pub ci: Option<IntervalReport>,
    pub std_dev: f64,
    /// n ≥ 100: below it the CI is shown but flagged unreliable.
    pub reliable: bool,
}

/// A bootstrap percentile interval, in seconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct IntervalReport {
    pub lower: f64,
    pub upper: f64,
    pub level: f64,
    pub resamples: usize,
}

impl From<&ColumnStats> for ColumnReport {
    fn from(c: &ColumnStats) -> Self {
        ColumnReport {
            n: c.n,
            median: c.median / 1e9,
            ci: c.ci.map(|i| IntervalReport {
                lower: i.lower / 1e9,
                upper: i.upper / 1e9,
                level: i.level,
                resamples: i.resamples,
            }),
            std_dev: c.std_dev / 1e9,
            reliable: c.reliable,
        }
    }
}

/// One session's or group's statistics, durations in seconds.
#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Runs seen (complete or partial), kept for the statistics, and complete.
    pub seen: u64,
    pub runs: usize,
    pub complete: u64,
    /// Runs rejected as outliers (on the reference segment, each session against itself).
    pub rejected: usize,
    /// Sessions in the group; with more than one the session is the unit of the intervals
    /// (`unit`), and the median weighs each session by the runs it saw.
    pub sessions: usize,
    /// `session` (t interval over sessions, df = sessions − 1) or `run` (one session: the
    /// run-level bootstrap, a statement about that session only).
    pub unit: &'static str,
    /// Share of the first segment's variance between the group's sessions (0–1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub between_session_share: Option<f64>,
    pub columns: Vec<ColumnReport>,
    /// How chain instances ended.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Incomplete chains by the first stage they did not reach.
    pub missing_stage: BTreeMap<String, u64>,
}

impl From<GroupStats> for GroupReport {
    fn from(g: GroupStats) -> Self {
        GroupReport {
            columns: g.columns.iter().map(ColumnReport::from).collect(),
            name: g.name,
            labels: g.labels,
            seen: g.seen,
            runs: g.runs,
            complete: g.complete,
            rejected: g.rejected,
            unit: if g.sessions > 1 { "session" } else { "run" },
            sessions: g.sessions,
            between_session_share: g.between_session_share,
            outcomes: g.outcomes,
            missing_stage: g.missing_stage,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ChainReport {
    pub chain: String,
    pub columns: Vec<String>,
    pub sessions: Vec<GroupReport>,
    /// dimension (env, governor, cstate) → groups
    pub groups: BTreeMap<String, Vec<GroupReport>>,
    /// Per session, the reference segment's spread over time (sessions long enough to judge).
    pub phases: BTreeMap<String, Phases>,
    /// How many of the chain's instances in all sessions completed, and where the others
    /// stopped.
    pub completeness: Completeness,
}

/// A chain's instances over all sessions: complete ones, and the incomplete ones by the first
/// stage they did not reach.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Completeness {
    pub complete: u64,
    pub incomplete: u64,
    pub missing_stage: BTreeMap<String, u64>,
}

impl Completeness {
    fn of(data: &crate::analysis::ChainData) -> Completeness {
        let mut c = Completeness::default();
        for s in data.sessions.values() {
            c.complete += s.complete;
            for (stage, n) in &s.missing_stage {
                c.incomplete += n;
                *c.missing_stage.entry(stage.clone()).or_default() += n;
            }
        }
        c
    }

    /// "2 incomplete: 2 stopped before `first_read`".
    pub fn describe_incomplete(&self) -> String {
        let stopped: Vec<String> =
            self.missing_stage.iter().map(|(st, n)| format!("{n} stopped before `{st}`")).collect();
        format!("{} incomplete: {}", self.incomplete, stopped.join(", "))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Every duration in this report is in this unit (SI seconds).
    pub unit: &'static str,
    pub files: Vec<String>,
    pub read: ReadStats,
    pub order: OrderStats,
    pub unknown_probes: BTreeMap<String, u64>,
    pub ambiguous_probes: BTreeMap<String, u64>,
    pub sigma: f64,
    /// How the outlier rule measures σ: `sd` or `mad`.
    pub spread: &'static str,
    pub resamples: usize,
    pub level: f64,
    pub reservoir: usize,
    pub chains: Vec<ChainReport>,
    /// Clock offsets between the groups of `--align LABEL` on reference time (empty when no
    /// hit has a reference time).
    pub clock_offsets: Vec<ClockOffset>,
    /// Why hits with a reference time could not be aligned (no such label, a single group).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clock_offset_notes: Vec<String>,
}

pub fn build(c: &Collected, opts: &AnalyzeOptions) -> Report {
    let chains = c
        .chains
        .iter()
        .filter_map(|(name, data)| {
            let shape = data.shape.as_ref()?;
            // Sessions, groups and phases are independent: all of them share the cores.
            let sessions: Vec<_> = data.sessions.iter().collect();
            let (per_session, (groups, phases)) = rayon::join(
                || sessions_of(c, data, opts),
                || {
                    rayon::join(
                        || groups_of(c, data, GROUP_DIMENSIONS, opts),
                        || {
                            sessions
                                .par_iter()
                                .filter_map(|(sid, s)| {
                                    Some(((*sid).clone(), phases::phases(&s.column_in_time_order(0))?))
                                })
                                .collect::<BTreeMap<_, _>>()
                        },
                    )
                },
            );
            let groups = groups
                .into_iter()
                .map(|(d, g)| (d, g.into_iter().map(GroupReport::from).collect::<Vec<_>>()))
                .filter(|(_, g)| !g.is_empty())
                .collect();
            Some(ChainReport {
                chain: name.clone(),
                columns: column_names(shape),
                sessions: per_session.into_iter().map(GroupReport::from).collect(),
                groups,
                phases,
                completeness: Completeness::of(data),
            })
        })
        .collect();
    let alignment = c.clock.align(opts.align.within_ns, &opts.bootstrap);
    Report {
        unit: "s",
        files: c.files.iter().map(|f| f.display().to_string()).collect(),
        read: c.read.clone(),
        order: c.order.clone(),
        unknown_probes: c.unknown_probes.clone(),
        ambiguous_probes: c.ambiguous_probes.clone(),
        sigma: opts.sigma,
        spread: opts.spread.as_str(),
        resamples: opts.bootstrap.resamples,
        level: opts.bootstrap.level,
        reservoir: opts.reservoir,
        chains,
        clock_offsets: alignment.offsets,
        clock_offset_notes: alignment.notes,
    }
}

/// One table per column (segment): rows are the groups; each table picks its unit. Tables of
/// groups of sessions (`by_group`) say how many sessions each group has.
fn tables(s: &mut String, columns: &[String], groups: &[GroupReport], first: &str, level: f64, sigma: f64) {
    let by_group = first != "session";
    for (ci, name) in columns.iter().enumerate() {
        // The between-session share is the first segment's (the outlier rule's reference).
        let first_column = ci == 0;
        let cols: Vec<&ColumnReport> = groups.iter().filter_map(|g| g.columns.get(ci)).collect();
        if cols.iter().all(|c| c.n == 0) {
            continue;
        }
        let unit = Unit::for_values(
            cols.iter().flat_map(|c| [c.median].into_iter().chain(c.ci.iter().flat_map(|i| [i.lower, i.upper]))),
        );
        let sd_unit = Unit::for_values(cols.iter().map(|c| c.std_dev));
        let _ = writeln!(s, "\n#### `{name}` ({})\n", unit.symbol());
        let _ = writeln!(
            s,
            "| {first} |{} n | rejected | median | {:.0} % CI | SD ({}) | note |",
            if by_group { " sessions |" } else { "" },
            level * 100.0,
            sd_unit.symbol()
        );
        let _ = writeln!(s, "| --- |{} ---: | ---: | ---: | --- | ---: | --- |", if by_group { " ---: |" } else { "" });
        for g in groups {
            let Some(col) = g.columns.get(ci) else { continue };
            if col.n == 0 {
                continue;
            }
            let ci = col
                .ci
                .map(|i| format!("[{}, {}]", unit.format(i.lower), unit.format(i.upper)))
                .unwrap_or_else(|| "—".into());
            let mut note = Vec::new();
            if !col.reliable {
                note.push("unreliable (n < 100)".to_string());
            }
            // One run at x among n − 1 at 0 lies √n SDs from the median: with n ≤ k² the ±kσ
            // rule cannot reject anything, however far a run is.
            if (g.runs as f64) <= sigma * sigma {
                note.push(format!("±{sigma}σ cannot reject any of {} runs", g.runs));
            }
            if (g.runs as u64) < g.seen {
                note.push(format!("sample of {} runs", g.seen));
            }
            if g.complete < g.seen {
                note.push(format!("{} of {} chains incomplete", g.seen - g.complete, g.seen));
            }
            if by_group && g.sessions == 1 {
                note.push("one session: its interval says nothing of other sessions".to_string());
            }
            if by_group
                && first_column
                && let Some(icc) = g.between_session_share
            {
                note.push(format!("{:.0} % of the variance between sessions", 100.0 * icc));
            }
            let _ = writeln!(
                s,
                "| {} |{} {} | {} | {} | {ci} | {} | {} |",
                g.name,
                if by_group { format!(" {} |", g.sessions) } else { String::new() },
                col.n,
                g.rejected,
                unit.format(col.median),
                sd_unit.format(col.std_dev),
                note.join("; ")
            );
        }
    }
}

impl Report {
    /// When no chain of the input completed even once: what was found instead ("no chain
    /// named in the input", or per chain its incomplete instances and where they stopped).
    pub fn no_complete_chain(&self) -> Option<String> {
        if self.chains.iter().any(|c| c.completeness.complete > 0) {
            return None;
        }
        if self.chains.is_empty() {
            return Some("no hit of any configured chain's stages".into());
        }
        let per_chain: Vec<String> =
            self.chains.iter().map(|c| format!("{}: {}", c.chain, c.completeness.describe_incomplete())).collect();
        Some(per_chain.join("; "))
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
    if r.order.sorted {
        let _ = writeln!(
            s,
            "- order: {} line(s) out of time order; the input was sorted before assembly{}",
            r.order.out_of_order_lines,
            if r.order.spilled_runs > 0 {
                format!(" ({} sorted runs on disk)", r.order.spilled_runs)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        s,
        "- outlier rule: runs beyond ±{}σ from their session's median of the first segment are rejected (all their segments); σ is {}",
        r.sigma,
        if r.spread == "mad" { "1.4826 × the median absolute deviation" } else { "the sample standard deviation" }
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
    if let Some(why) = r.no_complete_chain() {
        let _ = writeln!(s, "- **no complete chain in the input** ({why}): there is nothing to measure");
    }
    for c in &r.chains {
        let _ = writeln!(s, "\n## {}\n", c.chain);
        if c.completeness.complete == 0 {
            let _ = writeln!(s, "No complete chain: {}.\n", c.completeness.describe_incomplete());
        }
        let _ = writeln!(s, "### Sessions");
        tables(&mut s, &c.columns, &c.sessions, "session", r.level, r.sigma);
        let incomplete: Vec<String> = c
            .sessions
            .iter()
            .filter(|g| !g.missing_stage.is_empty() || g.outcomes.keys().any(|k| *k != "completed"))
            .map(|g| {
                let stopped: Vec<String> =
                    g.missing_stage.iter().map(|(st, n)| format!("{n} stopped before `{st}`")).collect();
                let outcomes: Vec<String> =
                    g.outcomes.iter().filter(|(k, _)| **k != "completed").map(|(k, v)| format!("{k} {v}")).collect();
                format!("- {}: {} ({})", g.name, stopped.join(", "), outcomes.join(", "))
            })
            .collect();
        if !incomplete.is_empty() {
            let _ = writeln!(s, "\nIncomplete chains (partial chains still count in the segments they reached):\n");
            let _ = writeln!(s, "{}", incomplete.join("\n"));
        }
        let flagged: Vec<String> = c
            .phases
            .iter()
            .flat_map(|(sid, p)| {
                let unit = Unit::for_values(p.stretches.iter().map(|st| st.std_dev).chain([p.typical_std_dev]));
                p.stretches.iter().map(move |st| {
                    format!(
                        "- {sid}: runs {}–{}: SD {} {} ({:.1}× the session's typical {} {})",
                        st.from_run,
                        st.to_run,
                        unit.format(st.std_dev),
                        unit.symbol(),
                        st.ratio,
                        unit.format(p.typical_std_dev),
                        unit.symbol()
                    )
                })
            })
            .collect();
        if !flagged.is_empty() {
            let _ = writeln!(
                s,
                "\nStretches of runs whose spread departs from their session's (windows of n/20 runs, SD beyond 2× or below ½ the session's typical window SD; `{}`):\n",
                c.columns.first().map_or("", String::as_str)
            );
            let _ = writeln!(s, "{}", flagged.join("\n"));
        }
        if !c.groups.is_empty() {
            let _ = writeln!(
                s,
                "\nGroups of sessions: the median weighs each session by the runs it saw; with two or more sessions the interval has the session as its unit (estimate ± t(sessions − 1) × the SD of medians over resampled sessions), so it holds the spread between sessions, however many runs each has."
            );
        }
        for (dim, groups) in &c.groups {
            let _ = writeln!(s, "\n### By {dim}");
            tables(&mut s, &c.columns, groups, dim, r.level, r.sigma);
        }
    }
    s.push_str(&align::markdown(&r.clock_offsets, &r.clock_offset_notes, r.level, r.resamples));
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
    let write = crate::outfile::write;
    write(&dir.join("report.json"), serde_json::to_string_pretty(r).map_err(io::Error::other)?.as_bytes())?;
    write(&dir.join("report.md"), markdown(r).as_bytes())?;
    let h = histogram_entries(c);
    let mut csv = String::from("chain,segment,lower_ns,upper_ns,count\n");
    for e in &h {
        let up = e.upper_ns.map_or_else(|| "inf".to_string(), |u| u.to_string());
        let _ = writeln!(csv, "{},{},{},{up},{}", e.chain, e.segment, e.lower_ns, e.count);
    }
    write(&dir.join("histograms.csv"), csv.as_bytes())?;
    write(&dir.join("histograms.json"), serde_json::to_string_pretty(&h).map_err(io::Error::other)?.as_bytes())?;
    Ok(())
}
