//! Reading the kernel's histograms and counters, and sweeping timed-out instances.

use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray};
use clockpath_common::{
    hist::HistRow,
    limits::{HIST_ROWS_PER_CHAIN, MAX_CHAINS},
    slot::{Active, ChainCounters, Instance, InstanceKey},
};

/// Maps that userspace reads after attach (taken out of the object so they can be shared).
pub struct KernelMaps {
    pub hist: PerCpuArray<MapData, HistRow>,
    pub counters: PerCpuArray<MapData, ChainCounters>,
    pub slot_hits: PerCpuArray<MapData, u64>,
    pub instances: BpfHashMap<MapData, InstanceKey, Instance>,
    pub active: Array<MapData, Active>,
    /// Open instances the sweeper removed (timed out), per chain.
    pub swept: Vec<u64>,
    /// Entries the sweeper deleted, open or closed, per chain (mirrored into
    /// `ACTIVE[MAX_CHAINS + chain]`).
    pub deleted: Vec<u64>,
}

/// How long a closed instance's hash-map entry is kept for reuse before the sweeper deletes it.
pub const CLOSED_KEPT_NS: u64 = 1_000_000_000;

impl KernelMaps {
    /// Histogram row `row` of chain `chain`, summed over CPUs.
    pub fn hist_row(&self, chain: u8, row: u32) -> Result<HistRow, MapError> {
        let per_cpu = self.hist.get(&(chain as u32 * HIST_ROWS_PER_CHAIN + row), 0)?;
        let mut sum = HistRow::ZERO;
        for r in per_cpu.iter() {
            for (s, v) in sum.buckets.iter_mut().zip(r.buckets.iter()) {
                *s += v;
            }
            sum.sum_ns += r.sum_ns;
        }
        Ok(sum)
    }

    /// Counters of chain `chain`, summed over CPUs.
    pub fn chain_counters(&self, chain: u8) -> Result<ChainCounters, MapError> {
        let per_cpu = self.counters.get(&(chain as u32), 0)?;
        let mut s = ChainCounters::default();
        for c in per_cpu.iter() {
            s.opened += c.opened;
            s.timed_out += c.timed_out;
            s.replaced += c.replaced;
            s.aborted += c.aborted;
            s.ring_lost += c.ring_lost;
            s.ring_lost_segments += c.ring_lost_segments;
            s.map_full += c.map_full;
            s.out_of_order += c.out_of_order;
            s.key_out_of_range += c.key_out_of_range;
            s.sampled_out += c.sampled_out;
            s.nested += c.nested;
        }
        Ok(s)
    }

    /// Hits of slot `slot`, summed over CPUs.
    pub fn slot_hits(&self, slot: u32) -> Result<u64, MapError> {
        Ok(self.slot_hits.get(&slot, 0)?.iter().sum())
    }

    /// Remove instances whose chain timeout has passed (`timeout_ns[chain]`, 0: never) with no
    /// hit on their key since, and entries closed for longer than [`CLOSED_KEPT_NS`] (the
    /// kernel leaves a closed instance's entry in place for the next open on its key). Returns
    /// the open instances removed.
    pub fn sweep(&mut self, timeout_ns: &[u64], now_ns: u64) -> Vec<(InstanceKey, Instance)> {
        let stale: Vec<(InstanceKey, Instance)> = self
            .instances
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, inst)| {
                if inst.next_stage == 0 {
                    return now_ns.saturating_sub(inst.last_ns) > CLOSED_KEPT_NS;
                }
                let t = timeout_ns.get(k.chain as usize).copied().unwrap_or(0);
                t != 0 && now_ns.saturating_sub(inst.start_ns) > t
            })
            .collect();
        // The scan takes a while on a full map: an entry a CPU reopened or advanced since is
        // read again just before it is deleted and kept if it changed. (What is left is the
        // window between that read and the delete, microseconds, where a key that comes back
        // would lose its new instance.)
        let mut removed: Vec<(InstanceKey, Instance)> = Vec::new();
        for (k, seen) in stale {
            let Ok(now) = self.instances.get(&k, 0) else { continue };
            let unchanged = now.id == seen.id && now.next_stage == seen.next_stage && now.last_ns == seen.last_ns;
            if unchanged && self.instances.remove(&k).is_ok() {
                removed.push((k, now));
            }
        }
        // Tell the kernel's pre-filter (which counts entries, open or closed) what the sweeper
        // deleted. Only this process writes these entries, so a plain update cannot race with
        // the kernel.
        for (k, inst) in &removed {
            if let Some(c) = self.deleted.get_mut(k.chain as usize) {
                *c += 1;
            }
            if inst.next_stage != 0
                && let Some(c) = self.swept.get_mut(k.chain as usize)
            {
                *c += 1;
            }
        }
        for (chain, &n) in self.deleted.iter().enumerate() {
            if n > 0 {
                let idx = MAX_CHAINS + chain as u32;
                if let Err(error) = self.active.set(idx, Active { inserted: n, ..Active::default() }, 0) {
                    tracing::warn!(%error, "updating ACTIVE[{idx}] failed");
                }
            }
        }
        removed.into_iter().filter(|(_, inst)| inst.next_stage != 0).collect()
    }

    /// Instances open in the kernel now, per chain index.
    pub fn open_instances(&self, chains: usize) -> Vec<u64> {
        let mut v = vec![0; chains];
        for (k, _) in self.instances.iter().filter_map(Result::ok).filter(|(_, i)| i.next_stage != 0) {
            if let Some(c) = v.get_mut(k.chain as usize) {
                *c += 1;
            }
        }
        v
    }
}
