//! What a run saw, per chain: the kernel's counters and histogram totals next to what
//! userspace received (`clockpath run --summary-json`, sessions).

use std::{collections::BTreeMap, sync::atomic::Ordering};

use clockpath_common::hist::{HistRow, NUM_BUCKETS, bucket_lower_ns};
use clockpath_probe::{
    maps::KernelMaps,
    plan::{ChainPlan, ChainState, Store},
};
use serde::Serialize;

use crate::{pipeline::PipelineStats, sinks::tally::ChainTally};

/// What a run saw, per chain: kernel counters and histogram totals next to what userspace got.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub chains: Vec<ChainSummary>,
    pub records: u64,
    /// Close records received (instances closed after recording a segment, or every close
    /// in raw mode).
    pub close_records: u64,
    pub dropped_in_userspace: u64,
    pub swept: u64,
    /// The clock's synchronisation and the PPS sources over the run (`clockpath run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeSummary>,
}

/// What the outputs of a run say about time: adjtimex at start and end, and each PPS source.
#[derive(Clone, Debug, Serialize)]
pub struct TimeSummary {
    pub time_sync_at_start: Option<crate::host::TimeSync>,
    pub time_sync_at_end: Option<crate::host::TimeSync>,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC at the end: adds to a trace's `timestamp_ns` (kernel
    /// monotonic) to give the system clock's time.
    pub realtime_minus_monotonic_ns: i64,
    pub pps: Vec<PpsSummary>,
    /// This machine's clocks against CLOCK_MONOTONIC at the start and the end
    /// (`clockpath clocks`; schema `clockpath-clock-audit/1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clocks: Option<crate::clockaudit::StartEnd>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PpsSummary {
    pub device: String,
    pub name: String,
    pub pulses: u64,
    pub missed: u64,
    pub signal_present_at_end: bool,
    pub last_offset_ns: Option<i64>,
    pub jitter_ns: Option<f64>,
    pub read_errors: u64,
}

impl TimeSummary {
    pub fn new(
        start: Option<crate::host::TimeSync>,
        end: Option<crate::host::TimeSync>,
        reference: &crate::pps::TimeReference,
    ) -> TimeSummary {
        let pps = reference
            .sources()
            .iter()
            .map(|s| {
                let snap = s.snapshot();
                PpsSummary {
                    device: s.device.clone(),
                    name: s.name.clone(),
                    pulses: snap.pulses,
                    missed: snap.missed,
                    signal_present_at_end: snap.signal_present,
                    last_offset_ns: snap.last_offset_ns,
                    jitter_ns: snap.jitter_ns,
                    read_errors: snap.read_errors,
                }
            })
            .collect();
        TimeSummary {
            time_sync_at_start: start,
            time_sync_at_end: end,
            realtime_minus_monotonic_ns: crate::ktime::measure_offset(),
            pps,
            clocks: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ChainSummary {
    pub name: String,
    pub state: ChainState,
    pub opened: u64,
    pub completed: u64,
    pub timed_out: u64,
    pub replaced: u64,
    pub aborted: u64,
    pub ring_lost: u64,
    pub ring_lost_segments: u64,
    pub map_full: u64,
    pub out_of_order: u64,
    pub key_out_of_range: u64,
    /// The first stage opens an instance on every Nth hit per CPU.
    pub sample_every: u32,
    /// First-stage hits that were not sampled.
    pub not_sampled: u64,
    /// Hits of the first stage's attached programs.
    pub first_stage_hits: u64,
    pub store: Store,
    /// Segments counted in the kernel histograms.
    pub hist_segments: u64,
    /// Segment records userspace received.
    pub segments_received: u64,
    pub segments: Vec<SegmentSummary>,
    pub outcomes: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SegmentSummary {
    pub name: String,
    pub hist_count: u64,
    pub hist_sum_ns: u64,
    pub received: u64,
    /// Median from the kernel histogram (bucket lower bound), ns.
    pub hist_median_ns: Option<u64>,
    /// Chains with causes: this segment's histogram count per cause (they sum to `hist_count`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_cause: BTreeMap<String, u64>,
}

/// Build a summary from the kernel maps and a tally.
pub fn summarize(
    plans: &[ChainPlan],
    maps: &KernelMaps,
    tally: &BTreeMap<u8, ChainTally>,
    stats: &PipelineStats,
) -> Summary {
    let chains = plans
        .iter()
        .filter(|p| p.is_chain())
        .map(|p| {
            let c = maps.chain_counters(p.index).unwrap_or_default();
            let t = tally.get(&p.index).cloned().unwrap_or_default();
            let shape = p.shape();
            let mut segments = Vec::new();
            let mut hist_segments = 0;
            let mut completed = 0;
            // Rows of one segment (one per cause) are summed into one histogram.
            let rows = p.hist_rows();
            let mut indices: Vec<u8> = rows.iter().map(|r| r.segment).filter(|&s| s != 0).collect();
            indices.dedup();
            if rows.iter().any(|r| r.segment == 0) {
                indices.push(0);
            }
            for seg in indices {
                let mut h = HistRow::ZERO;
                let mut by_cause = BTreeMap::new();
                for r in rows.iter().filter(|r| r.segment == seg) {
                    let row = maps.hist_row(p.index, r.row).unwrap_or(HistRow::ZERO);
                    if let Some(name) = r.cause.and_then(|c| shape.cause_name(c)) {
                        by_cause.insert(name.to_string(), row.buckets.iter().sum());
                    }
                    for (a, b) in h.buckets.iter_mut().zip(row.buckets.iter()) {
                        *a += b;
                    }
                    h.sum_ns += row.sum_ns;
                }
                let count: u64 = h.buckets.iter().sum();
                if seg != 0 {
                    hist_segments += count;
                    // The last segment is recorded exactly once per completed instance.
                    if seg as usize == shape.segments() {
                        completed = count;
                    }
                }
                segments.push(SegmentSummary {
                    name: if seg == 0 { "total".into() } else { shape.segment_name(seg) },
                    hist_count: count,
                    hist_sum_ns: h.sum_ns,
                    received: if seg == 0 { 0 } else { t.segments_received.get(&seg).copied().unwrap_or(0) },
                    hist_median_ns: hist_median(&h.buckets),
                    by_cause,
                });
            }
            ChainSummary {
                name: p.name.clone(),
                state: p.state.clone(),
                opened: c.opened,
                completed,
                timed_out: c.timed_out,
                replaced: c.replaced,
                aborted: c.aborted,
                ring_lost: c.ring_lost,
                ring_lost_segments: c.ring_lost_segments,
                map_full: c.map_full,
                out_of_order: c.out_of_order,
                key_out_of_range: c.key_out_of_range,
                sample_every: p.sample_every,
                not_sampled: c.sampled_out,
                first_stage_hits: p
                    .stages
                    .first()
                    .into_iter()
                    .flat_map(|s| &s.points)
                    .filter_map(|pt| match pt.attached()?.status {
                        clockpath_probe::plan::Status::Attached(slot) => maps.slot_hits(slot).ok(),
                        _ => None,
                    })
                    .sum(),
                store: p.store,
                hist_segments,
                segments_received: t.segments_received.values().sum(),
                segments,
                outcomes: t.outcomes,
            }
        })
        .collect();
    Summary {
        chains,
        records: stats.records.load(Ordering::Relaxed),
        close_records: stats.close_records.load(Ordering::Relaxed),
        dropped_in_userspace: stats.dropped.load(Ordering::Relaxed),
        swept: stats.swept.load(Ordering::Relaxed),
        time: None,
    }
}

/// Lower bound of the bucket holding the median.
pub fn hist_median(buckets: &[u64; NUM_BUCKETS]) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let mut acc = 0;
    for (i, c) in buckets.iter().enumerate() {
        acc += c;
        if acc * 2 >= total {
            return Some(bucket_lower_ns(i as u32));
        }
    }
    None
}
