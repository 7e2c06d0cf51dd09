//! Slots whose context is an array of u64 arguments: raw tracepoints, BTF tracepoints
//! (`tp_btf`), fentry and fexit.
//!
//! The argument index comes from the slot config: a constant to the verifier (the config is
//! frozen read-only data), but not to LLVM. A context load needs the offset in the instruction
//! itself (and tp_btf/fentry check it against the function's arity), and LLVM folds a `match`
//! of constant-offset loads into one load at a computed offset, which the verifier refuses
//! ("dereference of modified ctx ptr"). So each argument has its own tiny subprogram with its
//! own constant-offset load: LLVM cannot merge calls to different functions, and the verifier
//! only sees the one the slot's role reaches. No helper call per argument.
//!
//! In BTF-typed contexts (tp_btf, fentry, fexit) an argument that is a struct pointer is typed
//! by the kernel's BTF, and a member is read with a plain load the verifier turns into a
//! fault-safe one: no bpf_probe_read_kernel call either.

use aya_ebpf::{
    EbpfContext as _,
    macros::{btf_tracepoint, fentry, fexit, raw_tracepoint},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, RawTracePointContext},
};
use clockpath_common::limits::{FENTRY_SLOTS, FEXIT_SLOTS, RAW_TRACEPOINT_SLOTS, TP_BTF_SLOTS};

use crate::stage::{HitSource, on_hit, on_hits, read_sized};

macro_rules! ctx_words {
    ($($name:ident = $i:literal),* $(,)?) => {
        $(
            /// Context word `$i` (a separate subprogram: see the module comment).
            #[inline(never)]
            fn $name(ctx: *const u64) -> u64 {
                // SAFETY: the verifier checks this constant-offset context load against the
                // probed function's or tracepoint's arguments.
                unsafe { core::ptr::read_volatile(ctx.add($i)) }
            }
        )*
        /// Context word `n` (argument `n`), `None` past the kernel's 12.
        #[inline(always)]
        fn ctx_word(ctx: *const u64, n: u8) -> Option<u64> {
            match n {
                $($i => Some($name(ctx)),)*
                _ => None,
            }
        }
    };
}

ctx_words!(w0 = 0, w1 = 1, w2 = 2, w3 = 3, w4 = 4, w5 = 5, w6 = 6, w7 = 7, w8 = 8, w9 = 9, w10 = 10, w11 = 11);

/// An argument-array context; `BTF`: its pointer arguments are BTF-typed (tp_btf, fentry,
/// fexit), so their members can be read with plain loads.
struct Args<const BTF: bool>(*const u64);

impl<const BTF: bool> HitSource for Args<BTF> {
    #[inline(always)]
    fn field(&self, _offset: u32, _size: u8) -> Option<u64> {
        None
    }
    #[inline(always)]
    fn arg(&self, n: u8) -> Option<u64> {
        ctx_word(self.0, n)
    }
    #[inline(always)]
    fn ret(&self, nargs: u8) -> Option<u64> {
        // fexit: the return value follows the arguments.
        self.arg(nargs)
    }
    #[inline(always)]
    fn typed_read(&self, addr: u64, size: u8) -> Option<u64> {
        if !BTF {
            return read_sized(addr, size);
        }
        if addr == 0 {
            return None;
        }
        // SAFETY: `addr` is a BTF-typed pointer plus a member's offset (the planner sets
        // VALUE_BTF only then); the verifier checks the access against the type and makes
        // the load fault-safe.
        unsafe {
            Some(match size {
                1 => core::ptr::read_volatile(addr as *const u8) as u64,
                2 => core::ptr::read_volatile(addr as *const u16) as u64,
                4 => core::ptr::read_volatile(addr as *const u32) as u64,
                _ => core::ptr::read_volatile(addr as *const u64),
            })
        }
    }
}

macro_rules! arg_slots {
    ($attr:ident, $ctx:ty, $entry:ident, $range:ident: $($name:ident = $i:literal),* $(,)?) => {$(
        #[$attr]
        // Inlined into the program's entry: with the argument subprograms present LLVM would
        // otherwise keep the body as a subprogram of its own, a call on every hit.
        #[inline(always)]
        pub fn $name(ctx: $ctx) -> u32 {
            $entry(&Args::<true>(ctx.as_ptr() as *const u64), $range.base + $i)
        }
    )*};
}

// raw_tracepoint programs return i32 in aya-ebpf.
macro_rules! raw_slots {
    ($($name:ident = $i:literal),* $(,)?) => {$(
        #[raw_tracepoint]
        #[inline(always)]
        pub fn $name(ctx: RawTracePointContext) -> i32 {
            on_hits(&Args::<false>(ctx.as_ptr() as *const u64), RAW_TRACEPOINT_SLOTS.base + $i) as i32
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

arg_slots!(btf_tracepoint, BtfTracePointContext, on_hits, TP_BTF_SLOTS:
    cp_btf_0 = 0, cp_btf_1 = 1, cp_btf_2 = 2, cp_btf_3 = 3, cp_btf_4 = 4, cp_btf_5 = 5,
    cp_btf_6 = 6, cp_btf_7 = 7, cp_btf_8 = 8, cp_btf_9 = 9, cp_btf_10 = 10, cp_btf_11 = 11,
    cp_btf_12 = 12, cp_btf_13 = 13, cp_btf_14 = 14, cp_btf_15 = 15, cp_btf_16 = 16, cp_btf_17 = 17,
    cp_btf_18 = 18, cp_btf_19 = 19, cp_btf_20 = 20, cp_btf_21 = 21, cp_btf_22 = 22, cp_btf_23 = 23,
);

arg_slots!(fentry, FEntryContext, on_hit, FENTRY_SLOTS:
    cp_fentry_0 = 0, cp_fentry_1 = 1, cp_fentry_2 = 2, cp_fentry_3 = 3, cp_fentry_4 = 4,
    cp_fentry_5 = 5, cp_fentry_6 = 6, cp_fentry_7 = 7, cp_fentry_8 = 8, cp_fentry_9 = 9,
    cp_fentry_10 = 10, cp_fentry_11 = 11, cp_fentry_12 = 12, cp_fentry_13 = 13, cp_fentry_14 = 14,
    cp_fentry_15 = 15,
);

arg_slots!(fexit, FExitContext, on_hit, FEXIT_SLOTS:
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
