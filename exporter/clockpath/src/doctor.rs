//! `clockpath doctor`: what this machine can trace, and what the configured chains would attach.

use std::fmt::Write as _;

use serde::Serialize;

use clockpath_probe::{
    kernel::Kernel,
    loader::Engine,
    plan::{Candidate, ChainPlan, ChainState, Status},
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
            PpsCheck { device: path.display().to_string(), configured, usable, capabilities, pulse_offset_ns, note }
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

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub environment: Environment,
    /// This process's user id.
    pub uid: u32,
    /// Its effective capabilities.
    pub capabilities: Vec<String>,
    /// Capabilities it lacks that this machine and configuration call for, with what each
    /// one's absence disables.
    pub missing_capabilities: Vec<privileges::Missing>,
    pub tracefs: Result<String, String>,
    pub btf: Result<String, String>,
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
    /// The source's name, or why the device cannot be used.
    pub usable: Result<String, String>,
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
        let mut s = String::new();
        let e = &self.environment;
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
            let what = match (&p.usable, p.pulse_offset_ns) {
                (Ok(name), Some(o)) => format!("{name}: pulse seen, system clock offset {:+.9} s", o as f64 / 1e9),
                (Ok(name), None) => format!("{name}: NO pulse within 1.5 s"),
                (Err(e), _) => format!("NOT usable: {e}"),
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
                k.detail
            );
        }
        let _ = writeln!(s, "\nchains");
        for c in &self.chains {
            let state = match &c.state {
                ChainState::Running => "runs".to_string(),
                ChainState::Ready => "ready".to_string(),
                ChainState::Disabled(r) => format!("UNAVAILABLE: {r}"),
            };
            let _ = writeln!(s, "  {} — {}", c.name, state);
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
                        let _ = writeln!(s, "      {}", candidate_line(cand));
                    }
                }
            }
            for p in &c.aborts {
                let _ = writeln!(s, "    abort");
                for cand in &p.candidates {
                    let _ = writeln!(s, "      {}", candidate_line(cand));
                }
            }
        }
        s
    }
}

fn candidate_line(c: &Candidate) -> String {
    let mark = match &c.status {
        Status::Attached(_) => "✔ attached",
        Status::Standby => "· standby ",
        Status::Ready => "· ready   ",
        _ => "✘",
    };
    let reason = c.status.reason();
    if reason.is_empty() {
        format!("{mark} {} (key {})", c.target, c.key)
    } else {
        format!("{mark} {} ({}): {reason}", c.target, c.status.label())
    }
}

fn show(r: &Result<String, String>) -> String {
    match r {
        Ok(s) => s.clone(),
        Err(e) => format!("NOT available: {e}"),
    }
}

/// Examine this machine: load the BPF object, check every attach kind, attach the resolved
/// `plans` to see what really attaches, and detach everything again.
pub fn examine(loaded: &Loaded, kernel: &Kernel, mut plans: Vec<ChainPlan>) -> Report {
    let environment = Environment::detect();
    let btf = kernel.btf().map(|_| kernel.btf_path().display().to_string()).map_err(str::to_string);
    let tracefs = kernel.tracefs().map(|t| t.root().display().to_string()).map_err(str::to_string);
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
