//! Reading trace files: CSV (with a header), JSON Lines, and the plain
//! `seconds.nanoseconds probe_name` lines of older tooling; each plain or gzip-compressed.
//! Parquet files are read by `super::parquet`; `super::read_file` picks the reader.
//!
//! The reader streams: it holds one buffer of the file, never the file. Lines are parsed in
//! place (no allocation per line once the names are interned), which is what makes the
//! analyser fast. A malformed line is an error naming the file, the line and what was
//! expected; with `skip_bad_lines` it is counted instead. A last line without its newline (a
//! writer that crashed mid-line) is reported and skipped.

use std::{
    fs,
    io::{self, BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
};

/// What a trace file holds, once detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    Csv,
    Jsonl,
    /// `171223.534912180 do_clocksource_switch_entry`
    Plain,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}: {why}")]
    Malformed { path: PathBuf, line: u64, why: String },
    #[error("{path}: row {row}: {why}")]
    Row { path: PathBuf, row: u64, why: String },
    #[error("{path}: {why}")]
    Parquet { path: PathBuf, why: String },
    #[error(
        "{path}: cannot tell the format (expected a CSV header with timestamp_ns and probe_name, JSON Lines, or `seconds.nanoseconds probe_name` lines)"
    )]
    UnknownFormat { path: PathBuf },
}

/// One parsed stage hit; strings are interned ids (see `Interner`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub timestamp_ns: u64,
    pub probe: u32,
    pub session: u32,
    pub cpu: u32,
    pub chain_id: u64,
    /// Chain name as written in the file (0: none).
    pub chain: u32,
    /// The set of extra labels (env and any other columns), interned.
    pub labels: u32,
    /// Interference charged to the segment this hit ends, when the file has those columns.
    pub interference_ns: Option<[u64; 5]>,
    /// The hit's instant on reference time (ns), when the file has a `reference_ns` column
    /// (or field) and the hit a value in it.
    pub reference_ns: Option<u64>,
}

/// Interned strings: probe names, sessions, chains, label sets. Consecutive lines mostly
/// repeat the same strings, so the last id of each field is cached before the hash lookup.
#[derive(Debug, Default)]
pub struct Interner {
    map: rustc_hash::FxHashMap<Vec<u8>, u32>,
    names: Vec<String>,
    /// (bytes, id) of the last few lookups per field slot (probe names alternate).
    last: [[(Vec<u8>, u32); 4]; 4],
    next: [usize; 4],
}

impl Interner {
    pub fn new() -> Self {
        let mut i = Interner::default();
        i.id(b"");
        i
    }

    /// The id of `s`, checking the cache of field `slot` (0..4) first.
    pub fn id_in(&mut self, slot: usize, s: &[u8]) -> u32 {
        for (bytes, id) in &self.last[slot] {
            if !bytes.is_empty() && bytes.as_slice() == s {
                return *id;
            }
        }
        let id = self.id(s);
        let k = self.next[slot];
        self.next[slot] = (k + 1) % 4;
        let l = &mut self.last[slot][k];
        l.0.clear();
        l.0.extend_from_slice(s);
        l.1 = id;
        id
    }

    pub fn id(&mut self, s: &[u8]) -> u32 {
        if let Some(&id) = self.map.get(s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(String::from_utf8_lossy(s).into_owned());
        self.map.insert(s.to_vec(), id);
        id
    }

    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }
}

/// Counts a read produces besides hits.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadStats {
    pub files: u64,
    pub lines: u64,
    pub bytes: u64,
    pub bad_lines: u64,
    /// Last lines without a newline (a writer that crashed mid-line), skipped.
    pub partial_lines: u64,
    /// First few skipped bad lines, as `file:line: why`.
    pub bad_examples: Vec<String>,
}

pub(super) fn open(path: &Path) -> Result<Box<dyn Read>, ReadError> {
    let f = fs::File::open(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    Ok(if gz { Box::new(flate2::read::MultiGzDecoder::new(f)) } else { Box::new(f) })
}

/// Detect the format from the first non-empty line.
fn detect(first: &[u8]) -> Option<InputFormat> {
    let t = first.trim_ascii();
    if t.starts_with(b"{") {
        return Some(InputFormat::Jsonl);
    }
    if memchr::memmem::find(t, b"timestamp_ns").is_some() && memchr::memmem::find(t, b"probe_name").is_some() {
        return Some(InputFormat::Csv);
    }
    let mut parts = t.split(|b| b.is_ascii_whitespace()).filter(|p| !p.is_empty());
    let ts = parts.next()?;
    let ts = ts.strip_suffix(b":").unwrap_or(ts);
    let ok = ts.contains(&b'.') && ts.iter().all(|b| b.is_ascii_digit() || *b == b'.');
    (ok && parts.next().is_some()).then_some(InputFormat::Plain)
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

/// `171223.534912180` → ns.
fn parse_seconds(b: &[u8]) -> Option<u64> {
    let b = b.strip_suffix(b":").unwrap_or(b);
    let dot = memchr::memchr(b'.', b)?;
    let secs = parse_u64(&b[..dot])?;
    let frac = &b[dot + 1..];
    if frac.is_empty() || frac.len() > 9 {
        return None;
    }
    let mut ns = parse_u64(frac)?;
    for _ in frac.len()..9 {
        ns *= 10;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(ns)
}

/// Column roles of a CSV file, from its header.
#[derive(Debug, Default)]
struct Columns {
    ts: usize,
    probe: usize,
    session: Option<usize>,
    cpu: Option<usize>,
    chain_id: Option<usize>,
    chain: Option<usize>,
    interference: [Option<usize>; 5],
    reference: Option<usize>,
    /// Other columns: (index, name) → labels.
    labels: Vec<(usize, String)>,
    n: usize,
}

impl Columns {
    fn from_header(h: &[u8]) -> Result<Columns, String> {
        let names: Vec<String> = split_csv(h).iter().map(|f| String::from_utf8_lossy(f).trim().to_string()).collect();
        let find = |n: &str| names.iter().position(|x| x == n);
        let ts = find("timestamp_ns").ok_or("the header has no timestamp_ns column")?;
        let probe = find("probe_name").ok_or("the header has no probe_name column")?;
        let mut c = Columns {
            ts,
            probe,
            session: find("session_id"),
            cpu: find("cpu_id"),
            chain_id: find("delta_chain_id"),
            chain: find("chain"),
            reference: find("reference_ns"),
            n: names.len(),
            ..Default::default()
        };
        for (k, src) in clockpath_common::interference::NAMES.iter().enumerate() {
            c.interference[k] = find(&format!("interference_{src}_ns"));
        }
        for (i, n) in names.iter().enumerate() {
            let known = [Some(ts), Some(probe), c.session, c.cpu, c.chain_id, c.chain, c.reference].contains(&Some(i))
                || c.interference.contains(&Some(i));
            if !known {
                c.labels.push((i, n.clone()));
            }
        }
        Ok(c)
    }
}

/// Split a CSV line into fields, honouring double quotes (RFC 4180).
fn split_csv(line: &[u8]) -> Vec<std::borrow::Cow<'_, [u8]>> {
    if memchr::memchr(b'"', line).is_none() {
        return line.split(|b| *b == b',').map(std::borrow::Cow::Borrowed).collect();
    }
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut quoted = false;
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        match (quoted, c) {
            (true, b'"') if line.get(i + 1) == Some(&b'"') => {
                cur.push(b'"');
                i += 1;
            }
            (true, b'"') => quoted = false,
            (false, b'"') => quoted = true,
            (false, b',') => out.push(std::borrow::Cow::Owned(std::mem::take(&mut cur))),
            _ => cur.push(c),
        }
        i += 1;
    }
    out.push(std::borrow::Cow::Owned(cur));
    out
}

#[derive(serde::Deserialize)]
struct JsonHit<'a> {
    timestamp_ns: u64,
    #[serde(borrow)]
    probe_name: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    session_id: std::borrow::Cow<'a, str>,
    #[serde(default)]
    cpu_id: u32,
    #[serde(default)]
    delta_chain_id: u64,
    #[serde(default, borrow)]
    chain: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    env: std::borrow::Cow<'a, str>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    interference_ns: Option<[u64; 5]>,
    #[serde(default)]
    reference_ns: Option<u64>,
}

/// Options of a read.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// Count malformed lines instead of failing on the first.
    pub skip_bad_lines: bool,
}

/// What `on_hit` returns: go on, or stop reading (the caller has what it needs).
pub type Flow = std::ops::ControlFlow<()>;

/// Parse a stream as if it were the file `path` (fuzzing and tests use in-memory input).
pub fn read_stream(
    path: &Path,
    input: impl Read,
    opts: ReadOptions,
    names: &mut Interner,
    stats: &mut ReadStats,
    on_hit: &mut dyn FnMut(Hit, &Interner) -> Flow,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ReadError> {
    let io_err = |source| ReadError::Io { path: path.to_path_buf(), source };
    let mut reader = BufReader::with_capacity(1 << 20, input);
    stats.files += 1;
    let file_session = path
        .file_stem()
        .map(|s| s.to_string_lossy().trim_end_matches(".csv").trim_end_matches(".txt").to_string())
        .unwrap_or_default();
    let mut st = LineState {
        path,
        opts,
        format: None,
        columns: None,
        line_no: 0,
        label_key: Vec::with_capacity(64),
        file_session,
        stopped: false,
    };
    // Lines are parsed in place in the reader's buffer; only a line that spans two buffer
    // fills is copied (into `carry`).
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let buf = reader.fill_buf().map_err(io_err)?;
        if buf.is_empty() {
            break;
        }
        let len = buf.len();
        let mut pos = 0;
        if !carry.is_empty() {
            match memchr::memchr(b'\n', buf) {
                Some(nl) => {
                    carry.extend_from_slice(&buf[..=nl]);
                    pos = nl + 1;
                    let line = std::mem::take(&mut carry);
                    st.line(&line, names, stats, on_hit)?;
                    if st.stopped {
                        return Ok(());
                    }
                }
                None => {
                    carry.extend_from_slice(buf);
                    reader.consume(len);
                    continue;
                }
            }
        }
        while let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) {
            st.line(&buf[pos..pos + nl + 1], names, stats, on_hit)?;
            if st.stopped {
                return Ok(());
            }
            pos += nl + 1;
            if st.line_no.is_multiple_of(8192) {
                progress(stats.bytes);
            }
        }
        carry.extend_from_slice(&buf[pos..]);
        reader.consume(len);
    }
    if !carry.is_empty() {
        // The writer died mid-line; everything before it is whole.
        stats.bytes += carry.len() as u64;
        stats.partial_lines += 1;
        tracing::warn!(file = %path.display(), line = st.line_no + 1, "partial last line (no newline): skipped");
    }
    progress(stats.bytes);
    Ok(())
}

/// Parsing state of one file.
struct LineState<'a> {
    path: &'a Path,
    opts: ReadOptions,
    format: Option<InputFormat>,
    columns: Option<Columns>,
    line_no: u64,
    label_key: Vec<u8>,
    file_session: String,
    /// `on_hit` asked to stop.
    stopped: bool,
}

impl LineState<'_> {
    /// One complete line, newline included.
    fn line(
        &mut self,
        raw: &[u8],
        names: &mut Interner,
        stats: &mut ReadStats,
        on_hit: &mut dyn FnMut(Hit, &Interner) -> Flow,
    ) -> Result<(), ReadError> {
        stats.bytes += raw.len() as u64;
        self.line_no += 1;
        let l = raw.trim_ascii_end();
        if l.is_empty() || l.starts_with(b"#") {
            return Ok(());
        }
        stats.lines += 1;
        let fmt = match self.format {
            Some(f) => f,
            None => {
                let f = detect(l).ok_or_else(|| ReadError::UnknownFormat { path: self.path.to_path_buf() })?;
                self.format = Some(f);
                if f == InputFormat::Csv {
                    self.columns = Some(Columns::from_header(l).map_err(|why| ReadError::Malformed {
                        path: self.path.to_path_buf(),
                        line: self.line_no,
                        why,
                    })?);
                    stats.lines -= 1;
                    return Ok(());
                }
                f
            }
        };
        let parsed = match (fmt, &self.columns) {
            (InputFormat::Csv, Some(c)) => parse_csv_line(l, c, names, &mut self.label_key),
            (InputFormat::Csv, None) => Err("no CSV header".into()),
            (InputFormat::Jsonl, _) => parse_json_line(l, names, &mut self.label_key),
            (InputFormat::Plain, _) => parse_plain_line(l, names, &self.file_session),
        };
        match parsed {
            Ok(hit) => self.stopped = on_hit(hit, names).is_break(),
            Err(why) => {
                let e = ReadError::Malformed { path: self.path.to_path_buf(), line: self.line_no, why };
                if !self.opts.skip_bad_lines {
                    return Err(e);
                }
                stats.bad_lines += 1;
                if stats.bad_examples.len() < 5 {
                    stats.bad_examples.push(e.to_string());
                }
            }
        }
        Ok(())
    }
}

fn parse_csv_line(l: &[u8], c: &Columns, names: &mut Interner, label_key: &mut Vec<u8>) -> Result<Hit, String> {
    // Fast path: no quotes, fields borrowed in place.
    if memchr::memchr(b'"', l).is_none() {
        let mut f: [&[u8]; 32] = [&[]; 32];
        let mut n = 0;
        let mut start = 0;
        for i in memchr::memchr_iter(b',', l) {
            if n < 32 {
                f[n] = &l[start..i];
            }
            n += 1;
            start = i + 1;
        }
        if n < 32 {
            f[n] = &l[start..];
        }
        n += 1;
        if n <= 32 {
            return csv_fields(&f[..n], c, names, label_key);
        }
    }
    let owned = split_csv(l);
    let f: Vec<&[u8]> = owned.iter().map(|c| c.as_ref()).collect();
    csv_fields(&f, c, names, label_key)
}

fn csv_fields(f: &[&[u8]], c: &Columns, names: &mut Interner, label_key: &mut Vec<u8>) -> Result<Hit, String> {
    if f.len() != c.n {
        return Err(format!("expected {} comma-separated fields (as in the header), found {}", c.n, f.len()));
    }
    let num = |i: Option<usize>, what: &str| -> Result<u64, String> {
        match i {
            None => Ok(0),
            Some(i) => {
                let s = f[i].trim_ascii();
                if s.is_empty() {
                    return Ok(0);
                }
                parse_u64(s)
                    .ok_or_else(|| format!("{what} `{}` is not a non-negative integer", String::from_utf8_lossy(s)))
            }
        }
    };
    let timestamp_ns = num(Some(c.ts), "timestamp_ns")?;
    let probe = f[c.probe].trim_ascii();
    if probe.is_empty() {
        return Err("probe_name is empty".into());
    }
    label_key.clear();
    for (i, name) in &c.labels {
        // An empty cell is a label the hit does not have.
        let v = f[*i].trim_ascii();
        if v.is_empty() {
            continue;
        }
        label_key.extend_from_slice(name.as_bytes());
        label_key.push(b'=');
        label_key.extend_from_slice(v);
        label_key.push(b'\x1f');
    }
    let mut interference = [0u64; 5];
    let mut any = false;
    for (k, col) in c.interference.iter().enumerate() {
        if let Some(i) = col {
            // Empty cells: nothing was charged to this hit (it starts a chain).
            any |= !f[*i].trim_ascii().is_empty();
            interference[k] = num(*col, "interference")?;
        }
    }
    // An empty cell: no reference time for this hit.
    let reference_ns =
        match c.reference.map(|i| f[i].trim_ascii()).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(parse_u64(s).ok_or_else(|| {
                format!("reference_ns `{}` is not a non-negative integer", String::from_utf8_lossy(s))
            })?),
        };
    Ok(Hit {
        timestamp_ns,
        probe: names.id_in(0, probe),
        session: c.session.map_or(0, |i| names.id_in(1, f[i].trim_ascii())),
        cpu: num(c.cpu, "cpu_id")? as u32,
        chain_id: num(c.chain_id, "delta_chain_id")?,
        chain: c.chain.map_or(0, |i| names.id_in(2, f[i].trim_ascii())),
        labels: if c.labels.is_empty() { 0 } else { names.id_in(3, label_key) },
        interference_ns: any.then_some(interference),
        reference_ns,
    })
}

fn parse_json_line(l: &[u8], names: &mut Interner, label_key: &mut Vec<u8>) -> Result<Hit, String> {
    let j: JsonHit = serde_json::from_slice(l)
        .map_err(|e| format!("expected a JSON object with timestamp_ns and probe_name: {e}"))?;
    if j.probe_name.is_empty() {
        return Err("probe_name is empty".into());
    }
    label_key.clear();
    let mut labels: Vec<(&str, &str)> =
        j.labels.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if !j.env.is_empty() {
        labels.push(("env", &j.env));
    }
    labels.sort();
    for (k, v) in labels {
        label_key.extend_from_slice(k.as_bytes());
        label_key.push(b'=');
        label_key.extend_from_slice(v.as_bytes());
        label_key.push(b'\x1f');
    }
    Ok(Hit {
        timestamp_ns: j.timestamp_ns,
        probe: names.id(j.probe_name.as_bytes()),
        session: names.id(j.session_id.as_bytes()),
        cpu: j.cpu_id,
        chain_id: j.delta_chain_id,
        chain: names.id(j.chain.as_bytes()),
        labels: names.id(label_key),
        interference_ns: j.interference_ns,
        reference_ns: j.reference_ns,
    })
}

fn parse_plain_line(l: &[u8], names: &mut Interner, file_session: &str) -> Result<Hit, String> {
    let mut parts = l.split(|b| b.is_ascii_whitespace()).filter(|p| !p.is_empty());
    let ts = parts.next().ok_or("expected `seconds.nanoseconds probe_name`")?;
    let timestamp_ns = parse_seconds(ts).ok_or_else(|| {
        format!(
            "expected `seconds.nanoseconds probe_name`; `{}` is not seconds.nanoseconds",
            String::from_utf8_lossy(ts)
        )
    })?;
    let probe = parts.next().ok_or("expected `seconds.nanoseconds probe_name`; the probe name is missing")?;
    let probe = probe.strip_suffix(b":").unwrap_or(probe);
    Ok(Hit {
        timestamp_ns,
        probe: names.id(probe),
        session: names.id(file_session.as_bytes()),
        cpu: 0,
        chain_id: 0,
        chain: 0,
        labels: 0,
        interference_ns: None,
        reference_ns: None,
    })
}

/// Label set `id` as (key, value) pairs.
pub fn labels_of(names: &Interner, id: u32) -> Vec<(String, String)> {
    names
        .name(id)
        .split('\x1f')
        .filter(|s| !s.is_empty())
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn read_all(text: &str, ext: &str, opts: ReadOptions) -> (Result<Vec<Hit>, ReadError>, ReadStats, Interner) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(format!("t.{ext}"));
        fs::write(&p, text).unwrap();
        super::super::read_hits(&p, opts)
    }

    #[test]
    fn reads_the_three_formats() {
        let csv = "timestamp_ns,probe_name,session_id,cpu_id,delta_chain_id,chain,env\n10,switch_entry,s1,1,7,clocksource_switch,vm\n20,first_read,s1,1,7,clocksource_switch,vm\n";
        let (h, _, n) = read_all(csv, "csv", ReadOptions::default());
        let h = h.unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!((h[1].timestamp_ns, n.name(h[1].probe), h[1].chain_id, h[1].cpu), (20, "first_read", 7, 1));
        assert_eq!(labels_of(&n, h[0].labels), [("env".to_string(), "vm".to_string())]);
        let jsonl = "{\"timestamp_ns\":5,\"probe_name\":\"a\",\"session_id\":\"x\",\"env\":\"host\"}\n";
        let (h, _, n) = read_all(jsonl, "jsonl", ReadOptions::default());
        assert_eq!(n.name(h.unwrap()[0].session), "x");
        let plain = "171223.534912180 do_clocksource_switch_entry\n171224.646012180 first_read\n";
        let (h, _, n) = read_all(plain, "txt", ReadOptions::default());
        let h = h.unwrap();
        assert_eq!(h[0].timestamp_ns, 171_223_534_912_180);
        assert_eq!(n.name(h[0].probe), "do_clocksource_switch_entry");
        assert_eq!(h[1].timestamp_ns - h[0].timestamp_ns, 1_111_100_000);
    }

    #[test]
    fn gzip_is_read_transparently() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl.gz");
        let mut e = flate2::write::GzEncoder::new(fs::File::create(&p).unwrap(), flate2::Compression::fast());
        e.write_all(b"{\"timestamp_ns\":1,\"probe_name\":\"a\"}\n{\"timestamp_ns\":2,\"probe_name\":\"b\"}\n").unwrap();
        e.finish().unwrap();
        let (hits, _, _) = super::super::read_hits(&p, ReadOptions::default());
        assert_eq!(hits.unwrap().len(), 2);
    }

    #[test]
    fn a_malformed_line_names_file_line_and_expectation() {
        let (r, _, _) = read_all("1.5 a\nnot-a-time b\n", "txt", ReadOptions::default());
        let e = r.unwrap_err().to_string();
        assert!(e.contains("t.txt:2:") && e.contains("seconds.nanoseconds"), "{e}");
        let (r, _, _) = read_all("timestamp_ns,probe_name\n1,a\n2,b,c\n", "csv", ReadOptions::default());
        let e = r.unwrap_err().to_string();
        assert!(e.contains("t.csv:3:") && e.contains("expected 2 comma-separated fields"), "{e}");
        let (r, st, _) =
            read_all("timestamp_ns,probe_name\n1,a\nx,b\n3,c\n", "csv", ReadOptions { skip_bad_lines: true });
        assert_eq!(r.unwrap().len(), 2);
        assert_eq!(st.bad_lines, 1);
        assert!(st.bad_examples[0].contains("t.csv:3"));
    }

    #[test]
    fn a_partial_last_line_is_reported_and_skipped() {
        let (r, st, _) = read_all("timestamp_ns,probe_name\n1,a\n2,b", "csv", ReadOptions::default());
        assert_eq!(r.unwrap().len(), 1);
        assert_eq!(st.partial_lines, 1);
    }

    #[test]
    fn quoted_csv_fields() {
        let (h, _, n) = read_all("timestamp_ns,probe_name,session_id\n1,a,\"s,1\"\n", "csv", ReadOptions::default());
        assert_eq!(n.name(h.unwrap()[0].session), "s,1");
    }

    #[test]
    fn reference_ns_is_read_from_csv_and_jsonl_and_is_not_a_label() {
        let csv = "timestamp_ns,probe_name,env,reference_ns,reference\n10,a,host,7,pps:/dev/pps0\n20,a,vm,,system\n";
        let (h, _, n) = read_all(csv, "csv", ReadOptions::default());
        let h = h.unwrap();
        assert_eq!((h[0].reference_ns, h[1].reference_ns), (Some(7), None));
        assert_eq!(n.name(h[0].labels), "env=host\x1freference=pps:/dev/pps0\x1f");
        assert_eq!(n.name(h[1].labels), "env=vm\x1freference=system\x1f");
        let jsonl = "{\"timestamp_ns\":5,\"probe_name\":\"a\",\"reference_ns\":3}\n{\"timestamp_ns\":6,\"probe_name\":\"a\"}\n{\"timestamp_ns\":7,\"probe_name\":\"a\",\"reference_ns\":null}\n";
        let (h, _, _) = read_all(jsonl, "jsonl", ReadOptions::default());
        let h = h.unwrap();
        assert_eq!(h.iter().map(|h| h.reference_ns).collect::<Vec<_>>(), [Some(3), None, None]);
        // Files without the column read as before.
        let (h, _, _) = read_all("timestamp_ns,probe_name\n1,a\n", "csv", ReadOptions::default());
        assert_eq!(h.unwrap()[0].reference_ns, None);
    }

    #[test]
    fn a_bad_reference_ns_is_located() {
        let (r, _, _) =
            read_all("timestamp_ns,probe_name,reference_ns\n1,a,5\n2,a,-3\n", "csv", ReadOptions::default());
        let e = r.unwrap_err().to_string();
        assert!(e.contains("t.csv:3:") && e.contains("reference_ns `-3` is not a non-negative integer"), "{e}");
        let (r, st, _) = read_all(
            "timestamp_ns,probe_name,reference_ns\n1,a,5\n2,a,x\n",
            "csv",
            ReadOptions { skip_bad_lines: true },
        );
        assert_eq!((r.unwrap().len(), st.bad_lines), (1, 1));
        let (r, _, _) = read_all(
            "{\"timestamp_ns\":1,\"probe_name\":\"a\",\"reference_ns\":\"x\"}\n",
            "jsonl",
            ReadOptions::default(),
        );
        let e = r.unwrap_err().to_string();
        // As for the other numeric fields, serde names the position in the line.
        assert!(e.contains("t.jsonl:1:") && e.contains("invalid type: string \"x\", expected u64"), "{e}");
    }

    #[test]
    fn unknown_format_is_an_error() {
        let (r, _, _) = read_all("hello world\n", "txt", ReadOptions::default());
        assert!(matches!(r, Err(ReadError::UnknownFormat { .. })));
    }
}
