//! The ring-buffer reader. Records are submitted without waking the reader (see
//! `ebpf/src/stage.rs`), so it drains on a timer, and earlier when the kernel forces a wakeup
//! because the ring is filling up.

use std::{io, time::Duration};

use aya::maps::{MapData, RingBuf};
use clockpath_common::record::{RECORD_BYTES, Record};
use tokio::io::{Interest, unix::AsyncFd};

/// Bytes the mapping of a ring of `ring_bytes` takes in this process: the consumer and
/// producer pages, and the data pages mapped twice (so records that wrap read contiguously).
pub fn mapping_bytes(ring_bytes: u32) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    2 * page + 2 * ring_bytes as u64
}

pub struct RingReader {
    fd: AsyncFd<RingBuf<MapData>>,
    tick: tokio::time::Interval,
    /// Items shorter than a record (never expected; counted rather than trusted).
    pub malformed: u64,
}

impl RingReader {
    /// Must be called inside a Tokio runtime.
    pub fn new(ring: RingBuf<MapData>, drain_interval: Duration) -> io::Result<RingReader> {
        // SAFETY: the RingBuf owns its map fd, and the AsyncFd owns the RingBuf, so the fd
        // stays open for as long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
        let mut tick = tokio::time::interval(drain_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(RingReader { fd, tick, malformed: 0 })
    }

    /// Wait until the kernel wakes us or the drain timer fires, then append every pending
    /// record to `out`. Returns how many were appended.
    pub async fn next_batch(&mut self, out: &mut Vec<Record>) -> io::Result<usize> {
        tokio::select! {
            guard = self.fd.readable_mut() => {
                let mut guard = guard?;
                let n = drain(guard.get_inner_mut(), out, &mut self.malformed);
                guard.clear_ready();
                Ok(n)
            }
            _ = self.tick.tick() => Ok(self.drain(out)),
        }
    }

    /// Append every pending record to `out` without waiting.
    pub fn drain(&mut self, out: &mut Vec<Record>) -> usize {
        drain(self.fd.get_mut(), out, &mut self.malformed)
    }
}

fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<Record>, malformed: &mut u64) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        if item.len() < RECORD_BYTES {
            *malformed += 1;
            continue;
        }
        // SAFETY: the item holds at least RECORD_BYTES bytes written by the BPF side as a
        // `Record`, which is plain old data; read_unaligned copes with any alignment.
        let rec: Record = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        out.push(rec);
        n += 1;
    }
    n
}
