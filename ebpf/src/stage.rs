//! The stage logic every slot program runs: open, advance, abort and time out chain instances,
//! record segment deltas into the per-CPU histograms and the ring buffer.
//!
//! Semantics (mirrored by `exporter/src/chain/assembler.rs` and tested against it):
//! - stage 0 opens an instance on its key; an instance already open on the key is kept when the
//!   slot is first-hit-only, replaced otherwise (a timed-out one is always replaced);
//! - a later stage `k` advances an open instance only when `k` is its next stage (and, with
//!   match-capture, when the value captured at stage 0 matches); the segment `k-1 → k` is
//!   recorded once; the last stage also records `total` and closes the instance;
//! - a hit on an instance older than the chain's timeout closes it as timed out;
//! - a later stage with no open instance on its key returns after one map lookup;
//! - a closed instance that recorded no segment yet emits no ring record (userspace knows
//!   nothing of it; the close is counted), unless raw mode streams every hit;
//! - a hit that interrupts a program updating the same instance on the same CPU is dropped
//!   and counted (`nested`), and not streamed in raw mode: applied, it would be overwritten by
//!   the update it interrupted, which happened first;
//! - a sampled chain's stage 0 opens an instance on every `sample_every`-th hit per CPU; a hit
//!   not sampled still closes the instance open on its key (it would have replaced it).
//!
//! The slot's configuration is read from frozen read-only data (`config.rs`): the verifier
//! removes every branch below that the slot's role never takes.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_ktime_get_ns, bpf_ktime_get_tai_ns, bpf_probe_read_kernel,
    },
};
use clockpath_common::{
    hist::{NUM_BUCKETS, bucket_of},
    interference::{SCHED, SOURCES},
    limits::{HIST_ROWS_PER_CHAIN, MAX_CHAINS, TOTAL_ROW},
    record::UNKNOWN_INTERFERENCE,
    record::{CLOSE_ABORTED, CLOSE_REPLACED, CLOSE_TIMEOUT, RECORD_CLOSE, RECORD_HIT, RECORD_SEGMENT},
    slot::*,
};

use crate::{
    config::{Cfg, Spec},
    counters::{add, count, count_exact, counter},
    maps::{ACTIVE, CAUSE_BY_VALUE, DIRECT, HIST, INSTANCES, INTERFERENCE, NEXT_SEQ, SAMPLING, SLOT_HITS, UPDATING},
    ring::{Parts, copy_words, cpu, ring_of, send, send_charged},
};

/// What a slot program can read from its context, per attach kind.
pub trait HitSource {
    /// `size` bytes at `offset` in a tracepoint record.
    fn field(&self, offset: u32, size: u8) -> Option<u64>;
    /// Argument `n` of the probed function or tracepoint.
    fn arg(&self, n: u8) -> Option<u64>;
    /// Return value; `nargs` is the function's argument count (fexit keeps it after the args).
    fn ret(&self, nargs: u8) -> Option<u64>;
    /// `size` bytes at `addr`, a member of a BTF-typed pointer argument (`VALUE_BTF`).
    #[inline(always)]
    fn typed_read(&self, addr: u64, size: u8) -> Option<u64> {
        read_sized(addr, size)
    }
}

/// Read `size` bytes at `addr` from kernel memory, zero-extended.
#[inline(always)]
pub fn read_sized(addr: u64, size: u8) -> Option<u64> {
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address and returns an error.
    unsafe {
        match size {
            1 => bpf_probe_read_kernel(addr as *const u8).ok().map(u64::from),
            2 => bpf_probe_read_kernel(addr as *const u16).ok().map(u64::from),
            4 => bpf_probe_read_kernel(addr as *const u32).ok().map(u64::from),
            _ => bpf_probe_read_kernel(addr as *const u64).ok(),
        }
    }
}

#[inline(always)]
fn value<C: HitSource>(ctx: &C, spec: Spec) -> Option<u64> {
    let v = match spec.source() {
        SRC_CPU => return Some(cpu() as u64),
        SRC_TID => return Some(bpf_get_current_pid_tgid() & 0xffff_ffff),
        SRC_TGID => return Some(bpf_get_current_pid_tgid() >> 32),
        SRC_GLOBAL => return Some(0),
        SRC_FIELD => return ctx.field(spec.offset(), spec.size()),
        SRC_ARG => ctx.arg(spec.arg())?,
        SRC_RET => ctx.ret(spec.arg())?,
        _ => return None,
    };
    if spec.flags() & VALUE_DEREF == 0 {
        return Some(v);
    }
    let addr = v.wrapping_add(spec.offset() as u64);
    if spec.flags() & VALUE_BTF != 0 { ctx.typed_read(addr, spec.size()) } else { read_sized(addr, spec.size()) }
}

#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "a record is written from many parts")]
fn emit(kind: u8, cfg: Cfg, slot: u32, stage: u8, cause: u8, id: u64, key: u64, start: u64, end: u64, aux: u64) {
    emit_with(kind, cfg, slot, stage, cause, id, key, start, end, aux, None);
}

/// Send a record; `interference` only for segments of interference-charged chains. Records
/// that need no order are staged (`staging.rs`); the others go to their ring at once.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "a record is written from many parts")]
fn emit_with(
    kind: u8,
    cfg: Cfg,
    slot: u32,
    stage: u8,
    cause: u8,
    id: u64,
    key: u64,
    start: u64,
    end: u64,
    aux: u64,
    interference: Option<&[u64; SOURCES]>,
) {
    let parts = Parts { kind, chain: cfg.chain(), stage, slot: slot as u8, cause, id, key, start, end, aux };
    match interference {
        Some(i) => send_charged(&parts, ring_of(cfg, id), i),
        None if !cfg.has(FLAG_ORDERED) && crate::staging::stage(&parts) => {}
        None => send(&parts, ring_of(cfg, id)),
    }
}

#[inline(always)]
fn hist_add(cfg: Cfg, row: u32, delta: u64) {
    let idx = bucket_of(delta) as usize;
    if idx >= NUM_BUCKETS {
        return;
    }
    if let Some(r) = HIST.get_ptr_mut(cfg.chain() as u32 * HIST_ROWS_PER_CHAIN + row) {
        // SAFETY: `r` is a valid HistRow and `idx < NUM_BUCKETS`.
        unsafe {
            let bucket = core::ptr::addr_of_mut!((*r).buckets[idx]);
            let sum = core::ptr::addr_of_mut!((*r).sum_ns);
            if cfg.sole_writer() != 0 {
                // No other program writes this row, and this one never nests in itself on a
                // CPU: a locked add (a full barrier after the record's stores) buys nothing.
                *bucket += 1;
                *sum += delta;
            } else {
                add(bucket, 1);
                add(sum, delta);
            }
        }
    }
}

#[inline(always)]
fn next_instance_id() -> u64 {
    let cpu = cpu();
    match NEXT_SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU value; a nested program on this CPU could reuse a sequence number,
        // which only makes two ids equal, never corrupts state.
        Some(p) => unsafe {
            let seq = *p + 1;
            *p = seq;
            ((cpu as u64) << 48) | (seq & 0xffff_ffff_ffff)
        },
        None => 0,
    }
}

/// Instances of `chain` that may be open (an over-estimate, never an under-estimate).
#[inline(always)]
fn maybe_open(chain: u8) -> bool {
    let Some(a) = ACTIVE.get(chain as u32) else {
        return true;
    };
    let swept = ACTIVE.get(MAX_CHAINS + chain as u32).map_or(0, |s| s.inserted);
    a.inserted.wrapping_sub(a.removed).wrapping_sub(swept) as i64 > 0
}

#[inline(always)]
fn active_add(chain: u8, inserted: bool) {
    if let Some(a) = ACTIVE.get_ptr_mut(chain as u32) {
        // SAFETY: projection of a valid map-value pointer.
        let p = unsafe {
            if inserted { core::ptr::addr_of_mut!((*a).inserted) } else { core::ptr::addr_of_mut!((*a).removed) }
        };
        add(p, 1);
    }
}

/// Where an instance lives: a hash-map key, or a `DIRECT` array entry.
#[derive(Clone, Copy)]
enum Place {
    Hash(InstanceKey),
    Direct(u32),
}

/// The `DIRECT` entry of a key, or None when the key is outside the chain's key space.
#[inline(always)]
fn direct_index(cfg: Cfg, k0: u64, k1: u64) -> Option<u32> {
    if k0 >= cfg.direct_range0() as u64 || k1 >= cfg.direct_range1() as u64 {
        return None;
    }
    Some(cfg.direct_base() + k0 as u32 * cfg.direct_range1() + k1 as u32)
}

/// The entry of `place`, open or closed (`next_stage == 0`): a closed instance's entry stays
/// where it is (see `close_entry`).
#[inline(always)]
fn entry(place: &Place) -> Option<*mut Instance> {
    match place {
        Place::Hash(k) => INSTANCES.get_ptr_mut(k),
        Place::Direct(i) => DIRECT.get_ptr_mut(*i),
    }
}

/// Whether the entry at `p` holds an open instance.
#[inline(always)]
fn is_open(p: *mut Instance) -> bool {
    // SAFETY: valid map value.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*p).next_stage)) != 0 }
}

/// The open instance at `place`, if any.
#[inline(always)]
fn find(place: &Place) -> Option<*mut Instance> {
    entry(place).filter(|&p| is_open(p))
}

/// Close the instance at `p` (closed at `now`). A hash-map entry is not deleted: the next
/// open on its key reuses it, and the userspace sweeper deletes it once it has been closed
/// for a while. Deleting and inserting a key on every close and open (an hrtimer armed and
/// cancelled tens of thousands of times a second) takes the hash map's bucket lock and free
/// list each time; reusing the entry costs the lookup that was made anyway.
#[inline(always)]
fn close_entry(p: *mut Instance, now: u64) {
    // SAFETY: valid map value.
    unsafe {
        (*p).last_ns = now;
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).next_stage), 0);
    }
}

/// Store a new instance at `place`, in `existing` (its entry, open or closed) when there is
/// one.
#[inline(always)]
fn store(cfg: Cfg, place: &Place, opened: &Opened, existing: Option<*mut Instance>) -> bool {
    if let Some(p) = existing {
        // SAFETY: valid map value.
        unsafe { opened.write(cfg, p, false) };
        return true;
    }
    let Place::Hash(k) = place else {
        return false;
    };
    let mut slot = core::mem::MaybeUninit::<Instance>::uninit();
    // SAFETY: every field of `slot` is written; then it is a valid `Instance`.
    let inst = unsafe {
        opened.write(cfg, slot.as_mut_ptr(), true);
        slot.assume_init_ref()
    };
    // A new key is counted in ACTIVE before it becomes visible; NOEXIST makes sure a key
    // another CPU inserted meanwhile is not counted twice (that CPU's entry is reused).
    active_add(cfg.chain(), true);
    if INSTANCES.insert(k, inst, BPF_NOEXIST as u64).is_ok() {
        return true;
    }
    active_add(cfg.chain(), false);
    match INSTANCES.get_ptr_mut(k) {
        Some(p) => {
            // SAFETY: valid map value.
            unsafe { opened.write(cfg, p, false) };
            true
        }
        None => false,
    }
}

/// Entry point of a program that may play a second slot's role (`SlotConfig::also`): its own
/// role, then the other's. `also` is frozen read-only data like the rest of the role, so a
/// program without a second role carries no code for one after the verifier.
#[inline(always)]
pub fn on_hits<C: HitSource>(ctx: &C, slot: u32) -> u32 {
    on_hit(ctx, slot);
    let also = Cfg::of(slot).also() as u32;
    if also < clockpath_common::limits::NUM_SLOTS {
        on_hit(ctx, also);
    }
    0
}

/// Entry point of every slot program.
#[inline(always)]
pub fn on_hit<C: HitSource>(ctx: &C, slot: u32) -> u32 {
    let cfg = Cfg::of(slot);
    if cfg.role() == ROLE_NONE {
        return 0;
    }
    if let Some(h) = SLOT_HITS.get_ptr_mut(slot) {
        // Plain per-CPU increment: a hit lost to a nested program is acceptable here, the
        // cost of `lock xadd` on every hit is not.
        // SAFETY: valid per-CPU map value.
        unsafe { *h += 1 };
    }
    if !passes(ctx, cfg, 0) || !passes(ctx, cfg, 1) {
        return 0;
    }
    if cfg.role() >= ROLE_INTERFERENCE_BEGIN {
        interference(ctx, cfg);
        return 0;
    }
    let stage0 = cfg.role() == ROLE_STAGE && cfg.stage() == 0;
    // A stage-0 hit that is not sampled only closes what is open, like a later stage.
    let opens = stage0 && sampled(cfg);
    let direct = cfg.has(FLAG_DIRECT);
    // Fast path for hash chains: a later stage (or abort) of a chain with no open instance at
    // all stops here, before computing its key. (A direct chain's lookup is cheaper than this
    // check.) Raw mode streams every hit, so it always goes on.
    if !opens && !direct && !cfg.has(FLAG_RAW) && !maybe_open(cfg.chain()) {
        return 0;
    }
    let Some(k0) = value(ctx, cfg.key0()) else {
        return 0;
    };
    let (k1, key) = if cfg.key1().source() == SRC_NONE {
        (0, k0)
    } else {
        match value(ctx, cfg.key1()) {
            Some(k1) => (k1, combine_key(k0, k1)),
            None => return 0,
        }
    };
    let place = if direct {
        match direct_index(cfg, k0, k1) {
            Some(i) => Place::Direct(i),
            None => {
                count(cfg.chain(), counter!(key_out_of_range));
                return 0;
            }
        }
    } else {
        Place::Hash(InstanceKey { chain: cfg.chain() as u32, _pad: 0, key })
    };
    // Claim the instance for this CPU (see `Updating`): a hit that interrupted a program
    // updating the same instance is dropped and counted. One level is enough: the probes that
    // nest (a hardirq's softirq_raise inside softirq_entry/exit) run with interrupts off.
    let Some(g) = UPDATING.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's value; a program nested in this one restores what it found.
    let outer = unsafe { *g };
    if outer.busy != 0 && outer.chain == cfg.chain() as u32 && outer.key == key {
        count(cfg.chain(), counter!(nested));
        return 0;
    }
    // SAFETY: as above.
    unsafe { *g = Updating { busy: 1, chain: cfg.chain() as u32, key } };
    if cfg.role() == ROLE_ABORT {
        abort(cfg, slot, &place, key);
    } else if opens {
        open(ctx, cfg, slot, &place, key);
    } else if stage0 {
        // This hit would have replaced the open instance: it must not survive to be measured
        // from an older stage-0 hit. (Sampling is for last-hit-wins chains only.)
        abort_with(cfg, slot, &place, key, CLOSE_REPLACED);
    } else {
        advance(cfg, slot, &place, key);
    }
    // SAFETY: as above.
    unsafe { *g = outer };
    0
}

/// Whether filter condition `i` holds for this hit (an unused condition always does).
#[inline(always)]
fn passes<C: HitSource>(ctx: &C, cfg: Cfg, i: usize) -> bool {
    let c = cfg.condition(i);
    if c.value().source() == SRC_NONE {
        return true;
    }
    let Some(v) = value(ctx, c.value()) else {
        return false;
    };
    let equal = v & c.mask() == c.operand();
    if cfg.cond_ne() & cond_ne(i) != 0 { !equal } else { equal }
}

/// The fields of an open instance a hit reads: copied field by field from its entry, not the
/// whole 128-byte entry (its second cache line holds the interference snapshot, which only
/// interference-charged chains read, and which another CPU may have written).
#[derive(Clone, Copy)]
struct Head {
    id: u64,
    start_ns: u64,
    /// Stage 0's and the last stage's times on their stages' clocks (the instance's
    /// `start_ns`, `last_ns` unless the chain has `FLAG2_STAMPS`).
    start_stamp: u64,
    last_stamp: u64,
    capture: u64,
    next_stage: u32,
    seg_cpu: u32,
    cause: u32,
}

impl Head {
    /// # Safety
    /// `p` is a valid map value.
    #[inline(always)]
    unsafe fn read(cfg: Cfg, p: *const Instance) -> Head {
        // SAFETY: by the caller's contract.
        unsafe {
            let stamps = cfg.flags2() & FLAG2_STAMPS != 0;
            Head {
                id: (*p).id,
                start_ns: (*p).start_ns,
                start_stamp: if stamps { (*p).start_stamp } else { (*p).start_ns },
                last_stamp: if stamps { (*p).last_stamp } else { (*p).last_ns },
                capture: (*p).capture,
                next_stage: (*p).next_stage,
                seg_cpu: (*p).seg_cpu,
                cause: (*p).cause,
            }
        }
    }
}

#[inline(always)]
fn timed_out(cfg: Cfg, inst: &Head, now: u64) -> bool {
    cfg.timeout_ns() != 0 && now.wrapping_sub(inst.start_ns) > cfg.timeout_ns()
}

/// Report a closed instance to userspace: only one that recorded a segment (userspace holds
/// it), or every one in raw mode. Opening and closing without a segment (a timer armed and
/// cancelled) is churn that measures nothing; it is counted, not streamed.
#[inline(always)]
fn close(cfg: Cfg, slot: u32, key: u64, inst: &Head, reason: u8, now: u64) {
    if inst.next_stage > 1 || cfg.has(FLAG_RAW) {
        emit(RECORD_CLOSE, cfg, slot, reason, inst.cause as u8, inst.id, key, inst.start_ns, now, inst.capture);
    }
}

/// Stage 0 of a sampled chain: whether this hit opens an instance (every `sample_every`-th
/// hit on this CPU; the first one always).
#[inline(always)]
fn sampled(cfg: Cfg) -> bool {
    let every = cfg.sample_every();
    if every <= 1 {
        return true;
    }
    let Some(left) = SAMPLING.get_ptr_mut(cfg.chain() as u32) else {
        return true;
    };
    // SAFETY: valid per-CPU map value; a nested program on this CPU can at worst shift the
    // sampling phase by one.
    let sampled = unsafe {
        if *left == 0 {
            *left = every as u64 - 1;
            true
        } else {
            *left -= 1;
            false
        }
    };
    if !sampled {
        count(cfg.chain(), counter!(sampled_out));
    }
    sampled
}

#[inline(always)]
fn raw_hit(cfg: Cfg, slot: u32, id: u64, key: u64, now: u64, capture: u64, cause: u32) {
    if cfg.has(FLAG_RAW) {
        emit(RECORD_HIT, cfg, slot, cfg.stage(), cause as u8, id, key, now, now, capture);
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: helper with no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// This hit's time on its stage's clock (`SlotConfig::clock`), `now` on CLOCK_MONOTONIC. The
/// clock is a constant of the slot: the verifier drops the helpers a slot does not call, so a
/// kernel without `bpf_ktime_get_tai_ns` loads every slot that does not stamp on TAI.
#[inline(always)]
fn stamp(cfg: Cfg, now: u64) -> u64 {
    if cfg.flags2() & FLAG2_STAMPS == 0 {
        return now;
    }
    match cfg.clock() {
        // SAFETY: helpers with no preconditions.
        CLOCK_BOOTTIME => unsafe { bpf_ktime_get_boot_ns() },
        // SAFETY: as above.
        CLOCK_TAI => unsafe { bpf_ktime_get_tai_ns() },
        _ => now,
    }
}

#[inline(always)]
fn open<C: HitSource>(ctx: &C, cfg: Cfg, slot: u32, place: &Place, key: u64) {
    let now = now_ns();
    let st = stamp(cfg, now);
    if cfg.flags2() & FLAG2_BLIND_OPEN != 0 {
        // Write the entry without reading it (see FLAG2_BLIND_OPEN).
        if let Some(p) = entry(place) {
            let cause = if cfg.has(FLAG_CAUSES) { cfg.cause() as u32 } else { 0 };
            let opened =
                Opened { id: next_instance_id(), now, stamp: st, capture: 0, cause, cpu: cpu(), snap: &[0; SOURCES] };
            // SAFETY: valid map value.
            unsafe { opened.write(cfg, p, false) };
            count(cfg.chain(), counter!(opened));
        }
        return;
    }
    let capture = if cfg.capture().source() == SRC_NONE { 0 } else { value(ctx, cfg.capture()).unwrap_or(0) };
    let cause = cause_of(cfg, capture);
    let existing = entry(place);
    if let Some(p) = existing.filter(|&p| is_open(p)) {
        // SAFETY: valid map value; copied out before anything else touches it.
        let inst = unsafe { Head::read(cfg, p) };
        if timed_out(cfg, &inst, now) {
            count(cfg.chain(), counter!(timed_out));
            close(cfg, slot, key, &inst, CLOSE_TIMEOUT, now);
        } else if cfg.has(FLAG_FIRST_HIT_ONLY) {
            raw_hit(cfg, slot, inst.id, key, st, capture, cause);
            return;
        } else {
            count(cfg.chain(), counter!(replaced));
            close(cfg, slot, key, &inst, CLOSE_REPLACED, now);
        }
    }
    let cpu = cpu();
    let id = next_instance_id();
    let snap = if cfg.has(FLAG_INTERFERENCE) { segment_start(cpu) } else { [0; SOURCES] };
    let opened = Opened { id, now, stamp: st, capture, cause, cpu, snap: &snap };
    if !store(cfg, place, &opened, existing) {
        count_exact(cfg.chain(), counter!(map_full));
        return;
    }
    count(cfg.chain(), counter!(opened));
    raw_hit(cfg, slot, id, key, st, capture, cause);
}

/// The cause a stage-0 hit opens its instance with: its point's, or (`FLAG2_CAUSE_BY_CAPTURE`)
/// the one userspace mapped the captured value to, 0 for a value it did not map.
#[inline(always)]
fn cause_of(cfg: Cfg, capture: u64) -> u32 {
    if !cfg.has(FLAG_CAUSES) {
        return 0;
    }
    if cfg.flags2() & FLAG2_CAUSE_BY_CAPTURE == 0 {
        return cfg.cause() as u32;
    }
    // SAFETY: read-only map value, copied out.
    unsafe { CAUSE_BY_VALUE.get(cause_key(cfg.chain(), capture)) }.copied().unwrap_or(0)
}

/// What stage 0 stores for a new instance.
struct Opened<'a> {
    id: u64,
    now: u64,
    /// `now` on stage 0's clock.
    stamp: u64,
    capture: u64,
    /// Index of the cause that opened it (0 unless `FLAG_CAUSES`).
    cause: u32,
    cpu: u32,
    snap: &'a [u64; SOURCES],
}

impl Opened<'_> {
    /// Write the instance at `p`, `next_stage` last (a reader on another CPU never sees an
    /// open entry with stale times). `full`: also the fields no reader looks at (a hash-map
    /// value is copied whole from the stack, and the verifier wants it initialised).
    ///
    /// # Safety
    /// `p` is valid for writes of an `Instance`.
    #[inline(always)]
    unsafe fn write(&self, cfg: Cfg, p: *mut Instance, full: bool) {
        // SAFETY: by the caller's contract.
        unsafe {
            (*p).next_stage = 0;
            (*p).id = self.id;
            (*p).start_ns = self.now;
            (*p).last_ns = self.now;
            if full || cfg.flags2() & FLAG2_STAMPS != 0 {
                (*p).start_stamp = self.stamp;
                (*p).last_stamp = self.stamp;
            }
            (*p).capture = self.capture;
            (*p).cpu = self.cpu;
            (*p).seg_cpu = self.cpu;
            (*p).cause = self.cause;
            if full || cfg.has(FLAG_INTERFERENCE) {
                copy_words(core::ptr::addr_of_mut!((*p).interference_snap) as *mut u64, self.snap);
            }
            if full {
                let align = core::ptr::addr_of_mut!((*p)._align) as *mut u64;
                let mut i = 0;
                while i < 3 {
                    core::ptr::write_volatile(align.add(i), 0);
                    i += 1;
                }
            }
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).next_stage), 1);
        }
    }
}

#[inline(always)]
fn advance(cfg: Cfg, slot: u32, place: &Place, key: u64) {
    let Some(p) = find(place) else {
        if cfg.has(FLAG_RAW) {
            raw_hit(cfg, slot, 0, key, stamp(cfg, now_ns()), 0, 0);
        }
        return;
    };
    let now = now_ns();
    let st = stamp(cfg, now);
    // SAFETY: valid map value.
    let inst = unsafe { Head::read(cfg, p) };
    raw_hit(cfg, slot, inst.id, key, st, 0, 0);
    if timed_out(cfg, &inst, now) {
        count(cfg.chain(), counter!(timed_out));
        close(cfg, slot, key, &inst, CLOSE_TIMEOUT, now);
        close_entry(p, now);
        return;
    }
    if inst.next_stage != cfg.stage() as u32 {
        count(cfg.chain(), counter!(out_of_order));
        return;
    }
    if cfg.has(FLAG_MATCH_CAPTURE) && inst.capture != cfg.match_value() {
        return;
    }
    let delta = st.wrapping_sub(inst.last_stamp);
    // A chain with causes has a row per cause and segment; the others a row per segment.
    let segment = cfg.stage() as u32 - 1;
    let row = if cfg.has(FLAG_CAUSES) { inst.cause * cfg.segments() as u32 + segment } else { segment };
    if row < TOTAL_ROW {
        hist_add(cfg, row, delta);
    }
    let (stage, cause) = (cfg.stage(), inst.cause as u8);
    if cfg.has(FLAG_INTERFERENCE) {
        // The interference arrays exist only on this path: other chains build no arrays.
        let cpu = cpu();
        let snap = segment_start(cpu);
        let mut charged = [UNKNOWN_INTERFERENCE; SOURCES];
        if cpu == inst.seg_cpu {
            // Copied whole first: indexing the map value with the loop counter leaves older
            // verifiers (6.1, 6.12) without a lower bound on the offset ("R9 min value is
            // outside of the allowed memory range"); a fixed-size copy has constant offsets.
            // SAFETY: valid map value.
            let old = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*p).interference_snap)) };
            let mut i = 0;
            while i < SOURCES {
                charged[i] = snap[i].wrapping_sub(old[i]);
                i += 1;
            }
        }
        emit_with(
            RECORD_SEGMENT,
            cfg,
            slot,
            stage,
            cause,
            inst.id,
            key,
            inst.last_stamp,
            st,
            inst.capture,
            Some(&charged),
        );
        if !cfg.has(FLAG_LAST_STAGE) {
            // SAFETY: `p` is still the instance (nothing removed it on this path).
            unsafe {
                (*p).seg_cpu = cpu;
                copy_words(core::ptr::addr_of_mut!((*p).interference_snap) as *mut u64, &snap);
            }
        }
    } else {
        emit_with(RECORD_SEGMENT, cfg, slot, stage, cause, inst.id, key, inst.last_stamp, st, inst.capture, None);
    }
    if cfg.has(FLAG_LAST_STAGE) {
        if cfg.stage() > 1 {
            hist_add(cfg, TOTAL_ROW, st.wrapping_sub(inst.start_stamp));
        }
        close_entry(p, now);
    } else {
        // SAFETY: `p` is still the instance (nothing removed it on this path).
        unsafe {
            (*p).last_ns = now;
            if cfg.flags2() & FLAG2_STAMPS != 0 {
                (*p).last_stamp = st;
            }
            (*p).next_stage = cfg.stage() as u32 + 1;
        }
    }
}

#[inline(always)]
fn abort(cfg: Cfg, slot: u32, place: &Place, key: u64) {
    abort_with(cfg, slot, place, key, CLOSE_ABORTED);
}

/// Close the instance open at `place`, if any, for `reason` (aborted, or replaced by a stage-0
/// hit that was not sampled).
#[inline(always)]
fn abort_with(cfg: Cfg, slot: u32, place: &Place, key: u64, reason: u8) {
    let Some(p) = find(place) else {
        if cfg.has(FLAG_RAW) {
            raw_hit(cfg, slot, 0, key, stamp(cfg, now_ns()), 0, 0);
        }
        return;
    };
    let now = now_ns();
    // SAFETY: valid map value.
    let inst = unsafe { Head::read(cfg, p) };
    raw_hit(cfg, slot, inst.id, key, stamp(cfg, now), 0, 0);
    if reason == CLOSE_ABORTED {
        count(cfg.chain(), counter!(aborted));
    } else {
        count(cfg.chain(), counter!(replaced));
    }
    close(cfg, slot, key, &inst, reason, now);
    close_entry(p, now);
}

/// A segment of an interference-charged chain starts on `cpu`: watch the current task for the
/// `SCHED` source and return the CPU's interference totals.
#[inline(always)]
fn segment_start(cpu: u32) -> [u64; SOURCES] {
    let _ = cpu;
    match INTERFERENCE.get_ptr_mut(0) {
        // SAFETY: valid per-CPU map value.
        Some(st) => unsafe {
            (*st).watched_pid = bpf_get_current_pid_tgid() & 0xffff_ffff;
            (*st).total_ns
        },
        None => [0; SOURCES],
    }
}

/// An interference slot was hit: begin or end timing its source on this CPU.
#[inline(always)]
fn interference<C: HitSource>(ctx: &C, cfg: Cfg) {
    let Some(st) = INTERFERENCE.get_ptr_mut(0) else { return };
    let now = now_ns();
    let k = cfg.stage() as usize;
    // SAFETY: valid per-CPU map value; `k < SOURCES` is checked before indexing.
    unsafe {
        match cfg.role() {
            ROLE_INTERFERENCE_BEGIN if k < SOURCES => (*st).begin_ns[k] = now,
            ROLE_INTERFERENCE_END if k < SOURCES => {
                let b = (*st).begin_ns[k];
                if b != 0 {
                    (*st).total_ns[k] += now.wrapping_sub(b);
                    (*st).begin_ns[k] = 0;
                }
            }
            ROLE_INTERFERENCE_SWITCH => {
                let watched = (*st).watched_pid;
                if watched == 0 {
                    return;
                }
                if value(ctx, cfg.key0()) == Some(watched) {
                    (*st).begin_ns[SCHED] = now;
                } else if value(ctx, cfg.key1()) == Some(watched) {
                    let b = (*st).begin_ns[SCHED];
                    if b != 0 {
                        (*st).total_ns[SCHED] += now.wrapping_sub(b);
                        (*st).begin_ns[SCHED] = 0;
                    }
                }
            }
            _ => {}
        }
    }
}
