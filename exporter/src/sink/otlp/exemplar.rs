//! Exemplars: for each bucket of `clockpath_segment_duration_seconds`, the trace id of the last
//! exported chain instance whose segment fell in it, so a dashboard can jump from a histogram
//! bucket to the trace.
//!
//! prometheus-client encodes histogram exemplars only for its own `HistogramWithExemplars`
//! (whose counts it keeps itself); ours are re-binned from the kernel's histograms at scrape
//! time and `Exemplar` has no public constructor. So the OpenMetrics text is annotated after
//! encoding: bucket lines of that one family get ` # {trace_id=…,span_id=…} value timestamp`.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use clockpath_common::hist::{bucket_le_ns, bucket_of};

use crate::sink::prometheus::names::SEGMENT_DURATION;

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

    fn bucket_of_le(&self, le: &str) -> Option<usize> {
        if le == "+Inf" {
            return Some(self.le_seconds.len());
        }
        let v: f64 = le.parse().ok()?;
        self.le_seconds.iter().position(|&b| (b - v).abs() <= b * 1e-12)
    }

    /// Add exemplars to the bucket lines of an OpenMetrics text.
    pub fn annotate(&self, text: &str) -> String {
        let prefix = format!("{SEGMENT_DURATION}_bucket{{");
        let Ok(slots) = self.slots.lock() else { return text.to_string() };
        if slots.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len() + 4096);
        for line in text.split_inclusive('\n') {
            let body = line.strip_suffix('\n').unwrap_or(line);
            let e = body.strip_prefix(&prefix).and_then(|rest| {
                let labels = parse_labels(rest)?;
                let get = |k: &str| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
                let (chain, segment, le) = (get("chain")?, get("segment")?, get("le")?);
                let b = self.bucket_of_le(le)?;
                slots.get(&(Arc::from(chain), Arc::from(segment)))?.get(b)?.as_ref()
            });
            match e {
                Some(e) if !body.contains(" # ") => {
                    out.push_str(body);
                    let _ = write!(
                        out,
                        " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {}",
                        e.trace_id,
                        e.span_id,
                        decimal_seconds(e.value_ns),
                        decimal_seconds(e.at_unix_ns)
                    );
                    if line.ends_with('\n') {
                        out.push('\n');
                    }
                }
                _ => out.push_str(line),
            }
        }
        out
    }
}

/// Nanoseconds as exact decimal seconds.
fn decimal_seconds(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// The label pairs of `name="value",…}` (the text after the opening brace), unescaped.
fn parse_labels(s: &str) -> Option<Vec<(&str, String)>> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(r) = rest.strip_prefix('}') {
            let _ = r;
            return Some(out);
        }
        let eq = rest.find('=')?;
        let name = &rest[..eq];
        let mut chars = rest[eq + 1..].strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        out.push((name, value));
        rest = &rest[eq + 1 + 1 + end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ExemplarStore {
        let bounds = [1.024e-6, 2.048e-6, 4.096e-6];
        ExemplarStore::new(bounds.iter().map(|b| crate::sink::prometheus::le_index(*b).unwrap()).collect())
    }

    fn ex(value_ns: u64) -> Exemplar {
        Exemplar {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            value_ns,
            at_unix_ns: 1_700_000_000_123_456_789,
        }
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
    fn bucket_lines_get_their_exemplar() {
        let s = store();
        let (chain, seg) = (Arc::from("sched_wakeup"), Arc::from("wakeup->switch_in"));
        s.put(&chain, &seg, ex(1500));
        s.put(&chain, &seg, ex(9000));
        let text = "# TYPE clockpath_segment_duration_seconds histogram\n\
            clockpath_segment_duration_seconds_sum{chain=\"sched_wakeup\",segment=\"wakeup->switch_in\",env=\"vm\"} 1.0\n\
            clockpath_segment_duration_seconds_bucket{chain=\"sched_wakeup\",segment=\"wakeup->switch_in\",env=\"vm\",le=\"1.024e-6\"} 0\n\
            clockpath_segment_duration_seconds_bucket{chain=\"sched_wakeup\",segment=\"wakeup->switch_in\",env=\"vm\",le=\"2.048e-6\"} 1\n\
            clockpath_segment_duration_seconds_bucket{chain=\"sched_wakeup\",segment=\"wakeup->switch_in\",env=\"vm\",le=\"4.096e-6\"} 1\n\
            clockpath_segment_duration_seconds_bucket{chain=\"sched_wakeup\",segment=\"wakeup->switch_in\",env=\"vm\",le=\"+Inf\"} 2\n\
            clockpath_segment_duration_seconds_bucket{chain=\"other\",segment=\"wakeup->switch_in\",env=\"vm\",le=\"+Inf\"} 2\n\
            # EOF\n";
        let out = s.annotate(text);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 8);
        assert!(!lines[2].contains('#'));
        assert!(
            lines[3].ends_with(
                "le=\"2.048e-6\"} 1 # {trace_id=\"0af7651916cd43dd8448eb211c80319c\",span_id=\"b7ad6b7169203331\"} 0.000001500 1700000000.123456789"
            ),
            "{}",
            lines[3]
        );
        assert!(!lines[4].contains(" # "));
        assert!(lines[5].contains("} 0.000009000 "), "+Inf bucket: {}", lines[5]);
        assert!(!lines[6].contains(" # "), "other chain has none");
        assert_eq!(lines[7], "# EOF");
    }

    #[test]
    fn escaped_label_values_parse() {
        let l = parse_labels(r#"a="x\"y",b="p\\q\nr",le="+Inf"} 3"#).unwrap();
        assert_eq!(l, [("a", "x\"y".to_string()), ("b", "p\\q\nr".to_string()), ("le", "+Inf".to_string())]);
        assert_eq!(parse_labels(r#"a="unterminated"#), None);
    }
}
