//! Raw stage hits → segment and close records, with exactly the kernel's semantics
//! (`ebpf/src/stage.rs`). Used for raw mode, for replayed trace files and for the simulator;
//! the kernel-vs-userspace test feeds both the same hits and compares segments.

use clockpath_common::{
    record::{CLOSE_ABORTED, CLOSE_REPLACED, CLOSE_TIMEOUT, RECORD_CLOSE, RECORD_SEGMENT, Record},
    slot::{FLAG_CAUSES, FLAG_FIRST_HIT_ONLY, FLAG_LAST_STAGE, FLAG_MATCH_CAPTURE, ROLE_ABORT, ROLE_STAGE, SlotConfig},
};

/// What a hit means for its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HitRole {
    pub chain: u8,
    /// Stage index (ignored for aborts).
    pub stage: u8,
    pub abort: bool,
    pub first_hit_only: bool,
    pub last: bool,
    /// With match-capture: the value the stage-0 capture must equal.
    pub match_value: Option<u64>,
    /// 0: never times out.
    pub timeout_ns: u64,
    /// Stage 0 of a chain with causes: the cause its hits open instances with.
    pub cause: u8,
}

impl HitRole {
    /// The role a configured slot plays; `None` for an unconfigured slot.
    pub fn from_slot(cfg: &SlotConfig) -> Option<HitRole> {
        if cfg.role != ROLE_STAGE && cfg.role != ROLE_ABORT {
            return None;
        }
        Some(HitRole {
            chain: cfg.chain,
            stage: cfg.stage,
            abort: cfg.role == ROLE_ABORT,
            first_hit_only: cfg.flags & FLAG_FIRST_HIT_ONLY != 0,
            last: cfg.flags & FLAG_LAST_STAGE != 0,
            match_value: (cfg.flags & FLAG_MATCH_CAPTURE != 0).then_some(cfg.match_value),
            timeout_ns: cfg.timeout_ns,
            cause: if cfg.flags & FLAG_CAUSES != 0 && cfg.stage == 0 { cfg.cause } else { 0 },
        })
    }
}

/// One stage hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub role: HitRole,
    pub key: u64,
    pub ts_ns: u64,
    pub cpu: u32,
    /// Value captured at stage 0 (0 otherwise).
    pub capture: u64,
    /// Stage 0: the cause the kernel opened the instance with, when it is not the role's
    /// (a cause decoded from the captured value, as a raw hit record reports it).
    pub cause: Option<u8>,
}

#[derive(Clone, Copy, Debug)]
struct Inst {
    id: u64,
    start_ns: u64,
    last_ns: u64,
    capture: u64,
    next_stage: u8,
    cause: u8,
}

/// Counters mirroring the kernel's `ChainCounters`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HitStats {
    pub opened: u64,
    pub completed: u64,
    pub timed_out: u64,
    pub replaced: u64,
    pub aborted: u64,
    pub segments: u64,
    pub out_of_order: u64,
    /// Later-stage hits with no open instance on their key (ignored, as the kernel does).
    pub no_instance: u64,
}

#[derive(Default)]
pub struct HitAssembler {
    open: rustc_hash::FxHashMap<(u8, u64), Inst>,
    next_id: u64,
    pub stats: HitStats,
}

impl HitAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply one hit; the records the kernel would have written go to `out`.
    pub fn push(&mut self, hit: &Hit, out: &mut impl FnMut(Record)) {
        let role = &hit.role;
        let k = (role.chain, hit.key);
        let now = hit.ts_ns;
        let close = |inst: &Inst, reason: u8| Record {
            kind: RECORD_CLOSE,
            chain: role.chain,
            stage: reason,
            slot: 0,
            cpu: hit.cpu as u16,
            cause: inst.cause,
            instance_id: inst.id,
            key: hit.key,
            start_ns: inst.start_ns,
            end_ns: now,
            aux: inst.capture,
            ..Default::default()
        };
        let timed_out = |inst: &Inst| role.timeout_ns != 0 && now.wrapping_sub(inst.start_ns) > role.timeout_ns;

        if role.abort {
            if let Some(inst) = self.open.remove(&k) {
                self.stats.aborted += 1;
                out(close(&inst, CLOSE_ABORTED));
            }
            return;
        }
        if role.stage == 0 {
            if let Some(inst) = self.open.get(&k).copied() {
                if timed_out(&inst) {
                    self.stats.timed_out += 1;
                    out(close(&inst, CLOSE_TIMEOUT));
                } else if role.first_hit_only {
                    return;
                } else {
                    self.stats.replaced += 1;
                    out(close(&inst, CLOSE_REPLACED));
                }
            }
            self.next_id += 1;
            self.open.insert(
                k,
                Inst {
                    id: self.next_id,
                    start_ns: now,
                    last_ns: now,
                    capture: hit.capture,
                    next_stage: 1,
                    cause: hit.cause.unwrap_or(role.cause),
                },
            );
            self.stats.opened += 1;
            return;
        }
        let Some(inst) = self.open.get(&k).copied() else {
            self.stats.no_instance += 1;
            return;
        };
        if timed_out(&inst) {
            self.stats.timed_out += 1;
            out(close(&inst, CLOSE_TIMEOUT));
            self.open.remove(&k);
            return;
        }
        if inst.next_stage != role.stage {
            self.stats.out_of_order += 1;
            return;
        }
        if let Some(m) = role.match_value
            && inst.capture != m
        {
            return;
        }
        self.stats.segments += 1;
        out(Record {
            kind: RECORD_SEGMENT,
            chain: role.chain,
            stage: role.stage,
            slot: 0,
            cpu: hit.cpu as u16,
            cause: inst.cause,
            instance_id: inst.id,
            key: hit.key,
            start_ns: inst.last_ns,
            end_ns: now,
            aux: inst.capture,
            ..Default::default()
        });
        if role.last {
            self.stats.completed += 1;
            self.open.remove(&k);
        } else if let Some(i) = self.open.get_mut(&k) {
            i.last_ns = now;
            i.next_stage = role.stage + 1;
        }
    }

    /// Drop instances older than their chain's timeout at `now_ns` (for streams where a key
    /// is never hit again, such as per-instance ids in recorded traces). Returns how many.
    pub fn evict(&mut self, now_ns: u64, timeout_of: impl Fn(u8) -> u64) -> usize {
        let before = self.open.len();
        self.open.retain(|(chain, _), inst| {
            let t = timeout_of(*chain);
            t == 0 || now_ns.saturating_sub(inst.start_ns) <= t
        });
        let n = before - self.open.len();
        self.stats.timed_out += n as u64;
        n
    }

    /// Id of the instance opened last.
    pub fn last_id(&self) -> u64 {
        self.next_id
    }

    /// Instances open right now.
    pub fn open_instances(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(stage: u8, last: bool) -> HitRole {
        HitRole {
            chain: 0,
            stage,
            abort: false,
            first_hit_only: false,
            last,
            match_value: None,
            timeout_ns: 1_000,
            cause: 0,
        }
    }

    fn hit(role: HitRole, key: u64, ts: u64) -> Hit {
        Hit { role, key, ts_ns: ts, cpu: 0, capture: 0, cause: None }
    }

    fn run(hits: &[Hit]) -> (Vec<Record>, HitStats) {
        let mut a = HitAssembler::new();
        let mut out = Vec::new();
        for h in hits {
            a.push(h, &mut |r| out.push(r));
        }
        (out, a.stats)
    }

    #[test]
    fn table_of_kernel_semantics() {
        let (s0, s1, s2) = (role(0, false), role(1, false), role(2, true));
        // (name, hits, expected segments as (stage, start, end), expected closes)
        type Case = (&'static str, Vec<Hit>, Vec<(u8, u64, u64)>, usize);
        let cases: Vec<Case> = vec![
            ("complete", vec![hit(s0, 1, 10), hit(s1, 1, 20), hit(s2, 1, 35)], vec![(1, 10, 20), (2, 20, 35)], 0),
            ("no instance: later stage ignored", vec![hit(s1, 1, 20)], vec![], 0),
            ("other key ignored", vec![hit(s0, 1, 10), hit(s1, 2, 20)], vec![], 0),
            (
                "each stage once",
                vec![hit(s0, 1, 10), hit(s1, 1, 20), hit(s1, 1, 25), hit(s2, 1, 30)],
                vec![(1, 10, 20), (2, 20, 30)],
                0,
            ),
            (
                "skipped stage waits",
                vec![hit(s0, 1, 10), hit(s2, 1, 20), hit(s1, 1, 30), hit(s2, 1, 40)],
                vec![(1, 10, 30), (2, 30, 40)],
                0,
            ),
            ("restart replaces", vec![hit(s0, 1, 10), hit(s0, 1, 15), hit(s1, 1, 20)], vec![(1, 15, 20)], 1),
            ("timeout on later stage", vec![hit(s0, 1, 10), hit(s1, 1, 2000)], vec![], 1),
            ("timeout then reopen", vec![hit(s0, 1, 10), hit(s0, 1, 2000), hit(s1, 1, 2005)], vec![(1, 2000, 2005)], 1),
        ];
        for (name, hits, want, closes) in cases {
            let (out, _) = run(&hits);
            let segs: Vec<_> =
                out.iter().filter(|r| r.kind == RECORD_SEGMENT).map(|r| (r.stage, r.start_ns, r.end_ns)).collect();
            assert_eq!(segs, want, "{name}");
            assert_eq!(out.iter().filter(|r| r.kind == RECORD_CLOSE).count(), closes, "{name}");
        }
    }

    #[test]
    fn first_hit_only_keeps_the_first_open() {
        let s0 = HitRole { first_hit_only: true, ..role(0, false) };
        let (out, st) = run(&[hit(s0, 1, 10), hit(s0, 1, 15), hit(role(1, true), 1, 20)]);
        assert_eq!((out[0].start_ns, out[0].end_ns), (10, 20));
        assert_eq!(st.replaced, 0);
    }

    #[test]
    fn match_capture_skips_other_values() {
        let s1 = HitRole { match_value: Some(0xbeef), ..role(1, true) };
        let open = Hit { capture: 0xbeef, ..hit(role(0, false), 0, 10) };
        let other = Hit { role: HitRole { match_value: Some(0xdead), ..s1 }, ..hit(s1, 0, 12) };
        let (out, _) = run(&[open, other, hit(s1, 0, 20)]);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].start_ns, out[0].end_ns, out[0].aux), (10, 20, 0xbeef));
    }

    #[test]
    fn an_instance_keeps_the_cause_of_the_hit_that_opened_it() {
        let (woken, preempted) = (role(0, false), HitRole { cause: 2, ..role(0, false) });
        let (out, _) = run(&[hit(woken, 1, 10), hit(preempted, 1, 12), hit(role(1, true), 1, 20)]);
        let seg = out.iter().find(|r| r.kind == RECORD_SEGMENT).unwrap();
        assert_eq!((seg.start_ns, seg.cause), (12, 2));
        let closed = out.iter().find(|r| r.kind == RECORD_CLOSE).unwrap();
        assert_eq!(closed.cause, 0, "the replaced instance was opened by a wakeup");
    }

    #[test]
    fn abort_closes() {
        let ab = HitRole { abort: true, ..role(0, false) };
        let (out, st) = run(&[hit(role(0, false), 1, 10), hit(ab, 1, 12), hit(role(1, true), 1, 20)]);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].kind, out[0].stage), (RECORD_CLOSE, CLOSE_ABORTED));
        assert_eq!(st.aborted, 1);
    }
}
