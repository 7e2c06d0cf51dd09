//! Sending records: the rings (one per CPU group), the wake-up policy, and a record's head as
//! a stage writes it. Both the stage logic and the staging buffer send through here.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    cty::c_void,
    helpers::{bpf_get_smp_processor_id, bpf_ringbuf_submit},
};
use clockpath_common::{
    interference::SOURCES,
    record::{RECORD_SEGMENT, Record, RecordHead},
    slot::FLAG_ORDERED,
};

use crate::{
    config::Cfg,
    counters::{count_exact, counter},
    maps::{NEXT_SEQ, RING_0, RING_1, RING_2, RING_3, RING_4, RING_5, RING_6, RING_7, RING_MASK, WAKEUP_BYTES},
};

/// The CPU this runs on.
#[inline(always)]
pub fn cpu() -> u32 {
    // SAFETY: helper with no preconditions (inlined by the JIT on recent kernels).
    unsafe { bpf_get_smp_processor_id() }
}

/// Records a CPU submits between two looks at a ring's fill level.
const QUERY_EVERY: u64 = 16;

/// `$body` with `$ring` bound to ring `$i` (a static map: each arm is its own helper call).
macro_rules! on_ring {
    ($i:expr, |$ring:ident| $body:expr) => {
        match $i {
            0 => {
                let $ring = &RING_0;
                $body
            }
            1 => {
                let $ring = &RING_1;
                $body
            }
            2 => {
                let $ring = &RING_2;
                $body
            }
            3 => {
                let $ring = &RING_3;
                $body
            }
            4 => {
                let $ring = &RING_4;
                $body
            }
            5 => {
                let $ring = &RING_5;
                $body
            }
            6 => {
                let $ring = &RING_6;
                $body
            }
            _ => {
                let $ring = &RING_7;
                $body
            }
        }
    };
}
pub(crate) use on_ring;

#[inline(always)]
fn ring_mask() -> u32 {
    // SAFETY: a read-only global.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(RING_MASK)) }
}

/// The ring of the CPU this runs on.
#[inline(always)]
pub fn own_ring() -> u32 {
    cpu() & ring_mask()
}

/// The ring a record of instance `id` goes to: the opening CPU's for `FLAG_ORDERED` slots (an
/// instance's records then arrive in the order they were written), the writing CPU's otherwise.
#[inline(always)]
pub fn ring_of(cfg: Cfg, id: u64) -> u32 {
    if cfg.has(FLAG_ORDERED) && id != 0 { (id >> 48) as u32 & ring_mask() } else { own_ring() }
}

/// Submit flags for a record (or a batch) on `ring`.
#[inline(always)]
pub fn wake_flags(ring: u32) -> u64 {
    // Records are submitted without waking the reader (a wakeup is a context switch, which a
    // sched_switch chain would then record, and so on); the reader drains on a timer. Only
    // when a ring fills up past the threshold is it woken early. The fill level is read on
    // every 16th submit of a CPU: reading it costs a helper call and a cache line the reader
    // writes, and the threshold (a quarter of the ring) leaves room for the delay.
    if let Some(n) = NEXT_SEQ.get_ptr_mut(1) {
        // SAFETY: valid per-CPU map value; a nested program can at worst shift the phase.
        let n = unsafe {
            *n += 1;
            *n
        };
        if n % QUERY_EVERY != 0 {
            return BPF_RB_NO_WAKEUP as u64;
        }
    }
    if on_ring!(ring, |r| r.query(BPF_RB_AVAIL_DATA as u64)) > WAKEUP_BYTES.load() {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// The head of a record, as a stage writes it.
pub struct Parts {
    pub kind: u8,
    pub chain: u8,
    pub stage: u8,
    pub slot: u8,
    pub cause: u8,
    pub id: u64,
    pub key: u64,
    pub start: u64,
    pub end: u64,
    pub aux: u64,
}

impl Parts {
    /// Write the head at `r`, field by field: a whole-struct write with a constant array
    /// becomes a call to a byte-at-a-time memset in the linked object.
    ///
    /// # Safety
    /// `r` is valid for writes of the record's head.
    #[inline(always)]
    pub unsafe fn write(&self, r: *mut Record) {
        // SAFETY: by the caller's contract.
        unsafe {
            (*r).kind = self.kind;
            (*r).chain = self.chain;
            (*r).stage = self.stage;
            (*r).slot = self.slot;
            (*r).cpu = cpu() as u16;
            (*r).cause = self.cause;
            (*r)._pad = 0;
            (*r).instance_id = self.id;
            (*r).key = self.key;
            (*r).start_ns = self.start;
            (*r).end_ns = self.end;
            (*r).aux = self.aux;
        }
    }
}

/// Reserve, write and submit one record's head on `ring`. A full ring counts it as lost.
///
/// A subprogram, not inlined: its eight ring arms (each ring is its own map, so its own helper
/// calls) would otherwise be copied into every place a record is written, and every slot
/// program carried them several times over: the object's size, and the memory aya needs to
/// link it at every start, grew with them. One call per record sent straight to a ring.
#[inline(never)]
pub fn send(parts: &Parts, ring: u32) {
    match on_ring!(ring, |r| r.reserve::<RecordHead>(0).map(|mut e| e.as_mut_ptr() as *mut Record)) {
        Some(r) => {
            // SAFETY: `r` is the reserved head, submitted once.
            unsafe {
                parts.write(r);
                bpf_ringbuf_submit(r as *mut c_void, wake_flags(ring));
            }
        }
        None => lost(parts.chain, parts.kind),
    }
}

/// [`send`] for a whole record, with the interference charged to its segment. Its own
/// subprogram, not an `Option` argument: verifiers before 6.18 do not know that a stack pointer
/// is never null, so they followed "no interference" to the head-sized reservation and then
/// "interference" to the write past it, and refused the program.
#[inline(never)]
pub fn send_charged(parts: &Parts, ring: u32, interference: &[u64; SOURCES]) {
    match on_ring!(ring, |r| r.reserve::<Record>(0).map(|mut e| e.as_mut_ptr())) {
        Some(r) => {
            // SAFETY: `r` is the reserved record, submitted once.
            unsafe {
                parts.write(r);
                copy_words(core::ptr::addr_of_mut!((*r).interference_ns) as *mut u64, interference);
                bpf_ringbuf_submit(r as *mut c_void, wake_flags(ring));
            }
        }
        None => lost(parts.chain, parts.kind),
    }
}

/// A record of `chain` did not fit in its ring.
#[inline(always)]
pub fn lost(chain: u8, kind: u8) {
    count_exact(chain, counter!(ring_lost));
    if kind == RECORD_SEGMENT {
        count_exact(chain, counter!(ring_lost_segments));
    }
}

/// `dst[..SOURCES] = src`, in word stores LLVM cannot turn into a memset or memcpy call.
///
/// # Safety
/// `dst` is valid for `SOURCES` u64 writes.
#[inline(always)]
pub unsafe fn copy_words(dst: *mut u64, src: &[u64; SOURCES]) {
    let mut i = 0;
    while i < SOURCES {
        // SAFETY: `i < SOURCES`, inside `dst` by the caller's contract.
        unsafe { core::ptr::write_volatile(dst.add(i), src[i]) };
        i += 1;
    }
}
