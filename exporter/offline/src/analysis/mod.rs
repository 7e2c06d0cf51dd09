//! Offline analysis of recorded traces (`clockpath analyze`, `compare`, `regress`): read the
//! files in any line order, map probe names to chain stages, assemble chains with the kernel's
//! semantics ([`collect`]), and keep runs — complete or partial — per chain and session for the
//! statistics ([`runs`]).
//!
//! Memory is bounded by the chains open while reading (or the sort budget, for input out of
//! time order), plus the runs kept for the statistics: up to `reservoir` runs per chain and
//! session (a uniform sample beyond that, documented in the report); the exported histograms
//! are exact whatever the file size.

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

/// Statistics of a set of runs.
pub fn group_stats(
    name: String,
    labels: BTreeMap<String, String>,
    runs: &[RunRef],
    counts: GroupCounts,
    opts: &AnalyzeOptions,
) -> Option<GroupStats> {
    let ncol = runs.first()?.values.len();
    let columns: Vec<Vec<f64>> = (0..ncol).map(|c| runs.iter().map(|r| r.values[c]).collect()).collect();
    let a = crate::stats::analyze_runs(&columns, 0, opts.sigma, &opts.bootstrap).ok()?;
    Some(GroupStats {
        name,
        labels,
        seen: counts.seen,
        runs: runs.len(),
        complete: counts.complete,
        rejected: a.rejection.rejected,
        columns: a.columns,
        outcomes: counts.outcomes,
        missing_stage: counts.missing_stage,
    })
}

/// Per-session statistics of a chain.
pub fn sessions_of(c: &Collected, data: &ChainData, opts: &AnalyzeOptions) -> Vec<GroupStats> {
    data.sessions
        .iter()
        .filter_map(|(sid, s)| {
            let runs: Vec<RunRef> = s.iter().collect();
            let labels = runs.first().map(|r| c.labels(r.labels).into_iter().collect()).unwrap_or_default();
            let counts = GroupCounts {
                seen: s.seen,
                complete: s.complete,
                outcomes: s.outcomes.clone(),
                missing_stage: s.missing_stage.clone(),
            };
            group_stats(if sid.is_empty() { "(no session)".into() } else { sid.clone() }, labels, &runs, counts, opts)
        })
        .collect()
}

/// Statistics per value of a label dimension (env, governor, cstate) over all sessions.
pub fn groups_of(c: &Collected, data: &ChainData, dim: &str, opts: &AnalyzeOptions) -> Vec<GroupStats> {
    let mut by: BTreeMap<String, Vec<RunRef>> = BTreeMap::new();
    for s in data.sessions.values() {
        for r in s.iter() {
            if let Some(v) = label_value(&c.labels(r.labels), dim) {
                by.entry(v).or_default().push(r);
            }
        }
    }
    by.into_iter()
        .filter_map(|(v, runs)| {
            let counts = GroupCounts {
                seen: runs.len() as u64,
                complete: runs.iter().filter(|r| r.is_complete()).count() as u64,
                ..Default::default()
            };
            group_stats(v.clone(), BTreeMap::from([(dim.to_string(), v)]), &runs, counts, opts)
        })
        .collect()
}

/// Column names of a chain: its segments, then `total` when it has more than one.
pub fn column_names(shape: &ChainShape) -> Vec<String> {
    let mut v: Vec<String> = (1..=shape.segments() as u8).map(|i| shape.segment_name(i)).collect();
    if v.len() > 1 {
        v.push("total".into());
    }
    v
}
