//! Offline analysis of recorded traces (`clockpath analyze`, `compare`, `regress`): stream the
//! files, map probe names to chain stages, assemble chains with the same semantics as the
//! kernel (`chain::hits`), and collect runs per chain and session for the statistics.
//!
//! Memory is bounded by the number of open chains while reading, plus the runs kept for the
//! statistics: up to `reservoir` runs per chain and session (a uniform sample beyond that,
//! documented in the report); the exported histograms are exact whatever the file size.

pub mod compare;
pub mod plot;
pub mod regress;
pub mod report;
pub mod simulate;

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use rustc_hash::FxHashMap;

use clockpath_common::{
    hist::{NUM_BUCKETS, bucket_of},
    record::{RECORD_SEGMENT, Record, UNKNOWN_INTERFERENCE},
};
use rand::{RngExt as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::{
    chain::{
        ChainShape, Outcome,
        assembler::RecordAssembler,
        hits::{Hit as StageHit, HitAssembler, HitRole},
    },
    trace::read::{self, Hit, Interner, ReadError, ReadOptions, ReadStats},
};

/// Probe names of older tooling, mapped to (chain, stage).
pub const ALIASES: &[(&str, &str, &str)] = &[
    ("do_clocksource_switch_entry", "clocksource_switch", "switch_entry"),
    ("clocksource_switch_entry", "clocksource_switch", "switch_entry"),
    ("first_read", "clocksource_switch", "first_read"),
    ("baseline_recalc", "clocksource_switch", "baseline_recalc"),
];

/// Label keys the report groups by (a label named `cstate_limit` counts as `cstate`).
pub const GROUP_DIMENSIONS: &[&str] = &["env", "governor", "cstate"];

#[derive(Clone, Debug)]
pub struct AnalyzeOptions {
    pub read: ReadOptions,
    /// Runs kept per chain and session for the statistics.
    pub reservoir: usize,
    pub sigma: f64,
    pub bootstrap: crate::stats::Bootstrap,
    /// Show a progress bar (only when stderr is a terminal).
    pub progress: bool,
}

/// One complete run, borrowed from its session: segment durations (ns), then the total when
/// the chain has more than one segment; interference per segment when the trace had it.
#[derive(Clone, Copy, Debug)]
pub struct RunRef<'a> {
    pub values: &'a [f64],
    pub interference: Option<&'a [[u64; 5]]>,
    pub labels: u32,
}

/// Runs of one chain in one session, stored flat (a few bytes per run).
#[derive(Debug, Default)]
pub struct SessionRuns {
    /// Values per run.
    pub cols: usize,
    /// Segments per run.
    pub nseg: usize,
    /// Run-major values.
    pub values: Vec<f64>,
    pub labels: Vec<u32>,
    /// Run-major interference per segment; empty once a run without it is kept.
    pub interference: Vec<[u64; 5]>,
    /// Complete runs seen (more than kept once the reservoir is full).
    pub seen: u64,
    pub outcomes: BTreeMap<&'static str, u64>,
}

impl SessionRuns {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn run(&self, i: usize) -> RunRef<'_> {
        let has = !self.interference.is_empty();
        RunRef {
            values: &self.values[i * self.cols..(i + 1) * self.cols],
            interference: has.then(|| &self.interference[i * self.nseg..(i + 1) * self.nseg]),
            labels: self.labels[i],
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = RunRef<'_>> + '_ {
        (0..self.len()).map(|i| self.run(i))
    }

    /// Keep a run (uniform reservoir of `cap` runs).
    fn keep(
        &mut self,
        values: &[f64],
        interference: Option<&[[u64; 5]]>,
        labels: u32,
        cap: usize,
        rng: &mut Xoshiro256PlusPlus,
    ) {
        self.seen += 1;
        let first = self.seen == 1;
        if first {
            self.cols = values.len();
            self.nseg = interference.map_or(0, <[_]>::len);
        }
        if values.len() != self.cols {
            return;
        }
        let slot = if self.len() < cap {
            self.values.extend_from_slice(values);
            self.labels.push(labels);
            None
        } else {
            let j = rng.random_range(0..self.seen) as usize;
            if j >= cap {
                return;
            }
            self.values[j * self.cols..(j + 1) * self.cols].copy_from_slice(values);
            self.labels[j] = labels;
            Some(j)
        };
        match (interference, first || !self.interference.is_empty()) {
            (Some(i), true) if i.len() == self.nseg => match slot {
                None => self.interference.extend_from_slice(i),
                Some(j) => self.interference[j * self.nseg..(j + 1) * self.nseg].copy_from_slice(i),
            },
            _ => self.interference = Vec::new(),
        }
    }
}

/// Everything read, per chain.
#[derive(Debug, Default)]
pub struct ChainData {
    pub shape: Option<ChainShape>,
    /// session → runs
    pub sessions: BTreeMap<String, SessionRuns>,
    /// Exact histograms per column (segments, then total): kernel bucket grid.
    pub histograms: Vec<Box<[u64; NUM_BUCKETS]>>,
}

/// The result of reading inputs.
#[derive(Debug, Default)]
pub struct Collected {
    pub files: Vec<PathBuf>,
    pub read: ReadStats,
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
}

/// A configured chain as the analysis needs it: its shape, and whether its first stage keeps
/// an open instance (`first_hit_only`) instead of replacing it.
#[derive(Clone, Debug)]
pub struct ChainDef {
    pub shape: ChainShape,
    pub first_hit_only: bool,
}

/// Where each probe name goes.
struct ProbeMap {
    /// (chain name, stage name) → (chain idx, stage idx)
    by_chain_stage: HashMap<(String, String), (u8, u8)>,
    /// stage name → candidates
    by_stage: HashMap<String, Vec<(u8, u8)>>,
    shapes: Vec<ChainShape>,
    first_hit_only: Vec<bool>,
}

impl ProbeMap {
    fn new(chains: &[ChainDef]) -> ProbeMap {
        let mut m = ProbeMap {
            by_chain_stage: HashMap::new(),
            by_stage: HashMap::new(),
            shapes: Vec::new(),
            first_hit_only: Vec::new(),
        };
        for (ci, def) in chains.iter().enumerate() {
            let shape = &def.shape;
            for (si, st) in shape.stages.iter().enumerate() {
                m.by_chain_stage.insert((shape.name.clone(), st.clone()), (ci as u8, si as u8));
                m.by_stage.entry(st.clone()).or_default().push((ci as u8, si as u8));
            }
            m.first_hit_only.push(def.first_hit_only);
            m.shapes.push(shape.clone());
        }
        for (alias, chain, stage) in ALIASES {
            if let Some(&v) = m.by_chain_stage.get(&(chain.to_string(), stage.to_string())) {
                m.by_stage.entry(alias.to_string()).or_insert_with(|| vec![v]);
            }
        }
        m
    }

    fn lookup(&self, chain: &str, probe: &str) -> Result<(u8, u8), bool> {
        if !chain.is_empty() {
            if let Some(&v) = self.by_chain_stage.get(&(chain.to_string(), probe.to_string())) {
                return Ok(v);
            }
            // An alias within a named chain.
            if let Some(v) = ALIASES
                .iter()
                .find(|(a, c, _)| *a == probe && *c == chain)
                .and_then(|(_, c, s)| self.by_chain_stage.get(&(c.to_string(), s.to_string())))
            {
                return Ok(*v);
            }
        }
        match self.by_stage.get(probe).map(Vec::as_slice) {
            Some([one]) => Ok(*one),
            Some(_) => Err(true),
            None => Err(false),
        }
    }

    fn role(&self, chain: u8, stage: u8) -> HitRole {
        let shape = &self.shapes[chain as usize];
        HitRole {
            chain,
            stage,
            abort: false,
            first_hit_only: stage == 0 && self.first_hit_only[chain as usize],
            last: stage as usize + 1 == shape.stages.len(),
            match_value: None,
            timeout_ns: shape.timeout_ns,
        }
    }
}

/// Per-session assembly state.
struct SessionState {
    hits: HitAssembler,
    records: RecordAssembler,
    /// instance id → label set of its stage-0 hit
    labels: FxHashMap<u64, u32>,
}

/// Read and assemble `files`.
pub fn collect(files: &[PathBuf], chains: &[ChainDef], opts: &AnalyzeOptions) -> Result<Collected, AnalyzeError> {
    if files.is_empty() {
        return Err(AnalyzeError::Empty("no trace file given".into()));
    }
    let map = ProbeMap::new(chains);
    let shapes_opt: Vec<Option<ChainShape>> = map.shapes.iter().cloned().map(Some).collect();
    let mut out = Collected { files: files.to_vec(), names: Interner::new(), ..Default::default() };
    // Per chain index, per session id: kept runs and histograms (converted to names at the end).
    let mut runs: Vec<FxHashMap<u32, SessionRuns>> = map.shapes.iter().map(|_| FxHashMap::default()).collect();
    let mut hists: Vec<Vec<Box<[u64; NUM_BUCKETS]>>> = map.shapes.iter().map(|_| Vec::new()).collect();
    let mut sessions: FxHashMap<u32, SessionState> = FxHashMap::default();
    let mut lookups: FxHashMap<(u32, u32), Result<(u8, u8), bool>> = FxHashMap::default();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(opts.bootstrap.seed);
    let mut unknown: FxHashMap<u32, u64> = FxHashMap::default();
    let mut ambiguous: FxHashMap<u32, u64> = FxHashMap::default();
    let total_bytes: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let bar =
        (opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) && total_bytes > 32 << 20).then(|| {
            let b = indicatif::ProgressBar::new(total_bytes);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {bytes}/{total_bytes} {bar:40} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
    let mut read_before = 0u64;
    let mut since_evict = 0u32;
    let timeouts: Vec<u64> = map.shapes.iter().map(|s| s.timeout_ns).collect();
    let mut recs: Vec<Record> = Vec::with_capacity(4);
    let mut values: Vec<f64> = Vec::with_capacity(8);
    let mut interf: Vec<[u64; 5]> = Vec::with_capacity(8);
    for f in files {
        let mut names = std::mem::take(&mut out.names);
        let mut stats = std::mem::take(&mut out.read);
        let base = read_before;
        let result = read::read_file(
            f,
            opts.read,
            &mut names,
            &mut stats,
            &mut |hit: Hit, names: &Interner| {
                let looked = *lookups
                    .entry((hit.chain, hit.probe))
                    .or_insert_with(|| map.lookup(names.name(hit.chain), names.name(hit.probe)));
                let (chain, stage) = match looked {
                    Ok(v) => v,
                    Err(amb) => {
                        *(if amb { ambiguous.entry(hit.probe) } else { unknown.entry(hit.probe) }).or_default() += 1;
                        return;
                    }
                };
                let st = sessions.entry(hit.session).or_insert_with(|| SessionState {
                    hits: HitAssembler::new(),
                    records: RecordAssembler::new(shapes_opt.clone()),
                    labels: FxHashMap::default(),
                });
                let role = map.role(chain, stage);
                let h = StageHit { role, key: hit.chain_id, ts_ns: hit.timestamp_ns, cpu: hit.cpu, capture: 0 };
                recs.clear();
                st.hits.push(&h, &mut |mut r: Record| {
                    if r.kind == RECORD_SEGMENT
                        && let Some(i) = hit.interference_ns
                    {
                        r.interference_ns = i;
                    }
                    recs.push(r);
                });
                if stage == 0 && hit.labels != 0 {
                    // The instance just opened (ids are sequential per assembler).
                    st.labels.insert(st.hits.last_id(), hit.labels);
                }
                let chain_runs = &mut runs[chain as usize];
                let chain_hists = &mut hists[chain as usize];
                for r in &recs {
                    let labels = if hit.labels == 0 && st.labels.is_empty() {
                        0
                    } else {
                        st.labels.get(&r.instance_id).copied().unwrap_or(0)
                    };
                    st.records.push(r, &mut |rec| {
                        st.labels.remove(&rec.instance_id);
                        let sess = chain_runs.entry(hit.session).or_default();
                        *sess.outcomes.entry(rec.outcome.as_str()).or_default() += 1;
                        if rec.outcome != Outcome::Completed {
                            return;
                        }
                        values.clear();
                        values.extend(rec.segments.iter().map(|s| s.duration_ns() as f64));
                        if values.len() > 1 {
                            values.push(rec.total_ns() as f64);
                        }
                        if chain_hists.is_empty() {
                            *chain_hists = (0..values.len()).map(|_| Box::new([0u64; NUM_BUCKETS])).collect();
                        }
                        for (h, v) in chain_hists.iter_mut().zip(&values) {
                            h[bucket_of(*v as u64) as usize] += 1;
                        }
                        interf.clear();
                        let known = rec.segments.iter().all(|s| {
                            s.interference_ns.iter().any(|v| *v != 0) && s.interference_ns[0] != UNKNOWN_INTERFERENCE
                        });
                        if known {
                            interf.extend(rec.segments.iter().map(|s| s.interference_ns));
                        }
                        sess.keep(&values, known.then_some(interf.as_slice()), labels, opts.reservoir, &mut rng);
                    });
                }
                since_evict += 1;
                if since_evict >= 65_536 {
                    since_evict = 0;
                    let now = hit.timestamp_ns;
                    for st in sessions.values_mut() {
                        st.hits.evict(now, |c| timeouts.get(c as usize).copied().unwrap_or(0));
                    }
                }
            },
            &mut |bytes| {
                if let Some(b) = &bar {
                    b.set_position(base + bytes);
                }
            },
        );
        read_before = stats.bytes;
        out.names = names;
        out.read = stats;
        result?;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // What is still open at the end of the input is incomplete.
    for (sid, st) in sessions.iter_mut() {
        st.records.flush(&mut |rec| {
            if let Some(r) = runs.get_mut(rec.chain as usize) {
                *r.entry(*sid).or_default().outcomes.entry(rec.outcome.as_str()).or_default() += 1;
            }
        });
    }
    for (ci, shape) in map.shapes.iter().enumerate() {
        let sessions: BTreeMap<String, SessionRuns> =
            std::mem::take(&mut runs[ci]).into_iter().map(|(sid, r)| (out.names.name(sid).to_string(), r)).collect();
        if !sessions.is_empty() {
            let histograms = std::mem::take(&mut hists[ci]);
            out.chains.insert(shape.name.clone(), ChainData { shape: Some(shape.clone()), sessions, histograms });
        }
    }
    out.unknown_probes = unknown.into_iter().map(|(k, v)| (out.names.name(k).to_string(), v)).collect();
    out.ambiguous_probes = ambiguous.into_iter().map(|(k, v)| (out.names.name(k).to_string(), v)).collect();
    if out.read.lines == 0 {
        return Err(AnalyzeError::Empty(format!(
            "{}: no trace lines",
            files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    if out.chains.is_empty() {
        let unknown: Vec<String> = out.unknown_probes.iter().map(|(k, v)| format!("{k} ({v})")).collect();
        return Err(AnalyzeError::Empty(format!(
            "no probe name in the input belongs to a configured chain (unknown: {})",
            if unknown.is_empty() { "none".into() } else { unknown.join(", ") }
        )));
    }
    Ok(out)
}

/// Statistics of one group of runs (a session, or all sessions sharing a label value).
#[derive(Clone, Debug, Serialize)]
pub struct GroupStats {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Complete runs seen, and kept for the statistics.
    pub seen: u64,
    pub runs: usize,
    pub rejected: usize,
    pub columns: Vec<crate::stats::ColumnStats>,
    pub outcomes: BTreeMap<&'static str, u64>,
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
    seen: u64,
    outcomes: BTreeMap<&'static str, u64>,
    opts: &AnalyzeOptions,
) -> Option<GroupStats> {
    let ncol = runs.first()?.values.len();
    let columns: Vec<Vec<f64>> = (0..ncol).map(|c| runs.iter().map(|r| r.values[c]).collect()).collect();
    let a = crate::stats::analyze_runs(&columns, 0, opts.sigma, &opts.bootstrap).ok()?;
    Some(GroupStats {
        name,
        labels,
        seen,
        runs: runs.len(),
        rejected: a.rejection.rejected,
        columns: a.columns,
        outcomes,
    })
}

/// Per-session statistics of a chain.
pub fn sessions_of(c: &Collected, data: &ChainData, opts: &AnalyzeOptions) -> Vec<GroupStats> {
    data.sessions
        .iter()
        .filter_map(|(sid, s)| {
            let runs: Vec<RunRef> = s.iter().collect();
            let labels = runs.first().map(|r| c.labels(r.labels).into_iter().collect()).unwrap_or_default();
            group_stats(
                if sid.is_empty() { "(no session)".into() } else { sid.clone() },
                labels,
                &runs,
                s.seen,
                s.outcomes.clone(),
                opts,
            )
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
            let n = runs.len() as u64;
            group_stats(v.clone(), BTreeMap::from([(dim.to_string(), v)]), &runs, n, BTreeMap::new(), opts)
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
