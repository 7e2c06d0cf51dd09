//! The recorder sink: stage hits to trace files (`[recorder]`), rotated by size.
//!
//! With `probe.raw_hits` it records every raw stage hit (including hits with no open
//! instance); otherwise the stage hits of every assembled chain instance. Files are written
//! line-atomically (see `TraceWriter`) and flushed and synced when the exporter stops (SIGINT,
//! SIGTERM), so every file ends with a complete line. Parquet files are written as
//! `NAME.parquet.partial` and renamed when closed (at rotation or stop): a `.parquet` file is
//! always whole.

use std::{
    collections::{BTreeMap, VecDeque},
    fs, io,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use clockpath_common::record::Record;

use clockpath_offline::{
    chain::{ChainRecord, ChainShape},
    trace::{CsvColumns, TraceHit, TraceWriter, hits_of},
};

use crate::{config::RecorderConfig, pipeline::Sink, pps::TimeReference};

pub struct Recorder {
    cfg: RecorderConfig,
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
    /// Lines written, for logs and tests.
    pub lines: u64,
    /// Puts each hit on reference time (`reference_ns`, and the `reference` label).
    reference: Arc<TimeReference>,
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
        fs::create_dir_all(&cfg.dir)?;
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
            lines: 0,
            reference,
        };
        r.rotate()?;
        Ok(r)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(w) = self.writer.take() {
            w.finish()?;
        }
        self.seq += 1;
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "");
        let path = self.cfg.dir.join(format!("traces-{stamp}-{:04}.{}", self.seq, self.cfg.format.extension()));
        self.writer = Some(TraceWriter::with_columns(&path, self.cfg.format, self.columns.clone())?);
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

    fn write(&mut self, hit: &mut TraceHit) {
        self.reference.stamp(hit);
        let Some(w) = self.writer.as_mut() else { return };
        if let Err(error) = w.write(hit) {
            tracing::error!(%error, path = %w.path().display(), "recorder write failed; recording stops");
            self.writer = None;
            return;
        }
        self.lines += 1;
        if self.cfg.rotate_bytes > 0 && w.bytes() >= self.cfg.rotate_bytes {
            let _ = w.flush();
            if let Err(error) = self.rotate() {
                tracing::error!(%error, "recorder rotation failed; recording stops");
                self.writer = None;
            }
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
            session_id: String::new(),
            cpu_id: r.cpu,
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
                let _ = w.flush();
            }
        }
    }

    fn finish(&mut self) {
        if let Some(w) = self.writer.take()
            && let Err(error) = w.finish()
        {
            tracing::error!(%error, "recorder: final flush failed");
        }
        tracing::info!(lines = self.lines, files = self.written, "recorder closed");
    }
}
