//! C-state policies at runtime (issue 14) on this machine's cpuidle states (the development VM
//! and CI: POLL and "haltpoll idle", under the haltpoll governor): a session over two policies
//! shows the deeper state frozen while the shallow policy holds and moving again after, the
//! settings restored at the end; a session killed with its policy in force is restored by the
//! next; bad policies are refused with nothing changed.

use std::{
    fs,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use clockpath_tests::*;
use serde_json::Value;

const CPU: &str = "/sys/devices/system/cpu";
const RESTORE_FILE: &str = "/run/clockpath-cpuidle-restore.json";

fn online_cpus() -> Vec<u32> {
    let s = fs::read_to_string(format!("{CPU}/online")).expect("cpu online list");
    s.trim()
        .split(',')
        .flat_map(|p| match p.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().unwrap()..=b.parse().unwrap()).collect::<Vec<_>>(),
            None => vec![p.parse().unwrap()],
        })
        .collect()
}

/// The idle states of cpu0 (name each). Fails loudly where there are fewer than two: the
/// tests need a state to disable and one to stay in.
fn states() -> Vec<String> {
    let names: Vec<String> = (0..)
        .map(|i| PathBuf::from(format!("{CPU}/cpu0/cpuidle/state{i}/name")))
        .take_while(|p| p.exists())
        .map(|p| fs::read_to_string(p).unwrap().trim().to_string())
        .collect();
    assert!(names.len() >= 2, "these tests need at least two cpuidle states; this machine has {names:?}");
    names
}

fn file(cpu: u32, state: usize, what: &str) -> String {
    fs::read_to_string(format!("{CPU}/cpu{cpu}/cpuidle/state{state}/{what}")).unwrap().trim().to_string()
}

/// Every CPU's `disable` of `state`.
fn disables(state: usize) -> Vec<String> {
    online_cpus().into_iter().map(|c| file(c, state, "disable")).collect()
}

/// Entries into `state`, all CPUs together.
fn usage(state: usize) -> u64 {
    online_cpus().into_iter().map(|c| file(c, state, "usage").parse::<u64>().unwrap()).sum()
}

#[test]
fn two_policies_freeze_the_deeper_state_while_the_shallow_one_holds_and_the_settings_come_back() {
    require_root();
    let names = states();
    let deepest = names.len() - 1;
    let before = disables(deepest);
    let (original, avail) = clocksources();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let list = format!("{},{}", avail[0], avail[1]);
    let shallow = format!("max_cstate={}", deepest - 1);
    let policies = format!("default,{shallow}");
    let o = clockpath(&[
        "session",
        "--runs",
        "30",
        "--clocksources",
        &list,
        "--cstates",
        &policies,
        "--schedule",
        "blocks",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(disables(deepest), before, "the original settings are back");
    assert!(!PathBuf::from(RESTORE_FILE).exists(), "the restore file is gone once restored");
    assert_eq!(current_clocksource(), original);

    let s: Value = serde_json::from_str(&fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["schedule"], "blocks");
    assert_eq!(s["runs_done"], 60, "30 runs per policy");
    let p = s["policies"].as_array().expect("per-policy results");
    assert_eq!(p.len(), 2);
    let (default, held) = (&p[0], &p[1]);
    assert_eq!(default["policy"], "default");
    assert_eq!(held["policy"], shallow.as_str());
    assert_eq!(held["evidence"]["disabled"], serde_json::json!([names[deepest]]));
    // The premise: the CPUs go idle during a session (a busy loop on every CPU keeps them out
    // of every C-state, and then no policy can be told from another).
    let idle_entries =
        |e: &Value| e["entries"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>());
    clockpath_tests::peer::assume("the CPUs idle during a session", idle_entries(&held["evidence"]) > 0, || {
        format!("no C-state entered under `{shallow}`: {}", held["evidence"])
    });
    assert_eq!(held["evidence"]["held"], true, "{}", held["evidence"]);
    assert_eq!(held["evidence"]["entries"][&names[deepest]], 0, "the deeper state is frozen: {}", held["evidence"]);
    assert!(
        held["evidence"]["entries"][&names[deepest - 1]].as_u64().unwrap() > 0,
        "the CPUs idled in the shallow one"
    );
    assert_eq!(held["completed"], 30, "{}", s["missing"]);
    assert!(held["analysis"]["columns"][0]["median"].as_f64().unwrap() > 0.0);
    let c = &s["comparisons"][0];
    assert_eq!((c["a"].as_str(), c["b"].as_str()), (Some("default"), Some(shallow.as_str())));
    let d = &c["columns"][0]["median_difference_ns"];
    assert!(d["lower"].as_f64().unwrap() <= d["estimate"].as_f64().unwrap(), "{d}");
    assert!(c["columns"][0]["variance_ratio"]["estimate"].as_f64().unwrap() > 0.0);
    for r in s["runs"].as_array().unwrap() {
        let want = if r["index"].as_u64().unwrap() < 30 { "default" } else { shallow.as_str() };
        assert_eq!(r["policy"], want, "blocks: the first 30 runs under default");
    }
    let csv = fs::read_to_string(out.join("traces.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "cstate_policy").unwrap_or_else(|| panic!("{header:?}"));
    let under = csv.lines().skip(1).filter(|l| l.split(',').nth(col) == Some(shallow.as_str())).count();
    assert_eq!(under, 60, "two hits per run");
    let md = fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("## C-state policies") && md.contains("none: held") && md.contains("## Machine"), "{md}");

    // The machine, recorded; sessions keep whole traces in at least 64 MiB of ring.
    assert!(s["ring_bytes"].as_u64().unwrap() >= 64 << 20, "{}", s["ring_bytes"]);
    assert_eq!(s["kernel"]["ring_lost_segments"], 0);
    let m = &s["machine"];
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(m["kernel"], release.trim());
    assert_eq!(m["vcpus"].as_u64().unwrap() as usize, online_cpus().len());
    assert_eq!(m["cmdline"], fs::read_to_string("/proc/cmdline").unwrap().trim());
    assert_eq!(m["idle_state_latencies"].as_array().unwrap().len(), names.len());
    assert_eq!(m["cpuidle_driver"], fs::read_to_string(format!("{CPU}/cpuidle/current_driver")).unwrap().trim());
    assert!(m["time_sync"]["synchronised"].is_boolean() && m["time_sync"]["max_error_us"].is_i64(), "{m}");
    assert!(m["tsc_flags"].is_array() && m["scheduler"].as_object().is_some_and(|o| !o.is_empty()), "{m}");
    let header = csv.lines().next().unwrap();
    for column in [",kernel,", ",hypervisor,", ",vcpus,", ",cpuidle_governor,"] {
        assert!(header.contains(column), "no {column} column in {header}");
    }
    // Offline tools group by the policy like any other label.
    let o = clockpath(&["compare", out.join("traces.csv").to_str().unwrap(), "--group-by", "cstate_policy"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("default") && text.contains(&shallow),
        "{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // And moving again once the session has ended.
    let after = usage(deepest);
    wait_for("the deeper state to be entered again", Duration::from_secs(20), || {
        (usage(deepest) > after).then_some(())
    });
}

#[test]
fn a_session_killed_with_its_policy_in_force_is_restored_by_the_next() {
    require_root();
    let names = states();
    let deepest = names.len() - 1;
    let before = disables(deepest);
    assert!(before.iter().all(|d| d == "0"), "the deepest state starts enabled here: {before:?}");
    let (original, avail) = clocksources();
    let dir = tempfile::tempdir().unwrap();
    let list = format!("{},{}", avail[0], avail[1]);
    let mut child = Command::new(clockpath_bin())
        .args(["session", "--runs", "1000000", "--clocksources", &list])
        .args(["--cstates", &format!("max_cstate={}", deepest - 1), "--out"])
        .arg(dir.path().join("s"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the policy to be in force", Duration::from_secs(30), || {
        disables(deepest).iter().all(|d| d == "1").then_some(())
    });
    child.kill().unwrap(); // SIGKILL: no handler, no guard, nothing restored
    child.wait().unwrap();
    assert!(disables(deepest).iter().all(|d| d == "1"), "still set after kill -9");
    assert!(PathBuf::from(RESTORE_FILE).exists(), "what to restore was saved before the first change");
    // The clocksource is not this test's subject: put it back for the tests that follow.
    fs::write("/sys/devices/system/clocksource/clocksource0/current_clocksource", &original).unwrap();

    let o = clockpath(&["session", "--restore"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("restored the idle states") && stdout.contains(&format!("state{deepest} enabled")),
        "{stdout}"
    );
    assert_eq!(disables(deepest), before);
    assert!(!PathBuf::from(RESTORE_FILE).exists());
    let o = clockpath(&["session", "--restore"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to restore"));
}

#[test]
fn bad_policies_are_usage_errors_that_change_nothing() {
    require_root();
    let names = states();
    let before: Vec<Vec<String>> = (0..names.len()).map(disables).collect();
    let (_, avail) = clocksources();
    let list = format!("{},{}", avail[0], avail[1]);
    let run = |policies: &str| {
        clockpath(&[
            "session",
            "--runs",
            "3",
            "--clocksources",
            &list,
            "--cstates",
            policies,
            "--out",
            "/tmp/clockpath-bad",
        ])
    };
    let o = run("default,max_cstate=deep");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown policy `max_cstate=deep`"));
    let o = run(&format!("max_cstate={}", names.len()));
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(&format!("no idle state {}", names.len())) && e.contains(&names[0]), "{e}");

    // Without root: the files a policy writes are named, before anything changes.
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(clockpath_bin())
        .args(["session", "--runs", "3", "--clocksources", &list, "--cstates", "default,max_cstate=0"])
        .args(["--out", "/tmp/clockpath-bad"])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot write") && e.contains("Permission denied"), "{e}");

    // Governors where there is no cpufreq (this VM, like most): refused, saying why.
    assert!(!PathBuf::from(format!("{CPU}/cpufreq/policy0")).exists(), "this test expects a machine without cpufreq");
    let o = clockpath(
        &["session", "--runs", "3", "--clocksources", &list, "--cstates", "default,max_cstate=0"]
            .into_iter()
            .chain(["--governors", "performance", "--out", "/tmp/clockpath-bad"])
            .collect::<Vec<_>>(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--governors: this machine has no cpufreq policies"), "{e}");
    let after: Vec<Vec<String>> = (0..names.len()).map(disables).collect();
    assert_eq!(after, before, "nothing changed");
}
