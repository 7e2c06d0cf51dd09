//! Comparing clockpath with a peer tool on the same events: the assumptions such a comparison
//! rests on, load to run it under, peers' histograms, and a row-by-row comparison with a
//! stated tolerance.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    process::{Child, Command, Stdio},
};

/// Check an assumption a test rests on before relying on it: panic naming the assumption when
/// it does not hold on this machine, so a failure says which premise broke rather than which
/// number came out different.
#[track_caller]
pub fn assume(name: &str, holds: bool, detail: impl FnOnce() -> String) {
    assert!(holds, "assumption `{name}` does not hold on this machine: {}", detail());
}

/// One busy loop per CPU, for the length of a test (killed on drop): the peer comparisons must
/// hold on a busy machine too, where waits come from preemption as much as from wakeups.
pub struct CpuHog(Vec<Child>);

impl CpuHog {
    pub fn start() -> CpuHog {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        CpuHog(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("start a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// runqlat's row of a latency in µs (libbpf-tools' `log2l`: 0 for 0 and 1, else floor(log2)).
pub fn runqlat_row(us: u64) -> u32 {
    if us < 2 { 0 } else { us.ilog2() }
}

/// bpftrace's `hist()` bucket of a value: 0 for 0, 1 for 1, k + 1 for [2^k, 2^(k+1)).
pub fn bpftrace_bucket(v: u64) -> u32 {
    if v == 0 { 0 } else { v.ilog2() + 1 }
}

/// The buckets of a bpftrace `hist()` map as printed at exit: `[0] n`, `[1] n`, `[2, 4) n`,
/// `[1K, 2K) n`… as (bucket, count), bucket as [`bpftrace_bucket`] numbers it.
pub fn parse_bpftrace_hist(text: &str, map: &str) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with('@') {
            inside = line.trim_end().trim_end_matches(':') == map;
            continue;
        }
        if !inside {
            continue;
        }
        let Some(rest) = line.trim().strip_prefix('[') else { continue };
        let Some((range, tail)) = rest.split_once([']', ')']) else { continue };
        let low = range.split(',').next().unwrap_or_default().trim();
        let count: u64 = match tail.split_whitespace().next().and_then(|c| c.parse().ok()) {
            Some(c) => c,
            None => continue,
        };
        let (digits, mult) = match low.chars().last() {
            Some('K') => (&low[..low.len() - 1], 1u64 << 10),
            Some('M') => (&low[..low.len() - 1], 1 << 20),
            Some('G') => (&low[..low.len() - 1], 1 << 30),
            _ => (low, 1),
        };
        if let Ok(v) = digits.parse::<u64>() {
            out.insert(bpftrace_bucket(v * mult), count);
        }
    }
    out
}

/// Two histograms of the same events. Per-event timestamps of two tools differ by up to
/// [`MAX_SHIFT_NS`] (not by a constant: where each program runs on a tracepoint, and what it
/// touches first, varies), so rows are compared as cumulative counts with that slack: the
/// peer's count of events below a row's upper edge must lie between clockpath's count of
/// durations below the edge minus the slack and below the edge plus the slack, give or take
/// `row_abs_of_total` of all events plus 10. Far from the slack (rows of tens of µs and more)
/// that is nearly an exact row-by-row match; below it, only what the two tools can resolve.
pub struct RowComparison {
    /// clockpath's rows at the shift that matches the peer best (for the table).
    pub ours: BTreeMap<u32, u64>,
    pub peer: BTreeMap<u32, u64>,
    /// The shift (ns) added to each group of clockpath's durations for `ours` (see
    /// [`aligned`]): informative, the verdict does not depend on it.
    pub shifts_ns: Vec<i64>,
    /// Per row: clockpath's durations in this row or below when each is [`MAX_SHIFT_NS`] longer
    /// (the fewest the peer may count) and shorter (the most).
    pub band: BTreeMap<u32, (u64, u64)>,
}

/// Largest difference between two tools' stamps of one wait: where each takes its timestamps
/// within the same tracepoint differs by the programs that run before each (every program on
/// a tracepoint runs in attach order) and by what they touch first, a few hundred ns at each
/// end (the best constant shifts found are within ±800 ns).
pub const MAX_SHIFT_NS: i64 = 1500;

/// Compare clockpath's durations with a peer's rows, binned by `row_of` (a duration in ns →
/// row). `groups` are clockpath's durations split by where the peer stamps their start (runqlat
/// stamps a wakeup's wait in its wakeup handler, a preempted task's in its switch handler); for
/// the table, each group gets the constant shift in ±[`MAX_SHIFT_NS`] (50 ns steps) that
/// matches the peer's rows best. The verdict is the cumulative band (see [`RowComparison`]).
pub fn aligned(groups: &[&[u64]], peer: BTreeMap<u32, u64>, row_of: impl Fn(u64) -> u32) -> RowComparison {
    let mut band_rows: [BTreeMap<u32, u64>; 2] = [BTreeMap::new(), BTreeMap::new()];
    for g in groups {
        for &d in g.iter() {
            *band_rows[0].entry(row_of(d.saturating_add(MAX_SHIFT_NS as u64))).or_insert(0) += 1;
            *band_rows[1].entry(row_of(d.saturating_sub(MAX_SHIFT_NS as u64))).or_insert(0) += 1;
        }
    }
    let rows: std::collections::BTreeSet<u32> =
        band_rows.iter().flat_map(|b| b.keys()).chain(peer.keys()).copied().collect();
    let (mut lo, mut hi) = (0u64, 0u64);
    let mut band = BTreeMap::new();
    for r in rows {
        lo += band_rows[0].get(&r).copied().unwrap_or(0);
        hi += band_rows[1].get(&r).copied().unwrap_or(0);
        band.insert(r, (lo, hi));
    }
    let steps: Vec<i64> = (-MAX_SHIFT_NS / 50..=MAX_SHIFT_NS / 50).map(|i| i * 50).collect();
    // Rows of each group at each shift, computed once.
    let binned: Vec<Vec<BTreeMap<u32, u64>>> = groups
        .iter()
        .map(|g| {
            steps
                .iter()
                .map(|&shift| {
                    let mut rows = BTreeMap::new();
                    for &d in g.iter() {
                        *rows.entry(row_of(d.saturating_add_signed(shift))).or_insert(0u64) += 1;
                    }
                    rows
                })
                .collect()
        })
        .collect();
    let mut best: Option<(u64, u64, Vec<usize>)> = None;
    let mut choice = vec![0usize; groups.len()];
    loop {
        let mut rows: BTreeMap<u32, u64> = BTreeMap::new();
        for (g, &i) in choice.iter().enumerate() {
            for (r, c) in &binned[g][i] {
                *rows.entry(*r).or_insert(0) += c;
            }
        }
        let keys: std::collections::BTreeSet<u32> = rows.keys().chain(peer.keys()).copied().collect();
        let distance: u64 =
            keys.iter().map(|k| rows.get(k).copied().unwrap_or(0).abs_diff(peer.get(k).copied().unwrap_or(0))).sum();
        let size: u64 = choice.iter().map(|&i| steps[i].unsigned_abs()).sum();
        if best.as_ref().is_none_or(|b| (distance, size) < (b.0, b.1)) {
            best = Some((distance, size, choice.clone()));
        }
        // Next combination (odometer order).
        let mut g = 0;
        loop {
            if g == choice.len() {
                let choice = best.map(|b| b.2).unwrap_or_default();
                let mut ours: BTreeMap<u32, u64> = BTreeMap::new();
                for (g, &i) in choice.iter().enumerate() {
                    for (r, c) in &binned[g][i] {
                        *ours.entry(*r).or_insert(0) += c;
                    }
                }
                return RowComparison { ours, peer, shifts_ns: choice.iter().map(|&i| steps[i]).collect(), band };
            }
            choice[g] += 1;
            if choice[g] < steps.len() {
                break;
            }
            choice[g] = 0;
            g += 1;
        }
    }
}

/// How close two histograms of the same events must be.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub total_rel: f64,
    pub row_abs_of_total: f64,
}

/// The tolerance of the peer tests: totals within 1 %, cumulative rows within the timing band
/// give or take 0.5 % of all samples (plus 10).
pub const PEER_TOLERANCE: Tolerance = Tolerance { total_rel: 0.01, row_abs_of_total: 0.005 };

impl RowComparison {
    pub fn totals(&self) -> (u64, u64) {
        (self.ours.values().sum(), self.peer.values().sum())
    }

    /// The rows side by side, with the band the peer's cumulative count must fall in.
    pub fn table(&self, unit: &str) -> String {
        let mut s = format!(
            "{:>12} {:>10} {:>10} {:>12} {:>22}   (clockpath's durations shifted by {:?} ns; band: ±{MAX_SHIFT_NS} ns)\n",
            format!("row ({unit})"),
            "clockpath",
            "peer",
            "peer cum.",
            "clockpath cum. band",
            self.shifts_ns
        );
        let mut cum = 0;
        for (r, (lo, hi)) in &self.band {
            let (a, b) = (self.ours.get(r).copied().unwrap_or(0), self.peer.get(r).copied().unwrap_or(0));
            cum += b;
            let _ = writeln!(s, "{r:>12} {a:>10} {b:>10} {cum:>12} {:>22}", format!("[{lo}, {hi}]"));
        }
        let (a, b) = self.totals();
        let _ = writeln!(s, "{:>12} {a:>10} {b:>10}", "total");
        s
    }

    /// What breaks `tol`, described; empty when the two agree.
    pub fn disagreements(&self, tol: Tolerance) -> Vec<String> {
        let (a, b) = self.totals();
        let mut out = Vec::new();
        let n = a.max(b) as f64;
        if a.abs_diff(b) as f64 > tol.total_rel * n {
            out.push(format!("totals {a} and {b} differ by more than {:.1} %", tol.total_rel * 100.0));
        }
        let slack = tol.row_abs_of_total * n + 10.0;
        let mut cum = 0u64;
        for (r, &(lo, hi)) in &self.band {
            cum += self.peer.get(r).copied().unwrap_or(0);
            if (cum as f64) < lo as f64 - slack || cum as f64 > hi as f64 + slack {
                out.push(format!(
                    "row {r}: the peer counts {cum} waits up to this row, clockpath {lo}..{hi} (±{MAX_SHIFT_NS} ns), more than {slack:.0} apart"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftrace_histograms_parse_with_unit_suffixes() {
        let text = "Attaching 3 probes...\n\n@usecs:\n[0]                   12 |@@    |\n[1]                    3 |      |\n\
                    [2, 4)               100 |@@@@@@|\n[1K, 2K)               7 |      |\n\n@other:\n[0] 5 |@|\n";
        let h = parse_bpftrace_hist(text, "@usecs");
        assert_eq!(h, BTreeMap::from([(0, 12), (1, 3), (2, 100), (11, 7)]));
        assert_eq!(bpftrace_bucket(1500), 11);
        assert_eq!((runqlat_row(0), runqlat_row(1), runqlat_row(2), runqlat_row(7), runqlat_row(8)), (0, 0, 1, 2, 3));
    }

    #[test]
    fn a_comparison_fails_on_moved_waits_and_passes_within_the_timing_band() {
        let row = |ns: u64| runqlat_row(ns / 1000);
        // 20 000 waits over 1-60 µs.
        let ours: Vec<u64> = (0..20_000u64).map(|i| 1_000 + (i * 7919) % 59_000).collect();
        let peer_of = |f: &dyn Fn(u64) -> u64| {
            let mut m = BTreeMap::new();
            for &d in &ours {
                *m.entry(row(f(d))).or_insert(0u64) += 1;
            }
            m
        };
        // Each wait stamped up to ±1 µs apart, not by a constant: within the band.
        let jitter = aligned(&[&ours], peer_of(&|d| if d % 3 == 0 { d + 1000 } else { d.saturating_sub(900) }), row);
        assert!(jitter.disagreements(PEER_TOLERANCE).is_empty(), "{}", jitter.table("row"));
        // Every wait 30 % longer: outside it.
        let moved = aligned(&[&ours], peer_of(&|d| d * 13 / 10), row);
        assert!(!moved.disagreements(PEER_TOLERANCE).is_empty(), "{}", moved.table("row"));
        // Waits the peer counts and clockpath does not (its preemptions, say): totals.
        let mut more = peer_of(&|d| d);
        *more.entry(0).or_insert(0) += 2_000;
        assert!(!aligned(&[&ours], more, row).disagreements(PEER_TOLERANCE).is_empty());
    }

    #[test]
    fn alignment_finds_a_constant_stamping_offset_and_no_more() {
        // Durations spread over 8-24 µs; the peer stamped each 400 ns later at the end.
        let ours: Vec<u64> = (0..20_000u64).map(|i| 8_000 + (i * 7919) % 16_000).collect();
        let row = |ns: u64| runqlat_row(ns / 1000);
        let mut peer = BTreeMap::new();
        for d in &ours {
            *peer.entry(row(d + 400)).or_insert(0) += 1;
        }
        let c = aligned(&[&ours], peer.clone(), row);
        assert_eq!(c.shifts_ns, vec![400]);
        assert!(c.disagreements(PEER_TOLERANCE).is_empty());
        // A different distribution (every wait twice as long) is not a shift.
        let doubled: Vec<u64> = ours.iter().map(|d| d * 2).collect();
        assert!(!aligned(&[&doubled], peer.clone(), row).disagreements(PEER_TOLERANCE).is_empty());
        // Two groups stamped at different distances: each gets its own shift.
        let (a, b) = ours.split_at(10_000);
        let mut two = BTreeMap::new();
        for d in a {
            *two.entry(row(d + 400)).or_insert(0) += 1;
        }
        for d in b {
            *two.entry(row(d.saturating_sub(300))).or_insert(0) += 1;
        }
        let c = aligned(&[a, b], two, row);
        assert!(c.disagreements(PEER_TOLERANCE).is_empty(), "{}", c.table("row"));
    }
}
