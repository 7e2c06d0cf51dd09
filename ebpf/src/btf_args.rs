//! Slots whose context is an array of u64 arguments: raw tracepoints, BTF tracepoints
//! (`tp_btf`), fentry and fexit.
//!
//! The argument index comes from the slot config, so it is not a constant. A direct context
//! load needs a constant offset (and tp_btf/fentry check it against the function's arity), so
//! arguments are read with bpf_probe_read_kernel instead.

use aya_ebpf::{
    EbpfContext as _,
    macros::{btf_tracepoint, fentry, fexit, raw_tracepoint},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, RawTracePointContext},
};
use clockpath_common::limits::{FENTRY_SLOTS, FEXIT_SLOTS, RAW_TRACEPOINT_SLOTS, TP_BTF_SLOTS};

use crate::stage::{HitSource, on_hit, read_sized};

/// Largest argument index a slot may ask for (the kernel passes at most 12).
const MAX_ARG: u8 = 11;

struct Args(u64);

impl HitSource for Args {
    #[inline(always)]
    fn field(&self, _offset: u32, _size: u8) -> Option<u64> {
        None
    }
    #[inline(always)]
    fn arg(&self, n: u8) -> Option<u64> {
        if n > MAX_ARG {
            return None;
        }
        read_sized(self.0 + 8 * n as u64, 8)
    }
    #[inline(always)]
    fn ret(&self, nargs: u8) -> Option<u64> {
        // fexit: the return value follows the arguments.
        self.arg(nargs)
    }
}

macro_rules! arg_slots {
    ($attr:ident, $ctx:ty, $range:ident: $($name:ident = $i:literal),* $(,)?) => {$(
        #[$attr]
        pub fn $name(ctx: $ctx) -> u32 {
            on_hit(&Args(ctx.as_ptr() as u64), $range.base + $i)
        }
    )*};
}

// raw_tracepoint programs return i32 in aya-ebpf.
macro_rules! raw_slots {
    ($($name:ident = $i:literal),* $(,)?) => {$(
        #[raw_tracepoint]
        pub fn $name(ctx: RawTracePointContext) -> i32 {
            on_hit(&Args(ctx.as_ptr() as u64), RAW_TRACEPOINT_SLOTS.base + $i) as i32
        }
    )*};
}

raw_slots!(
    cp_raw_0 = 0,
    cp_raw_1 = 1,
    cp_raw_2 = 2,
    cp_raw_3 = 3,
    cp_raw_4 = 4,
    cp_raw_5 = 5,
    cp_raw_6 = 6,
    cp_raw_7 = 7,
    cp_raw_8 = 8,
    cp_raw_9 = 9,
    cp_raw_10 = 10,
    cp_raw_11 = 11,
);

arg_slots!(btf_tracepoint, BtfTracePointContext, TP_BTF_SLOTS:
    cp_btf_0 = 0, cp_btf_1 = 1, cp_btf_2 = 2, cp_btf_3 = 3, cp_btf_4 = 4, cp_btf_5 = 5,
    cp_btf_6 = 6, cp_btf_7 = 7, cp_btf_8 = 8, cp_btf_9 = 9, cp_btf_10 = 10, cp_btf_11 = 11,
    cp_btf_12 = 12, cp_btf_13 = 13, cp_btf_14 = 14, cp_btf_15 = 15, cp_btf_16 = 16, cp_btf_17 = 17,
    cp_btf_18 = 18, cp_btf_19 = 19, cp_btf_20 = 20, cp_btf_21 = 21, cp_btf_22 = 22, cp_btf_23 = 23,
);

arg_slots!(fentry, FEntryContext, FENTRY_SLOTS:
    cp_fentry_0 = 0, cp_fentry_1 = 1, cp_fentry_2 = 2, cp_fentry_3 = 3, cp_fentry_4 = 4,
    cp_fentry_5 = 5, cp_fentry_6 = 6, cp_fentry_7 = 7, cp_fentry_8 = 8, cp_fentry_9 = 9,
    cp_fentry_10 = 10, cp_fentry_11 = 11, cp_fentry_12 = 12, cp_fentry_13 = 13, cp_fentry_14 = 14,
    cp_fentry_15 = 15,
);

arg_slots!(fexit, FExitContext, FEXIT_SLOTS:
    cp_fexit_0 = 0, cp_fexit_1 = 1, cp_fexit_2 = 2, cp_fexit_3 = 3, cp_fexit_4 = 4,
    cp_fexit_5 = 5, cp_fexit_6 = 6, cp_fexit_7 = 7,
);

/// Baselines for the overhead benchmark.
#[btf_tracepoint]
pub fn cp_empty_btf(_ctx: BtfTracePointContext) -> u32 {
    0
}

#[raw_tracepoint]
pub fn cp_empty_raw(_ctx: RawTracePointContext) -> i32 {
    0
}
