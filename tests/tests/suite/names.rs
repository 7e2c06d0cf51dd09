//! Metric names the exporter exposes (exporter/clockpath/src/exposition/names.rs) and the
//! recording rules make (rules/clockpath.rules.yml), and the metric names a PromQL expression
//! uses: so the dashboards and the rules only query series that exist.

use std::collections::BTreeSet;

use clockpath_tests::workspace;

/// Every series name clockpath exposes. names.rs gives counters without `_total` and info
/// metrics without `_info`; histograms add `_bucket`, `_sum` and `_count`. Any of these suffixes
/// is accepted on any name (the check is that the family exists).
pub fn exposed() -> BTreeSet<String> {
    let path = workspace().join("exporter/clockpath/src/exposition/names.rs");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else { continue };
        let Some((name, value)) = rest.split_once(": &str = \"") else { continue };
        if name.ends_with("_HELP") {
            continue;
        }
        let metric = value.split('"').next().expect("a string literal");
        for suffix in ["", "_total", "_info", "_bucket", "_sum", "_count"] {
            out.insert(format!("{metric}{suffix}"));
        }
    }
    assert!(out.len() > 100, "too few metric names in {}: {out:?}", path.display());
    out
}

/// The recording rules' names, in file order.
pub fn recorded() -> Vec<String> {
    let path = workspace().join("rules/clockpath.rules.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- record:").or_else(|| l.trim().strip_prefix("record:")))
        .map(|r| r.trim().to_string())
        .collect()
}

/// The metric names an expression selects: identifiers outside quoted strings and outside
/// `$variables` that are clockpath's (`clockpath_…`), the process's (`process_…`), recording
/// rules (`a:b:c`) or Prometheus' `up`. Function names, keywords and label names are neither.
pub fn used_by(expr: &str) -> Vec<String> {
    let is_word = |d: char| d.is_ascii_alphanumeric() || d == '_' || d == ':';
    let mut out = Vec::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            // A string (backslash escapes included): label values and regexes.
            let mut escaped = false;
            for (_, d) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
        } else if c == '$' {
            // A variable: `$name` or `${name}`.
            while chars.next_if(|&(_, d)| d == '{' || is_word(d)).is_some() {}
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut end = i + c.len_utf8();
            while let Some((j, d)) = chars.next_if(|&(_, d)| is_word(d)) {
                end = j + d.len_utf8();
            }
            let word = &expr[i..end];
            if word.starts_with("clockpath_")
                || word.starts_with("process_")
                || word.matches(':').count() == 2
                || word == "up"
            {
                out.push(word.to_string());
            }
        }
    }
    out
}

/// The template variables an expression references (`$name`, `${name}`, `${name:format}`).
pub fn variables_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in expr.match_indices('$') {
        let rest = expr[i + 1..].strip_prefix('{').unwrap_or(&expr[i + 1..]);
        let name: String = rest.chars().take_while(|d| d.is_ascii_alphanumeric() || *d == '_').collect();
        out.push(name);
    }
    out
}
