//! Reading and assembling trace files into runs, whatever the order of their lines.
//!
//! Probe names are mapped to (chain, stage); each session's hits then go through the kernel's
//! semantics (`chain::hits`, keyed by `delta_chain_id`, or by nothing for id-less lines) and
//! the resulting records through `chain::assembler`, in time order per session. A file read in
//! time order is assembled as it streams. The first hit that is out of order (before the
//! previous hit of its session, by time, then chain, stage, id, CPU and labels) stops that;
//! the inputs are then read again into an external sort ([`super::sorter`]) and assembled from
//! the sorted stream. Either way each session sees the same sequence of hits, so a file in any
//! order — shuffled, sorted by probe name, cut in pieces given in any order — gives the same
//! runs, bit for bit, as the time-sorted file. Lines out of time order are counted.
//!
//! Memory: streaming, the chains open at once (bounded per session by the chains' timeouts);
//! sorting, the sort budget (`AnalyzeOptions::sort_memory`) plus a read buffer per spilled run;
//! plus, either way, the runs kept for the statistics (`reservoir` per chain and session).

use std::{
    fs::File,
    io::{self, Write as _},
    os::unix::fs::FileExt as _,
    path::PathBuf,
};

use clockpath_common::{
    hist::{NUM_BUCKETS, bucket_of},
    record::{RECORD_SEGMENT, Record as KernelRecord, UNKNOWN_INTERFERENCE},
};
use rustc_hash::FxHashMap;

use super::{
    AnalyzeError, AnalyzeOptions, ChainData, ChainDef, Collected, OrderStats,
    runs::{Interference, SessionRuns},
    sorter::{Record, Sorter},
};
use crate::{
    chain::{
        ChainRecord, ChainShape, Outcome,
        assembler::RecordAssembler,
        hits::{Hit as StageHit, HitAssembler, HitRole},
    },
    trace::read::{Flow, Hit, Interner},
};

/// Probe names of older tooling, mapped to (chain, stage).
pub const ALIASES: &[(&str, &str, &str)] = &[
    ("do_clocksource_switch_entry", "clocksource_switch", "switch_entry"),
    ("clocksource_switch_entry", "clocksource_switch", "switch_entry"),
    ("first_read", "clocksource_switch", "first_read"),
    ("baseline_recalc", "clocksource_switch", "baseline_recalc"),
];

/// Where each probe name goes.
struct ProbeMap {
    /// (chain name, stage name) → (chain idx, stage idx)
    by_chain_stage: FxHashMap<(String, String), (u8, u8)>,
    /// stage name → candidates
    by_stage: FxHashMap<String, Vec<(u8, u8)>>,
    shapes: Vec<ChainShape>,
    first_hit_only: Vec<bool>,
}

impl ProbeMap {
    fn new(chains: &[ChainDef]) -> ProbeMap {
        let mut m = ProbeMap {
            by_chain_stage: FxHashMap::default(),
            by_stage: FxHashMap::default(),
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

    /// (chain, stage) of a probe name, or Err(ambiguous).
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
            // A recorded instance's cause travels as its `cause` label, like any other label.
            cause: 0,
        }
    }
}

/// A stage hit of a configured chain, as assembly sees it. The field order is the order hits
/// are assembled in within a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Staged {
    session: u32,
    ts: u64,
    chain: u8,
    stage: u8,
    chain_id: u64,
    cpu: u32,
    labels: u32,
    /// 1 + index into the interference table; 0: none.
    interference: u32,
    /// The clock the hit is stamped on ([`ClockOf`]: 0 for CLOCK_MONOTONIC).
    clock: u8,
}

/// The order of hits within a session (and clock).
type OrderKey = (u64, u8, u8, u64, u32, u32);

impl Staged {
    /// What decides the order within a session.
    fn order_key(&self) -> OrderKey {
        (self.ts, self.chain, self.stage, self.chain_id, self.cpu, self.labels)
    }
}

impl Record for Staged {
    const SIZE: usize = 35;

    fn encode(&self, o: &mut [u8]) {
        o[0..4].copy_from_slice(&self.session.to_le_bytes());
        o[4..12].copy_from_slice(&self.ts.to_le_bytes());
        o[12] = self.chain;
        o[13] = self.stage;
        o[14..22].copy_from_slice(&self.chain_id.to_le_bytes());
        o[22..26].copy_from_slice(&self.cpu.to_le_bytes());
        o[26..30].copy_from_slice(&self.labels.to_le_bytes());
        o[30..34].copy_from_slice(&self.interference.to_le_bytes());
        o[34] = self.clock;
    }

    fn decode(b: &[u8]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        Staged {
            session: u32_at(0),
            ts: u64_at(4),
            chain: b[12],
            stage: b[13],
            chain_id: u64_at(14),
            cpu: u32_at(22),
            labels: u32_at(26),
            interference: u32_at(30),
            clock: b[34],
        }
    }
}

/// Interference values of the hits that carry them, in memory up to a limit, then in a
/// temporary file (read back by index while the sorted hits are assembled).
#[derive(Default)]
struct InterferenceTable {
    mem: Vec<Interference>,
    file: Option<File>,
    /// Entries written to the file.
    on_disk: u32,
}

/// Entries kept in memory before the table moves to disk (40 B each: 64 MiB).
const INTERFERENCE_IN_MEMORY: usize = 1 << 21;

impl InterferenceTable {
    /// Store `v`; returns its reference for `Staged::interference`.
    fn add(&mut self, v: Interference) -> io::Result<u32> {
        if self.file.is_none() && self.mem.len() >= INTERFERENCE_IN_MEMORY {
            let mut f = tempfile::tempfile()?;
            for e in self.mem.drain(..) {
                f.write_all(&encode5(&e))?;
                self.on_disk += 1;
            }
            self.mem = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => {
                f.write_all(&encode5(&v))?;
                self.on_disk += 1;
                Ok(self.on_disk)
            }
            None => {
                self.mem.push(v);
                Ok(self.mem.len() as u32)
            }
        }
    }

    fn get(&self, r: u32) -> io::Result<Option<Interference>> {
        if r == 0 {
            return Ok(None);
        }
        let i = (r - 1) as usize;
        match &self.file {
            None => Ok(self.mem.get(i).copied()),
            Some(f) => {
                let mut b = [0u8; 40];
                f.read_exact_at(&mut b, i as u64 * 40)?;
                Ok(Some(std::array::from_fn(|k| u64::from_le_bytes(b[k * 8..k * 8 + 8].try_into().unwrap_or([0; 8])))))
            }
        }
    }
}

fn encode5(v: &Interference) -> [u8; 40] {
    let mut b = [0u8; 40];
    for (k, x) in v.iter().enumerate() {
        b[k * 8..k * 8 + 8].copy_from_slice(&x.to_le_bytes());
    }
    b
}

/// Assembly state of one (session, chain).
struct ChainState {
    hits: HitAssembler,
    records: RecordAssembler,
    /// instance id → label set of its stage-0 hit
    labels: FxHashMap<u64, u32>,
    /// Records emitted by `records` (instances with at least one segment).
    emitted: u64,
}

/// Per session: its chains' states, and what decides eviction.
struct SessionState {
    chains: FxHashMap<u8, ChainState>,
    /// Hits since the last eviction pass.
    since_evict: u32,
}

/// How often (in hits of a session) instances past their timeout are dropped.
const EVICT_EVERY: u32 = 65_536;

/// Per chain index: session id → runs.
type RunsByChain = Vec<FxHashMap<u32, SessionRuns>>;
/// Per chain index: exact histograms per column.
type HistsByChain = Vec<Vec<[u64; NUM_BUCKETS]>>;
/// What reading calls with each hit of a configured chain.
type OnHit<'a> = dyn FnMut(Staged, Option<Interference>, &Interner, &std::path::Path) -> Result<(), Stop> + 'a;

/// Hits → runs, per session, in the order they are pushed.
struct Assembly<'a> {
    map: &'a ProbeMap,
    opts: &'a AnalyzeOptions,
    sessions: FxHashMap<u32, SessionState>,
    runs: RunsByChain,
    hists: HistsByChain,
    recs: Vec<KernelRecord>,
    values: Vec<f64>,
    interference: Vec<Interference>,
    /// Per chain: a hit was stamped on another clock than CLOCK_MONOTONIC. Timeouts and
    /// eviction compare times across stages, which such a chain's times cannot be: they are
    /// off for it (the kernel judged them on CLOCK_MONOTONIC when it recorded).
    mixed: Vec<bool>,
}

impl<'a> Assembly<'a> {
    fn new(map: &'a ProbeMap, opts: &'a AnalyzeOptions) -> Self {
        Assembly {
            map,
            opts,
            sessions: FxHashMap::default(),
            runs: map.shapes.iter().map(|_| FxHashMap::default()).collect(),
            hists: map.shapes.iter().map(|_| Vec::new()).collect(),
            recs: Vec::with_capacity(4),
            values: Vec::with_capacity(8),
            interference: Vec::with_capacity(8),
            mixed: map.shapes.iter().map(|_| false).collect(),
        }
    }

    fn push(&mut self, h: &Staged, interference: Option<Interference>, names: &Interner) {
        let map = self.map;
        let sess = self
            .sessions
            .entry(h.session)
            .or_insert_with(|| SessionState { chains: FxHashMap::default(), since_evict: 0 });
        let shapes: Vec<Option<ChainShape>> = Vec::new();
        let st = sess.chains.entry(h.chain).or_insert_with(|| {
            let mut shapes = shapes;
            shapes.resize(h.chain as usize + 1, None);
            shapes[h.chain as usize] = Some(map.shapes[h.chain as usize].clone());
            ChainState {
                hits: HitAssembler::new(),
                records: RecordAssembler::new(shapes),
                labels: FxHashMap::default(),
                emitted: 0,
            }
        });
        let mut role = map.role(h.chain, h.stage);
        if h.clock != 0 {
            self.mixed[h.chain as usize] = true;
        }
        if self.mixed[h.chain as usize] {
            role.timeout_ns = 0;
        }
        let hit = StageHit { role, key: h.chain_id, ts_ns: h.ts, cpu: h.cpu, capture: 0, cause: None };
        self.recs.clear();
        let recs = &mut self.recs;
        st.hits.push(&hit, &mut |mut r: KernelRecord| {
            if r.kind == RECORD_SEGMENT
                && let Some(i) = interference
            {
                r.interference_ns = i;
            }
            recs.push(r);
        });
        if h.stage == 0 && h.labels != 0 {
            // The instance just opened (ids are sequential per assembler).
            st.labels.insert(st.hits.last_id(), h.labels);
        }
        let sink = Sink {
            shape: &map.shapes[h.chain as usize],
            runs: self.runs[h.chain as usize].entry(h.session).or_insert_with(|| {
                SessionRuns::new(
                    map.shapes[h.chain as usize].segments(),
                    self.opts.bootstrap.seed,
                    names.name(h.session),
                )
            }),
            hists: &mut self.hists[h.chain as usize],
            reservoir: self.opts.reservoir,
            values: &mut self.values,
            interference: &mut self.interference,
        };
        let mut sink = sink;
        for r in self.recs.iter() {
            let labels = if st.labels.is_empty() { 0 } else { st.labels.get(&r.instance_id).copied().unwrap_or(0) };
            let emitted = &mut st.emitted;
            let labels_of = &mut st.labels;
            st.records.push(r, &mut |rec| {
                labels_of.remove(&rec.instance_id);
                *emitted += 1;
                sink.run(&rec, labels);
            });
        }
        sess.since_evict += 1;
        if sess.since_evict >= EVICT_EVERY {
            sess.since_evict = 0;
            // Instances past their timeout at this session's time will never complete.
            for (chain, st) in sess.chains.iter_mut() {
                let timeout = map.shapes[*chain as usize].timeout_ns;
                if !self.mixed[*chain as usize] {
                    st.hits.evict(h.ts, |_| timeout);
                }
            }
        }
    }

    /// Close what is still open (it is incomplete) and hand over the runs.
    fn finish(mut self, names: &Interner) -> (RunsByChain, HistsByChain) {
        let mut sessions: Vec<(u32, SessionState)> = self.sessions.drain().collect();
        sessions.sort_by_key(|(s, _)| *s);
        for (sid, mut sess) in sessions {
            let mut chains: Vec<(u8, ChainState)> = sess.chains.drain().collect();
            chains.sort_by_key(|(c, _)| *c);
            for (chain, mut st) in chains {
                let shape = &self.map.shapes[chain as usize];
                let runs = self.runs[chain as usize]
                    .entry(sid)
                    .or_insert_with(|| SessionRuns::new(shape.segments(), self.opts.bootstrap.seed, names.name(sid)));
                let mut sink = Sink {
                    shape,
                    runs,
                    hists: &mut self.hists[chain as usize],
                    reservoir: self.opts.reservoir,
                    values: &mut self.values,
                    interference: &mut self.interference,
                };
                let labels = &st.labels;
                let mut emitted = st.emitted;
                st.records.flush(&mut |rec| {
                    emitted += 1;
                    let l = labels.get(&rec.instance_id).copied().unwrap_or(0);
                    sink.run(&rec, l);
                });
                // Instances that opened and never recorded a segment stopped before stage 1.
                let opened = st.hits.stats.opened;
                if opened > emitted
                    && let Some(stage1) = shape.stages.get(1)
                {
                    *sink.runs.missing_stage.entry(stage1.clone()).or_default() += opened - emitted;
                    *sink.runs.outcomes.entry("incomplete").or_default() += opened - emitted;
                }
                if st.hits.stats.no_instance > 0 {
                    *sink.runs.outcomes.entry("stage_hit_without_chain").or_default() += st.hits.stats.no_instance;
                }
            }
        }
        (self.runs, self.hists)
    }
}

/// Where a session's assembled instances go.
struct Sink<'a> {
    shape: &'a ChainShape,
    runs: &'a mut SessionRuns,
    hists: &'a mut Vec<[u64; NUM_BUCKETS]>,
    reservoir: usize,
    values: &'a mut Vec<f64>,
    interference: &'a mut Vec<Interference>,
}

impl Sink<'_> {
    fn run(&mut self, rec: &ChainRecord, labels: u32) {
        let runs = &mut *self.runs;
        *runs.outcomes.entry(rec.outcome.as_str()).or_default() += 1;
        let nseg = self.shape.segments();
        let complete = rec.outcome == Outcome::Completed;
        self.values.clear();
        self.values.resize(runs.cols, f64::NAN);
        self.interference.clear();
        self.interference.resize(nseg, super::runs::UNKNOWN);
        let mut known = false;
        let mut reached = 0usize;
        for s in &rec.segments {
            let i = s.index as usize;
            if i == 0 || i > nseg {
                continue;
            }
            self.values[i - 1] = s.duration_ns() as f64;
            reached = reached.max(i);
            if s.interference_ns.iter().any(|v| *v != 0) && s.interference_ns[0] != UNKNOWN_INTERFERENCE {
                self.interference[i - 1] = s.interference_ns;
                known = true;
            }
        }
        if complete && nseg > 1 {
            self.values[nseg] = rec.total_ns() as f64;
        }
        if !complete && let Some(stage) = self.shape.stages.get(reached + 1) {
            *runs.missing_stage.entry(stage.clone()).or_default() += 1;
        }
        if self.hists.is_empty() {
            *self.hists = (0..runs.cols).map(|_| [0u64; NUM_BUCKETS]).collect();
        }
        for (h, v) in self.hists.iter_mut().zip(self.values.iter()) {
            if v.is_finite() {
                h[bucket_of(*v as u64) as usize] += 1;
            }
        }
        runs.keep(self.values, known.then_some(self.interference.as_slice()), labels, rec.start_ns, self.reservoir);
    }
}

/// Why a streaming pass stopped.
enum Stop {
    /// A hit came before the previous one of its session: sort instead.
    Disordered {
        file: PathBuf,
    },
    Failed(AnalyzeError),
}

impl From<AnalyzeError> for Stop {
    fn from(e: AnalyzeError) -> Self {
        Stop::Failed(e)
    }
}

/// What reading the inputs produced besides the hits.
struct Reading {
    out: Collected,
    unknown: FxHashMap<u32, u64>,
    ambiguous: FxHashMap<u32, u64>,
}

/// Label set → the clock its hits are stamped on (the `clock` label; none: CLOCK_MONOTONIC,
/// as clockpath stamps by default), as an index: 0 for CLOCK_MONOTONIC.
#[derive(Default)]
struct ClockOf {
    by_labels: FxHashMap<u32, u8>,
    names: Vec<String>,
}

impl ClockOf {
    fn of(&mut self, labels: u32, names: &Interner) -> u8 {
        if labels == 0 {
            return 0;
        }
        if let Some(&c) = self.by_labels.get(&labels) {
            return c;
        }
        let name = crate::trace::read::labels_of(names, labels)
            .into_iter()
            .find(|(k, _)| k == crate::trace::CLOCK_LABEL)
            .map_or_else(|| "monotonic".to_string(), |(_, v)| v);
        let c = match name.as_str() {
            "monotonic" => 0,
            _ => match self.names.iter().position(|n| *n == name) {
                Some(i) => i as u8 + 1,
                None => {
                    self.names.push(name);
                    self.names.len().min(u8::MAX as usize) as u8
                }
            },
        };
        self.by_labels.insert(labels, c);
        c
    }

    fn name(&self, c: u8) -> String {
        if c == 0 { "monotonic".into() } else { self.names.get(c as usize - 1).cloned().unwrap_or_default() }
    }
}

/// The clock each stage's hits are stamped on, to refuse subtracting two clocks' timestamps.
#[derive(Default)]
struct StageClocks {
    /// (chain, stage) → its clock ([`ClockOf`] index).
    clocks: FxHashMap<(u8, u8), u8>,
}

impl StageClocks {
    fn check(
        &mut self,
        map: &ProbeMap,
        of: &ClockOf,
        (chain, stage, clock): (u8, u8, u8),
        file: &std::path::Path,
    ) -> Result<(), AnalyzeError> {
        if self.clocks.get(&(chain, stage)) == Some(&clock) {
            return Ok(());
        }
        if let Some((&(_, s), &v)) = self.clocks.iter().find(|((c, _), v)| *c == chain && **v != clock) {
            let shape = &map.shapes[chain as usize];
            let name = |i: u8| shape.stages.get(i as usize).cloned().unwrap_or_else(|| format!("stage_{i}"));
            return Err(AnalyzeError::MixedClocks(Box::new(super::MixedClocks {
                file: file.display().to_string(),
                chain: shape.name.clone(),
                a: name(s),
                clock_a: of.name(v),
                b: name(stage),
                clock_b: of.name(clock),
            })));
        }
        self.clocks.insert((chain, stage), clock);
        Ok(())
    }
}

/// Read every file, calling `on` with each hit of a configured chain.
fn read_all(files: &[PathBuf], map: &ProbeMap, opts: &AnalyzeOptions, on: &mut OnHit<'_>) -> Result<Reading, Stop> {
    let mut r = Reading {
        out: Collected {
            files: files.to_vec(),
            names: Interner::new(),
            clock: super::align::ClockPoints::new(&opts.align.label),
            ..Default::default()
        },
        unknown: FxHashMap::default(),
        ambiguous: FxHashMap::default(),
    };
    let mut lookups: FxHashMap<(u32, u32), Result<(u8, u8), bool>> = FxHashMap::default();
    let (mut clock_of, mut clocks) = (ClockOf::default(), StageClocks::default());
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
    let mut stop: Option<Stop> = None;
    for f in files {
        let mut names = std::mem::take(&mut r.out.names);
        let mut stats = std::mem::take(&mut r.out.read);
        let base = read_before;
        let result = crate::trace::read_file(
            f,
            opts.read,
            &mut names,
            &mut stats,
            &mut |hit: Hit, names: &Interner| {
                if stop.is_some() {
                    return Flow::Break(());
                }
                // Every hit tells its clock's error, whatever its probe.
                r.out.clock.add(&hit, names);
                let looked = *lookups
                    .entry((hit.chain, hit.probe))
                    .or_insert_with(|| map.lookup(names.name(hit.chain), names.name(hit.probe)));
                let (chain, stage) = match looked {
                    Ok(v) => v,
                    Err(amb) => {
                        *(if amb { r.ambiguous.entry(hit.probe) } else { r.unknown.entry(hit.probe) }).or_default() +=
                            1;
                        return Flow::Continue(());
                    }
                };
                let clock = clock_of.of(hit.labels, names);
                if !opts.mixed_clocks
                    && let Err(e) = clocks.check(map, &clock_of, (chain, stage, clock), f)
                {
                    stop = Some(Stop::Failed(e));
                    return Flow::Break(());
                }
                let s = Staged {
                    session: hit.session,
                    ts: hit.timestamp_ns,
                    chain,
                    stage,
                    chain_id: hit.chain_id,
                    cpu: hit.cpu,
                    labels: hit.labels,
                    interference: 0,
                    clock,
                };
                match on(s, hit.interference_ns, names, f) {
                    Ok(()) => Flow::Continue(()),
                    Err(e) => {
                        // Stop reading at once: a disordered trace is read again, sorted.
                        stop = Some(e);
                        Flow::Break(())
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
        r.out.names = names;
        r.out.read = stats;
        result.map_err(AnalyzeError::from)?;
        if let Some(s) = stop {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return Err(s);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(r)
}

/// Read and assemble `files` (see the module documentation).
pub fn collect(files: &[PathBuf], chains: &[ChainDef], opts: &AnalyzeOptions) -> Result<Collected, AnalyzeError> {
    if files.is_empty() {
        return Err(AnalyzeError::Empty("no trace file given".into()));
    }
    let map = ProbeMap::new(chains);
    // First, as the lines come: most traces are in time order.
    let mut asm = Assembly::new(&map, opts);
    // Time order holds per clock: stamps of two clocks do not compare.
    let mut last: FxHashMap<(u32, u8), OrderKey> = FxHashMap::default();
    let streamed = read_all(files, &map, opts, &mut |s, interference, names, file| {
        let key = s.order_key();
        if let Some(prev) = last.insert((s.session, s.clock), key)
            && key < prev
        {
            return Err(Stop::Disordered { file: file.to_path_buf() });
        }
        asm.push(&s, interference, names);
        Ok(())
    });
    let (reading, runs, hists, order) = match streamed {
        Ok(reading) => {
            let (runs, hists) = asm.finish(&reading.out.names);
            (reading, runs, hists, OrderStats::default())
        }
        Err(Stop::Failed(e)) => return Err(e),
        Err(Stop::Disordered { file }) => {
            drop(asm);
            tracing::info!(file = %file.display(), "trace lines are out of time order: sorting them");
            sorted(files, &map, opts)?
        }
    };
    finish(reading, runs, hists, order, &map)
}

/// Read everything into an external sort, then assemble the sorted stream.
#[expect(clippy::type_complexity, reason = "the parts of a collection, handed to finish")]
fn sorted(
    files: &[PathBuf],
    map: &ProbeMap,
    opts: &AnalyzeOptions,
) -> Result<(Reading, Vec<FxHashMap<u32, SessionRuns>>, Vec<Vec<[u64; NUM_BUCKETS]>>, OrderStats), AnalyzeError> {
    let started = std::time::Instant::now();
    let io_err = |source: io::Error| AnalyzeError::Sort(source.to_string());
    let mut sorter: Sorter<Staged> = Sorter::new(opts.sort_memory);
    let mut table = InterferenceTable::default();
    let mut order = OrderStats { sorted: true, ..Default::default() };
    let mut latest: FxHashMap<u32, u64> = FxHashMap::default();
    // Sorting is by time, and times of two clocks do not compare: a stage stamped on a clock
    // ahead of its predecessor's (boottime, tai after monotonic) sorts after it, and the
    // assembly of such a chain neither times out nor evicts; a stage on a clock behind its
    // predecessor's cannot be put in order.
    let reading = read_all(files, map, opts, &mut |mut s, interference, _, _| {
        let l = latest.entry(s.session).or_insert(0);
        if s.ts < *l {
            order.out_of_order_lines += 1;
        }
        *l = (*l).max(s.ts);
        if let Some(i) = interference {
            s.interference = table.add(i).map_err(io_err).map_err(Stop::Failed)?;
        }
        sorter.push(s).map_err(io_err).map_err(Stop::Failed)
    })
    .map_err(|e| match e {
        Stop::Failed(e) => e,
        Stop::Disordered { .. } => AnalyzeError::Sort("unexpected order check while sorting".into()),
    })?;
    order.spilled_runs = sorter.runs() as u64;
    tracing::debug!(elapsed = ?started.elapsed(), runs = order.spilled_runs, "read into the sort");
    let mut asm = Assembly::new(map, opts);
    for s in sorter.finish().map_err(io_err)? {
        let s = s.map_err(io_err)?;
        let interference = table.get(s.interference).map_err(io_err)?;
        asm.push(&s, interference, &reading.out.names);
    }
    let (runs, hists) = asm.finish(&reading.out.names);
    tracing::debug!(elapsed = ?started.elapsed(), "merged and assembled");
    Ok((reading, runs, hists, order))
}

fn finish(
    reading: Reading,
    mut runs: RunsByChain,
    mut hists: HistsByChain,
    order: OrderStats,
    map: &ProbeMap,
) -> Result<Collected, AnalyzeError> {
    let Reading { mut out, unknown, ambiguous } = reading;
    for (ci, shape) in map.shapes.iter().enumerate() {
        let sessions: std::collections::BTreeMap<String, SessionRuns> =
            std::mem::take(&mut runs[ci]).into_iter().map(|(sid, r)| (out.names.name(sid).to_string(), r)).collect();
        if !sessions.is_empty() {
            let histograms = std::mem::take(&mut hists[ci]);
            out.chains.insert(shape.name.clone(), ChainData { shape: Some(shape.clone()), sessions, histograms });
        }
    }
    out.unknown_probes = unknown.into_iter().map(|(k, v)| (out.names.name(k).to_string(), v)).collect();
    out.ambiguous_probes = ambiguous.into_iter().map(|(k, v)| (out.names.name(k).to_string(), v)).collect();
    out.order = order;
    if out.read.lines == 0 {
        let files: Vec<String> = out.files.iter().map(|f| f.display().to_string()).collect();
        return Err(AnalyzeError::Empty(format!("{}: no trace lines", files.join(", "))));
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
