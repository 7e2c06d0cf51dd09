//! Staged records: a record that needs no order and carries no interference (a one-segment
//! chain's segment) is written to this CPU's `STAGED` buffer as a head, and every
//! `STAGE_RECORDS` heads go to the CPU's ring as one item. A ring reservation (its lock with interrupts off, a header, the producer position)
//! is most of what a recorded segment costs; a batch pays it once.
//!
//! A CPU that goes idle with records staged runs nothing that would hand them over, so the
//! reader runs `cp_flush` on that CPU (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_RUN_ON_CPU`) on
//! every drain tick, and reads what is left itself once the probes are detached.
//!
//! `busy` is set while a program writes here. One that runs inside it on the same CPU (an
//! interrupt, or a preemption where programs are preemptible) sends its record straight to
//! the ring; `cp_flush` returns 1 and is tried again on the next tick.

use aya_ebpf::{cty::c_void, helpers::bpf_ringbuf_output, macros::raw_tracepoint, programs::RawTracePointContext};
use clockpath_common::record::{Record, RecordHead, STAGE_RECORDS, Staged};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use crate::{
    maps::{RING_0, RING_1, RING_2, RING_3, RING_4, RING_5, RING_6, RING_7, STAGED, STAGING},
    ring::{Parts, lost, on_ring, own_ring, wake_flags},
};

/// Stage a record's head on this CPU; false when it must go to the ring now (staging is off,
/// or a program this one interrupted is writing here).
#[inline(always)]
pub fn stage(parts: &Parts) -> bool {
    // SAFETY: a read-only global.
    if unsafe { read_volatile(addr_of!(STAGING)) } == 0 {
        return false;
    }
    let Some(st) = STAGED.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: `st` is this CPU's value; `i < STAGE_RECORDS` is checked before indexing.
    unsafe {
        if read_volatile(addr_of!((*st).busy)) != 0 {
            return false;
        }
        write_volatile(addr_of_mut!((*st).busy), 1);
        let i = read_volatile(addr_of!((*st).n)) as usize;
        if i >= STAGE_RECORDS {
            // Never left full (a full buffer is flushed at once); go straight to the ring.
            write_volatile(addr_of_mut!((*st).busy), 0);
            return false;
        }
        parts.write(addr_of_mut!((*st).records[i]) as *mut Record);
        write_volatile(addr_of_mut!((*st).n), i as u32 + 1);
        if i + 1 == STAGE_RECORDS {
            flush(st);
        }
        write_volatile(addr_of_mut!((*st).busy), 0);
    }
    true
}

/// Hand this CPU's staged records to its ring in one piece, or count them as lost.
///
/// # Safety
/// `st` is this CPU's `STAGED` value and the caller holds its `busy`.
///
/// A subprogram, once per program (see `ring::send`): called for every 16th staged record.
#[inline(never)]
unsafe fn flush(st: *mut Staged) {
    // SAFETY: by the caller's contract; every index is checked against `n <= STAGE_RECORDS`.
    unsafe {
        let n = read_volatile(addr_of!((*st).n)) as usize;
        if n == 0 || n > STAGE_RECORDS {
            write_volatile(addr_of_mut!((*st).n), 0);
            return;
        }
        let ring = own_ring();
        let heads = addr_of!((*st).records) as *mut c_void;
        // Checked again on the very value passed: older verifiers (6.1) lose the bound of `n`
        // through the multiplication ("R3 unbounded memory access"), and without the opaque
        // copy LLVM would drop this check as implied by the one above.
        let bytes = core::hint::black_box((n * size_of::<RecordHead>()) as u64);
        if bytes == 0 || bytes > size_of::<[RecordHead; STAGE_RECORDS]>() as u64 {
            write_volatile(addr_of_mut!((*st).n), 0);
            return;
        }
        // The helper, not `RingBuf::output`: that is not inlined, and kernels before 6.x refuse
        // a map passed to a BPF-to-BPF call ("reg type unsupported"). A `RingBuf` is its map
        // definition (`repr(transparent)`), which is what the helper takes.
        let sent =
            on_ring!(ring, |r| bpf_ringbuf_output(r as *const _ as *mut c_void, heads, bytes, wake_flags(ring)) == 0);
        if !sent {
            let mut j = 0;
            while j < STAGE_RECORDS {
                if j < n {
                    let r = addr_of!((*st).records[j]) as *const Record;
                    lost((*r).chain, (*r).kind);
                }
                j += 1;
            }
        }
        write_volatile(addr_of_mut!((*st).n), 0);
    }
}

/// Run by the reader on a CPU (never attached): flush what is staged there. Returns 1 when a
/// program on the CPU was writing (try again later).
#[raw_tracepoint]
pub fn cp_flush(_ctx: RawTracePointContext) -> i32 {
    let Some(st) = STAGED.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's value; `busy` is taken before the flush and given back after.
    unsafe {
        if read_volatile(addr_of!((*st).busy)) != 0 {
            return 1;
        }
        write_volatile(addr_of_mut!((*st).busy), 1);
        flush(st);
        write_volatile(addr_of_mut!((*st).busy), 0);
    }
    0
}
