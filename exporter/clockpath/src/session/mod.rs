//! `clockpath session`: drive clocksource switches and measure each one.
//!
//! The runner writes `current_clocksource`, cycling through the requested clocksources, and
//! waits for the chain instance of each switch (or its timeout) before the next one; every
//! record gets the session id, the run index and the old and new clocksource. The original
//! clocksource is restored at the end, on error, on Ctrl-C and on SIGTERM (and by a drop guard
//! if anything unwinds). Raw traces, per-run records and a summary go to the output directory.
//!
//! [`clocksource`] controls the clocksource through sysfs, [`mode`] attaches the chain (or its
//! degraded fallback), [`runner`] is the run loop and [`report`] the result and its files.

pub mod clocksource;
pub mod cpufreq;
pub mod idle;
pub mod mode;
pub mod report;
pub mod restore_file;
pub mod runner;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool, mpsc},
    time::Duration,
};

use clockpath_probe::kernel::Kernel;

pub use mode::{CHAIN, DEGRADED_CHAIN};
pub use report::{Run, SessionReport, markdown};

use crate::{
    config::Loaded,
    daemon::{self, StartError},
    ktime::WallClock,
    pipeline::Sink as _,
    pps::TimeReference,
    sinks::otlp::OtlpSink,
};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Usage(String),
    #[error("reading or writing {path}")]
    Sysfs {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("writing session output to {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to run.
#[derive(Clone, Debug)]
pub struct SessionArgs {
    pub runs: usize,
    pub clocksources: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub out: PathBuf,
    /// How long to wait for each switch's chain.
    pub timeout: Duration,
    /// Skip the clocksource chain and measure the write syscall (for testing degraded mode).
    pub force_degraded: bool,
    /// C-state policies to compare (`runs` runs each), checked by `idle::preflight`; None:
    /// leave idle states alone.
    pub cstates: Option<idle::Checked>,
    /// cpufreq governors to compare (every C-state policy under each), checked by
    /// `cpufreq::preflight`; None: leave governors alone.
    pub governors: Option<cpufreq::Checked>,
    /// Order of the policies over the runs.
    pub schedule: idle::Schedule,
    pub seed: u64,
}

/// What a run is measured under: a C-state policy and, with `--governors`, a cpufreq governor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub cstate: idle::Policy,
    pub governor: Option<String>,
}

impl Condition {
    /// `max_cstate=1`, or `max_cstate=1+governor=performance` with a governor.
    pub fn label(&self) -> String {
        match &self.governor {
            None => self.cstate.label(),
            Some(g) => format!("{}+governor={g}", self.cstate.label()),
        }
    }
}

/// Every C-state policy under every governor (the ones given; the machine's own otherwise).
pub fn conditions(cstates: Option<&idle::Checked>, governors: Option<&cpufreq::Checked>) -> Vec<Condition> {
    let cstates = cstates.map_or_else(|| vec![idle::Policy::Default], |c| c.policies.clone());
    let governors: Vec<Option<String>> =
        governors.map_or_else(|| vec![None], |g| g.governors.iter().cloned().map(Some).collect());
    cstates
        .iter()
        .flat_map(|c| governors.iter().map(move |g| Condition { cstate: c.clone(), governor: g.clone() }))
        .collect()
}

fn session_id(env: &str) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now.chars().filter(|c| c.is_ascii_digit() || *c == 'T').collect();
    format!("{env}-{stamp}-{:04x}", std::process::id() & 0xffff)
}

/// Run a session on `machine` (detected before any change). `stop` is set by a signal
/// handler to end it early (the clocksource is still restored and the outputs written).
pub fn run(
    loaded: &Loaded,
    args: &SessionArgs,
    env: &str,
    machine: crate::host::Machine,
    stop: Arc<AtomicBool>,
) -> Result<SessionReport, SessionError> {
    if args.runs == 0 {
        return Err(SessionError::Usage("--runs must be at least 1".into()));
    }
    if let Some(problem) = machine.time_sync.as_ref().and_then(|t| t.problem(loaded.config.time_sync.max_error_ms)) {
        tracing::warn!("{problem}; the session's summary records the state");
    }
    // Traces of the session go on PPS time when a source is configured (checked before any
    // change to the machine).
    let reference = Arc::new(
        TimeReference::start(&loaded.config.pps, &loaded.config.windows, Arc::new(WallClock::new()))
            .map_err(|e| SessionError::Usage(format!("{:#}", anyhow::Error::new(e))))?,
    );
    let original = clocksource::current()?;
    clocksource::check_requested(&args.clocksources, &clocksource::available()?, &original)?;
    let audits = crate::clockaudit::Audits::start(loaded);
    // Every policy is checked against the machine, and the files it writes for permission,
    // before anything changes.
    clockpath_offline::outfile::ensure_dir(&args.out)
        .map_err(|source| SessionError::Output { path: args.out.clone(), source })?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| SessionError::Output { path: args.out.clone(), source: e })?;
    let _guard = rt.enter();
    let (tx, rx) = mpsc::channel();
    let attached = mode::attach(loaded, &Kernel::open(), env, &tx, args.force_degraded, &rt)?;
    // Every run of a session is traced (sessions are what the traces are for); the rate limit
    // is for the continuous exporter.
    let mut otlp = {
        let mut cfg = loaded.config.clone();
        cfg.otlp.sampling.per_chain_per_second = f64::MAX;
        cfg.otlp.sampling.burst = u32::MAX;
        OtlpSink::for_plans(&loaded.with_config(cfg), &attached.daemon.plans, env, None, None, None, reference.clone())
            .map_err(|e| SessionError::Start(crate::sinks::SinkError::from(e).into()))?
    };

    let id = session_id(env);
    let mut restore = clocksource::Restore::new(original.clone());
    let mut idle_guard = match &args.cstates {
        Some(c) => Some(idle::Guard::save(c.idle.clone(), restore_file::path::<idle::Cpuidle>())?),
        None => None,
    };
    let mut freq_guard = match &args.governors {
        Some(c) => Some(cpufreq::Guard::save(c.cpufreq.clone(), restore_file::path::<cpufreq::Cpufreq>())?),
        None => None,
    };
    let policies = conditions(args.cstates.as_ref(), args.governors.as_ref());
    // One unit of the schedule is a pass over the clocksource pairs (see `idle::schedule`).
    let order = idle::schedule(args.schedule, policies.len(), args.runs, args.clocksources.len(), args.seed);
    let mut outcomes = runner::Runner {
        args,
        session_id: &id,
        mode: attached.mode,
        plan: &attached.plan,
        records: &rx,
        otlp: otlp.as_mut(),
        stop,
        policies: &policies,
        order: &order,
        idle: idle_guard.as_ref(),
        governors: freq_guard.as_ref(),
    }
    .run(original.clone());
    restore.now()?;
    if let Some(g) = idle_guard.as_mut() {
        g.now()?;
    }
    if let Some(g) = freq_guard.as_mut() {
        g.now()?;
    }
    if let Some(mut o) = otlp.take() {
        o.finish();
    }
    let restored = clocksource::current().unwrap_or_default();
    let clocks = audits.finish();
    let (maps, stats, plans) =
        (attached.daemon.maps.clone(), attached.daemon.stats.clone(), attached.daemon.plans.clone());
    let ring_bytes = attached.daemon.ring_bytes;
    rt.block_on(attached.daemon.stop());
    let chain = attached.mode.chain();
    let kernel_summary = {
        let m = maps.lock().map_err(|_| SessionError::Usage("kernel maps lock poisoned".into()))?;
        let t = attached.tally.chains.lock().map_err(|_| SessionError::Usage("tally lock poisoned".into()))?;
        daemon::summary::summarize(&plans, &m, &t, &stats).chains.into_iter().find(|c| c.name == chain)
    };

    let shape = attached.plan.shape();
    let segments: Vec<String> = (1..=shape.segments() as u8).map(|i| shape.segment_name(i)).collect();
    let set_conditions = args.cstates.is_some() || args.governors.is_some();
    let runs = std::mem::take(&mut outcomes.runs);
    let report = SessionReport {
        session_id: id,
        mode: attached.mode.as_str().into(),
        chain: chain.into(),
        env: env.into(),
        labels: args.labels.iter().cloned().collect(),
        original_clocksource: original,
        restored_clocksource: restored,
        runs_requested: order.len(),
        runs_done: runs.len(),
        completed: runs.iter().filter(|r| r.missing.is_none()).count(),
        missing: report::missing(&runs),
        analysis: report::analyze(&runs, &segments, &loaded.config.windows),
        interference_median_ns: if attached.plan.charges_interference {
            report::interference_medians(&runs, &segments)
        } else {
            Default::default()
        },
        segments: segments.clone(),
        kernel: kernel_summary,
        interrupted: outcomes.interrupted,
        machine,
        clocks,
        ring_bytes,
        policies: match set_conditions {
            true => report::per_policy(&runs, &policies, &outcomes, &segments, &loaded.config.windows),
            false => Vec::new(),
        },
        comparisons: match set_conditions {
            true => report::compare_policies(&runs, &policies, &segments, &loaded.config.windows),
            false => Vec::new(),
        },
        schedule: set_conditions.then(|| format!("{:?}", args.schedule).to_lowercase()),
        runs,
    };
    report::write_outputs(&args.out, &report, &outcomes.records, &attached.plan, env, &reference)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cstate_policy_runs_under_every_governor() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("policy0")).unwrap();
        std::fs::write(root.join("policy0/scaling_available_governors"), "performance powersave").unwrap();
        std::fs::write(root.join("policy0/scaling_governor"), "powersave").unwrap();
        let governors = cpufreq::preflight(root, vec!["performance".into(), "powersave".into()]).unwrap();
        let labels: Vec<String> = conditions(None, governors.as_ref()).iter().map(Condition::label).collect();
        assert_eq!(labels, ["default+governor=performance", "default+governor=powersave"]);
        assert_eq!(conditions(None, None), [Condition { cstate: idle::Policy::Default, governor: None }]);
        let cstates = idle::Checked {
            idle: idle::Cpuidle { root: root.into(), cpus: vec![0], states: Vec::new() },
            policies: vec![idle::Policy::Default, idle::Policy::MaxCstate(1)],
        };
        let labels: Vec<String> = conditions(Some(&cstates), governors.as_ref()).iter().map(Condition::label).collect();
        assert_eq!(
            labels,
            [
                "default+governor=performance",
                "default+governor=powersave",
                "max_cstate=1+governor=performance",
                "max_cstate=1+governor=powersave"
            ]
        );
    }
}
