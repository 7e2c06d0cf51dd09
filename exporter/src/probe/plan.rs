//! The attach plan: every configured chain, stage, probe point and candidate target, resolved
//! against the running kernel before anything is attached.
//!
//! A candidate is `Ready` (it exists and its key resolves), `Missing` (the tracepoint or
//! function does not exist here), `Unusable` (it exists but cannot be attached this way: kprobes
//! not built in, notrace, no BTF) or, after attaching, `Attached` / `Failed`. A probe point
//! whose every candidate is `Missing`, or a key that does not resolve, is a configuration error:
//! nothing is attached. A stage with no usable point disables its chain only.

use std::fmt;

use clockpath_common::{
    limits::{MAX_DIRECT_ENTRIES, SOFTIRQ_VECTORS, SlotRange, TRACEPOINT_WINDOWS},
    slot::*,
};
use serde::Serialize;

use super::{
    kernel::Kernel,
    target::{AttachKind, Target},
    value::{KeyExpr, ValueExpr},
};
use crate::config::{ChainConfig, ConfigIssue, Loaded, PointConfig, TargetConfig, chains::parse_filter, suggest};

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
    /// A hit counts only when `filter` evaluates to `filter_value`.
    #[serde(skip)]
    pub filter: ValueSpec,
    #[serde(skip)]
    pub filter_value: u64,
    /// Key space of each key component, when every one is bounded.
    #[serde(skip)]
    pub key_bounds: Option<Vec<KeyBound>>,
}

/// A key component with a known small range, so its chain can keep instances in an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyBound {
    One,
    Cpu,
    Pid,
    SoftirqVector,
}

impl KeyBound {
    /// Values are below this.
    pub fn range(self) -> u32 {
        match self {
            KeyBound::One => 1,
            KeyBound::Cpu => super::kernel::nr_cpu_ids(),
            KeyBound::Pid => super::kernel::pid_max(),
            KeyBound::SoftirqVector => SOFTIRQ_VECTORS,
        }
    }

    /// The bound of a value expression, judged by what it reads (a field or member named
    /// `pid`, `next_pid`, `cpu`, `vec`…); None when it may be any 64-bit value.
    pub fn of(v: &ValueExpr) -> Option<KeyBound> {
        let by_name = |n: &str| match n {
            "pid" | "tid" | "tgid" | "next_pid" | "prev_pid" | "child_pid" | "parent_pid" => Some(KeyBound::Pid),
            "cpu" | "target_cpu" | "orig_cpu" | "dest_cpu" => Some(KeyBound::Cpu),
            "vec" | "vec_nr" => Some(KeyBound::SoftirqVector),
            _ => None,
        };
        match v {
            ValueExpr::Cpu => Some(KeyBound::Cpu),
            ValueExpr::Tid | ValueExpr::Tgid => Some(KeyBound::Pid),
            ValueExpr::Global => Some(KeyBound::One),
            ValueExpr::Field(n) => by_name(n),
            ValueExpr::Arg { deref: Some(d), .. } | ValueExpr::Ret { deref: Some(d) } => {
                d.path.last().and_then(|n| by_name(n))
            }
            _ => None,
        }
    }
}

/// Where a chain keeps its open instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Store {
    /// The INSTANCES hash map (any key).
    Hash,
    /// DIRECT[base + k0 * range1 + k1].
    Direct { base: u32, range0: u32, range1: u32 },
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
            filter: ValueSpec::default(),
            filter_value: 0,
        }
    }

    /// Slot ranges this candidate can use, in preference order.
    pub fn slot_ranges(&self) -> Vec<SlotRange> {
        if self.target.kind != AttachKind::Tracepoint {
            return vec![self.target.kind.slots()];
        }
        // A family fits when its window lies inside the record. Prefer the smallest window
        // that covers every field the slot reads (no helper call), then any other that fits
        // (fields are probe-read there).
        let fields: Vec<&ValueSpec> =
            [&self.key0, &self.key1, &self.capture].into_iter().filter(|v| v.source == SRC_FIELD).collect();
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

/// Interference sources and their targets in preference order, as (begin, end) or switch
/// points: (label, [(target, key)]).
type SourcePoints = &'static [(&'static str, &'static [(&'static str, &'static str)])];
const SOURCES: [(&str, SourcePoints); clockpath_common::interference::SOURCES] = [
    (
        "irq",
        &[
            ("begin", &[("tp_btf:irq_handler_entry", "global"), ("tracepoint:irq:irq_handler_entry", "global")]),
            ("end", &[("tp_btf:irq_handler_exit", "global"), ("tracepoint:irq:irq_handler_exit", "global")]),
        ],
    ),
    (
        "softirq",
        &[
            ("begin", &[("tp_btf:softirq_entry", "global"), ("tracepoint:irq:softirq_entry", "global")]),
            ("end", &[("tp_btf:softirq_exit", "global"), ("tracepoint:irq:softirq_exit", "global")]),
        ],
    ),
    (
        "sched",
        &[(
            "switch",
            &[("tp_btf:sched_switch", "arg1->pid,arg2->pid"), ("tracepoint:sched:sched_switch", "prev_pid,next_pid")],
        )],
    ),
    (
        "hrtimer",
        &[
            (
                "begin",
                &[("tp_btf:hrtimer_expire_entry", "global"), ("tracepoint:timer:hrtimer_expire_entry", "global")],
            ),
            ("end", &[("tp_btf:hrtimer_expire_exit", "global"), ("tracepoint:timer:hrtimer_expire_exit", "global")]),
        ],
    ),
    (
        "kvm",
        &[
            ("begin", &[("tp_btf:kvm_exit", "global"), ("tracepoint:kvm:kvm_exit", "global")]),
            ("end", &[("tp_btf:kvm_entry", "global"), ("tracepoint:kvm:kvm_entry", "global")]),
        ],
    ),
];

impl ChainPlan {
    pub fn is_chain(&self) -> bool {
        self.kind == PlanKind::Chain
    }

    /// What chain assembly needs to know about this chain.
    pub fn shape(&self) -> crate::chain::ChainShape {
        crate::chain::ChainShape {
            name: self.name.clone(),
            stages: self.stages.iter().map(|s| s.name.clone()).collect(),
            timeout_ns: self.timeout_ns,
        }
    }

    pub fn is_running(&self) -> bool {
        self.state == ChainState::Running
    }
}

/// Read functions of well-known clocksources (`{clocksource_read}` template).
pub const CLOCKSOURCE_READ_FUNCTIONS: &[(&str, &str)] = &[
    ("tsc", "read_tsc"),
    ("tsc-early", "read_tsc"),
    ("hpet", "read_hpet"),
    ("acpi_pm", "acpi_pm_read"),
    ("kvm-clock", "kvm_clock_get_cycles"),
    ("jiffies", "jiffies_read"),
    ("refined-jiffies", "jiffies_read"),
    ("hyperv_clocksource_tsc_page", "read_hv_clock_tsc_cs"),
    ("hyperv_clocksource_msr", "read_hv_clock_msr_cs"),
    ("xen", "xen_clocksource_get_cycles"),
    ("arch_sys_counter", "arch_counter_read"),
];

const CLOCKSOURCE_DIR: &str = "/sys/devices/system/clocksource/clocksource0";

/// Registered clocksources: the available ones plus the current one.
pub fn registered_clocksources() -> Vec<String> {
    let read = |f: &str| std::fs::read_to_string(format!("{CLOCKSOURCE_DIR}/{f}")).unwrap_or_default();
    let mut v: Vec<String> = read("available_clocksource").split_whitespace().map(str::to_string).collect();
    let cur = read("current_clocksource").trim().to_string();
    if !cur.is_empty() && !v.contains(&cur) {
        v.push(cur);
    }
    v
}

/// Resolve every enabled chain of the config against the kernel.
pub fn resolve(loaded: &Loaded, kernel: &Kernel) -> Result<Vec<ChainPlan>, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let mut plans = Vec::new();
    for (index, (name, chain)) in loaded.config.enabled_chains().enumerate() {
        let r = Resolver { loaded, kernel, chain_name: name, issues: &mut issues };
        plans.push(r.chain(index as u8, chain));
    }
    assign_stores(&mut plans);
    if loaded.config.enabled_chains().any(|(_, c)| c.interference) {
        let r = Resolver { loaded, kernel, chain_name: INTERFERENCE_PLAN, issues: &mut issues };
        plans.push(r.interference_sources());
    }
    if issues.is_empty() { Ok(plans) } else { Err(issues) }
}

/// Give each chain whose every key component is bounded, the same way on every target, an
/// array region; the others use the hash map.
fn assign_stores(plans: &mut [ChainPlan]) {
    let mut next = 0u32;
    for plan in plans.iter_mut() {
        let cands = plan
            .stages
            .iter()
            .flat_map(|s| s.points.iter())
            .chain(plan.aborts.iter())
            .flat_map(|p| p.candidates.iter())
            .filter(|c| !matches!(c.status, Status::Missing(_)));
        let mut bounds: Option<Vec<KeyBound>> = None;
        let mut ok = true;
        for c in cands {
            match (&c.key_bounds, &bounds) {
                (None, _) => ok = false,
                (Some(b), None) => bounds = Some(b.clone()),
                (Some(b), Some(prev)) => ok &= b == prev,
            }
        }
        plan.store = Store::Hash;
        let Some(bounds) = bounds.filter(|_| ok) else {
            continue;
        };
        let range0 = bounds[0].range();
        let range1 = bounds.get(1).map_or(1, |b| b.range());
        let size = range0.saturating_mul(range1);
        if next.saturating_add(size) <= MAX_DIRECT_ENTRIES {
            plan.store = Store::Direct { base: next, range0, range1 };
            next += size;
        }
    }
}

/// Entries the DIRECT array needs for these plans (at least 1).
pub fn direct_entries(plans: &[ChainPlan]) -> u32 {
    plans
        .iter()
        .map(|p| match p.store {
            Store::Direct { base, range0, range1 } => base + range0 * range1,
            Store::Hash => 0,
        })
        .max()
        .unwrap_or(0)
        .max(1)
}

struct Resolver<'a> {
    loaded: &'a Loaded,
    kernel: &'a Kernel,
    chain_name: &'a str,
    issues: &'a mut Vec<ConfigIssue>,
}

impl Resolver<'_> {
    /// The interference sources, as a plan whose stages are the sources. Missing targets (no
    /// kvm module, say) only leave a source unavailable.
    fn interference_sources(mut self) -> ChainPlan {
        let mut stages = Vec::new();
        for (name, points) in SOURCES {
            let mut pts = Vec::new();
            for (label, targets) in points {
                let pc = PointConfig {
                    targets: targets
                        .iter()
                        .map(|(t, k)| TargetConfig { attach: t.to_string(), key: Some(k.to_string()) })
                        .collect(),
                    key: None,
                    filter: None,
                };
                let ctx = PointCtx { stage_key: None, capture: None, filter: None, optional: true };
                pts.push(self.point(&format!("interference.{name}"), name, Some(label.to_string()), &pc, ctx));
            }
            stages.push(StagePlan {
                name: name.to_string(),
                points: pts,
                first_hit_only: false,
                match_capture: false,
                empty_reason: None,
            });
        }
        ChainPlan {
            name: INTERFERENCE_PLAN.into(),
            index: u8::MAX,
            description: "Interference sources charged to the segments of chains with `interference = true`".into(),
            timeout_ns: 0,
            stages,
            aborts: Vec::new(),
            state: ChainState::Ready,
            store: Store::Hash,
            kind: PlanKind::InterferenceSources,
            charges_interference: false,
        }
    }

    fn chain(mut self, index: u8, chain: &ChainConfig) -> ChainPlan {
        let at = format!("chains.{}", self.chain_name);
        let mut stages = Vec::new();
        for (i, stage) in chain.stages.iter().enumerate() {
            let sat = format!("{at}.stages[{i}]");
            let capture = if i == 0 { stage.capture.as_deref() } else { None };
            let mut points = Vec::new();
            let mut empty_reason = None;
            for (j, point) in stage.point_list().iter().enumerate() {
                let pat = if stage.points.is_empty() { sat.clone() } else { format!("{sat}.points[{j}]") };
                let expanded = self.expand(point);
                if expanded.is_empty() {
                    empty_reason = Some(format!(
                        "no registered clocksource has a known read function (registered: {})",
                        registered_clocksources().join(", ")
                    ));
                }
                for (label, point) in expanded {
                    let filter = point.filter.clone().or_else(|| stage.filter.clone());
                    let ctx = PointCtx {
                        stage_key: stage.key.as_deref(),
                        capture,
                        filter: filter.as_deref(),
                        optional: false,
                    };
                    points.push(self.point(&pat, &stage.name, label, &point, ctx));
                }
            }
            stages.push(StagePlan {
                name: stage.name.clone(),
                points,
                first_hit_only: stage.first_hit_only,
                match_capture: stage.match_capture,
                empty_reason,
            });
        }
        let aborts = chain
            .abort
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let ctx = PointCtx { stage_key: None, capture: None, filter: p.filter.as_deref(), optional: false };
                self.point(&format!("{at}.abort[{j}]"), "abort", None, p, ctx)
            })
            .collect();
        ChainPlan {
            name: self.chain_name.to_string(),
            index,
            description: chain.description.clone(),
            timeout_ns: chain.timeout_ms.saturating_mul(1_000_000),
            stages,
            aborts,
            state: ChainState::Ready,
            store: Store::Hash,
            kind: PlanKind::Chain,
            charges_interference: chain.interference,
        }
    }

    /// Expand `{clocksource_read}` into one point per registered clocksource.
    fn expand(&self, point: &PointConfig) -> Vec<(Option<String>, PointConfig)> {
        if !point.targets.iter().any(|t| t.attach.contains("{clocksource_read}")) {
            return vec![(None, point.clone())];
        }
        let mut out: Vec<(Option<String>, PointConfig)> = Vec::new();
        for cs in registered_clocksources() {
            let Some((_, func)) = CLOCKSOURCE_READ_FUNCTIONS.iter().find(|(n, _)| *n == cs) else {
                continue;
            };
            // tsc and tsc-early share a read function: one point.
            if out.iter().any(|(_, p)| p.targets.iter().any(|t| t.attach.ends_with(&format!(":{func}")))) {
                continue;
            }
            let mut p = point.clone();
            for t in &mut p.targets {
                t.attach = t.attach.replace("{clocksource_read}", func);
            }
            out.push((Some(cs), p));
        }
        out
    }

    fn point(&mut self, at: &str, stage: &str, label: Option<String>, point: &PointConfig, ctx: PointCtx) -> PointPlan {
        let PointCtx { stage_key, capture, filter, optional } = ctx;
        let mut candidates = Vec::new();
        for (k, t) in point.targets.iter().enumerate() {
            let tat = format!("{at}.targets[{k}]");
            // Syntax was checked with the config; a failure here means a template expanded badly.
            let Ok(target) = t.attach.parse::<Target>() else {
                self.issues
                    .push(self.loaded.issue(&tat, format!("stage `{stage}`: cannot parse target `{}`", t.attach)));
                continue;
            };
            let key = t
                .key
                .clone()
                .or_else(|| point.key.clone())
                .or_else(|| stage_key.map(str::to_string))
                .unwrap_or_default();
            let mut cand = Candidate::new(target.clone(), key.clone());
            if let Err(reason) = self.exists(&target) {
                cand.status = Status::Missing(reason);
                candidates.push(cand);
                continue;
            }
            if target.kind.is_function() {
                cand.func_addr = self.kernel.symbol(&target.name).map(|s| s.addr).unwrap_or(0);
            }
            if target.kind == AttachKind::Tracepoint
                && let Ok(tf) = self.kernel.tracefs()
                && let Ok(format) = tf.format(target.category.as_deref().unwrap_or_default(), &target.name)
            {
                cand.record_size = format.fields.iter().map(|f| f.offset + f.size).max().unwrap_or(0);
            }
            // Keys are resolved even for unusable targets: a wrong key is a config error
            // whichever target ends up attached.
            match KeyExpr::parse(&key) {
                Ok(expr) => {
                    cand.key_bounds = expr.0.iter().map(KeyBound::of).collect();
                    let specs: Vec<_> = expr.0.iter().map(|v| self.value(&target, v)).collect();
                    for (n, s) in specs.into_iter().enumerate() {
                        match s {
                            Ok(Some(spec)) => {
                                if n == 0 {
                                    cand.key0 = spec
                                } else {
                                    cand.key1 = spec
                                }
                            }
                            Ok(None) => {}
                            Err(KeyError::Config(why)) => self.issues.push(
                                self.loaded
                                    .issue(&tat, format!("stage `{stage}`: target `{target}`: key `{key}`: {why}")),
                            ),
                            Err(KeyError::Unusable(why)) => cand.status = Status::Unusable(why),
                        }
                    }
                }
                Err(e) => self.issues.push(self.loaded.issue(&tat, format!("stage `{stage}`: key: {e}"))),
            }
            if let Some(cap) = capture {
                match ValueExpr::parse(cap)
                    .map_err(|e| KeyError::Config(e.to_string()))
                    .and_then(|v| self.value(&target, &v))
                {
                    Ok(Some(spec)) => cand.capture = spec,
                    Ok(None) => {}
                    Err(KeyError::Config(why)) => self.issues.push(self.loaded.issue(
                        format!("{at}.capture"),
                        format!("stage `{stage}`: target `{target}`: capture `{cap}`: {why}"),
                    )),
                    Err(KeyError::Unusable(why)) => cand.status = Status::Unusable(why),
                }
            }
            if let Some(f) = filter {
                match parse_filter(f)
                    .map_err(KeyError::Config)
                    .and_then(|(v, value)| Ok((self.value(&target, &v)?, value)))
                {
                    Ok((Some(spec), value)) => {
                        cand.filter = spec;
                        cand.filter_value = value;
                    }
                    Ok((None, _)) => {}
                    Err(KeyError::Config(why)) => self.issues.push(
                        self.loaded.issue(format!("{at}.filter"), format!("stage `{stage}`: target `{target}`: {why}")),
                    ),
                    Err(KeyError::Unusable(why)) => cand.status = Status::Unusable(why),
                }
            }
            if cand.status == Status::Ready
                && let Err(why) = self.usable(&target)
            {
                cand.status = Status::Unusable(why);
            }
            candidates.push(cand);
        }
        // Tracepoints are a stable kernel interface: a point whose every target is a missing
        // tracepoint is almost surely a typo, so it stops the run. Functions come and go with
        // inlining and kernel versions, so a missing function only makes its point unusable.
        if !optional
            && !candidates.is_empty()
            && candidates.iter().all(|c| matches!(c.status, Status::Missing(_)) && !c.target.kind.is_function())
        {
            let reasons: Vec<String> =
                candidates.iter().map(|c| format!("{}: {}", c.target, c.status.reason())).collect();
            self.issues.push(self.loaded.issue(
                at,
                format!("stage `{stage}`: none of its targets exists on this kernel ({})", reasons.join("; ")),
            ));
        }
        PointPlan { label, candidates }
    }

    /// Does the tracepoint or function exist on this kernel?
    fn exists(&self, t: &Target) -> Result<(), String> {
        match t.kind {
            AttachKind::Tracepoint => {
                let cat = t.category.as_deref().unwrap_or_default();
                let tracefs = self.kernel.tracefs().map_err(|e| format!("tracefs unavailable: {e}"))?;
                if tracefs.has_event(cat, &t.name) {
                    return Ok(());
                }
                let mut why = format!("tracepoint {cat}:{} missing", t.name);
                let cats = tracefs.categories_of(&t.name);
                if !cats.is_empty() {
                    why.push_str(&format!(" (it exists in category {})", cats.join(", ")));
                } else {
                    let all = tracefs.all_events();
                    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
                    if let Some(s) = suggest(&format!("{cat}:{}", t.name), &refs) {
                        why.push_str(&format!(" (did you mean {s}?)"));
                    }
                }
                Err(why)
            }
            AttachKind::RawTracepoint | AttachKind::TpBtf => {
                let in_btf = self.kernel.btf().map(|b| b.has_tracepoint(&t.name)).ok();
                let in_tracefs = self.kernel.tracefs().map(|tf| !tf.categories_of(&t.name).is_empty()).unwrap_or(false);
                match (in_btf, in_tracefs) {
                    (Some(true), _) | (_, true) => Ok(()),
                    _ => Err(format!("tracepoint {} missing", t.name)),
                }
            }
            _ => {
                let in_kallsyms = self.kernel.symbol(&t.name).is_some();
                let in_btf = self.kernel.btf().map(|b| b.has_function(&t.name)).unwrap_or(false);
                if in_kallsyms || in_btf {
                    Ok(())
                } else {
                    Err(format!(
                        "function {} is not in /proc/kallsyms or the kernel's BTF (inlined, renamed or not built into this kernel)",
                        t.name
                    ))
                }
            }
        }
    }

    /// Can this kernel attach the target this way (before trying)?
    fn usable(&self, t: &Target) -> Result<(), String> {
        let name = &t.name;
        match t.kind {
            AttachKind::Kprobe | AttachKind::Kretprobe => {
                if !self.kernel.kprobe_pmu() {
                    return Err(super::kernel::kprobes_missing_reason());
                }
                match self.kernel.symbol(name) {
                    None => {
                        return Err(format!("{name} is not in /proc/kallsyms (inlined or not built)"));
                    }
                    Some(s) if s.count > 1 => {
                        return Err(format!(
                            "{name} is ambiguous: {} functions share the name in /proc/kallsyms",
                            s.count
                        ));
                    }
                    Some(_) => {}
                }
                if self.kernel.traceable(name) == Some(false) {
                    return Err(format!(
                        "{name} is notrace (not in available_filter_functions); kprobe events refuse it"
                    ));
                }
                Ok(())
            }
            AttachKind::Fentry | AttachKind::Fexit => {
                if self.kernel.traceable(name) == Some(false) {
                    return Err(format!("{name} is notrace (not in available_filter_functions); fentry cannot attach"));
                }
                let btf = self.kernel.btf().map_err(|e| format!("needs the kernel's BTF: {e}"))?;
                if !btf.has_function(name) {
                    return Err(format!("{name} is not in the kernel's BTF"));
                }
                Ok(())
            }
            AttachKind::TpBtf => {
                let btf = self.kernel.btf().map_err(|e| format!("needs the kernel's BTF: {e}"))?;
                if btf.has_tracepoint(name) { Ok(()) } else { Err(format!("no btf_trace_{name} in the kernel's BTF")) }
            }
            AttachKind::Tracepoint | AttachKind::RawTracepoint => Ok(()),
        }
    }

    /// Resolve one value expression for a target into a `ValueSpec`.
    fn value(&self, t: &Target, v: &ValueExpr) -> Result<Option<ValueSpec>, KeyError> {
        let simple = |source| Ok(Some(ValueSpec { source, ..Default::default() }));
        match v {
            ValueExpr::Cpu => simple(SRC_CPU),
            ValueExpr::Tid => simple(SRC_TID),
            ValueExpr::Tgid => simple(SRC_TGID),
            ValueExpr::Global => simple(SRC_GLOBAL),
            ValueExpr::Field(name) => {
                if t.kind != AttachKind::Tracepoint {
                    return Err(KeyError::Config(format!(
                        "`{name}` is a tracepoint field, but {} targets read arguments: use argN",
                        t.kind
                    )));
                }
                let cat = t.category.as_deref().unwrap_or_default();
                let tracefs = self.kernel.tracefs().map_err(|e| KeyError::Unusable(e.to_string()))?;
                let format = tracefs.format(cat, &t.name).map_err(|e| KeyError::Unusable(e.to_string()))?;
                let Some(f) = format.field(name) else {
                    let names: Vec<&str> =
                        format.fields.iter().map(|f| f.name.as_str()).filter(|n| !n.starts_with("common_")).collect();
                    let hint = suggest(name, &names).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
                    return Err(KeyError::Config(format!(
                        "field `{name}` is not in {cat}:{}'s format (fields: {}){hint}",
                        t.name,
                        names.join(", ")
                    )));
                };
                if ![1, 2, 4, 8].contains(&f.size) {
                    return Err(KeyError::Config(format!(
                        "field `{name}` is {} bytes ({}); a key field is 1, 2, 4 or 8 bytes",
                        f.size, f.decl
                    )));
                }
                Ok(Some(ValueSpec { source: SRC_FIELD, size: f.size as u8, arg: 0, flags: 0, offset: f.offset }))
            }
            ValueExpr::Arg { index, deref } => {
                let (what, args) = match t.kind {
                    AttachKind::Tracepoint => {
                        return Err(KeyError::Config(format!(
                            "tracepoint targets key on format fields (e.g. pid), not arg{index}"
                        )));
                    }
                    AttachKind::Kretprobe => {
                        return Err(KeyError::Config("kretprobe targets only see the return value: use ret".into()));
                    }
                    AttachKind::RawTracepoint | AttachKind::TpBtf => {
                        (format!("tracepoint {}", t.name), self.kernel.btf().ok().map(|b| b.tracepoint_args(&t.name)))
                    }
                    _ => (format!("function {}", t.name), self.kernel.btf().ok().map(|b| b.function_args(&t.name))),
                };
                if t.kind == AttachKind::Kprobe && *index > 5 {
                    return Err(KeyError::Config(format!(
                        "kprobe targets read arguments from registers: arg0 to arg5, not arg{index}"
                    )));
                }
                let arg_type = match args {
                    Some(Ok(args)) => {
                        if *index as usize >= args.len() {
                            return Err(KeyError::Config(format!(
                                "{what} has {} argument(s); arg{index} does not exist",
                                args.len()
                            )));
                        }
                        Some(args[*index as usize].clone())
                    }
                    // Without BTF a plain argument still works; a dereference cannot be resolved.
                    _ => None,
                };
                let mut spec = ValueSpec { source: SRC_ARG, size: 8, arg: *index, flags: 0, offset: 0 };
                if let Some(d) = deref {
                    let btf = self
                        .kernel
                        .btf()
                        .map_err(|e| KeyError::Unusable(format!("arg{index}->… needs the kernel's BTF: {e}")))?;
                    let loc = btf
                        .member(&format!("arg{index}"), arg_type, d.cast.as_deref(), &d.path)
                        .map_err(|e| KeyError::Config(e.to_string()))?;
                    spec.flags = VALUE_DEREF;
                    spec.offset = loc.offset;
                    spec.size = loc.size;
                }
                Ok(Some(spec))
            }
            ValueExpr::Ret { deref } => {
                let mut spec = ValueSpec { source: SRC_RET, size: 8, arg: 0, flags: 0, offset: 0 };
                let ret_type = match t.kind {
                    AttachKind::Kretprobe => self.kernel.btf().ok().and_then(|b| b.function_ret(&t.name).ok()),
                    AttachKind::Fexit => {
                        let btf = self.kernel.btf().map_err(|e| KeyError::Unusable(e.to_string()))?;
                        let n = btf.function_args(&t.name).map_err(|e| KeyError::Config(e.to_string()))?.len();
                        spec.arg = n as u8;
                        btf.function_ret(&t.name).ok()
                    }
                    other => {
                        return Err(KeyError::Config(format!(
                            "{other} targets have no return value; ret needs kretprobe or fexit"
                        )));
                    }
                };
                if let Some(d) = deref {
                    let btf = self
                        .kernel
                        .btf()
                        .map_err(|e| KeyError::Unusable(format!("ret->… needs the kernel's BTF: {e}")))?;
                    let loc = btf
                        .member("ret", ret_type, d.cast.as_deref(), &d.path)
                        .map_err(|e| KeyError::Config(e.to_string()))?;
                    spec.flags = VALUE_DEREF;
                    spec.offset = loc.offset;
                    spec.size = loc.size;
                }
                Ok(Some(spec))
            }
        }
    }
}

/// What a probe point inherits from its stage.
struct PointCtx<'a> {
    stage_key: Option<&'a str>,
    capture: Option<&'a str>,
    filter: Option<&'a str>,
    /// A point that may be missing entirely (interference sources).
    optional: bool,
}

enum KeyError {
    /// The expression is wrong for this target: a configuration error.
    Config(String),
    /// The expression cannot be resolved on this kernel (e.g. no BTF): the target is unusable.
    Unusable(String),
}

/// The slot configuration for an attached candidate.
pub fn slot_config(chain: &ChainPlan, stage: Option<usize>, cand: &Candidate, raw_hits: bool) -> SlotConfig {
    let mut flags = 0;
    if raw_hits {
        flags |= FLAG_RAW;
    }
    if chain.charges_interference {
        flags |= FLAG_INTERFERENCE;
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
        filter: cand.filter,
        filter_value: cand.filter_value,
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
    SlotConfig { role, stage: source as u8, key0: cand.key0, key1: cand.key1, ..SlotConfig::default() }
}
