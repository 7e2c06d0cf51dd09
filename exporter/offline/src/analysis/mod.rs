//! Offline analysis of recorded traces (`clockpath analyze`, `compare`, `regress`): read the
//! files in any line order, map probe names to chain stages, assemble chains with the kernel's
//! semantics ([`collect`]), and keep runs — complete or partial — per chain and session for the
//! statistics ([`runs`]). Hits with a reference time also give each trace set's clock error,
//! from which [`align`] estimates the clock offsets between trace sets.
//!
//! Memory is bounded by the chains open while reading (or the sort budget, for input out of
//! time order), plus the runs kept for the statistics: up to `reservoir` runs per chain and
//! session (a uniform sample beyond that, documented in the report); the exported histograms
//! are exact whatever the file size. The clock alignment keeps at most 100 points per second
//! of reference time per trace set (see [`align`]).

pub mod align;
pub mod collect;
pub mod compare;
pub mod phases;
pub mod plot;
pub mod regress;
pub mod report;
pub mod runs;
pub mod simulate;
pub mod sorter;
pub mod units;

use std::{collections::BTreeMap, path::PathBuf};

use clockpath_common::hist::NUM_BUCKETS;
use rayon::prelude::*;
use serde::Serialize;

pub use collect::{ALIASES, collect};
pub use runs::{RunRef, SessionRuns};

use crate::{
    chain::ChainShape,
    trace::read::{self, Interner, ReadError, ReadOptions, ReadStats},
};

/// Label keys the report groups by (a label named `cstate_limit` counts as `cstate`).
pub const GROUP_DIMENSIONS: &[&str] = &["env", "governor", "cstate"];

/// Default memory for sorting input that is out of time order.
pub const DEFAULT_SORT_MEMORY: usize = 256 << 20;

#[derive(Clone, Debug)]
pub struct AnalyzeOptions {
    pub read: ReadOptions,
    /// Runs kept per chain and session for the statistics.
    pub reservoir: usize,
    /// The outlier rule: ±`sigma` σ from the median, σ measured as `spread` says.
    pub sigma: f64,
    pub spread: crate::stats::Spread,
    pub bootstrap: crate::stats::Bootstrap,
    /// Show a progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// Bytes of hits held in memory when input out of time order is sorted (beyond it, sorted
    /// runs go to temporary files).
    pub sort_memory: usize,
    /// How hits with a reference time are grouped and paired for the clock offsets.
    pub align: align::AlignOptions,
    /// Assemble chains whose stages are stamped on different clocks (`clock` labels) instead
    /// of refusing them ([`AnalyzeError::MixedClocks`]).
    pub mixed_clocks: bool,
}

impl AnalyzeOptions {
    pub fn outlier_rule(&self) -> crate::stats::OutlierRule {
        crate::stats::OutlierRule { k: self.sigma, spread: self.spread }
    }
}

/// Everything read, per chain.
#[derive(Debug, Default)]
pub struct ChainData {
    pub shape: Option<ChainShape>,
    /// session → runs
    pub sessions: BTreeMap<String, SessionRuns>,
    /// Exact histograms per column (segments, then total): kernel bucket grid.
    pub histograms: Vec<[u64; NUM_BUCKETS]>,
}

/// How the input's order was dealt with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OrderStats {
    /// The input was out of time order and was sorted before assembly.
    pub sorted: bool,
    /// Lines earlier than a line before them in the same session.
    pub out_of_order_lines: u64,
    /// Sorted runs written to temporary files (0: the sort fitted in memory).
    pub spilled_runs: u64,
}

/// The result of reading inputs.
#[derive(Debug, Default)]
pub struct Collected {
    pub files: Vec<PathBuf>,
    pub read: ReadStats,
    pub order: OrderStats,
    pub unknown_probes: BTreeMap<String, u64>,
    pub ambiguous_probes: BTreeMap<String, u64>,
    pub chains: BTreeMap<String, ChainData>,
    pub names: Interner,
    /// Clock errors of the hits with a reference time, per group (`AnalyzeOptions::align`).
    pub clock: align::ClockPoints,
}

impl Collected {
    /// The labels of a run's label set.
    pub fn labels(&self, id: u32) -> Vec<(String, String)> {
        read::labels_of(&self.names, id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("no input: {0}")]
    Empty(String),
    #[error("sorting the input (temporary files): {0}")]
    Sort(String),
    #[error(transparent)]
    MixedClocks(Box<MixedClocks>),
}

/// Two stages of a chain stamped on different clocks, refused without `mixed_clocks`.
#[derive(Debug, thiserror::Error)]
#[error(
    "{file}: chain `{chain}` has stage `{a}` stamped on {clock_a} and stage `{b}` on {clock_b} (their `clock` labels): the difference of two clocks' timestamps includes the clocks' offset, not only a latency. Pass --mixed-clocks to measure it anyway (then `clockpath explain` names the offset), or stamp both stages on one clock"
)]
pub struct MixedClocks {
    pub file: String,
    pub chain: String,
    pub a: String,
    pub clock_a: String,
    pub b: String,
    pub clock_b: String,
}

/// A configured chain as the analysis needs it: its shape, and whether its first stage keeps
/// an open instance (`first_hit_only`) instead of replacing it.
#[derive(Clone, Debug)]
pub struct ChainDef {
    pub shape: ChainShape,
    pub first_hit_only: bool,
}

/// Statistics of one group of runs (a session, or all sessions sharing a label value).
#[derive(Clone, Debug, Serialize)]
pub struct GroupStats {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Runs seen (complete or partial), and kept for the statistics.
    pub seen: u64,
    pub runs: usize,
    /// Complete runs seen.
    pub complete: u64,
    pub rejected: usize,
    /// Sessions in the group: with more than one, the session is the unit of its intervals
    /// (`stats::group_median`).
    pub sessions: usize,
    /// The share of the first segment's variance that lies between the group's sessions
    /// (intraclass correlation; groups of two or more sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub between_session_share: Option<f64>,
    pub columns: Vec<crate::stats::ColumnStats>,
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Incomplete chains by the first stage they did not reach.
    pub missing_stage: BTreeMap<String, u64>,
}

/// What a group counts besides its runs' values.
#[derive(Clone, Debug, Default)]
pub struct GroupCounts {
    pub seen: u64,
    pub complete: u64,
    pub outcomes: BTreeMap<&'static str, u64>,
    pub missing_stage: BTreeMap<String, u64>,
}

/// Group value of a run for `dim`.
pub fn label_value(labels: &[(String, String)], dim: &str) -> Option<String> {
    labels.iter().find(|(k, _)| k == dim || (dim == "cstate" && k == "cstate_limit")).map(|(_, v)| v.clone())
}

/// Statistics of one session's runs, given as columns (`columns[c][r]`, NaN where run `r` has
/// no value for column `c`).
pub fn group_stats(
    name: String,
    labels: BTreeMap<String, String>,
    columns: &[Vec<f64>],
    counts: GroupCounts,
    opts: &AnalyzeOptions,
) -> Option<GroupStats> {
    let runs = columns.first().filter(|c| !c.is_empty())?.len();
    let a = crate::stats::analyze_runs(columns, 0, opts.outlier_rule(), &opts.bootstrap).ok()?;
    Some(GroupStats {
        name,
        labels,
        seen: counts.seen,
        runs,
        complete: counts.complete,
        rejected: a.rejection.rejected,
        sessions: 1,
        between_session_share: None,
        columns: a.columns,
        outcomes: counts.outcomes,
        missing_stage: counts.missing_stage,
    })
}

/// Per-session statistics of a chain, in session order. Sessions are independent (each
/// bootstrap seeds its own generator from the options), so they run on every core and give
/// the same result on any number of them. Each task copies only its own session's columns.
pub fn sessions_of(c: &Collected, data: &ChainData, opts: &AnalyzeOptions) -> Vec<GroupStats> {
    let sessions: Vec<_> = data.sessions.iter().collect();
    sessions
        .par_iter()
        .filter_map(|(sid, s)| {
            let labels = s.iter().next().map(|r| c.labels(r.labels).into_iter().collect()).unwrap_or_default();
            let counts = GroupCounts {
                seen: s.seen,
                complete: s.complete,
                outcomes: s.outcomes.clone(),
                missing_stage: s.missing_stage.clone(),
            };
            let columns: Vec<Vec<f64>> = (0..s.cols).map(|k| s.column(k).collect()).collect();
            let name = if sid.is_empty() { "(no session)".into() } else { (*sid).clone() };
            group_stats(name, labels, &columns, counts, opts)
        })
        .collect()
}

/// One session's part of a group: its kept values per column and the runs it stands for.
struct SessionPart {
    columns: Vec<Vec<f64>>,
    /// Runs of the group the session saw: its runs seen × the share of its kept runs in the
    /// group (all of them when the session's runs share their labels, as recorded ones do).
    seen: f64,
    complete: f64,
    kept: usize,
    rejected: usize,
}

/// A group's statistics from its sessions' parts: per column the weighted median of the runs
/// seen, with the session as the unit of its interval (`stats::group_median`).
fn group_of_sessions(
    name: String,
    labels: BTreeMap<String, String>,
    parts: &[SessionPart],
    opts: &AnalyzeOptions,
) -> Option<GroupStats> {
    use crate::stats::{ColumnStats, RELIABLE_MIN_SAMPLES, SessionSample};
    let ncol = parts.first()?.columns.len();
    let columns = (0..ncol)
        .map(|k| {
            let samples: Vec<SessionSample> =
                parts.iter().map(|p| SessionSample { values: &p.columns[k], seen: p.seen }).collect();
            let n: usize = samples.iter().map(|s| s.values.len()).sum();
            match crate::stats::group_median(&samples, &opts.bootstrap) {
                Ok(g) => ColumnStats {
                    n,
                    median: g.interval.estimate,
                    std_dev: crate::stats::weighted_std_dev(&samples),
                    ci: g.interval.is_finite().then_some(g.interval),
                    reliable: n >= RELIABLE_MIN_SAMPLES,
                },
                Err(_) => ColumnStats { n: 0, median: f64::NAN, std_dev: f64::NAN, ci: None, reliable: false },
            }
        })
        .collect();
    let with_values: Vec<&[f64]> = parts.iter().map(|p| p.columns[0].as_slice()).filter(|v| !v.is_empty()).collect();
    Some(GroupStats {
        name,
        labels,
        seen: parts.iter().map(|p| p.seen).sum::<f64>().round() as u64,
        runs: parts.iter().map(|p| p.kept).sum(),
        complete: parts.iter().map(|p| p.complete).sum::<f64>().round() as u64,
        rejected: parts.iter().map(|p| p.rejected).sum(),
        sessions: parts.iter().filter(|p| p.columns.iter().any(|c| !c.is_empty())).count(),
        between_session_share: if with_values.len() > 1 {
            crate::stats::between_session_share(&with_values)
        } else {
            None
        },
        columns,
        outcomes: BTreeMap::new(),
        missing_stage: BTreeMap::new(),
    })
}

/// Statistics per value of each label dimension in `dims` (env, governor, cstate) over all
/// sessions: per dimension, its values in order. The outlier rule judges each session's runs
/// against that session (as in its own table); the group's median weighs every session by the
/// runs it saw, and its interval has the session as the unit (`stats::group_median`). Every
/// group is a task of its own, so the groups of all dimensions share the cores (like
/// `sessions_of`); a task gathers its group's columns itself, so memory holds the columns of
/// the groups being computed, not of all.
pub fn groups_of(
    c: &Collected,
    data: &ChainData,
    dims: &[&str],
    opts: &AnalyzeOptions,
) -> Vec<(String, Vec<GroupStats>)> {
    // Group value of every label set, per dimension; and each group's size.
    let mut value_of: Vec<rustc_hash::FxHashMap<u32, Option<String>>> = vec![Default::default(); dims.len()];
    let mut sizes: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); dims.len()];
    for s in data.sessions.values() {
        for &l in &s.labels {
            for (d, dim) in dims.iter().enumerate() {
                let v = value_of[d].entry(l).or_insert_with(|| label_value(&c.labels(l), dim));
                if let Some(v) = v {
                    *sizes[d].entry(v.clone()).or_default() += 1;
                }
            }
        }
    }
    let tasks: Vec<(usize, String, usize)> =
        sizes.iter().enumerate().flat_map(|(d, m)| m.iter().map(move |(v, n)| (d, v.clone(), *n))).collect();
    // Big groups first, so that no core is left with the largest one at the end.
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tasks[i].2));
    let rule = opts.outlier_rule();
    let mut done: Vec<(usize, Option<GroupStats>)> = order
        .par_iter()
        .map(|&i| {
            let (d, v, _) = &tasks[i];
            let parts: Vec<SessionPart> = data
                .sessions
                .values()
                .filter_map(|s| {
                    let runs: Vec<RunRef> =
                        s.iter().filter(|r| value_of[*d].get(&r.labels).and_then(Option::as_ref) == Some(v)).collect();
                    if runs.is_empty() {
                        return None;
                    }
                    let (columns, rejected) = runs::kept_columns(&runs, rule);
                    let share = runs.len() as f64 / s.len() as f64;
                    Some(SessionPart {
                        columns,
                        seen: s.seen as f64 * share,
                        complete: s.complete as f64 * share,
                        kept: runs.len(),
                        rejected,
                    })
                })
                .collect();
            let labels = BTreeMap::from([(dims[*d].to_string(), v.clone())]);
            (i, group_of_sessions(v.clone(), labels, &parts, opts))
        })
        .collect();
    done.sort_by_key(|(i, _)| *i);
    let mut out: Vec<(String, Vec<GroupStats>)> = dims.iter().map(|d| (d.to_string(), Vec::new())).collect();
    for (i, g) in done {
        if let Some(g) = g {
            out[tasks[i].0].1.push(g);
        }
    }
    out
}

/// Run the statistics on `n` threads (once per process, before any analysis; the default is
/// one per CPU). Results are the same on any number.
pub fn use_threads(n: usize) -> Result<(), rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new().num_threads(n).build_global()
}

/// Column names of a chain: its segments, then `total` when it has more than one.
pub fn column_names(shape: &ChainShape) -> Vec<String> {
    let mut v: Vec<String> = (1..=shape.segments() as u8).map(|i| shape.segment_name(i)).collect();
    if v.len() > 1 {
        v.push("total".into());
    }
    v
}
