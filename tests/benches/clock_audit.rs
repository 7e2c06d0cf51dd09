//! The clock audit's cost (`clockpath clocks`, issue 29: a full audit in ≤ 1 s): wall time and
//! this process's CPU time (user + system, getrusage) per audit, for the default two rounds
//! 0.5 s apart and for rounds 0.1 s apart, five audits each after one to warm up (the BPF
//! object's first load). Also how many clocks were measured and how many unavailable.
//! Then the exporter's periodic audit (`[clock_audit]`, issue 29: ≤ 0.1 % of a core): sources
//! opened once and kept, the built-in default's reads and interval, rounds 0.1 s apart as `run`
//! takes them; the CPU of one audit on the auditing thread and its share of a core.
//! Prints figures; asserts nothing.
//!
//! `cargo bench -p clockpath-tests --bench clock_audit` (root: BPF programs, a tracing instance).

use std::time::{Duration, Instant};

use clockpath_probe::clocks::{AuditOptions, audit, audit_with, sources};
use clockpath_tests::require_root;

fn cpu_seconds() -> f64 {
    // SAFETY: a zeroed rusage is valid; getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn periodic() {
    let cfg = clockpath::config::Config::builtin().clock_audit;
    let opts =
        AuditOptions { duration: Duration::from_millis(100), samples: cfg.samples.into(), ..AuditOptions::default() };
    let mut src = sources(&opts);
    let _ = audit_with(&mut src, &opts);
    let mut cpus: Vec<f64> = (0..20)
        .map(|_| {
            let c = thread_cpu_seconds();
            let _ = audit_with(&mut src, &opts);
            thread_cpu_seconds() - c
        })
        .collect();
    cpus.sort_by(f64::total_cmp);
    let median = cpus[10];
    println!(
        "periodic audit (sources kept, {} reads per clock): CPU median {:.2} ms (min {:.2}, max {:.2}) per audit = {:.4} % of a core at the default interval of {} s (target ≤ 0.1 %); {:.3} % at 10 s",
        cfg.samples,
        median * 1e3,
        cpus[0] * 1e3,
        cpus[19] * 1e3,
        median / cfg.interval_secs as f64 * 100.0,
        cfg.interval_secs,
        median / 10.0 * 100.0
    );
}

fn main() {
    require_root();
    periodic();
    for gap_ms in [500u64, 100] {
        let opts = AuditOptions { duration: Duration::from_millis(gap_ms), ..AuditOptions::default() };
        let _ = audit(&opts);
        let (mut walls, mut cpus) = (Vec::new(), Vec::new());
        let mut counts = (0, 0);
        for _ in 0..5 {
            let (t, c) = (Instant::now(), cpu_seconds());
            let a = audit(&opts);
            walls.push(t.elapsed().as_secs_f64());
            cpus.push(cpu_seconds() - c);
            counts = (a.measured().count(), a.clocks.len() - a.measured().count());
        }
        walls.sort_by(f64::total_cmp);
        cpus.sort_by(f64::total_cmp);
        println!(
            "rounds {gap_ms} ms apart: wall median {:.3} s (min {:.3}, max {:.3}); CPU median {:.1} ms (max {:.1}); {} clocks measured, {} unavailable",
            walls[2],
            walls[0],
            walls[4],
            cpus[2] * 1e3,
            cpus[4] * 1e3,
            counts.0,
            counts.1
        );
    }
}
