//! Sliding-window quantiles of segment durations from ring records, with HDR histograms.
//!
//! Each (chain, segment) has `SUB_WINDOWS` HDR histograms covering `window / SUB_WINDOWS`
//! each; the oldest is cleared as the window slides. Quantiles are recomputed once per
//! sub-window tick (and at least every second) into a snapshot the scrape path reads, so a
//! scrape never merges histograms.

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
    subs: Vec<Histogram<u64>>,
}

pub struct HdrSink {
    shapes: Vec<Option<ChainShape>>,
    quantiles: Vec<f64>,
    sub_len: Duration,
    current: usize,
    rotated_at: Instant,
    published_at: Instant,
    series: BTreeMap<SeriesKey, Series>,
    out: SharedQuantiles,
}

fn new_hist() -> Histogram<u64> {
    // Two significant digits: 1 % resolution, ~35 KiB per histogram.
    #[expect(clippy::expect_used, reason = "constant, valid bounds")]
    Histogram::new_with_bounds(1, MAX_NS, 2).expect("valid HDR bounds")
}

impl HdrSink {
    pub fn new(shapes: Vec<Option<ChainShape>>, quantiles: Vec<f64>, window: Duration, out: SharedQuantiles) -> Self {
        let now = Instant::now();
        if let Ok(mut o) = out.write() {
            o.quantiles = quantiles.clone();
        }
        HdrSink {
            shapes,
            quantiles,
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
        let s =
            self.series.entry(key).or_insert_with(|| Series { subs: (0..SUB_WINDOWS).map(|_| new_hist()).collect() });
        s.subs[cur].saturating_record(ns.clamp(1, MAX_NS));
    }

    fn publish(&mut self) {
        let mut snap =
            QuantileSnapshot { quantiles: self.quantiles.clone(), series: BTreeMap::new(), p99_ns: BTreeMap::new() };
        let mut merged = new_hist();
        for (key, s) in &self.series {
            merged.reset();
            for h in &s.subs {
                // Same bounds and precision, so adding cannot fail.
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

impl Sink for HdrSink {
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
        let shape = ChainShape { name: "c".into(), stages: vec!["a".into(), "b".into()], timeout_ns: 0 };
        let out = SharedQuantiles::default();
        let mut s = HdrSink::new(vec![Some(shape)], vec![0.5, 0.99], Duration::from_secs(60), out.clone());
        for i in 1..=1000u64 {
            let rec = ChainRecord {
                chain: 0,
                instance_id: i,
                key: 0,
                capture: 0,
                cpu: 0,
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
    }
}
