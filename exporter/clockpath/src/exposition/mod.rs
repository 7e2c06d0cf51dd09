//! The Prometheus exposition: every metric clockpath exposes, encoded at scrape time from one
//! consistent read of the kernel maps ([`snapshot`]: exact histograms and counters), the
//! pipeline's counters, and what the sinks publish (HDR quantiles, statistics windows,
//! interference, OTLP). Each family is encoded by one function in [`families`]; names and help
//! texts are in [`names`]; exemplars are added to OpenMetrics text by [`openmetrics`].

pub mod families;
pub mod names;
pub mod openmetrics;
pub mod snapshot;

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use clockpath_probe::{kernel::CLOCKSOURCE_DIR, loader::ProgramStats, maps::KernelMaps, plan::ChainPlan};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};

pub use families::{CommonLabels, EnvironmentInfo};
use snapshot::KernelSnapshot;

use crate::{clockaudit::SharedClocks, host::TimeSync, pipeline::PipelineStats, pps::TimeReference, sinks::Published};

/// Everything a scrape reads.
pub struct Exposition {
    pub plans: Arc<Vec<ChainPlan>>,
    pub maps: Arc<Mutex<KernelMaps>>,
    pub stats: Arc<PipelineStats>,
    /// What the sinks publish (quantiles, windows, interference, OTLP counters).
    pub published: Published,
    pub labels: CommonLabels,
    pub environment: EnvironmentInfo,
    /// Kernel bucket index of each configured `le`.
    pub le_buckets: Vec<usize>,
    /// Bytes the ring buffer's mapping takes (its data pages are mapped twice).
    pub ring_mapping_bytes: u64,
    /// The time reference (its PPS sources' metrics).
    pub reference: Option<Arc<TimeReference>>,
    /// The periodic clock audit, when `clock_audit.interval_secs` is set.
    pub clocks: Option<SharedClocks>,
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
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let plans = self.plans.as_slice();
        let running: Vec<&ChainPlan> = plans.iter().filter(|p| p.is_running() && p.is_chain()).collect();
        let kernel = {
            let Ok(maps) = self.maps.lock() else { return Err(fmt::Error) };
            KernelSnapshot::read(plans, &maps)
        };
        let labels = &self.labels;
        families::segment_durations(&mut enc, labels, &self.le_buckets, &kernel.histograms)?;
        let p = &self.published;
        if let Some(q) = &p.quantiles
            && let Ok(q) = q.read()
        {
            families::segment_quantiles(&mut enc, labels, &running, &q)?;
        }
        families::chain_counters(&mut enc, labels, plans, &kernel)?;
        families::stage_hits(&mut enc, labels, &kernel)?;
        families::pipeline(&mut enc, &self.stats)?;
        families::memory(&mut enc, &self.stats, self.ring_mapping_bytes)?;
        families::probes(&mut enc, plans)?;
        families::build(&mut enc)?;
        let clocksource = std::fs::read_to_string(format!("{CLOCKSOURCE_DIR}/current_clocksource"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        families::environment(&mut enc, &self.environment, &clocksource)?;
        if let Some(i) = &p.interference
            && let Ok(m) = i.lock()
        {
            families::interference(&mut enc, labels, &running, &m)?;
        }
        if let Some(w) = &p.windows
            && let Ok(snap) = w.read()
        {
            families::windows(&mut enc, labels, plans, &self.environment, &snap)?;
        }
        if let Some(r) = &p.recorder {
            families::recorder(&mut enc, r)?;
        }
        if let Some(o) = &p.otlp {
            families::otlp(&mut enc, labels, plans, o)?;
        }
        if let Some(f) = &self.program_stats {
            families::bpf_programs(&mut enc, &f())?;
        }
        if let Some(r) = &self.reference
            && (!r.sources().is_empty() || !r.unusable().is_empty())
        {
            let snaps: Vec<_> = r.sources().iter().map(|s| (s.as_ref(), s.snapshot())).collect();
            families::pps(&mut enc, labels, &snaps, r.unusable())?;
        }
        if let Some(c) = &self.clocks
            && let Ok(live) = c.lock()
        {
            families::clock_audit(&mut enc, &self.labels, &live)?;
        }
        if let Some(t) = TimeSync::read() {
            families::timex(&mut enc, &t)?;
        }
        Ok(())
    }
}
