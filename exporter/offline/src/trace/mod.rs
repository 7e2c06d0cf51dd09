//! Raw trace files: one row per stage hit, with the fields
//! `timestamp_ns, probe_name, session_id, cpu_id, delta_chain_id` (plus `chain` and `env`),
//! as CSV, JSON Lines or Parquet. Optional columns: the interference charged to a segment,
//! `reference_ns` (the hit's instant on a reference time scale, e.g. PPS-disciplined), and
//! labels.
//!
//! Text writing is line-atomic: whole lines are buffered and handed to the kernel in one
//! `write` each, so a reader only ever sees complete lines — except after a crash in the
//! middle of a write, which the reader detects (a last line without its newline) and reports.
//! Parquet files are whole or not there (see `parquet`).

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::chain::{ChainRecord, ChainShape};

pub mod parquet;
pub mod read;

/// File format of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    Parquet,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }

    /// By name (`csv`, `jsonl`, `parquet`).
    pub fn parse(s: &str) -> Option<Format> {
        [Format::Csv, Format::Jsonl, Format::Parquet].into_iter().find(|f| f.extension() == s)
    }
}

/// Read `path`, calling `on_hit` for every hit until it says stop. `progress` is called with
/// bytes read.
pub fn read_file(
    path: &Path,
    opts: read::ReadOptions,
    names: &mut read::Interner,
    stats: &mut read::ReadStats,
    on_hit: &mut dyn FnMut(read::Hit, &read::Interner) -> read::Flow,
    progress: &mut dyn FnMut(u64),
) -> Result<(), read::ReadError> {
    if parquet::is_parquet(path) {
        return parquet::read(path, opts, names, stats, on_hit, progress);
    }
    let input = read::open(path)?;
    read::read_stream(path, input, opts, names, stats, on_hit, progress)
}

/// Every hit of `path`, with the read's statistics and names (the readers' tests).
#[cfg(test)]
pub(crate) fn read_hits(
    path: &Path,
    opts: read::ReadOptions,
) -> (Result<Vec<read::Hit>, read::ReadError>, read::ReadStats, read::Interner) {
    let mut names = read::Interner::new();
    let mut stats = read::ReadStats::default();
    let mut hits = Vec::new();
    let r = read_file(
        path,
        opts,
        &mut names,
        &mut stats,
        &mut |h, _| {
            hits.push(h);
            read::Flow::Continue(())
        },
        &mut |_| {},
    );
    (r.map(|()| hits), stats, names)
}

pub const CSV_HEADER: &str = "timestamp_ns,probe_name,session_id,cpu_id,delta_chain_id,chain,env";

/// One stage hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHit {
    pub timestamp_ns: u64,
    pub probe_name: String,
    #[serde(default)]
    pub session_id: String,
    #[serde(default)]
    pub cpu_id: u32,
    #[serde(default)]
    pub delta_chain_id: u64,
    #[serde(default)]
    pub chain: String,
    #[serde(default)]
    pub env: String,
    /// Interference charged to the segment this hit ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interference_ns: Option<[u64; clockpath_common::interference::SOURCES]>,
    /// The same instant as `timestamp_ns` on reference time (ns since the UNIX epoch, e.g.
    /// PPS-disciplined), when a reference was available. clockpath's `timestamp_ns` is kernel
    /// CLOCK_MONOTONIC, so `timestamp_ns − reference_ns` is the offset of that trace's time base
    /// from the reference (constant while both run at the same rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_ns: Option<u64>,
    /// Labels of the run (session labels, old and new clocksource, machine facts); CSV files
    /// write the columns their writer was created with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The columns a CSV trace has beyond the base ones, in this order: interference
/// (`interference_SRC_ns`, empty when a hit has none), `reference_ns` (empty when a hit has
/// no reference time) and label columns (empty when a hit lacks the label).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsvColumns {
    pub interference: bool,
    pub reference: bool,
    pub labels: Vec<String>,
}

impl CsvColumns {
    /// The header line, without its newline.
    pub fn header(&self) -> String {
        let mut h = CSV_HEADER.to_string();
        if self.interference {
            for src in clockpath_common::interference::NAMES {
                h.push_str(&format!(",interference_{src}_ns"));
            }
        }
        if self.reference {
            h.push_str(",reference_ns");
        }
        for l in &self.labels {
            h.push(',');
            h.push_str(&csv_field(l));
        }
        h
    }
}

fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")).into() } else { s.into() }
}

impl TraceHit {
    /// The JSON Lines line, with its newline.
    pub fn jsonl_line(&self) -> String {
        // Serializing a struct of strings and integers cannot fail.
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

impl TraceHit {
    /// The CSV line with `columns`, with its newline.
    pub fn csv_line(&self, columns: &CsvColumns) -> String {
        let mut l = format!(
            "{},{},{},{},{},{},{}",
            self.timestamp_ns,
            csv_field(&self.probe_name),
            csv_field(&self.session_id),
            self.cpu_id,
            self.delta_chain_id,
            csv_field(&self.chain),
            csv_field(&self.env)
        );
        if columns.interference {
            match &self.interference_ns {
                Some(v) => v.iter().for_each(|x| l.push_str(&format!(",{x}"))),
                None => l.push_str(",,,,,"),
            }
        }
        if columns.reference {
            l.push(',');
            if let Some(r) = self.reference_ns {
                l.push_str(&r.to_string());
            }
        }
        for k in &columns.labels {
            l.push(',');
            l.push_str(&csv_field(self.labels.get(k).map_or("", String::as_str)));
        }
        l.push('\n');
        l
    }
}

/// The label naming an instance's cause, for chains with causes (`ChainShape::causes`).
pub const CAUSE_LABEL: &str = "cause";
/// The label naming the clock a hit is stamped on (`monotonic`, `boottime`, `tai`), on every
/// hit of a chain with a stage on another clock than CLOCK_MONOTONIC.
pub const CLOCK_LABEL: &str = "clock";

/// Stage hits of an assembled chain: stage 0 at its start, stage k at the end of segment k.
/// Every hit carries the record's labels, `extra` ones and, for a chain with causes, its
/// `cause`; none has a reference time (the caller sets `reference_ns` where it has one).
pub fn hits_of(rec: &ChainRecord, shape: &ChainShape, env: &str, extra: &[(String, String)]) -> Vec<TraceHit> {
    let session = rec.session.as_deref().unwrap_or("").to_string();
    let cause = shape.cause_name(rec.cause).map(|c| (CAUSE_LABEL.to_string(), c.to_string()));
    let labels: BTreeMap<String, String> = rec
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(extra.iter().cloned())
        .chain(cause)
        .collect();
    let hit = |ts: u64, stage: usize, cpu: u32, interference: Option<[u64; 5]>| TraceHit {
        timestamp_ns: ts,
        probe_name: shape.stages.get(stage).cloned().unwrap_or_else(|| format!("stage_{stage}")),
        session_id: session.clone(),
        cpu_id: cpu,
        delta_chain_id: rec.instance_id,
        chain: shape.name.clone(),
        env: env.to_string(),
        interference_ns: interference,
        reference_ns: None,
        labels: labels.clone(),
    };
    let mut out = Vec::with_capacity(rec.segments.len() + 1);
    let first_cpu = rec.segments.first().map_or(rec.cpu, |_| rec.cpu);
    out.push(hit(rec.start_ns, 0, first_cpu, None));
    for s in &rec.segments {
        let known = s.interference_ns.iter().any(|v| *v != 0)
            && s.interference_ns[0] != clockpath_common::record::UNKNOWN_INTERFERENCE;
        out.push(hit(s.end_ns, s.index as usize, s.cpu, known.then_some(s.interference_ns)));
    }
    out
}

/// A trace file being written.
pub struct TraceWriter {
    path: PathBuf,
    inner: Inner,
}

enum Inner {
    /// `lines`: complete lines in `buf`.
    Text {
        file: fs::File,
        format: Format,
        columns: CsvColumns,
        buf: String,
        bytes: u64,
        lines: u64,
    },
    Parquet(Box<parquet::ParquetWriter>),
}

const FLUSH_AT: usize = 64 * 1024;

impl TraceWriter {
    /// Create (truncate) `path` with the base columns; CSV files start with their header.
    pub fn create(path: &Path, format: Format) -> io::Result<TraceWriter> {
        Self::with_columns(path, format, CsvColumns::default())
    }

    /// Create (truncate) `path`; CSV and Parquet files have `columns` besides the base ones.
    /// A Parquet file is written as `path.partial` and renamed at `finish`. Never through a
    /// link (`crate::outfile`).
    pub fn with_columns(path: &Path, format: Format, columns: CsvColumns) -> io::Result<TraceWriter> {
        Self::open(path, format, columns, false)
    }

    /// As [`Self::with_columns`], for a name the writer picked: the file must not exist yet.
    pub fn new_with_columns(path: &Path, format: Format, columns: CsvColumns) -> io::Result<TraceWriter> {
        Self::open(path, format, columns, true)
    }

    fn open(path: &Path, format: Format, columns: CsvColumns, new: bool) -> io::Result<TraceWriter> {
        let inner = match format {
            Format::Parquet => Inner::Parquet(Box::new(parquet::ParquetWriter::create(path, columns, new)?)),
            Format::Csv | Format::Jsonl => {
                let file = if new { crate::outfile::create_new(path)? } else { crate::outfile::create(path)? };
                let mut buf = String::new();
                if format == Format::Csv {
                    buf.push_str(&columns.header());
                    buf.push('\n');
                }
                Inner::Text { file, format, columns, buf, bytes: 0, lines: 0 }
            }
        };
        Ok(TraceWriter { path: path.to_path_buf(), inner })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the file has (text: written so far, header included; Parquet: about, with the
    /// open row group).
    pub fn bytes(&self) -> u64 {
        match &self.inner {
            Inner::Text { bytes, .. } => *bytes,
            Inner::Parquet(w) => w.bytes(),
        }
    }

    /// Heap bytes buffered (text: the pending lines; Parquet: the open row group and rows not
    /// yet encoded).
    pub fn memory_bytes(&self) -> usize {
        match &self.inner {
            Inner::Text { buf, .. } => buf.capacity(),
            Inner::Parquet(w) => w.memory_bytes(),
        }
    }

    /// Lines written but not yet handed to the kernel (text), lost if the next flush fails.
    pub fn pending_lines(&self) -> u64 {
        match &self.inner {
            Inner::Text { lines, .. } => *lines,
            Inner::Parquet(_) => 0,
        }
    }

    /// Buffer a line (text), flushing at 64 KiB. An error is the flush's: see [`Self::flush`].
    pub fn write(&mut self, hit: &TraceHit) -> io::Result<()> {
        match &mut self.inner {
            Inner::Text { format, columns, buf, lines, .. } => {
                match format {
                    Format::Csv => buf.push_str(&hit.csv_line(columns)),
                    _ => buf.push_str(&hit.jsonl_line()),
                }
                *lines += 1;
                if buf.len() >= FLUSH_AT {
                    self.flush()?;
                }
                Ok(())
            }
            Inner::Parquet(w) => Ok(w.write(hit)?),
        }
    }

    /// Text: hand every buffered (complete) line to the kernel in one write. If that fails
    /// (a full disk takes part of a write), the file is cut back to its last complete line and
    /// the buffered lines are discarded ([`Self::pending_lines`] says how many), so the file
    /// never holds half a line and the next flush may succeed. Parquet: encode the buffered
    /// rows (the file is readable only after `finish`).
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Text { file, buf, bytes, lines, .. } => {
                if !buf.is_empty() {
                    let written = file.write_all(buf.as_bytes());
                    let len = buf.len() as u64;
                    buf.clear();
                    *lines = 0;
                    match written {
                        Ok(()) => *bytes += len,
                        Err(e) => {
                            use std::io::Seek as _;
                            // Drop whatever part of the write reached the file.
                            file.set_len(*bytes)?;
                            file.seek(io::SeekFrom::Start(*bytes))?;
                            return Err(e);
                        }
                    }
                }
                Ok(())
            }
            Inner::Parquet(w) => Ok(w.flush()?),
        }
    }

    /// Flush and sync to disk (Parquet: write the footer and rename into place).
    pub fn finish(mut self) -> io::Result<()> {
        self.flush()?;
        match self.inner {
            Inner::Text { file, .. } => file.sync_data(),
            Inner::Parquet(w) => Ok(w.finish()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_jsonl_lines() {
        let h = TraceHit {
            timestamp_ns: 171223534912180,
            probe_name: "first_read".into(),
            session_id: "s,1".into(),
            cpu_id: 3,
            delta_chain_id: 42,
            chain: "clocksource_switch".into(),
            env: "vm".into(),
            interference_ns: None,
            reference_ns: None,
            labels: BTreeMap::from([("cstate".to_string(), "max_cstate=1".to_string())]),
        };
        assert_eq!(
            h.csv_line(&CsvColumns::default()),
            "171223534912180,first_read,\"s,1\",3,42,clocksource_switch,vm\n"
        );
        let cols =
            CsvColumns { interference: true, reference: false, labels: vec!["cstate".into(), "governor".into()] };
        assert!(cols.header().ends_with(",interference_kvm_ns,cstate,governor"), "{}", cols.header());
        assert_eq!(
            h.csv_line(&cols),
            "171223534912180,first_read,\"s,1\",3,42,clocksource_switch,vm,,,,,,max_cstate=1,\n"
        );
        let j = h.jsonl_line();
        assert!(j.ends_with('\n'));
        let back: TraceHit = serde_json::from_str(j.trim()).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn the_reference_column_sits_between_interference_and_labels() {
        let cols = CsvColumns { interference: true, reference: true, labels: vec!["reference".into()] };
        assert_eq!(
            cols.header(),
            format!(
                "{CSV_HEADER},interference_irq_ns,interference_softirq_ns,interference_sched_ns,interference_hrtimer_ns,interference_kvm_ns,reference_ns,reference"
            )
        );
        let mut h = TraceHit {
            timestamp_ns: 1_700_000_000_111_000_000,
            probe_name: "first_read".into(),
            session_id: String::new(),
            cpu_id: 0,
            delta_chain_id: 1,
            chain: "clocksource_switch".into(),
            env: "host".into(),
            interference_ns: None,
            reference_ns: Some(1_700_000_000_000_000_123),
            labels: BTreeMap::from([("reference".to_string(), "pps:/dev/pps0".to_string())]),
        };
        assert_eq!(
            h.csv_line(&cols),
            "1700000000111000000,first_read,,0,1,clocksource_switch,host,,,,,,1700000000000000123,pps:/dev/pps0\n"
        );
        let cols = CsvColumns { reference: true, ..CsvColumns::default() };
        assert!(h.csv_line(&cols).ends_with(",host,1700000000000000123\n"));
        let j = h.jsonl_line();
        assert!(j.contains("\"reference_ns\":1700000000000000123"), "{j}");
        assert_eq!(serde_json::from_str::<TraceHit>(j.trim()).unwrap(), h);
        // Absent: an empty cell, no JSON field.
        h.reference_ns = None;
        assert!(h.csv_line(&cols).ends_with(",host,\n"));
        let j = h.jsonl_line();
        assert!(!j.contains("reference_ns"), "{j}");
        assert_eq!(serde_json::from_str::<TraceHit>(j.trim()).unwrap(), h);
    }
}
