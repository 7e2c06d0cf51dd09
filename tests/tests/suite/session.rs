//! Sessions and interference on this machine's kernel (issue 6): degraded mode where the
//! clocksource chain cannot attach, restoring the clocksource on SIGTERM, and interference
//! charged to segments.

use std::{
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use clockpath::{
    config::Config,
    daemon::{self, Daemon},
    pipeline::Sink,
};
use clockpath_common::{interference::NAMES, record::UNKNOWN_INTERFERENCE};
use clockpath_offline::chain::ChainRecord;
use clockpath_probe::kernel::Kernel;
use clockpath_tests::*;
use serde_json::Value;

/// Whether the clocksource chain attaches on this kernel, by `doctor`.
fn clocksource_chain_runs() -> bool {
    let out = clockpath(&["doctor", "--json"]);
    let d: Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    let c = d["chains"].as_array().unwrap().iter().find(|c| c["name"] == "clocksource_switch").expect("chain");
    c["state"]["state"] == "running"
}

/// Degraded mode is what a session promises on a kernel where the clocksource chain cannot
/// attach: this CI machine's (no kprobes, fentry refused). The kernel mode is tested in the
/// guest (`guest.rs`), where it can attach.
#[test]
fn a_session_runs_degraded_when_the_chain_cannot_attach_and_restores_the_clocksource() {
    require_root();
    assert!(
        !clocksource_chain_runs(),
        "this test needs a kernel where the clocksource chain cannot attach (no kprobes, fentry refused), as CI's"
    );
    let (original, avail) = clocksources();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let list = format!("{},{}", avail[0], avail[1]);
    let o = clockpath(&[
        "session",
        "--runs",
        "40",
        "--clocksources",
        &list,
        "--label",
        "cstate=default",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&o.stderr));
    assert_eq!(current_clocksource(), original, "the original clocksource is back");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["mode"], "degraded", "without kprobes or fentry the session must say it is degraded");
    assert_eq!(s["chain"], "clocksource_write");
    assert_eq!(s["runs_done"], 40);
    assert_eq!(s["completed"], 40, "{}", s["missing"]);
    assert_eq!(s["labels"]["cstate"], "default");
    // The clocks audited at the start and the end, in the session's own record.
    for when in ["at_start", "at_end"] {
        let a = &s["clocks"][when];
        assert_eq!(a["schema"], "clockpath-clock-audit/1", "{when}");
        let boottime = a["clocks"].as_array().unwrap().iter().find(|c| c["name"] == "posix:boottime").unwrap();
        assert_eq!(boottime["status"], "measured", "{boottime}");
    }
    let k = &s["kernel"];
    assert_eq!(
        k["hist_segments"].as_u64().unwrap(),
        k["segments_received"].as_u64().unwrap() + k["ring_lost_segments"].as_u64().unwrap()
    );
    let median = s["analysis"]["columns"][0]["median"].as_f64().unwrap();
    assert!(
        median > 1_000.0 && median < 1e9,
        "a clocksource write takes microseconds to milliseconds, got {median} ns"
    );
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("degraded mode"), "{md}");
    let csv = std::fs::read_to_string(out.join("traces.csv")).unwrap();
    assert!(csv.starts_with("timestamp_ns,probe_name,session_id,cpu_id,delta_chain_id"));
    assert_eq!(csv.lines().count(), 1 + 2 * 40, "two stage hits per run");
    assert!(stdout.contains(s["session_id"].as_str().unwrap()));
}

#[test]
fn sigterm_during_a_session_restores_the_clocksource() {
    require_root();
    let (original, avail) = clocksources();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let list = format!("{},{}", avail[0], avail[1]);
    let child = Command::new(clockpath_bin())
        .args(["session", "--runs", "1000000", "--clocksources", &list, "--out", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Every switch goes to a clocksource other than the current one: the first leaves the original.
    wait_for("the session's first switch", Duration::from_secs(30), || {
        (current_clocksource() != original).then_some(())
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(current_clocksource(), original, "the original clocksource is back after SIGTERM");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["interrupted"], true);
    assert!(s["runs_done"].as_u64().unwrap() > 0);
}

#[test]
fn a_bad_clocksource_is_a_usage_error() {
    require_root();
    let o =
        clockpath(&["session", "--runs", "3", "--clocksources", "nosuch,other", "--out", "/tmp/clockpath-bad-session"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`nosuch` is not available"));
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<ChainRecord>>>);

impl Sink for Collect {
    fn on_chain(&mut self, rec: &ChainRecord) {
        self.0.lock().unwrap().push(rec.clone());
    }
}

#[test]
fn interference_is_charged_to_segments_on_their_cpu() {
    require_root();
    let (_d, path) = config_file("[chains.hrtimer]\ninterference = true\n[chains.runqueue]\nenabled = false\n");
    let loaded = Config::load(Some(&path)).unwrap();
    let plans = daemon::plan(&loaded, &Kernel::open()).unwrap();
    let collect = Collect::default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let plans = rt.block_on(async {
        let d = Daemon::start(&loaded, plans, vec![Box::new(collect.clone())]).unwrap();
        // Timers (sleeps) while the CPUs are busy with other tasks, IRQs and softirqs.
        let sleeper = Command::new("sh").args(["-c", "for i in $(seq 1 300); do sleep 0.01; done"]).spawn().unwrap();
        tokio::task::spawn_blocking(move || {
            wait_ok(sched_messaging(100), "perf bench");
            sleeper.wait_with_output().unwrap()
        })
        .await
        .unwrap();
        let plans = d.plans.clone();
        d.stop().await;
        plans
    });
    let sources = plans.iter().find(|p| p.name == "interference").expect("interference plan");
    assert!(sources.is_running(), "{:?}", sources.state);
    let hrtimer = plans.iter().find(|p| p.name == "hrtimer").unwrap().index;
    let recs = collect.0.lock().unwrap();
    let mut totals = [0u64; 5];
    let (mut known, mut unknown) = (0, 0);
    for r in recs.iter().filter(|r| r.chain == hrtimer) {
        for s in &r.segments {
            if s.interference_ns[0] == UNKNOWN_INTERFERENCE {
                unknown += 1;
                continue;
            }
            known += 1;
            for (k, v) in s.interference_ns.iter().enumerate() {
                // Time already in progress when the segment began is charged whole: allow 1 ms.
                assert!(
                    *v <= s.duration_ns() + 1_000_000,
                    "{} {v} ns charged to a {} ns segment",
                    NAMES[k],
                    s.duration_ns()
                );
                totals[k] += v;
            }
        }
    }
    eprintln!(
        "hrtimer segments: {known} with interference, {unknown} that changed CPU; charged (ms): {:?}",
        totals.map(|t| t as f64 / 1e6)
    );
    assert!(known > 100, "too few hrtimer segments: {known}");
    for (k, name) in NAMES.iter().enumerate().take(3) {
        assert!(totals[k] > 0, "no {name} interference charged at all: {totals:?}");
    }
}
