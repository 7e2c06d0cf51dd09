//! Interference sources: begin/end probe pairs whose time, spent on a CPU while a segment of
//! an interference-charged chain is open there, is charged to that segment.

/// Number of sources; indices below.
pub const SOURCES: usize = 5;
/// Hard interrupt handlers (irq_handler_entry → irq_handler_exit).
pub const IRQ: usize = 0;
/// Softirq handlers (softirq_entry → softirq_exit).
pub const SOFTIRQ: usize = 1;
/// The task that hit the segment's start stage, switched out (sched_switch out → in).
pub const SCHED: usize = 2;
/// hrtimer expiry handlers (hrtimer_expire_entry → hrtimer_expire_exit).
pub const HRTIMER: usize = 3;
/// VM exits handled by the host (kvm_exit → kvm_entry).
pub const KVM: usize = 4;

/// Names, in index order (metric labels, span events, regression columns).
pub const NAMES: [&str; SOURCES] = ["irq", "softirq", "sched", "hrtimer", "kvm"];

/// Per-CPU interference state (`INTERFERENCE[0]`, a per-CPU array).
/// Written by `ebpf/src/stage.rs`; userspace does not read it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuInterference {
    /// When the source in progress began (0: not in progress).
    pub begin_ns: [u64; SOURCES],
    /// Total time spent in each source on this CPU, monotonic.
    pub total_ns: [u64; SOURCES],
    /// pid of the task that last started a segment on this CPU (for `SCHED`).
    pub watched_pid: u64,
}
