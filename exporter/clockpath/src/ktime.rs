//! Kernel time. BPF timestamps are CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`); traces
//! and exemplars need wall-clock time. [`WallClock::to_wall`] is the one place where the one
//! becomes the other.

use std::sync::atomic::{AtomicI64, Ordering};

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

/// REALTIME − MONOTONIC: of several bracketed reads (mono, real, mono), the one with the
/// tightest bracket, against the bracket's midpoint.
fn measure_offset() -> i64 {
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
    /// for a minute without recalibration.
    #[test]
    fn drift_against_realtime_stays_under_a_millisecond_for_a_minute() {
        let clock = WallClock::new();
        let start = std::time::Instant::now();
        let mut worst = 0i128;
        while start.elapsed() < std::time::Duration::from_secs(60) {
            let e = error_ns(&clock);
            worst = worst.max(e.abs());
            assert!(e.abs() < 1_000_000, "to_wall is {e} ns off CLOCK_REALTIME after {:?}", start.elapsed());
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        eprintln!("worst |to_wall - CLOCK_REALTIME| over 60 s: {worst} ns");
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
