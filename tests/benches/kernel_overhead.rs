//! Kernel-side overhead of clockpath's stage programs, measured with kernel BPF run-time
//! statistics (kernel.bpf_stats_enabled) under `perf bench sched pipe`, next to peers in the
//! same run: an empty program on the same tracepoint, libbpf-tools' runqlat, and bpftrace.
//!
//! A ratio is a result when it is the median of several interleaved runs, each with fresh
//! processes; one run is an observation. So every part runs `--runs N` times (default 3) and
//! prints each run, then the median and range of every ratio the targets are stated in:
//! 1. per hit: the stage fast path against an empty program on sched_switch, and the full
//!    path (histogram + ring record) against runqlat's sched_switch handler;
//! 2. the default config's cost model: every program's hits/s and ns/hit under the workload
//!    on both CPUs, its CPU, per chain and in all against runqlat's;
//! 3. the workload's slowdown with each tool, paired with a bare run just before it, `--rounds`
//!    rounds (default 5) interleaved over the tools: pinned to one CPU (every wait a wakeup or
//!    a preemption on that CPU, what the tools add shows directly) and unpinned (both CPUs:
//!    cross-CPU wakeups, idle entries and the idle tick's timers; bare runs spread more).
//!
//! Run as root: `cargo bench -p clockpath-tests --bench kernel_overhead [-- --runs N --rounds R
//! --per-hit-only --no-slowdown]`. Prints figures; asserts nothing (targets are judged from the
//! medians).

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use clockpath::{
    config::Config,
    daemon::{self, Daemon},
};
use clockpath_probe::kernel::Kernel;
use clockpath_tests::*;

const PIPE_LOOPS: &str = "200000";

/// Chains whose stage-1 programs run only the fast path (`fast_*`: stage 0 on a tracepoint that
/// does not fire) or only the full path (`full_*`: stage 0 and stage 1 on sched_switch, keyed by
/// CPU, so every stage-1 hit records a segment and a ring record). Stage 0 attaches another
/// way than stage 1 (two points of a chain on the same target would share one program, and the
/// full path's own cost would not show).
const BENCH_CONFIG: &str = only_these_chains!(
    r#"
[probe]
bpf_stats = true

[chains.fast_tp]
[[chains.fast_tp.stages]]
name = "never"
key = "global"
targets = ["tracepoint:sched:sched_kthread_stop"]
[[chains.fast_tp.stages]]
name = "switch"
key = "next_pid"
targets = ["tracepoint:sched:sched_switch"]

# Instances open on other keys: the pre-filter passes, the key is read and looked up.
[chains.busy_tp]
timeout_ms = 3600000
[[chains.busy_tp.stages]]
name = "fork"
key = "global"
targets = ["tracepoint:sched:sched_process_fork"]
[[chains.busy_tp.stages]]
name = "never"
key = "global"
targets = ["tracepoint:sched:sched_kthread_stop"]
[[chains.busy_tp.stages]]
name = "switch"
key = "next_pid"
targets = ["tracepoint:sched:sched_switch"]

[chains.fast_btf]
[[chains.fast_btf.stages]]
name = "never"
key = "global"
targets = ["tracepoint:sched:sched_kthread_stop"]
[[chains.fast_btf.stages]]
name = "switch"
key = "arg2->pid"
targets = ["tp_btf:sched_switch"]

[chains.full_tp]
[[chains.full_tp.stages]]
name = "open"
key = "cpu"
first_hit_only = true
targets = ["raw_tracepoint:sched_switch"]
[[chains.full_tp.stages]]
name = "close"
key = "cpu"
targets = ["tracepoint:sched:sched_switch"]

[chains.full_btf]
[[chains.full_btf.stages]]
name = "open"
key = "cpu"
first_hit_only = true
targets = ["raw_tracepoint:sched_switch"]
[[chains.full_btf.stages]]
name = "close"
key = "cpu"
targets = ["tp_btf:sched_switch"]
"#
);

/// A chain on a tracepoint that never fires, so the floor's daemon starts (it needs a running
/// chain) with no program on the workload's path but the two empty ones.
const FLOOR_CONFIG: &str = only_these_chains!(
    r#"
[chains.never]
[[chains.never.stages]]
name = "a"
key = "global"
targets = ["tracepoint:sched:sched_kthread_stop"]
[[chains.never.stages]]
name = "b"
key = "global"
targets = ["tracepoint:sched:sched_kthread_stop"]
"#
);

/// The chains of the built-in default configuration.
const DEFAULT_CHAINS: [&str; 4] = ["runqueue", "hrtimer", "softirq", "clocksource_switch"];

/// The CPU the pinned workload runs on, and its round trips (~6 s on the development VM).
const PINNED_CPU: u32 = 1;
const PINNED_LOOPS: &str = "1000000";
/// Round trips of the unpinned workload (both CPUs; a round trip waits for a cross-CPU wakeup).
const UNPINNED_LOOPS: &str = "100000";

/// CPU time (user + system) of this process's reaped children, in seconds.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// `perf bench sched pipe -l loops`, both tasks pinned to `cpu` when given: (wall s, CPU s of
/// the workload's tasks, which includes the BPF programs that ran in their context).
fn pipe_bench(cpu: Option<u32>, loops: &str) -> (f64, f64) {
    let perf = require_tool("perf", "linux-perf");
    let mut cmd = match cpu {
        Some(c) => {
            let mut t = Command::new(require_tool("taskset", "util-linux"));
            t.args(["-c", &c.to_string()]).arg(perf);
            t
        }
        None => Command::new(perf),
    };
    let cpu0 = children_cpu();
    let start = Instant::now();
    let out = cmd.args(["bench", "sched", "pipe", "-l", loops]).output().expect("perf bench sched pipe");
    assert!(out.status.success(), "perf bench sched pipe failed");
    (start.elapsed().as_secs_f64(), children_cpu() - cpu0)
}

/// Median and range of a sample.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(v: &[f64]) -> Spread {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Spread { median: f64::NAN, min: f64::NAN, max: f64::NAN };
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    Spread { median, min: v[0], max: v[v.len() - 1] }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}x [{:.2}, {:.2}]", self.median, self.min, self.max)
    }
}

/// (run_time_ns, run_count) of every loaded program whose name matches.
fn programs_named(pred: impl Fn(&str) -> bool) -> Vec<(String, u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| {
            let name = p.name_as_str()?.to_string();
            pred(&name).then(|| (name, p.run_time().as_nanos() as u64, p.run_count()))
        })
        .collect()
}

/// Wait until a program whose name matches has run (so it is loaded and attached). Run
/// counts need the kernel's BPF statistics: on for the wait only (they cost every program a
/// clock read per run, which the measured runs must not pay).
fn wait_attached(what: &str, pred: impl Fn(&str) -> bool) {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("kernel.bpf_stats_enabled");
    let ran = |p: &(String, u64, u64)| p.2 > 0;
    let before: Vec<(String, u64, u64)> = programs_named(&pred);
    wait_for(&format!("{what}'s programs to attach"), Duration::from_secs(30), || {
        programs_named(&pred)
            .iter()
            .any(|p| ran(p) && before.iter().find(|b| b.0 == p.0).is_none_or(|b| b.2 < p.2))
            .then_some(())
    });
}

fn spawn_quiet(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn")
}

/// Stop a tool: SIGINT lets it detach cleanly (repeated: bpftrace can miss one); a tool still
/// there after 20 s is killed.
fn stop(mut child: Child) {
    let _ = interrupt(&mut child, Duration::from_secs(20));
}

fn per_hit(delta: (u64, u64)) -> f64 {
    if delta.1 == 0 { f64::NAN } else { delta.0 as f64 / delta.1 as f64 }
}

fn arg_value(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn main() {
    require_root();
    let runs = arg_value("--runs", 3).max(1);
    let rounds = arg_value("--rounds", 5).max(1);
    let runqlat = require_tool("runqlat", "libbpf-tools");
    let rt = runtime();
    println!("clockpath kernel overhead: {runs} runs of each part (fresh processes), medians and ranges");

    // --- 1. per-hit cost ---
    let per_hit_runs: Vec<PerHit> = (0..runs).map(|i| per_hit_run(&rt, &runqlat, i + 1)).collect();
    println!("\nper-hit ratios over {runs} runs, median [min, max]:");
    let col = |f: fn(&PerHit) -> f64| spread(&per_hit_runs.iter().map(f).collect::<Vec<_>>());
    println!("  fast path / empty program, tracepoint:  {}   (target <= 1.5x)", col(|p| p.fast_tp / p.empty_tp));
    println!("  fast path / empty program, tp_btf:      {}   (target <= 1.5x)", col(|p| p.fast_btf / p.empty_btf));
    println!(
        "  full path (mean per record) / runqlat's sched_switch handler: {}   (target <= 0.5x)",
        col(|p| p.full_mean / p.runqlat_switch)
    );
    println!(
        "  absolute, median ns: empty tp_btf {:.1}, fast tp_btf {:.1}, full {:.1}, runqlat switch {:.1}",
        col(|p| p.empty_btf).median,
        col(|p| p.fast_btf).median,
        col(|p| p.full_mean).median,
        col(|p| p.runqlat_switch).median
    );
    if std::env::args().any(|a| a == "--per-hit-only") {
        return;
    }

    // --- 2. the default config's cost model ---
    let models: Vec<CostModel> = (0..runs).map(|i| cost_model_run(&rt, &runqlat, i + 1, i == 0)).collect();
    println!("\nBPF CPU under the two-CPU pipe workload against runqlat's, over {runs} runs, median [min, max]:");
    let chains: Vec<String> = models[0].per_chain.keys().cloned().collect();
    for c in &chains {
        let r: Vec<f64> = models.iter().map(|m| m.per_chain.get(c).copied().unwrap_or(0.0) / m.runqlat_cpu).collect();
        println!("  {c:<24} {}", spread(&r));
    }
    let r: Vec<f64> = models.iter().map(|m| m.total_cpu / m.runqlat_cpu).collect();
    println!("  {:<24} {}   (target <= 0.5x)", "default config", spread(&r));
    let running: Vec<String> = models[0].running.clone();
    if std::env::args().any(|a| a == "--no-slowdown") {
        return;
    }

    // --- 3. workload slowdown ---
    let bpftrace = require_tool("bpftrace", "bpftrace");
    let mut tools: Vec<Tool> = vec![Tool::Clockpath("clockpath run (default config)".into(), None)];
    for chain in DEFAULT_CHAINS.into_iter().filter(|c| running.iter().any(|r| r == c)) {
        tools.push(Tool::Clockpath(format!("  {chain} chain only"), Some(chain)));
    }
    tools.push(Tool::Command("runqlat (libbpf-tools)".into(), vec![runqlat.display().to_string(), "600".into()]));
    tools.push(Tool::Command(
        "bpftrace runqlat one-liner".into(),
        vec![
            bpftrace.display().to_string(),
            "-e".into(),
            "tracepoint:sched:sched_wakeup,tracepoint:sched:sched_wakeup_new { @ts[args->pid] = nsecs; } tracepoint:sched:sched_switch { if ((args->prev_state & 0xff) == 0 && args->prev_pid != 0) { @ts[args->prev_pid] = nsecs; } if (@ts[args->next_pid]) { @usecs = hist((nsecs - @ts[args->next_pid]) / 1000); delete(@ts[args->next_pid]); } }".into(),
        ],
    ));
    // The floor any tool on these two tracepoints pays: programs that do nothing, attached
    // through the perf tracepoint path (what bpftrace uses) and through the BPF trampoline
    // path clockpath's chains use (tp_btf, raw tracepoints).
    tools.push(Tool::Command(
        "empty programs, sched_wakeup + sched_switch (tracepoint)".into(),
        vec![
            bpftrace.display().to_string(),
            "-e".into(),
            "tracepoint:sched:sched_wakeup,tracepoint:sched:sched_switch { }".into(),
        ],
    ));
    tools.push(Tool::Floor("empty programs, sched_wakeup + sched_switch (tp_btf, raw_tp)".into()));
    for (pinned, loops) in [(true, PINNED_LOOPS), (false, UNPINNED_LOOPS)] {
        slowdown(&rt, &tools, pinned, loops, rounds);
    }
}

/// The per-hit costs of one run, ns.
struct PerHit {
    empty_tp: f64,
    empty_btf: f64,
    fast_tp: f64,
    fast_btf: f64,
    full_mean: f64,
    runqlat_switch: f64,
}

/// All the bench chains and the empty programs attached at once, with runqlat, under one pipe
/// workload on both CPUs: each program's run time per hit.
fn per_hit_run(rt: &tokio::runtime::Runtime, runqlat: &std::path::Path, run: usize) -> PerHit {
    let (_dir, path) = config_file(BENCH_CONFIG);
    let loaded = Config::load(Some(&path)).expect("bench config");
    let plans = daemon::plan(&loaded, &Kernel::open()).expect("plan");
    rt.block_on(async {
        let mut d = Daemon::start(&loaded, plans, Vec::new()).expect("start");
        for c in d.plans.iter().filter(|c| c.is_chain() && !c.is_running()) {
            println!("chain {} not running: {:?}", c.name, c.state);
        }
        let empty_tp = d.attach_baseline(&"tracepoint:sched:sched_switch".parse().unwrap()).expect("empty tp");
        let empty_btf = d.attach_baseline(&"tp_btf:sched_switch".parse().unwrap()).expect("empty tp_btf");
        let peer = spawn_quiet(Command::new(runqlat).arg("60"));
        let is_runqlat = |n: &str| !n.starts_with("cp_") && n.contains("sched_switch");
        wait_attached("runqlat", is_runqlat);
        let sample = |d: &Daemon| -> BTreeMap<String, (u64, u64)> {
            let mut m: BTreeMap<String, (u64, u64)> = d
                .program_stats()
                .iter()
                .map(|p| (format!("{}/{}", p.chain, p.stage), (p.run_time_ns, p.run_count)))
                .collect();
            for (name, prog) in [("empty_tp", &empty_tp), ("empty_btf", &empty_btf)] {
                m.insert(name.into(), d.run_stats(prog).unwrap_or((0, 0)));
            }
            for (n, t, c) in programs_named(is_runqlat) {
                m.insert(format!("runqlat {n}"), (t, c));
            }
            m
        };
        let before = sample(&d);
        tokio::task::spawn_blocking(|| pipe_bench(None, PIPE_LOOPS)).await.unwrap();
        let after = sample(&d);
        stop(peer);
        d.stop().await;
        let delta = |k: &str| -> (u64, u64) {
            let (a, b) = (before.get(k).copied().unwrap_or((0, 0)), after.get(k).copied().unwrap_or((0, 0)));
            (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1))
        };
        let ns = |k: &str| per_hit(delta(k));
        println!(
            "\nrun {run}: per-hit run time (ns) on sched_switch, perf bench sched pipe -l {PIPE_LOOPS} on both CPUs:"
        );
        println!("  {:<52} {:>8} {:>10}", "program", "ns/hit", "hits");
        let rows = [
            ("empty program, tracepoint", "empty_tp"),
            ("stage fast path, tracepoint (no instance)", "fast_tp/switch"),
            ("stage lookup path, tracepoint (other keys open)", "busy_tp/switch"),
            ("stage full path, tracepoint (hist + ring)", "full_tp/close"),
            ("empty program, tp_btf", "empty_btf"),
            ("stage fast path, tp_btf (no instance)", "fast_btf/switch"),
            ("stage full path, tp_btf (hist + ring)", "full_btf/close"),
            ("stage open path, raw_tp (instance written)", "full_btf/open"),
        ];
        for (label, k) in rows {
            println!("  {label:<52} {:>8.1} {:>10}", ns(k), delta(k).1);
        }
        // The two full-path programs stage their records in the same per-CPU batch, so
        // whichever writes the batch's last record pays its hand-over to the ring: their mean is
        // what a recorded segment costs.
        let (a, b) = (delta("full_tp/close"), delta("full_btf/close"));
        let full_mean = per_hit((a.0 + b.0, a.1 + b.1));
        println!("  {:<52} {full_mean:>8.1} {:>10}", "stage full path, both (mean per record)", a.1 + b.1);
        let peer_keys: Vec<String> = after.keys().filter(|k| k.starts_with("runqlat ")).cloned().collect();
        let mut runqlat_switch = f64::NAN;
        let mut busiest = 0;
        for k in &peer_keys {
            let d = delta(k);
            println!("  {k:<52} {:>8.1} {:>10}", per_hit(d), d.1);
            if d.1 > busiest {
                busiest = d.1;
                runqlat_switch = per_hit(d);
            }
        }
        PerHit {
            empty_tp: ns("empty_tp"),
            empty_btf: ns("empty_btf"),
            fast_tp: ns("fast_tp/switch"),
            fast_btf: ns("fast_btf/switch"),
            full_mean,
            runqlat_switch,
        }
    })
}

/// One run of the default config's cost model.
struct CostModel {
    per_chain: BTreeMap<String, f64>,
    total_cpu: f64,
    runqlat_cpu: f64,
    running: Vec<String>,
}

/// Every program of the default config: its hits per second idle and under the pipe workload,
/// its kernel run time per hit, and what that makes in CPU; then runqlat alone under the same
/// workload, measured the same way. `print`: the whole table (the first run), else the totals.
fn cost_model_run(rt: &tokio::runtime::Runtime, runqlat: &std::path::Path, run: usize, print: bool) -> CostModel {
    const IDLE_SECS: u64 = 5;
    let (_dir, path) = config_file("[probe]\nbpf_stats = true\n");
    let loaded = Config::load(Some(&path)).expect("default config");
    let plans = daemon::plan(&loaded, &Kernel::open()).expect("plan");
    rt.block_on(async {
        let d = Daemon::start(&loaded, plans, Vec::new()).expect("start");
        let sample = || -> BTreeMap<String, (u64, u64)> {
            d.program_stats()
                .into_iter()
                .map(|p| (format!("{}/{} {}", p.chain, p.stage, p.target), (p.run_time_ns, p.run_count)))
                .collect()
        };
        let delta = |a: &BTreeMap<String, (u64, u64)>, b: &BTreeMap<String, (u64, u64)>| {
            b.iter()
                .map(|(k, v)| {
                    let before = a.get(k).copied().unwrap_or((0, 0));
                    (k.clone(), (v.0 - before.0, v.1 - before.1))
                })
                .collect::<BTreeMap<_, _>>()
        };
        let s0 = sample();
        // The idle rates need an idle interval: a fixed one is what is measured.
        tokio::time::sleep(Duration::from_secs(IDLE_SECS)).await;
        let s1 = sample();
        let (wall, _) = tokio::task::spawn_blocking(|| pipe_bench(None, PIPE_LOOPS)).await.unwrap();
        let s2 = sample();
        let idle = delta(&s0, &s1);
        let busy = delta(&s1, &s2);
        if print {
            println!("\nrun {run}: the default config per program (the cost model): hits/s idle ({IDLE_SECS} s) and under perf bench sched pipe ({wall:.1} s), ns/hit under the workload, CPU = hits/s x ns/hit:");
            println!("  {:<62} {:>9} {:>10} {:>8} {:>8}", "chain/stage target", "idle/s", "pipe/s", "ns/hit", "cpu %");
        }
        let mut total = 0.0;
        let mut per_chain: BTreeMap<String, f64> = BTreeMap::new();
        for (k, (t, n)) in &busy {
            let cpu = *t as f64 / wall / 1e9 * 100.0;
            total += cpu;
            *per_chain.entry(k.split('/').next().unwrap_or_default().to_string()).or_default() += cpu;
            if print {
                let idle_rate = idle.get(k).map_or(0.0, |v| v.1 as f64 / IDLE_SECS as f64);
                println!("  {k:<62} {idle_rate:>9.0} {:>10.0} {:>8.1} {cpu:>7.2}%", *n as f64 / wall, per_hit((*t, *n)));
            }
        }
        let running: Vec<String> =
            d.plans.iter().filter(|p| p.is_chain() && p.is_running()).map(|p| p.name.clone()).collect();
        d.stop().await;

        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("kernel.bpf_stats_enabled");
        let peer = spawn_quiet(Command::new(runqlat).arg("60"));
        let is_peer = |n: &str| !n.starts_with("cp_") && n.contains("sched_");
        wait_attached("runqlat", is_peer);
        let before = programs_named(is_peer);
        let (peer_wall, _) = tokio::task::spawn_blocking(|| pipe_bench(None, PIPE_LOOPS)).await.unwrap();
        let after = programs_named(is_peer);
        stop(peer);
        let mut peer_cpu = 0.0;
        for (n, t, c) in &after {
            if let Some(b) = before.iter().find(|b| &b.0 == n) {
                let cpu = (t - b.1) as f64 / peer_wall / 1e9 * 100.0;
                peer_cpu += cpu;
                if print {
                    println!("  {:<62} {:>9} {:>10.0} {:>8.1} {cpu:>7.2}%", format!("runqlat `{n}`"), "", (c - b.2) as f64 / peer_wall, per_hit((t - b.1, c - b.2)));
                }
            }
        }
        println!("run {run}: default config {total:.2}% of a CPU in BPF, runqlat {peer_cpu:.2}% ({:.2}x)", total / peer_cpu);
        CostModel { per_chain, total_cpu: total, runqlat_cpu: peer_cpu, running }
    })
}

/// A tool whose effect on the workload is measured.
enum Tool {
    /// `clockpath run`, with only this built-in chain when given.
    Clockpath(String, Option<&'static str>),
    /// A command line.
    Command(String, Vec<String>),
    /// clockpath's empty programs on the two tracepoints, in process.
    Floor(String),
}

impl Tool {
    fn label(&self) -> &str {
        match self {
            Tool::Clockpath(l, _) | Tool::Command(l, _) | Tool::Floor(l) => l,
        }
    }
}

/// What runs during one measured workload run.
enum Running {
    Child(Child),
    Floor(Daemon),
}

/// Start `tool` and wait until its programs run (a tool that has not attached yet would make
/// the run look free).
fn start(rt: &tokio::runtime::Runtime, tool: &Tool) -> Running {
    match tool {
        Tool::Clockpath(_, only) => {
            let mut c = Command::new(clockpath_bin());
            c.args(["run", "--log", "warn"]);
            for chain in DEFAULT_CHAINS {
                if only.is_some_and(|o| o != chain) {
                    c.env(format!("CLOCKPATH_CHAINS__{}__ENABLED", chain.to_uppercase()), "false");
                }
            }
            let child = spawn_quiet(&mut c);
            wait_attached("clockpath", |n| n.starts_with("cp_"));
            Running::Child(child)
        }
        Tool::Command(_, argv) => {
            let child = spawn_quiet(Command::new(&argv[0]).args(&argv[1..]));
            wait_attached(&argv[0], |n| !n.starts_with("cp_") && n.contains("sched_"));
            Running::Child(child)
        }
        Tool::Floor(_) => {
            let (_dir, path) = config_file(FLOOR_CONFIG);
            let loaded = Config::load(Some(&path)).expect("floor config");
            let plans = daemon::plan(&loaded, &Kernel::open()).expect("floor plan");
            Running::Floor(rt.block_on(async {
                let mut d = Daemon::start(&loaded, plans, Vec::new()).expect("floor daemon");
                // One program attaches to one tp_btf target, so the second is a raw tracepoint;
                // both run through the same trampoline dispatch.
                d.attach_baseline(&"tp_btf:sched_switch".parse().unwrap()).expect("empty tp_btf");
                d.attach_baseline(&"raw_tp:sched_wakeup".parse().unwrap()).expect("empty raw_tp");
                d
            }))
        }
    }
}

fn finish(rt: &tokio::runtime::Runtime, r: Running) {
    match r {
        Running::Child(c) => stop(c),
        Running::Floor(d) => {
            rt.block_on(d.stop());
        }
    }
}

/// The workload's slowdown with each tool: per round and tool, a bare run and a run with the
/// tool, interleaved over the tools; the median and range of the ratios, and each tool's
/// median against runqlat's.
fn slowdown(rt: &tokio::runtime::Runtime, tools: &[Tool], pinned: bool, loops: &str, rounds: usize) {
    let cpu = pinned.then_some(PINNED_CPU);
    let how =
        if pinned { format!("taskset -c {PINNED_CPU} (both tasks on one CPU)") } else { "unpinned (both CPUs)".into() };
    println!(
        "\nworkload slowdown, perf bench sched pipe -l {loops}, {how}: each tool's run paired with a bare run just before it, {rounds} rounds:"
    );
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    let mut cpu_ratio: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    let mut bare = Vec::new();
    for round in 0..rounds {
        for (i, tool) in tools.iter().enumerate() {
            let t0 = pipe_bench(cpu, loops);
            let running = start(rt, tool);
            let t1 = pipe_bench(cpu, loops);
            finish(rt, running);
            bare.push(t0.0);
            wall[i].push(t1.0 / t0.0 - 1.0);
            cpu_ratio[i].push(t1.1 / t0.1 - 1.0);
        }
        println!("  round {} done", round + 1);
    }
    let b = spread(&bare);
    println!("  bare run: median {:.3} s [{:.3}, {:.3}]", b.median, b.min, b.max);
    println!("  {:<58} {:>24} {:>10}", "tool", "wall: median [range]", "cpu");
    for (i, tool) in tools.iter().enumerate() {
        let w = spread(&wall[i]);
        let c = spread(&cpu_ratio[i]);
        println!(
            "  {:<58} {:>+7.1}% [{:+.1}, {:+.1}] {:>+9.1}%",
            tool.label(),
            w.median * 100.0,
            w.min * 100.0,
            w.max * 100.0,
            c.median * 100.0
        );
    }
    let find = |label: &str| tools.iter().position(|t| t.label().trim() == label);
    let (Some(r), Some(d)) = (find("runqlat (libbpf-tools)"), find("clockpath run (default config)")) else { return };
    // Per round, each tool's slowdown against runqlat's in the same round.
    let against =
        |i: usize| -> Spread { spread(&wall[i].iter().zip(&wall[r]).map(|(x, y)| x / y).collect::<Vec<_>>()) };
    println!("  ratios to runqlat's slowdown in the same round (wall), median [min, max]:");
    println!("    default config: {}   (target <= 0.5x)", against(d));
    for (i, t) in tools.iter().enumerate() {
        if i != d && i != r {
            println!("    {}: {}", t.label().trim(), against(i));
        }
    }
}
