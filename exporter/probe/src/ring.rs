//! The ring-buffer reader. The object has `MAX_RINGS` rings and a record goes to the ring of a
//! CPU (`cpu & mask`; see `FLAG_ORDERED` for which CPU), so CPUs do not contend for one ring.
//! Records are submitted without waking the reader (see `ebpf/src/stage.rs`), so it drains
//! every ring on a timer, and earlier when the kernel forces a wakeup because one is filling up.

use std::{
    io,
    task::{Context, Poll},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use clockpath_common::{
    limits::MAX_RINGS,
    record::{RECORD_BYTES, RECORD_HEAD_BYTES, Record},
};
use tokio::io::{Interest, unix::AsyncFd};

/// The rings' map names, by index.
pub const RING_NAMES: [&str; MAX_RINGS as usize] =
    ["RING_0", "RING_1", "RING_2", "RING_3", "RING_4", "RING_5", "RING_6", "RING_7"];

fn page_bytes() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(page).ok().filter(|p| p.is_power_of_two()).unwrap_or(4096).max(4096)
}

/// How `probe.ring_bytes` is shared among the object's rings on a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLayout {
    /// Rings a record can go to: a power of two, at most `MAX_RINGS`; ring `cpu & (count - 1)`.
    pub count: u32,
    /// Of those, the rings some CPU writes (`min(count, CPUs)`); the others are a page each and
    /// never read.
    pub used: u32,
    /// Size of each used ring, bytes: `ring_bytes / used` rounded down to a power of two, at
    /// least a page.
    pub ring_bytes: u32,
    pub page: u32,
}

impl RingLayout {
    /// The layout for `cpus` possible CPUs and `total` bytes (`probe.ring_bytes`).
    pub fn new(cpus: u32, total: u32, page: u32) -> RingLayout {
        let cpus = cpus.max(1);
        let count = cpus.next_power_of_two().min(MAX_RINGS);
        let used = count.min(cpus);
        let share = (total / used).max(page);
        RingLayout { count, used, ring_bytes: 1 << (31 - share.leading_zeros()), page }
    }

    /// The layout on this machine (its possible CPUs: what `bpf_get_smp_processor_id` returns
    /// is below their count). Every ring is used when the count cannot be read.
    pub fn for_this_machine(total: u32) -> RingLayout {
        let cpus = aya::util::nr_cpus().map_or(MAX_RINGS, |n| u32::try_from(n).unwrap_or(MAX_RINGS));
        RingLayout::new(cpus, total, page_bytes())
    }

    pub fn mask(&self) -> u32 {
        self.count - 1
    }

    /// The size of ring `i` in the object.
    pub fn size_of(&self, i: u32) -> u32 {
        if i < self.used { self.ring_bytes } else { self.page }
    }

    /// Bytes the used rings' mappings take in this process: for each, the consumer and producer
    /// pages, and the data pages mapped twice (so records that wrap read contiguously).
    pub fn mapping_bytes(&self) -> u64 {
        u64::from(self.used) * (2 * u64::from(self.page) + 2 * u64::from(self.ring_bytes))
    }
}

pub struct RingReader {
    rings: Vec<AsyncFd<RingBuf<MapData>>>,
    tick: tokio::time::Interval,
    /// Items shorter than a record's head (never expected; counted rather than trusted).
    pub malformed: u64,
}

impl RingReader {
    /// Must be called inside a Tokio runtime.
    pub fn new(rings: Vec<RingBuf<MapData>>, drain_interval: Duration) -> io::Result<RingReader> {
        let rings = rings
            .into_iter()
            // SAFETY: the RingBuf owns its map fd, and the AsyncFd owns the RingBuf, so the fd
            // stays open for as long as it is registered.
            .map(|r| unsafe { AsyncFd::register_with_interest(r, Interest::READABLE) }.map_err(|e| e.into_parts().1))
            .collect::<io::Result<Vec<_>>>()?;
        let mut tick = tokio::time::interval(drain_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(RingReader { rings, tick, malformed: 0 })
    }

    /// Wait until the kernel wakes us (any ring) or the drain timer fires, then append every
    /// pending record of every ring to `out`. Returns how many were appended.
    pub async fn next_batch(&mut self, out: &mut Vec<Record>) -> io::Result<usize> {
        let rings = &self.rings;
        let woken = std::future::poll_fn(|cx: &mut Context<'_>| {
            for r in rings {
                if let Poll::Ready(guard) = r.poll_read_ready(cx) {
                    // Every ring is drained below; readiness comes back with the next wakeup.
                    guard?.clear_ready();
                    return Poll::Ready(Ok::<(), io::Error>(()));
                }
            }
            Poll::Pending
        });
        tokio::select! {
            r = woken => r?,
            _ = self.tick.tick() => {}
        }
        Ok(self.drain(out))
    }

    /// Append every pending record to `out` without waiting: ring by ring, then in time order
    /// (stable, so an instance's records, which share a ring, keep their order).
    pub fn drain(&mut self, out: &mut Vec<Record>) -> usize {
        let start = out.len();
        let mut rings_with_records = 0;
        for r in &mut self.rings {
            if drain(r.get_mut(), out, &mut self.malformed) > 0 {
                rings_with_records += 1;
            }
        }
        if rings_with_records > 1 {
            out[start..].sort_by_key(|r| r.end_ns);
        }
        out.len() - start
    }
}

fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<Record>, malformed: &mut u64) -> usize {
    let before = out.len();
    while let Some(item) = ring.next() {
        if !decode_item(&item, out) {
            *malformed += 1;
        }
    }
    out.len() - before
}

/// Append the records of one ring item to `out`: a whole record (`RECORD_BYTES`, a segment
/// with its interference), or one or more heads (a record alone, or a CPU's staged batch).
/// False, appending nothing, for any other length.
pub fn decode_item(item: &[u8], out: &mut Vec<Record>) -> bool {
    if item.len() == RECORD_BYTES {
        out.push(decode(item));
    } else if !item.is_empty() && item.len().is_multiple_of(RECORD_HEAD_BYTES) {
        out.extend(item.chunks_exact(RECORD_HEAD_BYTES).map(decode));
    } else {
        return false;
    }
    true
}

/// A record from its bytes: a head alone (`RECORD_HEAD_BYTES`) has no interference.
fn decode(item: &[u8]) -> Record {
    let mut rec = Record::default();
    let len = item.len().min(RECORD_BYTES);
    // SAFETY: `Record` is plain old data (any bytes are a valid value), `len` is within both
    // the item and the record, and the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(item.as_ptr(), (&raw mut rec).cast::<u8>(), len) };
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_follow_the_cpus_up_to_max_rings_and_share_ring_bytes() {
        let l = RingLayout::new(2, 16 << 20, 4096);
        assert_eq!((l.count, l.used, l.ring_bytes, l.mask()), (2, 2, 8 << 20, 1));
        assert_eq!(l.mapping_bytes(), 2 * (2 * 4096 + 2 * (8 << 20)));
        // 6 CPUs: 8 rings, 6 written; the share is rounded down to a power of two.
        let l = RingLayout::new(6, 16 << 20, 4096);
        assert_eq!((l.count, l.used, l.ring_bytes), (8, 6, 2 << 20));
        assert_eq!((l.size_of(5), l.size_of(6)), (2 << 20, 4096));
        // More CPUs than rings: CPUs share rings.
        let l = RingLayout::new(64, 16 << 20, 4096);
        assert_eq!((l.count, l.used, l.ring_bytes, l.mask()), (8, 8, 2 << 20, 7));
        // Never below a page.
        let l = RingLayout::new(4, 4096, 4096);
        assert_eq!((l.count, l.used, l.ring_bytes), (4, 4, 4096));
        assert_eq!(RingLayout::new(1, 16 << 20, 4096).ring_bytes, 16 << 20);
        assert_eq!(RingLayout::new(0, 16 << 20, 4096).count, 1);
    }

    #[test]
    fn an_item_is_one_whole_record_or_any_number_of_heads() {
        let recs: Vec<Record> =
            (1..=3).map(|i| Record { kind: 1, chain: i, instance_id: i as u64, ..Default::default() }).collect();
        let bytes = |r: &Record| {
            // SAFETY: a Record is plain old data.
            unsafe { std::slice::from_raw_parts((&raw const *r).cast::<u8>(), RECORD_BYTES) }.to_vec()
        };
        let batch: Vec<u8> = recs.iter().flat_map(|r| bytes(r)[..RECORD_HEAD_BYTES].to_vec()).collect();
        let mut out = Vec::new();
        assert!(decode_item(&batch, &mut out));
        assert_eq!(out, recs, "a staged batch of three heads");
        out.clear();
        assert!(decode_item(&bytes(&recs[0]), &mut out));
        assert_eq!(out, [recs[0]]);
        for bad in [0, 8, RECORD_HEAD_BYTES + 8, 2 * RECORD_HEAD_BYTES + 8] {
            assert!(!decode_item(&vec![0; bad], &mut out), "{bad} bytes");
        }
        assert_eq!(out.len(), 1, "nothing appended for a malformed item");
    }

    #[test]
    fn a_head_only_record_decodes_with_zero_interference() {
        let full =
            Record { kind: 1, chain: 2, instance_id: 7, end_ns: 9, interference_ns: [3; 5], ..Default::default() };
        // SAFETY: a Record is plain old data.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts((&raw const full).cast::<u8>(), RECORD_BYTES) };
        assert_eq!(decode(bytes), full);
        let head = decode(&bytes[..RECORD_HEAD_BYTES]);
        assert_eq!(head, Record { interference_ns: [0; 5], ..full });
    }
}
