//! A sink that counts what it receives, per chain: segment records by segment and instances by
//! outcome (run summaries, sessions, tests).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use clockpath_offline::chain::ChainRecord;
use serde::Serialize;

use crate::pipeline::Sink;

/// Per-chain counts for the run summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChainTally {
    pub segments_received: BTreeMap<u8, u64>,
    pub outcomes: BTreeMap<&'static str, u64>,
}

/// A sink that counts what it receives (for summaries and tests).
#[derive(Clone, Default)]
pub struct TallySink {
    pub chains: Arc<Mutex<BTreeMap<u8, ChainTally>>>,
}

impl Sink for TallySink {
    fn on_chain(&mut self, rec: &ChainRecord) {
        if let Ok(mut m) = self.chains.lock() {
            let t = m.entry(rec.chain).or_default();
            for s in &rec.segments {
                *t.segments_received.entry(s.index).or_default() += 1;
            }
            *t.outcomes.entry(rec.outcome.as_str()).or_default() += 1;
        }
    }
}
