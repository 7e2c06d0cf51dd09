//! The recorder sink: stage hits to trace files (`[recorder]`), rotated by size.
//!
//! With `probe.raw_hits` it records every raw stage hit (including hits with no open
//! instance); otherwise the stage hits of every assembled chain instance. Files are written
//! line-atomically (see `TraceWriter`) and flushed and synced when the exporter stops (SIGINT,
//! SIGTERM), so every file ends with a complete line. Parquet files are written as
//! `NAME.parquet.partial` and renamed when closed (at rotation or stop): a `.parquet` file is
//! always whole.
//!
//! A write that fails (a full disk) costs the lines buffered at the time, counted in
//! [`RecorderStats`], and never a half line: the file is cut back to its last complete line.
//! Recording goes on, so it resumes by itself once there is room; the failure is logged when
//! it starts and when writes work again.

use std::{
    collections::{BTreeMap, VecDeque},
    fs, io,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clockpath_common::{record::Record, slot::CLOCK_NAMES};

use clockpath_offline::{
    chain::{ChainRecord, ChainShape},
    trace::{CLOCK_LABEL, CsvColumns, TraceHit, TraceWriter, hits_of},
};

use crate::{config::RecorderConfig, pipeline::Sink, pps::TimeReference};

/// What the recorder counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Lines recorded (those lost later included).
    pub lines: AtomicU64,
    /// Lines lost to failed writes, or recorded while no file could be opened.
    pub lines_dropped: AtomicU64,
    /// Failed writes, flushes, rotations.
    pub errors: AtomicU64,
}

/// Whether the recorder's writes fail, changed only by what proves it: any failure starts a
/// failing state, and only a write that reached the file (a flush) ends it — a write into
/// the buffer succeeds on a full disk too, and logging it as recovery made the log alternate
/// "failed" / "works again" every second.
#[derive(Debug, Default)]
struct WriteHealth {
    failing: bool,
}

impl WriteHealth {
    /// Record an outcome; `Some(failing)` when the state changed (log it), None otherwise.
    fn record(&mut self, ok: bool, reached_file: bool) -> Option<bool> {
        let failing = if ok { self.failing && !reached_file } else { true };
        (failing != self.failing).then(|| {
            self.failing = failing;
            failing
        })
    }
}

/// How often opening a file is retried while none is open.
const RETRY_OPEN: Duration = Duration::from_secs(5);

pub struct Recorder {
    cfg: RecorderConfig,
    stats: Arc<RecorderStats>,
    /// Whether writes are failing (to log changes of state, not every failure).
    health: WriteHealth,
    /// When to try opening a file again, while none is open.
    retry_at: Option<Instant>,
    env: String,
    shapes: Vec<Option<ChainShape>>,
    /// slot → (chain index, stage name) for raw hits.
    slots: BTreeMap<u32, (u8, String)>,
    /// Labels every hit carries (the configured static labels), and the CSV columns.
    labels: Vec<(String, String)>,
    columns: CsvColumns,
    writer: Option<TraceWriter>,
    /// The newest files, when old ones are deleted (`keep_files`).
    files: VecDeque<PathBuf>,
    /// Files written.
    written: u64,
    seq: u64,
    last_flush: Instant,
    /// Puts each hit on reference time (`reference_ns`, and the `reference` label).
    reference: Arc<TimeReference>,
    /// Chain → stage → clock, for chains with a stage stamped on another clock than
    /// CLOCK_MONOTONIC: their hits carry the `clock` label.
    stage_clocks: BTreeMap<String, BTreeMap<String, String>>,
    /// This exporter run's id ([`run_id`]), the `session_id` of every line it writes: a run of
    /// the exporter is one session (one boot, one placement), the unit `compare` counts; the
    /// files of one run (rotations) share it, and two runs never do.
    run_id: String,
}

/// `<hostname>-<boot>-<start, UTC>-<pid>`: unique per run of the exporter (the boot id's first
/// 8 hex digits tell apart identical machines — VMs of one image have the same hostname and
/// start the exporter under the same pid), readable in a report.
fn run_id() -> String {
    let read = |p: &str| fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    let host = read("/proc/sys/kernel/hostname");
    let boot: String =
        read("/proc/sys/kernel/random/boot_id").chars().filter(char::is_ascii_hexdigit).take(8).collect();
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "");
    format!("{}-{boot}-{stamp}-{}", if host.is_empty() { "host" } else { &host }, std::process::id())
}

impl Recorder {
    /// `labels`: on every hit; `columns`: what CSV files have beyond the base columns (the
    /// labels' keys and whatever labels chain records carry, interference when a chain charges
    /// it).
    pub fn new(
        cfg: RecorderConfig,
        env: String,
        shapes: Vec<Option<ChainShape>>,
        slots: BTreeMap<u32, (u8, String)>,
        labels: Vec<(String, String)>,
        columns: CsvColumns,
        reference: Arc<TimeReference>,
    ) -> io::Result<Recorder> {
        // Created if missing; refused when others could plant links or files there.
        clockpath_offline::outfile::ensure_dir(&cfg.dir)?;
        // A Parquet file still named `.partial` was open when a recorder died: it has no
        // footer, so nothing can read it. Say so once rather than leave it unexplained.
        if let Ok(entries) = fs::read_dir(&cfg.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".parquet.partial") {
                    tracing::warn!(file = %e.path().display(), "left by a recorder that did not stop cleanly: unreadable (no Parquet footer)");
                }
            }
        }
        let mut r = Recorder {
            cfg,
            stats: Arc::default(),
            health: WriteHealth::default(),
            retry_at: None,
            env,
            shapes,
            slots,
            labels,
            columns,
            writer: None,
            files: VecDeque::new(),
            written: 0,
            seq: 0,
            last_flush: Instant::now(),
            reference,
            stage_clocks: BTreeMap::new(),
            run_id: run_id(),
        };
        r.rotate()?;
        Ok(r)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(w) = self.writer.take() {
            let pending = w.pending_lines();
            let finished = w.finish();
            self.outcome(pending, finished, "final flush");
        }
        self.seq += 1;
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "");
        let path = self.cfg.dir.join(format!("traces-{stamp}-{:04}.{}", self.seq, self.cfg.format.extension()));
        // A removed directory is made again (and checked again); the file is new, never one
        // already there under the name.
        clockpath_offline::outfile::ensure_dir(&self.cfg.dir)?;
        self.writer = Some(TraceWriter::new_with_columns(&path, self.cfg.format, self.columns.clone())?);
        // Only a bounded number of files is remembered: the ones that may have to be deleted.
        if self.cfg.keep_files > 0 {
            self.files.push_back(path);
        }
        self.written += 1;
        while self.cfg.keep_files > 0 && self.files.len() > self.cfg.keep_files {
            if let Some(old) = self.files.pop_front() {
                let _ = fs::remove_file(old);
            }
        }
        Ok(())
    }

    /// What this recorder counts.
    pub fn stats(&self) -> Arc<RecorderStats> {
        self.stats.clone()
    }

    /// Count the outcome of a write or flush that had `pending` lines buffered before it.
    fn outcome(&mut self, pending: u64, result: io::Result<()>, what: &str) {
        // A buffered write proves nothing about the file; a flush does.
        let reached_file = what != "write";
        if let Err(error) = &result {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            self.stats.lines_dropped.fetch_add(pending, Ordering::Relaxed);
            if self.health.record(false, reached_file) == Some(true) {
                let path = self.writer.as_ref().map(|w| w.path().display().to_string()).unwrap_or_default();
                tracing::error!(%error, %path, "recorder {what} failed: lines are dropped and counted until writes work again");
            }
        } else if self.health.record(true, reached_file) == Some(false) {
            tracing::info!("recorder writes work again");
        }
    }

    /// Label the hits of chains with stages on other clocks than CLOCK_MONOTONIC with their
    /// stage's clock (chain → stage → clock).
    pub fn with_stage_clocks(mut self, clocks: BTreeMap<String, BTreeMap<String, String>>) -> Self {
        self.stage_clocks = clocks;
        self
    }

    fn write(&mut self, hit: &mut TraceHit) {
        match self.stage_clocks.get(&hit.chain).and_then(|s| s.get(&hit.probe_name)) {
            Some(clock) => {
                hit.labels.insert(CLOCK_LABEL.to_string(), clock.clone());
                // Reference time is derived from CLOCK_MONOTONIC: a stamp on another clock has
                // none.
                if clock == CLOCK_NAMES[0] {
                    self.reference.stamp(hit);
                }
            }
            None => self.reference.stamp(hit),
        }
        if self.writer.is_none() && self.retry_at.is_some_and(|t| Instant::now() >= t) {
            // No file is open (a rotation failed): try again, every few seconds.
            self.retry_at = None;
            if let Err(error) = self.rotate() {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.retry_at = Some(Instant::now() + RETRY_OPEN);
                tracing::debug!(%error, "recorder: still no file");
            }
        }
        let Some(w) = self.writer.as_mut() else {
            self.stats.lines.fetch_add(1, Ordering::Relaxed);
            self.stats.lines_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let pending = w.pending_lines() + 1;
        let result = w.write(hit);
        self.stats.lines.fetch_add(1, Ordering::Relaxed);
        self.outcome(pending, result, "write");
        if self.cfg.rotate_bytes > 0
            && self.writer.as_ref().is_some_and(|w| w.bytes() >= self.cfg.rotate_bytes)
            && let Err(error) = self.rotate()
        {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            self.retry_at = Some(Instant::now() + RETRY_OPEN);
            tracing::error!(%error, "recorder: cannot open the next file; lines are dropped and counted until one opens");
        }
    }
}

impl Sink for Recorder {
    fn memory(&self) -> Option<(&'static str, usize)> {
        Some(("recorder", self.writer.as_ref().map_or(0, TraceWriter::memory_bytes)))
    }

    fn on_chain(&mut self, rec: &ChainRecord) {
        if !self.slots.is_empty() {
            return;
        }
        let Some(shape) = self.shapes.get(rec.chain as usize).and_then(Option::as_ref).cloned() else { return };
        for mut hit in hits_of(rec, &shape, &self.env, &self.labels) {
            if hit.session_id.is_empty() {
                hit.session_id.clone_from(&self.run_id);
            }
            self.write(&mut hit);
        }
    }

    fn on_hit(&mut self, r: &Record) {
        let Some((chain, stage)) = self.slots.get(&(r.slot as u32)).cloned() else { return };
        let chain_name =
            self.shapes.get(chain as usize).and_then(Option::as_ref).map(|s| s.name.clone()).unwrap_or_default();
        let mut hit = TraceHit {
            timestamp_ns: r.end_ns,
            probe_name: stage,
            session_id: self.run_id.clone(),
            cpu_id: r.cpu as u32,
            delta_chain_id: r.instance_id,
            chain: chain_name,
            env: self.env.clone(),
            interference_ns: None,
            reference_ns: None,
            labels: self.labels.iter().cloned().collect(),
        };
        self.write(&mut hit);
    }

    fn tick(&mut self) {
        // Whole lines reach the file at least every second.
        if self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.last_flush = Instant::now();
            if let Some(w) = self.writer.as_mut() {
                let pending = w.pending_lines();
                let result = w.flush();
                self.outcome(pending, result, "flush");
            }
        }
    }

    fn finish(&mut self) {
        if let Some(w) = self.writer.take()
            && let Err(error) = w.finish()
        {
            tracing::error!(%error, "recorder: final flush failed");
        }
        tracing::info!(
            lines = self.stats.lines.load(Ordering::Relaxed),
            dropped = self.stats.lines_dropped.load(Ordering::Relaxed),
            files = self.written,
            "recorder closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::WriteHealth;

    #[test]
    fn a_full_disk_is_one_failure_and_only_a_flush_ends_it() {
        let mut h = WriteHealth::default();
        // Buffered writes succeed, every flush fails (ENOSPC), once a second for a minute.
        let mut changes = Vec::new();
        for _ in 0..60 {
            for _ in 0..100 {
                changes.extend(h.record(true, false));
            }
            changes.extend(h.record(false, true));
        }
        assert_eq!(changes, [true], "one change to failing, never back on a buffered write");
        // Space again: the next flush succeeds.
        changes.extend(h.record(true, false));
        changes.extend(h.record(true, true));
        assert_eq!(changes, [true, false]);
        // A write that fails (the buffer could not be emptied) starts it again.
        assert_eq!(h.record(false, false), Some(true));
    }
}
