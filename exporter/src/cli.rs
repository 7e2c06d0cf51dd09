//! Command-line interface: argument definitions and one function per command.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use std::sync::Arc;

use crate::{
    config::{Config, ConfigError, Loaded},
    daemon::{self, Daemon, StartError, TallySink},
    doctor,
    host::Environment,
    probe::{kernel::Kernel, loader::Engine},
    sink::{
        hdr::{HdrSink, SharedQuantiles},
        interference::{InterferenceSink, SharedInterference},
        otlp::{ExemplarStore, OtlpSink},
        prometheus::{self, server},
        window::{SharedWindows, WindowSink},
    },
};

/// Exit code for bad configuration or usage (clap uses it for usage errors too).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(name = "clockpath", version, about = "Kernel-resident perf exporter for the Linux time path")]
pub struct Cli {
    /// Configuration file (TOML), merged over the built-in defaults.
    #[arg(long, short, global = true, env = "CLOCKPATH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter (error, warn, info, debug, trace, or a tracing EnvFilter directive).
    #[arg(long, global = true, env = "CLOCKPATH_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach the configured chains and export what they measure (needs root).
    Run(RunArgs),
    /// Report what this machine can trace and what each configured chain would attach.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drive clocksource switches and measure each one (root; restores the clocksource).
    Session(SessionCliArgs),
    /// Analyse trace files: chains, outliers, medians with bootstrap CIs per session and
    /// group, histograms, plots.
    Analyze(AnalyzeArgs),
    /// Compare two inputs (or the groups of one input): difference of medians and variance
    /// ratio, with bootstrap CIs.
    Compare(CompareArgs),
    /// Bootstrap regression of each chain's total on its segments (and interference).
    Regress(RegressArgs),
    /// Generate synthetic clocksource-switch sessions (host and VM) from a documented model.
    Simulate(SimulateArgs),
    /// Print the effective configuration as TOML.
    Config {
        /// Print the built-in defaults, documented, instead of the effective configuration.
        #[arg(long)]
        default: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Stop after this many seconds (default: until SIGINT or SIGTERM).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Write a JSON summary (kernel counters, histogram totals, records received) here at exit.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SessionCliArgs {
    /// Switches to make.
    #[arg(long, default_value_t = 300)]
    pub runs: usize,
    /// Clocksources to cycle through, comma-separated (e.g. hpet,acpi_pm).
    #[arg(long, value_delimiter = ',', required = true)]
    pub clocksources: Vec<String>,
    /// A label for the session, KEY=VALUE (repeatable), e.g. --label cstate=max1.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Output directory for traces.csv, summary.json and summary.md.
    #[arg(long, default_value = "clockpath-session")]
    pub out: PathBuf,
    /// How long to wait for each switch's chain, in ms.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Measure in degraded mode even if the clocksource chain can attach.
    #[arg(long, hide = true)]
    pub force_degraded: bool,
}

/// Statistics options shared by the offline commands (defaults from `[windows]`).
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Count malformed lines and go on, instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// Outlier rejection: σ multiple.
    #[arg(long)]
    pub sigma: Option<f64>,
    /// Bootstrap resamples.
    #[arg(long)]
    pub resamples: Option<usize>,
    /// Confidence level.
    #[arg(long)]
    pub level: Option<f64>,
    /// RNG seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Runs kept per chain and session for the statistics (a uniform sample beyond).
    #[arg(long, default_value_t = 1_000_000)]
    pub reservoir: usize,
}

#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Trace files: CSV, JSON Lines or `seconds.nanoseconds probe_name` lines, plain or .gz.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Directory for report.md, report.json, histograms.{csv,json} and plots/.
    #[arg(long, default_value = "clockpath-analysis")]
    pub out: PathBuf,
    /// Do not draw SVG plots.
    #[arg(long)]
    pub no_plots: bool,
    #[command(flatten)]
    pub stats: StatsArgs,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// One input (with --group-by) or two (A then B).
    #[arg(required = true, num_args = 1..=2)]
    pub inputs: Vec<PathBuf>,
    /// Compare the groups of one input by this label.
    #[arg(long, value_parser = ["env", "governor", "cstate"])]
    pub group_by: Option<String>,
    /// Only this chain.
    #[arg(long)]
    pub chain: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stats: StatsArgs,
}

#[derive(Debug, clap::Args)]
pub struct RegressArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Only this chain.
    #[arg(long)]
    pub chain: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stats: StatsArgs,
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Output directory.
    #[arg(long, default_value = "clockpath-simulation")]
    pub out: PathBuf,
    /// Runs per session.
    #[arg(long, default_value_t = 300)]
    pub runs: usize,
    /// Environments, one session each (host, vm).
    #[arg(long, value_delimiter = ',', default_value = "host,vm")]
    pub envs: Vec<String>,
    /// C-state policies, one session each per environment (default, max_cstate=1).
    #[arg(long, value_delimiter = ',', default_value = "default")]
    pub cstates: Vec<String>,
    /// Constant added to switch_entry→first_read, in seconds (e.g. 1.111).
    #[arg(long, default_value_t = 0.0)]
    pub offset: f64,
    /// Fraction of outlier runs (first segment ×20).
    #[arg(long, default_value_t = 0.01)]
    pub outliers: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// csv, jsonl, or plain (`seconds.nanoseconds probe_name`, one file per session).
    #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl", "plain"])]
    pub format: String,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}`: a label is KEY=VALUE"))?;
    let valid = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("`{k}`: a label name is [a-zA-Z_][a-zA-Z0-9_]*"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim_end_matches('s').parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("`{s}`: the duration must be positive"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// An error with the exit code it maps to.
pub struct CliError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError { code: EXIT_FAILURE, error: e.into() }
    }
}

fn config_error(e: impl Into<anyhow::Error>) -> CliError {
    CliError { code: EXIT_CONFIG, error: e.into() }
}

pub fn main() -> Result<ExitCode, CliError> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return Ok(ExitCode::from(code));
        }
    };
    init_logging(&cli.log)?;
    match cli.command {
        Command::Config { default } => {
            if default {
                print!("{}", crate::config::DEFAULT_TOML);
            } else {
                let loaded = load_config(cli.config.as_deref())?;
                print!("{}", loaded.config.to_toml().context("printing the configuration")?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { json } => doctor_cmd(cli.config.as_deref(), json),
        Command::Run(args) => run_cmd(cli.config.as_deref(), args),
        Command::Session(args) => session_cmd(cli.config.as_deref(), args),
        Command::Analyze(args) => analyze_cmd(cli.config.as_deref(), args),
        Command::Compare(args) => compare_cmd(cli.config.as_deref(), args),
        Command::Regress(args) => regress_cmd(cli.config.as_deref(), args),
        Command::Simulate(args) => simulate_cmd(args),
    }
}

fn init_logging(filter: &str) -> Result<(), CliError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| config_error(anyhow::anyhow!("invalid --log filter `{filter}`: {e}")))?;
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    Ok(())
}

fn load_config(path: Option<&Path>) -> Result<Loaded, CliError> {
    Config::load(path).map_err(|e: ConfigError| config_error(e))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("clockpath-rt")
        .build()
        .context("starting the Tokio runtime")?)
}

fn start_error(e: StartError) -> CliError {
    match e {
        StartError::Config(_) => config_error(e),
        other => other.into(),
    }
}

fn doctor_cmd(config: Option<&Path>, json: bool) -> Result<ExitCode, CliError> {
    let loaded = load_config(config)?;
    let kernel = Kernel::open();
    let plans = daemon::plan(&loaded, &kernel).map_err(start_error)?;
    let environment = Environment::detect();
    let root = doctor::is_root();
    let btf = kernel.btf().map(|_| kernel.btf_path().display().to_string()).map_err(str::to_string);
    let tracefs = kernel.tracefs().map(|t| t.root().display().to_string()).map_err(str::to_string);
    let direct = crate::probe::plan::direct_entries(&plans);
    let (attach_kinds, chains) = match Engine::load(&loaded.config.probe, direct) {
        Ok(mut engine) => {
            let kinds = doctor::probe_kinds(&mut engine, &kernel);
            engine.attach(plans);
            // Dropping the engine detaches everything again.
            (kinds, std::mem::take(&mut engine.chains))
        }
        Err(e) => {
            let why = crate::probe::report(&e);
            let kinds = crate::probe::target::AttachKind::ALL
                .iter()
                .map(|&kind| doctor::KindSupport { kind, supported: false, detail: why.clone() })
                .collect();
            let chains = plans
                .into_iter()
                .map(|mut p| {
                    p.state = crate::probe::plan::ChainState::Disabled(format!("BPF object not loaded: {why}"));
                    p
                })
                .collect();
            (kinds, chains)
        }
    };
    let report = doctor::Report { environment, root, tracefs, btf, attach_kinds, chains };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).context("serializing the report")?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.anything_runs() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILURE) })
}

fn run_cmd(config: Option<&Path>, args: RunArgs) -> Result<ExitCode, CliError> {
    let loaded = load_config(config)?;
    let kernel = Kernel::open();
    let plans = daemon::plan(&loaded, &kernel).map_err(start_error)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let cfg = &loaded.config;
        // Bind before attaching anything: a taken port is a configuration error.
        let addr: std::net::SocketAddr =
            cfg.http.listen.parse().map_err(|e| config_error(anyhow::anyhow!("http.listen: {e}")))?;
        let listener = server::bind(addr).await.map_err(config_error)?;
        let environment = Environment::detect();
        let env = if cfg.environment.env == "auto" { environment.env.clone() } else { cfg.environment.env.clone() };
        let quantiles = SharedQuantiles::default();
        let tally = TallySink::default();
        let hdr = HdrSink::new(
            daemon::all_shapes(&plans),
            cfg.metrics.quantiles.clone(),
            Duration::from_secs(cfg.metrics.quantile_window_secs),
            quantiles.clone(),
        );
        let windows = SharedWindows::default();
        let window_sink = WindowSink::new(daemon::all_shapes(&plans), cfg.windows.clone(), windows.clone())
            .context("starting the statistics window worker")?;
        let interference = SharedInterference::default();
        let charging: Vec<bool> = {
            let mut v = vec![false; daemon::all_shapes(&plans).len()];
            for p in plans.iter().filter(|p| p.is_chain()) {
                v[p.index as usize] = p.charges_interference;
            }
            v
        };
        let interference_sink = InterferenceSink::new(charging, interference.clone());
        let sinks: Vec<Box<dyn crate::pipeline::Sink>> =
            vec![Box::new(tally.clone()), Box::new(hdr), Box::new(window_sink), Box::new(interference_sink)];
        let le_buckets = cfg
            .metrics
            .buckets_seconds
            .iter()
            .map(|b| prometheus::le_index(*b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| config_error(anyhow::anyhow!("metrics.buckets_seconds: {e}")))?;
        let exemplars = Arc::new(ExemplarStore::new(le_buckets.clone()));
        let mut otlp_stats = None;
        let recorder = cfg.recorder.clone();
        let raw = cfg.probe.raw_hits;
        let rec_env = env.clone();
        let (otlp_quantiles, otlp_windows, otlp_exemplars) = (quantiles.clone(), windows.clone(), exemplars.clone());
        let daemon = Daemon::start_with(&loaded, plans, |attached| {
            let mut sinks = sinks;
            if let Some(otlp) = OtlpSink::for_plans(
                &loaded,
                attached,
                &rec_env,
                Some(otlp_quantiles),
                Some(otlp_windows),
                Some(otlp_exemplars),
            )? {
                otlp_stats = Some(otlp.stats());
                sinks.push(Box::new(otlp));
            }
            if recorder.enabled {
                // Raw hits name their stage through the slot that wrote them.
                let slots = if raw { daemon::slot_stages(attached) } else { Default::default() };
                let dir = recorder.dir.clone();
                let rec =
                    crate::trace_io::recorder::Recorder::new(recorder, rec_env, daemon::all_shapes(attached), slots)
                        .map_err(|source| StartError::Sink {
                            what: format!("recorder: cannot write to {}", dir.display()),
                            source,
                        })?;
                sinks.push(Box::new(rec));
            }
            Ok(sinks)
        })
        .map_err(start_error)?;
        let exposition = prometheus::Exposition {
            plans: daemon.plans.clone(),
            maps: daemon.maps.clone(),
            stats: daemon.stats.clone(),
            quantiles,
            labels: prometheus::CommonLabels { env: env.clone(), statics: cfg.environment.labels.clone() },
            environment: prometheus::EnvironmentInfo {
                env: env.clone(),
                hypervisor: environment.hypervisor.clone(),
                governor: environment.cpufreq_governor.clone(),
                cstate_limit: environment.cstate_limit.clone(),
            },
            le_buckets,
            windows: Some(windows),
            interference: Some(interference),
            otlp: otlp_stats.clone(),
            program_stats: cfg.probe.bpf_stats.then(|| {
                Box::new(daemon.program_stats_fn())
                    as Box<dyn Fn() -> Vec<crate::probe::loader::ProgramStats> + Send + Sync>
            }),
        };
        let state = Arc::new(server::HttpState {
            registry: exposition.into_registry(),
            health: daemon.health.clone(),
            landing: server::landing_page(&daemon.plans, &env),
            exemplars: otlp_stats.is_some().then_some(exemplars),
        });
        let (stop_http, stop_rx) = tokio::sync::watch::channel(false);
        let http = tokio::spawn(server::serve(listener, state, stop_rx));
        tracing::info!(%addr, "serving /metrics, /healthz and /");
        wait_for_stop(args.duration).await?;
        tracing::info!("stopping: detaching probes and draining the ring buffer");
        let plans = daemon.plans.clone();
        let maps = daemon.maps.clone();
        let stats = daemon.stats.clone();
        let _sinks = daemon.stop().await;
        let _ = stop_http.send(true);
        let _ = http.await;
        let summary = {
            let m = maps.lock().map_err(|_| anyhow::anyhow!("kernel maps lock poisoned"))?;
            let t = tally.chains.lock().map_err(|_| anyhow::anyhow!("tally lock poisoned"))?;
            daemon::summarize(&plans, &m, &t, &stats)
        };
        for c in &summary.chains {
            tracing::info!(
                chain = %c.name,
                completed = c.completed,
                hist_segments = c.hist_segments,
                received = c.segments_received,
                lost = c.ring_lost_segments,
                "summary"
            );
        }
        if let Some(path) = &args.summary_json {
            let text = serde_json::to_string_pretty(&summary).context("serializing the summary")?;
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn session_cmd(config: Option<&Path>, args: SessionCliArgs) -> Result<ExitCode, CliError> {
    use std::sync::atomic::AtomicBool;
    let loaded = load_config(config)?;
    let _lock = crate::session::lock().map_err(|e| CliError { code: EXIT_FAILURE, error: e.into() })?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let env = match loaded.config.environment.env.as_str() {
        "auto" => Environment::detect().env,
        e => e.to_string(),
    };
    let session_args = crate::session::SessionArgs {
        runs: args.runs,
        clocksources: args.clocksources,
        labels: args.labels,
        out: args.out,
        timeout: Duration::from_millis(args.timeout_ms),
        force_degraded: args.force_degraded,
    };
    let report = crate::session::run(&loaded, &session_args, &env, stop).map_err(|e| match e {
        crate::session::SessionError::Usage(_) => config_error(e),
        crate::session::SessionError::Start(StartError::Config(_)) => config_error(e),
        other => other.into(),
    })?;
    print!("{}", crate::session::markdown(&report));
    println!("\nwrote {}", session_args.out.display());
    Ok(if report.interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS })
}

fn analyze_options(loaded: &Loaded, a: &StatsArgs) -> Result<crate::analysis::AnalyzeOptions, CliError> {
    let w = &loaded.config.windows;
    let mut boot = w.bootstrap;
    boot.resamples = a.resamples.unwrap_or(boot.resamples);
    boot.level = a.level.unwrap_or(boot.level);
    boot.seed = a.seed.unwrap_or(boot.seed);
    boot.validate().map_err(|e| config_error(anyhow::anyhow!("{e}")))?;
    let sigma = a.sigma.unwrap_or(w.sigma);
    crate::stats::reject_outliers(&[0.0], sigma).map_err(|e| config_error(anyhow::anyhow!("--sigma: {e}")))?;
    if a.reservoir < 10 {
        return Err(config_error(anyhow::anyhow!("--reservoir must keep at least 10 runs")));
    }
    Ok(crate::analysis::AnalyzeOptions {
        read: crate::trace_io::read::ReadOptions { skip_bad_lines: a.skip_bad_lines },
        reservoir: a.reservoir,
        sigma,
        bootstrap: boot,
        progress: true,
    })
}

fn collect(
    loaded: &Loaded,
    files: &[PathBuf],
    opts: &crate::analysis::AnalyzeOptions,
) -> Result<crate::analysis::Collected, CliError> {
    let c = crate::analysis::collect(files, &loaded.config, opts).map_err(|e| match e {
        crate::analysis::AnalyzeError::Read(crate::trace_io::read::ReadError::Io { .. }) => config_error(e),
        other => config_error(other),
    })?;
    if c.read.bad_lines > 0 {
        eprintln!(
            "clockpath: skipped {} malformed line(s); first: {}",
            c.read.bad_lines,
            c.read.bad_examples.join("; ")
        );
    }
    if c.read.partial_lines > 0 {
        eprintln!(
            "clockpath: {} file(s) ended with a partial line (a writer stopped mid-line); it was skipped",
            c.read.partial_lines
        );
    }
    if !c.unknown_probes.is_empty() {
        let u: Vec<String> = c.unknown_probes.iter().map(|(k, v)| format!("{k} ({v})")).collect();
        eprintln!("clockpath: unknown probe names, ignored: {}", u.join(", "));
    }
    Ok(c)
}

fn analyze_cmd(config: Option<&Path>, args: AnalyzeArgs) -> Result<ExitCode, CliError> {
    let loaded = load_config(config)?;
    let opts = analyze_options(&loaded, &args.stats)?;
    let c = collect(&loaded, &args.files, &opts)?;
    let report = crate::analysis::report::build(&c, &opts);
    crate::analysis::report::write(&args.out, &report, &c)
        .with_context(|| format!("writing the report to {}", args.out.display()))?;
    if !args.no_plots {
        let plots = crate::analysis::plot::write(&args.out.join("plots"), &report, &c)?;
        tracing::info!(count = plots.len(), "plots written");
    }
    print!("{}", crate::analysis::report::markdown(&report));
    println!("\nwrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn compare_cmd(config: Option<&Path>, args: CompareArgs) -> Result<ExitCode, CliError> {
    use crate::analysis::{RunRef, column_names, compare::compare, label_value};
    let loaded = load_config(config)?;
    let opts = analyze_options(&loaded, &args.stats)?;
    let mut results = Vec::new();
    match (args.inputs.as_slice(), &args.group_by) {
        ([a, b], None) => {
            let ca = collect(&loaded, std::slice::from_ref(a), &opts)?;
            let cb = collect(&loaded, std::slice::from_ref(b), &opts)?;
            for (name, da) in &ca.chains {
                if args.chain.as_ref().is_some_and(|c| c != name) {
                    continue;
                }
                let (Some(db), Some(shape)) = (cb.chains.get(name), &da.shape) else { continue };
                let ra: Vec<RunRef> = da.sessions.values().flat_map(|s| s.iter()).collect();
                let rb: Vec<RunRef> = db.sessions.values().flat_map(|s| s.iter()).collect();
                let (na, nb) = (a.display().to_string(), b.display().to_string());
                results.extend(compare(name, &column_names(shape), (&na, &ra), (&nb, &rb), &opts));
            }
        }
        ([one], Some(dim)) => {
            let c = collect(&loaded, std::slice::from_ref(one), &opts)?;
            for (name, d) in &c.chains {
                if args.chain.as_ref().is_some_and(|x| x != name) {
                    continue;
                }
                let Some(shape) = &d.shape else { continue };
                let mut by: std::collections::BTreeMap<String, Vec<RunRef>> = Default::default();
                for r in d.sessions.values().flat_map(|s| s.iter()) {
                    if let Some(v) = label_value(&c.labels(r.labels), dim) {
                        by.entry(v).or_default().push(r);
                    }
                }
                let groups: Vec<(String, Vec<RunRef>)> = by.into_iter().collect();
                if groups.len() < 2 {
                    return Err(config_error(anyhow::anyhow!(
                        "chain {name}: --group-by {dim} needs two values of `{dim}` in the input, found {}",
                        groups.len()
                    )));
                }
                let (ref_name, ref_runs) = &groups[0];
                for (g, runs) in &groups[1..] {
                    results.extend(compare(name, &column_names(shape), (ref_name, ref_runs), (g, runs), &opts));
                }
            }
        }
        ([_], None) => {
            return Err(config_error(anyhow::anyhow!(
                "give two inputs, or one input and --group-by env|governor|cstate"
            )));
        }
        _ => return Err(config_error(anyhow::anyhow!("--group-by compares the groups of a single input"))),
    }
    if results.is_empty() {
        return Err(config_error(anyhow::anyhow!("nothing to compare: no chain has complete runs on both sides")));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results).context("serializing")?);
    } else {
        for r in &results {
            println!("{} {} ({} vs {}, n = {} / {}): {}", r.chain, r.segment, r.b, r.a, r.b_runs, r.a_runs, r.verdict);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn regress_cmd(config: Option<&Path>, args: RegressArgs) -> Result<ExitCode, CliError> {
    let loaded = load_config(config)?;
    let opts = analyze_options(&loaded, &args.stats)?;
    let c = collect(&loaded, &args.files, &opts)?;
    let chains: Vec<String> = match &args.chain {
        Some(ch) => vec![ch.clone()],
        None => c.chains.keys().cloned().collect(),
    };
    let mut all = Vec::new();
    for ch in chains {
        let r = crate::analysis::regress::regress(&c, &ch, &opts)
            .map_err(|e| config_error(anyhow::anyhow!("chain {ch}: {e}")))?;
        if !args.json {
            println!(
                "## {ch}: total on components ({} runs, R² = {:.4}, {} of {} resamples solvable)\n",
                r.runs, r.r_squared, r.resamples_used, opts.bootstrap.resamples
            );
            println!("| coefficient | estimate | {:.0} % CI |\n| --- | ---: | --- |", r.level * 100.0);
            for co in &r.coefficients {
                println!("| {} | {:.4} | [{:.4}, {:.4}] |", co.name, co.estimate, co.lower, co.upper);
            }
            println!();
        }
        all.push((ch, r));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all).context("serializing")?);
    }
    Ok(ExitCode::SUCCESS)
}

fn simulate_cmd(args: SimulateArgs) -> Result<ExitCode, CliError> {
    use crate::analysis::simulate::{SimulateOptions, simulate};
    if args.runs == 0 || !(0.0..=1.0).contains(&args.outliers) || !args.offset.is_finite() || args.offset < 0.0 {
        return Err(config_error(anyhow::anyhow!(
            "--runs must be positive, --outliers within [0, 1], --offset a non-negative number of seconds"
        )));
    }
    let format = match args.format.as_str() {
        "csv" => Some(crate::trace_io::Format::Csv),
        "jsonl" => Some(crate::trace_io::Format::Jsonl),
        _ => None,
    };
    let o = SimulateOptions {
        runs: args.runs,
        envs: args.envs,
        cstates: args.cstates,
        offset_s: args.offset,
        outliers: args.outliers,
        seed: args.seed,
        format,
    };
    let files = simulate(&args.out, &o).with_context(|| format!("writing to {}", args.out.display()))?;
    for f in files {
        println!("{f}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_stop(duration: Option<Duration>) -> Result<(), CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = timer => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_must_be_positive_numbers() {
        assert_eq!(parse_seconds("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_seconds("10s").unwrap(), Duration::from_secs(10));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("abc").is_err());
        assert!(parse_seconds("-1").is_err());
    }
}
