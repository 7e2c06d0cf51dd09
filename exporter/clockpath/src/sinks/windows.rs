//! Statistics windows: per chain and session, completed runs are sampled into a bounded
//! uniform reservoir; every interval (or every N completed chains) the window closes and a
//! worker thread computes, per segment and total, the median, its bootstrap CI, the standard
//! deviation, the samples and the rejected outliers. Results go into a snapshot the scrape
//! path reads; a window with no runs removes its series. The assembly thread only samples and
//! hands off; the bootstrap runs on the worker, so it never delays the ring reader.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock, mpsc},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rand::{RngExt as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;
use rustc_hash::FxHashMap;

use clockpath_offline::{
    chain::{ChainRecord, ChainShape, Outcome},
    stats::{self, ColumnStats},
};

use crate::{config::WindowsConfig, pipeline::Sink};

/// One published segment statistic.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentWindow {
    pub segment: String,
    pub stats: ColumnStats,
    /// Outlier runs rejected in this window (the whole run, all segments).
    pub rejected: usize,
    /// Window end, UNIX seconds.
    pub end_unix: f64,
}

/// (chain index, session) → the segments of its last window.
pub type WindowKey = (u8, Option<Arc<str>>);

#[derive(Clone, Debug, Default)]
pub struct WindowSnapshot {
    pub windows: BTreeMap<WindowKey, Vec<SegmentWindow>>,
    /// Windows computed so far (for tests and logs).
    pub computed: u64,
    /// Windows dropped uncomputed because the worker was still busy with earlier ones.
    pub skipped: u64,
}

/// Closed windows waiting for the worker at most: each holds a whole reservoir.
const PENDING_JOBS: usize = 4;

pub type SharedWindows = Arc<RwLock<WindowSnapshot>>;

/// A window's sample of runs, flat: run `r` is `values[r * cols..(r + 1) * cols]`, its segment
/// durations (ns) then the total. It grows with the runs that arrive, up to the cap.
struct Reservoir {
    values: Vec<f64>,
    cols: usize,
    seen: u64,
}

impl Reservoir {
    fn len(&self) -> usize {
        self.values.len() / self.cols.max(1)
    }

    fn bytes(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<f64>()
    }
}

struct Job {
    key: WindowKey,
    columns: Vec<String>,
    reference: usize,
    /// Flat runs, `columns.len()` values each.
    values: Vec<f64>,
    end_unix: f64,
}

pub struct WindowSink {
    shapes: Vec<Option<ChainShape>>,
    references: Vec<usize>,
    cfg: WindowsConfig,
    open: FxHashMap<WindowKey, Reservoir>,
    /// Published keys and when their window last closed.
    published: FxHashMap<WindowKey, Instant>,
    started: Instant,
    rng: Xoshiro256PlusPlus,
    tx: Option<mpsc::SyncSender<Job>>,
    out: SharedWindows,
    worker: Option<thread::JoinHandle<()>>,
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// 0-based index of the segment outliers are judged on (`windows.reference`, default the first).
pub fn reference_segment(shape: &ChainShape, cfg: &WindowsConfig) -> usize {
    cfg.reference
        .get(&shape.name)
        .and_then(|wanted| (1..=shape.segments() as u8).position(|i| &shape.segment_name(i) == wanted))
        .unwrap_or(0)
}

impl WindowSink {
    pub fn new(shapes: Vec<Option<ChainShape>>, cfg: WindowsConfig, out: SharedWindows) -> std::io::Result<WindowSink> {
        let references = shapes.iter().map(|s| s.as_ref().map_or(0, |s| reference_segment(s, &cfg))).collect();
        let (tx, rx) = mpsc::sync_channel::<Job>(PENDING_JOBS);
        let shared = out.clone();
        let boot = cfg.bootstrap;
        let sigma = cfg.sigma;
        let worker = thread::Builder::new().name("clockpath-windows".into()).spawn(move || {
            // It only computes: no capability (`clockpath run` checks every thread's).
            crate::privileges::drop_thread_or_log(&[], "windows");
            for job in rx {
                let result = compute(&job, sigma, &boot);
                let Job { key, values, .. } = job;
                // The window's runs and columns were the largest allocations of this thread's
                // arena: hand the pages back.
                drop(values);
                crate::process::release_freed_memory();
                let Ok(mut snap) = out.write() else { return };
                snap.computed += 1;
                match result {
                    Some(segs) if !segs.is_empty() => {
                        snap.windows.insert(key, segs);
                    }
                    _ => {
                        snap.windows.remove(&key);
                    }
                }
            }
        })?;
        Ok(WindowSink {
            shapes,
            references,
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.bootstrap.seed),
            cfg,
            open: FxHashMap::default(),
            published: FxHashMap::default(),
            started: Instant::now(),
            tx: Some(tx),
            out: shared,
            worker: Some(worker),
        })
    }

    fn close(&mut self, key: WindowKey, now: Instant) {
        let Some(res) = self.open.remove(&key) else { return };
        self.published.insert(key.clone(), now);
        let Some(shape) = self.shapes.get(key.0 as usize).and_then(Option::as_ref) else { return };
        let mut columns: Vec<String> = (1..=shape.segments() as u8).map(|i| shape.segment_name(i)).collect();
        if shape.segments() > 1 {
            columns.push("total".into());
        }
        let reference = self.references[key.0 as usize];
        let job = Job { key, columns, reference, values: res.values, end_unix: now_unix() };
        self.send(job);
    }

    /// Hand a job to the worker without waiting; a full queue drops it (counted).
    fn send(&mut self, job: Job) {
        let Some(tx) = &self.tx else { return };
        if let Err(mpsc::TrySendError::Full(job)) = tx.try_send(job) {
            tracing::warn!(chain = job.key.0, "statistics worker behind: window skipped");
            if let Ok(mut snap) = self.out.write() {
                snap.skipped += 1;
            }
        }
    }

    fn close_all(&mut self, now: Instant) {
        let keys: Vec<WindowKey> = self.open.keys().cloned().collect();
        for k in keys {
            self.close(k, now);
        }
    }

    /// The interval tick at time `now` (the clock is injected so tests need not wait).
    fn tick_at(&mut self, now: Instant) {
        if now.saturating_duration_since(self.started) < Duration::from_secs(self.cfg.interval_secs) {
            return;
        }
        let interval_start = self.started;
        self.started = now;
        // A published key whose window got no run during the whole interval: an empty window
        // publishes nothing and removes its stale series.
        let stale: Vec<WindowKey> = self
            .published
            .iter()
            .filter(|(k, closed)| !self.open.contains_key(*k) && **closed < interval_start)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.published.remove(&key);
            if let Some(tx) = &self.tx {
                let _ =
                    tx.send(Job { key, columns: Vec::new(), reference: 0, values: Vec::new(), end_unix: now_unix() });
            }
        }
        self.close_all(now);
    }
}

/// Per-segment statistics of a closed window; None when it had no runs.
fn compute(job: &Job, sigma: f64, boot: &stats::Bootstrap) -> Option<Vec<SegmentWindow>> {
    let ncol = job.columns.len();
    if job.values.is_empty() || ncol == 0 {
        return None;
    }
    let columns: Vec<Vec<f64>> =
        (0..ncol).map(|c| job.values.iter().skip(c).step_by(ncol).map(|v| v / 1e9).collect()).collect();
    match stats::analyze_runs(&columns, job.reference, sigma, boot) {
        Ok(a) => Some(
            job.columns
                .iter()
                .zip(a.columns)
                .filter(|(_, c)| c.n > 0 && c.median.is_finite() && c.std_dev.is_finite())
                .map(|(name, c)| SegmentWindow {
                    segment: name.clone(),
                    stats: c,
                    rejected: a.rejection.rejected,
                    end_unix: job.end_unix,
                })
                .collect(),
        ),
        Err(error) => {
            tracing::warn!(%error, chain = job.key.0, "window statistics failed");
            None
        }
    }
}

impl Sink for WindowSink {
    fn memory(&self) -> Option<(&'static str, usize)> {
        Some(("window_reservoirs", self.open.values().map(Reservoir::bytes).sum()))
    }

    fn on_chain(&mut self, rec: &ChainRecord) {
        if rec.outcome != Outcome::Completed {
            return;
        }
        let Some(shape) = self.shapes.get(rec.chain as usize).and_then(Option::as_ref) else { return };
        let multi = shape.segments() > 1;
        let cols = rec.segments.len() + multi as usize;
        let key = (rec.chain, rec.session.clone());
        let cap = self.cfg.reservoir;
        let res = self.open.entry(key.clone()).or_insert_with(|| Reservoir { values: Vec::new(), cols, seen: 0 });
        if res.cols != cols {
            // A completed run has every segment: this cannot differ within a chain.
            return;
        }
        res.seen += 1;
        // Algorithm R: keep each of the `seen` runs with probability cap / seen.
        let slot = if res.len() < cap {
            res.values.resize(res.values.len() + cols, 0.0);
            Some(res.len() - 1)
        } else {
            let j = self.rng.random_range(0..res.seen) as usize;
            (j < cap).then_some(j)
        };
        if let Some(r) = slot {
            let row = &mut res.values[r * cols..(r + 1) * cols];
            for (v, s) in row.iter_mut().zip(&rec.segments) {
                *v = s.duration_ns() as f64;
            }
            if multi {
                row[cols - 1] = rec.total_ns() as f64;
            }
        }
        if self.cfg.every_chains > 0 && res.seen >= self.cfg.every_chains {
            self.close(key, Instant::now());
        }
    }

    fn tick(&mut self) {
        self.tick_at(Instant::now());
    }

    fn finish(&mut self) {
        self.close_all(Instant::now());
        drop(self.tx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clockpath_offline::chain::Segment;

    fn cfg(interval_secs: u64, every_chains: u64, reservoir: usize) -> WindowsConfig {
        WindowsConfig {
            interval_secs,
            every_chains,
            reservoir,
            sigma: 3.0,
            reference: BTreeMap::new(),
            bootstrap: stats::Bootstrap { resamples: 100, ..Default::default() },
        }
    }

    fn shape() -> Vec<Option<ChainShape>> {
        vec![Some(ChainShape {
            name: "c".into(),
            stages: vec!["a".into(), "b".into(), "c".into()],
            timeout_ns: 0,
            causes: Vec::new(),
        })]
    }

    fn run(i: u64, session: Option<&str>) -> ChainRecord {
        ChainRecord {
            chain: 0,
            instance_id: i,
            key: 0,
            capture: 0,
            cpu: 0,
            cause: 0,
            start_ns: 0,
            end_ns: 3000 + i % 100,
            segments: vec![
                Segment { index: 1, start_ns: 0, end_ns: 1000 + i % 50, cpu: 0, slot: 0, interference_ns: [0; 5] },
                Segment {
                    index: 2,
                    start_ns: 1000 + i % 50,
                    end_ns: 3000 + i % 100,
                    cpu: 0,
                    slot: 0,
                    interference_ns: [0; 5],
                },
            ],
            outcome: Outcome::Completed,
            session: session.map(Arc::from),
            labels: Vec::new(),
        }
    }

    fn wait_computed(out: &SharedWindows, n: u64) {
        for _ in 0..200 {
            if out.read().unwrap().computed >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("window worker did not compute {n} windows");
    }

    #[test]
    fn a_window_of_runs_publishes_every_segment_and_the_total() {
        let out = SharedWindows::default();
        let mut w = WindowSink::new(shape(), cfg(3600, 300, 50_000), out.clone()).unwrap();
        for i in 0..300 {
            w.on_chain(&run(i, Some("s1")));
        }
        wait_computed(&out, 1);
        let snap = out.read().unwrap();
        let segs = &snap.windows[&(0, Some(Arc::from("s1")))];
        let names: Vec<&str> = segs.iter().map(|s| s.segment.as_str()).collect();
        assert_eq!(names, ["a->b", "b->c", "total"]);
        for s in segs {
            let ci = s.stats.ci.unwrap();
            assert!(ci.lower <= s.stats.median && s.stats.median <= ci.upper);
            assert_eq!(s.stats.n, 300);
            assert!(s.stats.reliable);
        }
        drop(snap);
        w.finish();
    }

    #[test]
    fn the_reservoir_bounds_memory_and_empty_windows_remove_their_series() {
        let out = SharedWindows::default();
        let mut w = WindowSink::new(shape(), cfg(1, 0, 64), out.clone()).unwrap();
        for i in 0..10_000 {
            w.on_chain(&run(i, None));
        }
        assert_eq!(w.open[&(0, None)].len(), 64);
        assert_eq!(w.open[&(0, None)].seen, 10_000);
        let t0 = w.started;
        w.tick_at(t0 + Duration::from_millis(900));
        assert!(w.open.contains_key(&(0, None)), "the 1 s window is still open");
        w.tick_at(t0 + Duration::from_millis(1100));
        wait_computed(&out, 1);
        assert_eq!(out.read().unwrap().windows[&(0, None)][0].stats.n, 64);
        // A whole interval with no run: the series goes.
        w.tick_at(t0 + Duration::from_millis(2200));
        w.tick_at(t0 + Duration::from_millis(3300));
        wait_computed(&out, 2);
        assert!(out.read().unwrap().windows.is_empty(), "stale window series must be removed");
        w.finish();
    }

    #[test]
    fn incomplete_chains_stay_out_of_windows() {
        let out = SharedWindows::default();
        let mut w = WindowSink::new(shape(), cfg(3600, 0, 100), out).unwrap();
        let mut r = run(1, None);
        r.outcome = Outcome::TimedOut;
        w.on_chain(&r);
        assert!(w.open.is_empty());
        w.finish();
    }
}
