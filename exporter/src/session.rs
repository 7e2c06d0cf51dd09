//! `clockpath session`: drive clocksource switches and measure each one.
//!
//! The runner writes `current_clocksource`, cycling through the requested clocksources, and
//! waits for the chain instance of each switch (or its timeout) before the next one; every
//! record gets the session id, the run index and the old and new clocksource. The original
//! clocksource is restored at the end, on error, on Ctrl-C and on SIGTERM (and by a drop guard
//! if anything unwinds). Raw traces, per-run records and a summary go to the output directory.
//!
//! On a kernel where the clocksource chain cannot attach (no kprobes, fentry refused), the
//! session runs in *degraded* mode: the `syscalls:sys_enter_write`/`sys_exit_write` tracepoints
//! of the runner's own thread bracket each write to `current_clocksource`, so the session still
//! measures something real — the whole switch as seen from userspace — labelled as such.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use clockpath_common::{
    interference::{NAMES, SOURCES},
    record::UNKNOWN_INTERFERENCE,
};
use serde::Serialize;

use crate::{
    chain::{ChainRecord, Outcome},
    config::{ChainConfig, Config, Loaded, StageConfig, TargetConfig},
    daemon::{self, ChainSummary, Daemon, TallySink},
    ktime,
    pipeline::Sink,
    probe::{
        kernel::Kernel,
        plan::{ChainPlan, Status},
    },
    sink::otlp::OtlpSink,
    stats::{self, RunsAnalysis},
    trace_io,
};

pub const CLOCKSOURCE_DIR: &str = "/sys/devices/system/clocksource/clocksource0";
/// The chain a session measures, and its degraded fallback.
pub const CHAIN: &str = "clocksource_switch";
pub const DEGRADED_CHAIN: &str = "clocksource_write";

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
    Start(#[from] daemon::StartError),
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
}

fn read_sysfs(file: &str) -> Result<String, SessionError> {
    let path = format!("{CLOCKSOURCE_DIR}/{file}");
    fs::read_to_string(&path).map(|s| s.trim().to_string()).map_err(|source| SessionError::Sysfs { path, source })
}

fn write_clocksource(name: &str) -> Result<(), SessionError> {
    let path = format!("{CLOCKSOURCE_DIR}/current_clocksource");
    fs::write(&path, name).map_err(|source| SessionError::Sysfs { path, source })
}

/// Puts the original clocksource back when dropped (error paths, unwinding).
struct Restore {
    original: String,
    done: bool,
}

impl Restore {
    fn now(&mut self) -> Result<(), SessionError> {
        if !self.done {
            write_clocksource(&self.original)?;
            self.done = true;
            tracing::info!(clocksource = %self.original, "original clocksource restored");
        }
        Ok(())
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(error) = self.now() {
            tracing::error!(%error, "could not restore the original clocksource");
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

/// One switch and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub index: usize,
    pub old: String,
    pub new: String,
    /// Segment durations in ns (empty when the chain is missing).
    pub segments_ns: Vec<u64>,
    pub total_ns: Option<u64>,
    pub cpu: Option<u32>,
    /// Why there is no complete chain for this switch.
    pub missing: Option<String>,
    /// The probe point that ended each segment (target), to show which read was first.
    pub points: Vec<String>,
    /// Per segment, time (ns) charged to each interference source
    /// (irq, softirq, sched, hrtimer, kvm); None when the segment changed CPU.
    pub interference_ns: Vec<Option<[u64; SOURCES]>>,
}

/// The session's result.
#[derive(Clone, Debug, Serialize)]
pub struct SessionReport {
    pub session_id: String,
    pub mode: String,
    pub chain: String,
    pub env: String,
    pub labels: BTreeMap<String, String>,
    pub original_clocksource: String,
    pub restored_clocksource: String,
    pub runs_requested: usize,
    pub runs_done: usize,
    pub completed: usize,
    pub missing: BTreeMap<String, usize>,
    pub segments: Vec<String>,
    pub analysis: Option<RunsAnalysis>,
    pub kernel: Option<ChainSummary>,
    /// Median time charged to each interference source, per segment (ns), over complete runs.
    pub interference_median_ns: BTreeMap<String, BTreeMap<String, f64>>,
    pub interrupted: bool,
    pub runs: Vec<Run>,
}

fn session_id(env: &str) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now.chars().filter(|c| c.is_ascii_digit() || *c == 'T').collect();
    format!("{env}-{stamp}-{:04x}", std::process::id() & 0xffff)
}

/// The degraded chain: the runner thread's write(2) to current_clocksource.
fn degraded_chain(tid: u64) -> ChainConfig {
    let stage = |name: &str, tp: &str| StageConfig {
        name: name.into(),
        key: Some("tid".into()),
        targets: vec![TargetConfig { attach: tp.into(), key: None }],
        points: Vec::new(),
        first_hit_only: false,
        capture: None,
        match_capture: false,
        filter: Some(format!("tid == {tid}")),
    };
    ChainConfig {
        enabled: true,
        description: "Degraded mode: the session runner's write to current_clocksource (syscall entry → exit), on kernels where the clocksource chain cannot attach".into(),
        timeout_ms: 5000,
        interference: false,
        stages: vec![stage("write_enter", "tracepoint:syscalls:sys_enter_write"), stage("write_exit", "tracepoint:syscalls:sys_exit_write")],
        abort: Vec::new(),
    }
}

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
    c
}

fn gettid() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

/// Run a session. `stop` is set by a signal handler to end it early (the clocksource is still
/// restored and the outputs written).
pub fn run(
    loaded: &Loaded,
    args: &SessionArgs,
    env: &str,
    stop: Arc<AtomicBool>,
) -> Result<SessionReport, SessionError> {
    if args.runs == 0 {
        return Err(SessionError::Usage("--runs must be at least 1".into()));
    }
    let available: Vec<String> = read_sysfs("available_clocksource")?.split_whitespace().map(str::to_string).collect();
    let original = read_sysfs("current_clocksource")?;
    for cs in &args.clocksources {
        if !available.contains(cs) {
            return Err(SessionError::Usage(format!(
                "clocksource `{cs}` is not available here (available: {}; current: {original})",
                available.join(", ")
            )));
        }
    }
    let mut distinct = args.clocksources.clone();
    distinct.dedup();
    if distinct.len() < 2 && !(distinct.len() == 1 && distinct[0] != original) {
        return Err(SessionError::Usage(
            "--clocksources needs two clocksources (or one other than the current one)".into(),
        ));
    }
    fs::create_dir_all(&args.out).map_err(|source| SessionError::Output { path: args.out.clone(), source })?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| SessionError::Output { path: args.out.clone(), source: e })?;
    let _guard = rt.enter();
    let kernel = Kernel::open();

    // Attach the clocksource chain; fall back to degraded mode when it cannot run.
    let tid = gettid();
    let (tx, rx) = mpsc::channel();
    let tally = TallySink::default();
    let mut mode = "kernel";
    let mut chain_name = CHAIN;
    let attempt = |cfg: Config| -> Result<Daemon, SessionError> {
        let l = loaded.with_config(cfg);
        let plans = daemon::plan(&l, &kernel)?;
        Ok(Daemon::start(&l, plans, vec![Box::new(Feed(tx.clone())), Box::new(tally.clone())])?)
    };
    let mut d = if args.force_degraded { None } else { Some(attempt(only_chain(&loaded.config, CHAIN, None))) };
    let running = matches!(&d, Some(Ok(d)) if d.plans.iter().any(|p| p.name == CHAIN && p.is_running()));
    if !running {
        if let Some(Ok(d)) = d.take() {
            let reason = d.plans.iter().find(|p| p.name == CHAIN).map(|p| format!("{:?}", p.state)).unwrap_or_default();
            tracing::warn!(%reason, "clocksource chain unavailable: running the session in degraded mode");
            rt.block_on(d.stop());
        }
        mode = "degraded";
        chain_name = DEGRADED_CHAIN;
        d = Some(attempt(only_chain(&loaded.config, DEGRADED_CHAIN, Some(degraded_chain(tid)))));
    }
    let daemon = d.expect("an attempt was made")?;
    let plan = daemon.plans.iter().find(|p| p.name == chain_name).cloned().expect("the session chain is planned");
    if !plan.is_running() {
        rt.block_on(daemon.stop());
        return Err(SessionError::Start(daemon::StartError::NothingRuns(format!("{chain_name}: {:?}", plan.state))));
    }
    let points = slot_targets(&plan);
    let read_points = first_read_points(&plan);
    // Every run of a session is traced (sessions are what the traces are for); the rate
    // limit is for the continuous exporter.
    let mut otlp = {
        let mut cfg = loaded.config.clone();
        cfg.otlp.sampling.per_chain_per_second = f64::MAX;
        cfg.otlp.sampling.burst = u32::MAX;
        OtlpSink::for_plans(&loaded.with_config(cfg), &daemon.plans, env, None, None, None)
            .map_err(|e| SessionError::Start(e.into()))?
    };

    let id = session_id(env);
    let mut restore = Restore { original: original.clone(), done: false };
    let mut runs = Vec::with_capacity(args.runs);
    let mut current = original.clone();
    let mut next = 0usize;
    let mut interrupted = false;
    let mut records: Vec<ChainRecord> = Vec::new();
    for index in 0..args.runs {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        // The next requested clocksource that differs from the current one.
        let mut target = args.clocksources[next % args.clocksources.len()].clone();
        if target == current {
            next += 1;
            target = args.clocksources[next % args.clocksources.len()].clone();
        }
        next += 1;
        let t0 = ktime::monotonic_now_ns();
        let result = write_clocksource(&target);
        let now_cs = read_sysfs("current_clocksource").unwrap_or_default();
        let mut run = Run {
            index,
            old: current.clone(),
            new: target.clone(),
            segments_ns: Vec::new(),
            total_ns: None,
            cpu: None,
            missing: None,
            points: Vec::new(),
            interference_ns: Vec::new(),
        };
        if let Err(e) = result {
            run.missing = Some(format!("write failed: {e}"));
        } else if now_cs != target {
            run.missing = Some(format!("the kernel kept {now_cs} after writing {target}"));
        } else {
            current = target.clone();
            let deadline = Instant::now() + args.timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left.max(Duration::from_millis(1))) {
                    Ok(rec) if rec.start_ns < t0 => continue,
                    Ok(mut rec) => {
                        rec.session = Some(Arc::from(id.as_str()));
                        rec.labels = vec![
                            (Arc::from("old_clocksource"), Arc::from(run.old.as_str())),
                            (Arc::from("new_clocksource"), Arc::from(run.new.as_str())),
                        ];
                        run.cpu = Some(rec.cpu);
                        run.points = rec
                            .segments
                            .iter()
                            .map(|s| points.get(&(s.slot as u32)).cloned().unwrap_or_default())
                            .collect();
                        run.interference_ns = rec
                            .segments
                            .iter()
                            .map(|s| (s.interference_ns[0] != UNKNOWN_INTERFERENCE).then_some(s.interference_ns))
                            .collect();
                        if rec.outcome == Outcome::Completed {
                            run.segments_ns = rec.segments.iter().map(|s| s.duration_ns()).collect();
                            run.total_ns = Some(rec.total_ns());
                        } else {
                            run.missing = Some(format!("chain {}", rec.outcome.as_str()));
                        }
                        if let Some(o) = &mut otlp {
                            // Traces also carry the session's own labels (--label k=v).
                            let mut traced = rec.clone();
                            traced.labels.extend(
                                args.labels.iter().map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str()))),
                            );
                            o.on_chain(&traced);
                        }
                        records.push(rec);
                        break;
                    }
                    Err(_) => {
                        run.missing = Some(match (mode, read_points.get(&target)) {
                            ("kernel", Some(Err(why))) => format!("no first_read probe for {target}: {why}"),
                            ("kernel", None) => format!("no first_read probe for {target}: no known read function"),
                            _ => format!("no chain record within {:?}", args.timeout),
                        });
                        break;
                    }
                }
            }
        }
        runs.push(run);
    }
    restore.now()?;
    if let Some(mut o) = otlp.take() {
        o.finish();
    }
    let restored = read_sysfs("current_clocksource").unwrap_or_default();
    let maps = daemon.maps.clone();
    let stats_ref = daemon.stats.clone();
    let plans = daemon.plans.clone();
    rt.block_on(daemon.stop());
    // Records still in flight after the last wait.
    while let Ok(rec) = rx.try_recv() {
        let _ = rec;
    }
    let kernel_summary = {
        let m = maps.lock().map_err(|_| SessionError::Usage("kernel maps lock poisoned".into()))?;
        let t = tally.chains.lock().map_err(|_| SessionError::Usage("tally lock poisoned".into()))?;
        daemon::summarize(&plans, &m, &t, &stats_ref).chains.into_iter().find(|c| c.name == chain_name)
    };

    let shape = plan.shape();
    let segments: Vec<String> = (1..=shape.segments() as u8).map(|i| shape.segment_name(i)).collect();
    let complete: Vec<&Run> = runs.iter().filter(|r| r.missing.is_none()).collect();
    let analysis = if complete.is_empty() {
        None
    } else {
        let mut columns: Vec<Vec<f64>> =
            (0..segments.len()).map(|i| complete.iter().map(|r| r.segments_ns[i] as f64).collect()).collect();
        if segments.len() > 1 {
            columns.push(complete.iter().map(|r| r.total_ns.unwrap_or(0) as f64).collect());
        }
        let w = &loaded.config.windows;
        stats::analyze_runs(&columns, 0, w.sigma, &w.bootstrap).ok()
    };
    let mut interference_median_ns = BTreeMap::new();
    if plan.charges_interference {
        for (i, seg) in segments.iter().enumerate() {
            let mut per = BTreeMap::new();
            for (k, name) in NAMES.iter().enumerate() {
                let vals: Vec<f64> = complete
                    .iter()
                    .filter_map(|r| r.interference_ns.get(i).copied().flatten())
                    .map(|v| v[k] as f64)
                    .collect();
                if !vals.is_empty() {
                    per.insert(name.to_string(), stats::median(&vals));
                }
            }
            interference_median_ns.insert(seg.clone(), per);
        }
    }
    let mut missing: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        if let Some(m) = &r.missing {
            *missing.entry(m.clone()).or_default() += 1;
        }
    }
    let report = SessionReport {
        session_id: id.clone(),
        mode: mode.into(),
        chain: chain_name.into(),
        env: env.into(),
        labels: args.labels.iter().cloned().collect(),
        original_clocksource: original,
        restored_clocksource: restored,
        runs_requested: args.runs,
        runs_done: runs.len(),
        completed: complete.len(),
        missing,
        segments,
        analysis,
        kernel: kernel_summary,
        interference_median_ns,
        interrupted,
        runs,
    };
    write_outputs(&args.out, &report, &records, &plan, env)?;
    Ok(report)
}

/// slot → target string of every attached candidate of a plan.
fn slot_targets(plan: &ChainPlan) -> BTreeMap<u32, String> {
    plan.stages
        .iter()
        .flat_map(|s| s.points.iter())
        .flat_map(|p| p.candidates.iter())
        .filter_map(|c| match c.status {
            Status::Attached(slot) => Some((slot, c.target.to_string())),
            _ => None,
        })
        .collect()
}

/// For each clocksource with a first_read point: Ok(target attached) or Err(why not).
fn first_read_points(plan: &ChainPlan) -> BTreeMap<String, Result<String, String>> {
    let Some(stage) = plan.stages.iter().find(|s| s.match_capture) else { return BTreeMap::new() };
    stage
        .points
        .iter()
        .filter_map(|p| {
            let label = p.label.clone()?;
            let r = match p.attached() {
                Some(c) => Ok(c.target.to_string()),
                None => Err(p
                    .candidates
                    .iter()
                    .map(|c| format!("{}: {}", c.target, c.status.reason()))
                    .collect::<Vec<_>>()
                    .join("; ")),
            };
            Some((label, r))
        })
        .collect()
}

fn write_outputs(
    dir: &Path,
    report: &SessionReport,
    records: &[ChainRecord],
    plan: &ChainPlan,
    env: &str,
) -> Result<(), SessionError> {
    let err = |path: PathBuf| move |source| SessionError::Output { path, source };
    let p = dir.join("summary.json");
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .map_err(err(p.clone()))?;
    fs::write(&p, json).map_err(err(p.clone()))?;
    let p = dir.join("summary.md");
    fs::write(&p, markdown(report)).map_err(err(p.clone()))?;
    let p = dir.join("traces.csv");
    let shape = plan.shape();
    let mut w = trace_io::TraceWriter::create(&p, trace_io::Format::Csv).map_err(err(p.clone()))?;
    for rec in records {
        for hit in trace_io::hits_of(rec, &shape, env) {
            w.write(&hit).map_err(err(p.clone()))?;
        }
    }
    w.finish().map_err(err(p))?;
    Ok(())
}

/// The summary as Markdown.
pub fn markdown(r: &SessionReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Session {}\n", r.session_id);
    let _ = writeln!(s, "- chain: `{}` ({} mode), env: {}", r.chain, r.mode, r.env);
    if !r.labels.is_empty() {
        let l: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(s, "- labels: {}", l.join(", "));
    }
    let _ = writeln!(
        s,
        "- runs: {} of {} done, {} complete{}",
        r.runs_done,
        r.runs_requested,
        r.completed,
        if r.interrupted { " (interrupted)" } else { "" }
    );
    let _ = writeln!(s, "- clocksource: {} before, {} after", r.original_clocksource, r.restored_clocksource);
    for (why, n) in &r.missing {
        let _ = writeln!(s, "- missing: {n} × {why}");
    }
    if let Some(a) = &r.analysis {
        let _ = writeln!(
            s,
            "- outliers rejected: {} (±{}σ on `{}`)\n",
            a.rejection.rejected,
            a.rejection.k,
            r.segments.first().map_or("", String::as_str)
        );
        let _ = writeln!(s, "| segment | n | median (µs) | 95 % CI (µs) | SD (µs) | reliable |");
        let _ = writeln!(s, "| --- | ---: | ---: | --- | ---: | --- |");
        let names = r.segments.iter().cloned().chain((r.segments.len() > 1).then(|| "total".to_string()));
        for (name, c) in names.zip(&a.columns) {
            let ci =
                c.ci.map(|ci| format!("[{:.3}, {:.3}]", ci.lower / 1e3, ci.upper / 1e3)).unwrap_or_else(|| "—".into());
            let _ = writeln!(
                s,
                "| {name} | {} | {:.3} | {ci} | {:.3} | {} |",
                c.n,
                c.median / 1e3,
                c.std_dev / 1e3,
                if c.reliable { "yes" } else { "no (n < 100)" }
            );
        }
    }
    for (seg, per) in &r.interference_median_ns {
        let parts: Vec<String> = per.iter().map(|(k, v)| format!("{k} {:.3}", v / 1e3)).collect();
        let _ = writeln!(s, "\nInterference charged to `{seg}` (median µs): {}", parts.join(", "));
    }
    if let Some(k) = &r.kernel {
        let _ = writeln!(
            s,
            "\nKernel: {} segments in the histograms, {} records received, {} lost.",
            k.hist_segments, k.segments_received, k.ring_lost_segments
        );
    }
    s
}

/// Guard for concurrent use of the session lock file: one session at a time per machine.
pub fn lock() -> Result<fs::File, SessionError> {
    let dir = if Path::new("/run").is_dir() { PathBuf::from("/run") } else { std::env::temp_dir() };
    let path = dir.join("clockpath-session.lock");
    let path = path.to_string_lossy().into_owned();
    let path = path.as_str();
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| SessionError::Sysfs { path: path.into(), source })?;
    // SAFETY: flock on a valid fd.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(SessionError::Usage(format!("another clockpath session is running (it holds {path})")));
    }
    Ok(f)
}
