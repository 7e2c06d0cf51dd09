//! Kernel time. BPF timestamps are CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).

/// CLOCK_MONOTONIC now, in ns: the clock BPF records use.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
