//! Sliding-window quantiles of segment durations from ring records, with HDR histograms.
//!
//! Each (chain, segment) has `SUB_WINDOWS` HDR histograms covering `window / SUB_WINDOWS`
//! each; the oldest is cleared as the window slides. Quantiles are recomputed once per
//! sub-window tick (and at least every second) into a snapshot the scrape path reads, so a
//! scrape never merges histograms.
//!
//! A series' histograms are created by its first record and sized to the values seen
//! (auto-resizing): memory follows each segment's observed range at the configured precision
//! (`metrics.quantile_precision` significant digits), e.g. ~7 KiB per sub-window for
//! microsecond segments at 2 digits instead of the ~18 KiB a 1 ns – 1000 s range would take.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

use clockpath_offline::chain::{ChainRecord, ChainShape, Outcome};

use crate::pipeline::Sink;

/// Sub-windows per window.
pub const SUB_WINDOWS: usize = 6;
/// Largest value tracked (1000 s); larger ones are clamped.
const MAX_NS: u64 = 1_000_000_000_000;

/// `segment` is a 1-based segment index, or 0 for `total`.
pub type SeriesKey = (u8, u8);

/// Quantile values (seconds) per series, in the configured quantile order, and sample counts.
#[derive(Clone, Debug, Default)]
pub struct QuantileSnapshot {
    pub quantiles: Vec<f64>,
    pub series: BTreeMap<SeriesKey, (u64, Vec<f64>)>,
    /// p99 in ns of every series, whatever quantiles are configured (trace sampling keeps
    /// chains slower than it).
    pub p99_ns: BTreeMap<SeriesKey, u64>,
}

pub type SharedQuantiles = Arc<RwLock<QuantileSnapshot>>;

struct Series {
    /// Counts per sub-window fit in u32: 4 G records in one sub-window is ~400 M/s.
    subs: Vec<Histogram<u32>>,
}

pub struct HdrSink {
    shapes: Vec<Option<ChainShape>>,
    quantiles: Vec<f64>,
    /// Significant digits.
    precision: u8,
    /// Scratch histogram the sub-windows are merged into at each publish.
    merged: Histogram<u32>,
    sub_len: Duration,
    current: usize,
    rotated_at: Instant,
    published_at: Instant,
    series: BTreeMap<SeriesKey, Series>,
    out: SharedQuantiles,
}

/// An empty histogram at `precision` significant digits (1–5, checked by the config) that
/// grows to the largest value recorded.
fn new_hist(precision: u8) -> Histogram<u32> {
    Histogram::new(precision.clamp(1, 5)).unwrap_or_else(|_| Histogram::new(2).unwrap_or_else(|_| unreachable!()))
}

impl HdrSink {
    pub fn new(
        shapes: Vec<Option<ChainShape>>,
        quantiles: Vec<f64>,
        precision: u8,
        window: Duration,
        out: SharedQuantiles,
    ) -> Self {
        let now = Instant::now();
        if let Ok(mut o) = out.write() {
            o.quantiles = quantiles.clone();
        }
        HdrSink {
            shapes,
            quantiles,
            precision,
            merged: new_hist(precision),
            sub_len: (window / SUB_WINDOWS as u32).max(Duration::from_secs(1)),
            current: 0,
            rotated_at: now,
            published_at: now,
            series: BTreeMap::new(),
            out,
        }
    }

    fn record(&mut self, key: SeriesKey, ns: u64) {
        let cur = self.current;
        let precision = self.precision;
        let s = self
            .series
            .entry(key)
            .or_insert_with(|| Series { subs: (0..SUB_WINDOWS).map(|_| new_hist(precision)).collect() });
        // `record` grows the histogram to fit (`saturating_record` would clamp to its current
        // top instead); the value is already clamped to MAX_NS, so growing cannot run away.
        let h = &mut s.subs[cur];
        if h.record(ns.clamp(1, MAX_NS)).is_err() {
            h.saturating_record(ns.clamp(1, MAX_NS));
        }
    }

    fn publish(&mut self) {
        let mut snap =
            QuantileSnapshot { quantiles: self.quantiles.clone(), series: BTreeMap::new(), p99_ns: BTreeMap::new() };
        let merged = &mut self.merged;
        for (key, s) in &self.series {
            merged.reset();
            for h in &s.subs {
                // Same precision; the merged histogram grows to fit, so adding cannot fail.
                let _ = merged.add(h);
            }
            let n = merged.len();
            if n == 0 {
                continue;
            }
            let qs = self.quantiles.iter().map(|q| merged.value_at_quantile(*q) as f64 / 1e9).collect();
            snap.series.insert(*key, (n, qs));
            snap.p99_ns.insert(*key, merged.value_at_quantile(0.99));
        }
        if let Ok(mut o) = self.out.write() {
            *o = snap;
        }
    }
}

impl HdrSink {
    /// Bytes of histogram counts held.
    pub fn heap_bytes(&self) -> usize {
        let counts = |h: &Histogram<u32>| h.distinct_values() * std::mem::size_of::<u32>();
        self.series.values().flat_map(|s| &s.subs).map(counts).sum::<usize>() + counts(&self.merged)
    }
}

impl Sink for HdrSink {
    fn memory(&self) -> Option<(&'static str, usize)> {
        Some(("hdr_histograms", self.heap_bytes()))
    }

    fn on_chain(&mut self, rec: &ChainRecord) {
        for s in &rec.segments {
            self.record((rec.chain, s.index), s.duration_ns());
        }
        let complete = rec.outcome == Outcome::Completed;
        let multi = self.shapes.get(rec.chain as usize).and_then(Option::as_ref).is_some_and(|s| s.segments() > 1);
        if complete && multi {
            self.record((rec.chain, 0), rec.total_ns());
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        while now.duration_since(self.rotated_at) >= self.sub_len {
            self.rotated_at += self.sub_len;
            self.current = (self.current + 1) % SUB_WINDOWS;
            for s in self.series.values_mut() {
                s.subs[self.current].reset();
            }
        }
        if now.duration_since(self.published_at) >= Duration::from_secs(1) {
            self.published_at = now;
            self.publish();
        }
    }

    fn finish(&mut self) {
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clockpath_offline::chain::Segment;

    #[test]
    fn quantiles_follow_recorded_segments() {
        let shape =
            ChainShape { name: "c".into(), stages: vec!["a".into(), "b".into()], timeout_ns: 0, causes: Vec::new() };
        let out = SharedQuantiles::default();
        let mut s = HdrSink::new(vec![Some(shape)], vec![0.5, 0.99], 2, Duration::from_secs(60), out.clone());
        for i in 1..=1000u64 {
            let rec = ChainRecord {
                chain: 0,
                instance_id: i,
                key: 0,
                capture: 0,
                cpu: 0,
                cause: 0,
                start_ns: 0,
                end_ns: i * 1000,
                segments: vec![Segment {
                    index: 1,
                    start_ns: 0,
                    end_ns: i * 1000,
                    cpu: 0,
                    slot: 0,
                    interference_ns: [0; 5],
                }],
                outcome: Outcome::Completed,
                session: None,
                labels: Vec::new(),
            };
            s.on_chain(&rec);
        }
        s.finish();
        let snap = out.read().unwrap();
        let (n, qs) = &snap.series[&(0, 1)];
        assert_eq!(*n, 1000);
        assert!((qs[0] - 500e-6).abs() / 500e-6 < 0.02, "{qs:?}");
        assert!((qs[1] - 990e-6).abs() / 990e-6 < 0.02, "{qs:?}");
        assert!(!snap.series.contains_key(&(0, 0)), "no total for a one-segment chain");
        let p99 = snap.p99_ns[&(0, 1)] as f64;
        assert!((p99 - 990e3).abs() / 990e3 < 0.02, "{p99}");
        // Sized to ~1 ms at 2 digits: far below a 1 ns – 1000 s histogram per sub-window.
        let full = Histogram::<u32>::new_with_bounds(1, MAX_NS, 2).unwrap().distinct_values() * 4;
        assert!(s.heap_bytes() < (SUB_WINDOWS + 1) * full / 2, "{} bytes", s.heap_bytes());
    }
}
