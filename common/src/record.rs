//! The ring-buffer record: one completed segment, one closed instance, or (in raw mode) one
//! stage hit. Written by `ebpf/src/stage.rs`, decoded by `exporter/src/probe/ring.rs`.

/// A segment of an instance was recorded: `stage` is the stage that ended it, so the segment
/// is `stage - 1 → stage`.
pub const RECORD_SEGMENT: u8 = 1;
/// Raw mode: a stage slot was hit (`start_ns == end_ns` = hit time; `aux` = the value captured
/// by a stage-0 slot, else 0).
pub const RECORD_HIT: u8 = 2;
/// An instance was closed without completing; `stage` holds a `CLOSE_*` reason.
pub const RECORD_CLOSE: u8 = 3;

pub const CLOSE_TIMEOUT: u8 = 1;
pub const CLOSE_REPLACED: u8 = 2;
pub const CLOSE_ABORTED: u8 = 3;

/// 88 bytes, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// `RECORD_*`.
    pub kind: u8,
    pub chain: u8,
    /// Segment: the stage that ended it. Hit: the slot's stage. Close: `CLOSE_*`.
    pub stage: u8,
    /// Global slot index of the program that wrote the record.
    pub slot: u8,
    /// CPU the record was written on.
    pub cpu: u16,
    /// Chains with causes: the cause that opened the instance (index into the chain's causes).
    pub cause: u8,
    pub _pad: u8,
    /// Instance id (0 for a hit with no open instance).
    pub instance_id: u64,
    /// The instance key.
    pub key: u64,
    /// Segment start / hit time / instance start (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// Segment end / hit time / close time.
    pub end_ns: u64,
    /// The value captured at stage 0 (hits: only on stage-0 slots).
    pub aux: u64,
    /// Segments of interference-charged chains: time (ns) spent in each interference source
    /// (`crate::interference`) on the segment's CPU while it was open; `UNKNOWN_INTERFERENCE`
    /// when the segment ended on another CPU than it started on. Zero otherwise.
    pub interference_ns: [u64; crate::interference::SOURCES],
}

/// Interference of a segment that started and ended on different CPUs.
pub const UNKNOWN_INTERFERENCE: u64 = u64::MAX;

pub const RECORD_BYTES: usize = core::mem::size_of::<Record>();

/// Bytes of a record without `interference_ns`: what the kernel sends unless the record is a
/// segment of an interference-charged chain (the rest would be zeros). Userspace zero-fills.
pub const RECORD_HEAD_BYTES: usize = core::mem::offset_of!(Record, interference_ns);

/// Records a CPU stages before it hands them to its ring in one piece (records that need no
/// order and carry no interference: segments of one-segment chains; see `FLAG_ORDERED`).
pub const STAGE_RECORDS: usize = 16;

/// A record's head (`RECORD_HEAD_BYTES`): the record without its interference block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHead(pub [u64; RECORD_HEAD_BYTES / 8]);

/// A CPU's staged records (the per-CPU `STAGED` map): `records[..n]` wait for its ring, which
/// gets them as one item of `n` heads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Staged {
    pub n: u32,
    /// Nonzero while a program on this CPU is writing here. A program that nests in it (an
    /// interrupt) or preempts it (fentry, PREEMPT_RT) sends its record straight to the ring,
    /// and a flush waits for the next try.
    pub busy: u32,
    pub records: [RecordHead; STAGE_RECORDS],
}
