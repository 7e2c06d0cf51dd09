//! The OTLP sink: one trace per sampled chain instance.
//!
//! Sampling is decided on the assembly thread once an instance has ended ([`sampling`]);
//! kept instances go into a bounded queue and an export thread turns them into spans and
//! sends them with opentelemetry-otlp ([`export`]). A full queue or a failed export drops
//! spans and counts them by reason; nothing upstream ever waits for the collector. After a
//! successful export the instance's trace id becomes the exemplar of its histogram buckets
//! ([`exemplar`]).

pub mod exemplar;
pub mod export;
pub mod sampling;
pub mod settings;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
};

use serde::{Deserialize, Serialize};

pub use self::{
    exemplar::ExemplarStore,
    sampling::{Reason, Sampler},
    settings::Settings,
};
use crate::{
    chain::ChainRecord,
    config::{ConfigIssue, Loaded},
    pipeline::Sink,
    probe::plan::{ChainPlan, Status},
};

/// `[otlp]` settings (the standard `OTEL_*` variables take precedence; see [`settings`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Collector URL; empty: off (unless an `OTEL_EXPORTER_OTLP_*ENDPOINT` is set).
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: String,
    pub service_name: String,
    /// Extra resource attributes.
    pub resource: BTreeMap<String, String>,
    pub timeout_ms: u64,
    /// Sampled chains waiting for export, at most.
    pub queue_chains: usize,
    /// Chains per export request, at most.
    pub batch_chains: usize,
    /// Longest wait before a partial batch is sent.
    pub flush_interval_ms: u64,
    pub sampling: SamplingConfig,
}

/// `[otlp.sampling]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Traces per second per chain (token bucket rate); 0 keeps only the always-kept ones.
    pub per_chain_per_second: f64,
    /// Token bucket size.
    pub burst: u32,
    /// Always keep instances rejected as outliers by the statistics window.
    pub keep_outliers: bool,
    /// Always keep instances with a segment slower than its p99 over the quantile window.
    pub keep_slower_than_p99: bool,
}

/// Check `[otlp]` and the `OTEL_*` variables it would combine with.
pub fn validate(loaded: &Loaded, issues: &mut Vec<ConfigIssue>) {
    let c = &loaded.config.otlp;
    if c.timeout_ms == 0 {
        issues.push(loaded.issue("otlp.timeout_ms", "must be at least 1 ms"));
    }
    if c.queue_chains == 0 {
        issues.push(loaded.issue("otlp.queue_chains", "must hold at least 1 chain"));
    }
    if c.batch_chains == 0 || c.batch_chains > c.queue_chains.max(1) {
        issues.push(loaded.issue(
            "otlp.batch_chains",
            format!("must be between 1 and otlp.queue_chains ({}); got {}", c.queue_chains, c.batch_chains),
        ));
    }
    if c.flush_interval_ms == 0 {
        issues.push(loaded.issue("otlp.flush_interval_ms", "must be at least 1 ms"));
    }
    let s = &c.sampling;
    if !(s.per_chain_per_second.is_finite() && s.per_chain_per_second >= 0.0) {
        issues.push(loaded.issue("otlp.sampling.per_chain_per_second", "must be a finite number >= 0"));
    }
    if s.burst == 0 {
        issues.push(loaded.issue("otlp.sampling.burst", "must be at least 1"));
    }
    if c.service_name.trim().is_empty() {
        issues.push(loaded.issue("otlp.service_name", "must not be empty"));
    }
    for k in c.resource.keys() {
        if k.trim().is_empty() {
            issues.push(loaded.issue("otlp.resource", "a resource attribute name must not be empty"));
        }
    }
    if let Err(problems) = Settings::resolve(c, &settings::process_env) {
        for p in problems {
            issues.push(match p.variable {
                Some(var) => {
                    ConfigIssue { origin: crate::config::Origin::Variable(var), key: String::new(), why: p.why }
                }
                None => loaded.issue(p.key, p.why),
            });
        }
    }
}

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
    pub clock: Arc<crate::ktime::WallClock>,
    pub exemplars: Option<Arc<ExemplarStore>>,
}

impl OtlpSink {
    /// Build the exporter and start the export thread. Fails when the exporter cannot be
    /// built (e.g. a malformed endpoint); an unreachable collector is not an error.
    pub fn start(parts: OtlpParts) -> Result<OtlpSink, export::ExportError> {
        let OtlpParts { settings, info, sampler, clock, exemplars } = parts;
        let stats = Arc::new(OtlpStats::new(info.chains.len(), settings.queue_chains));
        let (tx, rx) = mpsc::sync_channel::<Job>(settings.queue_chains);
        let worker = export::Worker::spawn(settings, info, clock, exemplars, stats.clone(), rx)?;
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
        quantiles: Option<crate::sink::hdr::SharedQuantiles>,
        windows: Option<crate::sink::window::SharedWindows>,
        exemplars: Option<Arc<ExemplarStore>>,
    ) -> Result<Option<OtlpSink>, export::ExportError> {
        let cfg = &loaded.config;
        // validate() already reported every problem; here only the outcome matters.
        let Ok(Some(mut settings)) = Settings::resolve(&cfg.otlp, &settings::process_env) else { return Ok(None) };
        for (k, v) in &cfg.environment.labels {
            settings.resource.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let shapes = crate::daemon::all_shapes(plans);
        let sampler = Sampler::new(cfg.otlp.sampling.clone(), &cfg.windows, &shapes, quantiles, windows);
        tracing::info!(
            endpoint = %settings.endpoint,
            from = %settings.endpoint_from,
            protocol = settings.protocol.as_str(),
            "exporting one OTLP trace per sampled chain instance"
        );
        let info = SpanContextInfo::from_plans(plans, env);
        let clock = Arc::new(crate::ktime::WallClock::new());
        OtlpSink::start(OtlpParts { settings, info, sampler, clock, exemplars }).map(Some)
    }
}

impl Sink for OtlpSink {
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
