//! kprobe and kretprobe slots (x86_64). Arguments come from pt_regs, the return value from
//! the return register.
//!
//! The argument index is not a constant, and LLVM folds a `match` of constant-offset context
//! loads into one variable-offset load, which the verifier refuses ("dereference of modified
//! ctx ptr"); so the register is read with bpf_probe_read_kernel at its pt_regs offset.

use core::mem::offset_of;

use aya_ebpf::{
    EbpfContext as _,
    bindings::pt_regs,
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use clockpath_common::limits::{KPROBE_SLOTS, KRETPROBE_SLOTS};

use crate::stage::{HitSource, on_hit, read_sized};

const RDI: usize = offset_of!(pt_regs, rdi);
// The System V argument registers di, si, dx, cx sit in descending 8-byte steps in pt_regs,
// then r8, r9 one slot further down. Computing the offset (rather than indexing a table) keeps
// it bounded for the verifier.
const _: () = assert!(
    offset_of!(pt_regs, rsi) == RDI - 8
        && offset_of!(pt_regs, rdx) == RDI - 16
        && offset_of!(pt_regs, rcx) == RDI - 24
        && offset_of!(pt_regs, r8) == RDI - 40
        && offset_of!(pt_regs, r9) == RDI - 48
);

#[inline(always)]
fn arg_offset(n: u8) -> Option<u64> {
    let n = n as u64;
    match n {
        0..=3 => Some(RDI as u64 - 8 * n),
        4..=5 => Some(RDI as u64 - 8 * n - 8),
        _ => None,
    }
}

struct Entry(ProbeContext);

impl HitSource for Entry {
    #[inline(always)]
    fn field(&self, _offset: u32, _size: u8) -> Option<u64> {
        None
    }
    #[inline(always)]
    fn arg(&self, n: u8) -> Option<u64> {
        read_sized(self.0.as_ptr() as u64 + arg_offset(n)?, 8)
    }
    #[inline(always)]
    fn ret(&self, _nargs: u8) -> Option<u64> {
        None
    }
}

struct Return(RetProbeContext);

impl HitSource for Return {
    #[inline(always)]
    fn field(&self, _offset: u32, _size: u8) -> Option<u64> {
        None
    }
    #[inline(always)]
    fn arg(&self, _n: u8) -> Option<u64> {
        // Argument registers are clobbered by the time the function returns.
        None
    }
    #[inline(always)]
    fn ret(&self, _nargs: u8) -> Option<u64> {
        read_sized(self.0.as_ptr() as u64 + offset_of!(pt_regs, rax) as u64, 8)
    }
}

macro_rules! probe_slots {
    ($attr:ident, $ctx:ty, $wrap:ident, $range:ident: $($name:ident = $i:literal),* $(,)?) => {$(
        #[$attr]
        pub fn $name(ctx: $ctx) -> u32 {
            on_hit(&$wrap(ctx), $range.base + $i)
        }
    )*};
}

probe_slots!(kprobe, ProbeContext, Entry, KPROBE_SLOTS:
    cp_kp_0 = 0, cp_kp_1 = 1, cp_kp_2 = 2, cp_kp_3 = 3, cp_kp_4 = 4, cp_kp_5 = 5,
    cp_kp_6 = 6, cp_kp_7 = 7, cp_kp_8 = 8, cp_kp_9 = 9, cp_kp_10 = 10, cp_kp_11 = 11,
    cp_kp_12 = 12, cp_kp_13 = 13, cp_kp_14 = 14, cp_kp_15 = 15,
);

probe_slots!(kretprobe, RetProbeContext, Return, KRETPROBE_SLOTS:
    cp_krp_0 = 0, cp_krp_1 = 1, cp_krp_2 = 2, cp_krp_3 = 3, cp_krp_4 = 4, cp_krp_5 = 5,
    cp_krp_6 = 6, cp_krp_7 = 7,
);
