//! Sinks: where assembled chains go, each a [`Sink`] on the assembly thread. The ones that feed
//! the metrics endpoint publish a snapshot it reads ([`Published`]); the others write files or
//! send traces. [`Builder`] is the one place a set of sinks is put together, for `clockpath run`
//! and for sessions alike.

pub mod hdr;
pub mod interference;
pub mod otlp;
pub mod recorder;
pub mod tally;
pub mod windows;

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use clockpath_offline::trace::CsvColumns;
use clockpath_probe::plan::{ChainPlan, all_shapes, slots::slot_stages};

use self::{
    hdr::{HdrSink, SharedQuantiles},
    interference::{InterferenceSink, SharedInterference},
    otlp::{OtlpSink, OtlpStats, export::ExportError},
    recorder::Recorder,
    tally::TallySink,
    windows::{SharedWindows, WindowSink},
};
use crate::{config::Loaded, exemplars::ExemplarStore, ktime::WallClock, pipeline::Sink, pps::TimeReference};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("starting the statistics window worker")]
    Windows(#[source] std::io::Error),
    #[error(transparent)]
    Otlp(#[from] ExportError),
    #[error("recorder: cannot write to {dir}")]
    Recorder {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics.buckets_seconds: {0}")]
    Buckets(clockpath_common::hist::BoundError),
}

/// What the sinks publish for the metrics endpoint and the summaries; each is present when its
/// sink was built.
#[derive(Clone, Default)]
pub struct Published {
    pub tally: Option<TallySink>,
    pub quantiles: Option<SharedQuantiles>,
    pub windows: Option<SharedWindows>,
    pub interference: Option<SharedInterference>,
    pub otlp: Option<Arc<OtlpStats>>,
    pub exemplars: Option<Arc<ExemplarStore>>,
    pub recorder: Option<Arc<recorder::RecorderStats>>,
}

/// Sinks for the pipeline, and what they publish.
pub struct SinkSet {
    pub sinks: Vec<Box<dyn Sink>>,
    pub published: Published,
}

/// Puts a set of sinks together for an attached plan.
pub struct Builder<'a> {
    loaded: &'a Loaded,
    plans: &'a [ChainPlan],
    env: &'a str,
    /// The time traces and recorded hits are put on.
    reference: Arc<TimeReference>,
    set: SinkSet,
}

impl<'a> Builder<'a> {
    /// `plans`: the attached plan (slots known); `env`: `host` or `vm`, as records carry it.
    /// Times are the system clock's until [`Self::reference`] gives a time reference.
    pub fn new(loaded: &'a Loaded, plans: &'a [ChainPlan], env: &'a str) -> Self {
        Builder {
            loaded,
            plans,
            env,
            reference: Arc::new(TimeReference::system(Arc::new(WallClock::new()))),
            set: SinkSet { sinks: Vec::new(), published: Published::default() },
        }
    }

    /// Put traces and recorded hits on `reference` (PPS time while a source is locked).
    pub fn reference(mut self, reference: Arc<TimeReference>) -> Self {
        self.reference = reference;
        self
    }

    /// The sinks of the continuous exporter (`clockpath run`): counts, HDR quantiles,
    /// statistics windows, interference totals, OTLP traces and the recorder, as configured.
    pub fn exporter(
        loaded: &'a Loaded,
        plans: &'a [ChainPlan],
        env: &'a str,
        reference: Arc<TimeReference>,
    ) -> Result<SinkSet, SinkError> {
        Ok(Builder::new(loaded, plans, env).reference(reference).tally().statistics()?.traces()?.recorder()?.build())
    }

    /// Any other sink (a session's feed, a test's probe).
    pub fn with(mut self, sink: Box<dyn Sink>) -> Self {
        self.set.sinks.push(sink);
        self
    }

    /// Counts per chain, segment and outcome.
    pub fn tally(mut self) -> Self {
        let tally = TallySink::default();
        self.set.published.tally = Some(tally.clone());
        self.with(Box::new(tally))
    }

    /// HDR quantiles, statistics windows and interference totals.
    pub fn statistics(mut self) -> Result<Self, SinkError> {
        let cfg = &self.loaded.config;
        let shapes = all_shapes(self.plans);
        let quantiles = SharedQuantiles::default();
        let hdr = HdrSink::new(
            shapes.clone(),
            cfg.metrics.quantiles.clone(),
            cfg.metrics.quantile_precision,
            Duration::from_secs(cfg.metrics.quantile_window_secs),
            quantiles.clone(),
        );
        let windows = SharedWindows::default();
        let window_sink =
            WindowSink::new(shapes.clone(), cfg.windows.clone(), windows.clone()).map_err(SinkError::Windows)?;
        let mut charging = vec![false; shapes.len()];
        for p in self.plans.iter().filter(|p| p.is_chain()) {
            charging[p.index as usize] = p.charges_interference;
        }
        let interference = SharedInterference::default();
        let p = &mut self.set.published;
        p.quantiles = Some(quantiles);
        p.windows = Some(windows);
        p.interference = Some(interference.clone());
        Ok(self
            .with(Box::new(hdr))
            .with(Box::new(window_sink))
            .with(Box::new(InterferenceSink::new(charging, interference))))
    }

    /// One OTLP trace per sampled chain instance, when `[otlp]` or the `OTEL_*` variables give
    /// an endpoint. The always-keep rules use the quantiles and windows of [`Self::statistics`]
    /// when it was called first; the exported traces become the histograms' exemplars.
    pub fn traces(mut self) -> Result<Self, SinkError> {
        let le_buckets = le_buckets(self.loaded)?;
        let exemplars = Arc::new(ExemplarStore::new(le_buckets));
        let p = &self.set.published;
        let otlp = OtlpSink::for_plans(
            self.loaded,
            self.plans,
            self.env,
            p.quantiles.clone(),
            p.windows.clone(),
            Some(exemplars.clone()),
            self.reference.clone(),
        )?;
        Ok(match otlp {
            Some(otlp) => {
                self.set.published.otlp = Some(otlp.stats());
                self.set.published.exemplars = Some(exemplars);
                self.with(Box::new(otlp))
            }
            None => self,
        })
    }

    /// Trace files, when `[recorder]` is enabled.
    pub fn recorder(mut self) -> Result<Self, SinkError> {
        let cfg = &self.loaded.config;
        if !cfg.recorder.enabled {
            return Ok(self);
        }
        // Raw hits name their stage through the slot that wrote them.
        let slots = if cfg.probe.raw_hits { slot_stages(self.plans) } else { Default::default() };
        let running = || self.plans.iter().filter(|p| p.is_chain() && p.is_running());
        let labels: Vec<(String, String)> = cfg.environment.labels.clone().into_iter().collect();
        let mut keys: Vec<String> = labels.iter().map(|(k, _)| k.clone()).collect();
        // Chains matching a capture (the clocksource chain) name the old and new value.
        if running().any(|p| p.stages.iter().any(|s| s.match_capture)) {
            keys.extend(["old_clocksource".to_string(), "new_clocksource".to_string()]);
        }
        // Chains with causes (runqueue) label each instance's hits with its cause.
        if running().any(|p| !p.causes.is_empty()) {
            keys.push(clockpath_offline::trace::CAUSE_LABEL.to_string());
        }
        // Chains with a stage on another clock label every hit with its stage's clock.
        let stage_clocks: BTreeMap<String, BTreeMap<String, String>> = running()
            .filter(|p| clockpath_probe::plan::slots::stamps(p))
            .map(|p| (p.name.clone(), p.stages.iter().map(|s| (s.name.clone(), s.clock.clone())).collect()))
            .collect();
        if !stage_clocks.is_empty() {
            keys.push(clockpath_offline::trace::CLOCK_LABEL.to_string());
        }
        // Every hit gets its time on the reference and which reference that was.
        keys.push(clockpath_offline::analysis::align::REFERENCE_LABEL.to_string());
        let columns =
            CsvColumns { interference: running().any(|p| p.charges_interference), reference: true, labels: keys };
        let rec = Recorder::new(
            cfg.recorder.clone(),
            self.env.to_string(),
            all_shapes(self.plans),
            slots,
            labels,
            columns,
            self.reference.clone(),
        )
        .map_err(|source| SinkError::Recorder { dir: cfg.recorder.dir.clone(), source })?
        .with_stage_clocks(stage_clocks);
        self.set.published.recorder = Some(rec.stats());
        Ok(self.with(Box::new(rec)))
    }

    pub fn build(self) -> SinkSet {
        self.set
    }
}

/// Kernel bucket index of each configured `le` bound (validated with the configuration).
pub fn le_buckets(loaded: &Loaded) -> Result<Vec<usize>, SinkError> {
    loaded
        .config
        .metrics
        .buckets_seconds
        .iter()
        .map(|b| clockpath_common::hist::le_index(*b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(SinkError::Buckets)
}
