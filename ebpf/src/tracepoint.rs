//! Tracepoint slots (`tracepoint:<category>:<name>`). Keys come from fields of the tracepoint
//! record, at offsets read from the tracepoint's `format` file.
//!
//! The field offset is not a compile-time constant, and the verifier only allows context loads
//! at constant offsets; bpf_probe_read_kernel works but costs a helper call on every hit. So
//! the first [`WINDOW_WORDS`] words after the common header are copied with constant-offset
//! loads (the verifier allows any offset below PERF_MAX_TRACE_SIZE in a tracepoint context)
//! and the field is picked from the copy; fields beyond the window are probe-read.

use aya_ebpf::{EbpfContext as _, macros::tracepoint, programs::TracePointContext};
use clockpath_common::limits::TRACEPOINT_SLOTS;

use crate::stage::{HitSource, on_hits, read_sized};

/// A tracepoint context that copies `W` words (bytes `8 .. 8 + 8W`) with direct loads.
struct Tp<const W: usize>(TracePointContext);

impl<const W: usize> Tp<W> {
    /// Word `i` (bytes `8 + 8i ..`) of the record, `i < W`.
    #[inline(always)]
    fn word(&self, i: usize) -> u64 {
        let base = self.0.as_ptr() as *const u64;
        let mut w = [0u64; 8];
        let mut j = 0;
        while j < W && j < 8 {
            // Volatile loads keep LLVM from folding these constant-offset loads into one
            // variable-offset load, which the verifier would refuse.
            // SAFETY: the family's window lies inside every record it is attached to.
            w[j] = unsafe { core::ptr::read_volatile(base.add(1 + j)) };
            j += 1;
        }
        w[i & 7]
    }
}

impl<const W: usize> HitSource for Tp<W> {
    #[inline(always)]
    fn field(&self, offset: u32, size: u8) -> Option<u64> {
        let (off, size) = (offset as usize, size as usize);
        if W > 0 && off >= 8 && off + size <= 8 + 8 * W && off % 8 + size <= 8 {
            let word = self.word((off - 8) / 8) >> ((off % 8) * 8);
            return Some(match size {
                1 => word & 0xff,
                2 => word & 0xffff,
                4 => word & 0xffff_ffff,
                _ => word,
            });
        }
        read_sized(self.0.as_ptr() as u64 + offset as u64, size as u8)
    }
    #[inline(always)]
    fn arg(&self, _n: u8) -> Option<u64> {
        None
    }
    #[inline(always)]
    fn ret(&self, _nargs: u8) -> Option<u64> {
        None
    }
}

macro_rules! tracepoint_slots {
    ($words:literal: $($name:ident = $i:literal),* $(,)?) => {$(
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            on_hits(&Tp::<$words>(ctx), TRACEPOINT_SLOTS.base + $i)
        }
    )*};
}

// Families as in `clockpath_common::limits::TRACEPOINT_WINDOWS`.
tracepoint_slots!(0: cp_tp_0 = 0, cp_tp_1 = 1, cp_tp_2 = 2, cp_tp_3 = 3, cp_tp_4 = 4, cp_tp_5 = 5);
tracepoint_slots!(1: cp_tp_6 = 6, cp_tp_7 = 7, cp_tp_8 = 8, cp_tp_9 = 9, cp_tp_10 = 10, cp_tp_11 = 11);
tracepoint_slots!(3: cp_tp_12 = 12, cp_tp_13 = 13, cp_tp_14 = 14, cp_tp_15 = 15, cp_tp_16 = 16, cp_tp_17 = 17);
tracepoint_slots!(7: cp_tp_18 = 18, cp_tp_19 = 19, cp_tp_20 = 20, cp_tp_21 = 21, cp_tp_22 = 22, cp_tp_23 = 23);

/// Baseline for the overhead benchmark: an empty program on the same tracepoint.
#[tracepoint]
pub fn cp_empty_tp(_ctx: TracePointContext) -> u32 {
    0
}
