//! `clockpath compare --prometheus URL --by LABEL`: the fleet's exact histograms, compared
//! group against group. Each instance's bucket counts are the increase of
//! `clockpath_segment_duration_seconds_bucket` over `--range`. The instance is the unit, as
//! the session is offline: with more than one instance on a side, each instance gives its
//! median and log variance, and the group effect is a t interval over instances
//! (`stats::session_effect`), so the spread between hosts is in it however many observations
//! each has. One instance each side: multinomial resampling of the two instances' counts
//! (`stats::buckets`), a statement about those two instances. What a bucket count cannot say —
//! where in its bucket a value lay — is stated as the resolution; instances whose bucket
//! layouts differ are compared on the bounds they share (cumulative counts at a shared bound
//! are exact), and said so.

use std::{collections::BTreeMap, path::Path, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clockpath_offline::{
    analysis::compare::{Comparison, MIN_SESSION_RUNS, SamplingUnit, UNITS, verdict},
    stats::{
        self, Interval, SessionEffectError, SessionValue,
        buckets::{self, BucketCounts},
    },
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

/// A chain segment's groups: label value → instance → cumulative (le in ns, count) pairs.
type Groups = BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>;

/// Every instance on the bucket bounds all instances share: a cumulative count at a bound is
/// exact, so dropping the bounds some instances lack re-bins the others without error. Says
/// so when layouts differed; refuses when fewer than two finite bounds are shared.
fn common_layout(groups: &mut Groups) -> Result<Option<String>, String> {
    let layouts: BTreeMap<&str, Vec<u64>> = groups
        .values()
        .flat_map(|g| g.iter())
        .map(|(i, le)| {
            let mut b: Vec<u64> = le.iter().filter(|(b, _)| b.is_finite()).map(|(b, _)| b.to_bits()).collect();
            b.sort_unstable();
            b.dedup();
            (i.as_str(), b)
        })
        .collect();
    let Some(first) = layouts.values().next() else { return Ok(None) };
    if layouts.values().all(|l| l == first) {
        return Ok(None);
    }
    let shared: Vec<u64> =
        first.iter().copied().filter(|b| layouts.values().all(|l| l.binary_search(b).is_ok())).collect();
    let sizes: Vec<String> = layouts.iter().map(|(i, l)| format!("{i}: {} bounds", l.len())).collect();
    if shared.len() < 2 {
        return Err(format!(
            "the instances' bucket layouts differ and share {} finite bound(s) ({}): nothing to compare them on",
            shared.len(),
            sizes.join(", ")
        ));
    }
    for le in groups.values_mut().flat_map(|g| g.values_mut()) {
        le.retain(|(b, _)| !b.is_finite() || shared.binary_search(&b.to_bits()).is_ok());
    }
    Ok(Some(format!(
        "the instances' bucket layouts differ ({}): compared on the {} bounds they share",
        sizes.join(", "),
        shared.len()
    )))
}

/// A group's instances with data (ns bounds), and their counts summed.
struct Group {
    name: String,
    instances: Vec<(String, BucketCounts)>,
    sum: BucketCounts,
}

fn group(name: &str, instances: &BTreeMap<String, Vec<(f64, f64)>>) -> Option<Group> {
    let with_data: Vec<(String, BucketCounts)> = instances
        .iter()
        .filter_map(|(i, le)| BucketCounts::from_cumulative(le.clone()).ok().map(|h| (i.clone(), h)))
        .collect();
    let mut summed: BTreeMap<u64, f64> = BTreeMap::new();
    for le in instances.values() {
        for (b, c) in le {
            *summed.entry(b.to_bits()).or_default() += c;
        }
    }
    let sum = BucketCounts::from_cumulative(summed.into_iter().map(|(b, c)| (f64::from_bits(b), c)).collect()).ok()?;
    Some(Group { name: name.to_string(), instances: with_data, sum })
}

/// The comparison over instances (several on a side): t intervals on instance medians and log
/// midpoint variances; instances with fewer than `MIN_SESSION_RUNS` observations, and (for the
/// variance) those whose buckets hide too much of their spread, are left out and counted.
fn over_instances<'a>(
    a: &'a Group,
    b: &'a Group,
    level: f64,
    notes: &mut Vec<String>,
) -> (Result<Interval, String>, Result<Interval, String>, Option<usize>) {
    let usable = |g: &'a Group| -> Vec<&'a BucketCounts> {
        g.instances.iter().map(|(_, h)| h).filter(|h| h.total() >= MIN_SESSION_RUNS as u64).collect()
    };
    let (ua, ub) = (usable(a), usable(b));
    let dropped = a.instances.len() + b.instances.len() - ua.len() - ub.len();
    if dropped > 0 {
        notes.push(format!("{dropped} instance(s) left out: fewer than {MIN_SESSION_RUNS} observations"));
    }
    let values = |f: &dyn Fn(&BucketCounts) -> Option<f64>| -> Vec<SessionValue> {
        ua.iter()
            .map(|h| (false, h))
            .chain(ub.iter().map(|h| (true, h)))
            .filter_map(|(in_b, h)| {
                f(h).filter(|v| v.is_finite()).map(|value| SessionValue { in_b, stratum: 0, value })
            })
            .collect()
    };
    let medians = values(&|h| Some(h.median()));
    let resolved = |h: &BucketCounts| h.binning_variance() / h.variance() < MAX_HIDDEN_VARIANCE;
    let log_vars = values(&|h| resolved(h).then(|| h.variance().ln()));
    if log_vars.len() < medians.len() {
        notes.push(format!(
            "variance ratio over {} of {} instances (the buckets hide more than {:.0} % of the others' variances)",
            log_vars.len(),
            medians.len(),
            100.0 * MAX_HIDDEN_VARIANCE
        ));
    }
    let explain = |e: SessionEffectError, what: &str| match e {
        SessionEffectError::NoFreedom { sessions } => format!(
            "too few to compare: {sessions} instance(s) with {what} leave no degrees of freedom for the spread between instances"
        ),
        other => other.to_string(),
    };
    let effect = stats::session_effect(&medians, level);
    let df = effect.as_ref().ok().map(|e| e.df);
    let d = effect.map(|e| e.interval).map_err(|e| explain(e, "a median"));
    let r = stats::session_variance_ratio(&log_vars, level)
        .map(|e| e.interval)
        .map_err(|e| explain(e, "a resolved variance"));
    (d, r, df)
}

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
    // Per instance: the instance is the unit of the comparison.
    let (label, promql) = match FROM_ENVIRONMENT.iter().find(|(k, _)| *k == by) {
        Some((_, l)) => (
            *l,
            format!(
                "sum by (chain, segment, instance, {l}, le) ({increase} * on (instance, job) group_left ({l}) max by (instance, job, {l}) (clockpath_environment_info))"
            ),
        ),
        None if by == "instance" => (by, format!("sum by (chain, segment, instance, le) ({increase})")),
        None => (by, format!("sum by (chain, segment, instance, {by}, le) ({increase})")),
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
            // Seconds → ns, as the offline comparison reports.
            Some(v) => v.parse::<f64>().map_or(f64::NAN, |s| s * 1e9),
            None => continue,
        };
        let count: f64 = s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
        series
            .entry((text("chain"), text("segment")))
            .or_default()
            .entry(text(label))
            .or_default()
            .entry(text("instance"))
            .or_default()
            .push((le, count));
    }
    if series.values().all(|groups| groups.keys().all(String::is_empty)) {
        return Err(config_error(anyhow::anyhow!(
            "no {HISTOGRAM} series carries the label `{label}` (try env, instance, cstate, governor, or a static label of [environment.labels])"
        )));
    }
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for ((chain, segment), mut groups) in series {
        if groups.remove("").is_some() {
            notes.push(format!("{chain} {segment}: series without `{label}` left out"));
        }
        let layout = match common_layout(&mut groups) {
            Ok(n) => n,
            Err(why) => {
                notes.push(format!("{chain} {segment}: {why}"));
                continue;
            }
        };
        let mut with_data: Vec<Group> = Vec::new();
        for (g, instances) in &groups {
            match group(g, instances) {
                Some(h) => with_data.push(h),
                None => notes.push(format!("{chain} {segment}: group {label}={g} has no data over {range}")),
            }
        }
        if with_data.len() < 2 {
            notes.push(format!(
                "{chain} {segment}: {} group(s) with data ({}); nothing to compare",
                with_data.len(),
                with_data.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
            continue;
        }
        let a = &with_data[0];
        for b in &with_data[1..] {
            let (ha, hb) = (&a.sum, &b.sum);
            let resolution = ha.width_at_median().max(hb.width_at_median());
            let mut notes: Vec<String> = layout.iter().cloned().collect();
            let one_each = a.instances.len() == 1 && b.instances.len() == 1;
            let (d, r, df, unit, method) = if one_each {
                notes.push(format!(
                    "one instance on each side ({} and {}): the intervals are about these two instances, not about {} and {} in general",
                    a.instances[0].0, b.instances[0].0, a.name, b.name
                ));
                let d = buckets::median_difference_ci(hb, ha, &boot)
                    .map_err(|e| anyhow::anyhow!("{chain} {segment}: {e}"))?;
                let r =
                    buckets::variance_ratio_ci(hb, ha, &boot).map_err(|e| anyhow::anyhow!("{chain} {segment}: {e}"))?;
                // A ratio of midpoint variances means something only where the binning hides
                // little of each group's spread (a group inside one bucket hides all of it).
                let hidden = |h: &BucketCounts| h.binning_variance() / h.variance();
                let r = if r.is_finite() && hidden(ha) < MAX_HIDDEN_VARIANCE && hidden(hb) < MAX_HIDDEN_VARIANCE {
                    Ok(r)
                } else {
                    Err(format!(
                        "the buckets hide {:.0} % and {:.0} % of the groups' variances (at most {:.0} % resolves a ratio)",
                        (100.0 * hidden(ha)).min(100.0),
                        (100.0 * hidden(hb)).min(100.0),
                        100.0 * MAX_HIDDEN_VARIANCE
                    ))
                };
                let method = format!(
                    "multinomial resampling of the bucket counts (B = {}); medians interpolated in their buckets, variances at bucket midpoints",
                    boot.resamples
                );
                (Ok(d), r, None, SamplingUnit::Observation, method)
            } else {
                let (d, r, df) = over_instances(a, b, boot.level, &mut notes);
                let method = format!(
                    "t on instance medians (interpolated in their buckets) and log midpoint variances ({} df)",
                    df.map_or("no".into(), |d| d.to_string())
                );
                (d, r, df, SamplingUnit::Instance, method)
            };
            // Never a direction the buckets cannot resolve, never an infinite ratio.
            let d = match d {
                Ok(d) if !d.contains(0.0) && d.estimate.abs() < resolution => Err(format!(
                    "b − a = {:.3} µs is below the buckets' resolution of {:.3} µs at the medians",
                    d.estimate / 1e3,
                    resolution / 1e3
                )),
                other => other,
            };
            let r = r.and_then(|r| if r.is_finite() { Ok(r) } else { Err("no finite ratio".to_string()) });
            for (what, e) in [("median difference", &d), ("variance ratio", &r)] {
                if let Err(why) = e {
                    notes.push(format!("{what}: {why}"));
                }
            }
            let mut v =
                verdict(&a.name, &b.name, d.as_ref().map_err(String::as_str), r.as_ref().map_err(String::as_str));
            if one_each {
                v.push_str("; between these two instances only");
            } else {
                v.push_str(&format!(" ({} vs {} instances)", b.instances.len(), a.instances.len()));
            }
            results.push(FleetComparison {
                comparison: Comparison {
                    chain: chain.clone(),
                    segment: segment.clone(),
                    a: a.name.clone(),
                    b: b.name.clone(),
                    unit,
                    method,
                    a_sessions: a.instances.len(),
                    b_sessions: b.instances.len(),
                    a_runs: ha.total() as usize,
                    b_runs: hb.total() as usize,
                    strata: Vec::new(),
                    median_difference: d.ok(),
                    variance_ratio: r.ok(),
                    degrees_of_freedom: df,
                    a_between_session_share: None,
                    b_between_session_share: None,
                    units: UNITS,
                    notes,
                    verdict: v,
                },
                resolution_ns: resolution,
                a_median_ns: ha.median(),
                b_median_ns: hb.median(),
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
            "from {url}: increase of {HISTOGRAM} over {range}, by {label}, per instance; medians interpolated in their buckets, variances at bucket midpoints; with several instances on a side the instance is the unit (t intervals), with one each the counts are resampled (no outlier rejection: histograms have no runs)"
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Cumulative (le, count) pairs of `counts` in the buckets with upper bounds `bounds` (ns,
    /// as the query's answer is read), and +Inf.
    fn cumulative(bounds: &[f64], counts: &[f64]) -> Vec<(f64, f64)> {
        let mut c = 0.0;
        let mut v: Vec<(f64, f64)> = bounds
            .iter()
            .zip(counts)
            .map(|(b, n)| {
                c += n;
                (*b, c)
            })
            .collect();
        v.push((f64::INFINITY, c));
        v
    }

    #[test]
    fn instances_with_different_layouts_are_compared_on_the_bounds_they_share() {
        let fine = cumulative(&[1000.0, 2000.0, 3000.0, 4000.0], &[10.0, 20.0, 30.0, 40.0]);
        let coarse = cumulative(&[2000.0, 4000.0], &[30.0, 70.0]);
        let mut groups: Groups = BTreeMap::from([
            ("a".to_string(), BTreeMap::from([("h1".to_string(), fine.clone())])),
            ("b".to_string(), BTreeMap::from([("h2".to_string(), coarse.clone())])),
        ]);
        let note = common_layout(&mut groups).unwrap().expect("a note");
        assert!(
            note.contains("h1: 4 bounds") && note.contains("h2: 2 bounds") && note.contains("the 2 bounds"),
            "{note}"
        );
        // The fine instance, re-binned, has exactly the coarse one's counts.
        assert_eq!(groups["a"]["h1"], coarse);
        // Identical populations on different layouts: no variance "difference" any more.
        let (a, b) = (group("a", &groups["a"]).unwrap(), group("b", &groups["b"]).unwrap());
        assert_eq!(a.sum.counts, b.sum.counts);
        // Same layouts: nothing said, nothing changed.
        let mut same: Groups = BTreeMap::from([
            ("a".to_string(), BTreeMap::from([("h1".to_string(), fine.clone())])),
            ("b".to_string(), BTreeMap::from([("h2".to_string(), fine.clone())])),
        ]);
        assert_eq!(common_layout(&mut same), Ok(None));
        // Nothing shared: refused.
        let other = cumulative(&[1500.0, 2500.0], &[1.0, 1.0]);
        let mut disjoint: Groups = BTreeMap::from([
            ("a".to_string(), BTreeMap::from([("h1".to_string(), fine)])),
            ("b".to_string(), BTreeMap::from([("h2".to_string(), other)])),
        ]);
        assert!(common_layout(&mut disjoint).unwrap_err().contains("share 0 finite bound(s)"));
    }

    #[test]
    fn several_instances_make_the_instance_the_unit() {
        // Three instances a side; within each group the instances' medians differ by a bucket
        // or more, the groups not at all: over instances no difference is found, where the
        // summed counts of thousands of observations would find one.
        let bounds: Vec<f64> = (1..=20).map(|i| 1000.0 * i as f64).collect();
        let at = |centre: usize| -> Vec<(f64, f64)> {
            let counts: Vec<f64> = (0..20usize).map(|i| if i.abs_diff(centre) <= 1 { 1000.0 } else { 0.0 }).collect();
            cumulative(&bounds, &counts)
        };
        let side = |centres: [usize; 3]| -> BTreeMap<String, Vec<(f64, f64)>> {
            centres.iter().enumerate().map(|(i, c)| (format!("i{c}-{i}"), at(*c))).collect()
        };
        let (ga, gb) = (side([4, 8, 12]), side([5, 9, 11]));
        let (a, b) = (group("a", &ga).unwrap(), group("b", &gb).unwrap());
        let mut notes = Vec::new();
        let (d, r, df) = over_instances(&a, &b, 0.95, &mut notes);
        let d = d.unwrap();
        assert_eq!(df, Some(4));
        assert!(d.contains(0.0), "{d:?}");
        let pooled = buckets::median_difference_ci(&b.sum, &a.sum, &stats::Bootstrap::default()).unwrap();
        assert!(d.upper - d.lower > 5.0 * (pooled.upper - pooled.lower), "{d:?} vs {pooled:?}");
        assert!(r.is_ok(), "{r:?} {notes:?}");
    }
}
