//! What each attached slot program is told to do (its `SlotConfig`: role, chain, stage, key,
//! flags), which slot family a tracepoint candidate can use, and the reverse maps consumers of
//! raw hits need (slot → stage, slot → role).

use std::collections::{BTreeMap, BTreeSet};

use clockpath_common::{
    limits::{NUM_SLOTS, SlotRange, TRACEPOINT_WINDOWS},
    slot::*,
};
use clockpath_offline::chain::hits::HitRole;

use super::{Candidate, ChainPlan, PlanKind, Status, Store};
use crate::target::AttachKind;

impl Candidate {
    /// Slot ranges this candidate can use, in preference order.
    pub fn slot_ranges(&self) -> Vec<SlotRange> {
        if self.target.kind != AttachKind::Tracepoint {
            return vec![self.target.kind.slots()];
        }
        // A family fits when its window lies inside the record. Prefer the smallest window
        // that covers every field the slot reads (no helper call), then any other that fits
        // (fields are probe-read there).
        let fields: Vec<&ValueSpec> = [&self.key0, &self.key1, &self.capture]
            .into_iter()
            .chain(self.conditions.iter().map(|c| &c.value))
            .filter(|v| v.source == SRC_FIELD)
            .collect();
        let fits = |words: u32| words == 0 || 8 + 8 * words <= self.record_size;
        let covers = |words: u32| {
            let end = 8 + 8 * words;
            words > 0
                && !fields.is_empty()
                && fields
                    .iter()
                    .all(|f| f.offset >= 8 && f.offset + f.size as u32 <= end && f.offset % 8 + f.size as u32 <= 8)
        };
        let mut out: Vec<SlotRange> =
            TRACEPOINT_WINDOWS.iter().filter(|(w, _)| fits(*w) && covers(*w)).map(|(_, r)| *r).collect();
        out.extend(TRACEPOINT_WINDOWS.iter().filter(|(w, _)| fits(*w) && !covers(*w)).map(|(_, r)| *r));
        out
    }
}

/// The slot configuration for an attached candidate; `cause`: its point's, on stage 0 of a
/// chain with causes.
pub fn slot_config(
    chain: &ChainPlan,
    stage: Option<usize>,
    cause: Option<u8>,
    cand: &Candidate,
    raw_hits: bool,
) -> SlotConfig {
    let mut flags = 0;
    if raw_hits {
        flags |= FLAG_RAW;
    }
    // Records of one instance must reach userspace in order when it sends more than one.
    if raw_hits || chain.stages.len() > 2 {
        flags |= FLAG_ORDERED;
    }
    if chain.charges_interference {
        flags |= FLAG_INTERFERENCE;
    }
    if !chain.causes.is_empty() {
        flags |= FLAG_CAUSES;
    }
    let mut conditions = [Condition::NONE; MAX_CONDITIONS];
    let mut cond_ne_bits = 0;
    for (i, c) in cand.conditions.iter().take(MAX_CONDITIONS).enumerate() {
        conditions[i] = Condition { value: c.value, mask: c.mask, operand: c.operand };
        if c.negate {
            cond_ne_bits |= cond_ne(i);
        }
    }
    let (role, stage_idx) = match stage {
        Some(i) => {
            let s = &chain.stages[i];
            if s.first_hit_only {
                flags |= FLAG_FIRST_HIT_ONLY;
            }
            if i + 1 == chain.stages.len() {
                flags |= FLAG_LAST_STAGE;
            }
            if s.match_capture {
                flags |= FLAG_MATCH_CAPTURE;
            }
            (ROLE_STAGE, i as u8)
        }
        None => (ROLE_ABORT, 0),
    };
    let (direct_base, direct_range0, direct_range1) = match chain.store {
        Store::Direct { base, range0, range1 } => {
            flags |= FLAG_DIRECT;
            (base, range0, range1)
        }
        Store::Hash => (0, 0, 0),
    };
    SlotConfig {
        role,
        chain: chain.index,
        stage: stage_idx,
        flags,
        direct_base,
        direct_range0,
        direct_range1,
        key0: cand.key0,
        key1: cand.key1,
        capture: if stage == Some(0) { cand.capture } else { ValueSpec::default() },
        timeout_ns: chain.timeout_ns,
        match_value: cand.func_addr,
        conditions,
        sample_every: if stage == Some(0) { chain.sample_every } else { 0 },
        sole_writer: u8::from(stage.is_some_and(|i| chain.stages[i].points.len() == 1)),
        cond_ne: cond_ne_bits,
        cause: if stage == Some(0) { cause.unwrap_or(0) } else { 0 },
        segments: if chain.causes.is_empty() { 0 } else { chain.stages.len().saturating_sub(1) as u8 },
        also: NO_SLOT,
        flags2: if blind_open(chain, stage, cand, raw_hits) { FLAG2_BLIND_OPEN } else { 0 }
            | if stage == Some(0) && !chain.cause_values.is_empty() { FLAG2_CAUSE_BY_CAPTURE } else { 0 }
            | if stamps(chain) { FLAG2_STAMPS } else { 0 },
        clock: stage.map_or(CLOCK_MONOTONIC, |i| clock_index(&chain.stages[i].clock)),
        _pad: [0; 5],
    }
}

/// `CLOCK_*` of a stage's clock name (the configuration checked it).
pub fn clock_index(name: &str) -> u8 {
    CLOCK_NAMES.iter().position(|n| *n == name).map_or(CLOCK_MONOTONIC, |i| i as u8)
}

/// Whether a chain has a stage stamped on another clock than CLOCK_MONOTONIC
/// (`FLAG2_STAMPS`): chains that do not keep no second set of times.
pub fn stamps(chain: &ChainPlan) -> bool {
    chain.stages.iter().any(|s| clock_index(&s.clock) != CLOCK_MONOTONIC)
}

/// Whether stage 0 of `chain` opens instances without reading the entry first
/// (`FLAG2_BLIND_OPEN`): one segment, last hit wins, a `DIRECT` store, and nothing that needs
/// the previous instance (raw mode, sampling, a capture, interference).
fn blind_open(chain: &ChainPlan, stage: Option<usize>, cand: &Candidate, raw_hits: bool) -> bool {
    stage == Some(0)
        && chain.stages.len() == 2
        && !chain.stages[0].first_hit_only
        && !raw_hits
        && chain.sample_every <= 1
        && !chain.charges_interference
        && cand.capture.source == SRC_NONE
        && matches!(chain.store, Store::Direct { .. })
}

/// Reserve a slot for every candidate that may be tried, and give each slot its role: the
/// object's read-only `SLOT_CONFIGS`, which is fixed when the object is loaded, before any
/// program is (so every fallback a point may need has its slot already). Chains go first, then
/// the interference sources, as `Engine::attach` tries them. A candidate that finds no free
/// slot of its kind is unusable, with the reason.
pub fn assign(plans: &mut [ChainPlan], raw_hits: bool) -> Vec<SlotConfig> {
    let mut configs = vec![SlotConfig::NONE; NUM_SLOTS as usize];
    let mut used = BTreeSet::new();
    let order: Vec<usize> = (0..plans.len())
        .filter(|&i| plans[i].is_chain())
        .chain((0..plans.len()).filter(|&i| !plans[i].is_chain()))
        .collect();
    for i in order {
        let snapshot = plans[i].clone();
        let plan = &mut plans[i];
        let mut reserve = |cands: &mut [Candidate], role: &dyn Fn(&Candidate) -> SlotConfig| {
            for c in cands.iter_mut().filter(|c| c.status == Status::Ready) {
                let free =
                    c.slot_ranges().into_iter().find_map(|r| (r.base..r.base + r.count).find(|s| !used.contains(s)));
                match free {
                    Some(slot) => {
                        used.insert(slot);
                        configs[slot as usize] = role(c);
                        c.slot = Some(slot);
                    }
                    None => {
                        let kind = c.target.kind;
                        c.status = Status::Unusable(format!(
                            "{} {kind} slot (the object has {}, and every one is taken by another candidate)",
                            super::NO_FREE_SLOT,
                            kind.slots().count
                        ))
                    }
                }
            }
        };
        if plan.kind == PlanKind::InterferenceSources {
            for (source, stage) in plan.stages.iter_mut().enumerate() {
                for point in &mut stage.points {
                    let label = point.label.clone().unwrap_or_default();
                    reserve(&mut point.candidates, &|c| interference_slot_config(source, &label, c));
                }
            }
            continue;
        }
        for (s, stage) in plan.stages.iter_mut().enumerate() {
            for point in &mut stage.points {
                let cause = point.cause;
                reserve(&mut point.candidates, &|c| slot_config(&snapshot, Some(s), cause, c, raw_hits));
            }
        }
        for point in &mut plan.aborts {
            reserve(&mut point.candidates, &|c| slot_config(&snapshot, None, None, c, raw_hits));
        }
    }
    for plan in plans.iter_mut().filter(|p| p.is_chain()) {
        share_programs(plan, &mut configs);
    }
    configs
}

/// Kinds whose programs carry a second role's code (`SlotConfig::also`).
fn shares_programs(kind: AttachKind) -> bool {
    matches!(kind, AttachKind::Tracepoint | AttachKind::TpBtf | AttachKind::RawTracepoint)
}

/// Points of one chain that attach to the same target share a program: the first one's program
/// also plays the second's role (`SlotConfig::also`; the second candidate's `host`), one
/// program and one dispatch per hit instead of two. Only each point's first ready candidate
/// pairs: it is the one its point attaches unless it fails, and a candidate whose point
/// attached an earlier one must not run through another program. A tracepoint pair must use
/// one slot family (the host's program copies its family's window of the record). Pairs stay
/// within a chain, so a chain that is disabled releases both roles together.
fn share_programs(plan: &mut ChainPlan, configs: &mut [SlotConfig]) {
    let firsts: Vec<(usize, usize, String, u32)> = plan
        .stages
        .iter()
        .map(|s| &s.points)
        .chain(std::iter::once(&plan.aborts))
        .enumerate()
        .flat_map(|(s, points)| points.iter().enumerate().map(move |(p, pt)| (s, p, pt)))
        .filter_map(|(s, p, pt)| {
            let c = pt.candidates.iter().find(|c| c.status == Status::Ready)?;
            let slot = c.slot?;
            shares_programs(c.target.kind).then(|| (s, p, c.target.to_string(), slot))
        })
        .collect();
    let family = |slot: u32| TRACEPOINT_WINDOWS.iter().position(|(_, r)| (r.base..r.base + r.count).contains(&slot));
    let mut guests: Vec<(usize, usize, u32)> = Vec::new();
    for (i, host) in firsts.iter().enumerate() {
        if configs[host.3 as usize].also != NO_SLOT || guests.iter().any(|g| g.2 == host.3) {
            continue;
        }
        let guest = firsts[i + 1..].iter().find(|g| {
            g.2 == host.2
                && (g.0, g.1) != (host.0, host.1)
                && family(g.3) == family(host.3)
                && !guests.iter().any(|x| x.2 == g.3)
        });
        if let Some(g) = guest {
            configs[host.3 as usize].also = g.3 as u8;
            guests.push((g.0, g.1, g.3));
        }
    }
    let n = plan.stages.len();
    for (s, p, slot) in guests {
        let host = configs.iter().position(|c| c.also as u32 == slot).map(|h| h as u32);
        let point = if s < n { &mut plan.stages[s].points[p] } else { &mut plan.aborts[p] };
        if let Some(c) = point.candidates.iter_mut().find(|c| c.slot == Some(slot)) {
            c.host = host;
        }
    }
}

/// The slot configuration of an interference point: `source` is the source index, `label` the
/// point's role (begin, end or switch).
pub fn interference_slot_config(source: usize, label: &str, cand: &Candidate) -> SlotConfig {
    let role = match label {
        "begin" => ROLE_INTERFERENCE_BEGIN,
        "end" => ROLE_INTERFERENCE_END,
        _ => ROLE_INTERFERENCE_SWITCH,
    };
    SlotConfig { role, stage: source as u8, key0: cand.key0, key1: cand.key1, ..SlotConfig::NONE }
}

/// Slot → (chain index, stage name) of every attached stage candidate (raw-hit recording).
pub fn slot_stages(plans: &[ChainPlan]) -> BTreeMap<u32, (u8, String)> {
    let mut out = BTreeMap::new();
    for p in plans.iter().filter(|p| p.is_chain()) {
        for s in &p.stages {
            for c in s.points.iter().flat_map(|pt| &pt.candidates) {
                if let Status::Attached(slot) = c.status {
                    out.insert(slot, (p.index, s.name.clone()));
                }
            }
        }
    }
    out
}

/// Role of every attached slot, for consumers of raw hits.
pub fn slot_roles(plans: &[ChainPlan], raw_hits: bool) -> BTreeMap<u32, HitRole> {
    let mut roles = BTreeMap::new();
    for chain in plans.iter().filter(|p| p.is_running()) {
        let stages = chain.stages.iter().enumerate().map(|(i, s)| (Some(i), &s.points));
        for (stage, points) in stages.chain(std::iter::once((None, &chain.aborts))) {
            for p in points {
                for c in &p.candidates {
                    if let Status::Attached(slot) = c.status
                        && let Some(role) = HitRole::from_slot(&slot_config(chain, stage, p.cause, c, raw_hits))
                    {
                        roles.insert(slot, role);
                    }
                }
            }
        }
    }
    roles
}
