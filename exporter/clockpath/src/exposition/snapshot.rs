//! One consistent read of the kernel maps per scrape: exact histograms, per-chain counters,
//! stage hits and what the sweeper removed, as plain data (so every metric family is encoded,
//! and tested, from a snapshot rather than from live maps).

use clockpath_common::{hist::HistRow, slot::ChainCounters};
use clockpath_probe::{
    maps::KernelMaps,
    plan::{ChainPlan, Status},
};

/// One segment's (or `total`'s) histogram.
#[derive(Clone, Debug)]
pub struct HistSeries {
    pub chain: String,
    pub segment: String,
    /// Chains with causes: the cause whose instances this row counts.
    pub cause: Option<String>,
    pub row: HistRow,
    /// The chain's last segment: its count is the number of completed instances.
    pub last: bool,
}

/// Hits of one attached stage program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageHits {
    pub chain: String,
    pub stage: String,
    pub target: String,
    pub hits: u64,
}

/// The kernel side of a scrape.
#[derive(Clone, Debug, Default)]
pub struct KernelSnapshot {
    pub histograms: Vec<HistSeries>,
    /// Per running chain, its counters summed over CPUs.
    pub counters: Vec<(String, ChainCounters)>,
    pub hits: Vec<StageHits>,
    /// Instances the userspace sweeper removed (timed out), by chain index.
    pub swept: Vec<u64>,
}

impl KernelSnapshot {
    /// Read every running chain's maps. A map read that fails (never expected) counts as zero.
    pub fn read(plans: &[ChainPlan], maps: &KernelMaps) -> KernelSnapshot {
        let mut snap = KernelSnapshot { swept: maps.swept.clone(), ..Default::default() };
        for p in plans.iter().filter(|p| p.is_running() && p.is_chain()) {
            let shape = p.shape();
            let n = shape.segments();
            for r in p.hist_rows() {
                let segment = if r.segment == 0 { "total".to_string() } else { shape.segment_name(r.segment) };
                snap.histograms.push(HistSeries {
                    chain: p.name.clone(),
                    segment,
                    cause: r.cause.and_then(|c| shape.cause_name(c)).map(str::to_string),
                    row: maps.hist_row(p.index, r.row).unwrap_or(HistRow::ZERO),
                    last: r.segment as usize == n,
                });
            }
            snap.counters.push((p.name.clone(), maps.chain_counters(p.index).unwrap_or_default()));
            let stages = p.stages.iter().map(|s| (s.name.as_str(), &s.points));
            for (stage, points) in stages.chain(std::iter::once(("abort", &p.aborts))) {
                for c in points.iter().flat_map(|pt| &pt.candidates) {
                    if let Status::Attached(slot) = c.status {
                        snap.hits.push(StageHits {
                            chain: p.name.clone(),
                            stage: stage.to_string(),
                            target: c.target.to_string(),
                            hits: maps.slot_hits(slot).unwrap_or(0),
                        });
                    }
                }
            }
        }
        snap
    }

    /// Completed instances of `chain`: the count of its last segment's histogram.
    pub fn completed(&self, chain: &str) -> u64 {
        self.histograms.iter().filter(|h| h.last && h.chain == chain).map(|h| h.row.buckets.iter().sum::<u64>()).sum()
    }
}
