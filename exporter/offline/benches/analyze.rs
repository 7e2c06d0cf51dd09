//! Offline analysis speed and memory on a generated 1 GB CSV trace, next to a pandas
//! implementation of the same method on the same file (when python3 with pandas and numpy is
//! available). Run: `cargo bench -p clockpath-offline --bench analyze` (set ANALYZE_BENCH_MB to
//! change the size). The analysis runs in a child process of this benchmark (so its peak RSS is
//! its own), through this crate only. Prints figures; asserts nothing.

use std::{
    io::Write as _,
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

fn generate(path: &Path, target_bytes: u64) -> u64 {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    writeln!(f, "timestamp_ns,probe_name,session_id,cpu_id,delta_chain_id,chain,env,governor,cstate").unwrap();
    let mut written = 0u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ts = 1_000_000_000_000u64;
    let mut id = 0u64;
    while written < target_bytes {
        id += 1;
        let session = ["host-default", "host-c1", "vm-default", "vm-c1"][(id % 4) as usize];
        let env = if session.starts_with("vm") { "vm" } else { "host" };
        let s1 = 20_000 + next() % 30_000;
        let s2 = 5_000 + next() % 5_000;
        for (probe, t) in [("switch_entry", ts), ("first_read", ts + s1), ("baseline_recalc", ts + s1 + s2)] {
            let line = format!(
                "{t},{probe},{session},{},{id},clocksource_switch,{env},performance,{}\n",
                id % 2,
                &session[session.find('-').unwrap() + 1..]
            );
            written += line.len() as u64;
            f.write_all(line.as_bytes()).unwrap();
        }
        ts += s1 + s2 + 1_000_000;
    }
    f.flush().unwrap();
    written
}

/// Run a command, returning (wall seconds, CPU seconds, peak RSS in MiB).
fn measure(cmd: &mut Command) -> (f64, f64, f64) {
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
    (t.elapsed().as_secs_f64(), cpu(ru.ru_utime) + cpu(ru.ru_stime), ru.ru_maxrss as f64 / 1024.0)
}

/// The chain the generated file holds, as `clockpath analyze` knows it from its default config.
fn chains() -> Vec<ChainDef> {
    let stages = ["switch_entry", "first_read", "baseline_recalc"].map(String::from).to_vec();
    let shape = ChainShape { name: "clocksource_switch".into(), stages, timeout_ns: 5_000_000_000 };
    vec![ChainDef { shape, first_hit_only: false }]
}

/// In the child process: what `clockpath analyze --no-plots` does, on this crate alone.
fn analyze(file: &Path, out: &Path, reservoir: usize) {
    let opts = AnalyzeOptions {
        read: ReadOptions::default(),
        reservoir,
        sigma: 3.0,
        bootstrap: Bootstrap::default(),
        progress: false,
        sort_memory: analysis::DEFAULT_SORT_MEMORY,
    };
    let c = analysis::collect(&[file.to_path_buf()], &chains(), &opts).expect("analysis reads the file");
    let r = analysis::report::build(&c, &opts);
    analysis::report::write(out, &r, &c).expect("report written");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Re-executed as `analyze --child FILE OUT RESERVOIR`, so wait4 reports its peak RSS alone.
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let reservoir = args[i + 3].parse().expect("reservoir");
        analyze(Path::new(&args[i + 1]), Path::new(&args[i + 2]), reservoir);
        return;
    }
    let mb: u64 = std::env::var("ANALYZE_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("trace-{mb}MB.csv"));
    if std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) < mb << 20 {
        let t = Instant::now();
        let n = generate(&file, mb << 20);
        println!("generated {} ({:.0} MB) in {:.1} s", file.display(), n as f64 / 1e6, t.elapsed().as_secs_f64());
    }
    let bytes = std::fs::metadata(&file).unwrap().len() as f64;
    let me = std::env::current_exe().expect("the benchmark's own path");
    let out = dir.join("analysis");
    let child = |reservoir: usize| {
        let mut c = Command::new(&me);
        c.arg("--child").arg(&file).arg(&out).arg(reservoir.to_string());
        c
    };
    println!("clockpath analysis (clockpath-offline) on {:.0} MB (one core for parsing):", bytes / 1e6);
    // Reading and assembly only: a small reservoir keeps the bootstrap out of the figure.
    println!("  (MB/s per CPU second; wall time in brackets: this VM's wall clock is noisy)");
    let (w, t, rss) = measure(&mut child(10));
    println!(
        "  parse + assemble:            {t:7.2} s CPU ({w:.2} s)  {:7.1} MB/s  peak RSS {rss:7.1} MiB",
        bytes / 1e6 / t
    );
    // The whole method: 3σ rejection, medians, SD and B = 500 bootstrap CIs per session and group.
    let (w_full, t_full, rss_full) = measure(&mut child(1_000_000));
    println!(
        "  full analysis (B = 500):     {t_full:7.2} s CPU ({w_full:.2} s)  {:7.1} MB/s  peak RSS {rss_full:7.1} MiB",
        bytes / 1e6 / t_full
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/analyze_pandas.py");
    let has_pandas = Command::new("python3").args(["-c", "import pandas, numpy"]).status().is_ok_and(|s| s.success());
    if has_pandas {
        let (wp, tp, rssp) = measure(Command::new("python3").arg(&script).arg(&file));
        println!(
            "pandas, same method:           {tp:7.2} s CPU ({wp:.2} s)  {:7.1} MB/s  peak RSS {rssp:7.1} MiB",
            bytes / 1e6 / tp
        );
        println!(
            "clockpath vs pandas: {:.1}x faster, {:.2}x the memory (targets: >= 10x faster, <= 0.25x memory)",
            tp / t_full,
            rss_full / rssp
        );
    } else {
        println!(
            "pandas comparison skipped: python3 with pandas and numpy is not installed (pip install pandas numpy)"
        );
    }
}
