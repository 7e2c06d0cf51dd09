//! A running exporter: the plan attached, the ring reader and sweeper running, assembly feeding
//! the sinks. `start` does everything up to attaching; `stop` detaches every probe first, then
//! drains what the kernel already wrote, so nothing collected is lost.

pub mod summary;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use clockpath_common::record::{CLOSE_TIMEOUT, RECORD_CLOSE, Record};
use clockpath_probe::{
    kernel::Kernel,
    loader::{Engine, LoadError, ProgramStats},
    maps::KernelMaps,
    plan::{self, ChainPlan},
    ring::{RingLayout, RingReader},
    staging::StagedRecords,
    target::Target,
};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    config::{ConfigError, ConfigIssue, Loaded},
    ktime,
    pipeline::{Assembly, CaptureNames, Limits, PipelineStats, Sink},
    sinks::SinkError,
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}", ConfigError::Invalid(.0.clone()))]
    Config(Vec<ConfigIssue>),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("no chain can run here:\n{0}")]
    NothingRuns(String),
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivilegeError),
    #[error("starting the ring reader")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Sinks(#[from] SinkError),
}

/// Liveness facts `/healthz` reports.
#[derive(Debug, Default)]
pub struct Health {
    /// At least one chain is attached.
    pub attached: AtomicBool,
    /// The ring reader task is running.
    pub reader: AtomicBool,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.attached.load(Ordering::Relaxed) && self.reader.load(Ordering::Relaxed)
    }
}

pub struct Daemon {
    engine: Arc<Mutex<Engine>>,
    pub health: Arc<Health>,
    pub maps: Arc<Mutex<KernelMaps>>,
    pub plans: Arc<Vec<ChainPlan>>,
    pub stats: Arc<PipelineStats>,
    /// The ring buffers' size, bytes (`probe.ring_bytes`).
    pub ring_bytes: u32,
    /// How they are laid out on this machine.
    pub rings: RingLayout,
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<Option<Assembly>>,
}

/// Resolve the plan; configuration errors come back located, before anything is loaded.
pub fn plan(loaded: &Loaded, kernel: &Kernel) -> Result<Vec<ChainPlan>, StartError> {
    plan::resolve(&loaded.config.chain_specs(), kernel).map_err(|issues| StartError::Config(loaded.locate(issues)))
}

/// Clocksource names for the capture values of chains with `{clocksource_read}` points.
fn capture_names(plans: &[ChainPlan]) -> CaptureNames {
    let mut out = CaptureNames::default();
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
        let mut plans = plans;
        let mut engine = Engine::load(&probe.load_options(), &mut plans)?;
        let rings = engine.take_rings()?;
        let staged = engine.take_staged()?;
        let ring_layout = engine.rings;
        tracing::info!(
            rings = ring_layout.used,
            bytes_each = ring_layout.ring_bytes,
            staging = staged.is_some(),
            "ring buffers, one per CPU (or group of CPUs)"
        );
        let maps = engine.take_maps()?;
        engine.attach(plans);
        crate::process::release_freed_memory();
        if !engine.chains.iter().any(ChainPlan::is_running) {
            let reasons: Vec<String> = engine
                .chains
                .iter()
                .map(|c| {
                    format!(
                        "  {}: {}",
                        c.name,
                        match &c.state {
                            plan::ChainState::Disabled(r) | plan::ChainState::NotNeeded(r) => r.as_str(),
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
        // One ring's worth of records may wait for assembly; partial instances may be twice as
        // many as the kernel can have open (records of instances it closed are still queued).
        let limits = Limits {
            queued_bytes: u64::from(probe.ring_bytes).max(1 << 20),
            open_instances: (probe.max_instances as usize).saturating_mul(2).max(1024),
        };
        let assembly = Assembly::start(plan::shapes(&plans), capture_names(&plans), sinks, stats.clone(), limits)?;
        let reader = RingReader::new(rings, Duration::from_millis(probe.drain_interval_ms))?;
        let maps = Arc::new(Mutex::new(maps));
        let (stop_tx, stop_rx) = watch::channel(false);
        let timeouts: Vec<u64> = {
            let mut t = vec![0; plans.iter().filter(|p| p.is_chain()).map(|p| p.index as usize + 1).max().unwrap_or(0)];
            for p in plans.iter().filter(|p| p.is_chain()) {
                t[p.index as usize] = p.timeout_ns;
            }
            t
        };
        let engine = Arc::new(Mutex::new(engine));
        let health = Arc::new(Health::default());
        health.attached.store(true, Ordering::Relaxed);
        health.reader.store(true, Ordering::Relaxed);
        let task = tokio::spawn(
            ReadLoop {
                health: health.clone(),
                reader,
                staged,
                engine: engine.clone(),
                flush_every: Duration::from_millis(probe.drain_interval_ms),
                assembly,
                maps: maps.clone(),
                timeouts,
                sweep_every: Duration::from_millis(probe.sweep_interval_ms),
                stop: stop_rx,
                stats: stats.clone(),
            }
            .run(),
        );
        let ring_bytes = probe.ring_bytes;
        Ok(Daemon { engine, health, maps, plans, stats, ring_bytes, rings: ring_layout, stop_tx, task })
    }

    /// Kernel run time/count of the attached programs (meaningful with bpf_stats on).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.engine.lock().map(|e| e.program_stats()).unwrap_or_default()
    }

    /// A shareable reader of `program_stats` (for the metrics).
    pub fn program_stats_fn(&self) -> impl Fn() -> Vec<ProgramStats> + Send + Sync + 'static {
        let engine = self.engine.clone();
        move || engine.lock().map(|e| e.program_stats()).unwrap_or_default()
    }

    /// Attach an empty baseline program (benchmarks); see `Engine::attach_baseline`.
    pub fn attach_baseline(&mut self, target: &Target) -> Result<String, String> {
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

/// The ring reader task: drains the rings into assembly, has staged records flushed on CPUs
/// that hold some, and sweeps timed-out instances.
struct ReadLoop {
    health: Arc<Health>,
    reader: RingReader,
    /// Records staged per CPU (None: nothing stages on this kernel).
    staged: Option<StagedRecords>,
    /// For the flush program.
    engine: Arc<Mutex<Engine>>,
    flush_every: Duration,
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
        let ReadLoop {
            mut reader,
            staged,
            engine,
            flush_every,
            assembly,
            maps,
            timeouts,
            sweep_every,
            mut stop,
            stats,
            ..
        } = self;
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(flush_every);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush_failed = false;
        // One batch buffer, handed over only when it holds records; its replacement is one the
        // assembly thread has emptied, so a steady load allocates no batches.
        let mut batch: Vec<Record> = assembly.empty_batch();
        loop {
            tokio::select! {
                r = reader.next_batch(&mut batch) => {
                    if let Err(error) = r {
                        tracing::error!(%error, "ring buffer read failed");
                        return Some(assembly);
                    }
                    if !batch.is_empty() {
                        let next = assembly.empty_batch();
                        assembly.send(std::mem::replace(&mut batch, next));
                    }
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
                                cpu: inst.cpu as u16,
                                cause: inst.cause as u8,
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
                _ = flush.tick(), if staged.is_some() => {
                    if let Some(staged) = &staged {
                        flush_staged(staged, &engine, &mut flush_failed);
                    }
                }
                _ = stop.changed() => {
                    // Probes are detached; whatever is in the rings and staged is all there
                    // will be.
                    let mut rest = Vec::new();
                    reader.drain(&mut rest);
                    if let Some(staged) = &staged {
                        match staged.take() {
                            Ok(records) => {
                                rest.extend(records);
                                rest.sort_by_key(|r| r.end_ns);
                            }
                            Err(error) => tracing::error!(%error, "reading the records staged per CPU failed; they are lost"),
                        }
                    }
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

/// Have the flush program run on each CPU that holds staged records: a CPU that went idle
/// would otherwise keep them until it stages a full batch. The first failure is logged.
fn flush_staged(staged: &StagedRecords, engine: &Mutex<Engine>, failed: &mut bool) {
    let cpus = match staged.pending_cpus() {
        Ok(cpus) => cpus,
        Err(error) => {
            if !std::mem::replace(failed, true) {
                tracing::warn!(%error, "reading the records staged per CPU failed; they reach userspace a batch at a time");
            }
            return;
        }
    };
    if cpus.is_empty() {
        return;
    }
    let Ok(engine) = engine.lock() else { return };
    for cpu in cpus {
        if let Err(error) = engine.flush_staged(cpu)
            && !std::mem::replace(failed, true)
        {
            tracing::warn!(cpu, %error, "flushing the records staged on a CPU failed; they reach userspace a batch at a time");
        }
    }
}
