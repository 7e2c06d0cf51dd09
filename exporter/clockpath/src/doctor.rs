//! `clockpath doctor`: what this machine can trace, and what the configured chains would attach.

use std::fmt::Write as _;

use serde::Serialize;

use clockpath_probe::{
    kernel::Kernel,
    loader::Engine,
    plan::{Candidate, ChainPlan, ChainState, PointPlan, Status},
    target::AttachKind,
};

use crate::{
    config::{Loaded, PpsConfig},
    host::{Environment, TimeSync},
    ktime,
    pps::device::{self, Device},
    privileges,
};

/// Each configured PPS device (with `auto` or none configured: each present), opened without
/// changing it, and one edge waited for.
fn check_pps(cfg: &PpsConfig) -> Vec<PpsCheck> {
    let configured: Vec<std::path::PathBuf> =
        cfg.devices.iter().filter(|d| *d != "auto").map(std::path::PathBuf::from).collect();
    let mut list: Vec<(std::path::PathBuf, bool)> = configured.iter().map(|p| (p.clone(), true)).collect();
    for p in device::discover() {
        if !configured.contains(&p) {
            list.push((p, cfg.auto()));
        }
    }
    list.into_iter()
        .map(|(path, configured)| {
            let mut capabilities = Vec::new();
            let (usable, pulse_offset_ns, note) = match Device::inspect(&path, cfg.edge) {
                Err(e) => (Err(format!("{:#}", anyhow::Error::new(e))), None, String::new()),
                Ok(dev) => {
                    capabilities = dev.capabilities.iter().map(|c| c.to_string()).collect();
                    let note = if dev.edge_enabled {
                        String::new()
                    } else {
                        "edge not enabled: `run` enables it, which needs CAP_SYS_TIME".to_string()
                    };
                    let offset = dev
                        .fetch(std::time::Duration::from_millis(1500))
                        .ok()
                        .flatten()
                        .map(|e| ktime::reference::offset_from_nearest_second(e.realtime_ns, cfg.cable_delay_ns));
                    (Ok(if dev.name.is_empty() { "PPS source".into() } else { dev.name.clone() }), offset, note)
                }
            };
            let (name, error) = match usable {
                Ok(n) => (Some(n), None),
                Err(e) => (None, Some(e)),
            };
            PpsCheck {
                device: path.display().to_string(),
                configured,
                usable: name.is_some(),
                name,
                error,
                capabilities,
                pulse_offset_ns,
                note,
            }
        })
        .collect()
}

/// Whether one attach kind works here.
#[derive(Clone, Debug, Serialize)]
pub struct KindSupport {
    pub kind: AttachKind,
    pub supported: bool,
    /// The target the check attached to, or why it is not supported.
    pub detail: String,
}

/// A kernel interface: where it is, or why it is not there.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<Result<String, String>> for Found {
    fn from(r: Result<String, String>) -> Found {
        match r {
            Ok(path) => Found { available: true, path: Some(path), error: None },
            Err(e) => Found { available: false, path: None, error: Some(e) },
        }
    }
}

/// The report's first line, as data: how many chains can run, which cannot and why.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Chains configured (interference sources are not chains).
    pub chains: usize,
    /// Chains that attached.
    pub can_run: usize,
    /// The others, each with why.
    pub cannot_run: Vec<Unavailable>,
    /// The clocksource chain cannot attach, so `clockpath session` measures switches in
    /// degraded mode (the whole write to `current_clocksource`).
    pub sessions_degraded: bool,
    /// The same as one line of text.
    pub text: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Unavailable {
    pub chain: String,
    pub reason: String,
}

/// The version of `doctor --json`'s layout: it changes only when a field is removed or changes
/// meaning (fields may be added). Documented in the book (commands.md).
pub const JSON_SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub summary: Summary,
    pub environment: Environment,
    /// This process's user id.
    pub uid: u32,
    /// Its effective capabilities.
    pub capabilities: Vec<String>,
    /// Capabilities it lacks that this machine and configuration call for, with what each
    /// one's absence disables.
    pub missing_capabilities: Vec<privileges::Missing>,
    pub tracefs: Found,
    pub btf: Found,
    pub attach_kinds: Vec<KindSupport>,
    pub chains: Vec<ChainPlan>,
    /// The kernel clock's synchronisation (adjtimex), and what is wrong with it for measuring.
    pub time_sync: Option<TimeSync>,
    pub time_sync_problem: Option<String>,
    /// Each configured PPS device (or, with none configured, each present).
    pub pps: Vec<PpsCheck>,
}

/// A PPS device as `doctor` found it.
#[derive(Clone, Debug, Serialize)]
pub struct PpsCheck {
    pub device: String,
    pub configured: bool,
    /// Whether the device can be used: `name` is the source's, `error` says why not.
    pub usable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What PPS_GETCAP says the device can do.
    pub capabilities: Vec<String>,
    /// An edge seen within 1.5 s: the system clock's offset from its second, ns.
    pub pulse_offset_ns: Option<i64>,
    pub note: String,
}

impl Report {
    /// True when at least one chain runs.
    pub fn anything_runs(&self) -> bool {
        self.chains.iter().any(|c| c.state == ChainState::Running)
    }

    pub fn to_text(&self) -> String {
        let notes = Notes::of(self);
        let mut s = String::new();
        let e = &self.environment;
        let _ = writeln!(s, "{}", notes.cite(&self.summary.text));
        if !notes.list.is_empty() {
            let _ = writeln!(s, "reasons, cited as [n] below:");
            for (i, n) in notes.list.iter().enumerate() {
                let _ = writeln!(s, "  [{}] {n}", i + 1);
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "kernel           {}", e.kernel);
        // Only those the exporter uses: root holds 40 others.
        let used: Vec<&str> =
            self.capabilities.iter().map(String::as_str).filter(|c| privileges::USED.contains(c)).collect();
        let others = self.capabilities.len() - used.len();
        let held = match (used.is_empty(), others) {
            (true, 0) => "none".to_string(),
            (_, 0) => used.join(" "),
            _ => format!("{} (and {others} the exporter does not use)", used.join(" ")),
        };
        let _ = writeln!(s, "user             uid {}; effective capabilities: {held}", self.uid);
        for m in &self.missing_capabilities {
            let _ = writeln!(s, "                 MISSING {}: {}", m.capability, m.disables);
        }
        let _ = writeln!(s, "BTF              {}", show(&self.btf));
        let _ = writeln!(s, "tracefs          {}", show(&self.tracefs));
        let _ = writeln!(s, "environment      {} (hypervisor: {}; {})", e.env, e.hypervisor, e.env_evidence.join("; "));
        let _ = writeln!(
            s,
            "clocksource      {} (available: {})",
            e.current_clocksource,
            e.available_clocksources.join(" ")
        );
        let _ = writeln!(s, "cpufreq governor {}", e.cpufreq_governor);
        let _ = writeln!(s, "cpuidle governor {}", e.cpuidle_governor);
        let _ = writeln!(s, "C-state limit    {}", e.cstate_limit);
        if !e.idle_states.is_empty() {
            let _ = writeln!(s, "idle states      {}", e.idle_states.join(", "));
        }
        match &self.time_sync {
            Some(t) => {
                let _ = writeln!(s, "clock sync       {}", t.summary());
            }
            None => {
                let _ = writeln!(s, "clock sync       unknown (adjtimex failed)");
            }
        }
        if let Some(p) = &self.time_sync_problem {
            let _ = writeln!(s, "                 WARNING: {p}");
        }
        if self.pps.is_empty() {
            let _ = writeln!(s, "PPS reference    none (no /sys/class/pps device; [pps] devices empty)");
        }
        for p in &self.pps {
            let what = match (&p.name, &p.error, p.pulse_offset_ns) {
                (Some(name), _, Some(o)) => {
                    format!("{name}: pulse seen, system clock offset {:+.9} s", o as f64 / 1e9)
                }
                (Some(name), _, None) => format!("{name}: NO pulse within 1.5 s"),
                (None, e, _) => format!("NOT usable: {}", e.as_deref().unwrap_or("unknown")),
            };
            let _ = writeln!(
                s,
                "PPS              {} {}{}{}",
                p.device,
                if p.configured { "" } else { "(present, not configured) " },
                what,
                if p.note.is_empty() { String::new() } else { format!(" ({})", p.note) }
            );
            if !p.capabilities.is_empty() {
                let _ = writeln!(s, "                 capabilities: {}", p.capabilities.join(", "));
            }
        }
        let _ = writeln!(s, "\nattach kinds");
        for k in &self.attach_kinds {
            let _ = writeln!(
                s,
                "  {:<15} {:<13} {}",
                k.kind.as_str(),
                if k.supported { "supported" } else { "NOT supported" },
                notes.cite(&k.detail)
            );
        }
        let _ = writeln!(s, "\nchains");
        for c in &self.chains {
            let state = match &c.state {
                ChainState::Running => "runs".to_string(),
                ChainState::Ready => "ready".to_string(),
                ChainState::Disabled(r) => format!("UNAVAILABLE: {}", notes.cite(r)),
                ChainState::NotNeeded(r) => format!("not needed: {r}"),
            };
            let what = if c.is_chain() { "" } else { " (interference sources)" };
            let _ = writeln!(s, "  {}{what} — {}", c.name, state);
            for st in &c.stages {
                let _ = writeln!(s, "    stage {}", st.name);
                if let Some(r) = &st.empty_reason {
                    let _ = writeln!(s, "      (no probe points: {r})");
                }
                for p in &st.points {
                    if let Some(l) = &p.label {
                        let _ = writeln!(s, "      point for {l}");
                    }
                    for cand in &p.candidates {
                        let _ = writeln!(s, "      {}", candidate_line(cand, p, &notes));
                    }
                }
            }
            for p in &c.aborts {
                let _ = writeln!(s, "    abort");
                for cand in &p.candidates {
                    let _ = writeln!(s, "      {}", candidate_line(cand, p, &notes));
                }
            }
        }
        s
    }
}

/// The summary line: chains that can run, those that cannot and why, and what still works.
pub fn summarise(chains: &[ChainPlan]) -> Summary {
    let configured: Vec<&ChainPlan> = chains.iter().filter(|c| c.is_chain()).collect();
    let can_run = configured.iter().filter(|c| c.is_running()).count();
    let cannot_run: Vec<Unavailable> = configured
        .iter()
        .filter(|c| !c.is_running())
        .map(|c| Unavailable {
            chain: c.name.clone(),
            reason: match &c.state {
                ChainState::Disabled(r) | ChainState::NotNeeded(r) => r.clone(),
                ChainState::Ready | ChainState::Running => "not attached".into(),
            },
        })
        .collect();
    let sessions_degraded = cannot_run.iter().any(|u| u.chain == crate::session::CHAIN);
    let mut text = format!("{can_run} of {} chains can run here", configured.len());
    if cannot_run.is_empty() {
        text.push('.');
    } else {
        let which: Vec<String> = cannot_run.iter().map(|u| format!("{} cannot: {}", u.chain, u.reason)).collect();
        text.push_str(&format!("; {}.", which.join("; ")));
    }
    if sessions_degraded {
        text.push_str(
            " `clockpath session` still measures clocksource switches, in degraded mode (the whole write to \
             current_clocksource, from userspace).",
        );
    }
    Summary { chains: configured.len(), can_run, cannot_run, sessions_degraded, text }
}

/// Reasons the report would repeat (an attach kind's failure is every candidate's of that
/// kind), numbered once and cited as `[n]`.
struct Notes {
    list: Vec<String>,
}

impl Notes {
    fn of(r: &Report) -> Notes {
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let kinds = r.attach_kinds.iter().filter(|k| !k.supported).map(|k| k.detail.as_str());
        let candidates = r.chains.iter().flat_map(|c| {
            c.stages
                .iter()
                .flat_map(|st| st.points.iter())
                .chain(c.aborts.iter())
                .flat_map(|p| p.candidates.iter())
                .map(|cand| cand.status.reason())
        });
        let mut order = Vec::new();
        for reason in kinds.chain(candidates).filter(|r| r.len() >= 40) {
            let n = seen.entry(reason).or_insert(0);
            *n += 1;
            if *n == 2 {
                order.push(reason.to_string());
            }
        }
        Notes { list: order }
    }

    /// `text` with every repeated reason in it replaced by its number (longest first, so a
    /// reason that contains another is cited whole).
    fn cite(&self, text: &str) -> String {
        let mut by_len: Vec<(usize, &String)> = self.list.iter().enumerate().collect();
        by_len.sort_by_key(|(_, n)| std::cmp::Reverse(n.len()));
        let mut out = text.to_string();
        for (i, n) in by_len {
            out = out.replace(n.as_str(), &format!("[{}]", i + 1));
        }
        out
    }
}

/// One candidate: attached, waiting, refused. A candidate left without a slot while another
/// of its point is used is a spare, not a failure.
fn candidate_line(c: &Candidate, point: &PointPlan, notes: &Notes) -> String {
    let covered = point.candidates.iter().any(|o| matches!(o.status, Status::Attached(_) | Status::Ready));
    let spare = covered && c.status.lacks_slot();
    let mark = match &c.status {
        Status::Attached(_) => "✔ attached",
        Status::Standby => "· standby ",
        Status::Ready => "· ready   ",
        _ if spare => "· spare   ",
        _ => "✘",
    };
    let reason = c.status.reason();
    if reason.is_empty() {
        format!("{mark} {} (key {})", c.target, c.key)
    } else if spare {
        format!("{mark} {} (not placed, another candidate of this point is used: {})", c.target, notes.cite(reason))
    } else {
        format!("{mark} {} ({}): {}", c.target, c.status.label(), notes.cite(reason))
    }
}

fn show(f: &Found) -> String {
    match (&f.path, &f.error) {
        (Some(p), _) => p.clone(),
        (None, e) => format!("NOT available: {}", e.as_deref().unwrap_or("unknown")),
    }
}

/// Examine this machine: load the BPF object, check every attach kind, attach the resolved
/// `plans` to see what really attaches, and detach everything again.
pub fn examine(loaded: &Loaded, kernel: &Kernel, mut plans: Vec<ChainPlan>) -> Report {
    let environment = Environment::detect();
    let btf = kernel.btf().map(|_| kernel.btf_path().display().to_string()).map_err(str::to_string).into();
    let tracefs = kernel.tracefs().map(|t| t.root().display().to_string()).map_err(str::to_string).into();
    let (attach_kinds, chains) = match Engine::load(&loaded.config.probe.load_options(), &mut plans) {
        Ok(mut engine) => {
            let kinds = probe_kinds(&mut engine, kernel);
            engine.attach(plans);
            // Dropping the engine detaches everything again.
            (kinds, std::mem::take(&mut engine.chains))
        }
        Err(e) => {
            let why = clockpath_probe::report(&e);
            let kinds = AttachKind::ALL
                .iter()
                .map(|&kind| KindSupport { kind, supported: false, detail: why.clone() })
                .collect();
            let chains = plans
                .into_iter()
                .map(|mut p| {
                    p.state = ChainState::Disabled(format!("BPF object not loaded: {why}"));
                    p
                })
                .collect();
            (kinds, chains)
        }
    };
    let time_sync = TimeSync::read();
    let time_sync_problem = time_sync.as_ref().and_then(|t| t.problem(loaded.config.time_sync.max_error_ms));
    let pps = check_pps(&loaded.config.pps);
    let held = privileges::effective();
    let context = privileges::Context {
        pps_edges_disabled: pps.iter().any(|p| p.note.contains("edge not enabled")),
        ..privileges::Context::of(kernel, &loaded.config)
    };
    Report {
        schema_version: JSON_SCHEMA_VERSION,
        summary: summarise(&chains),
        environment,
        // SAFETY: getuid has no preconditions.
        uid: unsafe { libc::getuid() },
        capabilities: privileges::names(&held),
        missing_capabilities: privileges::missing(&held, &context),
        tracefs,
        btf,
        attach_kinds,
        chains,
        time_sync,
        time_sync_problem,
        pps,
    }
}

/// Functions most kernels have, traceable, for the kprobe/fentry checks.
const PROBE_FUNCTIONS: &[&str] = &["do_nanosleep", "hrtimer_nanosleep", "ktime_get", "schedule"];

/// What `doctor --capture` records besides the configured chains' names: the attach-kind
/// checks' functions and the clocksource switch path (which functions exist, and whether
/// they are inlined, changes between kernels).
pub const CAPTURE_FUNCTIONS: &[&str] = &[
    "do_nanosleep",
    "hrtimer_nanosleep",
    "ktime_get",
    "schedule",
    "timekeeping_notify",
    "change_clocksource",
    "timekeeping_forward_now",
    "tk_setup_internals",
    "timekeeping_update",
    "timekeeping_update_from_shadow",
    "clocksource_select",
];

/// Check each attach kind by loading and attaching a slot program with no role.
fn probe_kinds(engine: &mut Engine, kernel: &Kernel) -> Vec<KindSupport> {
    AttachKind::ALL
        .iter()
        .map(|&kind| {
            let target = match kind {
                AttachKind::Tracepoint => Some("tracepoint:sched:sched_switch".to_string()),
                AttachKind::RawTracepoint => Some("raw_tracepoint:sched_switch".to_string()),
                AttachKind::TpBtf => Some("tp_btf:sched_switch".to_string()),
                _ => PROBE_FUNCTIONS
                    .iter()
                    .find(|f| kernel.symbol(f).is_some_and(|s| s.count == 1) && kernel.traceable(f) != Some(false))
                    .map(|f| format!("{kind}:{f}")),
            };
            let Some(target) = target.and_then(|t| t.parse().ok()) else {
                return KindSupport { kind, supported: false, detail: "no traceable test function found".into() };
            };
            match engine.probe_kind(&target, kernel) {
                Ok(()) => KindSupport { kind, supported: true, detail: format!("attached {target}") },
                Err(why) => KindSupport { kind, supported: false, detail: why },
            }
        })
        .collect()
}
