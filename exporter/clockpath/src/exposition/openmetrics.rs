//! OpenMetrics exemplars on the segment histograms.
//!
//! prometheus-client encodes histogram exemplars only for its own `HistogramWithExemplars`
//! (whose counts it keeps itself); ours are re-binned from the kernel's histograms at scrape
//! time and `Exemplar` has no public constructor. So the OpenMetrics text is annotated after
//! encoding: bucket lines of that one family get ` # {trace_id=…,span_id=…} value timestamp`.

use std::fmt::Write as _;

use super::names::SEGMENT_DURATION;
use crate::exemplars::ExemplarStore;

/// Add exemplars to the bucket lines of an OpenMetrics text.
pub fn annotate(text: &str, exemplars: &ExemplarStore) -> String {
    let prefix = format!("{SEGMENT_DURATION}_bucket{{");
    let Some(view) = exemplars.read() else { return text.to_string() };
    if view.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 4096);
    for line in text.split_inclusive('\n') {
        let body = line.strip_suffix('\n').unwrap_or(line);
        let e = body.strip_prefix(&prefix).and_then(|rest| {
            let labels = parse_labels(rest)?;
            let get = |k: &str| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
            let (chain, segment, le) = (get("chain")?, get("segment")?, get("le")?);
            view.by_le(chain, segment, le)
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

    use std::sync::Arc;

    use crate::exemplars::{Exemplar, ExemplarStore};

    fn store() -> ExemplarStore {
        let bounds = [1.024e-6, 2.048e-6, 4.096e-6];
        ExemplarStore::new(bounds.iter().map(|b| clockpath_common::hist::le_index(*b).unwrap()).collect())
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
        let out = annotate(text, &s);
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
