//! Slot configuration and chain-instance state.
//!
//! Every slot program in the BPF object has its slot index compiled in. Userspace writes every
//! slot's role into the read-only global `SLOT_CONFIGS[slot]` before the object is loaded
//! (`exporter/probe/src/plan/slots.rs`); the kernel freezes it, so the verifier sees each
//! slot's role as constants and removes the branches that slot never takes
//! (`ebpf/src/config.rs`, `ebpf/src/stage.rs`).

/// The slot is not configured; its program returns at once.
pub const ROLE_NONE: u8 = 0;
/// The slot is a stage of a chain.
pub const ROLE_STAGE: u8 = 1;
/// The slot closes an open instance of its chain without completing it (e.g. hrtimer_cancel).
pub const ROLE_ABORT: u8 = 2;

/// Stage 0 only: keep an instance that is already open on the key (first hit wins);
/// without it, a new hit replaces the open instance (last hit wins).
pub const FLAG_FIRST_HIT_ONLY: u8 = 1 << 0;
/// This stage is the chain's last: recording it completes the instance.
pub const FLAG_LAST_STAGE: u8 = 1 << 1;
/// Raw mode: stream every hit of this slot as a `RECORD_HIT`, whatever the instance state.
pub const FLAG_RAW: u8 = 1 << 2;
/// Later stages only: the hit counts only when the instance's captured value equals
/// `SlotConfig::match_value` (e.g. the clocksource read function the switch installs).
pub const FLAG_MATCH_CAPTURE: u8 = 1 << 3;
/// The chain keeps its instances in the `DIRECT` array at
/// `direct_base + k0 * direct_range1 + k1` instead of the `INSTANCES` hash map: its key
/// components are small bounded integers (CPU, pid, softirq vector), and an array slot costs
/// a few instructions where a hash lookup costs a call and a hash.
pub const FLAG_DIRECT: u8 = 1 << 4;

/// Where a key component (or a captured value) comes from.
pub const SRC_NONE: u8 = 0;
/// `bpf_get_smp_processor_id()`.
pub const SRC_CPU: u8 = 1;
/// Thread id (lower half of `bpf_get_current_pid_tgid()`).
pub const SRC_TID: u8 = 2;
/// Process id (upper half of `bpf_get_current_pid_tgid()`).
pub const SRC_TGID: u8 = 3;
/// A constant 0: one instance per chain at a time.
pub const SRC_GLOBAL: u8 = 4;
/// A field of a tracepoint record at `offset`, `size` bytes (from the tracepoint's `format`).
pub const SRC_FIELD: u8 = 5;
/// Probe argument `arg` (raw_tp, tp_btf, kprobe, fentry, fexit).
pub const SRC_ARG: u8 = 6;
/// The probed function's return value (kretprobe, fexit).
pub const SRC_RET: u8 = 7;

/// Stage slots of chains that charge interference to their segments.
pub const FLAG_INTERFERENCE: u8 = 1 << 5;
/// Stage slots of chains whose stage-0 points name a cause (`SlotConfig::cause`): an
/// instance remembers the cause that opened it, and its segments go to that cause's
/// histogram rows (`cause * segments + segment`).
pub const FLAG_CAUSES: u8 = 1 << 6;
/// Every record of an instance goes to the ring of the CPU that opened it (its id says which),
/// not of the CPU that writes it, so userspace reads them in the order they were written:
/// chains of more than one segment, and raw mode. A one-segment chain's only record (its
/// segment) goes to the writing CPU's ring.
pub const FLAG_ORDERED: u8 = 1 << 7;

/// `ValueSpec::flags`: treat the argument as a pointer and read `size` bytes at `offset`
/// from it (the offset is resolved from the running kernel's BTF).
pub const VALUE_DEREF: u8 = 1 << 0;
/// With `VALUE_DEREF`: the argument is a pointer typed by the kernel's BTF in this program's
/// context (tp_btf, fentry, fexit, no cast), so the member is read with a plain load the
/// verifier makes fault-safe instead of a bpf_probe_read_kernel call.
pub const VALUE_BTF: u8 = 1 << 1;

/// How to compute one 64-bit value from a hit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValueSpec {
    /// One of the `SRC_*` constants.
    pub source: u8,
    /// Bytes to read for `SRC_FIELD` or a dereference: 1, 2, 4 or 8.
    pub size: u8,
    /// Argument index for `SRC_ARG`; for fexit's `SRC_RET`, the function's argument count.
    pub arg: u8,
    /// `VALUE_*` flags.
    pub flags: u8,
    /// Field offset (`SRC_FIELD`) or dereference offset (`VALUE_DEREF`).
    pub offset: u32,
}

/// The slot times an interference source: `stage` holds the source (`crate::interference`);
/// the slot begins it.
pub const ROLE_INTERFERENCE_BEGIN: u8 = 3;
/// The slot ends the interference source in `stage`.
pub const ROLE_INTERFERENCE_END: u8 = 4;
/// sched_switch for the `SCHED` interference source: `key0` is the previous task's pid,
/// `key1` the next one's.
pub const ROLE_INTERFERENCE_SWITCH: u8 = 5;

/// One condition of a slot's filter: the hit counts only when `(value & mask) == operand`
/// (with the slot's `COND_NE` bit for this condition: `!=`). Unused when `value` is `SRC_NONE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Condition {
    pub value: ValueSpec,
    pub mask: u64,
    pub operand: u64,
}

impl Condition {
    pub const NONE: Condition = Condition { value: ValueSpec::NONE, mask: u64::MAX, operand: 0 };
}

/// Conditions of a filter, all of which must hold (`a == 1 && b != 0`).
pub const MAX_CONDITIONS: usize = 2;
/// `SlotConfig::cond_ne` bit of condition `i`: it passes when the values differ.
pub const fn cond_ne(i: usize) -> u8 {
    1 << i
}

/// `SlotConfig::flags2`: stage 0 of a one-segment, last-hit-wins chain in the `DIRECT` array
/// (no raw mode, sampling, capture or interference) opens an instance by writing its entry
/// without reading it first. The instance it replaces never recorded a segment (its one
/// segment closes it), so there is nothing to report; only the `replaced` and `timed_out`
/// counts of such replacements are not kept. A write does not wait for the entry's cache line
/// (the store buffer takes it), a read does: the line was last written on the CPU that switched
/// the task in.
pub const FLAG2_BLIND_OPEN: u8 = 1 << 0;
/// `SlotConfig::flags2` of a stage-0 slot of a chain whose causes come from the value it
/// captures (`causes_from`, e.g. a VM exit's reason): the cause is `CAUSE_BY_VALUE`'s entry
/// for [`cause_key`]`(chain, captured)`, 0 (the chain's first cause, `other`) when it has none.
pub const FLAG2_CAUSE_BY_CAPTURE: u8 = 1 << 1;
/// `SlotConfig::flags2` of every slot of a chain with a stage whose clock is not
/// CLOCK_MONOTONIC: stages keep their own timestamps (`Instance::start_stamp`, `last_stamp`, on
/// each stage's `SlotConfig::clock`) beside the monotonic bookkeeping (timeouts, the sweeper),
/// and segments, hits and the total are measured between those.
pub const FLAG2_STAMPS: u8 = 1 << 2;

/// `SlotConfig::clock`: the clock a stage stamps its hits with (the BPF helper it calls).
/// `bpf_ktime_get_ns`.
pub const CLOCK_MONOTONIC: u8 = 0;
/// `bpf_ktime_get_boot_ns` (5.8): CLOCK_BOOTTIME, monotonic plus the time spent suspended.
pub const CLOCK_BOOTTIME: u8 = 1;
/// `bpf_ktime_get_tai_ns` (6.1): CLOCK_TAI, the UNIX epoch plus the TAI offset.
pub const CLOCK_TAI: u8 = 2;
/// The names of the clocks, by `SlotConfig::clock` (`clock =` in a stage's configuration).
pub const CLOCK_NAMES: [&str; 3] = ["monotonic", "boottime", "tai"];

/// Entries of the `CAUSE_BY_VALUE` map, over all chains.
pub const MAX_CAUSE_VALUES: u32 = 256;

/// Key of the `CAUSE_BY_VALUE` map: the chain in the top byte, the captured value's low 56
/// bits below (exit reasons are 32-bit).
#[inline(always)]
pub const fn cause_key(chain: u8, value: u64) -> u64 {
    ((chain as u64) << 56) | (value & 0x00ff_ffff_ffff_ffff)
}

/// `SlotConfig::also` of a slot whose program plays no other slot's role.
pub const NO_SLOT: u8 = u8::MAX;

/// A slot's role. 120 bytes, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotConfig {
    /// `ROLE_*`.
    pub role: u8,
    /// Chain index, `< MAX_CHAINS`.
    pub chain: u8,
    /// Stage index within the chain, `< MAX_STAGES`.
    pub stage: u8,
    /// `FLAG_*`.
    pub flags: u8,
    /// With `FLAG_DIRECT`: first `DIRECT` entry of the chain.
    pub direct_base: u32,
    /// First key component.
    pub key0: ValueSpec,
    /// Second key component (`SRC_NONE` when the key has one component). Combined with the
    /// first by [`combine_key`].
    pub key1: ValueSpec,
    /// Stage 0: value stored in the instance for `FLAG_MATCH_CAPTURE` stages.
    pub capture: ValueSpec,
    /// Instances older than this when hit again are closed as timed out.
    pub timeout_ns: u64,
    /// Value the instance's capture must equal (with `FLAG_MATCH_CAPTURE`).
    pub match_value: u64,
    /// With `FLAG_DIRECT`: the first key component is below this.
    pub direct_range0: u32,
    /// With `FLAG_DIRECT`: the second key component is below this (1 without one).
    pub direct_range1: u32,
    /// A hit counts only when every condition holds.
    pub conditions: [Condition; MAX_CONDITIONS],
    /// Stage 0 of a sampled chain: only every `sample_every`-th hit per CPU opens an instance
    /// (0 and 1: every hit).
    pub sample_every: u32,
    /// 1: no other slot writes this slot's histogram rows (its stage has one probe point), so
    /// plain adds keep them exact: the kernel never runs a program nested in itself on a CPU.
    /// 0: `lock xadd`, as two points of one stage can nest (one in the other's interrupt).
    pub sole_writer: u8,
    /// `cond_ne(i)` bits: condition `i` passes when the values differ.
    pub cond_ne: u8,
    /// With `FLAG_CAUSES`: on a stage-0 slot, the index of the cause its hits open instances
    /// with; on every stage slot, the chain's segment count (histogram rows per cause).
    pub cause: u8,
    pub segments: u8,
    /// Another slot whose role this slot's program also plays, after its own (`NO_SLOT`: none):
    /// two points of one chain on the same target (the runqueue chain's switched-out and
    /// switched-in tasks, both on sched_switch) then cost one program and one dispatch per hit.
    /// Only tracepoint, tp_btf and raw tracepoint programs carry the second role's code.
    pub also: u8,
    /// `FLAG2_*`.
    pub flags2: u8,
    /// `CLOCK_*`: the clock this stage stamps with (with `FLAG2_STAMPS`).
    pub clock: u8,
    pub _pad: [u8; 5],
}

impl Default for SlotConfig {
    /// [`SlotConfig::NONE`]: no role, no second role (a zeroed `also` would name slot 0).
    fn default() -> Self {
        SlotConfig::NONE
    }
}

impl SlotConfig {
    /// An unconfigured slot (`ROLE_NONE`): its program returns at once.
    pub const NONE: SlotConfig = SlotConfig {
        role: ROLE_NONE,
        chain: 0,
        stage: 0,
        flags: 0,
        direct_base: 0,
        key0: ValueSpec::NONE,
        key1: ValueSpec::NONE,
        capture: ValueSpec::NONE,
        timeout_ns: 0,
        match_value: 0,
        direct_range0: 0,
        direct_range1: 0,
        conditions: [Condition::NONE; MAX_CONDITIONS],
        sample_every: 0,
        sole_writer: 0,
        cond_ne: 0,
        cause: 0,
        segments: 0,
        also: NO_SLOT,
        flags2: 0,
        clock: CLOCK_MONOTONIC,
        _pad: [0; 5],
    };
}

impl ValueSpec {
    /// No value (`SRC_NONE`).
    pub const NONE: ValueSpec = ValueSpec { source: SRC_NONE, size: 0, arg: 0, flags: 0, offset: 0 };
}

/// Combine two key components into one instance key. Exact (no collision) while both fit in
/// 32 bits, e.g. (cpu, softirq vector).
#[inline(always)]
pub const fn combine_key(k0: u64, k1: u64) -> u64 {
    k0 ^ k1.rotate_left(32)
}

/// Key of the instance map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InstanceKey {
    pub chain: u32,
    pub _pad: u32,
    pub key: u64,
}

/// One chain instance. Written only by `ebpf/src/stage.rs`; the userspace sweeper reads
/// hash-map instances to close those whose chain timed out without another hit on their key,
/// and deletes entries closed for a while. `next_stage == 0` marks a closed (free) entry: the
/// kernel reuses it in place for the next open on its key, in the hash map as in `DIRECT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Instance {
    /// Unique per boot: `(cpu << 48) | per-CPU sequence`.
    pub id: u64,
    /// Time of stage 0 (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// Time of the last recorded stage.
    pub last_ns: u64,
    /// Value captured at stage 0 (see `SlotConfig::capture`).
    pub capture: u64,
    /// Index of the next stage to record.
    pub next_stage: u32,
    /// CPU that opened the instance.
    pub cpu: u32,
    /// Interference-charged chains: the CPU the open segment started on, and that CPU's
    /// interference totals then.
    pub seg_cpu: u32,
    /// With `FLAG_CAUSES`: the cause of the stage-0 point that opened it.
    pub cause: u32,
    pub interference_snap: [u64; crate::interference::SOURCES],
    /// With `FLAG2_STAMPS`: stage 0's and the last recorded stage's time on their own stages'
    /// clocks (`SlotConfig::clock`); segments are measured between these.
    pub start_stamp: u64,
    pub last_stamp: u64,
    /// To 128 bytes: `DIRECT` entries of neighbouring keys (CPU 0 and CPU 1 of a per-CPU
    /// chain) would otherwise share a cache line that both CPUs write on every hit.
    pub _align: [u64; 3],
}

/// Per-chain counters, one copy per CPU (`CHAIN_COUNTERS[chain]`). Completed instances and
/// recorded segments are not counted here: the histograms count them exactly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainCounters {
    /// Instances opened by stage 0.
    pub opened: u64,
    /// Instances closed because they were older than the chain's timeout when hit again.
    pub timed_out: u64,
    /// Instances replaced by a new stage-0 hit on the same key (without first-hit-only).
    pub replaced: u64,
    /// Instances closed by an abort slot.
    pub aborted: u64,
    /// Ring records (segments, closes, raw hits) that did not fit in the ring buffer.
    pub ring_lost: u64,
    /// Segment records among `ring_lost`.
    pub ring_lost_segments: u64,
    /// Stage-0 hits that found the instance map full.
    pub map_full: u64,
    /// Later-stage hits on an open instance that were not its next stage (duplicates, skips).
    pub out_of_order: u64,
    /// Direct chains: hits whose key fell outside the chain's key space (ignored).
    pub key_out_of_range: u64,
    /// Sampled chains: stage-0 hits that were not sampled (opened no instance).
    pub sampled_out: u64,
    /// Hits that interrupted a clockpath program updating the same instance on the same CPU
    /// (a hardirq raising a softirq inside the probe on that softirq's exit): not applied, and
    /// not streamed in raw mode (see [`Updating`]).
    pub nested: u64,
}

/// The instance a CPU's clockpath program is updating (`UPDATING`, one per CPU). A hit that
/// runs inside that program (an interrupt) on the same chain and key would read the instance
/// before the interrupted update lands and write after it: applied out of order, its effect
/// overwritten. It is dropped and counted instead, so the kernel's instances are exactly what
/// applying the streamed hits in time order gives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Updating {
    /// Nonzero while a program on this CPU updates `(chain, key)`.
    pub busy: u32,
    pub chain: u32,
    pub key: u64,
}

/// How many hash-map entries a chain has (open instances and closed ones kept for reuse), as a
/// cheap pre-filter: a later stage of a chain with no entry returns before computing its key. One global (not per-CPU) entry per
/// chain, updated atomically by the kernel (`ACTIVE[chain]`); the userspace sweeper counts
/// what it removes in `ACTIVE[MAX_CHAINS + chain].inserted`, so the kernel never needs to.
///
/// `inserted` is incremented before an insert becomes visible (`removed` undoes an insert that
/// lost a race with another CPU's), and the sweeper counts only deletes that succeeded, so
/// `inserted - removed - swept` is never below the true count: the filter can only let a hit
/// through needlessly, never drop one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Active {
    pub inserted: u64,
    pub removed: u64,
    /// To a cache line of its own: every CPU adds to a busy chain's entry, and a neighbouring
    /// chain's fast path should not pay for it.
    pub _align: [u64; 6],
}

const _: () = assert!(core::mem::size_of::<SlotConfig>() == 120);
const _: () = assert!(core::mem::size_of::<Instance>() == 128);
const _: () = assert!(core::mem::size_of::<Active>() == 64);
