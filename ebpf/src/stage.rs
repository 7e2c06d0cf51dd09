//! The stage logic every slot program runs: open, advance, abort and time out chain instances,
//! record segment deltas into the per-CPU histograms and the ring buffer.
//!
//! Semantics (mirrored by `exporter/src/chain/assembler.rs` and tested against it):
//! - stage 0 opens an instance on its key; an instance already open on the key is kept when the
//!   slot is first-hit-only, replaced otherwise (a timed-out one is always replaced);
//! - a later stage `k` advances an open instance only when `k` is its next stage (and, with
//!   match-capture, when the value captured at stage 0 matches); the segment `k-1 → k` is
//!   recorded once; the last stage also records `total` and closes the instance;
//! - a hit on an instance older than the chain's timeout closes it as timed out.
//! - A later stage with no open instance on its key returns after one map lookup.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel},
};
use clockpath_common::{
    hist::{NUM_BUCKETS, bucket_of},
    interference::{SCHED, SOURCES},
    limits::{HIST_ROWS_PER_CHAIN, MAX_CHAINS, TOTAL_ROW},
    record::UNKNOWN_INTERFERENCE,
    record::{CLOSE_ABORTED, CLOSE_REPLACED, CLOSE_TIMEOUT, RECORD_CLOSE, RECORD_HIT, RECORD_SEGMENT, Record},
    slot::*,
};

use crate::maps::{
    ACTIVE, CHAIN_COUNTERS, DIRECT, HIST, INSTANCES, INTERFERENCE, NEXT_SEQ, RING, SLOT_CONFIG, SLOT_HITS, WAKEUP_BYTES,
};

/// What a slot program can read from its context, per attach kind.
pub trait HitSource {
    /// `size` bytes at `offset` in a tracepoint record.
    fn field(&self, offset: u32, size: u8) -> Option<u64>;
    /// Argument `n` of the probed function or tracepoint.
    fn arg(&self, n: u8) -> Option<u64>;
    /// Return value; `nargs` is the function's argument count (fexit keeps it after the args).
    fn ret(&self, nargs: u8) -> Option<u64>;
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
fn value<C: HitSource>(ctx: &C, spec: &ValueSpec) -> Option<u64> {
    let v = match spec.source {
        SRC_CPU => return Some(cpu() as u64),
        SRC_TID => return Some(bpf_get_current_pid_tgid() & 0xffff_ffff),
        SRC_TGID => return Some(bpf_get_current_pid_tgid() >> 32),
        SRC_GLOBAL => return Some(0),
        SRC_FIELD => return ctx.field(spec.offset, spec.size),
        SRC_ARG => ctx.arg(spec.arg)?,
        SRC_RET => ctx.ret(spec.arg)?,
        _ => return None,
    };
    if spec.flags & VALUE_DEREF != 0 { read_sized(v.wrapping_add(spec.offset as u64), spec.size) } else { Some(v) }
}

#[inline(always)]
fn cpu() -> u32 {
    // SAFETY: helper with no preconditions (inlined by the JIT on recent kernels).
    unsafe { bpf_get_smp_processor_id() }
}

#[inline(always)]
fn add(p: *mut u64, v: u64) {
    // Per-CPU memory, but another program can nest on this CPU (an IRQ during a tracepoint
    // program), so a plain `+=` could lose an update; `lock xadd` keeps the counts exact.
    // SAFETY: `p` points into a map value returned by a successful lookup.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(p, v);
    }
}

#[inline(always)]
fn count(chain: u8, field: fn(*mut ChainCounters) -> *mut u64) {
    if let Some(c) = CHAIN_COUNTERS.get_ptr_mut(chain as u32) {
        add(field(c), 1);
    }
}

macro_rules! counter {
    ($field:ident) => {
        // SAFETY: projection of a valid map-value pointer; no reference is created.
        |c: *mut ChainCounters| unsafe { core::ptr::addr_of_mut!((*c).$field) }
    };
}

#[inline(always)]
fn wake_flags() -> u64 {
    // Records are submitted without waking the reader (a wakeup is a context switch, which a
    // sched_switch chain would then record, and so on); the reader drains on a timer. Only
    // when the ring fills up past the threshold is it woken early.
    if RING.query(BPF_RB_AVAIL_DATA as u64) > WAKEUP_BYTES.load() {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "a record is written from many parts")]
fn emit(kind: u8, cfg: &SlotConfig, slot: u32, stage: u8, id: u64, key: u64, start: u64, end: u64, aux: u64) {
    emit_with(kind, cfg, slot, stage, id, key, start, end, aux, &[0; SOURCES]);
}

#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "a record is written from many parts")]
fn emit_with(
    kind: u8,
    cfg: &SlotConfig,
    slot: u32,
    stage: u8,
    id: u64,
    key: u64,
    start: u64,
    end: u64,
    aux: u64,
    interference: &[u64; SOURCES],
) {
    match RING.reserve::<Record>(0) {
        Some(mut entry) => {
            entry.write(Record {
                kind,
                chain: cfg.chain,
                stage,
                slot: slot as u8,
                cpu: cpu(),
                instance_id: id,
                key,
                start_ns: start,
                end_ns: end,
                aux,
                interference_ns: *interference,
            });
            entry.submit(wake_flags());
        }
        None => {
            count(cfg.chain, counter!(ring_lost));
            if kind == RECORD_SEGMENT {
                count(cfg.chain, counter!(ring_lost_segments));
            }
        }
    }
}

#[inline(always)]
fn hist_add(chain: u8, row: u32, delta: u64) {
    let idx = bucket_of(delta) as usize;
    if idx >= NUM_BUCKETS {
        return;
    }
    if let Some(r) = HIST.get_ptr_mut(chain as u32 * HIST_ROWS_PER_CHAIN + row) {
        // SAFETY: `r` is a valid HistRow and `idx < NUM_BUCKETS`.
        unsafe {
            add(core::ptr::addr_of_mut!((*r).buckets[idx]), 1);
            add(core::ptr::addr_of_mut!((*r).sum_ns), delta);
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
fn direct_index(cfg: &SlotConfig, k0: u64, k1: u64) -> Option<u32> {
    if k0 >= cfg.direct_range0 as u64 || k1 >= cfg.direct_range1 as u64 {
        return None;
    }
    Some(cfg.direct_base + k0 as u32 * cfg.direct_range1 + k1 as u32)
}

/// The open instance at `place`, if any.
#[inline(always)]
fn find(place: &Place) -> Option<*mut Instance> {
    match place {
        Place::Hash(k) => INSTANCES.get_ptr_mut(k),
        Place::Direct(i) => {
            let p = DIRECT.get_ptr_mut(*i)?;
            // SAFETY: valid map value.
            if unsafe { (*p).next_stage } == 0 { None } else { Some(p) }
        }
    }
}

/// Close the instance at `place`.
#[inline(always)]
fn remove(cfg: &SlotConfig, place: &Place) {
    match place {
        // Counted only when this call removed it, so the pre-filter never under-counts.
        Place::Hash(k) => {
            if INSTANCES.remove(k).is_ok() {
                active_add(cfg.chain, false);
            }
        }
        Place::Direct(i) => {
            if let Some(p) = DIRECT.get_ptr_mut(*i) {
                // SAFETY: valid map value.
                unsafe { (*p).next_stage = 0 };
            }
        }
    }
}

/// Store a new instance at `place`; `existed` tells whether one was open there.
#[inline(always)]
fn store(cfg: &SlotConfig, place: &Place, inst: &Instance, existed: bool) -> bool {
    match place {
        Place::Hash(k) => {
            if existed {
                return INSTANCES.insert(k, inst, BPF_ANY as u64).is_ok();
            }
            // A new key is counted in ACTIVE before it becomes visible; NOEXIST makes sure a
            // key another CPU inserted meanwhile is not counted twice.
            active_add(cfg.chain, true);
            if INSTANCES.insert(k, inst, BPF_NOEXIST as u64).is_ok() {
                return true;
            }
            active_add(cfg.chain, false);
            INSTANCES.insert(k, inst, BPF_ANY as u64).is_ok()
        }
        Place::Direct(i) => match DIRECT.get_ptr_mut(*i) {
            Some(p) => {
                // SAFETY: valid map value. `next_stage` goes last so a reader on another CPU
                // never sees an open entry with stale times.
                unsafe {
                    (*p).next_stage = 0;
                    (*p).id = inst.id;
                    (*p).start_ns = inst.start_ns;
                    (*p).last_ns = inst.last_ns;
                    (*p).capture = inst.capture;
                    (*p).cpu = inst.cpu;
                    (*p).seg_cpu = inst.seg_cpu;
                    (*p).interference_snap = inst.interference_snap;
                    core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).next_stage), inst.next_stage);
                }
                true
            }
            None => false,
        },
    }
}

/// Entry point of every slot program.
#[inline(always)]
pub fn on_hit<C: HitSource>(ctx: &C, slot: u32) -> u32 {
    let Some(cfg) = SLOT_CONFIG.get(slot) else {
        return 0;
    };
    if cfg.role == ROLE_NONE {
        return 0;
    }
    if let Some(h) = SLOT_HITS.get_ptr_mut(slot) {
        // Plain per-CPU increment: a hit lost to a nested program is acceptable here, the
        // cost of `lock xadd` on every hit is not.
        // SAFETY: valid per-CPU map value.
        unsafe { *h += 1 };
    }
    if cfg.filter.source != SRC_NONE && value(ctx, &cfg.filter) != Some(cfg.filter_value) {
        return 0;
    }
    if cfg.role >= ROLE_INTERFERENCE_BEGIN {
        interference(ctx, cfg);
        return 0;
    }
    let opens = cfg.role == ROLE_STAGE && cfg.stage == 0;
    let direct = cfg.flags & FLAG_DIRECT != 0;
    // Fast path for hash chains: a later stage (or abort) of a chain with no open instance at
    // all stops here, before computing its key. (A direct chain's lookup is cheaper than this
    // check.) Raw mode streams every hit, so it always goes on.
    if !opens && !direct && cfg.flags & FLAG_RAW == 0 && !maybe_open(cfg.chain) {
        return 0;
    }
    let Some(k0) = value(ctx, &cfg.key0) else {
        return 0;
    };
    let (k1, key) = if cfg.key1.source == SRC_NONE {
        (0, k0)
    } else {
        match value(ctx, &cfg.key1) {
            Some(k1) => (k1, combine_key(k0, k1)),
            None => return 0,
        }
    };
    let place = if direct {
        match direct_index(cfg, k0, k1) {
            Some(i) => Place::Direct(i),
            None => {
                count(cfg.chain, counter!(key_out_of_range));
                return 0;
            }
        }
    } else {
        Place::Hash(InstanceKey { chain: cfg.chain as u32, _pad: 0, key })
    };
    if cfg.role == ROLE_ABORT {
        abort(cfg, slot, &place, key);
    } else if opens {
        open(ctx, cfg, slot, &place, key);
    } else {
        advance(cfg, slot, &place, key);
    }
    0
}

#[inline(always)]
fn timed_out(cfg: &SlotConfig, inst: &Instance, now: u64) -> bool {
    cfg.timeout_ns != 0 && now.wrapping_sub(inst.start_ns) > cfg.timeout_ns
}

#[inline(always)]
fn close(cfg: &SlotConfig, slot: u32, key: u64, inst: &Instance, reason: u8, now: u64) {
    emit(RECORD_CLOSE, cfg, slot, reason, inst.id, key, inst.start_ns, now, inst.capture);
}

#[inline(always)]
fn raw_hit(cfg: &SlotConfig, slot: u32, id: u64, key: u64, now: u64, capture: u64) {
    if cfg.flags & FLAG_RAW != 0 {
        emit(RECORD_HIT, cfg, slot, cfg.stage, id, key, now, now, capture);
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: helper with no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn open<C: HitSource>(ctx: &C, cfg: &SlotConfig, slot: u32, place: &Place, key: u64) {
    let now = now_ns();
    let capture = if cfg.capture.source == SRC_NONE { 0 } else { value(ctx, &cfg.capture).unwrap_or(0) };
    let mut existed = false;
    if let Some(p) = find(place) {
        // SAFETY: valid map value; copied out before anything else touches it.
        let inst = unsafe { *p };
        existed = true;
        if timed_out(cfg, &inst, now) {
            count(cfg.chain, counter!(timed_out));
            close(cfg, slot, key, &inst, CLOSE_TIMEOUT, now);
        } else if cfg.flags & FLAG_FIRST_HIT_ONLY != 0 {
            raw_hit(cfg, slot, inst.id, key, now, capture);
            return;
        } else {
            count(cfg.chain, counter!(replaced));
            close(cfg, slot, key, &inst, CLOSE_REPLACED, now);
        }
    }
    let cpu = cpu();
    let mut inst = Instance {
        id: next_instance_id(),
        start_ns: now,
        last_ns: now,
        capture,
        next_stage: 1,
        cpu,
        seg_cpu: cpu,
        _pad: 0,
        interference_snap: [0; SOURCES],
    };
    if cfg.flags & FLAG_INTERFERENCE != 0 {
        inst.interference_snap = segment_start(cpu);
    }
    if !store(cfg, place, &inst, existed) {
        count(cfg.chain, counter!(map_full));
        return;
    }
    count(cfg.chain, counter!(opened));
    raw_hit(cfg, slot, inst.id, key, now, capture);
}

#[inline(always)]
fn advance(cfg: &SlotConfig, slot: u32, place: &Place, key: u64) {
    let Some(p) = find(place) else {
        if cfg.flags & FLAG_RAW != 0 {
            raw_hit(cfg, slot, 0, key, now_ns(), 0);
        }
        return;
    };
    let now = now_ns();
    // SAFETY: valid map value.
    let inst = unsafe { *p };
    raw_hit(cfg, slot, inst.id, key, now, 0);
    if timed_out(cfg, &inst, now) {
        count(cfg.chain, counter!(timed_out));
        close(cfg, slot, key, &inst, CLOSE_TIMEOUT, now);
        remove(cfg, place);
        return;
    }
    if inst.next_stage != cfg.stage as u32 {
        count(cfg.chain, counter!(out_of_order));
        return;
    }
    if cfg.flags & FLAG_MATCH_CAPTURE != 0 && inst.capture != cfg.match_value {
        return;
    }
    let delta = now.wrapping_sub(inst.last_ns);
    hist_add(cfg.chain, cfg.stage as u32 - 1, delta);
    let mut charged = [0u64; SOURCES];
    let mut snap = [0u64; SOURCES];
    let cpu = cpu();
    if cfg.flags & FLAG_INTERFERENCE != 0 {
        snap = segment_start(cpu);
        if cpu == inst.seg_cpu {
            let mut i = 0;
            while i < SOURCES {
                charged[i] = snap[i].wrapping_sub(inst.interference_snap[i]);
                i += 1;
            }
        } else {
            charged = [UNKNOWN_INTERFERENCE; SOURCES];
        }
    }
    emit_with(RECORD_SEGMENT, cfg, slot, cfg.stage, inst.id, key, inst.last_ns, now, inst.capture, &charged);
    if cfg.flags & FLAG_LAST_STAGE != 0 {
        if cfg.stage > 1 {
            hist_add(cfg.chain, TOTAL_ROW, now.wrapping_sub(inst.start_ns));
        }
        remove(cfg, place);
    } else {
        // SAFETY: `p` is still the instance (nothing removed it on this path).
        unsafe {
            (*p).last_ns = now;
            (*p).next_stage = cfg.stage as u32 + 1;
            if cfg.flags & FLAG_INTERFERENCE != 0 {
                (*p).seg_cpu = cpu;
                (*p).interference_snap = snap;
            }
        }
    }
}

#[inline(always)]
fn abort(cfg: &SlotConfig, slot: u32, place: &Place, key: u64) {
    let Some(p) = find(place) else {
        if cfg.flags & FLAG_RAW != 0 {
            raw_hit(cfg, slot, 0, key, now_ns(), 0);
        }
        return;
    };
    let now = now_ns();
    // SAFETY: valid map value.
    let inst = unsafe { *p };
    raw_hit(cfg, slot, inst.id, key, now, 0);
    count(cfg.chain, counter!(aborted));
    close(cfg, slot, key, &inst, CLOSE_ABORTED, now);
    remove(cfg, place);
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
fn interference<C: HitSource>(ctx: &C, cfg: &SlotConfig) {
    let Some(st) = INTERFERENCE.get_ptr_mut(0) else { return };
    let now = now_ns();
    let k = cfg.stage as usize;
    // SAFETY: valid per-CPU map value; `k < SOURCES` is checked before indexing.
    unsafe {
        match cfg.role {
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
                if value(ctx, &cfg.key0) == Some(watched) {
                    (*st).begin_ns[SCHED] = now;
                } else if value(ctx, &cfg.key1) == Some(watched) {
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
