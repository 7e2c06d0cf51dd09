//! One function per metric family (or group of families fed by the same source): each encodes
//! from plain snapshots, so each is tested without a kernel. **Where a segment becomes a
//! metric**: [`segment_durations`] (exact, from the kernel histograms) and
//! [`segment_quantiles`] (HDR, from ring records).

use std::{collections::BTreeMap, fmt, sync::atomic::Ordering};

use clockpath_common::{
    hist::{HistRow, bucket_le_ns},
    interference::NAMES as INTERFERENCE_SOURCES,
};
use clockpath_probe::{
    loader::ProgramStats,
    plan::{ChainPlan, Status},
};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::{
    names::*,
    snapshot::{HistSeries, KernelSnapshot},
};
use crate::{
    clockaudit::{LiveClock, LiveClocks},
    host::TimeSync,
    pipeline::PipelineStats,
    pps::{OffsetWindow, PpsSource, SourceSnapshot},
    sinks::{
        hdr::QuantileSnapshot,
        interference::Charged,
        otlp::{DropReason, OtlpStats, Reason},
        recorder::RecorderStats,
        windows::WindowSnapshot,
    },
};

/// A label set.
pub type Labels = Vec<(String, String)>;

/// Labels every chain series carries besides its own.
#[derive(Clone, Debug, Default)]
pub struct CommonLabels {
    pub env: String,
    pub statics: BTreeMap<String, String>,
}

impl CommonLabels {
    pub fn with(&self, own: &[(&str, &str)]) -> Labels {
        let mut v: Labels = own.iter().map(|(k, x)| (k.to_string(), x.to_string())).collect();
        v.push(("env".into(), self.env.clone()));
        v.extend(self.statics.iter().map(|(k, x)| (k.clone(), x.clone())));
        v
    }
}

/// The `clockpath_environment_info` labels.
#[derive(Clone, Debug, Default)]
pub struct EnvironmentInfo {
    pub env: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    pub hypervisor: String,
    pub governor: String,
    pub cstate_limit: String,
}

fn s(v: &str) -> String {
    v.to_string()
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, series: &[(Labels, u64)]) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// A counter in seconds (a float).
fn counter_seconds(enc: &mut DescriptorEncoder, name: &str, help: &str, series: &[(Labels, f64)]) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, series: &[(Labels, f64)]) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn info(enc: &mut DescriptorEncoder, name: &str, help: &str, series: &[Labels]) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Info)?;
    for labels in series {
        m.encode_info(labels)?;
    }
    Ok(())
}

/// Re-bin a kernel histogram row into the configured buckets (`le_buckets`: kernel bucket index
/// of each `le`): per-bucket (not cumulative) counts, +Inf last. Exact: every configured `le`
/// is a kernel bucket's upper bound.
pub fn rebin(row: &HistRow, le_buckets: &[usize]) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(le_buckets.len() + 1);
    let mut from = 0usize;
    for &i in le_buckets {
        let n: u64 = row.buckets[from..=i].iter().sum();
        out.push((bucket_le_ns(i as u32).unwrap_or(0) as f64 / 1e9, n));
        from = i + 1;
    }
    out.push((f64::INFINITY, row.buckets[from..].iter().sum()));
    out
}

/// `clockpath_segment_duration_seconds`: exact histograms, from the kernel.
pub fn segment_durations(
    enc: &mut DescriptorEncoder,
    labels: &CommonLabels,
    le_buckets: &[usize],
    histograms: &[HistSeries],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(SEGMENT_DURATION, SEGMENT_DURATION_HELP, None, MetricType::Histogram)?;
    for h in histograms {
        let buckets = rebin(&h.row, le_buckets);
        let count: u64 = h.row.buckets.iter().sum();
        let l = match &h.cause {
            Some(cause) => labels.with(&[("chain", &h.chain), ("segment", &h.segment), ("cause", cause)]),
            None => labels.with(&[("chain", &h.chain), ("segment", &h.segment)]),
        };
        m.encode_family(&l)?.encode_histogram::<NoLabelSet>(h.row.sum_ns as f64 / 1e9, count, &buckets, None)?;
    }
    Ok(())
}

/// `clockpath_segment_duration_quantile_seconds`: HDR quantiles over the sliding window.
pub fn segment_quantiles(
    enc: &mut DescriptorEncoder,
    labels: &CommonLabels,
    running: &[&ChainPlan],
    q: &QuantileSnapshot,
) -> fmt::Result {
    let mut series = Vec::new();
    for p in running {
        let shape = p.shape();
        for ((_, seg), (_, values)) in q.series.range((p.index, 0)..=(p.index, u8::MAX)) {
            let seg_name = if *seg == 0 { s("total") } else { shape.segment_name(*seg) };
            for (qv, v) in q.quantiles.iter().zip(values) {
                if v.is_finite() {
                    let l = labels.with(&[("chain", &p.name), ("segment", &seg_name), ("q", &qv.to_string())]);
                    series.push((l, *v));
                }
            }
        }
    }
    gauge(enc, SEGMENT_QUANTILE, SEGMENT_QUANTILE_HELP, &series)
}

/// `clockpath_chains_*_total`, ring and instance-map losses, out-of-order hits: per chain,
/// from the kernel counters (completed from the last segment's histogram; timed out includes
/// what the userspace sweeper closed).
pub fn chain_counters(
    enc: &mut DescriptorEncoder,
    labels: &CommonLabels,
    plans: &[ChainPlan],
    snap: &KernelSnapshot,
) -> fmt::Result {
    let per_chain = |f: &dyn Fn(&str, &clockpath_common::slot::ChainCounters) -> u64| -> Vec<(Labels, u64)> {
        snap.counters.iter().map(|(c, k)| (labels.with(&[("chain", c)]), f(c, k))).collect()
    };
    let swept_of = |name: &str| {
        plans.iter().find(|p| p.name == name).and_then(|p| snap.swept.get(p.index as usize)).copied().unwrap_or(0)
    };
    counter(enc, CHAINS_OPENED, CHAINS_OPENED_HELP, &per_chain(&|_, k| k.opened))?;
    counter(enc, CHAINS_COMPLETED, CHAINS_COMPLETED_HELP, &per_chain(&|c, _| snap.completed(c)))?;
    counter(enc, CHAINS_TIMED_OUT, CHAINS_TIMED_OUT_HELP, &per_chain(&|c, k| k.timed_out + swept_of(c)))?;
    counter(enc, CHAINS_REPLACED, CHAINS_REPLACED_HELP, &per_chain(&|_, k| k.replaced))?;
    counter(enc, CHAINS_ABORTED, CHAINS_ABORTED_HELP, &per_chain(&|_, k| k.aborted))?;
    counter(enc, CHAINS_NOT_SAMPLED, CHAINS_NOT_SAMPLED_HELP, &per_chain(&|_, k| k.sampled_out))?;
    counter(enc, CHAINS_NESTED, CHAINS_NESTED_HELP, &per_chain(&|_, k| k.nested))?;
    let sampling: Vec<(Labels, f64)> = plans
        .iter()
        .filter(|p| p.is_chain() && snap.counters.iter().any(|(c, _)| c == &p.name))
        .map(|p| (labels.with(&[("chain", &p.name)]), p.sample_every as f64))
        .collect();
    gauge(enc, SAMPLE_EVERY, SAMPLE_EVERY_HELP, &sampling)?;
    counter(enc, RING_LOST, RING_LOST_HELP, &per_chain(&|_, k| k.ring_lost))?;
    counter(enc, MAP_FULL, MAP_FULL_HELP, &per_chain(&|_, k| k.map_full))?;
    counter(enc, OUT_OF_ORDER, OUT_OF_ORDER_HELP, &per_chain(&|_, k| k.out_of_order))
}

/// `clockpath_stage_hits_total`: hits of each attached stage program.
pub fn stage_hits(enc: &mut DescriptorEncoder, labels: &CommonLabels, snap: &KernelSnapshot) -> fmt::Result {
    let series: Vec<_> = snap
        .hits
        .iter()
        .map(|h| (labels.with(&[("chain", &h.chain), ("stage", &h.stage), ("target", &h.target)]), h.hits))
        .collect();
    counter(enc, STAGE_HITS, STAGE_HITS_HELP, &series)
}

/// The userspace data path: records received, dropped, incomplete chains.
pub fn pipeline(enc: &mut DescriptorEncoder, st: &PipelineStats) -> fmt::Result {
    counter(enc, RECORDS_RECEIVED, RECORDS_RECEIVED_HELP, &[(vec![], st.records.load(Ordering::Relaxed))])?;
    counter(enc, RECORDS_DROPPED, RECORDS_DROPPED_HELP, &[(vec![], st.dropped.load(Ordering::Relaxed))])?;
    counter(enc, CHAINS_INCOMPLETE, CHAINS_INCOMPLETE_HELP, &[(vec![], st.incomplete.load(Ordering::Relaxed))])?;
    counter(
        enc,
        ASSEMBLY_EVICTIONS,
        ASSEMBLY_EVICTIONS_HELP,
        &[
            (vec![(s("reason"), s("timeout"))], st.evicted_timeout.load(Ordering::Relaxed)),
            (vec![(s("reason"), s("cap"))], st.evicted_over_cap.load(Ordering::Relaxed)),
        ],
    )
}

/// `clockpath_memory_bytes` by component (heap of the assembler and each sink, the queue to
/// the assembly thread, and the ring buffer's mapping), and the standard process metrics
/// (`process_resident_memory_bytes`, `process_cpu_seconds_total`, virtual memory, start time,
/// open and maximum file descriptors).
pub fn memory(enc: &mut DescriptorEncoder, st: &PipelineStats, ring_mapping_bytes: u64) -> fmt::Result {
    let mut series: Vec<(Labels, f64)> = Vec::new();
    if let Ok(m) = st.memory.lock() {
        series.extend(m.iter().map(|(name, bytes)| (vec![(s("component"), s(name))], *bytes as f64)));
    }
    series.push((vec![(s("component"), s("assembly_queue"))], st.queued_bytes.load(Ordering::Relaxed) as f64));
    series.push((vec![(s("component"), s("ring_mapping"))], ring_mapping_bytes as f64));
    gauge(enc, MEMORY, MEMORY_HELP, &series)?;
    if let Some(p) = crate::process::ProcessUsage::read() {
        gauge(enc, PROCESS_RESIDENT, PROCESS_RESIDENT_HELP, &[(vec![], p.resident_bytes as f64)])?;
        gauge(enc, PROCESS_RESIDENT_PEAK, PROCESS_RESIDENT_PEAK_HELP, &[(vec![], p.peak_resident_bytes as f64)])?;
        counter_seconds(enc, PROCESS_CPU, PROCESS_CPU_HELP, &[(vec![], p.cpu_seconds)])?;
        gauge(enc, PROCESS_VIRTUAL, PROCESS_VIRTUAL_HELP, &[(vec![], p.virtual_bytes as f64)])?;
        gauge(enc, PROCESS_START, PROCESS_START_HELP, &[(vec![], p.start_time_seconds)])?;
        gauge(enc, PROCESS_OPEN_FDS, PROCESS_OPEN_FDS_HELP, &[(vec![], p.open_fds as f64)])?;
        gauge(enc, PROCESS_MAX_FDS, PROCESS_MAX_FDS_HELP, &[(vec![], p.max_fds as f64)])?;
    }
    Ok(())
}

/// The recorder's lines, lost lines and failed writes.
pub fn recorder(enc: &mut DescriptorEncoder, r: &RecorderStats) -> fmt::Result {
    counter(enc, RECORDER_LINES, RECORDER_LINES_HELP, &[(vec![], r.lines.load(Ordering::Relaxed))])?;
    counter(enc, RECORDER_DROPPED, RECORDER_DROPPED_HELP, &[(vec![], r.lines_dropped.load(Ordering::Relaxed))])?;
    counter(enc, RECORDER_ERRORS, RECORDER_ERRORS_HELP, &[(vec![], r.errors.load(Ordering::Relaxed))])
}

/// What the HTTP server counts.
#[derive(Clone, Debug, Default)]
pub struct HttpSnapshot {
    pub auth_failures: u64,
    /// By reason.
    pub tls_failures: [(&'static str, u64); 3],
    /// By reason: per_address, total.
    pub connections_rejected: [(&'static str, u64); 2],
    /// By reason: evicted (idle, to make room), stalled (the client stopped reading).
    pub connections_closed: [(&'static str, u64); 2],
    /// (last read succeeded, unix time of the last success), when a web config is in use.
    pub web_config_reload: Option<(bool, f64)>,
}

/// The HTTP server's counters, and the web config's reload state.
pub fn http_server(enc: &mut DescriptorEncoder, h: &HttpSnapshot) -> fmt::Result {
    counter(enc, HTTP_AUTH_FAILURES, HTTP_AUTH_FAILURES_HELP, &[(vec![], h.auth_failures)])?;
    let tls: Vec<(Labels, u64)> = h.tls_failures.iter().map(|(r, v)| (vec![(s("reason"), s(r))], *v)).collect();
    counter(enc, HTTP_TLS_FAILURES, HTTP_TLS_FAILURES_HELP, &tls)?;
    let by_reason =
        |v: &[(&str, u64)]| -> Vec<(Labels, u64)> { v.iter().map(|(r, n)| (vec![(s("reason"), s(r))], *n)).collect() };
    counter(enc, HTTP_REJECTED, HTTP_REJECTED_HELP, &by_reason(&h.connections_rejected))?;
    counter(enc, HTTP_CLOSED, HTTP_CLOSED_HELP, &by_reason(&h.connections_closed))?;
    if let Some((ok, at)) = h.web_config_reload {
        gauge(enc, WEB_CONFIG_RELOAD_OK, WEB_CONFIG_RELOAD_OK_HELP, &[(vec![], if ok { 1.0 } else { 0.0 })])?;
        gauge(enc, WEB_CONFIG_RELOAD_TIME, WEB_CONFIG_RELOAD_TIME_HELP, &[(vec![], at)])?;
    }
    Ok(())
}

/// `clockpath_probe_info`: each candidate of each stage, what was attached and why not.
pub fn probes(enc: &mut DescriptorEncoder, plans: &[ChainPlan]) -> fmt::Result {
    let mut series = Vec::new();
    for p in plans {
        let stages = p.stages.iter().map(|s| (s.name.as_str(), &s.points));
        for (stage, points) in stages.chain(std::iter::once(("abort", &p.aborts))) {
            for c in points.iter().flat_map(|pt| &pt.candidates) {
                let state = if p.is_running() || !matches!(c.status, Status::Ready | Status::Standby) {
                    c.status.label()
                } else {
                    "chain_disabled"
                };
                series.push(vec![
                    (s("chain"), p.name.clone()),
                    (s("stage"), stage.to_string()),
                    (s("target"), c.target.to_string()),
                    (s("attach"), c.target.kind.to_string()),
                    (s("state"), s(state)),
                    (s("reason"), c.status.reason().to_string()),
                ]);
            }
        }
    }
    info(enc, PROBE, PROBE_HELP, &series)?;
    // One series per chain: the alerting rules' "chain unavailable" without parsing probes.
    let running: Vec<(Labels, f64)> = plans
        .iter()
        .filter(|p| p.is_chain())
        .map(|p| (vec![(s("chain"), p.name.clone())], if p.is_running() { 1.0 } else { 0.0 }))
        .collect();
    gauge(enc, CHAIN_RUNNING, CHAIN_RUNNING_HELP, &running)
}

/// `clockpath_build_info`.
pub fn build(enc: &mut DescriptorEncoder) -> fmt::Result {
    info(
        enc,
        BUILD,
        BUILD_HELP,
        &[vec![
            (s("version"), s(env!("CARGO_PKG_VERSION"))),
            (s("revision"), s(option_env!("BUILD_GIT_REVISION").unwrap_or("unknown"))),
        ]],
    )
}

/// `clockpath_environment_info`, with the clocksource in use now.
pub fn environment(enc: &mut DescriptorEncoder, e: &EnvironmentInfo, clocksource: &str) -> fmt::Result {
    info(
        enc,
        ENVIRONMENT,
        ENVIRONMENT_HELP,
        &[vec![
            (s("env"), e.env.clone()),
            (s("kernel"), e.kernel.clone()),
            (s("hypervisor"), e.hypervisor.clone()),
            (s("clocksource"), s(clocksource)),
            (s("governor"), e.governor.clone()),
            (s("cstate_limit"), e.cstate_limit.clone()),
        ]],
    )
}

/// Interference charged to segments, per source, and segments whose interference is unknown.
pub fn interference(
    enc: &mut DescriptorEncoder,
    labels: &CommonLabels,
    running: &[&ChainPlan],
    charged: &BTreeMap<(u8, u8), Charged>,
) -> fmt::Result {
    let mut secs = Vec::new();
    let mut unknown = Vec::new();
    for ((chain, seg), c) in charged {
        let Some(plan) = running.iter().find(|p| p.index == *chain) else { continue };
        let seg_name = plan.shape().segment_name(*seg);
        for (name, ns) in INTERFERENCE_SOURCES.iter().zip(c.ns) {
            let l = labels.with(&[("chain", &plan.name), ("segment", &seg_name), ("source", name)]);
            secs.push((l, ns as f64 / 1e9));
        }
        unknown.push((labels.with(&[("chain", &plan.name), ("segment", &seg_name)]), c.unknown));
    }
    counter_seconds(enc, INTERFERENCE, INTERFERENCE_HELP, &secs)?;
    counter(enc, INTERFERENCE_UNKNOWN, INTERFERENCE_UNKNOWN_HELP, &unknown)
}

/// The statistics windows' gauges (median, CI, SD, samples, rejected, end, reliable). NaN and
/// infinities are never published.
pub fn windows(
    enc: &mut DescriptorEncoder,
    labels: &CommonLabels,
    plans: &[ChainPlan],
    env: &EnvironmentInfo,
    snap: &WindowSnapshot,
) -> fmt::Result {
    const DEFS: [(&str, &str); 8] = [
        (WINDOW_MEDIAN, WINDOW_MEDIAN_HELP),
        (WINDOW_CI_LOWER, WINDOW_CI_LOWER_HELP),
        (WINDOW_CI_UPPER, WINDOW_CI_UPPER_HELP),
        (WINDOW_STD_DEV, WINDOW_STD_DEV_HELP),
        (WINDOW_SAMPLES, WINDOW_SAMPLES_HELP),
        (WINDOW_REJECTED, WINDOW_REJECTED_HELP),
        (WINDOW_END, WINDOW_END_HELP),
        (WINDOW_RELIABLE, WINDOW_RELIABLE_HELP),
    ];
    let mut by_metric: [Vec<(Labels, f64)>; 8] = Default::default();
    for ((chain, session), segs) in &snap.windows {
        let Some(plan) = plans.iter().find(|p| p.index == *chain) else { continue };
        for sw in segs {
            let mut own = vec![("chain", plan.name.as_str()), ("segment", sw.segment.as_str())];
            if let Some(sess) = session {
                own.push(("session", sess));
            }
            own.push(("governor", env.governor.as_str()));
            own.push(("cstate_limit", env.cstate_limit.as_str()));
            let l = labels.with(&own);
            let st = &sw.stats;
            let mut put = |i: usize, v: f64| {
                if v.is_finite() {
                    by_metric[i].push((l.clone(), v));
                }
            };
            put(0, st.median);
            if let Some(ci) = &st.ci {
                put(1, ci.lower);
                put(2, ci.upper);
            }
            put(3, st.std_dev);
            put(4, st.n as f64);
            put(5, sw.rejected as f64);
            put(6, sw.end_unix);
            put(7, if st.reliable { 1.0 } else { 0.0 });
        }
    }
    for ((name, help), series) in DEFS.iter().zip(by_metric.iter()) {
        gauge(enc, name, help, series)?;
    }
    counter(enc, WINDOWS_SKIPPED, WINDOWS_SKIPPED_HELP, &[(vec![], snap.skipped)])
}

/// The OTLP sink's sampling decisions, export results and queue.
pub fn otlp(enc: &mut DescriptorEncoder, labels: &CommonLabels, plans: &[ChainPlan], o: &OtlpStats) -> fmt::Result {
    let mut kept = Vec::new();
    let mut out = Vec::new();
    for p in plans.iter().filter(|p| p.is_chain() && p.is_running()) {
        let Some(c) = o.chains.get(p.index as usize) else { continue };
        for r in Reason::ALL {
            kept.push((
                labels.with(&[("chain", &p.name), ("reason", r.as_str())]),
                c.kept[r as usize].load(Ordering::Relaxed),
            ));
        }
        out.push((labels.with(&[("chain", &p.name)]), c.sampled_out.load(Ordering::Relaxed)));
    }
    counter(enc, OTLP_SAMPLED, OTLP_SAMPLED_HELP, &kept)?;
    counter(enc, OTLP_SAMPLED_OUT, OTLP_SAMPLED_OUT_HELP, &out)?;
    let exported = [(vec![], o.spans_exported.load(Ordering::Relaxed))];
    counter(enc, OTLP_SPANS_EXPORTED, OTLP_SPANS_EXPORTED_HELP, &exported)?;
    let dropped: Vec<_> = DropReason::ALL.iter().map(|r| (vec![(s("reason"), s(r.as_str()))], o.dropped(*r))).collect();
    counter(enc, OTLP_SPANS_DROPPED, OTLP_SPANS_DROPPED_HELP, &dropped)?;
    let requests = [
        (vec![(s("result"), s("ok"))], o.requests_ok.load(Ordering::Relaxed)),
        (vec![(s("result"), s("error"))], o.requests_failed.load(Ordering::Relaxed)),
    ];
    counter(enc, OTLP_REQUESTS, OTLP_REQUESTS_HELP, &requests)?;
    gauge(enc, OTLP_QUEUE, OTLP_QUEUE_HELP, &[(vec![], o.queued.load(Ordering::Relaxed) as f64)])?;
    gauge(enc, OTLP_QUEUE_CAPACITY, OTLP_QUEUE_CAPACITY_HELP, &[(vec![], o.queue_capacity as f64)])?;
    let last = o.last_success_unix_ns.load(Ordering::Relaxed);
    if last > 0 {
        gauge(enc, OTLP_LAST_EXPORT, OTLP_LAST_EXPORT_HELP, &[(vec![], last as f64 / 1e9)])?;
    }
    Ok(())
}

/// BPF self-overhead: kernel run time and count per attached program (with `probe.bpf_stats`).
pub fn bpf_programs(enc: &mut DescriptorEncoder, programs: &[ProgramStats]) -> fmt::Result {
    let lab = |p: &ProgramStats| {
        vec![(s("chain"), p.chain.clone()), (s("stage"), p.stage.clone()), (s("program"), p.program.clone())]
    };
    let time: Vec<_> = programs.iter().map(|p| (lab(p), p.run_time_ns as f64 / 1e9)).collect();
    counter_seconds(enc, BPF_RUN_TIME, BPF_RUN_TIME_HELP, &time)?;
    let count: Vec<_> = programs.iter().map(|p| (lab(p), p.run_count)).collect();
    counter(enc, BPF_RUN_COUNT, BPF_RUN_COUNT_HELP, &count)
}

/// The PPS sources: info, signal, offset, pulses, missed pulses, jitter, read errors, and the
/// offset's statistics window.
pub fn pps(
    enc: &mut DescriptorEncoder,
    labels: &CommonLabels,
    sources: &[(&PpsSource, SourceSnapshot)],
    unusable: &[(String, String)],
) -> fmt::Result {
    let bad: Vec<Labels> = unusable.iter().map(|(d, why)| labels.with(&[("device", d), ("reason", why)])).collect();
    info(enc, PPS_UNUSABLE, PPS_UNUSABLE_HELP, &bad)?;
    let infos: Vec<Labels> = sources
        .iter()
        .map(|(src, _)| labels.with(&[("device", &src.device), ("name", &src.name), ("path", &src.source_path)]))
        .collect();
    info(enc, PPS_INFO, PPS_INFO_HELP, &infos)?;
    let l = |src: &PpsSource| labels.with(&[("device", &src.device)]);
    let each = |f: &dyn Fn(&SourceSnapshot) -> Option<f64>| -> Vec<(Labels, f64)> {
        sources.iter().filter_map(|(src, snap)| f(snap).map(|v| (l(src), v))).collect()
    };
    let each_count = |f: &dyn Fn(&SourceSnapshot) -> u64| -> Vec<(Labels, u64)> {
        sources.iter().map(|(src, snap)| (l(src), f(snap))).collect()
    };
    gauge(enc, PPS_SIGNAL, PPS_SIGNAL_HELP, &each(&|x| Some(if x.signal_present { 1.0 } else { 0.0 })))?;
    gauge(enc, PPS_OFFSET, PPS_OFFSET_HELP, &each(&|x| x.last_offset_ns.map(|o| o as f64 / 1e9)))?;
    gauge(enc, PPS_JITTER, PPS_JITTER_HELP, &each(&|x| x.jitter_ns.map(|j| j / 1e9)))?;
    counter(enc, PPS_PULSES, PPS_PULSES_HELP, &each_count(&|x| x.pulses))?;
    counter(enc, PPS_MISSED, PPS_MISSED_HELP, &each_count(&|x| x.missed))?;
    counter(enc, PPS_READ_ERRORS, PPS_READ_ERRORS_HELP, &each_count(&|x| x.read_errors))?;
    counter(enc, PPS_REMOVALS, PPS_REMOVALS_HELP, &each_count(&|x| x.removals))?;
    counter(enc, PPS_GLITCHES, PPS_GLITCHES_HELP, &each_count(&|x| x.glitches))?;
    let win =
        |f: &dyn Fn(&OffsetWindow) -> Option<f64>| each(&|x| x.window.as_ref().and_then(f).filter(|v| v.is_finite()));
    gauge(enc, PPS_WINDOW_MEDIAN, PPS_WINDOW_MEDIAN_HELP, &win(&|w| Some(w.stats.median)))?;
    gauge(enc, PPS_WINDOW_CI_LOWER, PPS_WINDOW_CI_LOWER_HELP, &win(&|w| w.stats.ci.as_ref().map(|c| c.lower)))?;
    gauge(enc, PPS_WINDOW_CI_UPPER, PPS_WINDOW_CI_UPPER_HELP, &win(&|w| w.stats.ci.as_ref().map(|c| c.upper)))?;
    gauge(enc, PPS_WINDOW_STD_DEV, PPS_WINDOW_STD_DEV_HELP, &win(&|w| Some(w.stats.std_dev)))?;
    gauge(enc, PPS_WINDOW_SAMPLES, PPS_WINDOW_SAMPLES_HELP, &win(&|w| Some(w.stats.n as f64)))?;
    gauge(enc, PPS_WINDOW_REJECTED, PPS_WINDOW_REJECTED_HELP, &win(&|w| Some(w.rejected as f64)))?;
    gauge(enc, PPS_WINDOW_END, PPS_WINDOW_END_HELP, &win(&|w| Some(w.end_unix)))?;
    gauge(enc, PPS_WINDOW_RELIABLE, PPS_WINDOW_RELIABLE_HELP, &win(&|w| Some(if w.stats.reliable { 1.0 } else { 0.0 })))
}

/// The periodic clock audit: each measured clock's offset from CLOCK_MONOTONIC, its
/// uncertainty and drift, jumps, and what the audits cost.
pub fn clock_audit(enc: &mut DescriptorEncoder, labels: &CommonLabels, live: &LiveClocks) -> fmt::Result {
    let l = |name: &str| labels.with(&[("clock", name)]);
    let measured: Vec<(&String, &LiveClock, i64)> =
        live.clocks.iter().filter_map(|(n, c)| c.offset_ns.map(|o| (n, c, o))).collect();
    let offsets: Vec<_> = measured.iter().map(|(n, _, o)| (l(n), *o as f64 / 1e9)).collect();
    gauge(enc, CLOCK_OFFSET, CLOCK_OFFSET_HELP, &offsets)?;
    let unc: Vec<_> = measured.iter().map(|(n, c, _)| (l(n), c.uncertainty_ns as f64 / 1e9)).collect();
    gauge(enc, CLOCK_UNCERTAINTY, CLOCK_UNCERTAINTY_HELP, &unc)?;
    let drift: Vec<_> =
        measured.iter().filter_map(|(n, c, _)| c.drift.filter(|d| d.is_finite()).map(|d| (l(n), d))).collect();
    gauge(enc, CLOCK_DRIFT, CLOCK_DRIFT_HELP, &drift)?;
    // Clocks never measured (no PHC, no PPS device) have no series; their reasons are in
    // `clockpath clocks`.
    let jumps: Vec<_> = live
        .clocks
        .iter()
        .filter(|(_, c)| c.offset_ns.is_some() || c.jumps > 0)
        .map(|(n, c)| (l(n), c.jumps))
        .collect();
    counter(enc, CLOCK_JUMPS, CLOCK_JUMPS_HELP, &jumps)?;
    counter(enc, CLOCK_AUDITS, CLOCK_AUDITS_HELP, &[(labels.with(&[]), live.audits)])?;
    counter_seconds(enc, CLOCK_AUDIT_CPU, CLOCK_AUDIT_CPU_HELP, &[(labels.with(&[]), live.cpu_seconds)])?;
    gauge(enc, CLOCK_AUDIT_LAST, CLOCK_AUDIT_LAST_HELP, &[(labels.with(&[]), live.last_unix)])
}

/// The kernel clock's synchronisation state (adjtimex), as node_exporter's timex collector.
pub fn timex(enc: &mut DescriptorEncoder, t: &TimeSync) -> fmt::Result {
    let one = |v: f64| [(Labels::new(), v)];
    gauge(enc, TIMEX_SYNC, TIMEX_SYNC_HELP, &one(if t.synchronised { 1.0 } else { 0.0 }))?;
    gauge(enc, TIMEX_MAXERROR, TIMEX_MAXERROR_HELP, &one(t.max_error_us as f64 / 1e6))?;
    gauge(enc, TIMEX_ESTERROR, TIMEX_ESTERROR_HELP, &one(t.est_error_us as f64 / 1e6))?;
    gauge(enc, TIMEX_OFFSET, TIMEX_OFFSET_HELP, &one(t.offset_seconds))?;
    gauge(enc, TIMEX_FREQ, TIMEX_FREQ_HELP, &one(t.frequency_adjustment_ratio()))?;
    gauge(enc, TIMEX_STATUS, TIMEX_STATUS_HELP, &one(f64::from(t.status)))?;
    gauge(enc, TIMEX_TAI, TIMEX_TAI_HELP, &one(f64::from(t.tai_offset_s)))?;
    gauge(enc, TIMEX_CONSTANT, TIMEX_CONSTANT_HELP, &one(t.loop_time_constant as f64))?;
    gauge(enc, TIMEX_TICK, TIMEX_TICK_HELP, &one(t.tick_seconds))?;
    gauge(enc, TIMEX_PPS_FREQ, TIMEX_PPS_FREQ_HELP, &one(t.pps_frequency_hertz))?;
    gauge(enc, TIMEX_PPS_JITTER, TIMEX_PPS_JITTER_HELP, &one(t.pps_jitter_seconds))?;
    gauge(enc, TIMEX_PPS_SHIFT, TIMEX_PPS_SHIFT_HELP, &one(t.pps_shift_seconds))?;
    gauge(enc, TIMEX_PPS_STABILITY, TIMEX_PPS_STABILITY_HELP, &one(t.pps_stability_hertz))?;
    let count = |v: i64| [(Labels::new(), v.max(0) as u64)];
    counter(enc, TIMEX_PPS_JITTER_COUNT, TIMEX_PPS_JITTER_COUNT_HELP, &count(t.pps_jitter_count))?;
    counter(enc, TIMEX_PPS_CALIBRATION, TIMEX_PPS_CALIBRATION_HELP, &count(t.pps_calibration_count))?;
    counter(enc, TIMEX_PPS_ERROR, TIMEX_PPS_ERROR_HELP, &count(t.pps_error_count))?;
    counter(
        enc,
        TIMEX_PPS_STABILITY_EXCEEDED,
        TIMEX_PPS_STABILITY_EXCEEDED_HELP,
        &count(t.pps_stability_exceeded_count),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use clockpath_common::hist::{HistRow, bucket_of, le_index};
    use clockpath_offline::stats::{ColumnStats, Interval};
    use clockpath_probe::{
        kernel::Kernel,
        plan::{self, ChainState},
    };
    use prometheus_client::{collector::Collector, registry::Registry};

    use super::*;
    use crate::{
        config::Config,
        sinks::windows::{SegmentWindow, WindowSnapshot},
    };

    /// The built-in chains resolved on the development kernel's fixture, all running.
    fn plans() -> Vec<ChainPlan> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../probe/fixtures/kernels/dev-6.18");
        let mut plans = plan::resolve(&Config::builtin().chain_specs(), &Kernel::fixture(dir)).expect("plan");
        for p in &mut plans {
            p.state = ChainState::Running;
        }
        plans
    }

    /// Encode with one family function.
    #[derive(Debug)]
    struct One(fn(&mut DescriptorEncoder) -> fmt::Result);

    impl Collector for One {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            (self.0)(&mut enc)
        }
    }

    fn text(f: fn(&mut DescriptorEncoder) -> fmt::Result) -> String {
        let mut r = Registry::default();
        r.register_collector(Box::new(One(f)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encode");
        out
    }

    #[test]
    fn timex_metrics_have_node_exporters_names_and_units() {
        static SYNC: std::sync::LazyLock<TimeSync> =
            std::sync::LazyLock::new(|| TimeSync::read().expect("adjtimex reads on Linux"));
        let t = text(|enc| timex(enc, &SYNC));
        // node_timex_* without the node_ prefix, each present.
        for name in [
            "clockpath_timex_sync_status ",
            "clockpath_timex_maxerror_seconds ",
            "clockpath_timex_estimated_error_seconds ",
            "clockpath_timex_offset_seconds ",
            "clockpath_timex_frequency_adjustment_ratio ",
            "clockpath_timex_status ",
            "clockpath_timex_tai_offset_seconds ",
            "clockpath_timex_loop_time_constant ",
            "clockpath_timex_tick_seconds ",
            "clockpath_timex_pps_frequency_hertz ",
            "clockpath_timex_pps_jitter_seconds ",
            "clockpath_timex_pps_shift_seconds ",
            "clockpath_timex_pps_stability_hertz ",
            "clockpath_timex_pps_jitter_total ",
            "clockpath_timex_pps_calibration_total ",
            "clockpath_timex_pps_error_total ",
            "clockpath_timex_pps_stability_exceeded_total ",
        ] {
            assert!(t.lines().any(|l| l.starts_with(name)), "{name} missing:\n{t}");
        }
        assert_eq!(value(&t, "clockpath_timex_maxerror_seconds"), SYNC.max_error_us as f64 / 1e6);
        assert_eq!(value(&t, "clockpath_timex_sync_status"), if SYNC.synchronised { 1.0 } else { 0.0 });
        assert_eq!(value(&t, "clockpath_timex_tick_seconds"), SYNC.tick_seconds);
    }

    #[test]
    fn pps_sources_give_signal_offset_pulses_missed_and_info() {
        use crate::{config::Config, ktime::Edge, pps::PpsSource};
        static SOURCE: std::sync::LazyLock<PpsSource> = std::sync::LazyLock::new(|| {
            let cfg = Config::builtin().pps;
            let s = PpsSource::new("/dev/pps0".into(), "clockpath-pps".into(), "".into(), &cfg);
            // Five seconds of edges ending now, the third one missing, the clock 250 µs ahead.
            let now = crate::ktime::monotonic_now_ns() as i64;
            for k in [0i64, 1, 3, 4] {
                let mono = now - (4 - k) * 1_000_000_000;
                s.add(Edge {
                    realtime_ns: 1_790_000_000_000_000_000 + k * 1_000_000_000 + 250_000,
                    monotonic_ns: mono,
                    sequence: k as u32 + 1,
                });
            }
            s
        });
        let t = text(|enc| {
            let labels = CommonLabels { env: "vm".into(), statics: BTreeMap::new() };
            pps(enc, &labels, &[(&*SOURCE, SOURCE.snapshot())], &[("/dev/pps1".into(), "not a PPS device".into())])
        });
        let l = "{device=\"/dev/pps0\",env=\"vm\"}";
        assert_eq!(value(&t, &format!("clockpath_pps_signal_present{l}")), 1.0);
        assert_eq!(value(&t, &format!("clockpath_pps_offset_seconds{l}")), 0.000_25);
        assert_eq!(value(&t, &format!("clockpath_pps_pulses_total{l}")), 4.0);
        assert_eq!(value(&t, &format!("clockpath_pps_missed_pulses_total{l}")), 1.0);
        assert!(
            t.contains("clockpath_pps_info{device=\"/dev/pps0\",name=\"clockpath-pps\",path=\"\",env=\"vm\"} 1"),
            "{t}"
        );
        assert!(!t.contains("clockpath_pps_window_median_seconds{"), "no window closed yet:\n{t}");
        assert_eq!(value(&t, &format!("clockpath_pps_device_removals_total{l}")), 0.0);
        assert!(
            t.contains("clockpath_pps_unusable_info{device=\"/dev/pps1\",reason=\"not a PPS device\",env=\"vm\"} 1"),
            "{t}"
        );
    }

    #[test]
    fn memory_reports_every_component_the_queue_the_ring_and_the_process() {
        static STATS: std::sync::LazyLock<PipelineStats> = std::sync::LazyLock::new(|| {
            let st = PipelineStats::default();
            *st.memory.lock().unwrap() = vec![("assembly", 4096), ("hdr_histograms", 123_456)];
            st.queued_bytes.store(65_536, Ordering::Relaxed);
            st.evicted_over_cap.store(7, Ordering::Relaxed);
            st
        });
        let t = text(|enc| memory(enc, &STATS, 33_562_624));
        assert_eq!(value(&t, "clockpath_memory_bytes{component=\"assembly\"}"), 4096.0);
        assert_eq!(value(&t, "clockpath_memory_bytes{component=\"hdr_histograms\"}"), 123_456.0);
        assert_eq!(value(&t, "clockpath_memory_bytes{component=\"assembly_queue\"}"), 65_536.0);
        assert_eq!(value(&t, "clockpath_memory_bytes{component=\"ring_mapping\"}"), 33_562_624.0);
        assert!(value(&t, "process_resident_memory_bytes") > 1e6, "{t}");
        assert!(value(&t, "process_cpu_seconds_total") >= 0.0, "{t}");
        assert!(value(&t, "process_virtual_memory_bytes") >= value(&t, "process_resident_memory_bytes"), "{t}");
        assert!(value(&t, "process_start_time_seconds") > 1.6e9, "{t}");
        assert!(value(&t, "process_open_fds") >= 3.0, "{t}");
        assert!(value(&t, "process_max_fds") >= value(&t, "process_open_fds"), "{t}");
        let t = text(|enc| pipeline(enc, &STATS));
        assert_eq!(value(&t, "clockpath_assembly_evictions_total{reason=\"cap\"}"), 7.0);
        assert_eq!(value(&t, "clockpath_assembly_evictions_total{reason=\"timeout\"}"), 0.0);
    }

    /// The value of the sample whose line starts with `prefix`.
    fn value(text: &str, prefix: &str) -> f64 {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    fn labels() -> CommonLabels {
        CommonLabels { env: "vm".into(), statics: [("node".to_string(), "n1".to_string())].into() }
    }

    /// 3 values of 500 ns, 2 of 1024 ns, 1 of 1025 ns, 1 of 100 s.
    fn row() -> HistRow {
        let mut row = HistRow::ZERO;
        for (ns, n) in [(500u64, 3u64), (1024, 2), (1025, 1), (100_000_000_000, 1)] {
            row.buckets[bucket_of(ns) as usize] += n;
            row.sum_ns += ns * n;
        }
        row
    }

    #[test]
    fn histograms_are_re_binned_exactly_at_the_configured_bounds() {
        let le: Vec<usize> = [5.12e-7, 1.024e-6, 2.048e-6].iter().map(|b| le_index(*b).unwrap()).collect();
        let bins = rebin(&row(), &le);
        assert_eq!(bins.iter().map(|b| b.1).collect::<Vec<_>>(), [3, 2, 1, 1], "per bucket, +Inf last");
        assert_eq!(bins[1].0, 1.024e-6);
        assert!(bins[3].0.is_infinite());
        let t = text(|enc| {
            let le: Vec<usize> = [5.12e-7, 1.024e-6, 2.048e-6].iter().map(|b| le_index(*b).unwrap()).collect();
            let h = HistSeries { chain: "c".into(), segment: "a->b".into(), cause: None, row: row(), last: true };
            segment_durations(enc, &labels(), &le, &[h])
        });
        let p = "clockpath_segment_duration_seconds";
        let with_cause = text(|enc| {
            let le: Vec<usize> = [1.024e-6, 2.048e-6].iter().map(|b| le_index(*b).unwrap()).collect();
            let h = HistSeries {
                chain: "c".into(),
                segment: "a->b".into(),
                cause: Some("woken".into()),
                row: row(),
                last: true,
            };
            segment_durations(enc, &labels(), &le, &[h])
        });
        assert_eq!(
            value(
                &with_cause,
                &format!("{p}_count{{chain=\"c\",segment=\"a->b\",cause=\"woken\",env=\"vm\",node=\"n1\"}}")
            ),
            7.0,
            "{with_cause}"
        );
        assert_eq!(
            value(&t, &format!("{p}_bucket{{le=\"0.000001024\",chain=\"c\",segment=\"a->b\",env=\"vm\",node=\"n1\"}}")),
            5.0
        );
        assert_eq!(
            value(&t, &format!("{p}_bucket{{le=\"+Inf\",chain=\"c\",segment=\"a->b\",env=\"vm\",node=\"n1\"}}")),
            7.0
        );
        assert_eq!(value(&t, &format!("{p}_count{{")), 7.0);
        assert!((value(&t, &format!("{p}_sum{{")) - 100.000004573).abs() < 1e-9, "{t}");
    }

    #[test]
    fn completed_chains_come_from_the_last_segment_and_timeouts_include_the_sweeper() {
        let t = text(|enc| {
            let plans = plans();
            let idx = plans.iter().find(|p| p.name == "runqueue").unwrap().index as usize;
            let mut swept = vec![0; 16];
            swept[idx] = 4;
            let counters = clockpath_common::slot::ChainCounters { opened: 9, timed_out: 1, ..Default::default() };
            let snap = KernelSnapshot {
                // A chain with causes: the completed count adds up the last segment's rows.
                histograms: ["wakeup", "preempted"]
                    .map(|cause| HistSeries {
                        chain: "runqueue".into(),
                        segment: "enqueue->switch_in".into(),
                        cause: Some(cause.into()),
                        row: row(),
                        last: true,
                    })
                    .to_vec(),
                counters: vec![("runqueue".into(), counters)],
                hits: vec![],
                swept,
            };
            chain_counters(enc, &labels(), &plans, &snap)
        });
        assert_eq!(value(&t, "clockpath_chains_opened_total{chain=\"runqueue\""), 9.0);
        assert_eq!(value(&t, "clockpath_chains_completed_total{chain=\"runqueue\""), 14.0);
        assert_eq!(value(&t, "clockpath_chains_timed_out_total{chain=\"runqueue\""), 5.0);
    }

    #[test]
    fn windows_publish_finite_values_only_and_flag_reliability() {
        let t = text(|enc| {
            let plans = plans();
            let chain = plans.iter().find(|p| p.name == "clocksource_switch").unwrap().index;
            let ci = Interval { estimate: 2e-5, lower: 1.9e-5, upper: 2.1e-5, level: 0.95, resamples: 500 };
            let stats = ColumnStats { n: 80, median: 2e-5, std_dev: f64::NAN, ci: Some(ci), reliable: false };
            let w = SegmentWindow { segment: "switch_entry->first_read".into(), stats, rejected: 2, end_unix: 1.7e9 };
            let mut snap = WindowSnapshot::default();
            snap.windows.insert((chain, Some(Arc::from("s1"))), vec![w]);
            let env = EnvironmentInfo { governor: "none".into(), cstate_limit: "none".into(), ..Default::default() };
            windows(enc, &labels(), &plans, &env, &snap)
        });
        let sel = "{chain=\"clocksource_switch\",segment=\"switch_entry->first_read\",session=\"s1\",governor=\"none\",cstate_limit=\"none\",env=\"vm\",node=\"n1\"}";
        assert_eq!(value(&t, &format!("clockpath_window_median_seconds{sel}")), 2e-5);
        assert_eq!(value(&t, &format!("clockpath_window_ci_upper_seconds{sel}")), 2.1e-5);
        assert_eq!(value(&t, &format!("clockpath_window_reliable{sel}")), 0.0, "80 runs < 100");
        assert_eq!(value(&t, &format!("clockpath_window_outliers_rejected{sel}")), 2.0);
        assert!(!t.contains("clockpath_window_std_dev_seconds{"), "NaN is never published:\n{t}");
    }

    #[test]
    fn probe_info_says_why_each_candidate_is_not_attached() {
        let t = text(|enc| {
            let mut plans = plans();
            let p = plans.iter_mut().find(|p| p.name == "hrtimer").unwrap();
            p.state = ChainState::Disabled("no".into());
            probes(enc, &plans)
        });
        assert!(
            t.lines().any(|l| l.starts_with("clockpath_probe_info{chain=\"clocksource_switch\",stage=\"switch_entry\",target=\"kprobe:change_clocksource\",attach=\"kprobe\",state=\"unusable\",reason=\"kprobes are not built into this kernel")),
            "{t}"
        );
        assert!(t.contains("chain=\"hrtimer\",stage=\"start\",target=\"tp_btf:hrtimer_start\",attach=\"tp_btf\",state=\"chain_disabled\""), "{t}");
        assert!(
            t.contains("state=\"missing\",reason=\"function timekeeping_update_from_shadow is not in /proc/kallsyms"),
            "{t}"
        );
    }
}
