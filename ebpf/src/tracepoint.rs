//! Tracepoint slots (`tracepoint:<category>:<name>`). Keys come from fields of the tracepoint
//! record, at offsets read from the tracepoint's `format` file.

use aya_ebpf::{EbpfContext as _, macros::tracepoint, programs::TracePointContext};
use clockpath_common::limits::TRACEPOINT_SLOTS;

use crate::stage::{HitSource, on_hit, read_sized};

struct Tp(TracePointContext);

impl HitSource for Tp {
    #[inline(always)]
    fn field(&self, offset: u32, size: u8) -> Option<u64> {
        read_sized(self.0.as_ptr() as u64 + offset as u64, size)
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
    ($($name:ident = $i:literal),* $(,)?) => {$(
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            on_hit(&Tp(ctx), TRACEPOINT_SLOTS.base + $i)
        }
    )*};
}

tracepoint_slots!(
    cp_tp_0 = 0,
    cp_tp_1 = 1,
    cp_tp_2 = 2,
    cp_tp_3 = 3,
    cp_tp_4 = 4,
    cp_tp_5 = 5,
    cp_tp_6 = 6,
    cp_tp_7 = 7,
    cp_tp_8 = 8,
    cp_tp_9 = 9,
    cp_tp_10 = 10,
    cp_tp_11 = 11,
    cp_tp_12 = 12,
    cp_tp_13 = 13,
    cp_tp_14 = 14,
    cp_tp_15 = 15,
    cp_tp_16 = 16,
    cp_tp_17 = 17,
    cp_tp_18 = 18,
    cp_tp_19 = 19,
    cp_tp_20 = 20,
    cp_tp_21 = 21,
    cp_tp_22 = 22,
    cp_tp_23 = 23,
);

/// Baseline for the overhead benchmark: an empty program on the same tracepoint.
#[tracepoint]
pub fn cp_empty_tp(_ctx: TracePointContext) -> u32 {
    0
}
