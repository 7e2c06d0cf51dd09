//! A small parser for the Prometheus text format (0.0.4 and OpenMetrics text), enough to check
//! scrapes for internal consistency.

use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: samples and `# TYPE` declarations.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").ok_or_else(|| format!("bad labels `{s}`"))?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("bad escape in `{s}`")),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("unterminated label value in `{s}`"))?;
        out.insert(k.trim_start_matches(',').trim().to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Ok(out)
}

/// An OpenMetrics exemplar and the sample line it is attached to.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub exemplar: BTreeMap<String, String>,
    pub value: f64,
    pub timestamp: Option<f64>,
}

/// Every exemplar of an OpenMetrics text.
pub fn exemplars(text: &str) -> Result<Vec<Exemplar>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((sample, ex)) = line.split_once(" # ") else { continue };
        let (name, labels) = match sample.find('{') {
            Some(i) => {
                let j = sample.rfind('}').ok_or_else(|| format!("no closing brace: {line}"))?;
                (&sample[..i], parse_labels(&sample[i + 1..j])?)
            }
            None => (sample.split(' ').next().unwrap_or(sample), BTreeMap::new()),
        };
        let ex = ex.strip_prefix('{').ok_or_else(|| format!("exemplar without labels: {line}"))?;
        let j = ex.find('}').ok_or_else(|| format!("unterminated exemplar labels: {line}"))?;
        let exemplar = parse_labels(&ex[..j])?;
        let mut rest = ex[j + 1..].split_whitespace();
        let value = rest.next().ok_or_else(|| format!("exemplar without value: {line}"))?;
        let value = value.parse().map_err(|_| format!("bad exemplar value `{value}`: {line}"))?;
        let timestamp = match rest.next() {
            Some(t) => Some(t.parse().map_err(|_| format!("bad exemplar timestamp `{t}`: {line}"))?),
            None => None,
        };
        let label_chars: usize = exemplar.iter().map(|(k, v)| k.chars().count() + v.chars().count()).sum();
        if label_chars > 128 {
            return Err(format!("exemplar labels are {label_chars} characters; OpenMetrics allows 128: {line}"));
        }
        out.push(Exemplar { name: name.to_string(), labels, exemplar, value, timestamp });
    }
    Ok(out)
}

impl Scrape {
    pub fn parse(text: &str) -> Result<Scrape, String> {
        let mut s = Scrape::default();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let mut it = t.split_whitespace();
                if let (Some(n), Some(ty)) = (it.next(), it.next()) {
                    s.types.insert(n.to_string(), ty.to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            // Drop an OpenMetrics exemplar (` # {...} v t`).
            let line = line.split(" # ").next().unwrap_or(line);
            let (name, labels, rest) = match line.find('{') {
                Some(i) => {
                    let j = line.rfind('}').ok_or_else(|| format!("no closing brace: {line}"))?;
                    (&line[..i], parse_labels(&line[i + 1..j])?, &line[j + 1..])
                }
                None => {
                    let (n, r) = line.split_once(' ').ok_or_else(|| format!("no value: {line}"))?;
                    (n, BTreeMap::new(), r)
                }
            };
            let v = rest.split_whitespace().next().ok_or_else(|| format!("no value: {line}"))?;
            let value = match v {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| format!("bad value `{v}` in: {line}"))?,
            };
            s.samples.push(Sample { name: name.to_string(), labels, value });
        }
        Ok(s)
    }

    /// The sum of the samples named `name` whose labels include `labels` (0 if none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.named(name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.value)
            .sum()
    }

    /// Samples named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Check every histogram: buckets cumulative (non-decreasing in `le`), `_count` equal to the
    /// `+Inf` bucket, no NaN anywhere. Returns the problems found.
    pub fn check_consistency(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for s in &self.samples {
            if s.value.is_nan() {
                problems.push(format!("NaN: {} {:?}", s.name, s.labels));
            }
        }
        for (base, ty) in &self.types {
            if ty != "histogram" {
                continue;
            }
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for b in self.named(&format!("{base}_bucket")) {
                let mut l = b.labels.clone();
                let le = l.remove("le").unwrap_or_default();
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
                series.entry(l).or_default().push((le, b.value));
            }
            for (labels, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                    problems.push(format!("{base} {labels:?}: buckets not cumulative: {buckets:?}"));
                }
                let inf = buckets.last().map(|b| (b.0, b.1));
                let count = self.named(&format!("{base}_count")).find(|c| c.labels == labels).map(|c| c.value);
                match (inf, count) {
                    (Some((le, v)), Some(c)) if le.is_infinite() && v == c => {}
                    other => problems.push(format!("{base} {labels:?}: _count vs +Inf bucket: {other:?}")),
                }
            }
        }
        problems
    }

    /// Counter samples keyed by name and labels (for monotonicity checks between scrapes).
    pub fn counters(&self) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
        let mut out = BTreeMap::new();
        for s in &self.samples {
            let is_counter = s.name.ends_with("_total")
                && self
                    .types
                    .get(&s.name)
                    .or_else(|| self.types.get(s.name.trim_end_matches("_total")))
                    .is_some_and(|t| t == "counter");
            let is_hist = s.name.ends_with("_bucket") || s.name.ends_with("_count") || s.name.ends_with("_sum");
            if is_counter || is_hist {
                out.insert((s.name.clone(), s.labels.clone()), s.value);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_histograms() {
        let text = "# TYPE x_seconds histogram\nx_seconds_sum{a=\"1\"} 3.5\nx_seconds_count{a=\"1\"} 3\nx_seconds_bucket{a=\"1\",le=\"1\"} 1\nx_seconds_bucket{a=\"1\",le=\"+Inf\"} 3\n# TYPE c_total counter\nc_total{k=\"a \\\"q\\\"\"} 7\n";
        let s = Scrape::parse(text).unwrap();
        assert_eq!(s.samples.len(), 5);
        assert!(s.check_consistency().is_empty());
        assert_eq!(s.samples[4].labels["k"], "a \"q\"");
        assert_eq!(s.counters().len(), 5);
        let bad = text.replace("x_seconds_count{a=\"1\"} 3", "x_seconds_count{a=\"1\"} 4");
        assert_eq!(Scrape::parse(&bad).unwrap().check_consistency().len(), 1);
    }
}
