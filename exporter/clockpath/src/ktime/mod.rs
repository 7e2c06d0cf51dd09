//! Kernel time. BPF timestamps are CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`); traces
//! and exemplars need wall-clock time. [`WallClock::to_wall`] is the one place where the one
//! becomes the other; [`to_reference`], beside it, gives PPS-disciplined time where a pulse
//! train ([`reference::PulseTrain`]) covers the instant, and says when it fell back.

pub mod reference;

use std::sync::atomic::{AtomicI64, Ordering};

pub use reference::{Edge, Pulse, PulseTrain};

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec; both clocks used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_MONOTONIC now, in ns: the clock BPF records use.
pub fn monotonic_now_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC) as u64
}

/// CLOCK_REALTIME now, in ns since the UNIX epoch.
pub fn realtime_now_ns() -> i128 {
    now_ns(libc::CLOCK_REALTIME)
}

/// Offset steps smaller than this are calibration noise, not clock steps; keeping the old
/// offset keeps successive traces on one time base.
const STEP_NS: i64 = 10_000;

/// Maps CLOCK_MONOTONIC to CLOCK_REALTIME by an offset measured with a bracketed read.
///
/// Both clocks are slewed alike by NTP, so the offset only changes when the wall clock is
/// stepped; [`WallClock::recalibrate`] picks that up. (A PPS-disciplined offset would replace
/// the measured one here.)
#[derive(Debug)]
pub struct WallClock {
    offset_ns: AtomicI64,
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl WallClock {
    /// Calibrate now.
    pub fn new() -> WallClock {
        WallClock { offset_ns: AtomicI64::new(measure_offset()) }
    }

    /// A clock with a given offset (replayed data, tests).
    pub fn with_offset(offset_ns: i64) -> WallClock {
        WallClock { offset_ns: AtomicI64::new(offset_ns) }
    }

    /// REALTIME − MONOTONIC, in ns, as used by `to_wall`.
    pub fn offset_ns(&self) -> i64 {
        self.offset_ns.load(Ordering::Relaxed)
    }

    /// Measure again; adopt the new offset if the wall clock was stepped. Returns the step.
    pub fn recalibrate(&self) -> i64 {
        let new = measure_offset();
        let old = self.offset_ns();
        let step = new - old;
        if step.abs() > STEP_NS {
            self.offset_ns.store(new, Ordering::Relaxed);
            step
        } else {
            0
        }
    }

    /// Kernel monotonic ns → wall-clock ns since the UNIX epoch, with this clock's offset.
    pub fn to_wall(&self, monotonic_ns: u64) -> u64 {
        to_wall(monotonic_ns, self.offset_ns())
    }
}

/// Kernel monotonic ns → wall-clock ns since the UNIX epoch: the conversion every exported
/// time goes through.
pub fn to_wall(monotonic_ns: u64, offset_ns: i64) -> u64 {
    (monotonic_ns as i128 + offset_ns as i128).clamp(0, u64::MAX as i128) as u64
}

/// Which time a converted instant is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// PPS-disciplined: interpolated between pulses of a source whose signal was present.
    Pps,
    /// The system clock (REALTIME − MONOTONIC), because no PPS source is configured.
    SystemNoPps,
    /// The system clock, because no pulse was within `lost_after` of the instant.
    SystemSignalLost,
}

impl Basis {
    pub fn is_pps(self) -> bool {
        self == Basis::Pps
    }
}

/// Kernel monotonic ns → reference time, ns since the UNIX epoch: the pulse train's time where
/// it covers the instant, else the system clock's (`to_wall` with `offset_ns`), saying which.
pub fn to_reference(monotonic_ns: u64, offset_ns: i64, train: Option<&PulseTrain>) -> (u64, Basis) {
    let Some(train) = train else { return (to_wall(monotonic_ns, offset_ns), Basis::SystemNoPps) };
    match i64::try_from(monotonic_ns).ok().and_then(|m| train.reference(m)) {
        Some(ns) => (ns.max(0) as u64, Basis::Pps),
        None => (to_wall(monotonic_ns, offset_ns), Basis::SystemSignalLost),
    }
}

/// REALTIME − MONOTONIC: of several bracketed reads (mono, real, mono), the one with the
/// tightest bracket, against the bracket's midpoint.
pub fn measure_offset() -> i64 {
    let mut best: Option<(i128, i128)> = None;
    for _ in 0..16 {
        let a = now_ns(libc::CLOCK_MONOTONIC);
        let r = now_ns(libc::CLOCK_REALTIME);
        let b = now_ns(libc::CLOCK_MONOTONIC);
        let width = b - a;
        let offset = r - (a + width / 2);
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, offset));
        }
    }
    best.map_or(0, |(_, o)| o as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_ns(clock: &WallClock) -> i128 {
        let mono = monotonic_now_ns();
        let real = realtime_now_ns();
        clock.to_wall(mono) as i128 - real
    }

    #[test]
    fn conversion_is_exact_arithmetic() {
        assert_eq!(to_wall(5, 1_700_000_000_000_000_000), 1_700_000_000_000_000_005);
        assert_eq!(to_wall(10, -4), 6);
        assert_eq!(to_wall(3, -4), 0, "clamped, never wraps");
    }

    /// The drift of a calibrated clock against clock_gettime(CLOCK_REALTIME) stays under 1 ms
    /// without recalibration. NTP slews both clocks alike, so the error does not grow with time:
    /// ten seconds of samples show it as well as a minute did.
    #[test]
    fn drift_against_realtime_stays_under_a_millisecond_without_recalibration() {
        let clock = WallClock::new();
        let start = std::time::Instant::now();
        let mut worst = 0i128;
        while start.elapsed() < std::time::Duration::from_secs(10) {
            let e = error_ns(&clock);
            worst = worst.max(e.abs());
            assert!(e.abs() < 1_000_000, "to_wall is {e} ns off CLOCK_REALTIME after {:?}", start.elapsed());
            // Sampling over time, not waiting for an event.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        eprintln!("worst |to_wall - CLOCK_REALTIME| over 10 s: {worst} ns");
    }

    #[test]
    fn reference_falls_back_to_the_system_clock_and_says_why() {
        let offset = 1_790_000_000_000_000_000;
        assert_eq!(to_reference(10, offset, None), (offset as u64 + 10, Basis::SystemNoPps));
        let mut t = PulseTrain::new(0, 2_500_000_000);
        // The system clock is 100 µs ahead of the pulses.
        for k in 0..3i64 {
            t.push(Edge {
                realtime_ns: offset + k * 1_000_000_000 + 100_000,
                monotonic_ns: k * 1_000_000_000 + 100_000,
                sequence: k as u32,
            });
        }
        let (ns, basis) = to_reference(1_500_000_000, offset, Some(&t));
        assert_eq!(basis, Basis::Pps);
        assert_eq!(ns as i64, offset - 100_000 + 1_500_000_000, "the PPS second, not the system clock's");
        let (ns, basis) = to_reference(9_000_000_000, offset, Some(&t));
        assert_eq!((ns, basis), (to_wall(9_000_000_000, offset), Basis::SystemSignalLost));
    }

    #[test]
    fn recalibration_follows_a_step_and_ignores_noise() {
        let clock = WallClock::new();
        assert_eq!(clock.recalibrate(), 0, "no step happened");
        let stepped = WallClock::with_offset(clock.offset_ns() - 5_000_000);
        let step = stepped.recalibrate();
        assert!((step - 5_000_000).abs() < 100_000, "step {step}");
        assert!(error_ns(&stepped).abs() < 100_000);
    }
}
