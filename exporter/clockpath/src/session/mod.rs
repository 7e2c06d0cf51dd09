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
pub mod idle;
pub mod mode;
pub mod report;
pub mod runner;

use std::{
    fs,
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
    pipeline::Sink as _,
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
    /// Order of the policies over the runs.
    pub schedule: idle::Schedule,
    pub seed: u64,
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
    if machine.time_sync.as_ref().is_some_and(|t| !t.synchronised) {
        tracing::warn!(
            "the system clock is not synchronised (adjtimex): wall-clock times in this session's outputs are the local clock's"
        );
    }
    let original = clocksource::current()?;
    clocksource::check_requested(&args.clocksources, &clocksource::available()?, &original)?;
    // Every policy is checked against the machine, and the files it writes for permission,
    // before anything changes.
    fs::create_dir_all(&args.out).map_err(|source| SessionError::Output { path: args.out.clone(), source })?;

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
        OtlpSink::for_plans(&loaded.with_config(cfg), &attached.daemon.plans, env, None, None, None)
            .map_err(|e| SessionError::Start(crate::sinks::SinkError::from(e).into()))?
    };

    let id = session_id(env);
    let mut restore = clocksource::Restore::new(original.clone());
    let mut idle_guard = match &args.cstates {
        Some(c) => Some(idle::Guard::save(c.idle.clone(), idle::restore_path())?),
        None => None,
    };
    let policies: Vec<idle::Policy> =
        args.cstates.as_ref().map_or_else(|| vec![idle::Policy::Default], |c| c.policies.clone());
    // One unit of the schedule is a pass over the clocksource pairs (see `idle::schedule`).
    let order = idle::schedule(args.schedule, policies.len(), args.runs, args.clocksources.len(), args.seed);
    let outcomes = runner::Runner {
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
    }
    .run(original.clone());
    restore.now()?;
    if let Some(g) = idle_guard.as_mut() {
        g.now()?;
    }
    if let Some(mut o) = otlp.take() {
        o.finish();
    }
    let restored = clocksource::current().unwrap_or_default();
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
    let runs = outcomes.runs;
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
        ring_bytes,
        policies: match args.cstates {
            Some(_) => report::per_policy(&runs, &policies, &outcomes.evidence, &segments, &loaded.config.windows),
            None => Vec::new(),
        },
        comparisons: match args.cstates {
            Some(_) => report::compare_policies(&runs, &policies, &segments, &loaded.config.windows),
            None => Vec::new(),
        },
        schedule: args.cstates.as_ref().map(|_| format!("{:?}", args.schedule).to_lowercase()),
        runs,
    };
    report::write_outputs(&args.out, &report, &outcomes.records, &attached.plan, env)?;
    Ok(report)
}
