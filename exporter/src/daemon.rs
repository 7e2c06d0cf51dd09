//! A running exporter: the plan attached, the ring reader and sweeper running, assembly feeding
//! the sinks. `start` does everything up to attaching; `stop` detaches every probe first, then
//! drains what the kernel already wrote, so nothing collected is lost.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use clockpath_common::{
    hist::NUM_BUCKETS,
    limits::TOTAL_ROW,
    record::{CLOSE_TIMEOUT, RECORD_CLOSE, Record},
};
use serde::Serialize;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    chain::{ChainRecord, ChainShape, Outcome, hits::HitRole},
    config::{ConfigIssue, Loaded},
    ktime,
    pipeline::{Assembly, PipelineStats, Sink},
    probe::{
        kernel::Kernel,
        loader::{Engine, KernelMaps, LoadError},
        plan::{self, ChainPlan, Status},
        ring::RingReader,
    },
    sink::prometheus::server::Health,
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}", crate::config::ConfigError::Invalid(.0.clone()))]
    Config(Vec<ConfigIssue>),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("no chain can run on this kernel:\n{0}")]
    NothingRuns(String),
    #[error("starting the ring reader")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Otlp(#[from] crate::sink::otlp::export::ExportError),
    #[error("{what}")]
    Sink {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct Daemon {
    engine: Arc<Mutex<Engine>>,
    pub health: Arc<Health>,
    pub maps: Arc<Mutex<KernelMaps>>,
    pub plans: Arc<Vec<ChainPlan>>,
    pub stats: Arc<PipelineStats>,
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<Option<Assembly>>,
}

/// Resolve the plan; configuration errors come back before anything is loaded.
pub fn plan(loaded: &Loaded, kernel: &Kernel) -> Result<Vec<ChainPlan>, StartError> {
    plan::resolve(loaded, kernel).map_err(StartError::Config)
}

/// Chain shapes indexed by kernel chain index (None for chains that are not running).
pub fn shapes(plans: &[ChainPlan]) -> Vec<Option<ChainShape>> {
    shapes_where(plans, ChainPlan::is_running)
}

/// Shapes of every chain (running or not), indexed by chain index.
pub fn all_shapes(plans: &[ChainPlan]) -> Vec<Option<ChainShape>> {
    shapes_where(plans, |_| true)
}

fn shapes_where(plans: &[ChainPlan], keep: impl Fn(&ChainPlan) -> bool) -> Vec<Option<ChainShape>> {
    let chains: Vec<&ChainPlan> = plans.iter().filter(|p| p.is_chain()).collect();
    let n = chains.iter().map(|p| p.index as usize + 1).max().unwrap_or(0);
    let mut v = vec![None; n];
    for p in chains.into_iter().filter(|p| keep(p)) {
        v[p.index as usize] = Some(p.shape());
    }
    v
}

/// Clocksource names for the capture values of chains with `{clocksource_read}` points.
fn capture_names(plans: &[ChainPlan]) -> crate::pipeline::CaptureNames {
    let mut out = crate::pipeline::CaptureNames::default();
    for p in plans.iter().filter(|p| p.is_chain() && p.is_running()) {
        let Some(stage) = p.stages.iter().find(|s| s.match_capture) else { continue };
        let names: std::collections::HashMap<u64, Arc<str>> = stage
            .points
            .iter()
            .filter_map(|pt| Some((pt.candidates.first()?.func_addr, Arc::from(pt.label.clone()?.as_str()))))
            .filter(|(addr, _)| *addr != 0)
            .collect();
        if !names.is_empty() {
            let current = std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
                .ok()
                .map(|s| Arc::from(s.trim()));
            out.add(p.index, "clocksource", names, current);
        }
    }
    out
}

/// Slot → (chain index, stage name) of every resolved stage candidate (raw-hit recording).
/// Slots are only known after attach, so this lists every candidate that could be attached;
/// the recorder keys on the slot of each record.
pub fn slot_stages(plans: &[ChainPlan]) -> BTreeMap<u32, (u8, String)> {
    let mut out = BTreeMap::new();
    for p in plans.iter().filter(|p| p.is_chain()) {
        for s in &p.stages {
            for c in s.points.iter().flat_map(|pt| &pt.candidates) {
                if let Status::Attached(slot) = c.status {
                    out.insert(slot, (p.index, s.name.clone()));
                }
            }
        }
    }
    out
}

/// Role of every attached slot, for consumers of raw hits.
pub fn slot_roles(plans: &[ChainPlan], raw_hits: bool) -> BTreeMap<u32, HitRole> {
    let mut roles = BTreeMap::new();
    for chain in plans.iter().filter(|p| p.is_running()) {
        let stages = chain.stages.iter().enumerate().map(|(i, s)| (Some(i), &s.points));
        for (stage, points) in stages.chain(std::iter::once((None, &chain.aborts))) {
            for c in points.iter().flat_map(|p| &p.candidates) {
                if let Status::Attached(slot) = c.status
                    && let Some(role) = HitRole::from_slot(&plan::slot_config(chain, stage, c, raw_hits))
                {
                    roles.insert(slot, role);
                }
            }
        }
    }
    roles
}

impl Daemon {
    /// Load, attach and start reading. Must run inside a Tokio runtime.
    pub fn start(loaded: &Loaded, plans: Vec<ChainPlan>, sinks: Vec<Box<dyn Sink>>) -> Result<Daemon, StartError> {
        Self::start_with(loaded, plans, |_| Ok(sinks))
    }

    /// Like `start`, with sinks built once the plan is attached (they can see which slot
    /// implements which stage).
    pub fn start_with(
        loaded: &Loaded,
        plans: Vec<ChainPlan>,
        make_sinks: impl FnOnce(&[ChainPlan]) -> Result<Vec<Box<dyn Sink>>, StartError>,
    ) -> Result<Daemon, StartError> {
        let probe = &loaded.config.probe;
        let mut engine = Engine::load(probe, plan::direct_entries(&plans))?;
        let ring = engine.take_ring()?;
        let maps = engine.take_maps()?;
        engine.attach(plans);
        if !engine.chains.iter().any(ChainPlan::is_running) {
            let reasons: Vec<String> = engine
                .chains
                .iter()
                .map(|c| {
                    format!(
                        "  {}: {}",
                        c.name,
                        match &c.state {
                            plan::ChainState::Disabled(r) => r.as_str(),
                            _ => "not attached",
                        }
                    )
                })
                .collect();
            return Err(StartError::NothingRuns(reasons.join("\n")));
        }
        for c in &engine.chains {
            if c.is_running() {
                let attached: Vec<String> = c
                    .stages
                    .iter()
                    .flat_map(|s| {
                        s.points.iter().filter_map(|p| p.attached().map(|a| format!("{}={}", s.name, a.target)))
                    })
                    .collect();
                tracing::info!(chain = %c.name, targets = %attached.join(" "), "chain running");
            }
        }
        let plans = Arc::new(engine.chains.clone());
        let stats = Arc::new(PipelineStats::default());
        let sinks = make_sinks(&plans)?;
        let assembly = Assembly::start(shapes(&plans), capture_names(&plans), sinks, stats.clone())?;
        let reader = RingReader::new(ring, Duration::from_millis(probe.drain_interval_ms))?;
        let maps = Arc::new(Mutex::new(maps));
        let (stop_tx, stop_rx) = watch::channel(false);
        let timeouts: Vec<u64> = {
            let mut t = vec![0; plans.iter().filter(|p| p.is_chain()).map(|p| p.index as usize + 1).max().unwrap_or(0)];
            for p in plans.iter().filter(|p| p.is_chain()) {
                t[p.index as usize] = p.timeout_ns;
            }
            t
        };
        let health = Arc::new(Health::default());
        health.attached.store(true, Ordering::Relaxed);
        health.reader.store(true, Ordering::Relaxed);
        let task = tokio::spawn(
            ReadLoop {
                health: health.clone(),
                reader,
                assembly,
                maps: maps.clone(),
                timeouts,
                sweep_every: Duration::from_millis(probe.sweep_interval_ms),
                stop: stop_rx,
                stats: stats.clone(),
            }
            .run(),
        );
        Ok(Daemon { engine: Arc::new(Mutex::new(engine)), health, maps, plans, stats, stop_tx, task })
    }

    /// Kernel run time/count of the attached programs (meaningful with bpf_stats on).
    pub fn program_stats(&self) -> Vec<crate::probe::loader::ProgramStats> {
        self.engine.lock().map(|e| e.program_stats()).unwrap_or_default()
    }

    /// A shareable reader of `program_stats` (for the metrics).
    pub fn program_stats_fn(&self) -> impl Fn() -> Vec<crate::probe::loader::ProgramStats> + Send + Sync + 'static {
        let engine = self.engine.clone();
        move || engine.lock().map(|e| e.program_stats()).unwrap_or_default()
    }

    /// Attach an empty baseline program (benchmarks); see `Engine::attach_baseline`.
    pub fn attach_baseline(&mut self, target: &crate::probe::target::Target) -> Result<String, String> {
        self.engine.lock().map_err(|_| "engine lock poisoned".to_string())?.attach_baseline(target)
    }

    /// Kernel run time (ns) and count of a loaded program by name (needs bpf_stats).
    pub fn run_stats(&self, program: &str) -> Option<(u64, u64)> {
        self.engine.lock().ok()?.run_stats(program)
    }

    /// Whether the reader task is still running.
    pub fn reader_alive(&self) -> bool {
        !self.task.is_finished()
    }

    /// Detach every probe, drain the ring, let assembly finish, and return the sinks.
    pub async fn stop(self) -> Vec<Box<dyn Sink>> {
        if let Ok(mut e) = self.engine.lock() {
            e.detach_all();
        }
        self.health.attached.store(false, Ordering::Relaxed);
        let _ = self.stop_tx.send(true);
        match self.task.await {
            Ok(Some(assembly)) => tokio::task::spawn_blocking(move || assembly.finish()).await.unwrap_or_default(),
            _ => {
                tracing::error!("ring reader task failed; records after its failure are lost");
                Vec::new()
            }
        }
    }
}

/// The ring reader task: drains the ring into assembly and sweeps timed-out instances.
struct ReadLoop {
    health: Arc<Health>,
    reader: RingReader,
    assembly: Assembly,
    maps: Arc<Mutex<KernelMaps>>,
    /// Chain timeouts by chain index.
    timeouts: Vec<u64>,
    sweep_every: Duration,
    stop: watch::Receiver<bool>,
    stats: Arc<PipelineStats>,
}

impl ReadLoop {
    async fn run(self) -> Option<Assembly> {
        let health = self.health.clone();
        let r = self.run_inner().await;
        health.reader.store(false, Ordering::Relaxed);
        r
    }

    async fn run_inner(self) -> Option<Assembly> {
        let ReadLoop { mut reader, assembly, maps, timeouts, sweep_every, mut stop, stats, .. } = self;
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut batch = Vec::with_capacity(1024);
            tokio::select! {
                r = reader.next_batch(&mut batch) => {
                    if let Err(error) = r {
                        tracing::error!(%error, "ring buffer read failed");
                        return Some(assembly);
                    }
                    assembly.send(batch);
                }
                _ = sweep.tick() => {
                    let now = ktime::monotonic_now_ns();
                    let removed = match maps.lock() {
                        Ok(mut m) => m.sweep(&timeouts, now),
                        Err(_) => Vec::new(),
                    };
                    if !removed.is_empty() {
                        stats.swept.fetch_add(removed.len() as u64, Ordering::Relaxed);
                        // Tell assembly, so partial chains close now with the right reason.
                        let closes = removed
                            .into_iter()
                            .map(|(k, inst)| Record {
                                kind: RECORD_CLOSE,
                                chain: k.chain as u8,
                                stage: CLOSE_TIMEOUT,
                                slot: 0,
                                cpu: inst.cpu,
                                instance_id: inst.id,
                                key: k.key,
                                start_ns: inst.start_ns,
                                end_ns: now,
                                aux: inst.capture,
                                ..Default::default()
                            })
                            .collect();
                        assembly.send(closes);
                    }
                }
                _ = stop.changed() => {
                    // Probes are detached; whatever is in the ring is all there will be.
                    let mut rest = Vec::new();
                    reader.drain(&mut rest);
                    if reader.malformed > 0 {
                        tracing::warn!(count = reader.malformed, "malformed ring records skipped");
                    }
                    assembly.send_blocking(rest);
                    return Some(assembly);
                }
            }
        }
    }
}

/// Per-chain counts for the run summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChainTally {
    pub segments_received: BTreeMap<u8, u64>,
    pub outcomes: BTreeMap<&'static str, u64>,
}

/// A sink that counts what it receives (for summaries and tests).
#[derive(Clone, Default)]
pub struct TallySink {
    pub chains: Arc<Mutex<BTreeMap<u8, ChainTally>>>,
}

impl Sink for TallySink {
    fn on_chain(&mut self, rec: &ChainRecord) {
        if let Ok(mut m) = self.chains.lock() {
            let t = m.entry(rec.chain).or_default();
            for s in &rec.segments {
                *t.segments_received.entry(s.index).or_default() += 1;
            }
            *t.outcomes.entry(rec.outcome.as_str()).or_default() += 1;
        }
    }
}

/// What a run saw, per chain: kernel counters and histogram totals next to what userspace got.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub chains: Vec<ChainSummary>,
    pub records: u64,
    pub dropped_in_userspace: u64,
    pub swept: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChainSummary {
    pub name: String,
    pub state: plan::ChainState,
    pub opened: u64,
    pub completed: u64,
    pub timed_out: u64,
    pub replaced: u64,
    pub aborted: u64,
    pub ring_lost: u64,
    pub ring_lost_segments: u64,
    pub map_full: u64,
    pub out_of_order: u64,
    pub key_out_of_range: u64,
    pub store: plan::Store,
    /// Segments counted in the kernel histograms.
    pub hist_segments: u64,
    /// Segment records userspace received.
    pub segments_received: u64,
    pub segments: Vec<SegmentSummary>,
    pub outcomes: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SegmentSummary {
    pub name: String,
    pub hist_count: u64,
    pub hist_sum_ns: u64,
    pub received: u64,
    /// Median from the kernel histogram (bucket lower bound), ns.
    pub hist_median_ns: Option<u64>,
}

/// Build a summary from the kernel maps and a tally.
pub fn summarize(
    plans: &[ChainPlan],
    maps: &KernelMaps,
    tally: &BTreeMap<u8, ChainTally>,
    stats: &PipelineStats,
) -> Summary {
    let chains = plans
        .iter()
        .filter(|p| p.is_chain())
        .map(|p| {
            let c = maps.chain_counters(p.index).unwrap_or_default();
            let t = tally.get(&p.index).cloned().unwrap_or_default();
            let shape = p.shape();
            let mut segments = Vec::new();
            let mut rows: Vec<(String, u32, Option<u8>)> =
                (1..=shape.segments() as u8).map(|i| (shape.segment_name(i), i as u32 - 1, Some(i))).collect();
            if shape.segments() > 1 {
                rows.push(("total".into(), TOTAL_ROW, None));
            }
            let mut hist_segments = 0;
            let mut completed = 0;
            for (name, row, idx) in rows {
                let h = maps.hist_row(p.index, row).unwrap_or(clockpath_common::hist::HistRow::ZERO);
                let count: u64 = h.buckets.iter().sum();
                if let Some(i) = idx {
                    hist_segments += count;
                    // The last segment is recorded exactly once per completed instance.
                    if i as usize == shape.segments() {
                        completed = count;
                    }
                }
                segments.push(SegmentSummary {
                    name,
                    hist_count: count,
                    hist_sum_ns: h.sum_ns,
                    received: idx.map_or(0, |i| t.segments_received.get(&i).copied().unwrap_or(0)),
                    hist_median_ns: hist_median(&h.buckets),
                });
            }
            ChainSummary {
                name: p.name.clone(),
                state: p.state.clone(),
                opened: c.opened,
                completed,
                timed_out: c.timed_out,
                replaced: c.replaced,
                aborted: c.aborted,
                ring_lost: c.ring_lost,
                ring_lost_segments: c.ring_lost_segments,
                map_full: c.map_full,
                out_of_order: c.out_of_order,
                key_out_of_range: c.key_out_of_range,
                store: p.store,
                hist_segments,
                segments_received: t.segments_received.values().sum(),
                segments,
                outcomes: t.outcomes,
            }
        })
        .collect();
    Summary {
        chains,
        records: stats.records.load(Ordering::Relaxed),
        dropped_in_userspace: stats.dropped.load(Ordering::Relaxed),
        swept: stats.swept.load(Ordering::Relaxed),
    }
}

/// Lower bound of the bucket holding the median.
pub fn hist_median(buckets: &[u64; NUM_BUCKETS]) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let mut acc = 0;
    for (i, c) in buckets.iter().enumerate() {
        acc += c;
        if acc * 2 >= total {
            return Some(clockpath_common::hist::bucket_lower_ns(i as u32));
        }
    }
    None
}

impl Outcome {
    pub const ALL: [Outcome; 5] =
        [Outcome::Completed, Outcome::TimedOut, Outcome::Replaced, Outcome::Aborted, Outcome::Incomplete];
}
