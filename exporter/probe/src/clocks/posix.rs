//! `clock_gettime(2)`: every clock id a program may stamp with.

use clockpath_offline::clockdomain::audit::Family;

use super::{ClockInfo, Sample, Source, bracketed, sample_of};

/// (name, id, what a reader knows it by)
pub const CLOCKS: [(&str, libc::clockid_t, &str); 7] = [
    ("posix:realtime", libc::CLOCK_REALTIME, "CLOCK_REALTIME (wall clock, UTC; Python's time.time_ns)"),
    ("posix:monotonic", libc::CLOCK_MONOTONIC, "CLOCK_MONOTONIC (the reference; bpf_ktime_get_ns)"),
    ("posix:monotonic_raw", libc::CLOCK_MONOTONIC_RAW, "CLOCK_MONOTONIC_RAW (not slewed by NTP)"),
    ("posix:boottime", libc::CLOCK_BOOTTIME, "CLOCK_BOOTTIME (monotonic + time suspended)"),
    ("posix:tai", libc::CLOCK_TAI, "CLOCK_TAI (realtime + TAI−UTC as the kernel was told)"),
    ("posix:realtime_coarse", libc::CLOCK_REALTIME_COARSE, "CLOCK_REALTIME_COARSE (tick-granular)"),
    ("posix:monotonic_coarse", libc::CLOCK_MONOTONIC_COARSE, "CLOCK_MONOTONIC_COARSE (tick-granular)"),
];

/// The clock now (ns), None if the kernel refuses the id.
pub fn read(id: libc::clockid_t) -> Option<i128> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer; the kernel checks the id.
    (unsafe { libc::clock_gettime(id, &mut ts) } == 0).then(|| ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128)
}

/// The clock's resolution (ns): `clock_getres`.
pub fn resolution(id: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer.
    (unsafe { libc::clock_getres(id, &mut ts) } == 0)
        .then(|| (ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64).max(1))
}

/// The kernel's tick (ns): the resolution of the coarse clocks, 1/HZ.
pub fn tick_ns() -> Option<u64> {
    resolution(libc::CLOCK_MONOTONIC_COARSE).filter(|&r| r > 1)
}

pub struct Posix;

impl Source for Posix {
    fn round(&mut self, samples: usize, _realtime: Option<i128>) -> Vec<(ClockInfo, Result<Sample, String>)> {
        CLOCKS
            .iter()
            .map(|&(name, id, description)| {
                let res = resolution(id).unwrap_or(1);
                let info = ClockInfo {
                    name: name.into(),
                    family: Family::Posix,
                    description: description.into(),
                    resolution_ns: res,
                    ns_per_count: None,
                    modulo_ns: None,
                    note: None,
                };
                let r = bracketed(samples, || {
                    read(id).ok_or_else(|| format!("clock_gettime({name}): {}", std::io::Error::last_os_error()))
                })
                .map(|(b, v, a)| sample_of(b, v, a, res));
                (info, r)
            })
            .collect()
    }
}
