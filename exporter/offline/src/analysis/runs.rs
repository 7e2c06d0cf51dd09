//! The runs of one chain in one session, stored flat (a few bytes per run), complete or not.
//!
//! A run's values are its segment durations (ns) then, for chains of more than one segment,
//! the total; a segment the run never reached is NaN (partial chains contribute the segments
//! they have). Beyond `cap` runs a session keeps a uniform sample (reservoir sampling) whose
//! random stream is the session's own, seeded from the analysis seed and the session's name,
//! so what is kept depends on neither the order sessions are read in nor on other sessions.

use std::collections::BTreeMap;

use clockpath_common::record::UNKNOWN_INTERFERENCE;
use rand::{RngExt as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Interference per segment: (irq, softirq, sched, hrtimer, kvm) ns, or
/// `[UNKNOWN_INTERFERENCE, …]` when not known.
pub type Interference = [u64; 5];

/// An interference value for a segment with none recorded.
pub const UNKNOWN: Interference = [UNKNOWN_INTERFERENCE, 0, 0, 0, 0];

/// One run, borrowed from its session.
#[derive(Clone, Copy, Debug)]
pub struct RunRef<'a> {
    /// Segment durations (ns), then the total; NaN where the run has no value.
    pub values: &'a [f64],
    /// Per segment, when the trace carried interference.
    pub interference: Option<&'a [Interference]>,
    pub labels: u32,
    /// When the run's first stage hit (trace time base, ns).
    pub start_ns: u64,
}

impl RunRef<'_> {
    /// Whether every value (every segment and the total) is known.
    pub fn is_complete(&self) -> bool {
        self.values.iter().all(|v| v.is_finite())
    }
}

/// The values of `runs` the outlier rule keeps (judged on the first column, each session
/// against itself), per column, without the ones a run does not have; and how many runs it
/// rejected.
pub fn kept_columns(runs: &[RunRef], rule: crate::stats::OutlierRule) -> (Vec<Vec<f64>>, usize) {
    let ncol = runs.first().map_or(0, |r| r.values.len());
    let reference: Vec<f64> = runs.iter().map(|r| r.values[0]).collect();
    let keep = rule.keep_mask(&reference);
    let columns = (0..ncol)
        .map(|c| {
            runs.iter().zip(&keep).filter(|(r, k)| **k && r.values[c].is_finite()).map(|(r, _)| r.values[c]).collect()
        })
        .collect();
    (columns, keep.iter().filter(|k| !**k).count())
}

/// Runs of one chain in one session.
#[derive(Debug)]
pub struct SessionRuns {
    /// Values per run.
    pub cols: usize,
    /// Segments per run.
    pub nseg: usize,
    /// Run-major values (NaN: not reached).
    pub values: Vec<f64>,
    pub labels: Vec<u32>,
    pub starts: Vec<u64>,
    /// Run-major interference per segment; empty while no run of the session carried any.
    pub interference: Vec<Interference>,
    /// Runs seen, complete or partial (more than kept once the reservoir is full).
    pub seen: u64,
    /// Complete runs seen.
    pub complete: u64,
    /// How the session's chain instances ended (completed, timed_out, …).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Incomplete instances, by the first stage they did not reach.
    pub missing_stage: BTreeMap<String, u64>,
    rng: Xoshiro256PlusPlus,
}

/// A stable 64-bit hash of a name (FNV-1a): seeds must not depend on the Rust release.
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl SessionRuns {
    /// An empty session of a chain with `nseg` segments; `seed` and `session` seed its sampling.
    pub fn new(nseg: usize, seed: u64, session: &str) -> SessionRuns {
        SessionRuns {
            cols: if nseg > 1 { nseg + 1 } else { nseg },
            nseg,
            values: Vec::new(),
            labels: Vec::new(),
            starts: Vec::new(),
            interference: Vec::new(),
            seen: 0,
            complete: 0,
            outcomes: BTreeMap::new(),
            missing_stage: BTreeMap::new(),
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ stable_hash(session)),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn run(&self, i: usize) -> RunRef<'_> {
        let has = !self.interference.is_empty();
        RunRef {
            values: &self.values[i * self.cols..(i + 1) * self.cols],
            interference: has.then(|| &self.interference[i * self.nseg..(i + 1) * self.nseg]),
            labels: self.labels[i],
            start_ns: self.starts[i],
        }
    }

    /// Kept runs in the order they were kept.
    pub fn iter(&self) -> impl Iterator<Item = RunRef<'_>> + '_ {
        (0..self.len()).map(|i| self.run(i))
    }

    /// Column `k` of the kept runs, in the order they were kept.
    pub fn column(&self, k: usize) -> impl Iterator<Item = f64> + '_ {
        self.values.iter().skip(k).step_by(self.cols.max(1)).copied()
    }

    /// Column `k`'s known values (not NaN) in time order (start of the run): 16 bytes a run
    /// while sorting, where `in_time_order` holds a whole `RunRef` per run.
    pub fn column_in_time_order(&self, k: usize) -> Vec<f64> {
        let mut v: Vec<(u64, f64)> =
            self.starts.iter().zip(self.column(k)).filter(|(_, x)| x.is_finite()).map(|(t, x)| (*t, x)).collect();
        // Stable, like `in_time_order`: runs that start together keep the order they were kept.
        v.sort_by_key(|p| p.0);
        v.into_iter().map(|p| p.1).collect()
    }

    /// Kept runs in time order (start of the run).
    pub fn in_time_order(&self) -> Vec<RunRef<'_>> {
        let mut v: Vec<RunRef<'_>> = self.iter().collect();
        v.sort_by_key(|r| r.start_ns);
        v
    }

    /// Keep a run (uniform reservoir of `cap` runs). `values` has `cols` entries (NaN where
    /// unknown); `interference` one entry per segment when the trace carried it.
    pub fn keep(
        &mut self,
        values: &[f64],
        interference: Option<&[Interference]>,
        labels: u32,
        start_ns: u64,
        cap: usize,
    ) {
        debug_assert_eq!(values.len(), self.cols);
        self.seen += 1;
        if values.iter().all(|v| v.is_finite()) {
            self.complete += 1;
        }
        let slot = if self.len() < cap {
            self.values.extend_from_slice(values);
            self.labels.push(labels);
            self.starts.push(start_ns);
            self.len() - 1
        } else {
            let j = self.rng.random_range(0..self.seen) as usize;
            if j >= cap {
                return;
            }
            self.values[j * self.cols..(j + 1) * self.cols].copy_from_slice(values);
            self.labels[j] = labels;
            self.starts[j] = start_ns;
            j
        };
        let n = self.nseg;
        match interference {
            Some(i) if i.len() == n => {
                if self.interference.is_empty() {
                    // The first run with interference: the ones before it had none.
                    self.interference = vec![UNKNOWN; self.len() * n];
                }
                if self.interference.len() < self.len() * n {
                    self.interference.resize(self.len() * n, UNKNOWN);
                }
                self.interference[slot * n..(slot + 1) * n].copy_from_slice(i);
            }
            _ if !self.interference.is_empty() => {
                if self.interference.len() < self.len() * n {
                    self.interference.resize(self.len() * n, UNKNOWN);
                }
                self.interference[slot * n..(slot + 1) * n].fill(UNKNOWN);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_runs_keep_what_they_have_and_interference_is_backfilled() {
        let mut s = SessionRuns::new(2, 1, "s");
        s.keep(&[10.0, f64::NAN, f64::NAN], None, 0, 100, 10);
        s.keep(&[11.0, 5.0, 16.0], Some(&[[1, 0, 0, 0, 0], [2, 0, 0, 0, 0]]), 0, 50, 10);
        assert_eq!((s.seen, s.complete, s.len()), (2, 1, 2));
        assert!(!s.run(0).is_complete() && s.run(1).is_complete());
        assert_eq!(s.run(0).interference.unwrap()[0], UNKNOWN, "runs before the first with interference");
        assert_eq!(s.run(1).interference.unwrap()[1][0], 2);
        let t: Vec<u64> = s.in_time_order().iter().map(|r| r.start_ns).collect();
        assert_eq!(t, [50, 100]);
    }

    #[test]
    fn the_reservoir_sample_depends_on_the_session_name_not_on_other_sessions() {
        let fill = |name: &str| {
            let mut s = SessionRuns::new(1, 7, name);
            for i in 0..1000 {
                s.keep(&[i as f64], None, 0, i, 50);
            }
            s.values
        };
        assert_eq!(fill("a"), fill("a"));
        assert_ne!(fill("a"), fill("b"));
        assert_eq!(fill("a").len(), 50);
    }
}
