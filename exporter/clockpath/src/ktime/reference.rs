//! PPS-disciplined reference time. Each pulse marks the true top of a second as the kernel saw
//! it; a train of them maps CLOCK_MONOTONIC to reference time ([`PulseTrain::reference`]), and
//! gives the system clock's offset from the true second, the pulses missed and the jitter.
//!
//! A pulse says *when* a second begins, not *which* second: the whole seconds come from the
//! system clock when a train starts (its nearest second) and are counted on from there by the
//! monotonic clock, so a later step of the system clock shows in the offset without bending the
//! reference. A clock off by whole seconds is not seen (one off by 1.111 s shows 0.111 s).

use std::collections::VecDeque;

pub const SECOND_NS: i64 = 1_000_000_000;

/// Points kept: six hours of pulses (32 bytes each, 690 KiB), so records converted late (a
/// session's traces are written when it ends, a slow OTLP export) still find their pulses.
const KEPT: usize = 6 * 3600;
/// Points of the current run the jitter is computed over.
const JITTER_POINTS: usize = 16;
/// The shortest baseline a rate is extrapolated with. Over a shorter one the edges' jitter
/// tilts the rate more than any oscillator drifts: 0.4 ms of jitter over a 1 s baseline is
/// 400 ppm, 1 ms after 2.5 s of extrapolation, where a 100 ppm crystal drifts 0.25 ms. So a
/// run younger than this (the first pulses after the signal comes back) extrapolates at the
/// monotonic clock's own rate.
const MIN_RATE_BASELINE_NS: i64 = 8 * SECOND_NS;

/// One edge, as read from a PPS device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The kernel's CLOCK_REALTIME timestamp of the edge, ns since the epoch.
    pub realtime_ns: i64,
    /// The same instant on CLOCK_MONOTONIC (realtime − (REALTIME − MONOTONIC) read beside it).
    pub monotonic_ns: i64,
    /// The device's edge counter.
    pub sequence: u32,
}

/// What an edge added to the train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pulse {
    /// The system clock's offset from the true second: positive when it runs ahead.
    pub offset_ns: i64,
    /// Pulses missed since the previous one.
    pub missed: u64,
    /// The previous pulse was longer ago than `lost_after`: the signal had been lost.
    pub resumed: bool,
}

#[derive(Clone, Copy, Debug)]
struct Point {
    /// The true top of the second, on CLOCK_MONOTONIC (the edge minus the cable delay).
    mono_ns: i64,
    /// That second on reference time, ns since the epoch.
    ref_ns: i64,
    offset_ns: i64,
    sequence: u32,
}

/// The pulses of one PPS source.
#[derive(Debug)]
pub struct PulseTrain {
    cable_delay_ns: i64,
    lost_after_ns: i64,
    points: VecDeque<Point>,
    pulses: u64,
    missed: u64,
    glitches: u64,
    jitter_ns: Option<f64>,
}

impl PulseTrain {
    /// `cable_delay_ns`: how late an edge reaches the kernel after the true second;
    /// `lost_after_ns`: the signal is lost once no edge came for this long.
    pub fn new(cable_delay_ns: i64, lost_after_ns: i64) -> PulseTrain {
        PulseTrain {
            cable_delay_ns,
            lost_after_ns,
            points: VecDeque::new(),
            pulses: 0,
            missed: 0,
            glitches: 0,
            jitter_ns: None,
        }
    }

    /// Add an edge. None when it is the last one read again (a device capturing both edges
    /// wakes a fetch on the other edge with this one's unchanged sequence), or a glitch: an
    /// edge less than half a second after the last one (a bouncing line), counted.
    pub fn push(&mut self, e: Edge) -> Option<Pulse> {
        let mono_ns = e.monotonic_ns - self.cable_delay_ns;
        let true_wall = e.realtime_ns - self.cable_delay_ns;
        let (ref_ns, missed, resumed) = match self.points.back() {
            Some(last) if e.sequence == last.sequence || mono_ns <= last.mono_ns => return None,
            Some(last) if mono_ns - last.mono_ns < SECOND_NS / 2 => {
                self.glitches += 1;
                return None;
            }
            Some(last) => {
                let gap = mono_ns - last.mono_ns;
                let seconds = (gap + SECOND_NS / 2) / SECOND_NS;
                // The device's own count says how many edges it saw; believed when it is a count
                // a 1 Hz signal can give in that time (a device opened anew after its driver
                // was reloaded starts again from 1).
                let counted = i64::from(e.sequence.wrapping_sub(last.sequence));
                let counted = if (1..=seconds + 1).contains(&counted) { counted } else { seconds };
                let missed = (seconds.max(counted) - 1).max(0) as u64;
                if gap <= self.lost_after_ns {
                    // Counted on from the previous second: a step of the system clock moves the
                    // offset, not the reference.
                    (last.ref_ns + seconds.max(1) * SECOND_NS, missed, false)
                } else {
                    (nearest_second(true_wall), missed, true)
                }
            }
            None => (nearest_second(true_wall), 0, false),
        };
        let offset_ns = true_wall - ref_ns;
        if resumed {
            self.jitter_ns = None;
        }
        self.points.push_back(Point { mono_ns, ref_ns, offset_ns, sequence: e.sequence });
        if self.points.len() > KEPT {
            self.points.pop_front();
        }
        self.pulses += 1;
        self.missed += missed;
        self.jitter_ns = self.run_jitter().or(self.jitter_ns);
        Some(Pulse { offset_ns, missed, resumed })
    }

    pub fn pulses(&self) -> u64 {
        self.pulses
    }

    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Edges dropped as glitches (less than half a second after the previous one).
    pub fn glitches(&self) -> u64 {
        self.glitches
    }

    /// The system clock's offset from the true second at the last pulse.
    pub fn last_offset_ns(&self) -> Option<i64> {
        self.points.back().map(|p| p.offset_ns)
    }

    /// RMS of the offsets' residuals from a straight line over the last pulses of the current
    /// run (a drifting clock is not jitter).
    pub fn jitter_ns(&self) -> Option<f64> {
        self.jitter_ns
    }

    /// CLOCK_MONOTONIC of the last pulse's true second.
    pub fn last_pulse_monotonic_ns(&self) -> Option<i64> {
        self.points.back().map(|p| p.mono_ns)
    }

    /// An edge came within `lost_after` before `now_monotonic_ns`.
    pub fn signal_present(&self, now_monotonic_ns: i64) -> bool {
        self.points.back().is_some_and(|p| now_monotonic_ns - p.mono_ns <= self.lost_after_ns)
    }

    fn continuous(&self, a: &Point, b: &Point) -> bool {
        b.mono_ns - a.mono_ns <= self.lost_after_ns
    }

    /// Reference time (ns since the epoch) of a CLOCK_MONOTONIC instant: interpolated between
    /// the pulses around it, extrapolated up to `lost_after` from the nearest one (at the rate
    /// of its run, over up to 16 pulses, once the run spans `MIN_RATE_BASELINE_NS`). None where
    /// no pulse is that near: the caller falls back to the system clock.
    pub fn reference(&self, monotonic_ns: i64) -> Option<i64> {
        let i = self.points.partition_point(|p| p.mono_ns <= monotonic_ns);
        let before = i.checked_sub(1).and_then(|k| self.points.get(k));
        let after = self.points.get(i);
        match (before, after) {
            (Some(a), Some(b)) if self.continuous(a, b) => Some(along(a, b, a, monotonic_ns)),
            (Some(a), _) if monotonic_ns - a.mono_ns <= self.lost_after_ns => {
                let far = self.run_end(i - 1, false);
                Some(if a.mono_ns - far.mono_ns < MIN_RATE_BASELINE_NS {
                    a.ref_ns + (monotonic_ns - a.mono_ns)
                } else {
                    along(far, a, a, monotonic_ns)
                })
            }
            (_, Some(b)) if b.mono_ns - monotonic_ns <= self.lost_after_ns => {
                let far = self.run_end(i, true);
                Some(if far.mono_ns - b.mono_ns < MIN_RATE_BASELINE_NS {
                    b.ref_ns - (b.mono_ns - monotonic_ns)
                } else {
                    along(b, far, b, monotonic_ns)
                })
            }
            _ => None,
        }
    }

    /// The point up to `JITTER_POINTS` − 1 pulses from point `k` (later with `forward`, else
    /// earlier) without leaving its run: the other end of the baseline extrapolation takes its
    /// rate from. A long baseline keeps one late edge from tilting it (a 1 ms late edge is
    /// 1000 ppm over one second, 67 ppm over fifteen).
    fn run_end(&self, k: usize, forward: bool) -> &Point {
        let mut end = k;
        for _ in 1..JITTER_POINTS {
            let next = if forward { end + 1 } else { end.wrapping_sub(1) };
            match (self.points.get(end), self.points.get(next)) {
                (Some(p), Some(q)) if (if forward { self.continuous(p, q) } else { self.continuous(q, p) }) => {
                    end = next
                }
                _ => break,
            }
        }
        &self.points[end]
    }

    fn run_jitter(&self) -> Option<f64> {
        // The current run: the last points with no gap longer than lost_after between them.
        let mut run: Vec<&Point> = Vec::with_capacity(JITTER_POINTS);
        for p in self.points.iter().rev() {
            if run.last().is_some_and(|q| !self.continuous(p, q)) || run.len() == JITTER_POINTS {
                break;
            }
            run.push(p);
        }
        if run.len() < 3 {
            return None;
        }
        let t0 = run[run.len() - 1].mono_ns;
        let xs: Vec<f64> = run.iter().map(|p| (p.mono_ns - t0) as f64 / SECOND_NS as f64).collect();
        let ys: Vec<f64> = run.iter().map(|p| p.offset_ns as f64).collect();
        let n = xs.len() as f64;
        let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
        let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let ss: f64 = xs.iter().zip(&ys).map(|(x, y)| (y - my - slope * (x - mx)).powi(2)).sum();
        // Two parameters fitted: n − 2 degrees of freedom.
        Some((ss / (n - 2.0)).sqrt())
    }
}

/// The reference time at `mono` on the line through points `a` and `b`, from `origin`.
fn along(a: &Point, b: &Point, origin: &Point, mono: i64) -> i64 {
    let span_mono = i128::from(b.mono_ns - a.mono_ns);
    let span_ref = i128::from(b.ref_ns - a.ref_ns);
    if span_mono == 0 {
        return origin.ref_ns + (mono - origin.mono_ns);
    }
    let d = i128::from(mono - origin.mono_ns) * span_ref / span_mono;
    (i128::from(origin.ref_ns) + d) as i64
}

/// The system clock's offset from the true second shown by one edge taken alone (stamped at
/// `realtime_ns`, `cable_delay_ns` late): its distance from the nearest second.
pub fn offset_from_nearest_second(realtime_ns: i64, cable_delay_ns: i64) -> i64 {
    let true_wall = realtime_ns - cable_delay_ns;
    true_wall - nearest_second(true_wall)
}

/// The top of the second nearest to `ns`.
fn nearest_second(ns: i64) -> i64 {
    (ns + SECOND_NS / 2).div_euclid(SECOND_NS) * SECOND_NS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An epoch second, to keep the numbers realistic.
    const EPOCH: i64 = 1_790_000_000 * SECOND_NS;

    /// A synthetic source: true second k happens at monotonic `mono0 + k·rate` (the monotonic
    /// clock runs `ppm` fast), when the system clock reads `true + phase`.
    struct Source {
        mono0: i64,
        ppm: f64,
        phase_ns: i64,
    }

    impl Source {
        fn mono(&self, true_ns_since_start: f64) -> i64 {
            self.mono0 + (true_ns_since_start * (1.0 + self.ppm * 1e-6)).round() as i64
        }
        fn edge(&self, k: i64, noise_ns: i64) -> Edge {
            Edge {
                realtime_ns: EPOCH + k * SECOND_NS + self.phase_ns + noise_ns,
                monotonic_ns: self.mono(k as f64 * 1e9) + noise_ns,
                sequence: k as u32 + 1,
            }
        }
        /// The true reference time of a monotonic instant.
        fn truth(&self, mono: i64) -> i64 {
            EPOCH + ((mono - self.mono0) as f64 / (1.0 + self.ppm * 1e-6)).round() as i64
        }
    }

    fn train(lost_after_s: f64) -> PulseTrain {
        PulseTrain::new(0, (lost_after_s * 1e9) as i64)
    }

    #[test]
    fn a_drifting_clock_is_interpolated_and_extrapolated_exactly() {
        let s = Source { mono0: 5_000 * SECOND_NS, ppm: 50.0, phase_ns: 250_000_000 };
        let mut t = train(2.5);
        for k in 0..20 {
            let p = t.push(s.edge(k, 0)).expect("new edge");
            assert_eq!(p.offset_ns, 250_000_000);
            assert_eq!(p.missed, 0);
        }
        // Between pulses, and 0.8 s after the last one.
        for at in [0.5e9, 3.25e9, 10.999e9, 19.8e9] {
            let m = s.mono(at);
            let got = t.reference(m).expect("within the train");
            assert!((got - s.truth(m)).abs() <= 2, "at {at}: {got} vs {}", s.truth(m));
            // The system clock would be 250 ms (plus the drift since the start) off.
        }
        assert_eq!(t.jitter_ns().map(|j| j < 1.0), Some(true), "{:?}", t.jitter_ns());
        assert_eq!(t.pulses(), 20);
    }

    #[test]
    fn a_step_of_the_system_clock_moves_the_offset_not_the_reference() {
        let s = Source { mono0: 0, ppm: -20.0, phase_ns: 1_000 };
        let mut t = train(2.5);
        for k in 0..10 {
            t.push(s.edge(k, 0));
        }
        // The system clock is stepped 300 ms forward: the edges' realtime stamps jump.
        for k in 10..20 {
            let mut e = s.edge(k, 0);
            e.realtime_ns += 300_000_000;
            let p = t.push(e).unwrap();
            assert_eq!(p.offset_ns, 300_001_000, "the offset shows the step");
        }
        for at in [9.5e9, 10.5e9, 15.0e9] {
            let m = s.mono(at);
            assert!((t.reference(m).unwrap() - s.truth(m)).abs() <= 2, "at {at}");
        }
    }

    #[test]
    fn missed_pulses_are_counted_and_short_gaps_interpolated() {
        let s = Source { mono0: 77, ppm: 10.0, phase_ns: -3_000 };
        let mut t = train(5.0);
        for k in (0..5).chain(8..12) {
            t.push(s.edge(k, 0));
        }
        assert_eq!(t.missed(), 3, "pulses 5, 6 and 7");
        let m = s.mono(6.0e9);
        assert!((t.reference(m).unwrap() - s.truth(m)).abs() <= 2);
        assert_eq!(t.last_offset_ns(), Some(-3_000));
    }

    #[test]
    fn a_lost_signal_falls_back_and_resumes() {
        let s = Source { mono0: 0, ppm: 0.0, phase_ns: 100 };
        let mut t = train(2.5);
        for k in 0..5 {
            t.push(s.edge(k, 0));
        }
        let last = s.mono(4.0e9);
        assert!(t.signal_present(last + 2_000_000_000));
        assert!(!t.signal_present(last + 2_600_000_000), "no edge for longer than lost_after");
        // Inside lost_after: extrapolated; beyond: no reference.
        assert!(t.reference(last + 2_000_000_000).is_some());
        assert_eq!(t.reference(last + 3_000_000_000), None);
        assert_eq!(t.reference(s.mono(0.0) - 3_000_000_000), None, "before the first pulse");
        // Pulses resume 10 s later.
        let p = t.push(s.edge(14, 0)).unwrap();
        assert!(p.resumed);
        assert_eq!(p.missed, 9);
        assert!(t.signal_present(s.mono(14.2e9)));
        assert_eq!(t.reference(s.mono(9.0e9)), None, "the gap itself has no reference");
        let m = s.mono(14.5e9);
        assert_eq!(t.reference(m), Some(s.truth(m)));
    }

    #[test]
    fn jitter_is_the_scatter_around_the_drift() {
        let s = Source { mono0: 0, ppm: 100.0, phase_ns: 0 };
        let mut t = train(2.5);
        for k in 0..40 {
            // ±1 µs of timestamping noise on the realtime stamp only.
            let mut e = s.edge(k, 0);
            e.realtime_ns += if k % 2 == 0 { 1_000 } else { -1_000 };
            t.push(e);
        }
        let j = t.jitter_ns().unwrap();
        assert!((900.0..1200.0).contains(&j), "jitter {j}");
    }

    #[test]
    fn one_late_edge_does_not_tilt_the_extrapolation() {
        let s = Source { mono0: 0, ppm: 0.0, phase_ns: 0 };
        let mut t = train(2.5);
        for k in 0..16 {
            // The last edge comes 2 ms late (a timer's latency, not the clock).
            let late = if k == 15 { 2_000_000 } else { 0 };
            t.push(s.edge(k, late));
        }
        let m = s.mono(17.4e9);
        let err = t.reference(m).unwrap() - s.truth(m);
        // Off by the late edge itself (2 ms) plus its tilt over 15 pulses, not 2.4 × 2 ms.
        assert!(err.abs() < 2_400_000, "{err}");
    }

    /// Seen once in the guest's PPS test: hits just before the first pulses after the signal
    /// came back were put 1.0 ms off, extrapolated backwards at a rate from two jittery edges.
    #[test]
    fn a_young_run_extrapolates_at_the_clocks_own_rate_not_its_jitter() {
        let s = Source { mono0: 0, ppm: 20.0, phase_ns: 250_000_000 };
        // Runs of three pulses, the one at the far end of the baseline 0.5 ms late (timer
        // latency under emulation): before the run, and after it.
        for (edges, at) in
            [([(10, 0), (11, 0), (12, 500_000)], [7.6e9, 9.0e9]), ([(10, 500_000), (11, 0), (12, 0)], [13.0e9, 14.4e9])]
        {
            let mut t = train(2.5);
            for (k, late) in edges {
                t.push(s.edge(k, late));
            }
            for at in at {
                let m = s.mono(at);
                let err = t.reference(m).expect("within lost_after") - s.truth(m);
                // The drift of 20 ppm over at most 2.4 s is 48 µs; a rate taken from the late
                // edge would be 250 ppm off, 0.6 ms.
                assert!(err.abs() <= 50_000, "{edges:?} at {at}: {err} ns");
            }
        }
    }

    #[test]
    fn a_device_counting_from_one_again_is_not_billions_of_missed_pulses() {
        let s = Source { mono0: 0, ppm: 0.0, phase_ns: 0 };
        let mut t = train(2.5);
        for k in 0..5 {
            t.push(s.edge(k, 0));
        }
        // The driver was reloaded: 10 s later its count starts again at 1.
        let mut e = s.edge(15, 0);
        e.sequence = 1;
        let p = t.push(e).unwrap();
        assert!(p.resumed);
        assert_eq!(p.missed, 10);
    }

    #[test]
    fn a_re_read_edge_and_a_glitch_add_no_pulse() {
        let s = Source { mono0: 0, ppm: 0.0, phase_ns: 0 };
        let mut t = train(2.5);
        for k in 0..3 {
            t.push(s.edge(k, 0));
        }
        // The same assert edge handed back by a fetch the clear edge woke, its monotonic time
        // measured again a few ns later.
        let mut again = s.edge(2, 0);
        again.monotonic_ns += 7;
        assert_eq!(t.push(again), None);
        // A bounce 5 ms after the edge, with its own sequence number.
        let mut bounce = s.edge(2, 5_000_000);
        bounce.sequence = 4;
        assert_eq!(t.push(bounce), None);
        assert_eq!(t.glitches(), 1);
        // The next real edge is one second on, not two.
        let mut next = s.edge(3, 0);
        next.sequence = 5;
        t.push(next).unwrap();
        let m = s.mono(3.5e9);
        assert_eq!(t.reference(m), Some(s.truth(m)));
        assert_eq!(t.pulses(), 4);
    }

    #[test]
    fn cable_delay_and_duplicates() {
        let s = Source { mono0: 0, ppm: 0.0, phase_ns: 0 };
        let mut t = PulseTrain::new(150, 2_500_000_000);
        let p = t.push(s.edge(0, 0)).unwrap();
        assert_eq!(p.offset_ns, -150, "the edge arrived 150 ns after the second: the clock is 150 ns behind");
        assert_eq!(t.push(s.edge(0, 0)), None, "the same event read twice");
        t.push(s.edge(1, 0));
        assert_eq!(t.pulses(), 2);
        // A monotonic instant maps to the true time: 150 ns earlier than the edge.
        assert_eq!(t.reference(s.mono(1.0e9)), Some(EPOCH + SECOND_NS + 150));
    }
}
