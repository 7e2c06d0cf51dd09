//! Per-chain event counters (`CHAIN_COUNTERS`): what the stage logic and the ring count, and
//! how exactly (a plain increment or `lock xadd`).

use clockpath_common::slot::ChainCounters;

use crate::maps::CHAIN_COUNTERS;

#[inline(always)]
pub fn add(p: *mut u64, v: u64) {
    // Per-CPU memory, but another program can nest on this CPU (an IRQ during a tracepoint
    // program), so a plain `+=` could lose an update; `lock xadd` keeps the counts exact.
    // SAFETY: `p` points into a map value returned by a successful lookup.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(p, v);
    }
}

/// Count an event of `chain` on this CPU with a plain increment: a program that nests in
/// another on the same CPU (an interrupt) can lose one, which these informational counters
/// (opened, replaced, timed out…) can afford; the scheduler and timer tracepoints the busy
/// chains use run with interrupts off, so they never nest. What the books balance on is
/// counted with [`count_exact`].
#[inline(always)]
pub fn count(chain: u8, field: fn(*mut ChainCounters) -> *mut u64) {
    if let Some(c) = CHAIN_COUNTERS.get_ptr_mut(chain as u32) {
        // SAFETY: projection of a valid per-CPU map value.
        unsafe { *field(c) += 1 };
    }
}

/// Count with `lock xadd`: records lost and a full instance map, which the exactness of the
/// histograms is checked against (histogram = records received + lost).
#[inline(always)]
pub fn count_exact(chain: u8, field: fn(*mut ChainCounters) -> *mut u64) {
    if let Some(c) = CHAIN_COUNTERS.get_ptr_mut(chain as u32) {
        add(field(c), 1);
    }
}

macro_rules! counter {
    ($field:ident) => {
        // SAFETY: projection of a valid map-value pointer; no reference is created.
        |c: *mut clockpath_common::slot::ChainCounters| unsafe { core::ptr::addr_of_mut!((*c).$field) }
    };
}
pub(crate) use counter;
