//! Totals of interference charged to segments, per chain, segment and source, for
//! `clockpath_segment_interference_seconds_total` (and the count of segments that changed CPU,
//! whose interference is unknown).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use clockpath_common::{interference::SOURCES, record::UNKNOWN_INTERFERENCE};

use clockpath_offline::chain::ChainRecord;

use crate::pipeline::Sink;

/// Charged nanoseconds per source, and segments whose CPU changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Charged {
    pub ns: [u64; SOURCES],
    pub unknown: u64,
}

/// (chain index, segment index) → totals.
pub type SharedInterference = Arc<Mutex<BTreeMap<(u8, u8), Charged>>>;

pub struct InterferenceSink {
    /// Chains that charge interference, by index.
    charging: Vec<bool>,
    out: SharedInterference,
}

impl InterferenceSink {
    pub fn new(charging: Vec<bool>, out: SharedInterference) -> Self {
        InterferenceSink { charging, out }
    }
}

impl Sink for InterferenceSink {
    fn on_chain(&mut self, rec: &ChainRecord) {
        if !self.charging.get(rec.chain as usize).copied().unwrap_or(false) {
            return;
        }
        let Ok(mut m) = self.out.lock() else { return };
        for s in &rec.segments {
            let c = m.entry((rec.chain, s.index)).or_default();
            if s.interference_ns[0] == UNKNOWN_INTERFERENCE {
                c.unknown += 1;
            } else {
                for (t, v) in c.ns.iter_mut().zip(s.interference_ns) {
                    *t += v;
                }
            }
        }
    }
}
