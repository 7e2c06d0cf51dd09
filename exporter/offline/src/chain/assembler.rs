//! Segment and close records → `ChainRecord`s.
//!
//! The kernel sends one record per recorded segment and one per instance closed without
//! completing. Records of one instance share its id; the instance completes with the segment of
//! its last stage. Partial instances whose records stop arriving (lost in a full ring buffer)
//! are evicted as `Incomplete` after their chain's timeout, so memory is bounded by the number
//! of open instances.

use clockpath_common::record::{CLOSE_ABORTED, CLOSE_REPLACED, CLOSE_TIMEOUT, RECORD_CLOSE, RECORD_SEGMENT, Record};

use super::{ChainRecord, ChainShape, Outcome, Segment};

struct Partial {
    key: u64,
    capture: u64,
    start_ns: u64,
    last_ns: u64,
    cpu: u32,
    cause: u8,
    segments: Vec<Segment>,
}

/// Counts of what the assembler did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    pub segments: u64,
    pub emitted: u64,
    pub incomplete: u64,
    /// Partial instances emitted because their chain's timeout passed.
    pub evicted: u64,
    /// Partial instances emitted because `max_open` were held.
    pub evicted_over_cap: u64,
    /// Records for a chain index with no shape (not configured).
    pub unknown_chain: u64,
}

pub struct RecordAssembler {
    shapes: Vec<Option<ChainShape>>,
    open: rustc_hash::FxHashMap<(u8, u64), Partial>,
    /// Most partial instances held; past it the least recently extended are emitted as
    /// incomplete (records of theirs were lost, or they would have finished).
    max_open: usize,
    latest_ns: u64,
    pub stats: AssemblerStats,
}

/// Default cap on partial instances: more than the kernel can have open at its default size.
pub const DEFAULT_MAX_OPEN: usize = 1 << 17;

impl RecordAssembler {
    /// `shapes[i]` describes chain index `i` (None: not running).
    pub fn new(shapes: Vec<Option<ChainShape>>) -> Self {
        Self::with_max_open(shapes, DEFAULT_MAX_OPEN)
    }

    /// Holding at most `max_open` partial instances (at least 1).
    pub fn with_max_open(shapes: Vec<Option<ChainShape>>, max_open: usize) -> Self {
        RecordAssembler {
            shapes,
            open: Default::default(),
            max_open: max_open.max(1),
            latest_ns: 0,
            stats: AssemblerStats::default(),
        }
    }

    pub fn shape(&self, chain: u8) -> Option<&ChainShape> {
        self.shapes.get(chain as usize).and_then(Option::as_ref)
    }

    /// Instances waiting for more records.
    pub fn open_instances(&self) -> usize {
        self.open.len()
    }

    /// Heap bytes of the open instances (table slots and their segments), approximately.
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<((u8, u64), Partial)>() + 1;
        let segments: usize = self.open.values().map(|p| p.segments.capacity() * std::mem::size_of::<Segment>()).sum();
        self.open.capacity() * slot + segments
    }

    /// Feed one record; completed or closed instances go to `out`.
    pub fn push(&mut self, r: &Record, out: &mut impl FnMut(ChainRecord)) {
        let Some(nseg) = self.shape(r.chain).map(ChainShape::segments) else {
            self.stats.unknown_chain += 1;
            return;
        };
        self.latest_ns = self.latest_ns.max(r.end_ns);
        match r.kind {
            RECORD_SEGMENT => {
                self.stats.segments += 1;
                let seg = Segment {
                    index: r.stage,
                    start_ns: r.start_ns,
                    end_ns: r.end_ns,
                    cpu: r.cpu as u32,
                    slot: r.slot,
                    interference_ns: r.interference_ns,
                };
                let last = r.stage as usize >= nseg;
                if last && !self.open.contains_key(&(r.chain, r.instance_id)) {
                    // A one-segment instance (or one whose earlier records were lost): emitted
                    // at once, never stored. Most records of the busiest chains take this path.
                    let complete = nseg == 1 && r.stage == 1;
                    let p = Partial {
                        key: r.key,
                        capture: r.aux,
                        start_ns: r.start_ns,
                        last_ns: r.end_ns,
                        cpu: r.cpu as u32,
                        cause: r.cause,
                        segments: vec![seg],
                    };
                    let outcome = if complete { Outcome::Completed } else { Outcome::Incomplete };
                    self.emit(r.chain, r.instance_id, p, outcome, out);
                    return;
                }
                if self.open.len() >= self.max_open && !self.open.contains_key(&(r.chain, r.instance_id)) {
                    self.evict_oldest(out);
                }
                let p = self.open.entry((r.chain, r.instance_id)).or_insert_with(|| Partial {
                    key: r.key,
                    capture: r.aux,
                    start_ns: r.start_ns,
                    last_ns: r.end_ns,
                    cpu: r.cpu as u32,
                    cause: r.cause,
                    segments: Vec::with_capacity(nseg),
                });
                p.last_ns = r.end_ns;
                p.segments.push(seg);
                if r.stage as usize >= nseg
                    && let Some(p) = self.open.remove(&(r.chain, r.instance_id))
                {
                    let complete = p.segments.len() == nseg
                        && p.segments.iter().enumerate().all(|(i, s)| s.index as usize == i + 1);
                    let outcome = if complete { Outcome::Completed } else { Outcome::Incomplete };
                    self.emit(r.chain, r.instance_id, p, outcome, out);
                }
            }
            RECORD_CLOSE => {
                if let Some(mut p) = self.open.remove(&(r.chain, r.instance_id)) {
                    p.last_ns = p.last_ns.max(r.end_ns);
                    let outcome = match r.stage {
                        CLOSE_TIMEOUT => Outcome::TimedOut,
                        CLOSE_REPLACED => Outcome::Replaced,
                        CLOSE_ABORTED => Outcome::Aborted,
                        _ => Outcome::Incomplete,
                    };
                    self.emit(r.chain, r.instance_id, p, outcome, out);
                }
            }
            _ => {}
        }
    }

    fn emit(&mut self, chain: u8, id: u64, p: Partial, outcome: Outcome, out: &mut impl FnMut(ChainRecord)) {
        self.stats.emitted += 1;
        if outcome == Outcome::Incomplete {
            self.stats.incomplete += 1;
        }
        out(ChainRecord {
            chain,
            instance_id: id,
            key: p.key,
            capture: p.capture,
            cpu: p.cpu,
            cause: p.cause,
            start_ns: p.start_ns,
            end_ns: p.last_ns,
            segments: p.segments,
            outcome,
            session: None,
            labels: Vec::new(),
        });
    }

    /// Emit as `Incomplete` every partial instance idle for longer than its chain's timeout,
    /// measured against `now_ns` (or the newest record seen when `now_ns` is older).
    pub fn evict(&mut self, now_ns: u64, out: &mut impl FnMut(ChainRecord)) {
        let now = now_ns.max(self.latest_ns);
        let shapes = &self.shapes;
        let stale: Vec<(u8, u64)> = self
            .open
            .iter()
            .filter(|((chain, _), p)| {
                let timeout = shapes.get(*chain as usize).and_then(Option::as_ref).map_or(0, |s| s.timeout_ns);
                now.saturating_sub(p.last_ns) > timeout
            })
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(p) = self.open.remove(&k) {
                self.stats.evicted += 1;
                self.emit(k.0, k.1, p, Outcome::Incomplete, out);
            }
        }
    }

    /// Emit the least recently extended tenth of the held instances as `Incomplete`, so the
    /// cap is not hit again on the very next record.
    fn evict_oldest(&mut self, out: &mut impl FnMut(ChainRecord)) {
        let mut ages: Vec<(u64, (u8, u64))> = self.open.iter().map(|(k, p)| (p.last_ns, *k)).collect();
        let n = (ages.len() / 10).max(1);
        if n < ages.len() {
            ages.select_nth_unstable(n);
        }
        for (_, k) in ages.into_iter().take(n) {
            if let Some(p) = self.open.remove(&k) {
                self.stats.evicted_over_cap += 1;
                self.emit(k.0, k.1, p, Outcome::Incomplete, out);
            }
        }
    }

    /// Give back table memory after a burst (hashbrown never shrinks on its own).
    pub fn shrink(&mut self) {
        if self.open.capacity() > 1024 && self.open.capacity() > 4 * self.open.len() {
            self.open.shrink_to(2 * self.open.len());
        }
    }

    /// Emit everything still open as `Incomplete` (shutdown).
    pub fn flush(&mut self, out: &mut impl FnMut(ChainRecord)) {
        self.evict(u64::MAX, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(stages: &[&str]) -> Option<ChainShape> {
        Some(ChainShape {
            name: "c".into(),
            stages: stages.iter().map(|s| s.to_string()).collect(),
            timeout_ns: 1000,
            causes: Vec::new(),
        })
    }

    fn seg(id: u64, stage: u8, start: u64, end: u64) -> Record {
        Record {
            kind: RECORD_SEGMENT,
            chain: 0,
            stage,
            instance_id: id,
            start_ns: start,
            end_ns: end,
            ..Default::default()
        }
    }

    #[test]
    fn a_chain_completes_with_its_last_segment() {
        let mut a = RecordAssembler::new(vec![shape(&["a", "b", "c"])]);
        let mut got = Vec::new();
        a.push(&seg(7, 1, 100, 150), &mut |r| got.push(r));
        assert!(got.is_empty());
        a.push(&seg(7, 2, 150, 400), &mut |r| got.push(r));
        assert_eq!(got.len(), 1);
        let r = &got[0];
        assert_eq!((r.outcome, r.start_ns, r.end_ns, r.total_ns()), (Outcome::Completed, 100, 400, 300));
        assert_eq!(r.segments.iter().map(Segment::duration_ns).collect::<Vec<_>>(), [50, 250]);
        assert_eq!(a.open_instances(), 0);
    }

    #[test]
    fn a_lost_first_segment_makes_the_chain_incomplete() {
        let mut a = RecordAssembler::new(vec![shape(&["a", "b", "c"])]);
        let mut got = Vec::new();
        a.push(&seg(7, 2, 150, 400), &mut |r| got.push(r));
        assert_eq!(got[0].outcome, Outcome::Incomplete);
    }

    #[test]
    fn a_close_emits_what_was_recorded_with_its_reason() {
        let mut a = RecordAssembler::new(vec![shape(&["a", "b", "c"])]);
        let mut got = Vec::new();
        a.push(&seg(1, 1, 0, 10), &mut |r| got.push(r));
        let close = Record {
            kind: RECORD_CLOSE,
            stage: CLOSE_TIMEOUT,
            instance_id: 1,
            start_ns: 0,
            end_ns: 5000,
            ..Default::default()
        };
        a.push(&close, &mut |r| got.push(r));
        assert_eq!(got[0].outcome, Outcome::TimedOut);
        assert_eq!(got[0].segments.len(), 1);
        // A close for an instance with no recorded segment emits nothing.
        let close = Record { kind: RECORD_CLOSE, stage: CLOSE_REPLACED, instance_id: 2, ..Default::default() };
        a.push(&close, &mut |r| got.push(r));
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn idle_partials_are_evicted_after_the_timeout() {
        let mut a = RecordAssembler::new(vec![shape(&["a", "b", "c"])]);
        let mut got = Vec::new();
        a.push(&seg(1, 1, 0, 10), &mut |r| got.push(r));
        a.evict(500, &mut |r| got.push(r));
        assert!(got.is_empty());
        a.evict(2000, &mut |r| got.push(r));
        assert_eq!(got[0].outcome, Outcome::Incomplete);
        assert_eq!(a.stats.evicted, 1);
    }

    #[test]
    fn a_one_segment_chain_is_emitted_without_being_held() {
        let mut a = RecordAssembler::new(vec![shape(&["a", "b"])]);
        let mut got = Vec::new();
        a.push(&seg(3, 1, 10, 60), &mut |r| got.push(r));
        assert_eq!((got[0].outcome, got[0].total_ns(), a.open_instances()), (Outcome::Completed, 50, 0));
    }

    #[test]
    fn past_the_cap_the_least_recently_extended_partials_are_emitted() {
        let mut a = RecordAssembler::with_max_open(vec![shape(&["a", "b", "c"])], 10);
        let mut got = Vec::new();
        for id in 0..25u64 {
            a.push(&seg(id, 1, id * 100, id * 100 + 10), &mut |r| got.push(r));
            assert!(a.open_instances() <= 10);
        }
        assert_eq!(a.stats.evicted_over_cap as usize, got.len());
        assert!(got.len() >= 15 && got.iter().all(|r| r.outcome == Outcome::Incomplete));
        // The oldest went first: every instance still held is newer than every one emitted.
        let newest_emitted = got.iter().map(|r| r.instance_id).max().unwrap();
        let mut rest = Vec::new();
        a.flush(&mut |r| rest.push(r.instance_id));
        assert!(rest.iter().all(|id| *id > newest_emitted), "{rest:?} vs {newest_emitted}");
    }

    #[test]
    fn records_of_unconfigured_chains_are_counted_not_assembled() {
        let mut a = RecordAssembler::new(vec![None]);
        a.push(&seg(1, 1, 0, 10), &mut |_| panic!("nothing to emit"));
        assert_eq!(a.stats.unknown_chain, 1);
    }
}
