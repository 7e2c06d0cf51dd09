//! The clock audit and `explain` (issue 29) on this machine: every clock listed, measured or
//! with its reason; the ftrace clocks against an independent read (tests/clocks/ftrace_read.py:
//! its own tracing instance, text-format timestamps, Python's clock_gettime); the BPF helpers
//! against clock_gettime of the same clock; a trace that mixes ftrace `local` stamps with
//! CLOCK_MONOTONIC ones attributed to local − monotonic; the investigation's pair named when an
//! audit has a clock pair 1.111 s apart and not forced when none is; bad input.

use std::{collections::BTreeMap, process::Command, time::Duration};

use clockpath_tests::{exposition::Scrape, *};
use serde_json::Value;

fn audit_json(args: &[&str]) -> Value {
    let mut all = vec!["clocks", "--json"];
    all.extend_from_slice(args);
    let out = clockpath(&all);
    assert!(out.status.success(), "clockpath clocks: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the audit is JSON")
}

pub(crate) fn clocks_by_name(a: &Value) -> BTreeMap<String, Value> {
    a["clocks"].as_array().unwrap().iter().map(|c| (c["name"].as_str().unwrap().to_string(), c.clone())).collect()
}

pub(crate) fn offset(c: &Value) -> (i64, u64) {
    assert_eq!(c["status"], "measured", "{c}");
    (c["offset_ns"].as_i64().unwrap(), c["uncertainty_ns"].as_u64().unwrap())
}

fn tracefs() -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"tracefs")).then(|| f[1].to_string())
        })
        .expect("tracefs mounted (clockpath clocks mounts it when it is not)")
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().to_string()
}

#[test]
fn every_clock_is_listed_and_the_audit_agrees_with_independent_reads() {
    require_root();
    // Assumptions: the BPF helpers the audit reads exist from Linux 6.1 (bpf_ktime_get_tai_ns
    // is the newest); tracefs offers trace clocks; python3 runs the independent reader.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release.trim().split(['.', '-']).map(|x| x.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap(), v.next().unwrap());
    assert!((major, minor) >= (6, 1), "this test needs Linux ≥ 6.1 for every BPF time helper, not {release}");
    let python = require_tool("python3", "python3");

    let t = std::time::Instant::now();
    let a = audit_json(&[]);
    eprintln!("audit took {:?}", t.elapsed());
    assert_eq!(a["schema"], "clockpath-clock-audit/1");
    assert_eq!(a["identity"]["boot_id"], boot_id());
    let c = clocks_by_name(&a);
    for name in [
        "posix:realtime",
        "posix:monotonic",
        "posix:monotonic_raw",
        "posix:boottime",
        "posix:tai",
        "posix:realtime_coarse",
        "posix:monotonic_coarse",
        "bpf:ktime_get_ns",
        "bpf:ktime_get_boot_ns",
        "bpf:ktime_get_tai_ns",
        "bpf:ktime_get_coarse_ns",
        "bpf:jiffies64",
    ] {
        let (_, unc) = offset(c.get(name).unwrap_or_else(|| panic!("{name} missing from {:?}", c.keys())));
        assert!(unc > 0, "{name}: an uncertainty of 0 is not a measurement");
    }
    // Listed, never omitted: the PPS row without [pps], the PTP row with or without a device.
    assert!(c.contains_key("pps"), "{:?}", c.keys());
    assert_eq!(c["pps"]["status"], "unavailable");
    assert!(c.keys().any(|k| k.starts_with("ptp")), "{:?}", c.keys());
    assert_eq!(c["ftrace:counter"]["status"], "unavailable", "counter is not a time");

    // The BPF helpers against clock_gettime of the same clock, within both uncertainties.
    for (bpf, posix) in [
        ("bpf:ktime_get_ns", "posix:monotonic"),
        ("bpf:ktime_get_boot_ns", "posix:boottime"),
        ("bpf:ktime_get_tai_ns", "posix:tai"),
        ("bpf:ktime_get_coarse_ns", "posix:monotonic_coarse"),
    ] {
        let ((b, bu), (p, pu)) = (offset(&c[bpf]), offset(&c[posix]));
        eprintln!("{bpf} {b} ± {bu} ns, {posix} {p} ± {pu} ns");
        assert!(b.abs_diff(p) <= bu + pu, "{bpf} {b} ± {bu} ns vs {posix} {p} ± {pu} ns");
    }

    // Every trace clock of tracefs is in the audit; each one with a unit, against the
    // independent read (allowing for the drift between the two reads).
    let tracefs = tracefs();
    let listed = std::fs::read_to_string(format!("{tracefs}/trace_clock")).unwrap();
    let ftrace: Vec<String> = listed.split_whitespace().map(|s| s.trim_matches(['[', ']']).to_string()).collect();
    let independent: Vec<&str> =
        ftrace.iter().map(String::as_str).filter(|c| !["counter", "x86-tsc"].contains(c)).collect();
    let out = Command::new(&python)
        .arg(workspace().join("tests/clocks/ftrace_read.py"))
        .arg(&tracefs)
        .args(&independent)
        .output()
        .unwrap();
    assert!(out.status.success(), "ftrace_read.py: {}", String::from_utf8_lossy(&out.stderr));
    let script: Value = serde_json::from_slice(&out.stdout).unwrap();
    let elapsed_s = t.elapsed().as_secs_f64() + 1.0;
    for clock in &ftrace {
        let row = &c[&format!("ftrace:{clock}")];
        assert!(!row.is_null(), "ftrace:{clock} missing from the audit");
        let Some(s) = script[clock].as_array() else { continue };
        let (o, u) = offset(row);
        let (so, su) = (s[0].as_i64().unwrap(), s[1].as_u64().unwrap());
        let drift = (row["drift_ppm"].as_f64().unwrap().abs() + row["drift_uncertainty_ppm"].as_f64().unwrap())
            * elapsed_s
            * 1e3;
        eprintln!("ftrace:{clock}: audit {o} ± {u} ns, independent {so} ± {su} ns");
        assert!(
            (o.abs_diff(so) as f64) <= (u + su) as f64 + drift,
            "ftrace:{clock}: audit {o} ± {u} ns, independent read {so} ± {su} ns (drift allowance {drift:.0} ns)"
        );
    }
    // The two readers of the TSC agree (ftrace's x86-tsc in cycles, RDTSC in userspace).
    if let (Some(f), Some(t)) = (c.get("ftrace:x86-tsc"), c.get("tsc"))
        && f["status"] == "measured"
    {
        let ((fo, fu), (to, tu)) = (offset(f), offset(t));
        let spread = t["cpu_spread_ns"].as_u64().unwrap_or(0) + f["cpu_spread_ns"].as_u64().unwrap_or(0);
        assert!(fo.abs_diff(to) <= fu + tu + spread, "x86-tsc {fo} ± {fu}, tsc {to} ± {tu}");
    }
    // The private instance is gone, and so are those of audits killed before (a SIGKILLed
    // session's: the audit removes instances whose process no longer exists).
    let left: Vec<String> = std::fs::read_dir(format!("{tracefs}/instances"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("clockpath-audit"))
        .collect();
    assert!(left.is_empty(), "instances left behind: {left:?}");
}

/// `clockpath [GLOBAL…] explain TRACE --clocks AUDIT --boot-id (this boot) --json`, and its
/// explanation of the segment `what` (`chain / a->b`).
fn explanation(global: &[&str], trace: &str, audit: &std::path::Path, what: &str) -> Value {
    let boot = boot_id();
    let mut args = global.to_vec();
    args.extend(["explain", trace, "--clocks", audit.to_str().unwrap(), "--boot-id", &boot, "--json"]);
    let out = clockpath(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    explanation_in(&serde_json::from_slice(&out.stdout).unwrap(), what)
}

/// The explanation of the segment `what` (`chain / a->b`) in `explain --json` output.
pub(crate) fn explanation_in(j: &Value, what: &str) -> Value {
    j["explanations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["observed"]["what"] == what)
        .cloned()
        .unwrap_or_else(|| panic!("{what} not explained: {j}"))
}

/// Asserts that `x` is explained and that its best candidate is the one clock pair
/// `late − early` (each name found in its side's class of clocks that read the same), and
/// returns that candidate's residual (estimate, lower, upper) and uncertainty, ns.
pub(crate) fn best_pair(x: &Value, late: &str, early: &str) -> (f64, f64, f64, f64) {
    assert_eq!(x["explained"], true, "{x}");
    let best = &x["candidates"][0];
    assert_eq!(best["terms"].as_array().unwrap().len(), 1, "{best}");
    let term = &best["terms"][0];
    let class = |side: &str| -> Vec<String> {
        std::iter::once(&term[side])
            .chain(term[format!("{side}_same_as")].as_array().into_iter().flatten())
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    assert!(class("late").iter().any(|c| c == late), "late side is not {late}: {best}");
    assert!(class("early").iter().any(|c| c == early), "early side is not {early}: {best}");
    let r = &best["residual"];
    let f = |v: &Value| v.as_f64().unwrap();
    (f(&r["estimate"]), f(&r["lower"]), f(&r["upper"]), f(&best["uncertainty_ns"]))
}

#[test]
fn a_trace_mixing_ftrace_local_with_monotonic_stamps_is_explained_as_local_minus_monotonic() {
    require_root();
    let python = require_tool("python3", "python3");
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.json");
    let out = clockpath(&["clocks", "--out", audit.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a: Value = serde_json::from_str(&std::fs::read_to_string(&audit).unwrap()).unwrap();
    let (local, _) = offset(&clocks_by_name(&a)["ftrace:local"]);
    // Assumption: ftrace `local` and CLOCK_MONOTONIC differ by more than a millisecond on this
    // machine (sched_clock starts before the timekeeping core), so the mix shows a constant.
    assert!(local.abs() > 1_000_000, "ftrace:local is only {local} ns from CLOCK_MONOTONIC here: no constant to find");
    assert!(local > 0, "the mix stamps the later stage on local: local must be ahead ({local} ns)");
    let gap_ms = (local / 1_000_000 + 20).to_string();
    let out = Command::new(&python)
        .arg(workspace().join("tests/clocks/ftrace_read.py"))
        .args([tracefs().as_str(), "--mix", "60", gap_ms.as_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "ftrace_read.py --mix: {}", String::from_utf8_lossy(&out.stderr));
    let trace = dir.path().join("mixed.txt");
    std::fs::write(&trace, &out.stdout).unwrap();
    let first = explanation(&[], trace.to_str().unwrap(), &audit, "clocksource_switch / switch_entry->first_read");
    eprintln!("{}", serde_json::to_string_pretty(&first["candidates"][0]).unwrap());
    assert_eq!(first["observed"]["n"], 60);
    let best = &first["candidates"][0];
    assert_eq!(best["terms"][0]["late"], "ftrace:local", "{best}");
    let (r, ..) = best_pair(&first, "ftrace:local", "posix:monotonic");
    // What is left is the write(2) into trace_marker: a latency of microseconds, not below 0.
    assert!((0.0..200_000.0).contains(&(r + 2_000.0)), "residual {r} ns\n{best}");
}

/// The investigation's pair, 1.111000141 s, against an audit where CLOCK_BOOTTIME is 1.111 s
/// ahead of CLOCK_MONOTONIC (a suspend of that length), and against one where no clock pair is.
#[test]
fn the_investigations_pair_is_named_only_when_an_audit_explains_it() {
    let dir = tempfile::tempdir().unwrap();
    let pair = dir.path().join("pair.txt");
    std::fs::write(&pair, "171223.534912180 do_clocksource_switch_entry\n171224.645912321 first_read\n").unwrap();
    let clock = |name: &str, off: i64| {
        serde_json::json!({"name": name, "family": "posix", "description": "", "status": "measured",
            "offset_ns": off, "uncertainty_ns": 30, "offset_end_ns": off, "uncertainty_end_ns": 30,
            "drift_ppm": 0.0, "drift_uncertainty_ppm": 0.1, "resolution_ns": 1})
    };
    let audit = |boot: i64| {
        serde_json::json!({"schema": "clockpath-clock-audit/1",
            "identity": {"boot_id": "b-1", "hostname": "h", "kernel": "6.1", "environment": "host", "hypervisor": null,
                          "clocksource": "tsc", "available_clocksources": ["tsc"]},
            "reference": "posix:monotonic", "started_monotonic_ns": 1, "started_realtime_ns": 2, "duration_ns": 500000000,
            "clocks": [clock("posix:monotonic", 0), clock("posix:boottime", boot), clock("posix:realtime", 1_796_000_000_123_456_789),
                       clock("posix:monotonic_raw", -216_000_000), {"name": "ptp", "family": "ptp", "description": "",
                       "status": "unavailable", "reason": "no PTP hardware clock"}]})
    };
    let (yes, no) = (dir.path().join("suspended.json"), dir.path().join("plain.json"));
    std::fs::write(&yes, audit(1_111_000_000).to_string()).unwrap();
    std::fs::write(&no, audit(0).to_string()).unwrap();
    let out = clockpath(&["explain", pair.to_str().unwrap(), "--clocks", yes.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("verdict: a clock-domain offset: posix:boottime − posix:monotonic"), "{text}");
    assert!(text.contains("residual 141 ns"), "{text}");
    let out = clockpath(&["explain", pair.to_str().unwrap(), "--clocks", no.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verdict: not a known clock-domain offset; a real latency"), "{text}");

    // Another boot: a warning naming both.
    let out = clockpath(&["explain", "--offset", "1.111000141", "--clocks", yes.to_str().unwrap(), "--boot-id", "b-2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success());
    assert!(err.contains("warning") && err.contains("b-1") && err.contains("b-2"), "{err}");

    // Bad input: a broken audit file, located; a file of another schema; bad numbers.
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\n  \"schema\": \"clockpath-clock-audit/1\",\n  \"identity\": 3\n}").unwrap();
    let out = clockpath(&["explain", "--offset", "1", "--clocks", broken.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("broken.json: not a clock audit (line"), "{err}");
    std::fs::write(&broken, "{\"schema\": \"something-else/3\"}").unwrap();
    let out = clockpath(&["explain", "--offset", "1", "--clocks", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("audit schema `something-else/3`"));
    let out = clockpath(&["explain", "--offset", "0", "--clocks", yes.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let out = clockpath(&["explain", "--clocks", yes.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "neither files nor --offset");
}

#[test]
fn an_unknown_clock_name_exits_2_listing_this_machines_clocks() {
    require_root();
    let out = clockpath(&["clocks", "--only", "posix:monotonic,warp_drive", "--duration", "0.05"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown clock(s) `warp_drive`") && err.contains("posix:boottime") && err.contains("ftrace:local"),
        "{err}"
    );
    let a = audit_json(&["--only", "posix:boottime,bpf:ktime_get_boot_ns", "--duration", "0.05"]);
    assert_eq!(a["clocks"].as_array().unwrap().len(), 2);
    // `| head` ends the output, not the program.
    let out =
        Command::new("sh").arg("-c").arg(format!("{} clocks | head -1", clockpath_bin().display())).output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stderr).is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `run --summary-json` records the audit at the start and at the end; the end's audit measures
/// the BPF and ftrace clocks although the exporter dropped its capabilities after attaching
/// (the sources are opened at the start and kept).
#[test]
fn a_runs_summary_carries_the_clocks_at_start_and_end() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let out = clockpath(&["run", "--duration", "2", "--summary-json", summary.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let clocks = &s["time"]["clocks"];
    for when in ["at_start", "at_end"] {
        let a = &clocks[when];
        assert_eq!(a["schema"], "clockpath-clock-audit/1", "{when}: {clocks}");
        assert_eq!(a["identity"]["boot_id"], boot_id());
        let c = clocks_by_name(a);
        for name in ["posix:boottime", "bpf:ktime_get_boot_ns", "ftrace:local", "ftrace:boot"] {
            offset(&c[name]);
        }
    }
    let start = clocks["at_start"]["started_monotonic_ns"].as_u64().unwrap();
    let end = clocks["at_end"]["started_monotonic_ns"].as_u64().unwrap();
    assert!(end >= start + 2_000_000_000, "the end's audit is taken after the run: {start} → {end}");
    // Nothing suspended or stepped during the run: BOOTTIME − MONOTONIC held.
    let (b0, u0) = offset(&clocks_by_name(&clocks["at_start"])["posix:boottime"]);
    let (b1, u1) = offset(&clocks_by_name(&clocks["at_end"])["posix:boottime"]);
    assert!(b0.abs_diff(b1) <= u0 + u1, "boottime − monotonic moved from {b0} to {b1} ns during a 2 s run");
}

/// adjtimex's TAI offset (CLOCK_TAI − CLOCK_REALTIME, whole seconds): read, or set (ADJ_TAI).
fn tai_offset(set: Option<i32>) -> i32 {
    // SAFETY: an all-zero timex is a valid "read only" request.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    if let Some(v) = set {
        tx.modes = libc::ADJ_TAI;
        tx.constant = v.into();
    }
    // SAFETY: a valid timex out-pointer.
    let rc = unsafe { libc::adjtimex(&mut tx) };
    assert!(rc >= 0, "adjtimex: {}", std::io::Error::last_os_error());
    tx.tai
}

/// Puts the TAI offset back however the test ends.
struct RestoreTai(i32);

impl Drop for RestoreTai {
    fn drop(&mut self) {
        tai_offset(Some(self.0));
    }
}

fn clock_metric(s: &Scrape, name: &str, clock: &str) -> f64 {
    s.sum(name, &[("clock", clock)])
}

/// The exporter's periodic audit (`[clock_audit]`): the offsets it publishes agree with
/// clock_gettime read here, the BPF helper with the POSIX clock it reads, and a real step of a
/// kernel clock — the TAI offset set through adjtimex(ADJ_TAI), which moves CLOCK_TAI,
/// bpf_ktime_get_tai_ns and ftrace's `tai` and nothing else — is counted as a jump of exactly
/// those clocks, with the new offset published; the step back is a second jump.
///
/// Rests on: nothing else sets the TAI offset during the test (checked: the offset read back
/// before the restore is the one set) and nothing steps CLOCK_REALTIME (checked: its jumps stay
/// 0).
#[test]
fn the_exporter_publishes_live_offsets_and_counts_a_tai_step_as_a_jump() {
    require_root();
    let tai0 = tai_offset(None);
    let e = Exporter::start(&[], &[("CLOCKPATH_CLOCK_AUDIT__INTERVAL_SECS", "1")]);
    let scrape = || Scrape::parse(&e.scrape()).expect("scrape parses");
    let audits = |s: &Scrape| s.sum("clockpath_clock_audits_total", &[]);
    let s = wait_for("three clock audits", Duration::from_secs(30), || {
        let s = scrape();
        (audits(&s) >= 3.0).then_some(s)
    });
    let here = |id: libc::clockid_t| {
        let before = posix_ns(libc::CLOCK_MONOTONIC);
        let v = posix_ns(id);
        let after = posix_ns(libc::CLOCK_MONOTONIC);
        (v - (before + after) / 2) as f64 / 1e9
    };
    for (clock, id) in [("posix:realtime", libc::CLOCK_REALTIME), ("posix:boottime", libc::CLOCK_BOOTTIME)] {
        let published = clock_metric(&s, "clockpath_clock_offset_seconds", clock);
        let u = clock_metric(&s, "clockpath_clock_offset_uncertainty_seconds", clock);
        let mine = here(id);
        // Both are CLOCK_MONOTONIC plus a constant between steps: read seconds apart, they agree
        // within the published uncertainty and a few µs of this read's own bracket.
        assert!((published - mine).abs() <= u + 20e-6, "{clock}: published {published} s ± {u}, read here {mine} s");
        assert_eq!(clock_metric(&s, "clockpath_clock_offset_jumps_total", clock), 0.0, "{clock} jumped");
    }
    let boot = clock_metric(&s, "clockpath_clock_offset_seconds", "posix:boottime");
    let bpf_boot = clock_metric(&s, "clockpath_clock_offset_seconds", "bpf:ktime_get_boot_ns");
    let u = clock_metric(&s, "clockpath_clock_offset_uncertainty_seconds", "bpf:ktime_get_boot_ns")
        + clock_metric(&s, "clockpath_clock_offset_uncertainty_seconds", "posix:boottime");
    assert!((boot - bpf_boot).abs() <= u, "bpf:ktime_get_boot_ns {bpf_boot} s vs CLOCK_BOOTTIME {boot} s (± {u})");

    let tai_clocks = ["posix:tai", "bpf:ktime_get_tai_ns", "ftrace:tai"];
    let before: Vec<f64> = tai_clocks.iter().map(|c| clock_metric(&s, "clockpath_clock_offset_seconds", c)).collect();
    let restore = RestoreTai(tai0);
    tai_offset(Some(tai0 + 5));
    let stepped = wait_for("the TAI step counted as a jump of every TAI clock", Duration::from_secs(30), || {
        let s = scrape();
        tai_clocks.iter().all(|c| clock_metric(&s, "clockpath_clock_offset_jumps_total", c) >= 1.0).then_some(s)
    });
    assert_eq!(tai_offset(None), tai0 + 5, "something else set the TAI offset during the test");
    for (c, b) in tai_clocks.iter().zip(&before) {
        let now = clock_metric(&stepped, "clockpath_clock_offset_seconds", c);
        assert!((now - b - 5.0).abs() < 1e-3, "{c}: {b} s before the step, {now} s after (+5 s expected)");
    }
    for c in ["posix:realtime", "posix:boottime", "posix:monotonic_raw", "bpf:ktime_get_boot_ns", "ftrace:local"] {
        assert_eq!(clock_metric(&stepped, "clockpath_clock_offset_jumps_total", c), 0.0, "{c} jumped with TAI");
    }
    drop(restore);
    let back = wait_for("the step back counted as a second jump", Duration::from_secs(30), || {
        let s = scrape();
        (clock_metric(&s, "clockpath_clock_offset_jumps_total", "posix:tai") >= 2.0).then_some(s)
    });
    let now = clock_metric(&back, "clockpath_clock_offset_seconds", "posix:tai");
    assert!((now - before[0]).abs() < 1e-3, "posix:tai back at {now} s, was {} s", before[0]);
    let (n, cpu) = (audits(&back), back.sum("clockpath_clock_audit_cpu_seconds_total", &[]));
    assert!(cpu > 0.0, "the audits' CPU is counted");
    println!("{n} audits, {:.1} ms of CPU each", cpu / (n - 1.0) * 1e3);
}

fn posix_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec out-pointer.
    assert_eq!(unsafe { libc::clock_gettime(id, &mut ts) }, 0);
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Median of `switch_in − wakeup` of `chain`'s instances in a recorded CSV trace, computed
/// here from the lines (not by clockpath's assembly), and the clock labels seen per stage.
pub(crate) fn recorded_deltas(
    csv: &str,
    chain: &str,
) -> (Vec<i128>, BTreeMap<String, std::collections::BTreeSet<String>>) {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}"));
    let (ts, probe, id, ch, clock, reference) = (
        col("timestamp_ns"),
        col("probe_name"),
        col("delta_chain_id"),
        col("chain"),
        col("clock"),
        col("reference_ns"),
    );
    let mut open: BTreeMap<String, i128> = BTreeMap::new();
    let mut deltas = Vec::new();
    let mut clocks: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f[ch] != chain {
            continue;
        }
        clocks.entry(f[probe].to_string()).or_default().insert(f[clock].to_string());
        if !f[clock].is_empty() && f[clock] != "monotonic" {
            assert!(f[reference].is_empty(), "a hit on {} has a reference time: {line}", f[clock]);
        }
        let t: i128 = f[ts].parse().expect("timestamp");
        match f[probe] {
            "wakeup" => {
                open.insert(f[id].to_string(), t);
            }
            _ => {
                if let Some(s) = open.remove(f[id]) {
                    deltas.push(t - s);
                }
            }
        }
    }
    deltas.sort_unstable();
    (deltas, clocks)
}

/// A config with the recorder (CSV, in `recorder_dir`) and two chains on the same wakeups and
/// nothing else: `wakeup_mono` stamped on CLOCK_MONOTONIC throughout, and `name` with its
/// `switch_in` stage on `clock`.
pub(crate) fn wakeup_chains(recorder_dir: &str, name: &str, clock: &str) -> String {
    let targets_wakeup = r#"targets = [{ attach = "tracepoint:sched:sched_wakeup", key = "pid" }]"#;
    let targets_switch = r#"targets = [{ attach = "tracepoint:sched:sched_switch", key = "next_pid" }]"#;
    let mut toml = format!("[recorder]\nenabled = true\ndir = \"{recorder_dir}\"\nformat = \"csv\"\n");
    for c in ["runqueue", "kvm", "hrtimer", "softirq", "clocksource_switch"] {
        toml.push_str(&format!("[chains.{c}]\nenabled = false\n"));
    }
    for (name, clock) in [("wakeup_mono", String::new()), (name, format!("clock = \"{clock}\"\n"))] {
        toml.push_str(&format!(
            "[chains.{name}]\ntimeout_ms = 10000\n[[chains.{name}.stages]]\nname = \"wakeup\"\n{targets_wakeup}\n[[chains.{name}.stages]]\nname = \"switch_in\"\n{clock}{targets_switch}\n"
        ));
    }
    toml
}

/// A chain can reproduce a mix of clocks (issue 29 item 4): two chains on the same tracepoints,
/// `wakeup_mono` stamped on CLOCK_MONOTONIC throughout and `wakeup_tai` with its `switch_in`
/// stage on `clock = "tai"` (bpf_ktime_get_tai_ns), measure the same wakeups. The kernel's own
/// histogram of `wakeup_tai` holds the constant (every segment beyond the largest bucket bound);
/// recorded hits carry their stage's clock and no reference time on TAI; `analyze` refuses to
/// subtract the two clocks without `--mixed-clocks`, naming both stages and clocks; `explain`
/// names TAI − MONOTONIC, and its residual is the latency `wakeup_mono` measured on one clock,
/// within the residual's CI and the offset's uncertainty.
///
/// Rests on: CLOCK_TAI − CLOCK_MONOTONIC is constant during the test (nothing steps the clock;
/// the audits before and after are compared).
#[test]
fn a_chain_with_a_stage_on_tai_shows_the_constant_and_explain_names_tai_minus_monotonic() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let toml = wakeup_chains(&rec.display().to_string(), "wakeup_tai", "tai");
    let (_cfg_dir, cfg) = config_file(&toml);
    let cfg = cfg.to_str().unwrap().to_string();
    let audit = dir.path().join("audit.json");
    let out = clockpath(&["clocks", "--out", audit.to_str().unwrap(), "--only", "posix:tai,posix:monotonic"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tai_before =
        offset(&clocks_by_name(&serde_json::from_str(&std::fs::read_to_string(&audit).unwrap()).unwrap())["posix:tai"]);

    let e = Exporter::start(&["--config", &cfg], &[]);
    let count = |s: &Scrape, chain: &str| s.sum("clockpath_segment_duration_seconds_count", &[("chain", chain)]);
    // Light load, so the latency left is microseconds beside a constant of decades: two tasks
    // waking each other through a pipe.
    let perf = require_tool("perf", "linux-perf");
    let pipe =
        || Command::new(&perf).args(["bench", "sched", "pipe", "-l", "5000"]).output().expect("perf bench sched pipe");
    let s = wait_for("2 000 wakeups measured by both chains", Duration::from_secs(60), || {
        let out = pipe();
        assert!(out.status.success(), "perf bench sched pipe: {}", String::from_utf8_lossy(&out.stderr));
        let s = Scrape::parse(&e.scrape()).expect("scrape parses");
        (count(&s, "wakeup_mono") >= 2000.0 && count(&s, "wakeup_tai") >= 2000.0).then_some(s)
    });
    // The kernel measured the constant: no wakeup_tai segment below the largest finite bound
    // (seconds), while wakeup_mono's are latencies.
    let finite = |chain: &str| {
        s.named("clockpath_segment_duration_seconds_bucket")
            .filter(|x| x.labels.get("chain").map(String::as_str) == Some(chain))
            .filter(|x| x.labels.get("le").is_some_and(|le| le != "+Inf"))
            .map(|x| x.value)
            .fold(0.0, f64::max)
    };
    assert_eq!(finite("wakeup_tai"), 0.0, "a wakeup_tai segment fell in a finite bucket");
    assert!(finite("wakeup_mono") >= 0.9 * count(&s, "wakeup_mono"), "wakeup_mono's segments are not latencies");
    let out = e.stop();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = clockpath(&["clocks", "--out", audit.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a: Value = serde_json::from_str(&std::fs::read_to_string(&audit).unwrap()).unwrap();
    let (tai, tai_u) = offset(&clocks_by_name(&a)["posix:tai"]);
    assert!(tai.abs_diff(tai_before.0) <= tai_u + tai_before.1 + 1_000_000, "CLOCK_TAI stepped during the test");

    let files: Vec<String> = std::fs::read_dir(&rec)
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".csv"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let csv = std::fs::read_to_string(&files[0]).unwrap();
    let (mono, mono_clocks) = recorded_deltas(&csv, "wakeup_mono");
    let (mixed, mixed_clocks) = recorded_deltas(&csv, "wakeup_tai");
    assert!(mono.len() >= 2000 && mixed.len() >= 2000, "{} and {} instances recorded", mono.len(), mixed.len());
    assert!(mono_clocks.values().flatten().all(|c| c.is_empty()), "a one-clock chain's hits have no clock label");
    assert_eq!(mixed_clocks["wakeup"].iter().collect::<Vec<_>>(), ["monotonic"]);
    assert_eq!(mixed_clocks["switch_in"].iter().collect::<Vec<_>>(), ["tai"]);
    let median = |v: &[i128]| v[v.len() / 2];
    eprintln!(
        "wakeup_mono median {} ns, wakeup_tai median {} ns, TAI − MONOTONIC {tai} ± {tai_u} ns",
        median(&mono),
        median(&mixed)
    );

    // analyze refuses the mix, and says which stages on which clocks.
    let out = clockpath(&["--config", &cfg, "analyze", &files[0]]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("chain `wakeup_tai` has stage `wakeup` stamped on monotonic and stage `switch_in` on tai")
            && err.contains("--mixed-clocks"),
        "{err}"
    );
    let out = clockpath(&[
        "--config",
        &cfg,
        "analyze",
        "--mixed-clocks",
        &files[0],
        "--out",
        dir.path().join("report").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // explain names TAI − MONOTONIC; what is left is the latency measured on one clock.
    let x = explanation(&["--config", &cfg], &files[0], &audit, "wakeup_tai / wakeup->switch_in");
    let (est, lo, hi, u) = best_pair(&x, "posix:tai", "posix:monotonic");
    let one_clock = median(&mono) as f64;
    eprintln!("residual {est} ns [{lo}, {hi}], the same wakeups on one clock: median {one_clock} ns, offset ± {u} ns");
    assert!(
        (est - one_clock).abs() <= (hi - lo) + 2.0 * u + 1_000.0,
        "residual {est} ns [{lo}, {hi}] vs {one_clock} ns measured on one clock (offset ± {u} ns)"
    );
}
