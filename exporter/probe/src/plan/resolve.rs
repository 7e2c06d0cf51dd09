//! The resolver: every candidate target of every configured probe point checked against a
//! kernel's facts (does it exist, can it be attached this way, does its key resolve), with the
//! interference sources and the clocksource read functions `{clocksource_read}` expands to.

use clockpath_common::slot::*;

use super::{
    Candidate, ChainPlan, ChainSpec, ChainState, CondPlan, INTERFERENCE_PLAN, PlanIssue, PlanKind, PointPlan,
    PointSpec, StagePlan, Status, Store, TargetSpec,
    store::{KeyBound, assign_stores},
};
use crate::{
    kernel::kvm_exit,
    kernel::{Kernel, kprobes_missing_reason},
    suggest::closest,
    target::{AttachKind, CLOCKSOURCE_READ, Target},
    value::{Filter, KeyExpr, ValueExpr},
};

/// Interference sources and their targets in preference order, as (begin, end) or switch
/// points: (label, [(target, key)]).
pub(crate) type SourcePoints = &'static [(&'static str, &'static [(&'static str, &'static str)])];
pub(crate) const SOURCES: [(&str, SourcePoints); clockpath_common::interference::SOURCES] = [
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
        // Where kvm is a module its tracepoints are not in vmlinux's BTF (no tp_btf); a raw
        // tracepoint reaches them without a tracepoint slot, which the kvm chain's own stages
        // (they read the exit reason from the record) need.
        &[
            (
                "begin",
                &[
                    ("tp_btf:kvm_exit", "global"),
                    ("raw_tracepoint:kvm_exit", "global"),
                    ("tracepoint:kvm:kvm_exit", "global"),
                ],
            ),
            (
                "end",
                &[
                    ("tp_btf:kvm_entry", "global"),
                    ("raw_tracepoint:kvm_entry", "global"),
                    ("tracepoint:kvm:kvm_entry", "global"),
                ],
            ),
        ],
    ),
];

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

/// Resolve `chains` (in kernel-index order) against `kernel`. Problems a configuration could
/// fix (a tracepoint that does not exist anywhere, a key that does not resolve) come back
/// together, located; targets this kernel merely lacks only make their candidates unusable.
pub fn resolve(chains: &[ChainSpec], kernel: &Kernel) -> Result<Vec<ChainPlan>, Vec<PlanIssue>> {
    let mut issues = Vec::new();
    let mut plans = Vec::new();
    for (index, chain) in chains.iter().enumerate() {
        let r = Resolver { kernel, issues: &mut issues };
        plans.push(r.chain(index as u8, chain));
    }
    assign_stores(&mut plans, kernel);
    if chains.iter().any(|c| c.interference) {
        plans.push(Resolver { kernel, issues: &mut issues }.interference_sources());
    }
    if issues.is_empty() { Ok(plans) } else { Err(issues) }
}

struct Resolver<'a> {
    kernel: &'a Kernel,
    issues: &'a mut Vec<PlanIssue>,
}

impl Resolver<'_> {
    fn issue(&mut self, key: impl Into<String>, why: impl Into<String>) {
        self.issues.push(PlanIssue { key: key.into(), why: why.into() });
    }

    /// The interference sources, as a plan whose stages are the sources. Missing targets (no
    /// kvm module, say) only leave a source unavailable.
    fn interference_sources(mut self) -> ChainPlan {
        let mut stages = Vec::new();
        for (name, points) in SOURCES {
            let mut pts = Vec::new();
            for (label, targets) in points {
                let spec = PointSpec {
                    at: format!("interference.{name}"),
                    targets: targets
                        .iter()
                        .map(|(t, k)| TargetSpec { attach: t.to_string(), key: k.to_string(), filter: None })
                        .collect(),
                    filter: None,
                    cause: None,
                };
                pts.push(self.point(name, Some(label.to_string()), &spec, None, true));
            }
            stages.push(StagePlan {
                name: name.to_string(),
                points: pts,
                first_hit_only: false,
                match_capture: false,
                clock: CLOCK_NAMES[0].to_string(),
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
            sample_every: 1,
            causes: Vec::new(),
            cause_values: Vec::new(),
        }
    }

    fn chain(mut self, index: u8, chain: &ChainSpec) -> ChainPlan {
        let mut stages = Vec::new();
        let (causes, cause_values) = self.causes(chain);
        for (i, stage) in chain.stages.iter().enumerate() {
            let capture = if i == 0 { stage.capture.as_deref() } else { None };
            let mut points = Vec::new();
            let mut empty_reason = None;
            for point in &stage.points {
                let expanded = self.expand(point);
                if expanded.is_empty() {
                    empty_reason = Some(format!(
                        "no registered clocksource has a known read function (registered: {})",
                        self.kernel.clocksources().join(", ")
                    ));
                }
                let cause = point.cause.as_ref().and_then(|c| causes.iter().position(|n| n == c)).map(|i| i as u8);
                for (label, point) in expanded {
                    let mut plan = self.point(&stage.name, label, &point, capture, false);
                    plan.cause = cause;
                    points.push(plan);
                }
            }
            if stage.match_capture {
                hidden_addresses_unusable(&mut points);
            }
            if let Some(why) = clock_missing(&stage.clock, &self.kernel.release()) {
                self.issues.push(PlanIssue::at(format!("chains.{}.stages[{i}].clock", chain.name), why));
            }
            stages.push(StagePlan {
                name: stage.name.clone(),
                points,
                first_hit_only: stage.first_hit_only,
                match_capture: stage.match_capture,
                clock: stage.clock.clone(),
                empty_reason,
            });
        }
        let aborts = chain.aborts.iter().map(|p| self.point("abort", None, p, None, false)).collect();
        ChainPlan {
            name: chain.name.clone(),
            index,
            description: chain.description.clone(),
            timeout_ns: chain.timeout_ns,
            stages,
            aborts,
            state: ChainState::Ready,
            store: Store::Hash,
            kind: PlanKind::Chain,
            charges_interference: chain.interference,
            sample_every: chain.sample_every.max(1),
            causes,
            cause_values,
        }
    }

    /// The chain's causes, and for causes decoded from the captured value, which values map to
    /// which cause on this kernel.
    fn causes(&mut self, chain: &ChainSpec) -> (Vec<String>, Vec<(u64, u8)>) {
        match chain.causes_from.as_deref() {
            Some(kvm_exit::DECODER) => {
                let causes = kvm_exit::CAUSES.iter().map(|c| c.to_string()).collect();
                let values = match self.kernel.kvm_isa() {
                    Some(isa) => kvm_exit::cause_values(isa),
                    None => {
                        tracing::warn!(
                            chain = %chain.name,
                            "neither kvm_amd nor kvm_intel is loaded and the CPU's vendor is unknown: every exit is `other`"
                        );
                        Vec::new()
                    }
                };
                (causes, values)
            }
            Some(other) => {
                self.issues.push(PlanIssue::at(
                    format!("chains.{}.causes_from", chain.name),
                    format!("unknown decoder `{other}` (known: {})", kvm_exit::DECODER),
                ));
                (Vec::new(), Vec::new())
            }
            None => {
                let causes = chain
                    .stages
                    .first()
                    .map(|s| s.points.iter().filter_map(|p| p.cause.clone()).collect())
                    .unwrap_or_default();
                (causes, Vec::new())
            }
        }
    }

    /// Expand `{clocksource_read}` into one point per registered clocksource.
    fn expand(&self, point: &PointSpec) -> Vec<(Option<String>, PointSpec)> {
        if !point.targets.iter().any(|t| t.attach.contains(CLOCKSOURCE_READ)) {
            return vec![(None, point.clone())];
        }
        let mut out: Vec<(Option<String>, PointSpec)> = Vec::new();
        for cs in self.kernel.clocksources() {
            let Some((_, func)) = CLOCKSOURCE_READ_FUNCTIONS.iter().find(|(n, _)| *n == cs) else {
                continue;
            };
            // tsc and tsc-early share a read function: one point.
            if out.iter().any(|(_, p)| p.targets.iter().any(|t| t.attach.ends_with(&format!(":{func}")))) {
                continue;
            }
            let mut p = point.clone();
            for t in &mut p.targets {
                t.attach = t.attach.replace(CLOCKSOURCE_READ, func);
            }
            out.push((Some(cs), p));
        }
        out
    }

    /// Resolve one probe point. `capture`: stage 0's captured value; `optional`: the point may
    /// be missing entirely (interference sources).
    fn point(
        &mut self,
        stage: &str,
        label: Option<String>,
        point: &PointSpec,
        capture: Option<&str>,
        optional: bool,
    ) -> PointPlan {
        let at = point.at.as_str();
        let mut candidates = Vec::new();
        // (candidate index, issue) for members this kernel's structs lack.
        let mut no_member: Vec<(usize, PlanIssue)> = Vec::new();
        for (k, t) in point.targets.iter().enumerate() {
            let tat = format!("{at}.targets[{k}]");
            // Syntax was checked with the config; a failure here means a template expanded badly.
            let Ok(target) = t.attach.parse::<Target>() else {
                self.issue(&tat, format!("stage `{stage}`: cannot parse target `{}`", t.attach));
                continue;
            };
            let key = t.key.clone();
            let (filter, fat) = match &t.filter {
                Some(f) => (Some(f.as_str()), format!("{tat}.filter")),
                None => (point.filter.as_deref(), format!("{at}.filter")),
            };
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
                    cand.key_bounds =
                        expr.0.iter().map(|v| KeyBound::of(v, self.arg_name(&target, v).as_deref())).collect();
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
                            Err(KeyError::Config(why)) => self.issues.push(PlanIssue::at(
                                &tat,
                                format!("stage `{stage}`: target `{target}`: key `{key}`: {why}"),
                            )),
                            Err(KeyError::Unusable(why)) => cand.status = Status::Unusable(why),
                            Err(KeyError::NoMember(why)) => no_member.push((
                                candidates.len(),
                                PlanIssue::at(&tat, format!("stage `{stage}`: target `{target}`: key `{key}`: {why}")),
                            )),
                        }
                    }
                }
                Err(e) => self.issues.push(PlanIssue::at(&tat, format!("stage `{stage}`: key: {e}"))),
            }
            if let Some(cap) = capture {
                match ValueExpr::parse(cap)
                    .map_err(|e| KeyError::Config(e.to_string()))
                    .and_then(|v| self.value(&target, &v))
                {
                    Ok(Some(spec)) => cand.capture = spec,
                    Ok(None) => {}
                    Err(KeyError::Config(why)) => self.issues.push(PlanIssue::at(
                        format!("{at}.capture"),
                        format!("stage `{stage}`: target `{target}`: capture `{cap}`: {why}"),
                    )),
                    Err(KeyError::Unusable(why)) => cand.status = Status::Unusable(why),
                    Err(KeyError::NoMember(why)) => no_member.push((
                        candidates.len(),
                        PlanIssue::at(
                            format!("{at}.capture"),
                            format!("stage `{stage}`: target `{target}`: capture `{cap}`: {why}"),
                        ),
                    )),
                }
            }
            if let Some(f) = filter {
                match Filter::parse(f).map_err(KeyError::Config).and_then(|f| self.conditions(&target, &f)) {
                    Ok(conditions) => cand.conditions = conditions,
                    Err(KeyError::Config(why)) => {
                        self.issues.push(PlanIssue::at(&fat, format!("stage `{stage}`: target `{target}`: {why}")))
                    }
                    Err(KeyError::Unusable(why)) => cand.status = Status::Unusable(why),
                    Err(KeyError::NoMember(why)) => no_member.push((
                        candidates.len(),
                        PlanIssue::at(&fat, format!("stage `{stage}`: target `{target}`: {why}")),
                    )),
                }
            }
            if cand.status == Status::Ready
                && let Err(why) = self.usable(&target)
            {
                cand.status = Status::Unusable(why);
            }
            candidates.push(cand);
        }
        // A member missing on this kernel makes its target unusable when another target of the
        // point resolved; when none did, it is reported as the configuration error it likely is.
        if !no_member.is_empty() {
            let resolved = (0..candidates.len()).any(|i| {
                !no_member.iter().any(|(j, _)| *j == i) && !matches!(candidates[i].status, Status::Missing(_))
            });
            for (i, issue) in no_member {
                if resolved {
                    if candidates[i].status == Status::Ready {
                        candidates[i].status = Status::Unusable(issue.why);
                    }
                } else {
                    self.issues.push(issue);
                }
            }
        }
        // Tracepoints are a stable kernel interface: a point whose every target is a missing
        // tracepoint is almost surely a typo, so it stops the run. Functions come and go with
        // inlining and kernel versions, so a missing function only makes its point unusable;
        // so does a tracepoint of a category the kernel has not registered at all (a module
        // not loaded: kvm's appear with kvm.ko), or one nobody can look up (tracefs unavailable).
        let unregistered = |c: &Candidate| {
            c.target.kind == AttachKind::Tracepoint
                && self.kernel.tracefs().map_or(true, |tf| {
                    !tf.has_category(c.target.category.as_deref().unwrap_or_default())
                        && tf.categories_of(&c.target.name).is_empty()
                })
        };
        if !optional
            && !candidates.is_empty()
            && candidates.iter().all(|c| matches!(c.status, Status::Missing(_)) && !c.target.kind.is_function())
            && !candidates.iter().all(unregistered)
        {
            let reasons: Vec<String> =
                candidates.iter().map(|c| format!("{}: {}", c.target, c.status.reason())).collect();
            self.issues.push(PlanIssue::at(
                at,
                format!("stage `{stage}`: none of its targets exists on this kernel ({})", reasons.join("; ")),
            ));
        }
        PointPlan { label, cause: None, candidates }
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
                if !tracefs.has_category(cat) && tracefs.categories_of(&t.name).is_empty() {
                    return Err(format!(
                        "tracepoint {cat}:{} missing: the kernel has no `{cat}` events (the module that registers them is not loaded, or not built)",
                        t.name
                    ));
                }
                let mut why = format!("tracepoint {cat}:{} missing", t.name);
                let cats = tracefs.categories_of(&t.name);
                if !cats.is_empty() {
                    why.push_str(&format!(" (it exists in category {})", cats.join(", ")));
                } else {
                    let all = tracefs.all_events();
                    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
                    if let Some(s) = closest(&format!("{cat}:{}", t.name), &refs) {
                        why.push_str(&format!(" (did you mean {s}?)"));
                    }
                }
                Err(why)
            }
            AttachKind::RawTracepoint | AttachKind::TpBtf => {
                let in_btf = self.kernel.btf().map(|b| b.has_tracepoint(&t.name)).ok();
                let in_tracefs = self.kernel.tracefs().map(|tf| !tf.categories_of(&t.name).is_empty()).unwrap_or(false);
                match (in_btf, in_tracefs) {
                    (Some(true), _) => Ok(()),
                    // A module's tracepoint (kvm_exit with kvm.ko) has its type in the module's
                    // BTF, not vmlinux's: a tp_btf program attaches with vmlinux's alone, so only
                    // raw and classic tracepoint targets can reach it.
                    (Some(false), true) if t.kind == AttachKind::TpBtf => Err(format!(
                        "tracepoint {} is not in vmlinux's BTF (a module's tracepoint): tp_btf cannot attach it; a tracepoint or raw_tracepoint target can",
                        t.name
                    )),
                    (_, true) => Ok(()),
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

    /// A filter's conditions, resolved for `target`.
    fn conditions(&self, target: &Target, f: &Filter) -> Result<Vec<CondPlan>, KeyError> {
        let mut out = Vec::new();
        for c in &f.conditions {
            let operand = match &c.symbol {
                None => c.value,
                Some(name) => self.symbol_value(name).map_err(KeyError::Unusable)?,
            };
            if let Some(value) = self.value(target, &c.expr)? {
                out.push(CondPlan { value, mask: c.mask, operand, negate: c.negate });
            }
        }
        Ok(out)
    }

    /// The address a filter compares with for a kernel function named in it.
    fn symbol_value(&self, name: &str) -> Result<u64, String> {
        match self.kernel.symbol(name) {
            None => Err(format!("filter: `{name}` is not a function of this kernel (kallsyms)")),
            Some(s) if s.addr == 0 => Err(format!(
                "filter: the address of `{name}` is hidden (/proc/kallsyms shows 0: reading addresses needs CAP_SYSLOG and kptr_restrict < 2, or kptr_restrict=0 with perf_event_paranoid <= 1)"
            )),
            Some(s) if s.count > 1 => Err(format!("filter: `{name}` names {} functions of this kernel", s.count)),
            Some(s) => Ok(s.addr),
        }
    }

    /// Can this kernel attach the target this way (before trying)?
    fn usable(&self, t: &Target) -> Result<(), String> {
        let name = &t.name;
        match t.kind {
            AttachKind::Kprobe | AttachKind::Kretprobe => {
                if !self.kernel.kprobe_pmu() {
                    return Err(kprobes_missing_reason());
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

    /// The BTF name of the parameter a plain `argN` reads, when the kernel has it.
    fn arg_name(&self, t: &Target, v: &ValueExpr) -> Option<String> {
        let ValueExpr::Arg { index, deref: None } = v else { return None };
        let btf = self.kernel.btf().ok()?;
        let names = match t.kind {
            AttachKind::TpBtf | AttachKind::RawTracepoint => btf.tracepoint_arg_names(&t.name).ok()?,
            AttachKind::Fentry | AttachKind::Fexit | AttachKind::Kprobe => btf.function_arg_names(&t.name).ok()?,
            _ => return None,
        };
        names.into_iter().nth(*index as usize).filter(|n| !n.is_empty())
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
                    let hint = closest(name, &names).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
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
                        Some(args[*index as usize])
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
                    let typed = arg_type.is_some() && d.cast.is_none();
                    let loc = btf
                        .member(&format!("arg{index}"), arg_type, d.cast.as_deref(), &d.path)
                        .map_err(member_error)?;
                    spec.flags = VALUE_DEREF | btf_typed(t.kind, typed);
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
                    let typed = ret_type.is_some() && d.cast.is_none();
                    let loc = btf.member("ret", ret_type, d.cast.as_deref(), &d.path).map_err(member_error)?;
                    spec.flags = VALUE_DEREF | btf_typed(t.kind, typed);
                    spec.offset = loc.offset;
                    spec.size = loc.size;
                }
                Ok(Some(spec))
            }
        }
    }
}

enum KeyError {
    /// The expression is wrong for this target: a configuration error.
    Config(String),
    /// The expression cannot be resolved on this kernel (e.g. no BTF): the target is unusable.
    Unusable(String),
    /// A member this kernel's struct does not have (`__state` before 5.14): the target is
    /// unusable when another target of its point resolves, a configuration error when none
    /// does (then it is most likely a typo).
    NoMember(String),
}

fn member_error(e: crate::kernel::btf::BtfError) -> KeyError {
    match e {
        crate::kernel::btf::BtfError::NoMember { .. } => KeyError::NoMember(e.to_string()),
        other => KeyError::Config(other.to_string()),
    }
}

/// `VALUE_BTF` when a dereferenced pointer is typed by BTF in the program's own context: a
/// tp_btf, fentry or fexit argument (or return value) read through its declared type. A cast
/// or an untyped context (raw_tracepoint, kprobe) reads with bpf_probe_read_kernel.
/// A stage matching stage 0's captured function pointer compares it with each target's
/// address from kallsyms. Where kallsyms shows 0 (addresses hidden from this process), the
/// target could never match: it is unusable, and says why, instead of silently never firing.
fn hidden_addresses_unusable(points: &mut [PointPlan]) {
    for cand in points.iter_mut().flat_map(|p| p.candidates.iter_mut()) {
        if cand.status == Status::Ready && cand.target.kind.is_function() && cand.func_addr == 0 {
            cand.status = Status::Unusable(format!(
                "the address of {} is hidden (/proc/kallsyms shows 0: reading addresses needs CAP_SYSLOG, and kptr_restrict < 2): this stage matches the captured function by address",
                cand.target.name
            ));
        }
    }
}

fn btf_typed(kind: AttachKind, typed: bool) -> u8 {
    if typed && matches!(kind, AttachKind::TpBtf | AttachKind::Fentry | AttachKind::Fexit) { VALUE_BTF } else { 0 }
}

/// Why this kernel cannot stamp with `clock` (its BPF helper came later), from the release.
fn clock_missing(clock: &str, release: &str) -> Option<String> {
    let (helper, since) = match clock {
        "boottime" => ("bpf_ktime_get_boot_ns", (5, 8)),
        "tai" => ("bpf_ktime_get_tai_ns", (6, 1)),
        _ => return None,
    };
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next()?, parts.next()?);
    (version < since).then(|| {
        format!("clock `{clock}` needs {helper}, which Linux {}.{} added; this kernel is {release}", since.0, since.1)
    })
}

#[cfg(test)]
mod clock_tests {
    use super::clock_missing;

    #[test]
    fn a_clock_needs_the_kernel_that_added_its_helper() {
        assert_eq!(clock_missing("monotonic", "4.19.0"), None);
        assert_eq!(clock_missing("boottime", "5.8.0-1-amd64"), None);
        assert!(
            clock_missing("boottime", "5.4.0")
                .is_some_and(|w| w.contains("bpf_ktime_get_boot_ns") && w.contains("5.8"))
        );
        assert_eq!(clock_missing("tai", "6.1.0-40-amd64"), None);
        assert_eq!(clock_missing("tai", "6.18.44-fc-v1300"), None);
        let why = clock_missing("tai", "5.15.0");
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains("bpf_ktime_get_tai_ns") && w.contains("6.1") && w.contains("5.15.0")),
            "{why:?}"
        );
    }
}
