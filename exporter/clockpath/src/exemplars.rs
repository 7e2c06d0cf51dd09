//! Exemplars: for each bucket of the segment-duration histograms, the trace id of the last
//! exported chain instance whose segment fell in it, so a dashboard can jump from a histogram
//! bucket to the trace. The OTLP sink writes them after a successful export; the metrics
//! endpoint reads them (`exposition::openmetrics`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use clockpath_common::hist::{bucket_le_ns, bucket_of};

/// One exemplar, ready to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exemplar {
    pub trace_id: String,
    pub span_id: String,
    /// The segment's duration.
    pub value_ns: u64,
    /// When the segment ended, UNIX ns.
    pub at_unix_ns: u64,
}

/// (chain, segment) → one slot per configured bucket, +Inf last.
type Slots = HashMap<(Arc<str>, Arc<str>), Vec<Option<Exemplar>>>;

/// The latest exemplar of every bucket.
#[derive(Debug)]
pub struct ExemplarStore {
    /// Kernel bucket index of each configured `le` (as the Prometheus sink re-bins).
    le_buckets: Vec<usize>,
    /// The same bounds in seconds, as the encoder prints them.
    le_seconds: Vec<f64>,
    slots: Mutex<Slots>,
}

impl ExemplarStore {
    pub fn new(le_buckets: Vec<usize>) -> ExemplarStore {
        let le_seconds = le_buckets.iter().map(|&i| bucket_le_ns(i as u32).unwrap_or(0) as f64 / 1e9).collect();
        ExemplarStore { le_buckets, le_seconds, slots: Mutex::new(HashMap::new()) }
    }

    /// Configured bucket (index into the `le` list; the list's length for +Inf) of `ns`.
    pub fn bucket(&self, ns: u64) -> usize {
        let kernel = bucket_of(ns) as usize;
        self.le_buckets.iter().position(|&b| b >= kernel).unwrap_or(self.le_buckets.len())
    }

    /// Remember `e` as the exemplar of its bucket for (chain, segment).
    pub fn put(&self, chain: &Arc<str>, segment: &Arc<str>, e: Exemplar) {
        let b = self.bucket(e.value_ns);
        let n = self.le_buckets.len() + 1;
        if let Ok(mut slots) = self.slots.lock() {
            let v = slots.entry((chain.clone(), segment.clone())).or_insert_with(|| vec![None; n]);
            v[b] = Some(e);
        }
    }

    /// The exemplar of (chain, segment, bucket), if any.
    pub fn get(&self, chain: &str, segment: &str, bucket: usize) -> Option<Exemplar> {
        let slots = self.slots.lock().ok()?;
        slots.get(&(Arc::from(chain), Arc::from(segment)))?.get(bucket)?.clone()
    }

    /// Configured bucket of an encoded `le` label.
    fn bucket_of_le(&self, le: &str) -> Option<usize> {
        if le == "+Inf" {
            return Some(self.le_seconds.len());
        }
        let v: f64 = le.parse().ok()?;
        self.le_seconds.iter().position(|&b| (b - v).abs() <= b * 1e-12)
    }

    /// A consistent view of every exemplar, for one scrape (`None` if the lock is poisoned).
    pub fn read(&self) -> Option<ExemplarsView<'_>> {
        Some(ExemplarsView { store: self, slots: self.slots.lock().ok()? })
    }
}

/// The exemplars under one lock, looked up by the labels of a bucket line.
pub struct ExemplarsView<'a> {
    store: &'a ExemplarStore,
    slots: std::sync::MutexGuard<'a, Slots>,
}

impl ExemplarsView<'_> {
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The exemplar of the bucket whose `le` label is `le` (as encoded, e.g. `1.024e-6` or
    /// `+Inf`).
    pub fn by_le(&self, chain: &str, segment: &str, le: &str) -> Option<&Exemplar> {
        let b = self.store.bucket_of_le(le)?;
        self.slots.get(&(Arc::from(chain), Arc::from(segment)))?.get(b)?.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ExemplarStore {
        let bounds = [1.024e-6, 2.048e-6, 4.096e-6];
        ExemplarStore::new(bounds.iter().map(|b| clockpath_common::hist::le_index(*b).unwrap()).collect())
    }

    fn ex(value_ns: u64) -> Exemplar {
        Exemplar { trace_id: "t".into(), span_id: "s".into(), value_ns, at_unix_ns: 1 }
    }

    #[test]
    fn buckets_match_the_rebinning() {
        let s = store();
        assert_eq!(s.bucket(1), 0);
        assert_eq!(s.bucket(1024), 0, "le is inclusive");
        assert_eq!(s.bucket(1025), 1);
        assert_eq!(s.bucket(4096), 2);
        assert_eq!(s.bucket(4097), 3, "+Inf");
    }

    #[test]
    fn the_latest_exemplar_of_a_bucket_is_found_by_its_le_label() {
        let s = store();
        let (chain, seg) = (Arc::from("c"), Arc::from("a->b"));
        s.put(&chain, &seg, ex(1500));
        s.put(&chain, &seg, ex(1600));
        s.put(&chain, &seg, ex(9000));
        let view = s.read().unwrap();
        assert_eq!(view.by_le("c", "a->b", "2.048e-6").map(|e| e.value_ns), Some(1600));
        assert_eq!(view.by_le("c", "a->b", "+Inf").map(|e| e.value_ns), Some(9000));
        assert!(view.by_le("c", "a->b", "1.024e-6").is_none());
        assert!(view.by_le("other", "a->b", "+Inf").is_none());
        assert!(view.by_le("c", "a->b", "3e-6").is_none(), "not a configured bound");
    }
}
