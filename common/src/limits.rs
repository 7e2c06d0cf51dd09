//! Fixed sizes of the BPF object: how many chains, stages and slots of each attach kind.
//!
//! Slots are compiled into the object (one program per slot, its index baked in), so these are
//! upper bounds the config validator checks against.

/// Chains that can run at once.
pub const MAX_CHAINS: u32 = 16;
/// Stages in one chain (so `MAX_STAGES - 1` segments).
pub const MAX_STAGES: u32 = 8;
/// Histogram rows per chain: one per segment plus one for `total` (first → last stage).
pub const HIST_ROWS_PER_CHAIN: u32 = MAX_STAGES;
/// Row index of the `total` histogram within a chain.
pub const TOTAL_ROW: u32 = MAX_STAGES - 1;

/// An attach kind and how many slot programs the object has for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRange {
    /// Index of the first slot of this kind in the global slot index space.
    pub base: u32,
    /// Number of slots of this kind.
    pub count: u32,
}

pub const TRACEPOINT_SLOTS: SlotRange = SlotRange { base: 0, count: 24 };
/// Tracepoint slots come in families by how many 8-byte words after the common header they
/// copy with direct context loads (`ebpf/src/tracepoint.rs`): key fields inside the window
/// need no helper call. The kernel refuses to attach a program whose loads reach past the
/// tracepoint's record, so a family fits records of at least `8 + 8 * words` bytes.
/// (words, slots): slots are consecutive from `TRACEPOINT_SLOTS.base`.
pub const TRACEPOINT_WINDOWS: [(u32, SlotRange); 4] = [
    (0, SlotRange { base: 0, count: 6 }),
    (1, SlotRange { base: 6, count: 6 }),
    (3, SlotRange { base: 12, count: 6 }),
    (7, SlotRange { base: 18, count: 6 }),
];
pub const RAW_TRACEPOINT_SLOTS: SlotRange = SlotRange { base: 24, count: 12 };
pub const TP_BTF_SLOTS: SlotRange = SlotRange { base: 36, count: 24 };
pub const KPROBE_SLOTS: SlotRange = SlotRange { base: 60, count: 16 };
pub const KRETPROBE_SLOTS: SlotRange = SlotRange { base: 76, count: 8 };
pub const FENTRY_SLOTS: SlotRange = SlotRange { base: 84, count: 16 };
pub const FEXIT_SLOTS: SlotRange = SlotRange { base: 100, count: 8 };
/// Total number of slots; size of the slot config and slot counter maps.
pub const NUM_SLOTS: u32 = 108;

/// Open chain instances the kernel tracks at once (all chains together).
pub const DEFAULT_MAX_INSTANCES: u32 = 65536;
/// Largest `DIRECT` array (all direct chains together): 262144 instances, 12 MiB. Chains
/// whose key space is larger use the hash map.
pub const MAX_DIRECT_ENTRIES: u32 = 262_144;
/// Key-space size assumed for a softirq vector (NR_SOFTIRQS is 10).
pub const SOFTIRQ_VECTORS: u32 = 32;
/// Default ring buffer size in bytes (a power of two, multiple of the page size).
pub const DEFAULT_RING_BYTES: u32 = 16 * 1024 * 1024;
/// Ring buffers in the object (`RING_0` …): records go to the ring of a CPU (`cpu & mask`), so
/// CPUs do not contend for one ring's lock and producer position. Userspace sizes the ones a
/// machine's CPUs use, and gives the others a page.
pub const MAX_RINGS: u32 = 8;
