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
    /// Heap bytes the sink holds, under a component name (`clockpath_memory_bytes`).
    fn memory(&self) -> Option<(&'static str, usize)> {
        None
    }
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
    /// Heap bytes by component, refreshed by the assembly thread every second.
    pub memory: std::sync::Mutex<Vec<(&'static str, u64)>>,
    /// Bytes of record batches queued for the assembly thread.
    pub queued_bytes: AtomicU64,
    /// Partial instances the assembler emitted incomplete: after their chain's timeout, and
    /// because it held its most.
    pub evicted_timeout: AtomicU64,
    pub evicted_over_cap: AtomicU64,
}

/// Bounds of the assembly thread's state.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of record batches queued at most; a batch beyond is dropped (counted).
    pub queued_bytes: u64,
    /// Partial chain instances held at most.
    pub open_instances: usize,
}

/// Handle to the assembly thread.
pub struct Assembly {
    tx: mpsc::SyncSender<Vec<Record>>,
    /// Emptied batches coming back from the assembly thread, for the reader to fill again:
    /// a steady load then allocates no batch at all, and the heap does not fragment.
    spare: mpsc::Receiver<Vec<Record>>,
    max_queued_bytes: u64,
    thread: Option<thread::JoinHandle<Vec<Box<dyn Sink>>>>,
    pub stats: Arc<PipelineStats>,
}

const QUEUE_BATCHES: usize = 256;
/// Emptied batches kept for reuse.
const SPARE_BATCHES: usize = 4;
/// Capacity of a new batch, in records.
const BATCH_RECORDS: usize = 1024;
/// Capacity a reused batch keeps at most.
const KEPT_BATCH_RECORDS: usize = 8192;

impl Assembly {
    /// Start the assembly thread. `shapes[i]` describes chain index `i`.
    pub fn start(
        shapes: Vec<Option<ChainShape>>,
        mut labels: CaptureNames,
        mut sinks: Vec<Box<dyn Sink>>,
        stats: Arc<PipelineStats>,
        limits: Limits,
    ) -> std::io::Result<Assembly> {
        let (tx, rx) = mpsc::sync_channel::<Vec<Record>>(QUEUE_BATCHES);
        let (spare_tx, spare) = mpsc::sync_channel::<Vec<Record>>(SPARE_BATCHES);
        let st = stats.clone();
        let thread = thread::Builder::new().name("clockpath-assembly".into()).spawn(move || {
            let mut asm = RecordAssembler::with_max_open(shapes, limits.open_instances);
            let mut last_evict = ktime::monotonic_now_ns();
            loop {
                let batch = match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(b) => Some(b),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                };
                if let Some(mut batch) = batch {
                    st.queued_bytes.fetch_sub(batch_bytes(&batch), Ordering::Relaxed);
                    process(&mut asm, &mut labels, &mut sinks, &st, &batch);
                    batch.clear();
                    // A burst's batch is not kept at its size: the pool holds at most
                    // SPARE_BATCHES × KEPT_BATCH_RECORDS records.
                    batch.shrink_to(KEPT_BATCH_RECORDS);
                    // A full pool (the reader is not taking them) frees the batch instead.
                    let _ = spare_tx.try_send(batch);
                }
                let now = ktime::monotonic_now_ns();
                if now.saturating_sub(last_evict) > 1_000_000_000 {
                    last_evict = now;
                    asm.evict(now, &mut |rec| deliver(&mut labels, &mut sinks, &st, rec));
                    asm.shrink();
                    st.evicted_timeout.store(asm.stats.evicted, Ordering::Relaxed);
                    st.evicted_over_cap.store(asm.stats.evicted_over_cap, Ordering::Relaxed);
                    publish_memory(&asm, &sinks, &st);
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
        Ok(Assembly { tx, spare, max_queued_bytes: limits.queued_bytes, thread: Some(thread), stats })
    }

    /// An empty batch to fill: one the assembly thread has finished with, or a new one.
    pub fn empty_batch(&self) -> Vec<Record> {
        self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(BATCH_RECORDS))
    }

    /// Queue a batch; drops it (counted) when assembly is behind.
    pub fn send(&self, batch: Vec<Record>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let bytes = batch_bytes(&batch);
        let queued = self.stats.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        // Bounded in bytes as well as batches: a batch is whatever the ring held, up to all of
        // it, so 256 batches could be gigabytes.
        if queued + bytes > self.max_queued_bytes && queued > 0 {
            self.stats.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.stats.dropped.fetch_add(n, Ordering::Relaxed);
            return;
        }
        if let Err(mpsc::TrySendError::Full(_) | mpsc::TrySendError::Disconnected(_)) = self.tx.try_send(batch) {
            self.stats.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Queue a batch, waiting for room (shutdown's final drain: nothing may be dropped).
    pub fn send_blocking(&self, batch: Vec<Record>) {
        if batch.is_empty() {
            return;
        }
        let bytes = batch_bytes(&batch);
        self.stats.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.tx.send(batch).is_err() {
            self.stats.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
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

fn batch_bytes(batch: &Vec<Record>) -> u64 {
    (batch.capacity() * std::mem::size_of::<Record>()) as u64
}

/// Heap bytes of the assembler and each sink, for `clockpath_memory_bytes`.
fn publish_memory(asm: &RecordAssembler, sinks: &[Box<dyn Sink>], stats: &PipelineStats) {
    let mut m: Vec<(&'static str, u64)> = vec![("assembly", asm.heap_bytes() as u64)];
    for (name, bytes) in sinks.iter().filter_map(|s| s.memory()) {
        match m.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 += bytes as u64,
            None => m.push((name, bytes as u64)),
        }
    }
    if let Ok(mut out) = stats.memory.lock() {
        *out = m;
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
    // Counted per batch, not per record: one atomic add each.
    let (mut hits, mut segments, mut closes) = (0u64, 0u64, 0u64);
    for r in batch {
        match r.kind {
            RECORD_HIT => {
                hits += 1;
                for s in sinks.iter_mut() {
                    s.on_hit(r);
                }
            }
            RECORD_SEGMENT | RECORD_CLOSE => {
                if r.kind == RECORD_SEGMENT {
                    segments += 1;
                } else {
                    closes += 1;
                }
                asm.push(r, &mut |c| deliver(labels, sinks, stats, c));
            }
            _ => {}
        }
    }
    stats.hit_records.fetch_add(hits, Ordering::Relaxed);
    stats.segment_records.fetch_add(segments, Ordering::Relaxed);
    stats.close_records.fetch_add(closes, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use std::{
        sync::mpsc::{Receiver, Sender},
        time::Instant,
    };

    use super::*;

    /// A sink whose `tick` (called after every batch) waits for the test's word: it holds the
    /// assembly thread so that the test knows what is queued.
    struct Gate(std::sync::Mutex<Receiver<()>>);

    impl Sink for Gate {
        fn on_chain(&mut self, _: &ChainRecord) {}
        fn tick(&mut self) {
            if let Ok(rx) = self.0.lock() {
                let _ = rx.recv_timeout(Duration::from_secs(20));
            }
        }
    }

    fn start(queued_bytes: u64) -> (Assembly, Sender<()>) {
        let (open, rx) = mpsc::channel();
        let gate: Box<dyn Sink> = Box::new(Gate(std::sync::Mutex::new(rx)));
        let limits = Limits { queued_bytes, open_instances: 16 };
        let a = Assembly::start(Vec::new(), CaptureNames::default(), vec![gate], Arc::default(), limits)
            .expect("assembly thread");
        (a, open)
    }

    fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::yield_now();
        }
    }

    fn batch(records: usize) -> Vec<Record> {
        let mut b = Vec::with_capacity(records);
        b.resize(records, Record { kind: RECORD_HIT, ..Default::default() });
        b
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_a_batch_beyond_is_dropped_and_counted() {
        let one = batch_bytes(&batch(1024));
        let (a, open) = start(one);
        a.send(batch(1024));
        // Taken by the assembly thread, which now waits in the gate.
        poll("the first batch to be taken", || (a.stats.records.load(Ordering::Relaxed) == 1024).then_some(()));
        a.send(batch(1024));
        assert_eq!(a.stats.queued_bytes.load(Ordering::Relaxed), one, "the second batch is queued");
        a.send(batch(1024));
        assert_eq!(a.stats.dropped.load(Ordering::Relaxed), 1024, "the third is beyond the bound");
        assert_eq!(a.stats.queued_bytes.load(Ordering::Relaxed), one);
        for _ in 0..4 {
            let _ = open.send(());
        }
        let stats = a.stats.clone();
        drop(a.finish());
        assert_eq!(stats.records.load(Ordering::Relaxed), 2048);
        assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn emptied_batches_come_back_for_reuse_and_a_bursts_batch_comes_back_smaller() {
        let (a, open) = start(u64::MAX);
        for _ in 0..8 {
            let _ = open.send(());
        }
        let first = batch(1024);
        let ptr = first.as_ptr();
        a.send(first);
        let back = poll("the batch to come back", || a.spare.try_recv().ok());
        assert_eq!(back.as_ptr(), ptr, "the same allocation");
        assert!(back.is_empty() && back.capacity() >= 1024);

        a.send(batch(100_000));
        let back = poll("the burst's batch to come back", || a.spare.try_recv().ok());
        assert!(back.capacity() < 100_000 && back.capacity() >= KEPT_BATCH_RECORDS, "{}", back.capacity());
        assert_eq!(a.empty_batch().capacity(), BATCH_RECORDS, "a new batch when none is spare");
        drop(a.finish());
    }
}
