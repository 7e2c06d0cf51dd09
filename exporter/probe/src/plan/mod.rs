//! The attach plan: every configured chain, stage, probe point and candidate target, resolved
//! against a kernel's facts before anything is attached.
//!
//! A candidate is `Ready` (it exists and its key resolves), `Missing` (the tracepoint or
//! function does not exist here), `Unusable` (it exists but cannot be attached this way: kprobes
//! not built in, notrace, no BTF) or, after attaching, `Attached` / `Failed`. A probe point
//! whose every candidate is `Missing`, or a key that does not resolve, is a configuration error:
//! nothing is attached. A stage with no usable point disables its chain only.
//!
//! This module is the model; [`spec`] is what is planned, [`resolve`] decides each candidate's
//! status against the kernel, [`store`] where each chain keeps its open instances, and
//! [`slots`] what each attached slot program is told to do.

pub mod resolve;
pub mod slots;
pub mod spec;
pub mod store;

use std::fmt;

use clockpath_common::{
    limits::{HIST_ROWS_PER_CHAIN, TOTAL_ROW},
    slot::ValueSpec,
};
use clockpath_offline::chain::ChainShape;
use serde::Serialize;

pub use resolve::{CLOCKSOURCE_READ_FUNCTIONS, resolve};
pub use spec::{ChainSpec, PlanIssue, PointSpec, StageSpec, TargetSpec};
pub use store::{KeyBound, Store, direct_entries};

use crate::target::Target;

/// One attach target of a probe point and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    #[serde(serialize_with = "display")]
    pub target: Target,
    /// The key expression as written.
    pub key: String,
    pub status: Status,
    #[serde(skip)]
    pub key0: ValueSpec,
    #[serde(skip)]
    pub key1: ValueSpec,
    #[serde(skip)]
    pub capture: ValueSpec,
    /// Kernel address of the probed function (for match-capture stages).
    #[serde(skip)]
    pub func_addr: u64,
    /// Tracepoints: bytes of the record (end of its last field), to pick a slot family whose
    /// direct-load window fits.
    #[serde(skip)]
    pub record_size: u32,
    /// A hit counts only when every condition holds: `(value & mask) == operand`, or `!=`
    /// when negated.
    #[serde(skip)]
    pub conditions: Vec<CondPlan>,
    /// The slot this candidate's program uses, reserved before the object is loaded (its
    /// role is in the object's read-only data).
    #[serde(skip)]
    pub slot: Option<u32>,
    /// The slot whose program also plays this candidate's role (`SlotConfig::also`): when that
    /// program is attached, this candidate attaches no program of its own.
    #[serde(skip)]
    pub host: Option<u32>,
    /// Key space of each key component, when every one is bounded.
    #[serde(skip)]
    pub key_bounds: Option<Vec<KeyBound>>,
}

impl Candidate {
    /// A candidate with nothing resolved yet.
    pub fn new(target: Target, key: String) -> Candidate {
        Candidate {
            target,
            key,
            status: Status::Ready,
            key0: ValueSpec::default(),
            key1: ValueSpec::default(),
            capture: ValueSpec::default(),
            func_addr: 0,
            record_size: 0,
            key_bounds: None,
            conditions: Vec::new(),
            slot: None,
            host: None,
        }
    }
}

/// One resolved filter condition of a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CondPlan {
    pub value: ValueSpec,
    pub mask: u64,
    pub operand: u64,
    pub negate: bool,
}

fn display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Serialized as `{"state": "...", "reason": "..."}` (`"slot": n` when attached).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Exists and resolves; not attached yet.
    Ready,
    /// The tracepoint or function does not exist on this kernel.
    Missing(String),
    /// Exists, but this kernel cannot attach it this way.
    Unusable(String),
    /// Attached to slot `n`.
    Attached(u32),
    /// Loading or attaching failed.
    Failed(String),
    /// A preferred candidate was attached; this one was not needed.
    Standby,
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("state", self.label())?;
        match self {
            Status::Attached(slot) => m.serialize_entry("slot", slot)?,
            Status::Missing(r) | Status::Unusable(r) | Status::Failed(r) => m.serialize_entry("reason", r)?,
            Status::Ready | Status::Standby => {}
        }
        m.end()
    }
}

/// How the reason of a candidate left without a slot begins.
const NO_FREE_SLOT: &str = "no free";

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Missing(_) => "missing",
            Status::Unusable(_) => "unusable",
            Status::Attached(_) => "attached",
            Status::Failed(_) => "failed",
            Status::Standby => "standby",
        }
    }

    /// Unusable only because every slot of its attach kind was taken (`slots::assign`): a
    /// fallback that was not placed, not a target this kernel refuses.
    pub fn lacks_slot(&self) -> bool {
        matches!(self, Status::Unusable(r) if r.starts_with(NO_FREE_SLOT))
    }

    pub fn reason(&self) -> &str {
        match self {
            Status::Missing(r) | Status::Unusable(r) | Status::Failed(r) => r,
            _ => "",
        }
    }
}

/// A probe point: candidates in preference order.
#[derive(Clone, Debug, Serialize)]
pub struct PointPlan {
    /// What the point stands for when a template expanded it (e.g. the clocksource `hpet`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Stage 0 of a chain with causes: the index of this point's cause in `ChainPlan::causes`.
    #[serde(skip)]
    pub cause: Option<u8>,
    pub candidates: Vec<Candidate>,
}

impl PointPlan {
    pub fn attached(&self) -> Option<&Candidate> {
        self.candidates.iter().find(|c| matches!(c.status, Status::Attached(_)))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StagePlan {
    pub name: String,
    pub points: Vec<PointPlan>,
    pub first_hit_only: bool,
    pub match_capture: bool,
    /// The clock the stage stamps its hits with (`monotonic`, `boottime`, `tai`).
    pub clock: String,
    /// Why the stage has no points at all (a template that expanded to nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum ChainState {
    /// Resolved, not attached yet.
    Ready,
    /// Every stage has an attached point.
    Running,
    /// Not running, and why.
    Disabled(String),
    /// Not attached because nothing needs it (interference sources no running chain charges).
    NotNeeded(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct ChainPlan {
    pub name: String,
    /// Index in the kernel maps.
    pub index: u8,
    pub description: String,
    pub timeout_ns: u64,
    pub stages: Vec<StagePlan>,
    pub aborts: Vec<PointPlan>,
    pub state: ChainState,
    pub store: Store,
    /// This plan's stages are the interference sources, not a chain.
    pub kind: PlanKind,
    /// Stage slots charge interference to segments.
    pub charges_interference: bool,
    /// Stage 0 opens an instance on every `sample_every`-th hit per CPU (1: every hit).
    pub sample_every: u32,
    /// The causes stage 0's points open instances with (empty: the chain has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
    /// Chains whose causes come from stage 0's captured value: (value, cause index) for every
    /// value with a cause of its own; any other value opens with cause 0.
    #[serde(skip)]
    pub cause_values: Vec<(u64, u8)>,
}

/// What a plan describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    Chain,
    /// The interference sources (one "stage" per source, points labelled begin/end/switch).
    InterferenceSources,
}

/// Name of the interference-sources plan.
pub const INTERFERENCE_PLAN: &str = "interference";

impl ChainPlan {
    pub fn is_chain(&self) -> bool {
        self.kind == PlanKind::Chain
    }

    /// What chain assembly needs to know about this chain.
    pub fn shape(&self) -> ChainShape {
        ChainShape {
            name: self.name.clone(),
            stages: self.stages.iter().map(|s| s.name.clone()).collect(),
            timeout_ns: self.timeout_ns,
            causes: self.causes.clone(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.state == ChainState::Running
    }

    /// This chain's kernel histogram rows, as `ebpf/src/stage.rs` lays them out: one per
    /// segment (per cause and segment for a chain with causes), and `total` at `TOTAL_ROW` for a
    /// chain of more than one segment.
    pub fn hist_rows(&self) -> Vec<HistRowRef> {
        let n = self.stages.len().saturating_sub(1) as u32;
        let mut rows = Vec::new();
        if self.causes.is_empty() {
            rows.extend((1..=n).map(|seg| HistRowRef { segment: seg as u8, cause: None, row: seg - 1 }));
        } else {
            for cause in 0..self.causes.len() as u32 {
                rows.extend((1..=n).map(|seg| HistRowRef {
                    segment: seg as u8,
                    cause: Some(cause as u8),
                    row: cause * n + seg - 1,
                }));
            }
        }
        if n > 1 {
            rows.push(HistRowRef { segment: 0, cause: None, row: TOTAL_ROW });
        }
        rows.retain(|r| r.row < HIST_ROWS_PER_CHAIN);
        rows
    }
}

/// One kernel histogram row of a chain: `segment` (1-based; 0 for `total`), the cause whose
/// instances it counts (chains with causes), and its index within the chain's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistRowRef {
    pub segment: u8,
    pub cause: Option<u8>,
    pub row: u32,
}

/// Chain shapes indexed by kernel chain index (None for chains that are not running).
pub fn shapes(plans: &[ChainPlan]) -> Vec<Option<ChainShape>> {
    shapes_where(plans, ChainPlan::is_running)
}

/// Shapes of every chain (running or not), indexed by chain index.
pub fn all_shapes(plans: &[ChainPlan]) -> Vec<Option<ChainShape>> {
    shapes_where(plans, |_| true)
}

fn shapes_where(plans: &[ChainPlan], keep: impl Fn(&ChainPlan) -> bool) -> Vec<Option<ChainShape>> {
    let chains: Vec<&ChainPlan> = plans.iter().filter(|p| p.is_chain()).collect();
    let n = chains.iter().map(|p| p.index as usize + 1).max().unwrap_or(0);
    let mut v = vec![None; n];
    for p in chains.into_iter().filter(|p| keep(p)) {
        v[p.index as usize] = Some(p.shape());
    }
    v
}
