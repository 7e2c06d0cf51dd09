//! Clock offsets between trace sets on reference time (`clockpath analyze --align LABEL`).
//!
//! A hit with `reference_ns` gives the offset of its trace's time base (the clock
//! `timestamp_ns` is on: for clockpath, the machine's kernel CLOCK_MONOTONIC) from the
//! reference at reference time r = `reference_ns`: e = `timestamp_ns − reference_ns` (signed,
//! ns). Hits are grouped by one label (`env` by
//! default: host against VM). For every pair of groups (A, B), in label-value order, each point
//! of A is paired with the point of B nearest in reference time, when they are at most
//! `within_ns` apart; d = e_A − e_B is then A's clock minus B's at the same true time.
//!
//! Consecutive differences are strongly autocorrelated (a clock's error wanders slowly), so the
//! pairs are not bootstrapped one by one: the differences are binned by second of reference
//! time, each bin gives its median, and the offset is the median of the bin medians with a
//! bootstrap percentile CI over the bins — a block bootstrap with one-second blocks. The
//! smallest and largest bin medians show how much the offset drifted.
//!
//! Memory: not every hit is kept. Per group, each 10-ms slot of reference time keeps one point
//! (the earliest in reference time, ties to the smaller error), so at most 100 points per
//! second of reference time per group, 16 bytes each: 1.6 kB per second of trace and group.
//! The choice of point does not depend on the order of the input, and at the default window
//! of 1 s a 10-ms slot changes nothing measurable: clocks drift by microseconds per second.
//!
//! A 1PPS reference gives the offset modulo one second: whole seconds need a time-of-day
//! source (see [`PPS_NOTE`]).

use std::{borrow::Cow, collections::BTreeSet, fmt::Write as _};

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::{label_value, units::Unit};
use crate::{
    stats::{self, Bootstrap, Interval},
    trace::read::{Hit, Interner, labels_of},
};

/// The label groups are formed by unless told otherwise.
pub const DEFAULT_LABEL: &str = "env";
/// How far apart in reference time two points may be and still be paired, by default.
pub const DEFAULT_WITHIN_NS: u64 = 1_000_000_000;
/// One point is kept per slot of this much reference time and group (100 per second).
pub const SLOT_NS: u64 = 10_000_000;
/// The differences are binned, and the bins bootstrapped, by this much reference time.
pub const BIN_NS: u64 = 1_000_000_000;
/// Below this many bins an offset is not established.
pub const MIN_BINS: usize = 10;
/// The label that names a hit's reference source (`pps:/dev/pps0`, `system`).
pub const REFERENCE_LABEL: &str = "reference";
/// What a 1PPS reference can and cannot tell.
pub const PPS_NOTE: &str = "A 1PPS reference gives the offset modulo one second; whole seconds need a time-of-day source — an offset of 1.111 s between clocks that both track PPS shows up as the two clocks' different sub-second errors.";

/// How trace sets are aligned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlignOptions {
    /// The label whose values are the trace sets compared (`env`: host, vm).
    pub label: String,
    /// Points of two groups further apart in reference time than this are not paired (ns).
    pub within_ns: u64,
}

impl Default for AlignOptions {
    fn default() -> Self {
        AlignOptions { label: DEFAULT_LABEL.into(), within_ns: DEFAULT_WITHIN_NS }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    /// Hits have a reference time, but none has the label to group them by.
    #[error("no hit has the label `{label}` (the hits with reference_ns have: {seen})")]
    NoSuchLabel { label: String, seen: String },
}

/// A clock's error e (ns) at reference time r (ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    r: u64,
    e: i64,
}

impl Point {
    fn slot(self) -> u64 {
        self.r / SLOT_NS
    }
}

/// One value of the label.
#[derive(Debug, Default)]
struct Group {
    name: String,
    /// Hits with reference_ns.
    referenced: u64,
    /// One point per slot, sorted, while `sorted`; points out of order are appended and
    /// merged in by `compact`.
    points: Vec<Point>,
    sorted: bool,
    /// Length after the last compaction (the next one comes at twice as many).
    compacted: usize,
    /// `reference` label values of the hits with and without reference_ns.
    references: BTreeSet<String>,
    unreferenced: BTreeSet<String>,
}

impl Group {
    fn new(name: String) -> Group {
        Group { name, sorted: true, ..Default::default() }
    }

    fn push(&mut self, p: Point) {
        self.referenced += 1;
        if self.sorted {
            match self.points.last_mut() {
                Some(last) if last.slot() == p.slot() => {
                    if p < *last {
                        *last = p;
                    }
                    return;
                }
                Some(last) if last.slot() < p.slot() => {
                    self.points.push(p);
                    return;
                }
                Some(_) => self.sorted = false,
                None => {
                    self.points.push(p);
                    return;
                }
            }
        }
        self.points.push(p);
        if self.points.len() >= 2 * self.compacted.max(4096) {
            self.compact();
        }
    }

    /// Sort and keep the least point of each slot.
    fn compact(&mut self) {
        self.points = Self::compacted(std::mem::take(&mut self.points));
        self.compacted = self.points.len();
        self.sorted = true;
    }

    fn compacted(mut points: Vec<Point>) -> Vec<Point> {
        points.sort_unstable();
        points.dedup_by(|later, first| later.slot() == first.slot());
        points
    }

    /// The points, sorted, one per slot.
    fn sorted_points(&self) -> Cow<'_, [Point]> {
        if self.sorted { Cow::Borrowed(&self.points) } else { Cow::Owned(Self::compacted(self.points.clone())) }
    }
}

/// What a label set of the input means here (cached per interned label set).
#[derive(Clone, Copy, Debug, Default)]
struct LabelSet {
    group: Option<usize>,
    /// Its `reference` value was recorded for a hit with / without reference_ns.
    seen_with: bool,
    seen_without: bool,
}

/// The points of every group, gathered while the traces are read (see the module docs).
#[derive(Debug, Default)]
pub struct ClockPoints {
    label: String,
    groups: Vec<Group>,
    by_name: FxHashMap<String, usize>,
    sets: FxHashMap<u32, LabelSet>,
    /// Hits with reference_ns, in all and without the label.
    referenced: u64,
    ungrouped: u64,
    /// Label keys of the hits with reference_ns.
    keys: BTreeSet<String>,
}

impl ClockPoints {
    /// Points grouped by `label`.
    pub fn new(label: &str) -> ClockPoints {
        ClockPoints { label: label.to_string(), ..Default::default() }
    }

    /// Hits read with a reference time.
    pub fn referenced(&self) -> u64 {
        self.referenced
    }

    /// Take `hit` into account (`names` interned its labels).
    pub fn add(&mut self, hit: &Hit, names: &Interner) {
        let set = match self.sets.get(&hit.labels) {
            Some(s) => *s,
            None => {
                let labels = labels_of(names, hit.labels);
                let group = label_value(&labels, &self.label).map(|v| match self.by_name.get(&v) {
                    Some(&i) => i,
                    None => {
                        self.groups.push(Group::new(v.clone()));
                        self.by_name.insert(v, self.groups.len() - 1);
                        self.groups.len() - 1
                    }
                });
                let s = LabelSet { group, ..Default::default() };
                self.sets.insert(hit.labels, s);
                s
            }
        };
        let referenced = hit.reference_ns.is_some();
        if (referenced && !set.seen_with) || (!referenced && !set.seen_without) {
            // First hit of this label set with (or without) a reference: note its labels.
            let labels = labels_of(names, hit.labels);
            if referenced {
                self.keys.extend(labels.iter().map(|(k, _)| k.clone()));
            }
            if let Some(g) = set.group
                && let Some(v) = label_value(&labels, REFERENCE_LABEL)
            {
                let g = &mut self.groups[g];
                let values = if referenced { &mut g.references } else { &mut g.unreferenced };
                values.insert(v);
            }
            if let Some(s) = self.sets.get_mut(&hit.labels) {
                let seen = if referenced { &mut s.seen_with } else { &mut s.seen_without };
                *seen = true;
            }
        }
        let Some(r) = hit.reference_ns else { return };
        self.referenced += 1;
        let Some(g) = set.group else {
            self.ungrouped += 1;
            return;
        };
        let e = (i128::from(hit.timestamp_ns) - i128::from(r)).clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        self.groups[g].push(Point { r, e });
    }

    /// Whether the label can group these hits: an error when hits have a reference time but
    /// none carries the label.
    pub fn check_label(&self) -> Result<(), AlignError> {
        if self.referenced > 0 && self.groups.is_empty() {
            let seen: Vec<&str> = self.keys.iter().map(String::as_str).collect();
            return Err(AlignError::NoSuchLabel {
                label: self.label.clone(),
                seen: if seen.is_empty() { "no labels".into() } else { seen.join(", ") },
            });
        }
        Ok(())
    }

    /// The offset of every pair of groups (see the module docs), and notes on what could not
    /// be aligned. Nothing when no hit has a reference time.
    pub fn align(&self, within_ns: u64, boot: &Bootstrap) -> Alignment {
        let mut out = Alignment::default();
        if self.referenced == 0 {
            return out;
        }
        if let Err(e) = self.check_label() {
            out.notes.push(format!("{e}: nothing to align (--align LABEL groups the hits)"));
            return out;
        }
        let mut groups: Vec<&Group> = self.groups.iter().collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        if groups.len() == 1 {
            out.notes.push(format!(
                "every hit is in one `{}` group ({}): nothing to align against",
                self.label, groups[0].name
            ));
        }
        if self.ungrouped > 0 {
            out.notes
                .push(format!("{} hit(s) with reference_ns have no `{}` label: left out", self.ungrouped, self.label));
        }
        let points: Vec<Cow<'_, [Point]>> = groups.iter().map(|g| g.sorted_points()).collect();
        for i in 0..groups.len() {
            for j in i + 1..groups.len() {
                out.offsets.push(self.offset((groups[i], &points[i]), (groups[j], &points[j]), within_ns, boot));
            }
        }
        out
    }

    fn offset(&self, a: (&Group, &[Point]), b: (&Group, &[Point]), within_ns: u64, boot: &Bootstrap) -> ClockOffset {
        let mut o = ClockOffset {
            label: self.label.clone(),
            a: a.0.name.clone(),
            b: b.0.name.clone(),
            established: false,
            reason: None,
            within: within_ns as f64 / 1e9,
            pairs: 0,
            bins: 0,
            median: None,
            ci: None,
            min_bin_median: None,
            max_bin_median: None,
            reference_a: a.0.references.iter().cloned().collect(),
            reference_b: b.0.references.iter().cloned().collect(),
        };
        let missing: Vec<String> = [a.0, b.0]
            .into_iter()
            .filter(|g| g.referenced == 0)
            .map(|g| {
                let refs: Vec<&str> = g.unreferenced.iter().map(String::as_str).collect();
                if refs.is_empty() {
                    format!("{} has no hit with reference_ns", g.name)
                } else {
                    format!(
                        "{} has no hit with reference_ns (its hits' {REFERENCE_LABEL}: {})",
                        g.name,
                        refs.join(", ")
                    )
                }
            })
            .collect();
        if !missing.is_empty() {
            o.reason = Some(missing.join("; "));
            return o;
        }
        let (pa, pb) = (a.1, b.1);
        let range = |p: &[Point]| (p[0].r, p[p.len() - 1].r);
        let ((a0, a1), (b0, b1)) = (range(pa), range(pb));
        if a1 < b0 || b1 < a0 {
            let s = |r: u64| format!("{:.3}", r as f64 / 1e9);
            o.reason = Some(format!(
                "the reference-time ranges do not overlap ({}: {} – {} s, {}: {} – {} s since the epoch)",
                a.0.name,
                s(a0),
                s(a1),
                b.0.name,
                s(b0),
                s(b1)
            ));
            return o;
        }
        let (pairs, bin_medians) = pair(pa, pb, within_ns);
        o.pairs = pairs;
        o.bins = bin_medians.len();
        if bin_medians.len() < MIN_BINS {
            o.reason = Some(format!(
                "only {} one-second bin(s) of reference time have pairs within {} s (at least {MIN_BINS} needed)",
                bin_medians.len(),
                o.within
            ));
            return o;
        }
        let ci = match stats::median_ci(&bin_medians, boot) {
            Ok(ci) => ci,
            Err(e) => {
                o.reason = Some(format!("bootstrap: {e}"));
                return o;
            }
        };
        let s = |ns: f64| ns / 1e9;
        o.established = true;
        o.median = Some(s(ci.estimate));
        o.ci = Some(Interval { estimate: s(ci.estimate), lower: s(ci.lower), upper: s(ci.upper), ..ci });
        o.min_bin_median = bin_medians.iter().copied().min_by(f64::total_cmp).map(s);
        o.max_bin_median = bin_medians.iter().copied().max_by(f64::total_cmp).map(s);
        o
    }
}

/// Pair each point of `a` with the nearest of `b` (ties to the earlier) within `within_ns`:
/// the number of pairs, and the median of e_A − e_B (ns) per second of A's reference time.
fn pair(a: &[Point], b: &[Point], within_ns: u64) -> (u64, Vec<f64>) {
    let mut pairs = 0u64;
    let mut medians = Vec::new();
    let mut bin: Option<u64> = None;
    let mut diffs: Vec<f64> = Vec::new();
    let mut j = 0usize;
    for p in a {
        while j + 1 < b.len() && b[j + 1].r <= p.r {
            j += 1;
        }
        let nearest = [b.get(j), b.get(j + 1)].into_iter().flatten().min_by_key(|q| q.r.abs_diff(p.r));
        let Some(q) = nearest.filter(|q| q.r.abs_diff(p.r) <= within_ns) else { continue };
        let k = p.r / BIN_NS;
        if bin != Some(k) {
            if !diffs.is_empty() {
                medians.push(stats::median_in_place(&mut diffs));
                diffs.clear();
            }
            bin = Some(k);
        }
        diffs.push((i128::from(p.e) - i128::from(q.e)) as f64);
        pairs += 1;
    }
    if !diffs.is_empty() {
        medians.push(stats::median_in_place(&mut diffs));
    }
    (pairs, medians)
}

/// The offset of group `a`'s clock against group `b`'s, on reference time (seconds).
#[derive(Clone, Debug, Serialize)]
pub struct ClockOffset {
    /// The label the groups are values of.
    pub label: String,
    pub a: String,
    pub b: String,
    /// Whether there was enough to say; `reason` says why not.
    pub established: bool,
    pub reason: Option<String>,
    /// Points further apart in reference time were not paired (s).
    pub within: f64,
    /// Points of `a` paired with one of `b`, and the one-second bins they fall in.
    pub pairs: u64,
    pub bins: usize,
    /// A's clock minus B's at the same true time: median of the bin medians (s).
    pub median: Option<f64>,
    /// Percentile interval of that median, bootstrapped over the bins (block bootstrap by
    /// second of reference time).
    pub ci: Option<Interval>,
    /// The smallest and largest bin median (s): how far the offset drifted.
    pub min_bin_median: Option<f64>,
    pub max_bin_median: Option<f64>,
    /// The `reference` label values of each group's hits with reference_ns.
    pub reference_a: Vec<String>,
    pub reference_b: Vec<String>,
}

/// Offsets of every pair of groups, and what could not be aligned.
#[derive(Clone, Debug, Default)]
pub struct Alignment {
    pub offsets: Vec<ClockOffset>,
    pub notes: Vec<String>,
}

/// The report section "Clock offsets on reference time"; empty when there is nothing to say.
/// `level` and `resamples` are the bootstrap's.
pub fn markdown(offsets: &[ClockOffset], notes: &[String], level: f64, resamples: usize) -> String {
    let mut s = String::new();
    if offsets.is_empty() && notes.is_empty() {
        return s;
    }
    let _ = writeln!(s, "\n## Clock offsets on reference time\n");
    if let Some(o) = offsets.first() {
        let _ = writeln!(
            s,
            "Hits grouped by `{}`. Each hit with `reference_ns` gives its clock's error e = timestamp_ns − reference_ns at that reference time; each point of A is paired with the point of B nearest in reference time (within {} s), and A − B = e_A − e_B is A's clock minus B's at the same true time. The differences are binned by second of reference time; the offset is the median of the bin medians, its {:.0} % CI a block bootstrap by second (B = {}, the bins resampled, since consecutive differences are strongly autocorrelated). The smallest and largest bin median show drift. At most {} points per second of reference time are kept per group.\n",
            o.label,
            o.within,
            level * 100.0,
            resamples,
            BIN_NS / SLOT_NS
        );
    }
    let _ = writeln!(s, "{PPS_NOTE}\n");
    let done: Vec<&ClockOffset> = offsets.iter().filter(|o| o.established).collect();
    if !done.is_empty() {
        let unit = Unit::for_values(done.iter().flat_map(|o| {
            [o.median, o.min_bin_median, o.max_bin_median]
                .into_iter()
                .flatten()
                .chain(o.ci.iter().flat_map(|i| [i.lower, i.upper]))
        }));
        let f = |v: Option<f64>| v.map_or_else(|| "—".to_string(), |v| unit.format(v));
        let _ = writeln!(
            s,
            "| A | B | pairs | bins | A − B ({u}) | {:.0} % CI ({u}) | bin medians min … max ({u}) | reference A | reference B |",
            level * 100.0,
            u = unit.symbol()
        );
        let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |");
        for o in done {
            let ci =
                o.ci.map_or_else(|| "—".into(), |i| format!("[{}, {}]", unit.format(i.lower), unit.format(i.upper)));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {ci} | {} … {} | {} | {} |",
                o.a,
                o.b,
                o.pairs,
                o.bins,
                f(o.median),
                f(o.min_bin_median),
                f(o.max_bin_median),
                o.reference_a.join(", "),
                o.reference_b.join(", ")
            );
        }
    }
    let not: Vec<String> = offsets
        .iter()
        .filter(|o| !o.established)
        .map(|o| format!("- {} vs {}: not established: {}", o.a, o.b, o.reason.as_deref().unwrap_or("")))
        .chain(notes.iter().map(|n| format!("- {n}")))
        .collect();
    if !not.is_empty() {
        let _ = writeln!(s, "\n{}", not.join("\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000_000_000;

    /// Feeds hits of label set `labels` (`env=host\x1f…`) to `points`.
    struct Feeder {
        names: Interner,
        points: ClockPoints,
    }

    impl Feeder {
        fn new() -> Feeder {
            Feeder { names: Interner::new(), points: ClockPoints::new("env") }
        }

        fn hit(&mut self, labels: &str, r: Option<u64>, e: i64) {
            let id = self.names.id(labels.as_bytes());
            let ts = r.map_or(T0, |r| (r as i128 + e as i128) as u64);
            let h = Hit {
                timestamp_ns: ts,
                probe: 0,
                session: 0,
                cpu: 0,
                chain_id: 0,
                chain: 0,
                labels: id,
                interference_ns: None,
                reference_ns: r,
            };
            self.points.add(&h, &self.names);
        }

        fn align(&self) -> Alignment {
            self.points.align(DEFAULT_WITHIN_NS, &Bootstrap::default())
        }
    }

    /// Uniform noise in ±`amp` ns, deterministic.
    fn noise(seed: u64, n: usize, amp: i64) -> Vec<i64> {
        stats::test_sequence(n, seed).map(|x| (x % (2 * amp as u64 + 1)) as i64 - amp).collect()
    }

    /// `secs` seconds of hits of host (error `host(t)`) and vm (error `vm(t)`), 50 per second
    /// each at their own times, both with ±50 µs of noise.
    fn host_and_vm(secs: u64, host: impl Fn(u64) -> i64, vm: impl Fn(u64) -> i64) -> Feeder {
        let mut f = Feeder::new();
        let n = (secs * 50) as usize;
        let (nh, nv) = (noise(1, n, 50_000), noise(2, n, 50_000));
        for i in 0..n as u64 {
            let (rh, rv) = (T0 + i * 20_000_000 + 3_000_000, T0 + i * 20_000_000 + 11_000_000);
            f.hit("env=host\x1freference=pps:/dev/pps0\x1f", Some(rh), host(rh - T0) + nh[i as usize]);
            f.hit("env=vm\x1freference=pps:/dev/pps0\x1f", Some(rv), vm(rv - T0) + nv[i as usize]);
        }
        f
    }

    #[test]
    fn a_constant_offset_is_found_with_a_narrow_ci() {
        // The VM's clock 111 ms behind the host's, against the same reference; host as A.
        let f = host_and_vm(120, |_| 20_000, |_| 20_000 - 111_000_000);
        let a = f.align();
        assert!(a.notes.is_empty(), "{:?}", a.notes);
        let o = &a.offsets[0];
        assert_eq!((o.a.as_str(), o.b.as_str(), o.established), ("host", "vm", true), "{o:?}");
        assert_eq!((o.pairs, o.bins), (6000, 120));
        let ci = o.ci.unwrap();
        assert!(ci.contains(0.111), "{ci:?}");
        assert!(ci.upper - ci.lower < 20e-6, "narrow: {ci:?}");
        assert!((o.median.unwrap() - 0.111).abs() < 5e-6, "{o:?}");
        assert_eq!((ci.resamples, ci.level), (500, 0.95));
        assert_eq!(o.reference_a, ["pps:/dev/pps0"]);
        // The other way round: −111 ms.
        let f = host_and_vm(120, |_| -111_000_000, |_| 0);
        let o = &f.align().offsets[0];
        assert!(o.ci.unwrap().contains(-0.111) && (o.median.unwrap() + 0.111).abs() < 5e-6, "{o:?}");
    }

    #[test]
    fn a_drifting_offset_shows_in_the_bin_medians() {
        // The VM's clock loses 10 µs per second against the host's: 0 → 600 µs in a minute.
        let f = host_and_vm(60, |_| 0, |t| -((t / 100_000) as i64));
        let o = &f.align().offsets[0];
        assert!(o.established, "{o:?}");
        let (lo, hi) = (o.min_bin_median.unwrap(), o.max_bin_median.unwrap());
        assert!(lo < 30e-6 && hi > 570e-6, "{lo} … {hi}");
        assert!((o.median.unwrap() - 300e-6).abs() < 20e-6, "{o:?}");
        // A constant offset with the same noise spreads its bin medians far less.
        let f = host_and_vm(60, |_| 0, |_| -300_000);
        let o = &f.align().offsets[0];
        assert!(o.max_bin_median.unwrap() - o.min_bin_median.unwrap() < 100e-6, "{o:?}");
    }

    #[test]
    fn disjoint_reference_ranges_are_not_established() {
        let mut f = Feeder::new();
        for i in 0..3000u64 {
            f.hit("env=host\x1f", Some(T0 + i * 20_000_000), 0);
            f.hit("env=vm\x1f", Some(T0 + 100_000_000_000 + i * 20_000_000), 5);
        }
        let o = &f.align().offsets[0];
        assert!(!o.established && o.median.is_none() && o.ci.is_none(), "{o:?}");
        assert!(o.reason.as_deref().unwrap().contains("do not overlap"), "{o:?}");
    }

    #[test]
    fn too_few_bins_are_not_established() {
        let f = host_and_vm(5, |_| 0, |_| 7);
        let o = &f.align().offsets[0];
        assert!(!o.established, "{o:?}");
        assert_eq!(o.bins, 5);
        assert!(o.reason.as_deref().unwrap().contains("only 5 one-second bin(s)"), "{o:?}");
    }

    #[test]
    fn a_group_without_reference_is_named_in_the_reason() {
        let mut f = Feeder::new();
        for i in 0..3000u64 {
            f.hit("env=host\x1freference=pps:/dev/pps0\x1f", Some(T0 + i * 20_000_000), 0);
            f.hit("env=vm\x1freference=system\x1f", None, 0);
        }
        let a = f.align();
        let o = &a.offsets[0];
        assert!(!o.established, "{o:?}");
        assert_eq!(o.reason.as_deref(), Some("vm has no hit with reference_ns (its hits' reference: system)"));
        assert_eq!((o.reference_a.as_slice(), o.reference_b.len()), (&["pps:/dev/pps0".to_string()][..], 0));
        let md = markdown(&a.offsets, &a.notes, 0.95, 500);
        assert!(md.contains("## Clock offsets on reference time") && md.contains("vm has no hit"), "{md}");
        assert!(md.contains("modulo one second"), "{md}");
    }

    #[test]
    fn no_reference_means_nothing_to_say_and_a_missing_label_is_an_error() {
        let mut f = Feeder::new();
        f.hit("env=host\x1f", None, 0);
        let a = f.align();
        assert!(a.offsets.is_empty() && a.notes.is_empty());
        assert_eq!(markdown(&a.offsets, &a.notes, 0.95, 500), "");
        assert!(f.points.check_label().is_ok());
        let mut f = Feeder::new();
        f.points = ClockPoints::new("governor");
        f.hit("env=host\x1freference=system\x1f", Some(T0), 0);
        let e = f.points.check_label().unwrap_err().to_string();
        assert_eq!(e, "no hit has the label `governor` (the hits with reference_ns have: env, reference)");
        assert!(f.align().notes[0].contains("no hit has the label `governor`"));
    }

    #[test]
    fn downsampling_keeps_one_point_per_slot_whatever_the_order() {
        let mut hits: Vec<(u64, i64)> = (0..20_000u64).map(|i| (T0 + i * 1_000_000 + i % 7, (i % 13) as i64)).collect();
        let mut f = Feeder::new();
        for &(r, e) in &hits {
            f.hit("env=host\x1f", Some(r), e);
        }
        let in_order = f.points.groups[0].sorted_points().into_owned();
        assert_eq!(in_order.len(), 2000, "20 s of hits every ms: 100 per second");
        assert!(in_order.windows(2).all(|w| w[0].slot() < w[1].slot()));
        let mut y = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..hits.len()).rev() {
            y ^= y << 13;
            y ^= y >> 7;
            y ^= y << 17;
            hits.swap(i, (y % (i as u64 + 1)) as usize);
        }
        let mut g = Feeder::new();
        for &(r, e) in &hits {
            g.hit("env=host\x1f", Some(r), e);
        }
        assert!(g.points.groups[0].points.len() < 3 * 4096, "compacted while reading");
        assert_eq!(g.points.groups[0].sorted_points().into_owned(), in_order);
    }
}
