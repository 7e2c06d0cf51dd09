//! Where the variance comes from over time: a session's reference segment in run order, its
//! rolling median and standard deviation, and the stretches of runs whose spread departs from
//! the session's (an I/O burst, a noisy neighbour, a governor change half-way).
//!
//! Rule: over windows of `w` consecutive runs (`w` = n/20, between 20 and 200), a window is
//! flagged when its standard deviation is more than twice the session's typical one (the median
//! of all windows' SDs, which a burst does not inflate) or less than half of it; overlapping
//! flagged windows merge into one stretch. Sessions of fewer than 2w runs are not judged.

use serde::Serialize;

use crate::stats;

/// Ratio of a window's SD to the session's beyond which (or below whose inverse) it departs.
pub const DEPARTURE: f64 = 2.0;

/// A stretch of consecutive runs whose spread departs from the session's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stretch {
    /// First and last run (0-based, in time order).
    pub from_run: usize,
    pub to_run: usize,
    /// SD of the stretch's runs, s.
    pub std_dev: f64,
    /// That SD over the session's typical window SD.
    pub ratio: f64,
}

/// A session's spread over time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Phases {
    pub runs: usize,
    pub window: usize,
    /// SD of the whole session, s.
    pub std_dev: f64,
    /// The session's typical SD over a window (median of the windows' SDs), s: what a
    /// stretch is compared with.
    pub typical_std_dev: f64,
    pub stretches: Vec<Stretch>,
}

/// Window length for `n` runs.
pub fn window(n: usize) -> usize {
    (n / 20).clamp(20, 200)
}

/// The phases of `values` (ns, in time order, finite). None below 2 windows of runs or for a
/// constant series.
pub fn phases(values: &[f64]) -> Option<Phases> {
    let n = values.len();
    let w = window(n);
    if n < 2 * w {
        return None;
    }
    let sd = stats::std_dev(values);
    if sd <= 0.0 || !sd.is_finite() {
        return None;
    }
    // Running sums of deviations from the mean keep the window variances exact enough.
    let mean = stats::mean(values);
    let dev: Vec<f64> = values.iter().map(|v| v - mean).collect();
    let (mut s1, mut s2) = (0.0, 0.0);
    for d in &dev[..w] {
        s1 += d;
        s2 += d * d;
    }
    let wf = w as f64;
    let mut sds = Vec::with_capacity(n - w + 1);
    for start in 0..=n - w {
        if start > 0 {
            let (out, inn) = (dev[start - 1], dev[start + w - 1]);
            s1 += inn - out;
            s2 += inn * inn - out * out;
        }
        sds.push((((s2 - s1 * s1 / wf) / (wf - 1.0)).max(0.0)).sqrt());
    }
    let typical = stats::median(&sds);
    if typical <= 0.0 {
        return None;
    }
    let mut flagged: Vec<(usize, usize)> = Vec::new();
    for (start, sd_w) in sds.iter().enumerate() {
        if !(1.0 / DEPARTURE..=DEPARTURE).contains(&(sd_w / typical)) {
            match flagged.last_mut() {
                Some((_, end)) if start <= *end + 1 => *end = start + w - 1,
                _ => flagged.push((start, start + w - 1)),
            }
        }
    }
    let stretches = flagged
        .into_iter()
        .map(|(a, b)| {
            let s = stats::std_dev(&values[a..=b]);
            Stretch { from_run: a, to_run: b, std_dev: s / 1e9, ratio: s / typical }
        })
        .collect();
    Some(Phases { runs: n, window: w, std_dev: sd / 1e9, typical_std_dev: typical / 1e9, stretches })
}

/// Rolling median and SD (ns) of `values` over windows of `w`, at most `points` of them:
/// (index of the window's middle run, median, SD).
pub fn rolling(values: &[f64], w: usize, points: usize) -> Vec<(usize, f64, f64)> {
    let n = values.len();
    if n < w || w < 2 {
        return Vec::new();
    }
    let step = ((n - w + 1) / points.max(1)).max(1);
    (0..=n - w)
        .step_by(step)
        .map(|start| {
            let win = &values[start..start + w];
            (start + w / 2, stats::median(win), stats::std_dev(win))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-random series around 20 µs, SD ~1 µs.
    fn noise(n: usize, seed: u64) -> Vec<f64> {
        crate::stats::test_sequence(n, seed).map(|x| 20_000.0 + ((x % 2001) as f64 - 1000.0) * 1.7).collect()
    }

    #[test]
    fn a_noisy_burst_is_flagged_where_it_happened() {
        let mut v = noise(1000, 99);
        // Runs 400..500: an I/O burst with 8× the spread.
        for (i, x) in v[400..500].iter_mut().enumerate() {
            *x = 20_000.0 + if i % 2 == 0 { 8_000.0 } else { -8_000.0 };
        }
        let p = phases(&v).unwrap();
        assert_eq!(p.window, 50);
        assert_eq!(p.stretches.len(), 1, "{p:?}");
        let s = &p.stretches[0];
        assert!(s.from_run >= 351 && s.from_run <= 400 && s.to_run >= 499 && s.to_run <= 549, "{s:?}");
        assert!(s.ratio > 2.0);
    }

    #[test]
    fn a_steady_session_has_no_stretch_and_short_ones_are_not_judged() {
        assert!(phases(&noise(1000, 7)).unwrap().stretches.is_empty());
        assert!(phases(&noise(30, 7)).is_none());
        assert!(phases(&[5.0; 100]).is_none(), "constant");
        let r = rolling(&noise(1000, 7), 50, 100);
        assert!(r.len() <= 110 && r.len() >= 90, "{}", r.len());
        assert!(r.iter().all(|(_, m, s)| (19_000.0..21_000.0).contains(m) && *s > 0.0));
    }
}
