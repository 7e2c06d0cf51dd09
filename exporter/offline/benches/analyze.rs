//! Offline analysis speed and memory, next to a pandas implementation of the same method on
//! the same files. Run: `cargo bench -p clockpath-offline --bench analyze`.
//!
//! Three inputs, generated once into `target/bench-data`:
//! - a 1 GB CSV of four sessions in time order (`ANALYZE_BENCH_MB` changes the size);
//! - the same lines shuffled (what merging per-CPU buffers or concatenating files gives),
//!   which `analyze` must sort within its memory bound;
//! - many sessions: 1 000 sessions × 300 runs (~50 MB), where the per-session bootstraps
//!   dominate and run on every core.
//!
//! Every analysis runs in a child process of this benchmark (so its peak RSS is its own),
//! through this crate only. Python with pandas comes from `CLOCKPATH_ANALYSIS_VENV` (default
//! `/opt/clockpath-test/analysis-venv`, which `scripts/setup.sh` installs) or `python3`.
//! `ANALYZE_BENCH_PANDAS=0` skips pandas. Prints figures; asserts nothing.

use std::{
    io::{BufRead as _, Write as _},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use clockpath_offline::{
    analysis::{self, AnalyzeOptions, ChainDef},
    chain::ChainShape,
    stats::Bootstrap,
    trace::read::ReadOptions,
};

const HEADER: &str = "timestamp_ns,probe_name,session_id,cpu_id,delta_chain_id,chain,env,governor,cstate";

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One run's three lines of session `session`.
fn run_lines(out: &mut impl std::io::Write, rng: &mut Xorshift, session: &str, id: u64, ts: &mut u64) -> u64 {
    let vm = session.contains("vm");
    let env = if vm { "vm" } else { "host" };
    let cstate = if session.contains("c1") { "c1" } else { "default" };
    let s1 = 20_000 + rng.next() % 30_000;
    let s2 = 5_000 + rng.next() % 5_000;
    let mut written = 0;
    for (probe, t) in [("switch_entry", *ts), ("first_read", *ts + s1), ("baseline_recalc", *ts + s1 + s2)] {
        let line = format!("{t},{probe},{session},{},{id},clocksource_switch,{env},performance,{cstate}\n", id % 2);
        written += line.len() as u64;
        out.write_all(line.as_bytes()).unwrap();
    }
    *ts += s1 + s2 + 1_000_000;
    written
}

/// Four long sessions, interleaved, in time order, up to `target_bytes`.
fn generate_large(path: &Path, target_bytes: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    writeln!(f, "{HEADER}").unwrap();
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let (mut written, mut id, mut ts) = (0u64, 0u64, 1_000_000_000_000u64);
    while written < target_bytes {
        id += 1;
        let session = ["host-default", "host-c1", "vm-default", "vm-c1"][(id % 4) as usize];
        written += run_lines(&mut f, &mut rng, session, id, &mut ts);
    }
    f.flush().unwrap();
}

/// `from`'s lines (header first) in a random order.
fn shuffle(from: &Path, to: &Path) {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(from).unwrap());
    let mut header = String::new();
    r.read_line(&mut header).unwrap();
    for l in r.split(b'\n') {
        lines.push(l.unwrap());
    }
    let mut rng = Xorshift(0x2545_f491_4f6c_dd1d);
    for i in (1..lines.len()).rev() {
        lines.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(to).unwrap());
    f.write_all(header.as_bytes()).unwrap();
    for l in &lines {
        f.write_all(l).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
}

/// `sessions` sessions of `runs` runs each, one after the other (hundreds of runs of an
/// investigation, one session each).
fn generate_many(path: &Path, sessions: usize, runs: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    writeln!(f, "{HEADER}").unwrap();
    let mut rng = Xorshift(0x1234_5678_9abc_def1);
    let mut ts = 1_000_000_000_000u64;
    for s in 0..sessions {
        let session = format!("{}-{}-{s:04}", ["host", "vm"][s % 2], ["default", "c1"][(s / 2) % 2]);
        for id in 1..=runs {
            run_lines(&mut f, &mut rng, &session, id, &mut ts);
        }
    }
    f.flush().unwrap();
}

/// What one measured process used.
struct Usage {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
}

/// Run a command, returning its wall time, CPU time and peak RSS.
fn measure(cmd: &mut Command) -> Usage {
    let t = Instant::now();
    // Reaped by wait4 below, which also reports the child's resource usage.
    #[expect(clippy::zombie_processes, reason = "wait4 reaps the child")]
    let child = cmd.stdout(std::process::Stdio::null()).spawn().expect("spawn");
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 on our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert!(r > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{cmd:?} failed (status {status})");
    let cpu = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Usage {
        wall: t.elapsed().as_secs_f64(),
        cpu: cpu(ru.ru_utime) + cpu(ru.ru_stime),
        rss_mib: ru.ru_maxrss as f64 / 1024.0,
    }
}

/// The chain the generated files hold, as `clockpath analyze` knows it from its default config.
fn chains() -> Vec<ChainDef> {
    let stages = ["switch_entry", "first_read", "baseline_recalc"].map(String::from).to_vec();
    let shape = ChainShape { name: "clocksource_switch".into(), stages, timeout_ns: 5_000_000_000, causes: Vec::new() };
    vec![ChainDef { shape, first_hit_only: false }]
}

/// In the child process: what `clockpath analyze --no-plots` does, on this crate alone.
fn analyze(file: &Path, out: &Path, reservoir: usize, threads: usize) {
    if threads > 0 {
        analysis::use_threads(threads).expect("thread pool");
    }
    let opts = AnalyzeOptions {
        read: ReadOptions::default(),
        reservoir,
        sigma: 3.0,
        spread: Default::default(),
        bootstrap: Bootstrap::default(),
        progress: false,
        sort_memory: analysis::DEFAULT_SORT_MEMORY,
        align: Default::default(),
        mixed_clocks: false,
    };
    let c = analysis::collect(&[file.to_path_buf()], &chains(), &opts).expect("analysis reads the file");
    let r = analysis::report::build(&c, &opts);

    analysis::report::write(out, &r, &c).expect("report written");
}

fn python() -> Option<PathBuf> {
    let venv =
        std::env::var_os("CLOCKPATH_ANALYSIS_VENV").unwrap_or_else(|| "/opt/clockpath-test/analysis-venv".into());
    let candidates = [Path::new(&venv).join("bin/python"), PathBuf::from("python3")];
    candidates
        .into_iter()
        .find(|p| Command::new(p).args(["-c", "import pandas, numpy"]).output().is_ok_and(|o| o.status.success()))
}

fn line(what: &str, bytes: f64, u: &Usage) {
    println!(
        "  {what:<34} {:7.2} s wall  {:7.2} s CPU  {:7.1} MB/s (wall)  peak RSS {:7.1} MiB",
        u.wall,
        u.cpu,
        bytes / 1e6 / u.wall,
        u.rss_mib
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Re-executed as `analyze --child FILE OUT RESERVOIR THREADS`, so wait4 reports its own
    // peak RSS.
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let reservoir = args[i + 3].parse().expect("reservoir");
        let threads = args[i + 4].parse().expect("threads");
        analyze(Path::new(&args[i + 1]), Path::new(&args[i + 2]), reservoir, threads);
        return;
    }
    let mb: u64 = std::env::var("ANALYZE_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let sorted = dir.join(format!("trace-{mb}MB.csv"));
    let shuffled = dir.join(format!("trace-{mb}MB-shuffled.csv"));
    let many = dir.join("many-1000x300.csv");
    // Generated in a child too: a process spawned from a parent that once held the shuffled
    // lines would report the parent's peak RSS as its own.
    if args.iter().any(|a| a == "--generate") {
        let t = Instant::now();
        if std::fs::metadata(&sorted).map(|m| m.len()).unwrap_or(0) < mb << 20 {
            generate_large(&sorted, mb << 20);
            let _ = std::fs::remove_file(&shuffled);
        }
        if !shuffled.exists() {
            shuffle(&sorted, &shuffled);
        }
        if !many.exists() {
            generate_many(&many, 1000, 300);
        }
        println!("inputs ready in {:.1} s ({})", t.elapsed().as_secs_f64(), dir.display());
        return;
    }
    let me = std::env::current_exe().expect("the benchmark's own path");
    let generated = Command::new(&me).arg("--generate").status().expect("generate the inputs");
    assert!(generated.success(), "generating the inputs failed");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let out = dir.join("analysis");
    let child = |file: &Path, reservoir: usize, threads: usize| {
        let mut c = Command::new(&me);
        c.arg("--child").arg(file).arg(&out).arg(reservoir.to_string()).arg(threads.to_string());
        c
    };
    // ANALYZE_BENCH_PANDAS=0 leaves pandas out (it takes ~10 minutes on the 1 GB file).
    let py = python().filter(|_| std::env::var("ANALYZE_BENCH_PANDAS").map_or(true, |v| v != "0"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/analyze_pandas.py");

    println!("\n1. {:.0} MB, four sessions, {cpus} CPUs", size(&sorted) / 1e6);
    // Reading and assembly only: a small reservoir keeps the bootstrap out of the figure.
    let parse = measure(&mut child(&sorted, 10, 0));
    line("parse + assemble (time order)", size(&sorted), &parse);
    // The whole method: 3σ rejection, medians, SD and B = 500 bootstrap CIs per session and group.
    let full = measure(&mut child(&sorted, 1_000_000, 0));
    line("full analysis (time order)", size(&sorted), &full);
    let shuf = measure(&mut child(&shuffled, 1_000_000, 0));
    line("full analysis (shuffled lines)", size(&shuffled), &shuf);
    println!(
        "  shuffled / time order: {:.2}x the wall time (target <= 2x); peak RSS {:.0} and {:.0} MiB (target <= 512)",
        shuf.wall / full.wall,
        full.rss_mib,
        shuf.rss_mib
    );
    let pandas_large = py.as_ref().map(|py| measure(Command::new(py).arg(&script).arg(&sorted)));
    if let Some(p) = &pandas_large {
        line("pandas, same method", size(&sorted), p);
        println!(
            "  clockpath vs pandas: {:.1}x faster (wall; target >= 30x), {:.2}x the memory",
            p.wall / full.wall,
            full.rss_mib / p.rss_mib
        );
    }

    println!("\n2. many sessions: 1000 x 300 runs, {:.0} MB", size(&many) / 1e6);
    let one = measure(&mut child(&many, 1_000_000, 1));
    line("full analysis, 1 thread", size(&many), &one);
    let all = measure(&mut child(&many, 1_000_000, 0));
    line(&format!("full analysis, {cpus} threads"), size(&many), &all);
    println!("  {cpus} threads vs 1: {:.2}x faster (identical reports: see tests/analyze.rs)", one.wall / all.wall);
    if let Some(py) = &py {
        let p = measure(Command::new(py).arg(&script).arg(&many));
        line("pandas, same method", size(&many), &p);
        println!("  clockpath vs pandas: {:.1}x faster (wall; target >= 15x)", p.wall / all.wall);
    } else {
        println!(
            "\npandas comparisons skipped: no Python with pandas and numpy (scripts/setup.sh installs one in /opt/clockpath-test/analysis-venv)"
        );
    }
}
