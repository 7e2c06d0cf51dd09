//! The exporter inside a memory cgroup limited to the Helm chart's own `resources.limits.memory`
//! (issue 27): it starts, serves `/metrics`, and stays alive under `perf bench sched messaging`
//! for a minute, without one OOM kill. The group is charged for what the node would charge the
//! pod: the process's memory and the kernel memory it allocates (BPF maps and ring buffers).

use std::time::{Duration, Instant};

use clockpath_tests::{cgroup::MemoryCgroup, peer::assume, *};

/// `resources.limits.memory` of helm/clockpath/values.yaml, in bytes (`Mi` or `Gi`).
fn chart_memory_limit() -> u64 {
    let path = workspace().join("helm/clockpath/values.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut in_limits = false;
    for line in text.lines() {
        let t = line.trim();
        if t == "limits:" {
            in_limits = true;
        } else if in_limits && let Some(v) = t.strip_prefix("memory:") {
            let v = v.trim();
            let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
            let n: u64 = n.parse().unwrap_or_else(|_| panic!("limits.memory `{v}` in {}", path.display()));
            return match unit {
                "Mi" => n << 20,
                "Gi" => n << 30,
                other => panic!("limits.memory unit `{other}` in {}: expected Mi or Gi", path.display()),
            };
        }
    }
    panic!("no resources.limits.memory in {}", path.display());
}

#[test]
fn the_exporter_starts_serves_and_stays_within_the_charts_memory_limit_under_load() {
    require_root();
    const LOAD: Duration = Duration::from_secs(60);
    let limit = chart_memory_limit();
    let group = MemoryCgroup::create(&format!("clockpath-test-{}", std::process::id()), limit);
    assume("the group's limit is the chart's", group.limit() == limit, || {
        format!("{} in force, {limit} asked (cgroup {:?})", group.limit(), group.version)
    });
    // The shell moves itself into the group, then becomes the exporter: it is charged from its
    // first allocation.
    let script = format!("echo $$ > {} && exec \"$@\"", group.procs().display());
    let mut e = Exporter::start_wrapped(&["sh", "-c", &script, "sh"], &clockpath_bin(), &["--log", "warn"], &[]);
    let pid = e.pid().to_string();
    let members = std::fs::read_to_string(group.procs()).expect("cgroup.procs");
    assume("the exporter runs in the test's memory cgroup", members.lines().any(|l| l == pid), || {
        format!("pid {pid}, members {members:?}")
    });
    let started = Instant::now();
    let mut load = None;
    let mut scrapes = 0u64;
    wait_for(&format!("{LOAD:?} of scheduler load with the exporter alive"), LOAD + Duration::from_secs(30), || {
        keep_loaded(&mut load);
        if let Some(c) = e.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!(
                "the exporter exited ({status}) after {:?} under a {} MiB limit: {} OOM kill(s), peak {} MiB charged",
                started.elapsed(),
                limit >> 20,
                group.oom_kills(),
                group.peak() >> 20
            );
        }
        assert!(e.scrape().contains("clockpath_build_info"), "a scrape without the exporter's metrics");
        scrapes += 1;
        (started.elapsed() >= LOAD).then_some(())
    });
    if let Some(mut l) = load {
        let _ = l.kill();
        let _ = l.wait();
    }
    let text = e.scrape();
    let peak_rss =
        exposition::Scrape::parse(&text).expect("parse").sum("clockpath_process_resident_memory_peak_bytes", &[]);
    eprintln!(
        "cgroup {:?}: limit {} MiB, peak charged {:.1} MiB, now {:.1} MiB; exporter's own peak RSS {:.1} MiB; {scrapes} scrapes",
        group.version,
        limit >> 20,
        group.peak() as f64 / 1048576.0,
        group.current() as f64 / 1048576.0,
        peak_rss / 1048576.0,
    );
    assert_eq!(group.oom_kills(), 0, "OOM kills in the group");
    assert!(peak_rss > 0.0 && peak_rss < limit as f64, "peak RSS {peak_rss} against the limit {limit}");
    let out = e.stop();
    assert!(out.status.success(), "clockpath run: {}", String::from_utf8_lossy(&out.stderr));
}
