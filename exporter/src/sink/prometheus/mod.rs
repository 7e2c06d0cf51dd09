//! The Prometheus sink: every metric clockpath exposes, encoded at scrape time from the kernel
//! maps (exact histograms and counters), the pipeline's counters, the HDR quantile snapshot and
//! the statistics windows. Names are in [`names`]; the HTTP endpoints in [`server`].

pub mod names;
pub mod server;

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, atomic::Ordering},
};

use clockpath_common::{
    hist::{HistRow, NUM_BUCKETS, bucket_le_ns, bucket_lower_ns},
    limits::TOTAL_ROW,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    pipeline::PipelineStats,
    probe::{
        loader::{KernelMaps, ProgramStats},
        plan::{ChainPlan, Status},
    },
    sink::{hdr::SharedQuantiles, interference::SharedInterference, window::SharedWindows},
};

/// Check histogram bounds: increasing, positive, each a kernel bucket boundary.
pub fn check_buckets(bounds: &[f64]) -> Result<(), String> {
    if bounds.is_empty() {
        return Err("at least one bucket bound is needed".into());
    }
    let mut prev = 0.0;
    for &b in bounds {
        if b <= prev || !b.is_finite() {
            return Err(format!("bounds must be finite, positive and increasing; {b} follows {prev}"));
        }
        le_index(b)?;
        prev = b;
    }
    Ok(())
}

/// The kernel bucket whose inclusive upper bound is `seconds`.
pub fn le_index(seconds: f64) -> Result<usize, String> {
    let ns_f = seconds * 1e9;
    let ns = ns_f.round();
    let exact = (ns_f - ns).abs() < 1e-3 && ns >= 1.0;
    if exact && let Some(i) = (0..NUM_BUCKETS as u32 - 1).find(|&i| bucket_le_ns(i) == Some(ns as u64)) {
        return Ok(i as usize);
    }
    // Suggest the nearest boundaries.
    let target = ns_f.max(0.0) as u64;
    let above = (1..NUM_BUCKETS as u32).map(bucket_lower_ns).find(|&b| b >= target.max(1));
    let below = (1..NUM_BUCKETS as u32).map(bucket_lower_ns).take_while(|&b| b <= target).last();
    let show = |ns: Option<u64>| ns.map(|n| format!("{}", n as f64 / 1e9)).unwrap_or_else(|| "none".into());
    Err(format!(
        "{seconds} s is not a kernel bucket boundary (m × 2^e ns with 8 <= m <= 15, or a whole number of ns below 16); nearest: {} or {}",
        show(below),
        show(above)
    ))
}

/// Labels every chain series carries besides its own.
#[derive(Clone, Debug, Default)]
pub struct CommonLabels {
    pub env: String,
    pub statics: BTreeMap<String, String>,
}

impl CommonLabels {
    fn with(&self, own: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = own.iter().map(|(k, x)| (k.to_string(), x.to_string())).collect();
        v.push(("env".into(), self.env.clone()));
        v.extend(self.statics.iter().map(|(k, x)| (k.clone(), x.clone())));
        v
    }
}

/// The `clockpath_environment_info` labels (the clocksource is re-read at every scrape).
#[derive(Clone, Debug, Default)]
pub struct EnvironmentInfo {
    pub env: String,
    pub hypervisor: String,
    pub governor: String,
    pub cstate_limit: String,
}

/// Everything a scrape reads.
pub struct Exposition {
    pub plans: Arc<Vec<ChainPlan>>,
    pub maps: Arc<Mutex<KernelMaps>>,
    pub stats: Arc<PipelineStats>,
    pub quantiles: SharedQuantiles,
    pub labels: CommonLabels,
    pub environment: EnvironmentInfo,
    /// Kernel bucket index of each configured `le`.
    pub le_buckets: Vec<usize>,
    /// Interference charged to segments.
    pub interference: Option<SharedInterference>,
    /// Statistics windows, with the governor and C-state labels they carry.
    pub windows: Option<SharedWindows>,
    /// The OTLP sink's counters, when traces are exported.
    pub otlp: Option<Arc<crate::sink::otlp::OtlpStats>>,
    /// Per-program kernel run time and count, when bpf_stats is on.
    pub program_stats: Option<Box<dyn Fn() -> Vec<ProgramStats> + Send + Sync>>,
}

impl fmt::Debug for Exposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exposition").field("chains", &self.plans.len()).finish_non_exhaustive()
    }
}

impl Exposition {
    /// A registry with this exposition as its only collector.
    pub fn into_registry(self) -> Registry {
        let mut r = Registry::default();
        r.register_collector(Box::new(self));
        r
    }

    /// Re-bin a kernel histogram row into the configured buckets: per-bucket (not cumulative)
    /// counts, +Inf last. Exact: every configured `le` is a kernel bucket's upper bound.
    fn rebin(&self, row: &HistRow) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(self.le_buckets.len() + 1);
        let mut from = 0usize;
        for &i in &self.le_buckets {
            let n: u64 = row.buckets[from..=i].iter().sum();
            out.push((bucket_le_ns(i as u32).unwrap_or(0) as f64 / 1e9, n));
            from = i + 1;
        }
        out.push((f64::INFINITY, row.buckets[from..].iter().sum()));
        out
    }
}

/// A label set and a gauge value.
type GaugeSample = (Vec<(String, String)>, f64);

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Vec<(String, String)>, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, series: &[(Vec<(String, String)>, f64)]) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn info(enc: &mut DescriptorEncoder, name: &str, help: &str, series: &[Vec<(String, String)>]) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Info)?;
    for labels in series {
        m.encode_info(labels)?;
    }
    Ok(())
}

fn e_gov(e: &EnvironmentInfo) -> &str {
    &e.governor
}

fn s(v: &str) -> String {
    v.to_string()
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        use names::*;
        let running: Vec<&ChainPlan> = self.plans.iter().filter(|p| p.is_running() && p.is_chain()).collect();
        // One consistent read of the kernel maps per scrape.
        let (rows, counters, hits, swept) = {
            let Ok(maps) = self.maps.lock() else { return Err(fmt::Error) };
            let mut rows = Vec::new();
            let mut counters = Vec::new();
            let mut hits = Vec::new();
            for p in &running {
                let shape = p.shape();
                let mut idx: Vec<(String, u32, bool)> = (1..=shape.segments() as u8)
                    .map(|i| (shape.segment_name(i), i as u32 - 1, i as usize == shape.segments()))
                    .collect();
                if shape.segments() > 1 {
                    idx.push(("total".into(), TOTAL_ROW, false));
                }
                for (seg, row, last) in idx {
                    let h = maps.hist_row(p.index, row).unwrap_or(HistRow::ZERO);
                    rows.push((p.name.clone(), seg, h, last));
                }
                counters.push((p.name.clone(), maps.chain_counters(p.index).unwrap_or_default()));
                let stages = p.stages.iter().map(|s| (s.name.as_str(), &s.points));
                for (stage, points) in stages.chain(std::iter::once(("abort", &p.aborts))) {
                    for c in points.iter().flat_map(|pt| &pt.candidates) {
                        if let Status::Attached(slot) = c.status {
                            hits.push((
                                p.name.clone(),
                                stage.to_string(),
                                c.target.to_string(),
                                maps.slot_hits(slot).unwrap_or(0),
                            ));
                        }
                    }
                }
            }
            let swept = maps.swept.clone();
            (rows, counters, hits, swept)
        };

        // Histograms, exact from the kernel.
        let mut m = enc.encode_descriptor(SEGMENT_DURATION, SEGMENT_DURATION_HELP, None, MetricType::Histogram)?;
        for (chain, seg, row, _) in &rows {
            let buckets = self.rebin(row);
            let count: u64 = row.buckets.iter().sum();
            let labels = self.labels.with(&[("chain", chain), ("segment", seg)]);
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(row.sum_ns as f64 / 1e9, count, &buckets, None)?;
        }

        // HDR quantiles over the sliding window.
        if let Ok(q) = self.quantiles.read() {
            let mut series = Vec::new();
            for p in &running {
                let shape = p.shape();
                for ((chain, seg), (_, values)) in q.series.range((p.index, 0)..=(p.index, u8::MAX)) {
                    debug_assert_eq!(*chain, p.index);
                    let seg_name = if *seg == 0 { s("total") } else { shape.segment_name(*seg) };
                    for (qv, v) in q.quantiles.iter().zip(values) {
                        if v.is_finite() {
                            let labels =
                                self.labels.with(&[("chain", &p.name), ("segment", &seg_name), ("q", &qv.to_string())]);
                            series.push((labels, *v));
                        }
                    }
                }
            }
            gauge(&mut enc, SEGMENT_QUANTILE, SEGMENT_QUANTILE_HELP, &series)?;
        }

        // Per-chain counters.
        let per_chain =
            |f: &dyn Fn(&str, &clockpath_common::slot::ChainCounters) -> u64| -> Vec<(Vec<(String, String)>, u64)> {
                counters.iter().map(|(c, k)| (self.labels.with(&[("chain", c)]), f(c, k))).collect()
            };
        let completed: BTreeMap<&str, u64> =
            rows.iter().filter(|r| r.3).map(|(c, _, h, _)| (c.as_str(), h.buckets.iter().sum())).collect();
        let swept_of = |name: &str| {
            self.plans.iter().find(|p| p.name == name).and_then(|p| swept.get(p.index as usize)).copied().unwrap_or(0)
        };
        counter(&mut enc, CHAINS_OPENED, CHAINS_OPENED_HELP, &per_chain(&|_, k| k.opened))?;
        counter(
            &mut enc,
            CHAINS_COMPLETED,
            CHAINS_COMPLETED_HELP,
            &per_chain(&|c, _| completed.get(c).copied().unwrap_or(0)),
        )?;
        counter(&mut enc, CHAINS_TIMED_OUT, CHAINS_TIMED_OUT_HELP, &per_chain(&|c, k| k.timed_out + swept_of(c)))?;
        counter(&mut enc, CHAINS_REPLACED, CHAINS_REPLACED_HELP, &per_chain(&|_, k| k.replaced))?;
        counter(&mut enc, CHAINS_ABORTED, CHAINS_ABORTED_HELP, &per_chain(&|_, k| k.aborted))?;
        counter(&mut enc, RING_LOST, RING_LOST_HELP, &per_chain(&|_, k| k.ring_lost))?;
        counter(&mut enc, MAP_FULL, MAP_FULL_HELP, &per_chain(&|_, k| k.map_full))?;
        counter(&mut enc, OUT_OF_ORDER, OUT_OF_ORDER_HELP, &per_chain(&|_, k| k.out_of_order))?;
        let hit_series: Vec<_> = hits
            .iter()
            .map(|(c, st, t, n)| (self.labels.with(&[("chain", c), ("stage", st), ("target", t)]), *n))
            .collect();
        counter(&mut enc, STAGE_HITS, STAGE_HITS_HELP, &hit_series)?;

        // Userspace data path.
        let st = &self.stats;
        counter(&mut enc, RECORDS_RECEIVED, RECORDS_RECEIVED_HELP, &[(vec![], st.records.load(Ordering::Relaxed))])?;
        counter(&mut enc, RECORDS_DROPPED, RECORDS_DROPPED_HELP, &[(vec![], st.dropped.load(Ordering::Relaxed))])?;
        counter(
            &mut enc,
            CHAINS_INCOMPLETE,
            CHAINS_INCOMPLETE_HELP,
            &[(vec![], st.incomplete.load(Ordering::Relaxed))],
        )?;

        // What is attached, and why not.
        let mut probes = Vec::new();
        for p in self.plans.iter() {
            let stages = p.stages.iter().map(|s| (s.name.as_str(), &s.points));
            for (stage, points) in stages.chain(std::iter::once(("abort", &p.aborts))) {
                for c in points.iter().flat_map(|pt| &pt.candidates) {
                    let state = if p.is_running() || !matches!(c.status, Status::Ready | Status::Standby) {
                        c.status.label()
                    } else {
                        "chain_disabled"
                    };
                    probes.push(vec![
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
        info(&mut enc, PROBE, PROBE_HELP, &probes)?;
        info(
            &mut enc,
            BUILD,
            BUILD_HELP,
            &[vec![
                (s("version"), s(env!("CARGO_PKG_VERSION"))),
                (s("revision"), s(option_env!("BUILD_GIT_REVISION").unwrap_or("unknown"))),
            ]],
        )?;
        let e = &self.environment;
        let clocksource = std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| s("unknown"));
        info(
            &mut enc,
            ENVIRONMENT,
            ENVIRONMENT_HELP,
            &[vec![
                (s("env"), e.env.clone()),
                (s("hypervisor"), e.hypervisor.clone()),
                (s("clocksource"), clocksource),
                (s("governor"), e.governor.clone()),
                (s("cstate_limit"), e.cstate_limit.clone()),
            ]],
        )?;

        // Interference charged to segments.
        if let Some(i) = &self.interference
            && let Ok(m) = i.lock()
        {
            let mut secs = Vec::new();
            let mut unknown = Vec::new();
            for ((chain, seg), c) in m.iter() {
                let Some(plan) = running.iter().find(|p| p.index == *chain) else { continue };
                let seg_name = plan.shape().segment_name(*seg);
                for (name, ns) in clockpath_common::interference::NAMES.iter().zip(c.ns) {
                    secs.push((
                        self.labels.with(&[("chain", &plan.name), ("segment", &seg_name), ("source", name)]),
                        ns as f64 / 1e9,
                    ));
                }
                unknown.push((self.labels.with(&[("chain", &plan.name), ("segment", &seg_name)]), c.unknown));
            }
            let mut m = enc.encode_descriptor(INTERFERENCE, INTERFERENCE_HELP, None, MetricType::Counter)?;
            for (labels, v) in &secs {
                ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
            }
            counter(&mut enc, INTERFERENCE_UNKNOWN, INTERFERENCE_UNKNOWN_HELP, &unknown)?;
        }

        // Statistics windows.
        if let Some(w) = &self.windows
            && let Ok(snap) = w.read()
        {
            let mut by_metric: [Vec<GaugeSample>; 8] = Default::default();
            for ((chain, session), segs) in &snap.windows {
                let Some(plan) = self.plans.iter().find(|p| p.index == *chain) else { continue };
                for sw in segs {
                    let mut own = vec![("chain", plan.name.as_str()), ("segment", sw.segment.as_str())];
                    if let Some(sess) = session {
                        own.push(("session", sess));
                    }
                    own.push(("governor", e_gov(&self.environment)));
                    own.push(("cstate_limit", self.environment.cstate_limit.as_str()));
                    let labels = self.labels.with(&own);
                    let st = &sw.stats;
                    let mut put = |i: usize, v: f64| {
                        // NaN or infinities are never published.
                        if v.is_finite() {
                            by_metric[i].push((labels.clone(), v));
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
            let defs = [
                (WINDOW_MEDIAN, WINDOW_MEDIAN_HELP),
                (WINDOW_CI_LOWER, WINDOW_CI_LOWER_HELP),
                (WINDOW_CI_UPPER, WINDOW_CI_UPPER_HELP),
                (WINDOW_STD_DEV, WINDOW_STD_DEV_HELP),
                (WINDOW_SAMPLES, WINDOW_SAMPLES_HELP),
                (WINDOW_REJECTED, WINDOW_REJECTED_HELP),
                (WINDOW_END, WINDOW_END_HELP),
                (WINDOW_RELIABLE, WINDOW_RELIABLE_HELP),
            ];
            for ((name, help), series) in defs.iter().zip(by_metric.iter()) {
                gauge(&mut enc, name, help, series)?;
            }
        }

        // Traces.
        if let Some(o) = &self.otlp {
            use crate::sink::otlp::{DropReason, Reason};
            let mut kept = Vec::new();
            let mut out = Vec::new();
            for p in self.plans.iter().filter(|p| p.is_chain() && p.is_running()) {
                let Some(c) = o.chains.get(p.index as usize) else { continue };
                for r in Reason::ALL {
                    kept.push((
                        self.labels.with(&[("chain", &p.name), ("reason", r.as_str())]),
                        c.kept[r as usize].load(Ordering::Relaxed),
                    ));
                }
                out.push((self.labels.with(&[("chain", &p.name)]), c.sampled_out.load(Ordering::Relaxed)));
            }
            counter(&mut enc, OTLP_SAMPLED, OTLP_SAMPLED_HELP, &kept)?;
            counter(&mut enc, OTLP_SAMPLED_OUT, OTLP_SAMPLED_OUT_HELP, &out)?;
            counter(
                &mut enc,
                OTLP_SPANS_EXPORTED,
                OTLP_SPANS_EXPORTED_HELP,
                &[(vec![], o.spans_exported.load(Ordering::Relaxed))],
            )?;
            let dropped: Vec<_> =
                DropReason::ALL.iter().map(|r| (vec![(s("reason"), s(r.as_str()))], o.dropped(*r))).collect();
            counter(&mut enc, OTLP_SPANS_DROPPED, OTLP_SPANS_DROPPED_HELP, &dropped)?;
            counter(
                &mut enc,
                OTLP_REQUESTS,
                OTLP_REQUESTS_HELP,
                &[
                    (vec![(s("result"), s("ok"))], o.requests_ok.load(Ordering::Relaxed)),
                    (vec![(s("result"), s("error"))], o.requests_failed.load(Ordering::Relaxed)),
                ],
            )?;
            gauge(&mut enc, OTLP_QUEUE, OTLP_QUEUE_HELP, &[(vec![], o.queued.load(Ordering::Relaxed) as f64)])?;
            gauge(&mut enc, OTLP_QUEUE_CAPACITY, OTLP_QUEUE_CAPACITY_HELP, &[(vec![], o.queue_capacity as f64)])?;
            let last = o.last_success_unix_ns.load(Ordering::Relaxed);
            if last > 0 {
                gauge(&mut enc, OTLP_LAST_EXPORT, OTLP_LAST_EXPORT_HELP, &[(vec![], last as f64 / 1e9)])?;
            }
        }

        // BPF self-overhead.
        if let Some(f) = &self.program_stats {
            let ps = f();
            let lab = |p: &ProgramStats| {
                vec![(s("chain"), p.chain.clone()), (s("stage"), p.stage.clone()), (s("program"), p.program.clone())]
            };
            let time: Vec<_> = ps.iter().map(|p| (lab(p), p.run_time_ns as f64 / 1e9)).collect();
            let mut m = enc.encode_descriptor(BPF_RUN_TIME, BPF_RUN_TIME_HELP, None, MetricType::Counter)?;
            for (labels, v) in &time {
                ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
            }
            let count: Vec<_> = ps.iter().map(|p| (lab(p), p.run_count)).collect();
            counter(&mut enc, BPF_RUN_COUNT, BPF_RUN_COUNT_HELP, &count)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_bounds_are_kernel_boundaries() {
        let c = crate::config::Config::builtin();
        check_buckets(&c.metrics.buckets_seconds).unwrap();
    }

    #[test]
    fn bad_bounds_name_the_nearest_good_ones() {
        let e = check_buckets(&[1e-6]).unwrap_err();
        assert!(
            e.contains("not a kernel bucket boundary") && e.contains("0.00000096") && e.contains("0.000001024"),
            "{e}"
        );
        assert!(check_buckets(&[2e-6, 1e-6]).is_err());
        assert!(check_buckets(&[]).is_err());
        assert!(check_buckets(&[f64::NAN]).is_err());
        assert_eq!(le_index(1.024e-6).unwrap() as u32, clockpath_common::hist::bucket_of(1024));
    }
}
