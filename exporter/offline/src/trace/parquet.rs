//! Parquet traces (arrow-rs): the same columns as a CSV trace, typed, compressed (Snappy) and
//! readable by DuckDB, pandas/pyarrow or Spark when archives outgrow one machine.
//!
//! Schema: `timestamp_ns` UInt64, `probe_name` / `session_id` / `chain` / `env` strings,
//! `cpu_id` UInt32, `delta_chain_id` UInt64, then the optional `interference_SRC_ns` UInt64
//! columns, the optional nullable `reference_ns` UInt64 and one string column per label. Strings are dictionary-encoded: the same few
//! names repeat on every row.
//!
//! A Parquet file is readable only once its footer is written, so the writer works on
//! `NAME.partial` and renames it to `NAME` when it finishes: a file with the final name is
//! always whole, and a crash leaves a `.partial` behind instead of a corrupt trace. Rotation
//! (by size) bounds what a crash can lose.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use arrow_array::{
    Array, ArrayRef, RecordBatch,
    builder::{StringDictionaryBuilder, UInt32Builder, UInt64Builder},
    cast::AsArray as _,
    types::{Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type},
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::{
    arrow::{ArrowWriter, ProjectionMask, arrow_reader::ParquetRecordBatchReaderBuilder},
    basic::Compression,
    file::properties::{EnabledStatistics, WriterProperties},
};

use super::{
    CsvColumns, TraceHit,
    read::{Flow, Hit, Interner, ReadError, ReadOptions, ReadStats},
};

/// Rows buffered before they are encoded into the open row group.
const BATCH_ROWS: usize = 16 * 1024;
/// Rows per row group: small enough that the writer's encoded-but-unflushed data stays a few
/// MiB (the exporter's memory budget), large enough for good compression.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// The magic every Parquet file starts (and ends) with.
pub const MAGIC: &[u8; 4] = b"PAR1";

fn dict_utf8() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The Arrow schema of a trace with `columns` besides the base ones (same order as the CSV).
pub fn schema(columns: &CsvColumns) -> SchemaRef {
    let mut f = vec![
        Field::new("timestamp_ns", DataType::UInt64, false),
        Field::new("probe_name", dict_utf8(), false),
        Field::new("session_id", dict_utf8(), false),
        Field::new("cpu_id", DataType::UInt32, false),
        Field::new("delta_chain_id", DataType::UInt64, false),
        Field::new("chain", dict_utf8(), false),
        Field::new("env", dict_utf8(), false),
    ];
    if columns.interference {
        for src in clockpath_common::interference::NAMES {
            f.push(Field::new(format!("interference_{src}_ns"), DataType::UInt64, true));
        }
    }
    if columns.reference {
        f.push(Field::new("reference_ns", DataType::UInt64, true));
    }
    f.extend(columns.labels.iter().map(|l| Field::new(l.as_str(), dict_utf8(), true)));
    Arc::new(Schema::new(f))
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl From<WriteError> for std::io::Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Io(e) => e,
            other => std::io::Error::other(other),
        }
    }
}

/// A Parquet trace being written (to `NAME.partial` until `finish`).
pub struct ParquetWriter {
    writer: ArrowWriter<fs::File>,
    schema: SchemaRef,
    columns: CsvColumns,
    path: PathBuf,
    partial: PathBuf,
    ts: UInt64Builder,
    probe: StringDictionaryBuilder<Int32Type>,
    session: StringDictionaryBuilder<Int32Type>,
    cpu: UInt32Builder,
    chain_id: UInt64Builder,
    chain: StringDictionaryBuilder<Int32Type>,
    env: StringDictionaryBuilder<Int32Type>,
    interference: Vec<UInt64Builder>,
    reference: Option<UInt64Builder>,
    labels: Vec<StringDictionaryBuilder<Int32Type>>,
    rows: usize,
}

/// `NAME.partial` next to `NAME`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

impl ParquetWriter {
    /// `new`: the final file must not exist yet either (a name the writer picked).
    pub fn create(path: &Path, columns: CsvColumns, new: bool) -> Result<ParquetWriter, WriteError> {
        let schema = schema(&columns);
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_created_by(format!("clockpath {}", env!("CARGO_PKG_VERSION")))
            .build();
        let partial = partial_path(path);
        if new && fs::symlink_metadata(path).is_ok() {
            return Err(
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("{} exists", path.display())).into()
            );
        }
        let file = crate::outfile::create(&partial)?;
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        Ok(ParquetWriter {
            writer,
            schema,
            interference: if columns.interference {
                (0..clockpath_common::interference::SOURCES).map(|_| UInt64Builder::with_capacity(BATCH_ROWS)).collect()
            } else {
                Vec::new()
            },
            reference: columns.reference.then(|| UInt64Builder::with_capacity(BATCH_ROWS)),
            labels: columns.labels.iter().map(|_| StringDictionaryBuilder::new()).collect(),
            columns,
            path: path.to_path_buf(),
            partial,
            ts: UInt64Builder::with_capacity(BATCH_ROWS),
            probe: StringDictionaryBuilder::new(),
            session: StringDictionaryBuilder::new(),
            cpu: UInt32Builder::with_capacity(BATCH_ROWS),
            chain_id: UInt64Builder::with_capacity(BATCH_ROWS),
            chain: StringDictionaryBuilder::new(),
            env: StringDictionaryBuilder::new(),
            rows: 0,
        })
    }

    /// The final path (the file is `path().partial` until `finish`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, h: &TraceHit) -> Result<(), WriteError> {
        self.ts.append_value(h.timestamp_ns);
        self.probe.append_value(&h.probe_name);
        self.session.append_value(&h.session_id);
        self.cpu.append_value(h.cpu_id);
        self.chain_id.append_value(h.delta_chain_id);
        self.chain.append_value(&h.chain);
        self.env.append_value(&h.env);
        for (k, b) in self.interference.iter_mut().enumerate() {
            b.append_option(h.interference_ns.map(|v| v[k]));
        }
        if let Some(b) = &mut self.reference {
            b.append_option(h.reference_ns);
        }
        for (name, b) in self.columns.labels.iter().zip(&mut self.labels) {
            b.append_option(h.labels.get(name).filter(|v| !v.is_empty()));
        }
        self.rows += 1;
        if self.rows == BATCH_ROWS {
            self.encode()?;
        }
        Ok(())
    }

    /// Encode the buffered rows into the open row group.
    fn encode(&mut self) -> Result<(), WriteError> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.probe.finish()),
            Arc::new(self.session.finish()),
            Arc::new(self.cpu.finish()),
            Arc::new(self.chain_id.finish()),
            Arc::new(self.chain.finish()),
            Arc::new(self.env.finish()),
        ];
        cols.extend(self.interference.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        cols.extend(self.reference.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        cols.extend(self.labels.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        let batch = RecordBatch::try_new(self.schema.clone(), cols)?;
        self.writer.write(&batch)?;
        self.rows = 0;
        Ok(())
    }

    /// Bytes the file has about now, for rotation: written row groups, the open one as
    /// encoded so far (before compression, so an overestimate), and the rows not yet encoded
    /// at the open row group's bytes per row.
    pub fn bytes(&self) -> u64 {
        let encoded_rows = self.writer.in_progress_rows();
        let in_progress = self.writer.in_progress_size();
        let per_row = if encoded_rows > 0 { in_progress.div_ceil(encoded_rows) } else { 16 };
        (self.writer.bytes_written() + in_progress + self.rows * per_row) as u64
    }

    /// Heap bytes held: the open row group's encoders and the rows not yet encoded.
    pub fn memory_bytes(&self) -> usize {
        let builders = self.rows * (std::mem::size_of::<u64>() * 3 + std::mem::size_of::<u32>() * 5)
            + (self.interference.len() + self.reference.is_some() as usize) * self.rows * std::mem::size_of::<u64>();
        self.writer.memory_size() + builders
    }

    /// Encode what is buffered. (The file becomes readable only at `finish`.)
    pub fn flush(&mut self) -> Result<(), WriteError> {
        self.encode()
    }

    /// Write the footer, sync, and give the file its final name.
    pub fn finish(mut self) -> Result<(), WriteError> {
        self.encode()?;
        let file = self.writer.into_inner()?;
        file.sync_data()?;
        fs::rename(&self.partial, &self.path)?;
        Ok(())
    }
}

/// Whether `path` is a Parquet file: by its `.parquet` extension, or by its magic.
pub fn is_parquet(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) {
        return true;
    }
    let mut magic = [0u8; 4];
    fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok() && &magic == MAGIC
}

/// Columns the reader requires, as the CSV reader does.
const REQUIRED: [&str; 2] = ["timestamp_ns", "probe_name"];
const BASE: [&str; 7] = ["timestamp_ns", "probe_name", "session_id", "cpu_id", "delta_chain_id", "chain", "env"];

/// Where each role is in a batch.
struct Roles {
    ts: usize,
    probe: usize,
    session: Option<usize>,
    cpu: Option<usize>,
    chain_id: Option<usize>,
    chain: Option<usize>,
    interference: [Option<usize>; 5],
    reference: Option<usize>,
    /// Label columns (env and every column that is not a known one), in schema order.
    labels: Vec<(usize, String)>,
}

impl Roles {
    fn of(schema: &Schema) -> Result<Roles, String> {
        let missing: Vec<&str> = REQUIRED.iter().copied().filter(|c| schema.index_of(c).is_err()).collect();
        if !missing.is_empty() {
            let found: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(format!(
                "not a clockpath trace: the Parquet schema has no column {} (a trace has {}; this file has {})",
                missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                BASE.join(", "),
                found.join(", ")
            ));
        }
        let find = |n: &str| schema.index_of(n).ok();
        let mut r = Roles {
            ts: find("timestamp_ns").unwrap_or_default(),
            probe: find("probe_name").unwrap_or_default(),
            session: find("session_id"),
            cpu: find("cpu_id"),
            chain_id: find("delta_chain_id"),
            chain: find("chain"),
            interference: [None; 5],
            reference: find("reference_ns"),
            labels: Vec::new(),
        };
        for (k, src) in clockpath_common::interference::NAMES.iter().enumerate() {
            r.interference[k] = find(&format!("interference_{src}_ns"));
        }
        for (i, f) in schema.fields().iter().enumerate() {
            let known = [Some(r.ts), Some(r.probe), r.session, r.cpu, r.chain_id, r.chain, r.reference]
                .contains(&Some(i))
                || r.interference.contains(&Some(i));
            if !known {
                r.labels.push((i, f.name().clone()));
            }
        }
        // Types, checked once so that every column error names the column.
        let integer = |i: usize| {
            let t = schema.field(i).data_type();
            (t.is_integer())
                .then_some(())
                .ok_or_else(|| format!("column `{}` is {t}, expected integers", schema.field(i).name()))
        };
        integer(r.ts)?;
        for i in [r.cpu, r.chain_id, r.reference].into_iter().chain(r.interference).flatten() {
            integer(i)?;
        }
        for i in [Some(r.probe), r.session, r.chain].into_iter().flatten().chain(r.labels.iter().map(|l| l.0)) {
            let t = schema.field(i).data_type();
            if !is_string(t) && !t.is_integer() {
                return Err(format!("column `{}` is {t}, expected strings", schema.field(i).name()));
            }
        }
        Ok(r)
    }
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

/// Row values of an integer column; `None` for a null.
fn integers(col: &ArrayRef) -> Vec<Option<i128>> {
    fn of<T: arrow_array::ArrowPrimitiveType>(col: &ArrayRef) -> Vec<Option<i128>>
    where
        T::Native: Into<i128>,
    {
        col.as_primitive::<T>().iter().map(|v| v.map(Into::into)).collect()
    }
    match col.data_type() {
        DataType::UInt64 => of::<UInt64Type>(col),
        DataType::Int64 => of::<Int64Type>(col),
        DataType::UInt32 => of::<UInt32Type>(col),
        DataType::Int32 => of::<Int32Type>(col),
        DataType::UInt16 => of::<UInt16Type>(col),
        DataType::Int16 => of::<Int16Type>(col),
        DataType::UInt8 => of::<UInt8Type>(col),
        DataType::Int8 => of::<Int8Type>(col),
        // Roles::of checked the type.
        _ => vec![None; col.len()],
    }
}

/// Per-row interned ids of a string (or integer) column; a null is the empty string.
fn string_ids(col: &ArrayRef, names: &mut Interner, slot: usize, out: &mut Vec<u32>) {
    out.clear();
    let id = |names: &mut Interner, v: Option<&str>| names.id_in(slot, v.unwrap_or("").as_bytes());
    match col.data_type() {
        DataType::Utf8 => out.extend(col.as_string::<i32>().iter().map(|v| id(names, v))),
        DataType::LargeUtf8 => out.extend(col.as_string::<i64>().iter().map(|v| id(names, v))),
        DataType::Utf8View => out.extend(col.as_string_view().iter().map(|v| id(names, v))),
        DataType::Dictionary(..) => {
            let d = col.as_any_dictionary();
            if d.values().is_empty() {
                out.extend(std::iter::repeat_n(0, col.len()));
                return;
            }
            // Intern each distinct value once per batch, then map the keys.
            let mut vals = Vec::new();
            string_ids(d.values(), names, slot, &mut vals);
            let keys = d.normalized_keys();
            out.extend((0..col.len()).map(|r| if col.is_null(r) { 0 } else { vals[keys[r]] }));
        }
        _ => out.extend(integers(col).into_iter().map(|v| id(names, v.map(|v| v.to_string()).as_deref()))),
    }
}

/// Read the Parquet trace `path`, calling `on_hit` for every row (see `super::read_file`).
pub fn read(
    path: &Path,
    opts: ReadOptions,
    names: &mut Interner,
    stats: &mut ReadStats,
    on_hit: &mut dyn FnMut(Hit, &Interner) -> Flow,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ReadError> {
    let file = fs::File::open(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    let file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bad = |why: String| ReadError::Parquet { path: path.to_path_buf(), why };
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(format!("not a Parquet file: {e}")))?;
    let roles = Roles::of(builder.schema()).map_err(bad)?;
    let total_rows = builder.metadata().file_metadata().num_rows().max(1) as u64;
    // Every column is used (labels are whatever else the file has), so no projection; the
    // batch size bounds memory like the CSV reader's buffer.
    let reader = builder
        .with_projection(ProjectionMask::all())
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    stats.files += 1;
    let (mut probes, mut sessions, mut chains) = (Vec::new(), Vec::new(), Vec::new());
    let mut label_cols: Vec<(String, Vec<u32>)> = roles.labels.iter().map(|(_, n)| (n.clone(), Vec::new())).collect();
    let mut label_key = Vec::with_capacity(64);
    let mut row0 = 0u64;
    let bytes_before = stats.bytes;
    for batch in reader {
        let batch = batch.map_err(|e| bad(format!("row group after row {row0}: {e}")))?;
        let n = batch.num_rows();
        let ts = integers(batch.column(roles.ts));
        let opt_ints = |i: Option<usize>| i.map(|i| integers(batch.column(i)));
        let (cpu, chain_id, reference) = (opt_ints(roles.cpu), opt_ints(roles.chain_id), opt_ints(roles.reference));
        let interference: Vec<Option<Vec<Option<i128>>>> = roles.interference.iter().map(|i| opt_ints(*i)).collect();
        string_ids(batch.column(roles.probe), names, 0, &mut probes);
        match roles.session {
            Some(i) => string_ids(batch.column(i), names, 1, &mut sessions),
            None => sessions = vec![0; n],
        }
        match roles.chain {
            Some(i) => string_ids(batch.column(i), names, 2, &mut chains),
            None => chains = vec![0; n],
        }
        for ((i, _), (_, ids)) in roles.labels.iter().zip(&mut label_cols) {
            string_ids(batch.column(*i), names, 3, ids);
        }
        for r in 0..n {
            let row = row0 + r as u64 + 1;
            stats.lines += 1;
            let hit = (|| -> Result<Hit, String> {
                let unsigned = |v: Option<i128>, what: &str| -> Result<u64, String> {
                    match v {
                        None => Ok(0),
                        Some(v) => u64::try_from(v).map_err(|_| format!("{what} {v} is negative")),
                    }
                };
                let timestamp_ns = match ts[r] {
                    None => return Err("timestamp_ns is null".into()),
                    v => unsigned(v, "timestamp_ns")?,
                };
                if probes[r] == 0 {
                    return Err("probe_name is empty".into());
                }
                label_key.clear();
                for (name, ids) in &label_cols {
                    let v = names.name(ids[r]);
                    if v.is_empty() {
                        continue;
                    }
                    label_key.extend_from_slice(name.as_bytes());
                    label_key.push(b'=');
                    label_key.extend_from_slice(v.as_bytes());
                    label_key.push(b'\x1f');
                }
                let mut interference_ns = [0u64; 5];
                let mut any = false;
                for (k, col) in interference.iter().enumerate() {
                    if let Some(col) = col {
                        any |= col[r].is_some();
                        interference_ns[k] = unsigned(col[r], "interference")?;
                    }
                }
                // A null: no reference time for this hit.
                let reference_ns = match reference.as_ref().and_then(|c| c[r]) {
                    None => None,
                    v => Some(unsigned(v, "reference_ns")?),
                };
                Ok(Hit {
                    timestamp_ns,
                    probe: probes[r],
                    session: sessions[r],
                    cpu: unsigned(cpu.as_ref().and_then(|c| c[r]), "cpu_id")? as u32,
                    chain_id: unsigned(chain_id.as_ref().and_then(|c| c[r]), "delta_chain_id")?,
                    chain: chains[r],
                    labels: if label_cols.is_empty() { 0 } else { names.id_in(3, &label_key) },
                    interference_ns: any.then_some(interference_ns),
                    reference_ns,
                })
            })();
            match hit {
                Ok(h) => {
                    if on_hit(h, names).is_break() {
                        return Ok(());
                    }
                }
                Err(why) => {
                    let e = ReadError::Row { path: path.to_path_buf(), row, why };
                    if !opts.skip_bad_lines {
                        return Err(e);
                    }
                    stats.bad_lines += 1;
                    if stats.bad_examples.len() < 5 {
                        stats.bad_examples.push(e.to_string());
                    }
                }
            }
        }
        row0 += n as u64;
        stats.bytes = bytes_before + file_bytes * row0.min(total_rows) / total_rows;
        progress(stats.bytes);
    }
    stats.bytes = bytes_before + file_bytes;
    progress(stats.bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(ts: u64, probe: &str, id: u64, labels: &[(&str, &str)]) -> TraceHit {
        TraceHit {
            timestamp_ns: ts,
            probe_name: probe.into(),
            session_id: "s1".into(),
            cpu_id: 1,
            delta_chain_id: id,
            chain: "clocksource_switch".into(),
            env: "vm".into(),
            interference_ns: (probe == "first_read").then_some([1, 2, 3, 4, 5]),
            reference_ns: (!id.is_multiple_of(3)).then_some(ts + 7),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn written_rows_read_back_as_the_csv_reader_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        let columns =
            CsvColumns { interference: true, reference: true, labels: vec!["governor".into(), "cstate".into()] };
        let mut w = ParquetWriter::create(&p, columns.clone(), false).unwrap();
        assert!(partial_path(&p).exists() && !p.exists(), "written under .partial until finished");
        let n = BATCH_ROWS as u64 * 2 + 7;
        for i in 0..n {
            let labels: &[(&str, &str)] =
                if i % 2 == 0 { &[("governor", "performance"), ("cstate", "c1")] } else { &[("cstate", "c1")] };
            w.write(&hit(1000 + i, if i % 2 == 0 { "switch_entry" } else { "first_read" }, i / 2, labels)).unwrap();
        }
        w.finish().unwrap();
        assert!(p.exists() && !partial_path(&p).exists());

        // The same rows as CSV, read by the CSV reader: identical hits and label sets.
        let csv = dir.path().join("t.csv");
        let mut text = columns.header() + "\n";
        for i in 0..n {
            let labels: &[(&str, &str)] =
                if i % 2 == 0 { &[("governor", "performance"), ("cstate", "c1")] } else { &[("cstate", "c1")] };
            text.push_str(
                &hit(1000 + i, if i % 2 == 0 { "switch_entry" } else { "first_read" }, i / 2, labels)
                    .csv_line(&columns),
            );
        }
        fs::write(&csv, text).unwrap();
        let (pq, pq_stats, pq_names) = super::super::read_hits(&p, ReadOptions::default());
        let (cs, _, cs_names) = super::super::read_hits(&csv, ReadOptions::default());
        let (pq, cs) = (pq.unwrap(), cs.unwrap());
        assert_eq!(pq.len() as u64, n);
        assert_eq!(pq_stats.lines, n);
        for (a, b) in pq.iter().zip(&cs) {
            assert_eq!(
                (a.timestamp_ns, a.cpu, a.chain_id, a.interference_ns, a.reference_ns),
                (b.timestamp_ns, b.cpu, b.chain_id, b.interference_ns, b.reference_ns)
            );
            assert_eq!(a.reference_ns, (!a.chain_id.is_multiple_of(3)).then_some(a.timestamp_ns + 7));
            for (x, y) in [(a.probe, b.probe), (a.session, b.session), (a.chain, b.chain), (a.labels, b.labels)] {
                assert_eq!(pq_names.name(x), cs_names.name(y));
            }
        }
        assert_eq!(pq_names.name(pq[0].labels), "env=vm\x1fgovernor=performance\x1fcstate=c1\x1f");
        assert_eq!(pq_names.name(pq[1].labels), "env=vm\x1fcstate=c1\x1f");
    }

    /// A hand-made Parquet file with `fields` (all UInt64 or Utf8) and one row.
    fn foreign(p: &Path, fields: &[(&str, DataType)]) {
        let schema =
            Arc::new(Schema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()));
        let cols: Vec<ArrayRef> = fields
            .iter()
            .map(|(_, t)| match t {
                DataType::Utf8 => Arc::new(arrow_array::StringArray::from(vec!["switch_entry"])) as ArrayRef,
                DataType::Int64 => Arc::new(arrow_array::Int64Array::from(vec![-5])) as ArrayRef,
                DataType::Float64 => Arc::new(arrow_array::Float64Array::from(vec![1.5])) as ArrayRef,
                _ => Arc::new(arrow_array::UInt64Array::from(vec![42u64])) as ArrayRef,
            })
            .collect();
        let mut w = ArrowWriter::try_new(fs::File::create(p).unwrap(), schema.clone(), None).unwrap();
        w.write(&RecordBatch::try_new(schema, cols).unwrap()).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn a_wrong_schema_names_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        foreign(&p, &[("timestamp_ns", DataType::UInt64), ("probe", DataType::Utf8), ("session_id", DataType::Utf8)]);
        let e = super::super::read_hits(&p, ReadOptions::default()).0.unwrap_err().to_string();
        assert!(
            e.contains("x.parquet")
                && e.contains("no column `probe_name`")
                && e.contains("has timestamp_ns, probe, session_id"),
            "{e}"
        );

        foreign(&p, &[("timestamp_ns", DataType::Utf8), ("probe_name", DataType::Utf8)]);
        let e = super::super::read_hits(&p, ReadOptions::default()).0.unwrap_err().to_string();
        assert!(e.contains("column `timestamp_ns` is Utf8, expected integers"), "{e}");

        foreign(&p, &[("timestamp_ns", DataType::UInt64), ("probe_name", DataType::Utf8), ("temp", DataType::Float64)]);
        let e = super::super::read_hits(&p, ReadOptions::default()).0.unwrap_err().to_string();
        assert!(e.contains("column `temp` is Float64"), "{e}");

        // A negative timestamp is a row error, located by row; skip_bad_lines counts it.
        foreign(&p, &[("timestamp_ns", DataType::Int64), ("probe_name", DataType::Utf8)]);
        let e = super::super::read_hits(&p, ReadOptions::default()).0.unwrap_err().to_string();
        assert!(e.contains("x.parquet: row 1: timestamp_ns -5 is negative"), "{e}");
        let (r, st, _) = super::super::read_hits(&p, ReadOptions { skip_bad_lines: true });
        assert_eq!((r.unwrap().len(), st.bad_lines), (0, 1));

        // Not Parquet at all, though named so.
        fs::write(&p, "timestamp_ns,probe_name\n1,a\n").unwrap();
        let e = super::super::read_hits(&p, ReadOptions::default()).0.unwrap_err().to_string();
        assert!(e.contains("x.parquet") && e.contains("not a Parquet file"), "{e}");
    }

    #[test]
    fn a_file_without_the_parquet_extension_is_known_by_its_magic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("archive.bin");
        foreign(&p, &[("timestamp_ns", DataType::UInt64), ("probe_name", DataType::Utf8)]);
        assert!(is_parquet(&p));
        let (r, _, names) = super::super::read_hits(&p, ReadOptions::default());
        let h = r.unwrap();
        assert_eq!((h[0].timestamp_ns, names.name(h[0].probe)), (42, "switch_entry"));
        assert_eq!(h[0].reference_ns, None, "no reference_ns column");
    }

    #[test]
    fn reference_ns_is_read_from_any_integer_column_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.parquet");
        let base = [("timestamp_ns", DataType::UInt64), ("probe_name", DataType::Utf8)];
        foreign(&p, &[base[0].clone(), base[1].clone(), ("reference_ns", DataType::UInt64)]);
        let (r, _, names) = super::super::read_hits(&p, ReadOptions::default());
        let h = r.unwrap();
        assert_eq!(h[0].reference_ns, Some(42));
        assert_eq!(names.name(h[0].labels), "", "reference_ns is not a label");
        foreign(&p, &[base[0].clone(), base[1].clone(), ("reference_ns", DataType::Int64)]);
        let e = super::super::read_hits(&p, ReadOptions::default()).0.unwrap_err().to_string();
        assert!(e.contains("r.parquet: row 1: reference_ns -5 is negative"), "{e}");
        foreign(&p, &[base[0].clone(), base[1].clone(), ("reference_ns", DataType::Utf8)]);
        let e = super::super::read_hits(&p, ReadOptions::default()).0.unwrap_err().to_string();
        assert!(e.contains("column `reference_ns` is Utf8, expected integers"), "{e}");
    }
}
