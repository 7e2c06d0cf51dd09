//! Command-line interface: argument definitions, exit codes, and one function per command
//! (`run`, `session`, the offline commands in their own modules).

mod clocks;
mod fleet;
mod manual;
mod offline;
mod run;
mod session;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use clockpath_probe::{capture, kernel::Kernel};

use crate::{
    config::{Config, ConfigError, Loaded},
    daemon::{self, StartError},
    doctor,
};

/// Exit code for bad configuration or usage (clap uses it for usage errors too).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of `analyze` when no chain in the input completed (the report is still written).
pub const EXIT_NO_COMPLETE_CHAIN: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "clockpath",
    version = env!("BUILD_LONG_VERSION"),
    about = "Kernel-resident perf exporter for the Linux time path",
    after_help = "Configuration: built-in defaults (`clockpath config --default`), then --config FILE, then \
                  CLOCKPATH_SECTION__KEY environment variables (e.g. CLOCKPATH_HTTP__LISTEN=127.0.0.1:9911).\n\
                  Documentation: docs/src (the book) in the source tree."
)]
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
    /// Attach the configured chains and export what they measure (needs root, or CAP_BPF, CAP_PERFMON and CAP_SYSLOG: see `doctor`).
    #[command(after_help = "Examples:\n  \
        clockpath run                                 serve /metrics on 0.0.0.0:39111 (http.listen)\n  \
        clockpath run --listen 127.0.0.1:9911         on another address\n  \
        clockpath run --duration 60 --summary-json s.json\n  \
        CLOCKPATH_RECORDER__ENABLED=true clockpath run   record stage hits to clockpath-traces/")]
    Run(RunArgs),
    /// Report what this machine can trace and what each configured chain would attach.
    #[command(
        after_help = "Examples:\n  clockpath doctor\n  clockpath doctor --json | jq .chains\n  clockpath doctor --capture fixture/"
    )]
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Instead of the report, capture the kernel facts the configured chains depend on
        /// (kallsyms, tracepoint formats, traceable functions, a BTF slice, clocksources) into
        /// DIR: a fixture the plan resolver reads like this kernel (tests, bug reports).
        #[arg(long, value_name = "DIR")]
        capture: Option<PathBuf>,
    },
    /// Drive clocksource switches and measure each one (root; restores the clocksource).
    #[command(after_help = "Examples:\n  \
        clockpath session --clocksources hpet,acpi_pm --runs 300 --out s1\n  \
        clockpath session --clocksources hpet,tsc --cstates default,max_cstate=1 --out s2")]
    Session(SessionCliArgs),
    /// Analyse trace files: chains, outliers, medians with bootstrap CIs per session and
    /// group, histograms, plots.
    #[command(after_help = "Examples:\n  \
        clockpath analyze s1/traces.csv --out report/\n  \
        clockpath analyze clockpath-traces/*.csv --sigma 3 --resamples 2000 --no-plots\n\n\
        Exit status 3: no chain in the input completed (the report is written and says where \
        the instances stopped).")]
    Analyze(AnalyzeArgs),
    /// Compare two inputs (or the groups of one input): difference of medians and variance
    /// ratio, with bootstrap CIs.
    #[command(after_help = "Examples:\n  \
        clockpath compare host/traces.csv vm/traces.csv\n  \
        clockpath compare sessions.csv --group-by env\n  \
        clockpath compare --prometheus http://prom:9090 --group-by env")]
    Compare(CompareArgs),
    /// What explains a chain's time: each segment's share of the total's variance, a segment
    /// on interference and session factors, an outer chain on the inner one, and a check of
    /// the total against independent segments; all with bootstrap CIs.
    #[command(
        after_help = "Examples:\n  clockpath regress s1/traces.csv\n  clockpath regress sessions.csv --factor cstate"
    )]
    Regress(RegressArgs),
    /// Generate synthetic clocksource-switch sessions (host and VM) from a documented model.
    #[command(after_help = "Examples:\n  \
        clockpath simulate --out sim/ --offset 1.111     the constant offset of two clock domains\n  \
        clockpath analyze sim/sessions.csv --out sim-report/")]
    Simulate(SimulateArgs),
    /// Audit this machine's clocks: every clock a trace may be stamped with (clock_gettime ids,
    /// BPF helpers, ftrace trace clocks, the TSC, PTP clocks, a PPS phase) against
    /// CLOCK_MONOTONIC, with uncertainty, drift and resolution; unavailable ones with the reason.
    #[command(after_help = "Examples:\n  \
        clockpath clocks\n  \
        clockpath clocks --json --out audit.json\n  \
        clockpath clocks --only posix:boottime,ftrace:local")]
    Clocks(clocks::ClocksArgs),
    /// Is a segment's constant a clock-domain offset? Compares it with every difference of two
    /// audited clocks and with structural constants, and gives the residual latency.
    #[command(after_help = "Examples:\n  \
        clockpath explain trace.csv                      against this machine's clocks, now\n  \
        clockpath explain trace.csv --clocks audit.json --boot-id $(cat /proc/sys/kernel/random/boot_id)\n  \
        clockpath explain --offset 1.111 --clocks audit.json")]
    Explain(clocks::ExplainArgs),
    /// Write man pages for clockpath and each subcommand (generated from this CLI, so they say
    /// what `--help` says) into DIR.
    #[command(after_help = "Examples:\n  \
        clockpath man --out man/                         then: man -l man/clockpath-run.1\n  \
        clockpath man --out /usr/local/share/man/man1")]
    Man {
        /// Directory for clockpath.1 and clockpath-SUBCOMMAND.1 (made if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print a shell completion script for SHELL (generated from this CLI).
    #[command(after_help = "Examples:\n  \
        clockpath completions bash > /etc/bash_completion.d/clockpath\n  \
        clockpath completions zsh > ~/.zfunc/_clockpath\n  \
        clockpath completions fish > ~/.config/fish/completions/clockpath.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the effective configuration as TOML.
    #[command(
        after_help = "Examples:\n  clockpath config --default > clockpath.toml\n  clockpath --config clockpath.toml config\n  \
                      clockpath config --reference > docs/src/config-reference.md"
    )]
    Config {
        /// Print the built-in defaults, documented, instead of the effective configuration.
        #[arg(long, conflicts_with = "reference")]
        default: bool,
        /// Print the configuration reference (Markdown: every setting, its default, its
        /// environment variable and meaning; every key of a chain).
        #[arg(long)]
        reference: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Serve /metrics, /healthz and / on ADDRESS:PORT (default: http.listen, 0.0.0.0:39111;
    /// also CLOCKPATH_HTTP__LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Stop after this many seconds (default: until SIGINT or SIGTERM).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Write a JSON summary (kernel counters, histogram totals, records received) here at exit
    /// (`-`: standard output; a file is never written through a symbolic link).
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SessionCliArgs {
    /// Switches to make (per C-state policy with --cstates).
    #[arg(long, default_value_t = 300)]
    pub runs: usize,
    /// Clocksources to cycle through, comma-separated (e.g. hpet,acpi_pm).
    #[arg(long, value_delimiter = ',', required_unless_present = "restore")]
    pub clocksources: Vec<String>,
    /// C-state policies to compare, comma-separated: default, max_cstate=N (idle states up to
    /// N), poll. `--runs` runs each; set at runtime through cpuidle sysfs and restored after.
    #[arg(long, value_delimiter = ',')]
    pub cstates: Vec<String>,
    /// cpufreq governors to compare, comma-separated (e.g. performance,powersave): every
    /// C-state policy runs under each, `--runs` runs each. Only where the machine has cpufreq.
    #[arg(long, value_delimiter = ',')]
    pub governors: Vec<String>,
    /// Order of the policies over the runs.
    #[arg(long, value_enum, default_value = "interleaved")]
    pub schedule: crate::session::idle::Schedule,
    /// Seed of the random schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only put back the idle-state settings and governors a session that did not end left
    /// behind.
    #[arg(long, conflicts_with_all = ["clocksources", "cstates", "governors"])]
    pub restore: bool,
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

/// How the outlier rule measures σ (see `clockpath_offline::stats::Spread`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OutlierSpread {
    Sd,
    Mad,
}

/// Statistics options shared by the offline commands (defaults from `[windows]`).
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Count malformed lines and go on, instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// Outlier rejection: runs beyond this many σ from the median are rejected [default:
    /// windows.sigma, 3].
    #[arg(long)]
    pub sigma: Option<f64>,
    /// How the outlier rule measures σ: `sd` (the sample standard deviation: the
    /// investigation's rule) or `mad` (1.4826 × the median absolute deviation, which the far
    /// runs it judges do not inflate; for skewed segments and small sessions).
    #[arg(long, value_enum, default_value = "sd", value_name = "SPREAD")]
    pub outlier_spread: OutlierSpread,
    /// Bootstrap resamples [default: windows.bootstrap.resamples, 500].
    #[arg(long)]
    pub resamples: Option<usize>,
    /// Confidence level of the intervals [default: windows.bootstrap.level, 0.95].
    #[arg(long)]
    pub level: Option<f64>,
    /// Seed of the bootstrap's random numbers: the same seed gives the same intervals
    /// [default: windows.bootstrap.seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Runs kept per chain and session for the statistics (a uniform sample beyond).
    #[arg(long, default_value_t = 1_000_000)]
    pub reservoir: usize,
    /// Memory for sorting input whose lines are out of time order (beyond it, sorted runs go
    /// to temporary files), e.g. 256M, 1G, 64K.
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
    pub sort_memory: usize,
    /// Threads for the per-session and per-group statistics (default: one per CPU). Results
    /// do not depend on it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Subtract timestamps of stages stamped on different clocks (their `clock` label, e.g. a
    /// chain with a stage on `tai`): the segments then include the clocks' offset. Refused
    /// without it.
    #[arg(long)]
    pub mixed_clocks: bool,
}

#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Trace files: CSV, JSON Lines or `seconds.nanoseconds probe_name` lines (plain or .gz), or
    /// Parquet; in any line order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Directory for report.md, report.json, histograms.{csv,json} and plots/.
    #[arg(long, default_value = "clockpath-analysis")]
    pub out: PathBuf,
    /// Do not draw SVG plots.
    #[arg(long)]
    pub no_plots: bool,
    #[command(flatten)]
    pub align: offline::AlignArgs,
    #[command(flatten)]
    pub stats: StatsArgs,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Two inputs (A then B), or with --group-by any number of trace files read together
    /// (e.g. the recorders of a fleet); none with --prometheus.
    #[arg(required_unless_present = "prometheus", num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Compare the groups of the inputs by this label: env, governor, cstate, or any label the
    /// traces carry (old_clocksource, a session's --label, a machine fact). With --prometheus:
    /// env, cstate, governor, instance or any label of the histogram series.
    #[arg(long, visible_alias = "by", value_name = "LABEL", value_parser = parse_label_name)]
    pub group_by: Option<String>,
    /// Compare the fleet's exact histograms in this Prometheus (URL of its HTTP API) instead of
    /// trace files: each group's bucket counts over --range.
    #[arg(long, value_name = "URL", conflicts_with = "inputs", requires = "group_by")]
    pub prometheus: Option<String>,
    /// With --prometheus: the range the histograms' increase is taken over (e.g. 30m, 1h).
    #[arg(long, default_value = "1h", value_parser = parse_prometheus_range, requires = "prometheus")]
    pub range: String,
    /// With --prometheus: only this segment (`a->b`).
    #[arg(long, requires = "prometheus")]
    pub segment: Option<String>,
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
    /// Trace files, as for `analyze`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Only this chain.
    #[arg(long)]
    pub chain: Option<String>,
    /// The segment the explanatory regression explains (`a->b`; default the first).
    #[arg(long)]
    pub segment: Option<String>,
    /// A session factor to regress on (a label: env, cstate, governor, clocksource, or any
    /// other), repeatable; default every one of env, cstate, governor and clocksource with two
    /// levels or more. A factor asked for with one level is refused.
    #[arg(long = "factor")]
    pub factors: Vec<String>,
    /// A chain whose instances bracket this chain's (e.g. clocksource_write around
    /// clocksource_switch): its total on this chain's segments, the intercept being the part no
    /// probe of this chain covers.
    #[arg(long)]
    pub outer: Option<String>,
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
    /// cpufreq governors, one session each (they change nothing: a factor without an effect).
    #[arg(long, value_delimiter = ',', default_value = "performance")]
    pub governors: Vec<String>,
    /// Charge interference to the first segment: IRQ time that adds to it one for one, softirq
    /// time that adds nothing.
    #[arg(long)]
    pub interference: bool,
    /// Also record an outer chain (clocksource_write) around each switch, 5 µs + Exp(2 µs)
    /// longer than it.
    #[arg(long)]
    pub outer: bool,
    /// Constant added to switch_entry→first_read, in seconds (e.g. 1.111).
    #[arg(long, default_value_t = 0.0)]
    pub offset: f64,
    /// Fraction of outlier runs (first segment ×20).
    #[arg(long, default_value_t = 0.01)]
    pub outliers: f64,
    /// Seed of the model's random numbers: the same seed gives the same sessions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Sessions per (env, cstate, governor): repeated recordings of the same setting.
    #[arg(long, default_value_t = 1)]
    pub sessions: usize,
    /// SD of each session's own shift of switch_entry→first_read, µs (what differs between
    /// recordings of the same setting: 0 makes sessions of one setting alike).
    #[arg(long, default_value_t = 0.0, value_name = "MICROSECONDS")]
    pub session_sd: f64,
    /// csv, jsonl, parquet, or plain (`seconds.nanoseconds probe_name`, one file per session).
    #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl", "parquet", "plain"])]
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

/// A byte size: a number with an optional binary K, M or G suffix.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1usize << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: usize = num.trim().parse().map_err(|_| format!("`{s}` is not a size (a number with K, M or G)"))?;
    n.checked_mul(mul).filter(|b| *b > 0).ok_or_else(|| format!("`{s}`: the size must be positive and fit in memory"))
}

fn parse_label_name(s: &str) -> Result<String, String> {
    let valid = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid { Ok(s.to_string()) } else { Err(format!("`{s}`: a label name is [a-zA-Z_][a-zA-Z0-9_]*")) }
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

/// A PromQL range: a humantime duration given in whole seconds (`90s`, `30m`, `1h`).
fn parse_prometheus_range(s: &str) -> Result<String, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 30m, 1h)"))?;
    if d.as_secs() == 0 || d.subsec_nanos() != 0 {
        return Err(format!("`{s}`: a range of whole seconds, at least 1 s"));
    }
    Ok(format!("{}s", d.as_secs()))
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
    // doctor's report gives every disabled chain's reason; the loader's warning would repeat
    // it on stderr (an explicit --log still shows it).
    let quieter = format!("{},clockpath_probe::loader=error", cli.log);
    init_logging(if matches!(cli.command, Command::Doctor { .. }) && cli.log == "info" { &quieter } else { &cli.log })?;
    if !matches!(cli.command, Command::Run(_) | Command::Session(_)) {
        // A command that prints and exits ends quietly when its reader goes away (`doctor
        // --json | head -1`), as other Unix tools do, instead of panicking in println!. The
        // exporter and sessions keep SIGPIPE ignored: they must outlive any one reader, and a
        // session must restore the clocksource.
        // SAFETY: setting a signal's disposition to its default.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Config { default, reference } => {
            if reference {
                print!("{}", crate::config::reference::markdown());
            } else if default {
                print!("{}", crate::config::DEFAULT_TOML);
            } else {
                let loaded = load_config(cli.config.as_deref())?;
                print!("{}", loaded.config.to_toml().context("printing the configuration")?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { json, capture: None } => doctor_cmd(cli.config.as_deref(), json),
        Command::Doctor { capture: Some(dir), .. } => capture_cmd(cli.config.as_deref(), &dir),
        Command::Run(args) => run::run_cmd(cli.config.as_deref(), args),
        Command::Session(args) => session::session_cmd(cli.config.as_deref(), args),
        Command::Analyze(args) => offline::analyze_cmd(cli.config.as_deref(), args),
        Command::Compare(args) if args.prometheus.is_some() => fleet::compare_cmd(cli.config.as_deref(), args),
        Command::Compare(args) => offline::compare_cmd(cli.config.as_deref(), args),
        Command::Regress(args) => offline::regress_cmd(cli.config.as_deref(), args),
        Command::Simulate(args) => offline::simulate_cmd(args),
        Command::Clocks(args) => clocks::clocks_cmd(cli.config.as_deref(), args),
        Command::Explain(args) => clocks::explain_cmd(cli.config.as_deref(), args),
        Command::Man { out } => manual::man_cmd(&out),
        Command::Completions { shell } => manual::completions_cmd(shell),
    }
}

fn init_logging(filter: &str) -> Result<(), CliError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| config_error(anyhow::anyhow!("invalid --log filter `{filter}`: {e}")))?;
    // Colours only for a terminal: logs redirected to files and journals stay plain text.
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    Ok(())
}

fn load_config(path: Option<&Path>) -> Result<Loaded, CliError> {
    Config::load(path).map_err(|e: ConfigError| config_error(e))
}

fn runtime(drop_capabilities: bool) -> Result<tokio::runtime::Runtime, CliError> {
    // One worker: the runtime only drains the ring, sweeps and serves scrapes (assembly and
    // statistics have threads of their own). A second worker mostly woke the first to steal
    // its timer wakeups, a context switch each, which was most of the idle CPU.
    //
    // With `drop_capabilities` its threads hold none: they serve scrapes and read the ring, none of which
    // needs one (attaching happens on the calling thread). A failure here is caught by
    // `privileges::verify` after attaching.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("clockpath-rt")
        .on_thread_start(move || {
            if drop_capabilities {
                crate::privileges::drop_thread_or_log(&[], "runtime");
            }
        })
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
    let report = doctor::examine(&loaded, &kernel, plans);
    if json {
        println!("{}", serde_json::to_string_pretty(&report).context("serializing the report")?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.anything_runs() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILURE) })
}

fn capture_cmd(config: Option<&Path>, dir: &Path) -> Result<ExitCode, CliError> {
    let loaded = load_config(config)?;
    let kernel = Kernel::open();
    // The chains a session may attach too: its degraded fallback.
    let mut specs = loaded.config.chain_specs();
    specs.push(crate::session::mode::degraded_chain(0).spec(crate::session::DEGRADED_CHAIN));
    let c = capture::capture(&kernel, &specs, doctor::CAPTURE_FUNCTIONS, dir)
        .with_context(|| format!("capturing kernel facts into {}", dir.display()))?;
    println!(
        "captured {} ({} functions, {} tracepoints, {} structs, BTF slice {} bytes) into {}",
        kernel.release(),
        c.functions.len(),
        c.tracepoints.len(),
        c.structs.len(),
        c.btf_bytes,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
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
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
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

#[cfg(test)]
mod examples_tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::Cli;

    /// Every example in a subcommand's help parses as that command line (so none rots), and
    /// every subcommand has some.
    #[test]
    fn every_subcommand_has_examples_that_parse() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            let help = sub.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            let examples: Vec<&str> =
                help.lines().filter_map(|l| l.trim_start().split("clockpath ").nth(1).map(|_| l.trim())).collect();
            assert!(help.starts_with("Examples:") && !examples.is_empty(), "{}: no examples", sub.get_name());
            for line in examples {
                // The command up to a pipe or a comment column (two spaces), without leading
                // VAR=value assignments; a `$(…)` substitution stands for one word.
                let cmd = line.split(['|', '>']).next().unwrap_or(line);
                let cmd = cmd.split("  ").next().unwrap_or(cmd);
                let words: Vec<String> = cmd
                    .split_whitespace()
                    .skip_while(|w| w.contains('=') && !w.starts_with('-'))
                    .map(|w| if w.starts_with("$(") { "x".to_string() } else { w.to_string() })
                    .filter(|w| !w.ends_with(')') || w == "x")
                    .collect();
                assert_eq!(words.first().map(String::as_str), Some("clockpath"), "{line}");
                if let Err(e) = Cli::try_parse_from(&words) {
                    panic!("{}: example `{line}` does not parse: {e}", sub.get_name());
                }
            }
        }
    }
}
