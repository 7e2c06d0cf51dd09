//! The userspace data path: ring records → chain assembly → sinks, in one direction.
//!
//! The ring reader (a Tokio task) hands batches to the assembly thread through a bounded
//! channel; if assembly falls behind, whole batches are dropped and counted, and the reader
//! never blocks. Sinks run on the assembly thread and get every `ChainRecord` (and, in raw
//! mode, every stage hit).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use clockpath_common::record::{RECORD_CLOSE, RECORD_HIT, RECORD_SEGMENT, Record};

use clockpath_offline::chain::{ChainRecord, ChainShape, Outcome, assembler::RecordAssembler};

use crate::ktime;

/// A consumer of assembled chains.
pub trait Sink: Send {
    /// One chain instance, completed or closed. Sinks that need chain names get the shapes
    /// when they are built.
    fn on_chain(&mut self, rec: &ChainRecord);
    /// One raw stage hit (raw mode only).
    fn on_hit(&mut self, _rec: &Record) {}
    /// Called at least every `tick` period and after every batch.
    fn tick(&mut self) {}
    /// Called once at shutdown, after the last record.
    fn finish(&mut self) {}
}

/// Userspace counters of the data path, shared with the metrics.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Records read from the ring buffer.
    pub records: AtomicU64,
    pub segment_records: AtomicU64,
    pub close_records: AtomicU64,
    pub hit_records: AtomicU64,
    /// Records dropped in userspace because assembly fell behind.
    pub dropped: AtomicU64,
    /// Chain records handed to sinks.
    pub chains: AtomicU64,
    /// Chain records that were incomplete (records lost or evicted).
    pub incomplete: AtomicU64,
    /// Instances removed by the timeout sweeper.
    pub swept: AtomicU64,
}

/// Handle to the assembly thread.
pub struct Assembly {
    tx: mpsc::SyncSender<Vec<Record>>,
    thread: Option<thread::JoinHandle<Vec<Box<dyn Sink>>>>,
    pub stats: Arc<PipelineStats>,
}

const QUEUE_BATCHES: usize = 256;

impl Assembly {
    /// Start the assembly thread. `shapes[i]` describes chain index `i`.
    pub fn start(
        shapes: Vec<Option<ChainShape>>,
        mut labels: CaptureNames,
        mut sinks: Vec<Box<dyn Sink>>,
        stats: Arc<PipelineStats>,
    ) -> std::io::Result<Assembly> {
        let (tx, rx) = mpsc::sync_channel::<Vec<Record>>(QUEUE_BATCHES);
        let st = stats.clone();
        let thread = thread::Builder::new().name("clockpath-assembly".into()).spawn(move || {
            let mut asm = RecordAssembler::new(shapes);
            let mut last_evict = ktime::monotonic_now_ns();
            loop {
                let batch = match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(b) => Some(b),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                };
                if let Some(batch) = batch {
                    process(&mut asm, &mut labels, &mut sinks, &st, &batch);
                }
                let now = ktime::monotonic_now_ns();
                if now.saturating_sub(last_evict) > 1_000_000_000 {
                    last_evict = now;
                    asm.evict(now, &mut |rec| deliver(&mut labels, &mut sinks, &st, rec));
                }
                for s in &mut sinks {
                    s.tick();
                }
            }
            asm.flush(&mut |rec| deliver(&mut labels, &mut sinks, &st, rec));
            for s in &mut sinks {
                s.finish();
            }
            sinks
        })?;
        Ok(Assembly { tx, thread: Some(thread), stats })
    }

    /// Queue a batch; drops it (counted) when assembly is behind.
    pub fn send(&self, batch: Vec<Record>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        if let Err(mpsc::TrySendError::Full(_) | mpsc::TrySendError::Disconnected(_)) = self.tx.try_send(batch) {
            self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Queue a batch, waiting for room (shutdown's final drain: nothing may be dropped).
    pub fn send_blocking(&self, batch: Vec<Record>) {
        if !batch.is_empty() && self.tx.send(batch).is_err() {
            tracing::error!("assembly thread is gone; final records lost");
        }
    }

    /// Close the queue, wait for every record to be processed, and return the sinks.
    pub fn finish(mut self) -> Vec<Box<dyn Sink>> {
        let Assembly { tx, thread, .. } = &mut self;
        drop(std::mem::replace(tx, mpsc::sync_channel(1).0));
        match thread.take().map(thread::JoinHandle::join) {
            Some(Ok(sinks)) => sinks,
            _ => {
                tracing::error!("assembly thread panicked");
                Vec::new()
            }
        }
    }
}

fn deliver(labels: &mut CaptureNames, sinks: &mut [Box<dyn Sink>], stats: &PipelineStats, mut rec: ChainRecord) {
    labels.apply(&mut rec);
    let rec = &rec;
    stats.chains.fetch_add(1, Ordering::Relaxed);
    if rec.outcome == Outcome::Incomplete {
        stats.incomplete.fetch_add(1, Ordering::Relaxed);
    }
    for s in sinks.iter_mut() {
        s.on_chain(rec);
    }
}

fn process(
    asm: &mut RecordAssembler,
    labels: &mut CaptureNames,
    sinks: &mut [Box<dyn Sink>],
    stats: &PipelineStats,
    batch: &[Record],
) {
    stats.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
    for r in batch {
        match r.kind {
            RECORD_HIT => {
                stats.hit_records.fetch_add(1, Ordering::Relaxed);
                for s in sinks.iter_mut() {
                    s.on_hit(r);
                }
            }
            RECORD_SEGMENT | RECORD_CLOSE => {
                if r.kind == RECORD_SEGMENT {
                    stats.segment_records.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.close_records.fetch_add(1, Ordering::Relaxed);
                }
                asm.push(r, &mut |c| deliver(labels, sinks, stats, c));
            }
            _ => {}
        }
    }
}

/// Names for values captured at stage 0: for chains whose later stage matches the captured
/// value against probe points expanded from a template (`{clocksource_read}`), the point's
/// label (the clocksource) becomes `new_<what>`, and the previous one `old_<what>`.
#[derive(Default)]
pub struct CaptureNames {
    chains: std::collections::HashMap<u8, NamedCapture>,
}

/// What a chain's capture names, the names by capture value, and the last name seen.
struct NamedCapture {
    what: String,
    names: std::collections::HashMap<u64, Arc<str>>,
    last: Option<Arc<str>>,
}

impl CaptureNames {
    /// Add a chain: records whose capture is a key of `names` get `old_<what>`/`new_<what>`;
    /// `initial` is the name in effect before the first record (e.g. the current clocksource).
    pub fn add(
        &mut self,
        chain: u8,
        what: &str,
        names: std::collections::HashMap<u64, Arc<str>>,
        initial: Option<Arc<str>>,
    ) {
        self.chains.insert(chain, NamedCapture { what: what.to_string(), names, last: initial });
    }

    fn apply(&mut self, rec: &mut ChainRecord) {
        let Some(NamedCapture { what, names, last }) = self.chains.get_mut(&rec.chain) else { return };
        let Some(new) = names.get(&rec.capture).cloned() else { return };
        if let Some(old) = last.replace(new.clone()) {
            rec.labels.push((Arc::from(format!("old_{what}")), old));
        }
        rec.labels.push((Arc::from(format!("new_{what}")), new));
    }
}
