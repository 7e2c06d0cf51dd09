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
    host::Environment,
    session::{self, SessionArgs, SessionError},
};

pub(super) fn session_cmd(config: Option<&Path>, args: SessionCliArgs) -> Result<ExitCode, CliError> {
    crate::process::tune_allocator();
    let loaded = load_config(config)?;
    let _lock = session::clocksource::lock().map_err(|e| CliError { code: EXIT_FAILURE, error: e.into() })?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let env = Environment::detect().env_label(&loaded.config.environment.env);
    let session_args = SessionArgs {
        runs: args.runs,
        clocksources: args.clocksources,
        labels: args.labels,
        out: args.out,
        timeout: Duration::from_millis(args.timeout_ms),
        force_degraded: args.force_degraded,
    };
    let report = session::run(&loaded, &session_args, &env, stop).map_err(|e| match e {
        SessionError::Usage(_) | SessionError::Start(StartError::Config(_)) => config_error(e),
        other => other.into(),
    })?;
    print!("{}", session::markdown(&report));
    println!("\nwrote {}", session_args.out.display());
    Ok(if report.interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS })
}
