//! Every slot's role, as read-only data the verifier can see.
//!
//! Userspace fills `SLOT_CONFIGS` before the object is loaded; aya creates `.rodata` with
//! `BPF_F_RDONLY_PROG` and freezes it, so the verifier reads each field a program loads from it
//! as a known constant (the slot index is compiled into each program). Branches that slot
//! never takes are then dead, and the kernel removes them before JIT: a sched_switch stage
//! slot carries no code for abort, capture, raw mode or fields it does not read, and no map
//! lookup for its own configuration.
//!
//! Every read is volatile: the static's initializer (all slots unconfigured) is not what the
//! program sees at run time, and LLVM would otherwise fold the reads into it.

use core::ptr::{addr_of, read_volatile};

use clockpath_common::{
    limits::NUM_SLOTS,
    slot::{Condition, MAX_CONDITIONS, SlotConfig, ValueSpec},
};

#[unsafe(no_mangle)]
#[unsafe(link_section = ".rodata")]
static SLOT_CONFIGS: [SlotConfig; NUM_SLOTS as usize] = [SlotConfig::NONE; NUM_SLOTS as usize];

macro_rules! fields {
    ($($name:ident: $t:ty),* $(,)?) => {$(
        #[inline(always)]
        pub fn $name(self) -> $t {
            // SAFETY: `self.0` points into `SLOT_CONFIGS`.
            unsafe { read_volatile(addr_of!((*self.0).$name)) }
        }
    )*};
}

macro_rules! specs {
    ($($name:ident),* $(,)?) => {$(
        #[inline(always)]
        pub fn $name(self) -> Spec {
            // SAFETY: projection inside `SLOT_CONFIGS`; no reference is created.
            Spec(unsafe { addr_of!((*self.0).$name) })
        }
    )*};
}

/// One slot's configuration.
#[derive(Clone, Copy)]
pub struct Cfg(*const SlotConfig);

impl Cfg {
    /// The configuration of `slot`, a constant `< NUM_SLOTS` in every caller.
    #[inline(always)]
    pub fn of(slot: u32) -> Cfg {
        let i = if slot < NUM_SLOTS { slot } else { 0 };
        Cfg(addr_of!(SLOT_CONFIGS[i as usize]))
    }
    fields!(
        role: u8, chain: u8, stage: u8, flags: u8, direct_base: u32, timeout_ns: u64, match_value: u64,
        direct_range0: u32, direct_range1: u32, sample_every: u32, sole_writer: u8, cond_ne: u8, cause: u8,
        segments: u8, also: u8, flags2: u8, clock: u8,
    );
    specs!(key0, key1, capture);
    /// Filter condition `i` (`i < MAX_CONDITIONS`, a constant in every caller).
    #[inline(always)]
    pub fn condition(self, i: usize) -> Cond {
        let i = if i < MAX_CONDITIONS { i } else { 0 };
        // SAFETY: projection inside `SLOT_CONFIGS`; no reference is created.
        Cond(unsafe { addr_of!((*self.0).conditions[i]) })
    }
    /// Whether flag `f` is set.
    #[inline(always)]
    pub fn has(self, f: u8) -> bool {
        self.flags() & f != 0
    }
}

/// One value specification inside a slot's configuration.
#[derive(Clone, Copy)]
pub struct Spec(*const ValueSpec);

impl Spec {
    fields!(source: u8, size: u8, arg: u8, flags: u8, offset: u32);
}

/// One filter condition inside a slot's configuration.
#[derive(Clone, Copy)]
pub struct Cond(*const Condition);

impl Cond {
    fields!(mask: u64, operand: u64);
    #[inline(always)]
    pub fn value(self) -> Spec {
        // SAFETY: projection inside `SLOT_CONFIGS`; no reference is created.
        Spec(unsafe { addr_of!((*self.0).value) })
    }
}
