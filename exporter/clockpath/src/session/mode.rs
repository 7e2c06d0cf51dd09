//! Which chain a session measures: the clocksource chain when it attaches (kernel mode), else
//! the degraded fallback, the `syscalls:sys_enter_write`/`sys_exit_write` tracepoints of the
//! runner's own thread around each write to `current_clocksource` (the whole switch as
//! userspace sees it).

use std::sync::mpsc;

use clockpath_offline::chain::ChainRecord;
use clockpath_probe::{kernel::Kernel, plan::ChainPlan};
use serde::Serialize;

use super::SessionError;
use crate::{
    config::{ChainConfig, Config, Loaded, StageConfig, TargetConfig},
    daemon::{self, Daemon, StartError},
    pipeline::Sink,
    sinks::{Builder, tally::TallySink},
};

/// The chain a session measures.
pub const CHAIN: &str = "clocksource_switch";
/// Its degraded fallback.
pub const DEGRADED_CHAIN: &str = "clocksource_write";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The clocksource chain, inside the kernel.
    Kernel,
    /// The runner's write(2) to `current_clocksource`.
    Degraded,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel",
            Mode::Degraded => "degraded",
        }
    }

    pub fn chain(self) -> &'static str {
        match self {
            Mode::Kernel => CHAIN,
            Mode::Degraded => DEGRADED_CHAIN,
        }
    }
}

/// Forwards chain records to the session loop.
struct Feed(mpsc::Sender<ChainRecord>);

impl Sink for Feed {
    fn on_chain(&mut self, rec: &ChainRecord) {
        let _ = self.0.send(rec.clone());
    }
}

/// A running daemon measuring the session's chain.
pub struct Attached {
    pub daemon: Daemon,
    pub mode: Mode,
    /// The session chain's attached plan.
    pub plan: ChainPlan,
    pub tally: TallySink,
}

/// The degraded chain: thread `tid`'s write(2) to current_clocksource.
pub fn degraded_chain(tid: u64) -> ChainConfig {
    let stage = |name: &str, tp: &str| StageConfig {
        name: name.into(),
        key: Some("tid".into()),
        targets: vec![TargetConfig { attach: tp.into(), key: None, filter: None }],
        points: Vec::new(),
        first_hit_only: false,
        capture: None,
        match_capture: false,
        filter: Some(format!("tid == {tid}")),
        clock: None,
    };
    ChainConfig {
        enabled: true,
        description: "Degraded mode: the session runner's write to current_clocksource (syscall entry → exit), on kernels where the clocksource chain cannot attach".into(),
        timeout_ms: 5000,
        interference: false,
        stages: vec![
            stage("write_enter", "tracepoint:syscalls:sys_enter_write"),
            stage("write_exit", "tracepoint:syscalls:sys_exit_write"),
        ],
        abort: Vec::new(),
        sample_every: 1,
        causes_from: None,
    }
}

/// The smallest ring a session runs with.
pub const SESSION_RING_BYTES: u32 = 64 << 20;

/// `config` with only `name` enabled (added when `chain` is given).
fn only_chain(config: &Config, name: &str, chain: Option<ChainConfig>) -> Config {
    let mut c = config.clone();
    for (n, ch) in c.chains.iter_mut() {
        ch.enabled = n == name;
    }
    if let Some(ch) = chain {
        c.chains.insert(name.to_string(), ch);
    }
    // Each switch waits for its record: drain often.
    c.probe.drain_interval_ms = c.probe.drain_interval_ms.min(5);
    // Sessions keep whole traces: at least 64 MiB of ring (records lost are in the summary).
    c.probe.ring_bytes = c.probe.ring_bytes.max(SESSION_RING_BYTES);
    c
}

/// The id of the calling thread (the degraded chain filters on it).
pub fn gettid() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

/// Attach the clocksource chain, falling back to degraded mode when it cannot run (or when
/// `force_degraded`). Records go to `feed`. Must run inside a Tokio runtime; the writes the
/// degraded chain measures must come from the calling thread.
pub fn attach(
    loaded: &Loaded,
    kernel: &Kernel,
    env: &str,
    feed: &mpsc::Sender<ChainRecord>,
    force_degraded: bool,
    rt: &tokio::runtime::Runtime,
) -> Result<Attached, SessionError> {
    let start = |mode: Mode, cfg: Config| -> Result<Attached, SessionError> {
        let l = loaded.with_config(cfg);
        let plans = daemon::plan(&l, kernel)?;
        let mut tally = None;
        let daemon = Daemon::start_with(&l, plans, |attached| {
            let set = Builder::new(&l, attached, env).with(Box::new(Feed(feed.clone()))).tally().build();
            tally = set.published.tally;
            Ok(set.sinks)
        })?;
        let plan = daemon.plans.iter().find(|p| p.name == mode.chain()).cloned();
        match (plan, tally) {
            (Some(plan), Some(tally)) => Ok(Attached { daemon, mode, plan, tally }),
            _ => {
                rt.block_on(daemon.stop());
                Err(StartError::NothingRuns(format!("{}: not planned", mode.chain())).into())
            }
        }
    };
    if !force_degraded {
        match start(Mode::Kernel, only_chain(&loaded.config, CHAIN, None)) {
            Ok(a) if a.plan.is_running() => return Ok(a),
            Ok(a) => {
                tracing::warn!(reason = ?a.plan.state, "clocksource chain unavailable: running the session in degraded mode");
                rt.block_on(a.daemon.stop());
            }
            Err(error) => tracing::warn!(%error, "clocksource chain unavailable: running the session in degraded mode"),
        }
    }
    let a = start(Mode::Degraded, only_chain(&loaded.config, DEGRADED_CHAIN, Some(degraded_chain(gettid()))))?;
    if !a.plan.is_running() {
        let state = format!("{}: {:?}", DEGRADED_CHAIN, a.plan.state);
        rt.block_on(a.daemon.stop());
        return Err(StartError::NothingRuns(state).into());
    }
    Ok(a)
}
