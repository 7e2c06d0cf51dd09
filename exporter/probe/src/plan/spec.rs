//! What the resolver is asked to plan: each chain as configured, defaults applied (a target's
//! key falls back to its point's, then its stage's; a point's filter to its stage's), and the
//! configuration key of every part, so a problem found against the kernel names the key that
//! caused it. The configuration builds these; this crate never reads a config file.

/// One chain to plan.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainSpec {
    pub name: String,
    pub description: String,
    /// An instance older than this is closed as timed out.
    pub timeout_ns: u64,
    /// Charge interference to this chain's segments.
    pub interference: bool,
    /// Stage 0 opens an instance on every `sample_every`-th hit per CPU (1: every hit).
    pub sample_every: u32,
    pub stages: Vec<StageSpec>,
    /// The decoder that turns stage 0's captured value into the instance's cause
    /// (`kernel::kvm_exit::DECODER`), instead of causes named by stage 0's points.
    pub causes_from: Option<String>,
    /// Points that close an open instance without completing it.
    pub aborts: Vec<PointSpec>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StageSpec {
    pub name: String,
    /// Stage 0 only: an instance already open on the key is kept.
    pub first_hit_only: bool,
    /// Stage 0 only: a value stored with the instance.
    pub capture: Option<String>,
    /// A hit counts only when its probed function is the one captured at stage 0.
    pub match_capture: bool,
    /// The clock the stage stamps with (`clockpath_common::slot::CLOCK_NAMES`).
    pub clock: String,
    pub points: Vec<PointSpec>,
}

/// One probe point: its targets in preference order.
#[derive(Clone, Debug, PartialEq)]
pub struct PointSpec {
    /// Configuration key of the point, e.g. `chains.sched_wakeup.stages[0].points[1]`.
    pub at: String,
    pub targets: Vec<TargetSpec>,
    /// `EXPR == VALUE [&& …]`: a hit counts only when it holds (a target's own filter
    /// overrides it).
    pub filter: Option<String>,
    /// Stage 0: the cause instances this point opens are labelled with.
    pub cause: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    /// `kind:name` as written; the name may be a template (`{clocksource_read}`).
    pub attach: String,
    /// The key expression, after defaults (empty when none was given anywhere).
    pub key: String,
    /// This target's own filter, overriding its point's.
    pub filter: Option<String>,
}

/// A problem the resolver found: the configuration key and why. The caller says which file,
/// default or environment variable set that key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanIssue {
    pub key: String,
    pub why: String,
}

impl PlanIssue {
    pub fn at(key: impl Into<String>, why: impl Into<String>) -> PlanIssue {
        PlanIssue { key: key.into(), why: why.into() }
    }
}
