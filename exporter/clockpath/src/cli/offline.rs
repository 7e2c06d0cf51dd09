//! The offline commands: `analyze`, `compare`, `regress` and `simulate` over trace files.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clockpath_offline::{analysis, stats, trace};

use super::{AnalyzeArgs, CliError, CompareArgs, RegressArgs, SimulateArgs, StatsArgs, config_error, load_config};
use crate::config::Loaded;

/// How `analyze` aligns trace sets on reference time (hits with `reference_ns`).
#[derive(Debug, clap::Args)]
pub struct AlignArgs {
    /// Group the hits that carry a reference time (`reference_ns`) by this label and report the
    /// clock offset between every two groups on reference time [default: env].
    #[arg(long, value_name = "LABEL", value_parser = super::parse_label_name)]
    pub align: Option<String>,
    /// Pair points of two groups at most this far apart in reference time: seconds (0.5, 2s) or
    /// a duration (500ms, 1m).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_within)]
    pub align_within: Duration,
}

fn parse_within(s: &str) -> Result<Duration, String> {
    let d = super::parse_seconds(s).or_else(|_| {
        humantime::parse_duration(s)
            .map_err(|e| format!("`{s}` is neither a number of seconds nor a duration such as 500ms: {e}"))
    })?;
    if d.is_zero() {
        return Err(format!("`{s}`: the duration must be positive"));
    }
    Ok(d)
}

pub(super) fn analyze_options(loaded: &Loaded, a: &StatsArgs) -> Result<analysis::AnalyzeOptions, CliError> {
    let w = &loaded.config.windows;
    let mut boot = w.bootstrap;
    boot.resamples = a.resamples.unwrap_or(boot.resamples);
    boot.level = a.level.unwrap_or(boot.level);
    boot.seed = a.seed.unwrap_or(boot.seed);
    boot.validate().map_err(|e| config_error(anyhow::anyhow!("{e}")))?;
    let sigma = a.sigma.unwrap_or(w.sigma);
    stats::reject_outliers(&[0.0], sigma).map_err(|e| config_error(anyhow::anyhow!("--sigma: {e}")))?;
    if a.reservoir < 10 {
        return Err(config_error(anyhow::anyhow!("--reservoir must keep at least 10 runs")));
    }
    if let Some(n) = a.threads {
        analysis::use_threads(n.into()).map_err(|e| config_error(anyhow::anyhow!("--threads: {e}")))?;
    }
    Ok(analysis::AnalyzeOptions {
        read: trace::read::ReadOptions { skip_bad_lines: a.skip_bad_lines },
        reservoir: a.reservoir,
        sigma,
        spread: match a.outlier_spread {
            super::OutlierSpread::Sd => stats::Spread::Sd,
            super::OutlierSpread::Mad => stats::Spread::Mad,
        },
        bootstrap: boot,
        progress: true,
        sort_memory: a.sort_memory,
        align: analysis::align::AlignOptions::default(),
        mixed_clocks: a.mixed_clocks,
    })
}

/// The chains traces can hold: the configured ones and a session's degraded chain.
fn chain_defs(loaded: &Loaded) -> Vec<analysis::ChainDef> {
    let mut defs = loaded.config.chain_defs();
    if !defs.iter().any(|d| d.shape.name == crate::session::DEGRADED_CHAIN) {
        defs.push(crate::session::mode::degraded_chain(0).def(crate::session::DEGRADED_CHAIN));
    }
    defs
}

pub(super) fn collect(
    loaded: &Loaded,
    files: &[PathBuf],
    opts: &analysis::AnalyzeOptions,
) -> Result<analysis::Collected, CliError> {
    let c = analysis::collect(files, &chain_defs(loaded), opts).map_err(|e| match e {
        analysis::AnalyzeError::Read(trace::read::ReadError::Io { .. }) => config_error(e),
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

pub(super) fn analyze_cmd(config: Option<&Path>, args: AnalyzeArgs) -> Result<ExitCode, CliError> {
    let loaded = load_config(config)?;
    let mut opts = analyze_options(&loaded, &args.stats)?;
    opts.align = analysis::align::AlignOptions {
        label: args.align.align.clone().unwrap_or_else(|| analysis::align::DEFAULT_LABEL.into()),
        within_ns: u64::try_from(args.align.align_within.as_nanos()).unwrap_or(u64::MAX),
    };
    let t = std::time::Instant::now();
    let c = collect(&loaded, &args.files, &opts)?;
    tracing::debug!(elapsed = ?t.elapsed(), "traces read and assembled");
    // An explicit --align must name a label the hits have; the default one may be absent
    // (the report says so).
    if let Some(label) = &args.align.align {
        c.clock.check_label().map_err(|e| config_error(anyhow::anyhow!("--align {label}: {e}")))?;
        if c.clock.referenced() == 0 {
            eprintln!("clockpath: --align {label}: no hit has a reference time (reference_ns); no clock offsets");
        }
    }
    let report = analysis::report::build(&c, &opts);
    tracing::debug!(elapsed = ?t.elapsed(), "statistics computed");
    analysis::report::write(&args.out, &report, &c)
        .with_context(|| format!("writing the report to {}", args.out.display()))?;
    if !args.no_plots {
        let plots = analysis::plot::write(&args.out.join("plots"), &report, &c)?;
        tracing::info!(count = plots.len(), "plots written");
    }
    print!("{}", analysis::report::markdown(&report));
    println!("\nwrote {}", args.out.display());
    if let Some(why) = report.no_complete_chain() {
        eprintln!("clockpath: no complete chain in the input ({why}); the report is written, but measures nothing");
        return Ok(ExitCode::from(super::EXIT_NO_COMPLETE_CHAIN));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn compare_cmd(config: Option<&Path>, args: CompareArgs) -> Result<ExitCode, CliError> {
    use analysis::{
        GROUP_DIMENSIONS, RunRef, column_names,
        compare::{SessionInput, Side, compare},
        label_value,
    };
    let loaded = load_config(config)?;
    let opts = analyze_options(&loaded, &args.stats)?;
    // A session's factors: the recorded dimensions other than the one grouped by (strata).
    fn factors(c: &analysis::Collected, r: &RunRef, except: Option<&str>) -> BTreeMap<String, String> {
        let labels = c.labels(r.labels);
        GROUP_DIMENSIONS
            .iter()
            .filter(|d| Some(**d) != except)
            .filter_map(|d| Some((d.to_string(), label_value(&labels, d)?)))
            .collect()
    }
    fn side_of_file<'a>(c: &analysis::Collected, d: &'a analysis::ChainData, name: String) -> Side<'a> {
        let sessions = d
            .sessions
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(sid, s)| {
                let runs: Vec<RunRef> = s.iter().collect();
                SessionInput { name: format!("{name}:{sid}"), factors: factors(c, &runs[0], None), runs }
            })
            .collect();
        Side { name, sessions }
    }
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
                let sa = side_of_file(&ca, da, a.display().to_string());
                let sb = side_of_file(&cb, db, b.display().to_string());
                results.extend(compare(name, &column_names(shape), &sa, &sb, &opts));
            }
        }
        (files, Some(dim)) => {
            let c = collect(&loaded, files, &opts)?;
            for (name, d) in &c.chains {
                if args.chain.as_ref().is_some_and(|x| x != name) {
                    continue;
                }
                let Some(shape) = &d.shape else { continue };
                // value → session → runs (a session whose runs carry two values splits).
                let mut by: BTreeMap<String, BTreeMap<&String, Vec<RunRef>>> = BTreeMap::new();
                for (sid, s) in &d.sessions {
                    for r in s.iter() {
                        if let Some(v) = label_value(&c.labels(r.labels), dim) {
                            by.entry(v).or_default().entry(sid).or_default().push(r);
                        }
                    }
                }
                let groups: Vec<Side> = by
                    .into_iter()
                    .map(|(v, sessions)| Side {
                        sessions: sessions
                            .into_iter()
                            .map(|(sid, runs)| SessionInput {
                                name: sid.clone(),
                                factors: factors(&c, &runs[0], Some(dim.as_str())),
                                runs,
                            })
                            .collect(),
                        name: v,
                    })
                    .collect();
                if groups.len() < 2 {
                    return Err(config_error(anyhow::anyhow!(
                        "chain {name}: --group-by {dim} needs two values of `{dim}` in the input, found {}",
                        groups.len()
                    )));
                }
                for g in &groups[1..] {
                    results.extend(compare(name, &column_names(shape), &groups[0], g, &opts));
                }
            }
        }
        (_, None) => {
            return Err(config_error(anyhow::anyhow!(
                "give two inputs, or inputs and --group-by LABEL (env, governor, cstate, …)"
            )));
        }
    }
    if results.is_empty() {
        return Err(config_error(anyhow::anyhow!("nothing to compare: no chain has complete runs on both sides")));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results).context("serializing")?);
    } else {
        for r in &results {
            println!(
                "{} {} ({} vs {}: {} / {} sessions, {} / {} runs): {}",
                r.chain, r.segment, r.b, r.a, r.b_sessions, r.a_sessions, r.b_runs, r.a_runs, r.verdict
            );
            for n in &r.notes {
                println!("  note: {n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn regress_cmd(config: Option<&Path>, args: RegressArgs) -> Result<ExitCode, CliError> {
    let loaded = load_config(config)?;
    let opts = analyze_options(&loaded, &args.stats)?;
    let c = collect(&loaded, &args.files, &opts)?;
    let chains: Vec<String> = match &args.chain {
        Some(ch) => vec![ch.clone()],
        // Every chain, except the one bracketing the others.
        None => c.chains.keys().filter(|k| Some(*k) != args.outer.as_ref()).cloned().collect(),
    };
    let ro = analysis::regress::RegressOptions {
        segment: args.segment.clone(),
        factors: (!args.factors.is_empty()).then(|| args.factors.clone()),
        outer: args.outer.clone(),
    };
    let mut all = Vec::new();
    for ch in chains {
        let r = analysis::regress::regress(&c, &ch, &ro, &opts)
            .map_err(|e| config_error(anyhow::anyhow!("chain {ch}: {e}")))?;
        if !args.json {
            print!("{}", analysis::regress::markdown(&r));
        }
        all.push(r);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all).context("serializing")?);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn simulate_cmd(args: SimulateArgs) -> Result<ExitCode, CliError> {
    use analysis::simulate::{SimulateOptions, simulate};
    if args.runs == 0
        || args.sessions == 0
        || !(0.0..=1.0).contains(&args.outliers)
        || !args.offset.is_finite()
        || args.offset < 0.0
        || !(args.session_sd.is_finite() && args.session_sd >= 0.0)
    {
        return Err(config_error(anyhow::anyhow!(
            "--runs and --sessions must be positive, --outliers within [0, 1], --offset a non-negative number of seconds, --session-sd a non-negative number of µs"
        )));
    }
    let format = trace::Format::parse(&args.format);
    let o = SimulateOptions {
        runs: args.runs,
        envs: args.envs,
        cstates: args.cstates,
        governors: args.governors,
        offset_s: args.offset,
        outliers: args.outliers,
        interference: args.interference,
        outer: args.outer,
        seed: args.seed,
        sessions: args.sessions,
        session_sd_ns: args.session_sd * 1e3,
        format,
    };
    let files = simulate(&args.out, &o).with_context(|| format!("writing to {}", args.out.display()))?;
    for f in files {
        println!("{f}");
    }
    Ok(ExitCode::SUCCESS)
}
