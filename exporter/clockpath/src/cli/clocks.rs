//! `clockpath clocks` (the audit of this machine's clocks) and `clockpath explain` (is a
//! segment's constant a clock-domain offset?).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clockpath_offline::{
    analysis,
    clockdomain::{
        audit::ClockAudit,
        explain::{self, ExplainOptions, Observed},
    },
    stats,
};
use clockpath_probe::clocks;

use super::{CliError, StatsArgs, config_error, load_config, offline};
use crate::config::Loaded;

#[derive(Debug, clap::Args)]
pub struct ClocksArgs {
    /// Print the audit as JSON (schema `clockpath-clock-audit/1`, documented in the book).
    #[arg(long)]
    pub json: bool,
    /// Seconds between the first and the last round of reads; drift is measured over it.
    #[arg(long, value_name = "SECONDS", default_value = "0.5", value_parser = super::parse_seconds)]
    pub duration: Duration,
    /// Bracketed reads per clock and round (the tightest counts).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub samples: u16,
    /// Only these clocks, comma-separated (names as listed, e.g. posix:boottime,ftrace:local).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    /// Also write the JSON audit to FILE (for `explain --clocks`).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Trace files (as for analyze). Every segment that looks like a clock-domain offset is
    /// explained (median ≥ 1 ms, IQR ≤ 1 % of it; `--all`: every segment).
    #[arg(required_unless_present = "offset")]
    pub files: Vec<PathBuf>,
    /// Clock audits (`clockpath clocks --out FILE`) of the machines that recorded the traces:
    /// a host and its guests may be given together. Default: audit this machine now.
    #[arg(long, value_name = "AUDIT.json")]
    pub clocks: Vec<PathBuf>,
    /// Explain this constant (seconds; negative when the later stage reads less) instead of
    /// segments of traces.
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true, conflicts_with = "files")]
    pub offset: Option<f64>,
    /// Explain every segment, not only those that look like offsets.
    #[arg(long)]
    pub all: bool,
    /// The largest residual still called a latency, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.001)]
    pub max_residual: f64,
    /// How closely two machines' CLOCK_REALTIMEs agree when no PTP clock relates their audits,
    /// seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.01)]
    pub sync_uncertainty: f64,
    /// Candidates listed per segment.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub top: usize,
    /// The boot the traces were recorded in (/proc/sys/kernel/random/boot_id there); default:
    /// the hits' `boot_id` label, if any. Audits of another boot are warned about.
    #[arg(long, value_name = "ID")]
    pub boot_id: Option<String>,
    /// Print the explanations as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stats: StatsArgs,
}

pub(super) fn clocks_cmd(config: Option<&Path>, args: ClocksArgs) -> Result<ExitCode, CliError> {
    let loaded = load_config(config)?;
    let mut audit = clocks::audit(&crate::clockaudit::options(&loaded, args.duration, args.samples.into()));
    if !args.only.is_empty() {
        let names = clocks::names(&audit);
        let unknown: Vec<&String> = args.only.iter().filter(|n| !names.contains(n)).collect();
        if !unknown.is_empty() {
            return Err(config_error(anyhow::anyhow!(
                "--only: unknown clock(s) {}; this machine's clocks: {}",
                unknown.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "),
                names.join(", ")
            )));
        }
        audit.clocks.retain(|c| args.only.contains(&c.name));
    }
    let json = serde_json::to_string_pretty(&audit).context("serialising the audit")?;
    if let Some(out) = &args.out {
        write_no_follow(out, json.as_bytes()).with_context(|| format!("writing {}", out.display()))?;
    }
    let text = if args.json { format!("{json}\n") } else { audit.table() };
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Written as root to a path the user names: never through a link planted there.
fn write_no_follow(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?
        .write_all(bytes)
}

pub(super) fn explain_cmd(config: Option<&Path>, args: ExplainArgs) -> Result<ExitCode, CliError> {
    let loaded = load_config(config)?;
    for (flag, v) in [("--max-residual", args.max_residual), ("--sync-uncertainty", args.sync_uncertainty)] {
        if !(v >= 0.0 && v.is_finite()) {
            return Err(config_error(anyhow::anyhow!("{flag} must be a number of seconds ≥ 0, not {v}")));
        }
    }
    if let Some(o) = args.offset
        && !(o.is_finite() && o != 0.0)
    {
        return Err(config_error(anyhow::anyhow!("--offset must be a non-zero number of seconds, not {o}")));
    }
    let audits: Vec<ClockAudit> = if args.clocks.is_empty() {
        eprintln!("clockpath: no --clocks given: auditing this machine's clocks now");
        vec![clocks::audit(&crate::clockaudit::options(&loaded, Duration::from_millis(500), 16))]
    } else {
        args.clocks.iter().map(|p| ClockAudit::read(p).map_err(config_error)).collect::<Result<_, _>>()?
    };
    let opts = ExplainOptions {
        max_residual_ns: args.max_residual * 1e9,
        sync_uncertainty_ns: args.sync_uncertainty * 1e9,
        top: args.top.max(1),
    };
    let (observed, trace_boot) = match args.offset {
        Some(o) => (vec![explain::given_offset(o)], args.boot_id.clone()),
        None => observed_segments(&loaded, &args)?,
    };
    let warnings = explain::boot_warnings(&audits, trace_boot.as_deref());
    for w in &warnings {
        eprintln!("clockpath: warning: {w}");
    }
    let mut explanations = Vec::new();
    let mut notes = Vec::new();
    let mut skipped = Vec::new();
    for o in observed {
        if args.offset.is_none() && !args.all && !explain::looks_like_offset(&o) {
            skipped.push(format!(
                "{} (median {})",
                o.what,
                clockpath_offline::clockdomain::audit::format_ns(o.median.estimate)
            ));
            continue;
        }
        let (e, n) = explain::explain(o, &audits, trace_boot.as_deref(), &opts);
        notes = n;
        explanations.push(e);
    }
    let mut out = String::new();
    if args.json {
        let v = serde_json::json!({ "explanations": explanations, "notes": notes, "warnings": warnings, "not_offsets": skipped });
        out = serde_json::to_string_pretty(&v).context("serialising")? + "\n";
    } else {
        for n in &notes {
            out.push_str(&format!("note: {n}\n"));
        }
        for e in &explanations {
            out.push_str(&explain::render(e));
        }
        if explanations.is_empty() {
            out.push_str("no segment looks like a clock-domain offset (median ≥ 1 ms with an IQR ≤ 1 % of it); `--all` explains every segment\n");
        }
        if !skipped.is_empty() {
            out.push_str(&format!("segments that look like latencies, not offsets: {}\n", skipped.join(", ")));
        }
    }
    std::io::stdout().lock().write_all(out.as_bytes()).context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Every segment (and total) of every chain in the traces, summarised; and the traces' boot.
fn observed_segments(loaded: &Loaded, args: &ExplainArgs) -> Result<(Vec<Observed>, Option<String>), CliError> {
    let mut opts = offline::analyze_options(loaded, &args.stats)?;
    // Mixed clocks are what explain is for.
    opts.mixed_clocks = true;
    let c = offline::collect(loaded, &args.files, &opts)?;
    let mut boot = args.boot_id.clone();
    let mut out = Vec::new();
    for (chain, data) in &c.chains {
        let Some(shape) = &data.shape else { continue };
        if boot.is_none() {
            boot = data
                .sessions
                .values()
                .flat_map(|s| s.labels.first())
                .flat_map(|&id| c.labels(id))
                .find(|(k, _)| k == "boot_id")
                .map(|(_, v)| v);
        }
        for (k, name) in analysis::column_names(shape).into_iter().enumerate() {
            let mut pairs: Vec<(u64, f64)> = data
                .sessions
                .values()
                .flat_map(|s| s.starts.iter().copied().zip(s.column(k)))
                .filter(|(_, x)| x.is_finite())
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let mut xs: Vec<f64> = pairs.iter().map(|p| p.1).collect();
            pairs.sort_unstable_by_key(|p| p.0);
            let at = pairs[pairs.len() / 2].0;
            let median = stats::median_ci(&xs, &opts.bootstrap).map_err(|e| anyhow::anyhow!("{chain}/{name}: {e}"))?;
            xs.sort_unstable_by(f64::total_cmp);
            let iqr = stats::percentile_sorted(&xs, 0.75) - stats::percentile_sorted(&xs, 0.25);
            let (early, late) = match name.as_str() {
                "total" => (shape.stages.first().cloned(), shape.stages.last().cloned()),
                _ => (shape.stages.get(k).cloned(), shape.stages.get(k + 1).cloned()),
            };
            out.push(Observed {
                what: format!("{chain} / {name}"),
                early_stage: early,
                late_stage: late,
                n: xs.len(),
                median,
                iqr_ns: iqr,
                at_monotonic_ns: Some(at),
            });
        }
    }
    if out.is_empty() {
        return Err(config_error(anyhow::anyhow!(
            "no complete segment in {}",
            args.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok((out, boot))
}
