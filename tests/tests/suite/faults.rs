//! Faults a node will see: a ring buffer far too small, the instance map full, the exporter
//! killed with SIGKILL and started again, tracefs unmounted at start, the recorder's disk
//! full, a scrape storm. Each checks that what was collected stays exact and the exporter goes
//! on serving.

use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clockpath_tests::{exposition::Scrape, *};
use serde_json::Value;

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    Scrape::parse(text).expect("scrape parses").sum(name, labels)
}

/// `clockpath run` with `env` under scheduler load; the summary it writes at exit.
fn run_with_load(env: &[(&str, &str)]) -> (Value, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = dir.path().join("summary.json");
    let e = Exporter::start(&["--duration", "60", "--summary-json", summary.to_str().expect("utf-8")], env);
    wait_ok(sched_messaging(200), "perf bench sched messaging");
    let out = e.stop();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let text = std::fs::read_to_string(&summary).expect("summary written");
    (serde_json::from_str(&text).expect("summary is JSON"), log)
}

/// Every running chain's kernel histogram holds exactly the segments received plus those lost.
fn assert_histograms_exact(summary: &Value) {
    for c in summary["chains"].as_array().expect("chains") {
        if c["state"] != "running" {
            continue;
        }
        let (hist, received, lost) =
            (c["hist_segments"].as_u64(), c["segments_received"].as_u64(), c["ring_lost_segments"].as_u64());
        let (Some(hist), Some(received), Some(lost)) = (hist, received, lost) else { panic!("summary fields: {c}") };
        assert_eq!(hist, received + lost, "{}: histogram {hist} != received {received} + lost {lost}", c["name"]);
    }
}

fn chain<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["chains"].as_array().expect("chains").iter().find(|c| c["name"] == name).expect("chain in summary")
}

#[test]
fn a_ring_far_too_small_loses_records_and_the_histograms_stay_exact() {
    require_root();
    let (s, _) = run_with_load(&[("CLOCKPATH_PROBE__RING_BYTES", "4096")]);
    let lost: u64 = s["chains"].as_array().expect("chains").iter().filter_map(|c| c["ring_lost"].as_u64()).sum();
    let w = chain(&s, "runqueue");
    eprintln!(
        "4 KiB ring: {lost} records lost; runqueue histogram {} = received {} + lost {}",
        w["hist_segments"], w["segments_received"], w["ring_lost_segments"]
    );
    assert!(lost > 0, "a 4 KiB ring under load must lose records: {s}");
    assert!(w["segments_received"].as_u64().unwrap_or(0) > 0, "some records still arrive");
    assert_histograms_exact(&s);
}

#[test]
fn a_full_instance_map_is_counted_and_the_rest_goes_on() {
    require_root();
    let (s, _) = run_with_load(&[("CLOCKPATH_PROBE__MAX_INSTANCES", "4")]);
    let full: u64 = s["chains"].as_array().expect("chains").iter().filter_map(|c| c["map_full"].as_u64()).sum();
    let completed: u64 = s["chains"].as_array().expect("chains").iter().filter_map(|c| c["completed"].as_u64()).sum();
    eprintln!("max_instances = 4: {full} first-stage hits found the map full, {completed} chains completed");
    assert!(full > 0, "4 instances must overflow under load: {s}");
    assert!(completed > 0, "chains still complete");
    assert_histograms_exact(&s);
}

/// IDs of the loaded BPF programs named like clockpath's (`cp_…`).
fn clockpath_programs() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("cp_")))
        .map(|p| p.id())
        .collect()
}

#[test]
fn sigkill_leaves_no_program_link_or_pin_behind_and_a_restart_attaches_again() {
    require_root();
    // Other clockpath processes may run on the machine: only this one's programs count.
    let before = clockpath_programs();
    let e = Exporter::start(&["--duration", "120"], &[]);
    let ours: BTreeSet<u32> = clockpath_programs().difference(&before).copied().collect();
    assert!(!ours.is_empty(), "the exporter loaded programs");
    let running = metric(&e.scrape(), "clockpath_chain_running", &[("chain", "runqueue")]);
    assert_eq!(running, 1.0);
    let mut e = e;
    let mut child = e.child.take().expect("running");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    wait_for_or(
        "the kernel to free the killed exporter's programs (and so its links)",
        Duration::from_secs(20),
        || {
            let now = clockpath_programs();
            ours.iter().all(|id| !now.contains(id)).then_some(())
        },
        || format!("still loaded: {:?}", clockpath_programs().intersection(&ours).collect::<Vec<_>>()),
    );
    eprintln!("{} programs of the killed exporter are gone", ours.len());
    // Nothing pinned: clockpath never pins, so a SIGKILL can leave nothing in bpffs.
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        let pins: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("clockpath") || n.starts_with("cp_"))
            .collect();
        assert!(pins.is_empty(), "pinned objects left: {pins:?}");
    }
    // Started again: every default chain attaches as before.
    let again = Exporter::start(&["--duration", "60"], &[]);
    let text = again.scrape();
    for chain in ["runqueue", "hrtimer", "softirq"] {
        assert_eq!(metric(&text, "clockpath_chain_running", &[("chain", chain)]), 1.0, "{chain} after the restart");
    }
    assert!(again.stop().status.success());
}

/// Runs `then` (sh) in a private mount namespace with tracefs (and debugfs) unmounted, the
/// machine's own mounts untouched; its stdout is a run's summary. (summary, stderr).
fn without_tracefs(then: &str) -> (Value, String) {
    let script = format!(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug/tracing 2>/dev/null; \
         umount -l /sys/kernel/debug 2>/dev/null; {then}"
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let json = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}\n{log}"));
    (summary, log)
}

#[test]
fn tracefs_unmounted_at_start_is_mounted_again_or_named_with_what_it_costs() {
    require_root();
    let bin = clockpath_bin();
    let port = free_port();
    let (summary, log) = without_tracefs(&format!(
        "if grep -q ' tracefs ' /proc/mounts; then echo 'tracefs still mounted' >&2; exit 97; fi; \
         CLOCKPATH_HTTP__LISTEN=127.0.0.1:{port} {} run --duration 3 --summary-json -; rc=$?; \
         grep ' tracefs ' /proc/mounts >&2; exit $rc",
        bin.display()
    ));
    assert!(log.contains("/sys/kernel/tracing tracefs"), "clockpath mounted tracefs again:\n{log}");
    assert_eq!(chain(&summary, "runqueue")["state"]["state"], "running", "{summary}");

    // Without CAP_SYS_ADMIN it cannot mount it: the log says so and what that costs, and the
    // chains run on targets that need no tracefs (tp_btf).
    let (summary, log) = without_tracefs(&format!(
        "CLOCKPATH_HTTP__LISTEN=127.0.0.1:{port} exec setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin -- \
         {} run --duration 3 --summary-json -",
        bin.display()
    ));
    let line = log.lines().find(|l| l.contains("tracefs is not mounted")).unwrap_or_else(|| panic!("{log}"));
    eprintln!("without CAP_SYS_ADMIN: {line}");
    assert!(line.contains("/sys/kernel/tracing") && line.contains("Operation not permitted"), "{line}");
    assert!(line.contains("tracepoint targets are unusable"), "{line}");
    assert_eq!(chain(&summary, "runqueue")["state"]["state"], "running", "{summary}");
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(ok.success(), "mount a tmpfs on {}", dir.path().display());
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_costs_recorder_lines_never_half_a_line_and_the_exporter_goes_on() {
    require_root();
    let disk = SmallDisk::new("2m");
    let dir = disk.path().to_str().expect("utf-8").to_string();
    let e = Exporter::start(
        &["--duration", "120"],
        &[
            ("CLOCKPATH_RECORDER__ENABLED", "true"),
            ("CLOCKPATH_RECORDER__DIR", dir.as_str()),
            ("CLOCKPATH_RECORDER__ROTATE_BYTES", "262144"),
        ],
    );
    let mut load = sched_messaging(2000);
    let count = |t: &str| metric(t, "clockpath_segment_duration_seconds_count", &[("chain", "runqueue")]);
    let full = wait_for("the recorder's disk to fill and its errors to be counted", Duration::from_secs(60), || {
        let t = e.scrape();
        (metric(&t, "clockpath_recorder_write_errors_total", &[]) > 0.0).then_some(t)
    });
    // The exporter goes on: scrapes answer and the histograms keep counting.
    let later = wait_for("histograms to keep counting on a full disk", Duration::from_secs(20), || {
        let t = e.scrape();
        (count(&t) > count(&full) && metric(&t, "clockpath_recorder_lines_dropped_total", &[]) > 0.0).then_some(t)
    });
    // Room again (the oldest files deleted): writes resume by themselves.
    let mut files: Vec<_> = std::fs::read_dir(disk.path()).expect("dir").flatten().map(|e| e.path()).collect();
    files.sort();
    for f in &files[..files.len().saturating_sub(1)] {
        let _ = std::fs::remove_file(f);
    }
    // Bytes reach the disk only through a flush that succeeded (a failed one is cut back).
    let on_disk = || -> u64 {
        std::fs::read_dir(disk.path())
            .map_or(0, |d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
    };
    let base = on_disk();
    wait_for("recording to resume once there is room (the open file grows)", Duration::from_secs(30), || {
        (on_disk() > base).then_some(())
    });
    let _ = load.kill();
    let _ = load.wait();
    let out = e.stop();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    eprintln!(
        "full disk: {} write errors, {} of {} lines dropped",
        metric(&later, "clockpath_recorder_write_errors_total", &[]),
        metric(&later, "clockpath_recorder_lines_dropped_total", &[]),
        metric(&later, "clockpath_recorder_lines_total", &[])
    );
    let (failed, resumed) =
        (log.matches("lines are dropped and counted").count(), log.matches("recorder writes work again").count());
    assert!(resumed >= 1, "writes resumed once there was room:\n{log}");
    assert!(failed >= 1 && failed <= resumed + 1, "the failure is logged when it starts, not per write:\n{log}");
    // Every file left holds whole lines only: the header's number of fields on every line.
    let mut lines = 0;
    for f in std::fs::read_dir(disk.path()).expect("dir").flatten() {
        let text = std::fs::read_to_string(f.path()).expect("read trace");
        if text.is_empty() {
            continue;
        }
        assert!(text.ends_with('\n'), "{} ends with half a line", f.path().display());
        let mut it = text.lines();
        let fields = it.next().expect("header").split(',').count();
        for (i, l) in it.enumerate() {
            assert_eq!(l.split(',').count(), fields, "{} line {}: {l:?}", f.path().display(), i + 2);
            lines += 1;
        }
    }
    assert!(lines > 0, "something was recorded");
}

#[test]
fn a_scrape_storm_is_bounded_and_scrapes_still_answer() {
    require_root();
    let e = Exporter::start(&["--duration", "120"], &[]);
    let url = e.url("/metrics");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // The scraper that matters (Prometheus) holds its keep-alive connection from before the
    // storm; new connections beyond the limit are closed at accept.
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    agent.get(&url).call().expect("scrape before the storm").into_string().expect("body");
    let mut load = sched_messaging(2000);
    // 200 clients scraping as fast as they can: more than the server's 64 connections.
    let storm: Vec<_> = (0..200)
        .map(|_| {
            let (url, stop, ok, refused) = (url.clone(), stop.clone(), ok.clone(), refused.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
                while !stop.load(Ordering::Relaxed) {
                    match agent.get(&url).call().map(|r| r.into_string()) {
                        Ok(Ok(_)) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    // The established scraper, timing each scrape during the storm.
    let mut times = Vec::new();
    let until = Instant::now() + Duration::from_secs(15);
    let mut failed = 0;
    while Instant::now() < until {
        let t = Instant::now();
        match agent.get(&url).call().map(|r| r.into_string()) {
            Ok(Ok(_)) => times.push(t.elapsed()),
            _ => failed += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in storm {
        let _ = t.join();
    }
    let _ = load.kill();
    let _ = load.wait();
    times.sort();
    let p = |q: f64| times.get(((times.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or_default();
    let text = e.scrape();
    let rejected = metric(&text, "clockpath_http_connections_rejected_total", &[]);
    eprintln!(
        "storm: {} scrapes served, {} refused at the connection limit ({rejected} counted); own scraper {} ok / {failed} refused, p50 {:?} p99 {:?} max {:?}",
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        times.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    assert!(rejected > 0.0, "200 clients must meet the connection limit");
    assert!(!times.is_empty(), "the storm must not starve every scrape");
    // A hang guard, not a speed target: every served scrape finishes well within Prometheus'
    // default scrape timeout.
    assert!(p(1.0) < Duration::from_secs(10), "a scrape took {:?}", p(1.0));
    assert!(e.stop().status.success());
}
