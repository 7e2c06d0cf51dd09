//! `clockpath session`: one session at a time per machine, stopped cleanly by SIGINT/SIGTERM.

use std::{
    path::Path,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context as _;

use super::{CliError, EXIT_FAILURE, SessionCliArgs, config_error, load_config};
use crate::{
    daemon::StartError,
    host::Machine,
    session::{self, SessionArgs, SessionError},
};

pub(super) fn session_cmd(config: Option<&Path>, args: SessionCliArgs) -> Result<ExitCode, CliError> {
    crate::process::tune_allocator();
    let loaded = load_config(config)?;
    let cstates = args
        .cstates
        .iter()
        .map(|s| session::idle::Policy::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(config_error)?;
    // Before the lock: a policy this machine cannot apply, or cannot apply for lack of
    // permission, is refused (exit 2) with nothing changed.
    let cstates = session::idle::preflight(Path::new(session::idle::CPU_DIR), cstates).map_err(config_error)?;
    let governors = session::cpufreq::preflight(Path::new(session::cpufreq::CPUFREQ_DIR), args.governors.clone())
        .map_err(config_error)?;
    let _lock = session::clocksource::lock().map_err(|e| CliError { code: EXIT_FAILURE, error: e.into() })?;
    // A session that did not end (killed, crashed) may have left idle states or governors
    // changed.
    let failed = |e: SessionError| CliError { code: EXIT_FAILURE, error: e.into() };
    let leftovers = [
        session::restore_file::restore_leftover::<session::idle::Cpuidle>(&session::restore_file::path::<
            session::idle::Cpuidle,
        >())
        .map_err(failed)?,
        session::restore_file::restore_leftover::<session::cpufreq::Cpufreq>(&session::restore_file::path::<
            session::cpufreq::Cpufreq,
        >())
        .map_err(failed)?,
    ];
    for said in leftovers.iter().flatten() {
        tracing::warn!("{said}");
        println!("{said}");
    }
    if args.restore {
        if leftovers.iter().all(Option::is_none) {
            println!(
                "nothing to restore: no session left {} or {}",
                session::restore_file::path::<session::idle::Cpuidle>().display(),
                session::restore_file::path::<session::cpufreq::Cpufreq>().display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    // Before any change: the machine as the user left it.
    let machine = Machine::detect();
    let env = machine.environment.env_label(&loaded.config.environment.env);
    let session_args = SessionArgs {
        runs: args.runs,
        clocksources: args.clocksources,
        labels: args.labels,
        out: args.out,
        timeout: Duration::from_millis(args.timeout_ms),
        force_degraded: args.force_degraded,
        cstates,
        governors,
        schedule: args.schedule,
        seed: args.seed,
    };
    let report = session::run(&loaded, &session_args, &env, machine, stop).map_err(|e| match e {
        SessionError::Usage(_) | SessionError::Start(StartError::Config(_)) => config_error(e),
        other => other.into(),
    })?;
    print!("{}", session::markdown(&report));
    println!("\nwrote {}", session_args.out.display());
    Ok(if report.interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS })
}
