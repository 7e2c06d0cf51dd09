//! Which chain instances become traces, decided once an instance has ended (the exporter sees
//! whole chains, so this is tail sampling without a collector): instances the statistics
//! window would reject as outliers and instances with a segment slower than its recent p99 are
//! always kept; the rest share a per-chain token bucket.

use std::{collections::HashMap, sync::Arc, time::Instant};

use clockpath_offline::chain::{ChainRecord, ChainShape, Outcome};

use crate::{
    config::{SamplingConfig, WindowsConfig},
    sinks::{
        hdr::SharedQuantiles,
        windows::{self, SharedWindows},
    },
};

/// Why an instance was kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Its reference segment lies beyond `windows.sigma` standard deviations of the last
    /// window's median.
    Outlier,
    /// A segment (or the total) was slower than its p99 over the quantile window.
    SlowerThanP99,
    /// Within the chain's rate limit.
    Rate,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::Outlier, Reason::SlowerThanP99, Reason::Rate];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Outlier => "outlier",
            Reason::SlowerThanP99 => "slower_than_p99",
            Reason::Rate => "rate",
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Median and standard deviation (ns) of a chain's reference segment in its last window.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Reference {
    median_ns: f64,
    sd_ns: f64,
}

/// The sampling decision, with the thresholds it last copied from the shared snapshots.
pub struct Sampler {
    cfg: SamplingConfig,
    sigma: f64,
    /// Per chain index: the 0-based reference segment and its name.
    references: Vec<Option<(usize, String)>>,
    buckets: HashMap<u8, Bucket>,
    quantiles: Option<SharedQuantiles>,
    windows: Option<SharedWindows>,
    /// (chain, segment: 1-based, 0 = total) → p99 ns.
    p99: HashMap<(u8, u8), u64>,
    /// (chain, session) → reference statistics.
    reference_stats: HashMap<(u8, Option<Arc<str>>), Reference>,
}

impl Sampler {
    pub fn new(
        cfg: SamplingConfig,
        windows_cfg: &WindowsConfig,
        shapes: &[Option<ChainShape>],
        quantiles: Option<SharedQuantiles>,
        windows: Option<SharedWindows>,
    ) -> Sampler {
        let references = shapes
            .iter()
            .map(|s| {
                s.as_ref().map(|s| {
                    let i = windows::reference_segment(s, windows_cfg);
                    (i, s.segment_name(i as u8 + 1))
                })
            })
            .collect();
        Sampler {
            cfg,
            sigma: windows_cfg.sigma,
            references,
            buckets: HashMap::new(),
            quantiles,
            windows,
            p99: HashMap::new(),
            reference_stats: HashMap::new(),
        }
    }

    /// Copy the thresholds from the shared snapshots (called on every assembly tick, so the
    /// per-chain decision takes no lock).
    pub fn refresh(&mut self) {
        if self.cfg.keep_slower_than_p99
            && let Some(q) = &self.quantiles
            && let Ok(q) = q.read()
        {
            self.p99.clear();
            self.p99.extend(q.p99_ns.iter().map(|(k, v)| (*k, *v)));
        }
        if self.cfg.keep_outliers
            && let Some(w) = &self.windows
            && let Ok(w) = w.read()
        {
            self.reference_stats.clear();
            for ((chain, session), segs) in &w.windows {
                let Some(Some((_, name))) = self.references.get(*chain as usize) else { continue };
                if let Some(sw) = segs.iter().find(|s| &s.segment == name) {
                    self.reference_stats.insert(
                        (*chain, session.clone()),
                        Reference { median_ns: sw.stats.median * 1e9, sd_ns: sw.stats.std_dev * 1e9 },
                    );
                }
            }
        }
    }

    fn is_outlier(&self, rec: &ChainRecord) -> bool {
        let Some(Some((index, _))) = self.references.get(rec.chain as usize) else { return false };
        let Some(seg) = rec.segments.iter().find(|s| s.index as usize == index + 1) else { return false };
        let stats = self
            .reference_stats
            .get(&(rec.chain, rec.session.clone()))
            .or_else(|| self.reference_stats.get(&(rec.chain, None)));
        stats.is_some_and(|r| r.sd_ns > 0.0 && ((seg.duration_ns() as f64 - r.median_ns).abs() > self.sigma * r.sd_ns))
    }

    fn is_slow(&self, rec: &ChainRecord) -> bool {
        let slower = |seg: u8, ns: u64| self.p99.get(&(rec.chain, seg)).is_some_and(|p| ns > *p);
        rec.segments.iter().any(|s| slower(s.index, s.duration_ns()))
            || (rec.outcome == Outcome::Completed && slower(0, rec.total_ns()))
    }

    fn take_token(&mut self, chain: u8) -> bool {
        let rate = self.cfg.per_chain_per_second;
        if rate <= 0.0 {
            return false;
        }
        let burst = self.cfg.burst.max(1) as f64;
        let now = Instant::now();
        let b = self.buckets.entry(chain).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Keep this instance? `None`: sampled out.
    pub fn decide(&mut self, rec: &ChainRecord) -> Option<Reason> {
        if self.cfg.keep_outliers && self.is_outlier(rec) {
            return Some(Reason::Outlier);
        }
        if self.cfg.keep_slower_than_p99 && self.is_slow(rec) {
            return Some(Reason::SlowerThanP99);
        }
        self.take_token(rec.chain).then_some(Reason::Rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::windows::SegmentWindow;
    use clockpath_offline::{chain::Segment, stats::ColumnStats};

    fn shapes() -> Vec<Option<ChainShape>> {
        vec![Some(ChainShape {
            name: "c".into(),
            stages: vec!["a".into(), "b".into(), "c".into()],
            timeout_ns: 0,
            causes: Vec::new(),
        })]
    }

    fn rec(seg1: u64, seg2: u64) -> ChainRecord {
        let seg =
            |index, start_ns, end_ns| Segment { index, start_ns, end_ns, cpu: 0, slot: 0, interference_ns: [0; 5] };
        ChainRecord {
            chain: 0,
            instance_id: 1,
            key: 0,
            capture: 0,
            cpu: 0,
            cause: 0,
            start_ns: 0,
            end_ns: seg1 + seg2,
            segments: vec![seg(1, 0, seg1), seg(2, seg1, seg1 + seg2)],
            outcome: Outcome::Completed,
            session: None,
            labels: Vec::new(),
        }
    }

    fn cfg(rate: f64, burst: u32) -> SamplingConfig {
        SamplingConfig { per_chain_per_second: rate, burst, keep_outliers: true, keep_slower_than_p99: true }
    }

    #[test]
    fn the_rate_limit_is_a_token_bucket_per_chain() {
        let w = crate::config::Config::builtin().windows;
        let mut s = Sampler::new(cfg(0.001, 5), &w, &shapes(), None, None);
        let kept = (0..100).filter(|_| s.decide(&rec(100, 100)).is_some()).count();
        assert_eq!(kept, 5, "the burst, then (at 0.001/s) nothing");
        let mut s = Sampler::new(cfg(0.0, 5), &w, &shapes(), None, None);
        assert_eq!(s.decide(&rec(100, 100)), None, "rate 0 keeps only the always-kept");
    }

    #[test]
    fn outliers_and_slow_instances_are_always_kept() {
        let w = crate::config::Config::builtin().windows;
        let quantiles = SharedQuantiles::default();
        quantiles.write().unwrap().p99_ns.extend([((0, 1), 1_000), ((0, 2), 5_000), ((0, 0), 5_500)]);
        let windows = SharedWindows::default();
        let stats = ColumnStats { n: 300, median: 500e-9, std_dev: 50e-9, ci: None, reliable: true };
        windows
            .write()
            .unwrap()
            .windows
            .insert((0, None), vec![SegmentWindow { segment: "a->b".into(), stats, rejected: 0, end_unix: 0.0 }]);
        let mut s = Sampler::new(cfg(0.0, 1), &w, &shapes(), Some(quantiles), Some(windows));
        s.refresh();
        assert_eq!(s.decide(&rec(500, 100)), None, "ordinary");
        assert_eq!(s.decide(&rec(700, 100)), Some(Reason::Outlier), "4 sigma above the median");
        assert_eq!(s.decide(&rec(300, 100)), Some(Reason::Outlier), "4 sigma below");
        assert_eq!(s.decide(&rec(600, 5_001)), Some(Reason::SlowerThanP99), "segment 2 above its p99");
        // The total alone: 600 + 4990 = 5590 > 5500.
        assert_eq!(s.decide(&rec(600, 4_990)), Some(Reason::SlowerThanP99));
    }
}
