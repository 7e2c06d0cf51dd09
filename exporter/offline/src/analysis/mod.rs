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
    pub sigma: f64,
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

/// Statistics of a set of runs, given as columns (`columns[c][r]`, NaN where run `r` has no
/// value for column `c`).
pub fn group_stats(
    name: String,
    labels: BTreeMap<String, String>,
    columns: &[Vec<f64>],
    counts: GroupCounts,
    opts: &AnalyzeOptions,
) -> Option<GroupStats> {
    let runs = columns.first().filter(|c| !c.is_empty())?.len();
    let a = crate::stats::analyze_runs(columns, 0, opts.sigma, &opts.bootstrap).ok()?;
    Some(GroupStats {
        name,
        labels,
        seen: counts.seen,
        runs,
        complete: counts.complete,
        rejected: a.rejection.rejected,
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

/// Statistics per value of each label dimension in `dims` (env, governor, cstate) over all
/// sessions: per dimension, its values in order. Every group is a task of its own, so the
/// groups of all dimensions share the cores (like `sessions_of`); a task gathers its group's
/// columns itself, so memory holds the columns of the groups being computed, not of all.
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
    let mut done: Vec<(usize, Option<GroupStats>)> = order
        .par_iter()
        .map(|&i| {
            let (d, v, n) = &tasks[i];
            let ncol = data.sessions.values().map(|s| s.cols).next().unwrap_or(0);
            let mut columns: Vec<Vec<f64>> = (0..ncol).map(|_| Vec::with_capacity(*n)).collect();
            let mut complete = 0u64;
            for s in data.sessions.values() {
                for r in s.iter() {
                    if value_of[*d].get(&r.labels).and_then(Option::as_ref) != Some(v) {
                        continue;
                    }
                    complete += r.is_complete() as u64;
                    for (k, col) in columns.iter_mut().enumerate() {
                        col.push(r.values[k]);
                    }
                }
            }
            let counts = GroupCounts { seen: *n as u64, complete, ..Default::default() };
            let labels = BTreeMap::from([(dims[*d].to_string(), v.clone())]);
            (i, group_stats(v.clone(), labels, &columns, counts, opts))
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
