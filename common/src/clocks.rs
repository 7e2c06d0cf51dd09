//! The clock audit's BPF object (`clockpath-ebpf`'s `clocks` binary): one program per BPF time
//! helper, each run on demand (`BPF_PROG_TEST_RUN`) on a chosen CPU. A program reads its helper
//! between two `bpf_ktime_get_ns` reads and stores the three in `CLOCK_READS[index]`, so the
//! helper's offset from CLOCK_MONOTONIC is bracketed inside the kernel (tens of ns), not across
//! a syscall.

/// One bracketed read: `bpf_ktime_get_ns` before, the helper's value, `bpf_ktime_get_ns` after.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockRead {
    pub before: u64,
    pub value: u64,
    pub after: u64,
}

/// The helpers, in `CLOCK_READS` index order: (program name, helper name).
pub const BPF_CLOCKS: [(&str, &str); 5] = [
    ("clock_ktime", "bpf_ktime_get_ns"),
    ("clock_boot", "bpf_ktime_get_boot_ns"),
    ("clock_tai", "bpf_ktime_get_tai_ns"),
    ("clock_coarse", "bpf_ktime_get_coarse_ns"),
    ("clock_jiffies", "bpf_jiffies64"),
];

/// Entries of `CLOCK_READS`.
pub const CLOCK_READ_SLOTS: u32 = 8;
