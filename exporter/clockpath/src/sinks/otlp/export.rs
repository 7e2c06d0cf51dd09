//! The export thread: takes sampled chains from the queue, turns each into a root span and
//! one child span per segment, and sends them in batches with opentelemetry-otlp (gRPC via
//! tonic, or HTTP/protobuf via hyper) on its own single-worker Tokio runtime.
//!
//! The SDK's tracer and batch processor are not used: spans here are built after the fact
//! from kernel timestamps (not timed by the SDK), and the queue, its drops and the export
//! failures must be counted by reason, which the batch processor does not expose.

use std::{
    borrow::Cow,
    sync::{
        Arc,
        atomic::Ordering,
        mpsc::{Receiver, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clockpath_common::{interference, record::UNKNOWN_INTERFERENCE};
use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_otlp::{
    WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
    tonic_types::transport::{Certificate, ClientTlsConfig, Identity},
};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
};
use rand::{RngExt as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;

use clockpath_offline::chain::{ChainRecord, Outcome};

use super::{DropReason, Job, OtlpStats, SpanContextInfo};
use crate::{
    config::otlp::settings::{Protocol, Settings, Tls},
    exemplars::{Exemplar, ExemplarStore},
    ktime,
    pps::TimeReference,
};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot start the OTLP export thread")]
    Thread(#[source] std::io::Error),
    #[error("cannot build the OTLP exporter for {endpoint} ({protocol})")]
    Build {
        endpoint: String,
        protocol: &'static str,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("the OTLP export thread stopped while starting")]
    Gone,
}

/// How long shutdown waits for the collector to take what is still queued.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often the wall-clock offset is re-measured (picks up clock steps).
const RECALIBRATE_EVERY: Duration = Duration::from_secs(10);

fn build_exporter(s: &Settings) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let b = opentelemetry_otlp::SpanExporter::builder();
    match s.protocol {
        Protocol::Grpc => {
            let b = b
                .with_tonic()
                .with_endpoint(s.endpoint.clone())
                .with_timeout(s.timeout)
                .with_retry_policy(opentelemetry_otlp::RetryPolicy::recommended());
            match &s.tls {
                Some(tls) => b.with_tls_config(grpc_tls(tls)).build(),
                None => b.build(),
            }
        }
        Protocol::HttpProtobuf => {
            let b = b
                .with_http()
                .with_endpoint(s.endpoint.clone())
                .with_timeout(s.timeout)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            match &s.tls {
                Some(tls) => b.with_http_client(https_client(tls, s.timeout)?).build(),
                None => b.build(),
            }
        }
    }
}

/// tonic's TLS: the given CA or the system's roots (tonic adds none by itself), and the client
/// identity for mutual TLS.
fn grpc_tls(tls: &Tls) -> ClientTlsConfig {
    let c = ClientTlsConfig::new();
    let c = match &tls.ca_pem {
        Some(ca) => c.ca_certificate(Certificate::from_pem(ca)),
        None => c.with_native_roots(),
    };
    match &tls.client {
        Some((cert, key)) => c.identity(Identity::from_pem(cert, key)),
        None => c,
    }
}

/// opentelemetry-otlp's hyper client speaks plain HTTP only: an HTTPS connector (rustls, ring)
/// with the same trust and identity as gRPC.
fn https_client(
    tls: &Tls,
    timeout: Duration,
) -> Result<
    opentelemetry_http::hyper::HyperClient<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
    opentelemetry_otlp::ExporterBuildError,
> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        opentelemetry_otlp::ExporterBuildError::InvalidConfiguration(format!("TLS: {what}: {e}"))
    };
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_pem {
        Some(ca) => {
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| invalid("CA certificate", &e))?;
                roots.add(c).map_err(|e| invalid("CA certificate", &e))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "reading the system's CA certificates");
            }
            roots.add_parsable_certificates(native.certs);
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS versions", &e))?
        .with_root_certificates(roots);
    let config = match &tls.client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| invalid("client certificate", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| invalid("client key", &e))?;
            config.with_client_auth_cert(chain, key).map_err(|e| invalid("client certificate", &e))?
        }
        None => config.with_no_client_auth(),
    };
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http().enable_http1().build();
    Ok(opentelemetry_http::hyper::HyperClient::new(connector, timeout, None))
}

/// Span ids: random, never zero.
pub struct Ids(Xoshiro256PlusPlus);

impl Ids {
    pub fn new() -> Ids {
        Ids(Xoshiro256PlusPlus::from_rng(&mut rand::rng()))
    }

    fn trace(&mut self) -> TraceId {
        TraceId::from_bytes(self.0.random::<u128>().max(1).to_be_bytes())
    }

    fn span(&mut self) -> SpanId {
        SpanId::from_bytes(self.0.random::<u64>().max(1).to_be_bytes())
    }
}

impl Default for Ids {
    fn default() -> Self {
        Self::new()
    }
}

fn wall(clock_offset: i64, ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ktime::to_wall(ns, clock_offset))
}

fn ns_attr(key: &'static str, ns: u64) -> KeyValue {
    KeyValue::new(key, i64::try_from(ns).unwrap_or(i64::MAX))
}

/// Exemplars a chain's spans give its histogram buckets: (segment name, exemplar).
pub type ChainExemplars = Vec<(Arc<str>, Arc<str>, Exemplar)>;

/// The spans of one chain instance: the root first, then one per segment; and the exemplars
/// they would give once exported.
/// `offset_ns` maps the chain's kernel times to span times (reference time minus monotonic at
/// the chain's start: a chain lasts far less than a pulse period, so one offset serves all its
/// spans); `time_reference` says which reference that was (`pps:/dev/pps0`, `system`, ...).
pub fn chain_spans(
    info: &SpanContextInfo,
    scope: &InstrumentationScope,
    ids: &mut Ids,
    offset_ns: i64,
    time_reference: &str,
    job: &Job,
    out: &mut Vec<SpanData>,
) -> ChainExemplars {
    let rec: &ChainRecord = &job.rec;
    let meta = info.chains.get(rec.chain as usize).and_then(Option::as_ref);
    let chain_name: Arc<str> = meta.map_or_else(|| Arc::from(format!("chain_{}", rec.chain)), |m| m.name.clone());
    let trace_id = ids.trace();
    let root_id = ids.span();
    let context = |span_id| SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, false, TraceState::default());

    let mut attributes = vec![
        KeyValue::new("clockpath.chain", chain_name.to_string()),
        ns_attr("clockpath.instance_id", rec.instance_id),
        KeyValue::new("clockpath.cpu", i64::from(rec.cpu)),
        KeyValue::new("clockpath.env", info.env.to_string()),
        KeyValue::new("clockpath.outcome", rec.outcome.as_str()),
        KeyValue::new("clockpath.sampled_by", job.reason.as_str()),
        ns_attr("clockpath.ktime.start_ns", rec.start_ns),
        ns_attr("clockpath.ktime.end_ns", rec.end_ns),
        KeyValue::new("clockpath.wall_offset_ns", offset_ns),
        KeyValue::new("clockpath.time_reference", time_reference.to_string()),
    ];
    if let Some(s) = &rec.session {
        attributes.push(KeyValue::new("clockpath.session_id", s.to_string()));
    }
    for (k, v) in &rec.labels {
        attributes.push(KeyValue::new(format!("clockpath.{k}"), v.to_string()));
    }
    if let Some(cause) = meta.and_then(|m| m.causes.get(rec.cause as usize)) {
        attributes.push(KeyValue::new("clockpath.cause", cause.to_string()));
    }
    if let Some(m) = meta {
        for (stage, kinds) in m.stages.iter().zip(&m.stage_attach) {
            attributes.push(KeyValue::new(format!("clockpath.attach.{stage}"), kinds.clone()));
        }
    }
    let root_end = rec.end_ns.max(rec.start_ns);
    let mut exemplars = ChainExemplars::new();
    let root_start_wall = wall(offset_ns, rec.start_ns);
    let root_end_wall = wall(offset_ns, root_end);
    out.push(SpanData {
        span_context: context(root_id),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Owned(chain_name.to_string()),
        start_time: root_start_wall,
        end_time: root_end_wall,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    });
    let multi = meta.is_some_and(|m| m.segments.len() > 1);
    if multi && rec.outcome == Outcome::Completed {
        exemplars.push((
            chain_name.clone(),
            Arc::from("total"),
            Exemplar {
                trace_id: format!("{trace_id}"),
                span_id: format!("{root_id}"),
                value_ns: rec.total_ns(),
                at_unix_ns: ktime::to_wall(root_end, offset_ns),
            },
        ));
    }
    for seg in &rec.segments {
        let span_id = ids.span();
        let name: Arc<str> = meta
            .and_then(|m| m.segments.get((seg.index as usize).checked_sub(1)?).cloned())
            .unwrap_or_else(|| Arc::from(format!("segment_{}", seg.index)));
        let mut attributes = vec![
            KeyValue::new("clockpath.chain", chain_name.to_string()),
            KeyValue::new("clockpath.segment", name.to_string()),
            KeyValue::new("clockpath.segment.index", i64::from(seg.index)),
            KeyValue::new("clockpath.cpu", i64::from(seg.cpu)),
            ns_attr("clockpath.ktime.start_ns", seg.start_ns),
            ns_attr("clockpath.ktime.end_ns", seg.end_ns),
        ];
        if let Some((kind, target)) = info.slots.get(&seg.slot) {
            attributes.push(KeyValue::new("clockpath.attach", kind.to_string()));
            attributes.push(KeyValue::new("clockpath.target", target.to_string()));
        }
        let end = seg.end_ns.max(seg.start_ns);
        let end_wall = wall(offset_ns, end);
        let mut events = SpanEvents::default();
        if seg.interference_ns[0] == UNKNOWN_INTERFERENCE {
            attributes.push(KeyValue::new("clockpath.interference.unknown", true));
        } else {
            for (source, ns) in interference::NAMES.iter().zip(seg.interference_ns) {
                if ns == 0 {
                    continue;
                }
                attributes.push(ns_attr(
                    match *source {
                        "irq" => "clockpath.interference.irq_ns",
                        "softirq" => "clockpath.interference.softirq_ns",
                        "sched" => "clockpath.interference.sched_ns",
                        "hrtimer" => "clockpath.interference.hrtimer_ns",
                        _ => "clockpath.interference.kvm_ns",
                    },
                    ns,
                ));
                // Only totals per source are known, not when they happened: the event sits at
                // the segment's end, where the time was charged.
                events.events.push(Event::new(
                    "interference",
                    end_wall,
                    vec![KeyValue::new("clockpath.interference.source", *source), ns_attr("duration_ns", ns)],
                    0,
                ));
            }
        }
        exemplars.push((
            chain_name.clone(),
            name.clone(),
            Exemplar {
                trace_id: format!("{trace_id}"),
                span_id: format!("{span_id}"),
                value_ns: seg.duration_ns(),
                at_unix_ns: ktime::to_wall(end, offset_ns),
            },
        ));
        out.push(SpanData {
            span_context: context(span_id),
            parent_span_id: root_id,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Owned(name.to_string()),
            start_time: wall(offset_ns, seg.start_ns),
            end_time: end_wall,
            attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        });
    }
    exemplars
}

/// The export thread's state.
pub struct Worker {
    settings: Settings,
    info: SpanContextInfo,
    reference: Arc<TimeReference>,
    exemplars: Option<Arc<ExemplarStore>>,
    stats: Arc<OtlpStats>,
    rx: Receiver<Job>,
    scope: InstrumentationScope,
    ids: Ids,
    /// Whether the last export failed (to log state changes, not every failure).
    failing: bool,
}

impl Worker {
    /// Start the thread; returns once the exporter is built (or could not be).
    pub fn spawn(
        settings: Settings,
        info: SpanContextInfo,
        reference: Arc<TimeReference>,
        exemplars: Option<Arc<ExemplarStore>>,
        stats: Arc<OtlpStats>,
        rx: Receiver<Job>,
    ) -> Result<thread::JoinHandle<()>, ExportError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), ExportError>>();
        let handle = thread::Builder::new()
            .name("clockpath-otlp".into())
            .spawn(move || {
                // The runtime lives and dies on this thread: tonic and hyper need one, and
                // dropping a runtime inside another's async context would panic.
                // Its I/O thread needs no capability; this thread gives its up once the
                // exporter is built (certificate files are read by then).
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("clockpath-otlp-io")
                    .enable_all()
                    .on_thread_start(|| crate::privileges::drop_thread_or_log(&[], "OTLP I/O"))
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ExportError::Thread(e)));
                        return;
                    }
                };
                let built = {
                    let _guard = rt.enter();
                    build_exporter(&settings)
                };
                let mut exporter = match built {
                    Ok(e) => e,
                    Err(source) => {
                        let _ = ready_tx.send(Err(ExportError::Build {
                            endpoint: settings.endpoint.clone(),
                            protocol: settings.protocol.as_str(),
                            source,
                        }));
                        return;
                    }
                };
                let resource = Resource::builder_empty()
                    .with_attributes(settings.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
                    .build();
                exporter.set_resource(&resource);
                crate::privileges::drop_thread_or_log(&[], "OTLP");
                let _ = ready_tx.send(Ok(()));
                let scope = InstrumentationScope::builder("clockpath").with_version(env!("CARGO_PKG_VERSION")).build();
                let mut w =
                    Worker { settings, info, reference, exemplars, stats, rx, scope, ids: Ids::new(), failing: false };
                w.run(&rt, &exporter);
                let _ = exporter.shutdown_with_timeout(Duration::from_secs(1));
            })
            .map_err(ExportError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => {
                let _ = handle.join();
                Err(ExportError::Gone)
            }
        }
    }

    fn run(&mut self, rt: &tokio::runtime::Runtime, exporter: &opentelemetry_otlp::SpanExporter) {
        let mut last_calibration = Instant::now();
        let mut batch: Vec<Job> = Vec::with_capacity(self.settings.batch_chains);
        let mut closing = false;
        while !closing {
            // Wait for the first chain of a batch, then at most flush_interval for the rest.
            match self.rx.recv_timeout(RECALIBRATE_EVERY) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closing = true,
            }
            let deadline = Instant::now() + self.settings.flush_interval;
            while !closing && !batch.is_empty() && batch.len() < self.settings.batch_chains {
                match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(job) => batch.push(job),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => closing = true,
                }
            }
            self.stats.queued.fetch_sub(batch.len() as u64, Ordering::Relaxed);
            if last_calibration.elapsed() >= RECALIBRATE_EVERY {
                last_calibration = Instant::now();
                let step = self.reference.wall().recalibrate();
                if step != 0 {
                    tracing::info!(step_ns = step, "wall clock stepped; trace times follow");
                }
            }
            if !batch.is_empty() {
                let jobs = std::mem::take(&mut batch);
                self.export(rt, exporter, jobs, None);
            }
        }
        // The sink is finished: send what is left, within the grace period.
        let until = Instant::now() + SHUTDOWN_GRACE;
        let rest: Vec<Job> = self.rx.try_iter().collect();
        self.stats.queued.fetch_sub(rest.len() as u64, Ordering::Relaxed);
        let mut chunks = rest.into_iter().peekable();
        while chunks.peek().is_some() {
            let jobs: Vec<Job> = chunks.by_ref().take(self.settings.batch_chains).collect();
            if Instant::now() >= until {
                let spans: u64 = jobs.iter().map(|j| SpanContextInfo::span_count(&j.rec)).sum();
                self.stats.drop_spans(DropReason::Shutdown, spans);
                continue;
            }
            self.export(rt, exporter, jobs, Some(until));
        }
    }

    /// Export one batch; count what happened. `until`: shutdown deadline.
    fn export(
        &mut self,
        rt: &tokio::runtime::Runtime,
        exporter: &opentelemetry_otlp::SpanExporter,
        jobs: Vec<Job>,
        until: Option<Instant>,
    ) {
        let mut spans = Vec::with_capacity(jobs.len() * 4);
        let mut exemplars = Vec::new();
        for job in &jobs {
            let at = self.reference.to_reference(job.rec.start_ns);
            let offset = at.ns as i64 - job.rec.start_ns as i64;
            let e = chain_spans(&self.info, &self.scope, &mut self.ids, offset, &at.label(), job, &mut spans);
            if self.exemplars.is_some() {
                exemplars.extend(e);
            }
        }
        let n = spans.len() as u64;
        // The exporter has its own per-attempt timeout and bounded retries; this only guards
        // against a request that never returns, and the shutdown deadline.
        let limit = match until {
            Some(u) => u.saturating_duration_since(Instant::now()),
            None => self.settings.timeout * 5 + Duration::from_secs(5),
        };
        let result = rt.block_on(async { tokio::time::timeout(limit, exporter.export(spans)).await });
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {limit:?}")),
        };
        match failure {
            None => {
                self.stats.spans_exported.fetch_add(n, Ordering::Relaxed);
                self.stats.requests_ok.fetch_add(1, Ordering::Relaxed);
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
                self.stats.last_success_unix_ns.store(now, Ordering::Relaxed);
                if let Some(store) = &self.exemplars {
                    for (chain, segment, e) in exemplars {
                        store.put(&chain, &segment, e);
                    }
                }
                if self.failing {
                    self.failing = false;
                    tracing::info!(endpoint = %self.settings.endpoint, "OTLP export works again");
                }
            }
            Some(error) => {
                let reason = if until.is_some() { DropReason::Shutdown } else { DropReason::ExportFailed };
                self.stats.drop_spans(reason, n);
                self.stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(
                        endpoint = %self.settings.endpoint,
                        %error,
                        "OTLP export failed; spans are dropped and counted until the collector answers"
                    );
                }
            }
        }
    }
}
