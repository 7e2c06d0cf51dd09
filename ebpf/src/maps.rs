//! Every map and global of the object. Names are what userspace looks up
//! (`exporter/src/probe/maps.rs`); keep them in sync with `clockpath_common::slot`.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use clockpath_common::{
    hist::HistRow,
    interference::CpuInterference,
    limits::{DEFAULT_MAX_INSTANCES, DEFAULT_RING_BYTES, HIST_ROWS_PER_CHAIN, MAX_CHAINS, NUM_SLOTS},
    record::Staged,
    slot::{Active, ChainCounters, Instance, InstanceKey, MAX_CAUSE_VALUES, Updating},
};

/// Hits per slot (configured slots only), per CPU.
#[map]
pub static SLOT_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_SLOTS, 0);

/// Open chain instances. Size set by userspace (`max_instances`).
#[map]
pub static INSTANCES: HashMap<InstanceKey, Instance> = HashMap::with_max_entries(DEFAULT_MAX_INSTANCES, 0);

/// Instances of direct chains (see `FLAG_DIRECT`). Size set by userspace.
#[map]
pub static DIRECT: Array<Instance> = Array::with_max_entries(1, 0);

/// Segment histograms: row `chain * HIST_ROWS_PER_CHAIN + segment`, per CPU.
#[map]
pub static HIST: PerCpuArray<HistRow> = PerCpuArray::with_max_entries(MAX_CHAINS * HIST_ROWS_PER_CHAIN, 0);

/// Per-chain counters, per CPU.
#[map]
pub static CHAIN_COUNTERS: PerCpuArray<ChainCounters> = PerCpuArray::with_max_entries(MAX_CHAINS, 0);

/// Hash-entry pre-filter (`Active`): `[chain]` kernel-written, `[MAX_CHAINS + chain]` sweeper-written.
#[map]
pub static ACTIVE: Array<Active> = Array::with_max_entries(2 * MAX_CHAINS, 0);

/// Per-CPU interference timing (`clockpath_common::interference`).
#[map]
pub static INTERFERENCE: PerCpuArray<CpuInterference> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU countdown to the next sampled stage-0 hit, per chain (`SlotConfig::sample_every`).
#[map]
pub static SAMPLING: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_CHAINS, 0);

/// Cause index by captured value (`FLAG2_CAUSE_BY_CAPTURE`, key `cause_key`). Filled by
/// userspace before the programs attach, read-only afterwards.
#[map]
pub static CAUSE_BY_VALUE: HashMap<u64, u32> = HashMap::with_max_entries(MAX_CAUSE_VALUES, 0);

/// The instance each CPU's program is updating (`Updating`).
#[map]
pub static UPDATING: PerCpuArray<Updating> = PerCpuArray::with_max_entries(1, 0);

/// Records staged per CPU for their ring (`staging.rs`).
#[map]
pub static STAGED: PerCpuArray<Staged> = PerCpuArray::with_max_entries(1, 0);

/// Whether one-segment chains stage their records (set at load: the kernel can run the flush
/// program on a chosen CPU).
#[unsafe(no_mangle)]
#[unsafe(link_section = ".rodata")]
pub static STAGING: u32 = 0;

/// Per-CPU counters: `[0]` the sequence for instance ids, `[1]` records submitted (when to
/// look at the ring's fill level).
#[map]
pub static NEXT_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

// Segment, close and raw-hit records for userspace: `MAX_RINGS` rings, one per CPU (or per
// group of CPUs, `cpu & RING_MASK`). Sizes set by userspace (`probe.ring_bytes` shared among
// the rings the machine's CPUs use).
#[map]
pub static RING_0: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);
#[map]
pub static RING_1: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);
#[map]
pub static RING_2: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);
#[map]
pub static RING_3: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);
#[map]
pub static RING_4: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);
#[map]
pub static RING_5: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);
#[map]
pub static RING_6: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);
#[map]
pub static RING_7: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// A record goes to ring `cpu & RING_MASK` (set at load, read-only: the verifier knows which
/// rings can be chosen and drops the code for the others).
#[unsafe(no_mangle)]
#[unsafe(link_section = ".rodata")]
pub static RING_MASK: u32 = 0;

/// Bytes pending in a ring above which a record wakes the reader (set at load).
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: Global<u64> = Global::new((DEFAULT_RING_BYTES / 4) as u64);
