//! The OTLP sink: one trace per sampled chain instance.
//!
//! Sampling is decided on the assembly thread once an instance has ended ([`sampling`]);
//! kept instances go into a bounded queue and an export thread turns them into spans and
//! sends them with opentelemetry-otlp ([`export`]). A full queue or a failed export drops
//! spans and counts them by reason; nothing upstream ever waits for the collector. After a
//! successful export the instance's trace id becomes the exemplar of its histogram buckets
//! ([`crate::exemplars`]). Where traces go is resolved with the configuration
//! ([`crate::config::otlp::settings`]).

pub mod export;
pub mod sampling;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
};

use clockpath_offline::chain::ChainRecord;
use clockpath_probe::plan::{ChainPlan, Status, all_shapes};

pub use self::sampling::{Reason, Sampler};
use super::{hdr::SharedQuantiles, windows::SharedWindows};
use crate::{
    config::{
        Loaded,
        otlp::settings::{self, Settings},
    },
    exemplars::ExemplarStore,
    pipeline::Sink,
    pps::TimeReference,
};

/// Counters of one chain's sampling decisions.
#[derive(Debug, Default)]
pub struct ChainSampling {
    /// Kept, by [`Reason`] index.
    pub kept: [AtomicU64; Reason::ALL.len()],
    pub sampled_out: AtomicU64,
}

/// Why spans were dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The export queue was full (collector down or slow).
    QueueFull,
    /// The collector refused the request or could not be reached (after retries).
    ExportFailed,
    /// Still queued when clockpath stopped and the collector did not take them in time.
    Shutdown,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [DropReason::QueueFull, DropReason::ExportFailed, DropReason::Shutdown];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::ExportFailed => "export_failed",
            DropReason::Shutdown => "shutdown",
        }
    }
}

/// What the OTLP sink has done, for the metrics.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// By chain index.
    pub chains: Vec<ChainSampling>,
    pub spans_exported: AtomicU64,
    /// By [`DropReason`] index.
    pub spans_dropped: [AtomicU64; DropReason::ALL.len()],
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    /// Chains in the export queue now.
    pub queued: AtomicU64,
    pub queue_capacity: u64,
    /// UNIX ns of the last successful export (0: none yet).
    pub last_success_unix_ns: AtomicU64,
}

impl OtlpStats {
    fn new(chains: usize, queue_capacity: usize) -> OtlpStats {
        OtlpStats {
            chains: (0..chains).map(|_| ChainSampling::default()).collect(),
            queue_capacity: queue_capacity as u64,
            ..Default::default()
        }
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.spans_dropped[reason as usize].load(Ordering::Relaxed)
    }

    fn drop_spans(&self, reason: DropReason, spans: u64) {
        self.spans_dropped[reason as usize].fetch_add(spans, Ordering::Relaxed);
    }
}

/// Static facts about a chain that its spans carry.
#[derive(Clone, Debug)]
pub struct ChainMeta {
    pub name: Arc<str>,
    pub stages: Vec<Arc<str>>,
    /// Segment names, segment 1 first.
    pub segments: Vec<Arc<str>>,
    /// Per stage, the attach kind(s) in use (`tp_btf`, `fentry,kprobe`, …).
    pub stage_attach: Vec<String>,
    /// The chain's causes (empty: none).
    pub causes: Vec<Arc<str>>,
}

/// What the spans of a chain are built from.
#[derive(Clone, Debug, Default)]
pub struct SpanContextInfo {
    /// By chain index.
    pub chains: Vec<Option<ChainMeta>>,
    /// Slot → (attach kind, target).
    pub slots: HashMap<u8, (Arc<str>, Arc<str>)>,
    /// `host` or `vm`.
    pub env: Arc<str>,
}

impl SpanContextInfo {
    /// From an attached plan.
    pub fn from_plans(plans: &[ChainPlan], env: &str) -> SpanContextInfo {
        let mut info = SpanContextInfo { env: Arc::from(env), ..Default::default() };
        for p in plans.iter().filter(|p| p.is_chain()) {
            let i = p.index as usize;
            if info.chains.len() <= i {
                info.chains.resize(i + 1, None);
            }
            let shape = p.shape();
            let mut stage_attach = Vec::new();
            for s in &p.stages {
                let mut kinds: Vec<String> = Vec::new();
                for c in s.points.iter().flat_map(|pt| &pt.candidates) {
                    if let Status::Attached(slot) = c.status {
                        let kind = c.target.kind.to_string();
                        info.slots.insert(slot as u8, (Arc::from(kind.as_str()), Arc::from(c.target.to_string())));
                        if !kinds.contains(&kind) {
                            kinds.push(kind);
                        }
                    }
                }
                stage_attach.push(kinds.join(","));
            }
            info.chains[i] = Some(ChainMeta {
                name: Arc::from(p.name.as_str()),
                stages: p.stages.iter().map(|s| Arc::from(s.name.as_str())).collect(),
                segments: (1..=shape.segments() as u8).map(|k| Arc::from(shape.segment_name(k))).collect(),
                stage_attach,
                causes: p.causes.iter().map(|c| Arc::from(c.as_str())).collect(),
            });
        }
        info
    }

    /// Spans a chain record becomes: the root and one per segment.
    pub fn span_count(rec: &ChainRecord) -> u64 {
        1 + rec.segments.len() as u64
    }
}

/// A sampled chain instance on its way to the collector.
pub struct Job {
    pub rec: ChainRecord,
    pub reason: Reason,
}

/// The sink on the assembly thread: decide, then hand off without waiting.
pub struct OtlpSink {
    sampler: Sampler,
    tx: Option<mpsc::SyncSender<Job>>,
    stats: Arc<OtlpStats>,
    worker: Option<thread::JoinHandle<()>>,
}

/// Everything the OTLP sink is started with.
pub struct OtlpParts {
    pub settings: Settings,
    pub info: SpanContextInfo,
    pub sampler: Sampler,
    /// Span times are on this reference (PPS while a source is locked, else the system clock).
    pub reference: Arc<TimeReference>,
    pub exemplars: Option<Arc<ExemplarStore>>,
}

impl OtlpSink {
    /// Build the exporter and start the export thread. Fails when the exporter cannot be
    /// built (e.g. a malformed endpoint); an unreachable collector is not an error.
    pub fn start(parts: OtlpParts) -> Result<OtlpSink, export::ExportError> {
        let OtlpParts { settings, info, sampler, reference, exemplars } = parts;
        let stats = Arc::new(OtlpStats::new(info.chains.len(), settings.queue_chains));
        let (tx, rx) = mpsc::sync_channel::<Job>(settings.queue_chains);
        let worker = export::Worker::spawn(settings, info, reference, exemplars, stats.clone(), rx)?;
        Ok(OtlpSink { sampler, tx: Some(tx), stats, worker: Some(worker) })
    }

    pub fn stats(&self) -> Arc<OtlpStats> {
        self.stats.clone()
    }

    /// The sink for an attached plan, if `[otlp]` and the environment configure an endpoint.
    /// `quantiles` and `windows` feed the always-keep rules; `exemplars` gets the trace ids.
    pub fn for_plans(
        loaded: &Loaded,
        plans: &[ChainPlan],
        env: &str,
        quantiles: Option<SharedQuantiles>,
        windows: Option<SharedWindows>,
        exemplars: Option<Arc<ExemplarStore>>,
        reference: Arc<TimeReference>,
    ) -> Result<Option<OtlpSink>, export::ExportError> {
        let cfg = &loaded.config;
        // validate() already reported every problem; here only the outcome matters.
        let Ok(Some(mut settings)) = Settings::resolve(&cfg.otlp, &settings::process_env) else { return Ok(None) };
        for (k, v) in &cfg.environment.labels {
            settings.resource.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let shapes = all_shapes(plans);
        let sampler = Sampler::new(cfg.otlp.sampling.clone(), &cfg.windows, &shapes, quantiles, windows);
        tracing::info!(
            endpoint = %settings.endpoint,
            from = %settings.endpoint_from,
            protocol = settings.protocol.as_str(),
            "exporting one OTLP trace per sampled chain instance"
        );
        let info = SpanContextInfo::from_plans(plans, env);
        OtlpSink::start(OtlpParts { settings, info, sampler, reference, exemplars }).map(Some)
    }
}

impl Sink for OtlpSink {
    fn memory(&self) -> Option<(&'static str, usize)> {
        // Queued instances: the record and its segments (the export thread's batch of spans
        // being encoded is transient and bounded by otlp.batch_chains).
        let per_job = std::mem::size_of::<Job>() + 4 * std::mem::size_of::<clockpath_offline::chain::Segment>();
        Some(("otlp_queue", self.stats.queued.load(Ordering::Relaxed) as usize * per_job))
    }

    fn on_chain(&mut self, rec: &ChainRecord) {
        if rec.segments.is_empty() {
            return;
        }
        let Some(counters) = self.stats.chains.get(rec.chain as usize) else { return };
        let Some(reason) = self.sampler.decide(rec) else {
            counters.sampled_out.fetch_add(1, Ordering::Relaxed);
            return;
        };
        counters.kept[reason as usize].fetch_add(1, Ordering::Relaxed);
        let spans = SpanContextInfo::span_count(rec);
        let Some(tx) = &self.tx else { return };
        // Count before sending: the worker decrements when it takes the job.
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if tx.try_send(Job { rec: rec.clone(), reason }).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.drop_spans(DropReason::QueueFull, spans);
        }
    }

    fn tick(&mut self) {
        self.sampler.refresh();
    }

    fn finish(&mut self) {
        // Closing the queue tells the worker to send what is left and stop.
        drop(self.tx.take());
        let Some(w) = self.worker.take() else { return };
        if w.join().is_err() {
            tracing::error!("OTLP export thread panicked");
        }
        let st = &self.stats;
        tracing::info!(
            exported = st.spans_exported.load(Ordering::Relaxed),
            dropped_queue_full = st.dropped(DropReason::QueueFull),
            dropped_export_failed = st.dropped(DropReason::ExportFailed),
            dropped_shutdown = st.dropped(DropReason::Shutdown),
            "OTLP spans"
        );
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.finish();
    }
}
