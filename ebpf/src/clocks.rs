//! The clock audit's programs (`clockpath clocks`): each reads one BPF time helper between two
//! `bpf_ktime_get_ns` reads. Run on demand by `BPF_PROG_TEST_RUN`, never attached (raw
//! tracepoint programs, and a socket filter for the one helper tracing programs may not call). A separate
//! object from the stage programs: the audit loads a map and five programs, nothing more, and a
//! kernel without one helper refuses that program only.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::generated as helper,
    macros::{map, raw_tracepoint, socket_filter},
    maps::Array,
    programs::{RawTracePointContext, SkBuffContext},
};
use clockpath_common::clocks::{CLOCK_READ_SLOTS, ClockRead};

#[map]
static CLOCK_READS: Array<ClockRead> = Array::with_max_entries(CLOCK_READ_SLOTS, 0);

#[inline(always)]
fn bracket(index: u32, read: impl Fn() -> u64) -> i32 {
    // SAFETY: a helper without arguments.
    let before = unsafe { helper::bpf_ktime_get_ns() };
    let value = read();
    // SAFETY: as above.
    let after = unsafe { helper::bpf_ktime_get_ns() };
    match CLOCK_READS.get_ptr_mut(index) {
        Some(slot) => {
            // SAFETY: a valid map value of this type; runs are serialised by the caller.
            unsafe { *slot = ClockRead { before, value, after } };
            0
        }
        None => 1,
    }
}

#[raw_tracepoint]
pub fn clock_ktime(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: helpers without arguments, here and below.
    bracket(0, || unsafe { helper::bpf_ktime_get_ns() })
}

#[raw_tracepoint]
pub fn clock_boot(_ctx: RawTracePointContext) -> i32 {
    bracket(1, || unsafe { helper::bpf_ktime_get_boot_ns() })
}

#[raw_tracepoint]
pub fn clock_tai(_ctx: RawTracePointContext) -> i32 {
    bracket(2, || unsafe { helper::bpf_ktime_get_tai_ns() })
}

/// Tracing programs may not call bpf_ktime_get_coarse_ns (its seqlock read could deadlock
/// inside the timekeeping code they trace); a socket filter may, and runs with test data.
#[socket_filter]
pub fn clock_coarse(_ctx: SkBuffContext) -> i64 {
    i64::from(bracket(3, || unsafe { helper::bpf_ktime_get_coarse_ns() }))
}

#[raw_tracepoint]
pub fn clock_jiffies(_ctx: RawTracePointContext) -> i32 {
    bracket(4, || unsafe { helper::bpf_jiffies64() })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
