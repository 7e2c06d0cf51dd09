//! The running exporter's memory and CPU: `clockpath run` on its default configuration, idle
//! and then under continuous scheduler load (`perf bench sched messaging` restarted as it
//! ends), sampled every 30 s.
//!
//! Prints per sample: resident size, the ring buffer's mapping (from /proc/PID/smaps: the
//! `anon_inode:bpf-map` pages) and the resident size without it, each component's heap from
//! `clockpath_memory_bytes`, records read, and userspace CPU per ring record since the previous
//! sample. Then the figures the targets are stated in: RSS without the ring idle and at the
//! end, growth after the first statistics window (% per 10 minutes), and CPU per record under
//! load. Prints figures; asserts nothing.
//!
//! First, the start-up peak: three starts on this kernel's BTF and three on a BTF twice its
//! size (this kernel's, followed by a copy of every type, bind-mounted over
//! /sys/kernel/btf/vmlinux in a private mount namespace), each in a memory cgroup of its own:
//! the process's VmHWM (the ring's mapped pages included), and what the cgroup was charged at
//! most (kernel memory, the BPF maps, included): the figures the Helm chart's limit is derived
//! from.
//!
//! `cargo bench -p clockpath-tests --bench footprint [-- --startup-only]` (root).
//! FOOTPRINT_MINUTES sets the load phase (default 10), FOOTPRINT_IDLE_SECS the idle one
//! (default 60).

use std::{
    process::Child,
    time::{Duration, Instant},
};

use clockpath_tests::{
    Exporter, btf,
    cgroup::MemoryCgroup,
    clockpath_bin, keep_loaded,
    procstat::{ring_kib, scrape_values, status_kib, thread_seconds},
    require_root,
};

/// One start's memory, KiB.
struct Start {
    hwm: u64,
    rss: u64,
    anon: u64,
    ring: u64,
    charged_peak: u64,
}

/// Start the exporter in a fresh memory cgroup (`bind`: a file mounted over the kernel's BTF
/// in a private mount namespace), wait until it serves, and read its memory.
fn start_once(n: usize, bind: Option<&std::path::Path>) -> Start {
    let group = MemoryCgroup::create(&format!("clockpath-footprint-{}-{n}", std::process::id()), 4 << 30);
    let mount = bind.map(|b| format!("mount --bind {} /sys/kernel/btf/vmlinux && ", b.display())).unwrap_or_default();
    let script = format!("echo $$ > {} && {mount}exec \"$@\"", group.procs().display());
    let wrapper: Vec<&str> = match bind {
        Some(_) => vec!["unshare", "-m", "--propagation", "private", "sh", "-c", &script, "sh"],
        None => vec!["sh", "-c", &script, "sh"],
    };
    let e = Exporter::start_wrapped(&wrapper, &clockpath_bin(), &["--log", "warn"], &[]);
    let pid = e.pid();
    let s = Start {
        hwm: status_kib(pid, "VmHWM:"),
        rss: status_kib(pid, "VmRSS:"),
        anon: status_kib(pid, "RssAnon:"),
        ring: ring_kib(pid),
        charged_peak: group.peak() / 1024,
    };
    drop(e);
    s
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The start-up peak on this kernel's BTF and on one twice its size.
fn startup_peaks() {
    let real = std::fs::read("/sys/kernel/btf/vmlinux").expect("read the kernel's BTF");
    let dir = tempfile::tempdir().expect("tempdir");
    let double = dir.path().join("vmlinux-doubled");
    std::fs::write(&double, btf::doubled(&real)).expect("write the doubled BTF");
    println!(
        "start-up memory, 3 starts each (MiB): VmHWM (ring pages included), resident once serving (of it anonymous; the rest is the binary's text and the ring's mapping), cgroup peak charged (BPF maps included; the binary's page cache only where this group first reads it)"
    );
    let mut medians = Vec::new();
    for (label, bind, bytes) in
        [("this kernel's BTF", None, real.len()), ("twice the BTF", Some(double.as_path()), real.len() * 2)]
    {
        let starts: Vec<Start> = (0..3).map(|i| start_once(i, bind)).collect();
        let mib = |k: u64| k as f64 / 1024.0;
        for s in &starts {
            println!(
                "  {label:<18} ({:.1} MB of BTF): VmHWM {:6.1}  RSS {:6.1} (anon {:5.1})  ring {:5.1}  charged {:6.1}",
                bytes as f64 / 1e6,
                mib(s.hwm),
                mib(s.rss),
                mib(s.anon),
                mib(s.ring),
                mib(s.charged_peak)
            );
        }
        let m =
            (median(starts.iter().map(|s| s.hwm).collect()), median(starts.iter().map(|s| s.charged_peak).collect()));
        println!("  {label:<18} median VmHWM {:.1} MiB, median charged peak {:.1} MiB", mib(m.0), mib(m.1));
        medians.push(m);
    }
    println!(
        "  twice the BTF: VmHWM {:+.1} %, charged peak {:+.1} %   (target: VmHWM <= 96 MiB on this kernel, <= +25 % on twice the BTF)",
        (medians[1].0 as f64 / medians[0].0 as f64 - 1.0) * 100.0,
        (medians[1].1 as f64 / medians[0].1 as f64 - 1.0) * 100.0
    );
}

/// One sample of the exporter process.
struct Sample {
    at: Duration,
    rss_kib: u64,
    anon_kib: u64,
    ring_kib: u64,
    components: Vec<(String, f64)>,
    records: f64,
    cpu_seconds: f64,
    /// CPU of the statistics worker thread (`clockpath-windows`): per window, not per record.
    windows_cpu_seconds: f64,
    /// CPU of the main thread: planning and attaching at start, then signals only.
    main_cpu_seconds: f64,
}

impl Sample {
    /// CPU of the data path: the runtime's threads (ring reader, sweep, HTTP) and assembly
    /// with its sinks.
    fn data_cpu(&self) -> f64 {
        self.cpu_seconds - self.windows_cpu_seconds - self.main_cpu_seconds
    }
}

fn sample(e: &Exporter, pid: u32, started: Instant) -> Sample {
    let text = e.scrape();
    Sample {
        at: started.elapsed(),
        rss_kib: status_kib(pid, "VmRSS:"),
        anon_kib: status_kib(pid, "RssAnon:"),
        ring_kib: ring_kib(pid),
        components: scrape_values(&text, "clockpath_memory_bytes{"),
        records: scrape_values(&text, "clockpath_ring_records_received_total").first().map_or(0.0, |v| v.1),
        cpu_seconds: thread_seconds(pid, None),
        windows_cpu_seconds: thread_seconds(pid, Some("clockpath-windo")),
        main_cpu_seconds: thread_seconds(pid, Some("clockpath")),
    }
}

fn print(s: &Sample, prev: Option<&Sample>, phase: &str) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let heap: Vec<String> = s
        .components
        .iter()
        .filter(|(c, _)| c != "ring_mapping")
        .map(|(c, b)| format!("{c} {:.2}", b / (1 << 20) as f64))
        .collect();
    let per_record = prev
        .filter(|p| s.records > p.records)
        .map(|p| format!("{:.3} µs", (s.data_cpu() - p.data_cpu()) * 1e6 / (s.records - p.records)))
        .unwrap_or_else(|| "-".into());
    println!(
        "{:>6.0} s {phase:<5} RSS {:6.1} MiB  ring {:5.1}  without ring {:5.1} MiB (anon {:5.1})  records {:>11.0}  data CPU/record {per_record:>9}  heap MiB: {}",
        s.at.as_secs_f64(),
        mib(s.rss_kib),
        mib(s.ring_kib),
        mib(s.rss_kib - s.ring_kib),
        mib(s.anon_kib),
        s.records,
        heap.join(", ")
    );
}

fn main() {
    require_root();
    startup_peaks();
    if std::env::args().any(|a| a == "--startup-only") {
        return;
    }
    let minutes: u64 = std::env::var("FOOTPRINT_MINUTES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let idle_secs: u64 = std::env::var("FOOTPRINT_IDLE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let every = Duration::from_secs(30);
    let e = Exporter::start(&[], &[]);
    let pid = e.child.as_ref().expect("running").id();
    let started = Instant::now();
    println!("clockpath run (default configuration), pid {pid}: {idle_secs} s idle, then {minutes} min of load");
    let mut samples: Vec<(Sample, &str)> = Vec::new();
    let mut next = Instant::now();
    let idle_until = started + Duration::from_secs(idle_secs);
    let load_until = idle_until + Duration::from_secs(minutes * 60);
    let mut load: Option<Child> = None;
    while Instant::now() < load_until {
        if Instant::now() >= next {
            let phase = if Instant::now() < idle_until { "idle" } else { "load" };
            let s = sample(&e, pid, started);
            print(&s, samples.last().map(|(p, _)| p), phase);
            samples.push((s, phase));
            next += every;
        }
        if Instant::now() >= idle_until {
            // Keep one load generator running.
            keep_loaded(&mut load);
        }
        // A benchmark paces itself by the clock; tests poll with deadlines instead.
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(mut c) = load {
        let _ = c.kill();
        let _ = c.wait();
    }
    let last = sample(&e, pid, started);
    print(&last, samples.last().map(|(p, _)| p), "end");
    drop(e);

    let without = |s: &Sample| (s.rss_kib - s.ring_kib) as f64 / 1024.0;
    let idle: Vec<&Sample> = samples.iter().filter(|(_, p)| *p == "idle").map(|(s, _)| s).collect();
    let loaded: Vec<&Sample> = samples.iter().filter(|(_, p)| *p == "load").map(|(s, _)| s).collect();
    println!();
    if let Some(i) = idle.last() {
        println!(
            "idle: RSS {:.1} MiB, {:.1} MiB without the ring's {:.1} MiB (target <= 64)",
            i.rss_kib as f64 / 1024.0,
            without(i),
            i.ring_kib as f64 / 1024.0
        );
    }
    println!(
        "after {minutes} min of load: RSS {:.1} MiB, {:.1} MiB without the ring (target <= 64)",
        last.rss_kib as f64 / 1024.0,
        without(&last)
    );
    // Growth after the first statistics window (60 s into the load): the least-squares slope
    // of the resident size without the ring over the later samples, scaled to 10 minutes. One
    // sample against another would measure where each fell in the minute's window cycle.
    let later: Vec<&Sample> =
        loaded.iter().copied().chain([&last]).filter(|s| s.at.as_secs() >= idle_secs + 90).collect();
    if later.len() >= 3 {
        let n = later.len() as f64;
        let xs: Vec<f64> = later.iter().map(|s| s.at.as_secs_f64()).collect();
        let ys: Vec<f64> = later.iter().map(|s| without(s)).collect();
        let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
        let slope = sxy / sxx;
        let (lo, hi) = ys.iter().fold((f64::MAX, f64::MIN), |(l, h), y| (l.min(*y), h.max(*y)));
        println!(
            "growth after the first window: {:+.2} % per 10 min (least-squares slope over {} samples, mean {my:.1} MiB, range {lo:.1}–{hi:.1}; target <= 2 %)",
            slope * 600.0 / my * 100.0,
            later.len()
        );
    }
    // The data path (ring reader, assembly, sinks) is what a record costs; the statistics
    // worker's bootstraps cost per window (bounded by windows.reservoir), whatever the rate,
    // and the main thread only plans and attaches. The idle phase has records too (the
    // machine schedules anyway), so the cost of one more record is the slope between the
    // phases: (CPU rate under load − idle CPU rate) / (record rate under load − idle rate).
    // The idle phase starts at its second sample, after start-up has settled.
    let rate = |a: &Sample, b: &Sample| {
        let secs = (b.at - a.at).as_secs_f64();
        ((b.data_cpu() - a.data_cpu()) / secs, (b.records - a.records) / secs)
    };
    let idle_rates = match (idle.get(1), idle.last()) {
        (Some(a), Some(b)) if b.at > a.at => Some(rate(a, b)),
        _ => None,
    };
    if let (Some(a), Some(b)) = (loaded.first(), Some(&last))
        && b.records > a.records
    {
        let secs = (b.at - a.at).as_secs_f64();
        let (cpu_rate, rec_rate) = rate(a, b);
        println!(
            "data path under load: {rec_rate:.0} records/s, {:.2} % of a core: {:.3} µs of CPU per ring record all-in (target <= 0.25 µs)",
            cpu_rate * 100.0,
            cpu_rate * 1e6 / rec_rate
        );
        if let Some((idle_cpu, idle_rec)) = idle_rates
            && rec_rate > idle_rec
        {
            println!(
                "  idle: {idle_rec:.0} records/s at {:.2} % of a core; cost of one more record (slope between the phases): {:.3} µs",
                idle_cpu * 100.0,
                (cpu_rate - idle_cpu) * 1e6 / (rec_rate - idle_rec)
            );
        }
        let windows = b.windows_cpu_seconds - a.windows_cpu_seconds;
        println!(
            "statistics worker: {:.2} CPU s over {:.1} min ({:.2} % of a core; B = 500 bootstraps of up to windows.reservoir runs per chain and minute)",
            windows,
            secs / 60.0,
            windows / secs * 100.0
        );
    }
}
