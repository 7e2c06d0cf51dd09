//! `clockpath compare --prometheus URL --by LABEL`: the fleet's exact histograms, compared
//! group against group. Each group's bucket counts are the increase of
//! `clockpath_segment_duration_seconds_bucket` over `--range`, summed over the group's
//! instances; medians, variances and their bootstrap CIs come from resampling those counts
//! (`stats::buckets`), in the same verdict format as the offline `compare`. What a bucket count
//! cannot say — where in its bucket a value lay — is stated as the resolution.

use std::{collections::BTreeMap, path::Path, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clockpath_offline::{
    analysis::compare::{Comparison, SamplingUnit, UNITS, verdict},
    stats::buckets::{self, BucketCounts},
};
use serde::Serialize;
use serde_json::Value;

use super::{CliError, CompareArgs, config_error, load_config};

/// The histogram every comparison reads.
const HISTOGRAM: &str = "clockpath_segment_duration_seconds";
/// Labels `--by` maps to a label of `clockpath_environment_info` (joined on the instance):
/// the histograms do not carry them.
const FROM_ENVIRONMENT: &[(&str, &str)] =
    &[("cstate", "cstate_limit"), ("cstate_limit", "cstate_limit"), ("governor", "governor")];

/// One comparison of the fleet: the offline verdict's fields, the histograms' resolution and
/// where the counts came from.
#[derive(Debug, Serialize)]
pub struct FleetComparison {
    #[serde(flatten)]
    pub comparison: Comparison,
    /// Width of the widest bucket holding either median, ns: the finest difference of medians
    /// the histograms resolve.
    pub resolution_ns: f64,
    /// Median of each group, ns.
    pub a_median_ns: f64,
    pub b_median_ns: f64,
    pub range: String,
    pub label: String,
}

/// The largest share of a group's variance the bucket midpoints may hide (w²/12 per value)
/// for a variance ratio to be stated.
const MAX_HIDDEN_VARIANCE: f64 = 0.25;

/// A chain segment's groups: label value → cumulative (le, count) pairs.
type Groups = BTreeMap<String, Vec<(f64, f64)>>;

/// A Prometheus HTTP API.
struct Prometheus {
    base: String,
    agent: ureq::Agent,
}

impl Prometheus {
    fn new(url: &str) -> Result<Prometheus, CliError> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(config_error(anyhow::anyhow!("--prometheus `{url}`: expected an http:// or https:// URL")));
        }
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
        Ok(Prometheus { base, agent })
    }

    /// An instant query's `data.result`.
    fn query(&self, promql: &str) -> Result<Vec<Value>, CliError> {
        let url = format!("{}/api/v1/query", self.base);
        let body = match self.agent.get(&url).query("query", promql).call() {
            Ok(r) => r.into_string().with_context(|| format!("reading the answer of {url}"))?,
            // Prometheus answers a bad query with 400/422 and a JSON error.
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                let why = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| Some(format!("{}: {}", v["errorType"].as_str()?, v["error"].as_str()?)))
                    .unwrap_or(text);
                return Err(anyhow::anyhow!(
                    "Prometheus at {} rejected the query (HTTP {code}): {why}\n  query: {promql}",
                    self.base
                )
                .into());
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot reach Prometheus at {}", self.base)).into());
            }
        };
        let v: Value = serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))?;
        if v["status"] != "success" {
            return Err(anyhow::anyhow!("Prometheus at {}: {}\n  query: {promql}", self.base, v["error"]).into());
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

fn quote(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

pub(super) fn compare_cmd(config: Option<&Path>, args: CompareArgs) -> Result<ExitCode, CliError> {
    let loaded = load_config(config)?;
    // B, level and seed as the offline commands take them: [windows.bootstrap], then flags.
    let mut boot = loaded.config.windows.bootstrap;
    boot.resamples = args.stats.resamples.unwrap_or(boot.resamples);
    boot.level = args.stats.level.unwrap_or(boot.level);
    boot.seed = args.stats.seed.unwrap_or(boot.seed);
    boot.validate().map_err(|e| config_error(anyhow::anyhow!("{e}")))?;
    let url = args.prometheus.as_deref().context("--prometheus")?;
    let by = args.group_by.as_deref().context("--by")?;
    let prom = Prometheus::new(url)?;
    let range = &args.range;
    let mut selector = vec![];
    if let Some(c) = &args.chain {
        selector.push(format!("chain=\"{}\"", quote(c)));
    }
    if let Some(s) = &args.segment {
        selector.push(format!("segment=\"{}\"", quote(s)));
    }
    let increase = format!("increase({HISTOGRAM}_bucket{{{}}}[{range}])", selector.join(","));
    let (label, promql) = match FROM_ENVIRONMENT.iter().find(|(k, _)| *k == by) {
        Some((_, l)) => (
            *l,
            format!(
                "sum by (chain, segment, {l}, le) ({increase} * on (instance, job) group_left ({l}) max by (instance, job, {l}) (clockpath_environment_info))"
            ),
        ),
        None => (by, format!("sum by (chain, segment, {by}, le) ({increase})")),
    };
    let result = prom.query(&promql)?;
    if result.is_empty() {
        let what = match (&args.chain, &args.segment) {
            (Some(c), Some(s)) => format!("chain `{c}`, segment `{s}`"),
            (Some(c), None) => format!("chain `{c}`"),
            (None, Some(s)) => format!("segment `{s}`"),
            (None, None) => "any chain".into(),
        };
        return Err(config_error(anyhow::anyhow!(
            "Prometheus at {url} has no {HISTOGRAM} data for {what} over the last {range}{}",
            if FROM_ENVIRONMENT.iter().any(|(k, _)| *k == by) {
                " (or no clockpath_environment_info to join)"
            } else {
                ""
            }
        )));
    }
    let mut series: BTreeMap<(String, String), Groups> = BTreeMap::new();
    for s in &result {
        let m = &s["metric"];
        let text = |k: &str| m[k].as_str().unwrap_or("").to_string();
        let le = match m["le"].as_str() {
            Some("+Inf") => f64::INFINITY,
            Some(v) => v.parse().unwrap_or(f64::NAN),
            None => continue,
        };
        let count: f64 = s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
        series.entry((text("chain"), text("segment"))).or_default().entry(text(label)).or_default().push((le, count));
    }
    if series.values().all(|groups| groups.keys().all(String::is_empty)) {
        return Err(config_error(anyhow::anyhow!(
            "no {HISTOGRAM} series carries the label `{label}` (try env, instance, cstate, governor, or a static label of [environment.labels])"
        )));
    }
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for ((chain, segment), groups) in series {
        let mut with_data: Vec<(String, BucketCounts)> = Vec::new();
        for (g, le) in groups {
            if g.is_empty() {
                notes.push(format!("{chain} {segment}: series without `{label}` left out"));
                continue;
            }
            match BucketCounts::from_cumulative(le) {
                Ok(h) => with_data.push((g, h)),
                Err(_) => notes.push(format!("{chain} {segment}: group {label}={g} has no data over {range}")),
            }
        }
        if with_data.len() < 2 {
            notes.push(format!(
                "{chain} {segment}: {} group(s) with data ({}); nothing to compare",
                with_data.len(),
                with_data.iter().map(|(g, _)| g.as_str()).collect::<Vec<_>>().join(", ")
            ));
            continue;
        }
        // Seconds → ns, as the offline comparison reports.
        for (_, h) in &mut with_data {
            h.bounds.iter_mut().for_each(|b| *b *= 1e9);
        }
        let (a_name, a) = &with_data[0];
        for (b_name, b) in &with_data[1..] {
            let d =
                buckets::median_difference_ci(b, a, &boot).map_err(|e| anyhow::anyhow!("{chain} {segment}: {e}"))?;
            let r = buckets::variance_ratio_ci(b, a, &boot).map_err(|e| anyhow::anyhow!("{chain} {segment}: {e}"))?;
            let resolution = a.width_at_median().max(b.width_at_median());
            // Never a direction the buckets cannot resolve, never an infinite ratio.
            let mut notes = Vec::new();
            let d = if !d.contains(0.0) && d.estimate.abs() < resolution {
                let why = format!(
                    "b − a = {:.3} µs is below the buckets' resolution of {:.3} µs at the medians",
                    d.estimate / 1e3,
                    resolution / 1e3
                );
                notes.push(format!("median difference: {why}"));
                Err(why)
            } else {
                Ok(d)
            };
            // A ratio of midpoint variances means something only where the binning hides little
            // of each group's spread (a group inside one bucket hides all of it).
            let hidden = |h: &BucketCounts| h.binning_variance() / h.variance();
            let r = if !(r.is_finite() && hidden(a) < MAX_HIDDEN_VARIANCE && hidden(b) < MAX_HIDDEN_VARIANCE) {
                let why = format!(
                    "the buckets hide {:.0} % and {:.0} % of the groups' variances (at most {:.0} % resolves a ratio)",
                    (100.0 * hidden(a)).min(100.0),
                    (100.0 * hidden(b)).min(100.0),
                    100.0 * MAX_HIDDEN_VARIANCE
                );
                notes.push(format!("variance ratio: {why}"));
                Err(why)
            } else {
                Ok(r)
            };
            let v = verdict(a_name, b_name, d.as_ref().map_err(String::as_str), r.as_ref().map_err(String::as_str));
            results.push(FleetComparison {
                comparison: Comparison {
                    chain: chain.clone(),
                    segment: segment.clone(),
                    a: a_name.clone(),
                    b: b_name.clone(),
                    unit: SamplingUnit::Observation,
                    method: format!(
                        "multinomial resampling of the bucket counts (B = {}); medians interpolated in their buckets, variances at bucket midpoints",
                        boot.resamples
                    ),
                    a_sessions: 0,
                    b_sessions: 0,
                    a_runs: a.total() as usize,
                    b_runs: b.total() as usize,
                    strata: Vec::new(),
                    median_difference: d.ok(),
                    variance_ratio: r.ok(),
                    degrees_of_freedom: None,
                    a_between_session_share: None,
                    b_between_session_share: None,
                    units: UNITS,
                    notes,
                    verdict: v,
                },
                resolution_ns: resolution,
                a_median_ns: a.median(),
                b_median_ns: b.median(),
                range: range.clone(),
                label: label.to_string(),
            });
        }
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    if results.is_empty() {
        return Err(config_error(anyhow::anyhow!(
            "nothing to compare: no chain segment has two `{label}` groups with data over the last {range}"
        )));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results).context("serializing")?);
    } else {
        println!(
            "from {url}: increase of {HISTOGRAM} over {range}, by {label}; medians interpolated in their buckets, variances at bucket midpoints, CIs by multinomial resampling of the counts (no outlier rejection: histograms have no runs)"
        );
        for f in &results {
            let r = &f.comparison;
            println!(
                "{} {} ({} vs {}, n = {} / {}): {} [resolution {:.3} µs]",
                r.chain,
                r.segment,
                r.b,
                r.a,
                r.b_runs,
                r.a_runs,
                r.verdict,
                f.resolution_ns / 1e3
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
