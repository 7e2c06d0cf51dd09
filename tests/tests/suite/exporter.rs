//! The Prometheus exporter (issue 3): a real Prometheus scraping it, promtool, concurrent
//! scrapes under load, and bad HTTP configuration.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clockpath_tests::{exposition::Scrape, prometheus::Prometheus, *};

const SEG: &str = "enqueue->switch_in";

#[test]
fn prometheus_scrapes_the_exporter_and_queries_work() {
    require_root();
    let exporter = Exporter::start(&["--duration", "120"], &[("CLOCKPATH_WINDOWS__INTERVAL_SECS", "5")]);
    let prom = Prometheus::start(&[exporter.addr()]);
    prom.wait_for("up{job=\"clockpath\"}", Duration::from_secs(20), |v| v == 1.0);
    let count = format!("sum(clockpath_segment_duration_seconds_count{{chain=\"runqueue\",segment=\"{SEG}\"}})");
    let before = prom.wait_for(&count, Duration::from_secs(20), |_| true);
    wait_ok(sched_messaging(100), "perf bench sched messaging");
    let after = prom.wait_for(&count, Duration::from_secs(20), |v| v > before + 1000.0);
    eprintln!("runqueue segments seen by Prometheus: {before} -> {after}");
    let q = format!(
        "histogram_quantile(0.5, rate(clockpath_segment_duration_seconds_bucket{{chain=\"runqueue\",segment=\"{SEG}\"}}[1m]))"
    );
    let median = prom.wait_for(&q, Duration::from_secs(20), |v| v.is_finite() && v > 0.0);
    eprintln!("histogram_quantile(0.5) of runqueue: {median} s");
    // Info metrics, labels from the environment, probe plan.
    let env = prom.query("clockpath_environment_info");
    assert_eq!(env.len(), 1, "{env:?}");
    for l in ["env", "hypervisor", "clocksource", "governor", "cstate_limit"] {
        assert!(env[0]["metric"][l].is_string(), "environment_info lacks {l}: {env:?}");
    }
    assert_eq!(prom.query("clockpath_build_info").len(), 1);
    let attached = prom.query("clockpath_probe_info{chain=\"runqueue\",state=\"attached\"}");
    assert!(!attached.is_empty());
    let unavailable = prom.query("clockpath_probe_info{chain=\"clocksource_switch\",reason!=\"\"}");
    assert!(!unavailable.is_empty(), "the clocksource chain's reasons should be exported");
    // Every chain series carries env.
    let series = prom.query(&format!("clockpath_segment_duration_seconds_count{{segment=\"{SEG}\"}}"));
    assert!(series.iter().all(|s| s["metric"]["env"].is_string()), "{series:?}");

    // The dashboards' queries run against a whole fleet in tests/fleet.rs.

    // promtool on a plain scrape reports nothing.
    let text = exporter.scrape();
    let promtool = require_tool("promtool", "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics: {report}");
    // The OpenMetrics scrape ends with # EOF and parses.
    let om = exporter.scrape_openmetrics();
    assert!(om.trim_end().ends_with("# EOF"));
    assert!(Scrape::parse(&om).unwrap().check_consistency().is_empty());
    let out = exporter.stop();
    assert!(out.status.success(), "clockpath exited with {}", out.status);
}

#[test]
fn concurrent_scrapes_under_scheduler_load_are_consistent() {
    require_root();
    const RATE: u64 = 200;
    const SECS: u64 = 30;
    const THREADS: u64 = 8;
    let exporter = Arc::new(Exporter::start(&["--duration", "120"], &[]));
    let loading = Arc::new(AtomicBool::new(true));
    let load = {
        let loading = loading.clone();
        std::thread::spawn(move || {
            let mut runs = 0;
            while loading.load(Ordering::Relaxed) {
                wait_ok(sched_messaging(20), "perf bench sched messaging");
                runs += 1;
            }
            runs
        })
    };
    let start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let e = exporter.clone();
            std::thread::spawn(move || {
                let per_thread = RATE / THREADS;
                let period = Duration::from_secs_f64(1.0 / per_thread as f64);
                let mut latencies = Vec::new();
                let mut failures = Vec::new();
                let mut last: Option<std::collections::BTreeMap<_, f64>> = None;
                let mut next = Instant::now() + period * t as u32 / THREADS as u32;
                while start.elapsed() < Duration::from_secs(SECS) {
                    let t0 = Instant::now();
                    let r = ureq::get(&e.url("/metrics")).call();
                    let body = match r.map(|r| r.into_string()) {
                        Ok(Ok(b)) => b,
                        other => {
                            failures.push(format!("scrape failed: {other:?}"));
                            continue;
                        }
                    };
                    latencies.push(t0.elapsed());
                    match Scrape::parse(&body) {
                        Ok(s) => {
                            failures.extend(s.check_consistency());
                            let c = s.counters();
                            if let Some(prev) = &last {
                                for (k, v) in prev {
                                    if let Some(now) = c.get(k)
                                        && now < v
                                    {
                                        failures.push(format!("counter decreased: {k:?} {v} -> {now}"));
                                    }
                                }
                            }
                            last = Some(c);
                        }
                        Err(e) => failures.push(format!("unparsable scrape: {e}")),
                    }
                    next += period;
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    for w in workers {
        let (l, f) = w.join().expect("scrape thread");
        latencies.extend(l);
        failures.extend(f);
    }
    loading.store(false, Ordering::Relaxed);
    let runs = load.join().unwrap();
    let last = Scrape::parse(&exporter.scrape()).unwrap();
    let lost: f64 = last.named("clockpath_ring_records_lost_total").map(|s| s.value).sum();
    let dropped: f64 = last.named("clockpath_records_dropped_total").map(|s| s.value).sum();
    let segs: f64 = last
        .named("clockpath_segment_duration_seconds_count")
        .filter(|s| s.labels["chain"] == "runqueue")
        .map(|s| s.value)
        .sum();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{} scrapes in {SECS} s ({:.0}/s) under {runs} perf bench runs ({segs} sched segments): p50 {:?}, p99 {:?}, max {:?}; ring records lost {lost}, dropped in userspace {dropped}",
        latencies.len(),
        latencies.len() as f64 / SECS as f64,
        p(0.5),
        p(0.99),
        latencies.last().unwrap()
    );
    assert!(failures.is_empty(), "{} problems, first: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(latencies.len() as u64 >= RATE * SECS * 9 / 10, "only {} scrapes", latencies.len());
    assert!(runs >= 1 && segs > 1000.0);
    let e = Arc::try_unwrap(exporter).ok().expect("one owner");
    assert!(e.stop().status.success());
}

#[test]
fn the_exporter_accounts_for_its_memory_per_component() {
    require_root();
    let ring_bytes: u64 = 8 << 20;
    let e = Exporter::start(&["--duration", "60"], &[("CLOCKPATH_PROBE__RING_BYTES", "8388608")]);
    let component = |s: &Scrape, c: &str| {
        s.named("clockpath_memory_bytes")
            .find(|x| x.labels.get("component").map(String::as_str) == Some(c))
            .map(|x| x.value)
    };
    // Components appear once the assembly thread has published (every second) with segments
    // recorded: the scheduler chains fire on any machine.
    let scrape = wait_for("heap figures per component", Duration::from_secs(30), || {
        let s = Scrape::parse(&e.scrape()).ok()?;
        (component(&s, "hdr_histograms").is_some_and(|v| v > 0.0) && component(&s, "window_reservoirs").is_some())
            .then_some(s)
    });
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    // One ring per CPU (up to 8) sharing ring_bytes, each a power of two that maps its data
    // pages twice: on 2 CPUs, two rings of 4 MiB.
    let rings = std::thread::available_parallelism().map_or(1, |n| n.get() as u64).min(8);
    let each = 1u64 << (63 - (ring_bytes / rings).leading_zeros());
    assert_eq!(
        component(&scrape, "ring_mapping"),
        Some((rings * (2 * each + 2 * page)) as f64),
        "{rings} rings of {each} bytes, data pages mapped twice"
    );
    for c in ["assembly", "assembly_queue"] {
        assert!(component(&scrape, c).is_some(), "no clockpath_memory_bytes{{component=\"{c}\"}}");
    }
    let rss = scrape.named("process_resident_memory_bytes").next().expect("process_resident_memory_bytes").value;
    let heap: f64 = scrape
        .named("clockpath_memory_bytes")
        .filter(|x| x.labels["component"] != "ring_mapping")
        .map(|x| x.value)
        .sum();
    assert!(rss > heap, "resident {rss} B is less than the heap the components report ({heap} B)");
    assert!(scrape.named("process_cpu_seconds_total").next().is_some_and(|x| x.value > 0.0));
    for reason in ["timeout", "cap"] {
        assert!(
            scrape.named("clockpath_assembly_evictions_total").any(|x| x.labels["reason"] == reason),
            "no eviction counter for {reason}"
        );
    }
    assert!(scrape.named("clockpath_windows_skipped_total").next().is_some());
}

#[test]
fn healthz_is_ok_while_attached() {
    require_root();
    let e = Exporter::start(&["--duration", "60"], &[]);
    let r = ureq::get(&e.url("/healthz")).call().expect("healthz");
    assert_eq!(r.status(), 200);
    let landing = ureq::get(&e.url("/")).call().unwrap().into_string().unwrap();
    for needle in ["/metrics", "/healthz", "runqueue", "clocksource_switch", "kprobe:change_clocksource"] {
        assert!(landing.contains(needle), "landing page lacks {needle}");
    }
    assert_eq!(ureq::get(&e.url("/nope")).call().unwrap_err().into_response().map(|r| r.status()), Some(404));
}

#[test]
fn bad_http_configuration_exits_2() {
    require_root();
    // Port already in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(clockpath_bin())
        .args(["run", "--duration", "2"])
        .env("CLOCKPATH_HTTP__LISTEN", &addr)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")) && err.contains("in use"), "{err}");
    assert!(!err.contains("chain running"), "nothing may be attached: {err}");
    // An invalid listen address.
    let out =
        Command::new(clockpath_bin()).args(["run"]).env("CLOCKPATH_HTTP__LISTEN", "not-an-address").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("http.listen") && err.contains("environment"), "{err}");
    // An unreadable config file (a directory).
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(clockpath_bin()).args(["run", "--config", dir.path().to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(dir.path().to_str().unwrap()), "{err}");
    // Bucket bounds that are not kernel boundaries.
    let (_d, cfg) = config_file("[metrics]\nbuckets_seconds = [1e-6, 1e-3]\n");
    let out = Command::new(clockpath_bin()).args(["run", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("metrics.buckets_seconds") && err.contains("nearest"), "{err}");
}

#[test]
fn statistics_windows_are_published_for_live_chains() {
    require_root();
    let e = Exporter::start(&["--duration", "60"], &[("CLOCKPATH_WINDOWS__INTERVAL_SECS", "4")]);
    wait_ok(sched_messaging(60), "perf bench sched messaging");
    // The window that saw the load closes within its interval (4 s), then publishes.
    let s = wait_for("a statistics window for runqueue", Duration::from_secs(30), || {
        let s = Scrape::parse(&e.scrape()).unwrap();
        let published = s.named("clockpath_window_median_seconds").any(|x| x.labels["chain"] == "runqueue");
        published.then_some(s)
    });
    let sel = |name: &str| {
        s.named(name)
            .find(|x| x.labels["chain"] == "runqueue" && x.labels["segment"] == SEG)
            .unwrap_or_else(|| panic!("no {name} for runqueue"))
            .clone()
    };
    let median = sel("clockpath_window_median_seconds");
    let lower = sel("clockpath_window_ci_lower_seconds").value;
    let upper = sel("clockpath_window_ci_upper_seconds").value;
    let n = sel("clockpath_window_samples").value;
    let reliable = sel("clockpath_window_reliable").value;
    let end = sel("clockpath_window_end_timestamp_seconds").value;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    eprintln!("window: median {} s, CI [{lower}, {upper}], n {n}, reliable {reliable}", median.value);
    assert!(lower <= median.value && median.value <= upper, "[{lower}, {}, {upper}]", median.value);
    assert!(n > 0.0 && (reliable == 1.0) == (n >= 100.0));
    assert!(now - end < 30.0, "window end {end} is not recent");
    for l in ["env", "governor", "cstate_limit"] {
        assert!(median.labels.contains_key(l), "window series lacks {l}");
    }
    assert!(s.samples.iter().all(|x| x.value.is_finite() || x.name.ends_with("_bucket")), "NaN or infinity published");
}

/// A chain of one segment, a process spawned and exec'd: a handful of records, on demand.
const SPAWN_CHAIN: &str = only_these_chains!(
    r#"
[chains.spawn]
[[chains.spawn.stages]]
name = "fork"
key = "child_pid"
targets = ["tracepoint:sched:sched_process_fork"]
[[chains.spawn.stages]]
name = "exec"
key = "pid"
targets = ["tracepoint:sched:sched_process_exec"]
"#
);

/// A one-segment chain's records are staged per CPU and reach the ring 16 at a time. A CPU
/// that goes idle with fewer has them flushed by the reader (the flush program run on that
/// CPU), so three spawns, far fewer than a batch, reach userspace while the exporter runs,
/// not only when it stops.
#[test]
fn a_few_records_staged_on_idle_cpus_reach_userspace_while_the_exporter_runs() {
    require_root();
    let (_dir, path) = config_file(SPAWN_CHAIN);
    let e = Exporter::start(&["--config", path.to_str().expect("utf-8 path"), "--duration", "60"], &[]);
    for _ in 0..3 {
        let status = Command::new("/bin/true").status().expect("/bin/true");
        assert!(status.success());
    }
    // The kernel's histogram counts every segment at once; userspace counts the records it
    // read (the spawn chain is the only one running, and sends segments only).
    let (kernel, received) = wait_for("every spawn the kernel counted, in userspace", Duration::from_secs(10), || {
        let s = Scrape::parse(&e.scrape()).ok()?;
        let kernel = s
            .named("clockpath_segment_duration_seconds_count")
            .find(|x| x.labels.get("chain").map(String::as_str) == Some("spawn"))?
            .value;
        let received = s.named("clockpath_ring_records_received_total").next()?.value;
        (kernel >= 3.0 && received == kernel).then_some((kernel, received))
    });
    eprintln!("spawn segments: kernel {kernel}, records received {received}");
    assert!(kernel < 16.0 * 2.0, "{kernel} segments: enough to fill a batch per CPU, which proves nothing");
    assert!(e.stop().status.success());
}

/// Commands that print and exit end quietly when their reader goes away (`doctor --json |
/// head -1`): killed by SIGPIPE as other Unix tools are, never a panic.
#[test]
fn printing_commands_end_quietly_when_the_reader_goes_away() {
    require_root();
    use std::io::BufRead as _;
    for args in [&["doctor", "--json"][..], &["config", "--default"][..], &["clocks", "--duration", "0.05"][..]] {
        let mut child = std::process::Command::new(clockpath_bin())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "{args:?} printed nothing");
        // The reader is gone (dropped above); the rest of the output has nowhere to go.
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
        use std::os::unix::process::ExitStatusExt as _;
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?}\n{err}",
            out.status
        );
    }
}

/// Issue 32's CLI: `run --listen` serves where it says (over CLOCKPATH_HTTP__LISTEN and the
/// config), a bad address is a usage error naming the flag; `run --help` tells the default port
/// and the environment scheme; the statistics options show their defaults; `--version` names
/// the revision.
#[test]
fn run_listens_where_listen_says_and_help_tells_the_defaults() {
    require_root();
    let (flag, env) = (free_port(), free_port());
    let mut child = std::process::Command::new(clockpath_bin())
        .args(["run", "--duration", "30", "--listen", &format!("127.0.0.1:{flag}")])
        .env("CLOCKPATH_HTTP__LISTEN", format!("127.0.0.1:{env}"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start clockpath run");
    let agent = ureq::Agent::new();
    wait_for("/healthz on the --listen port", std::time::Duration::from_secs(30), || {
        agent.get(&format!("http://127.0.0.1:{flag}/healthz")).call().ok().map(|_| ())
    });
    assert!(agent.get(&format!("http://127.0.0.1:{env}/healthz")).call().is_err(), "the environment's port answers");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().expect("wait").success());

    let out = clockpath(&["run", "--listen", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen: `nonsense` is not an ADDRESS:PORT"));
    let help = String::from_utf8_lossy(&clockpath(&["run", "--help"]).stdout).into_owned();
    for want in ["--listen <ADDR>", "0.0.0.0:39111", "CLOCKPATH_HTTP__LISTEN", "Examples:"] {
        assert!(help.contains(want), "run --help lacks {want}:\n{help}");
    }
    // Help is wrapped to the terminal's width: compared with whitespace runs as one space.
    let help = String::from_utf8_lossy(&clockpath(&["analyze", "--help"]).stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for want in [
        "[default: windows.sigma, 3]",
        "[default: windows.bootstrap.resamples, 500]",
        "[default: windows.bootstrap.level, 0.95]",
        "[default: 1000000]",
    ] {
        assert!(help.contains(want), "analyze --help lacks {want}:\n{help}");
    }
    let v = String::from_utf8_lossy(&clockpath(&["--version"]).stdout).into_owned();
    assert!(v.starts_with("clockpath 0.") && v.contains("build)"), "{v}");
}
