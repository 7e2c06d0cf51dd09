//! The clocksource chain on real kernels (issue 6; the kernel matrix of issue 16: Debian's
//! 6.1, 6.12 and 6.12 PREEMPT_RT) under qemu (TCG), where kprobes and fentry work and
//! clocksources can really be switched; C-state policies in the guest (issue 14).

use std::{collections::BTreeMap, time::Duration};

use clockpath_tests::{
    exposition::Scrape,
    guest::{Guest, GuestOptions, STOCK_KERNEL, read_fn},
    *,
};
use serde_json::Value;

const CS: &str = "/sys/devices/system/clocksource/clocksource0/current_clocksource";

/// The clocksource chain with kprobe targets only (to compare with fentry): the example config.
const KPROBE_ONLY: &str = include_str!("../../../examples/configs/kprobe-only.toml");

/// The clocksource chain with a fourth stage at the return of change_clocksource: the target
/// that stands in for baseline_recalc where the update function is inlined (6.18). Measured
/// here behind the update's entry on kernels that have both, its segment is what the fallback
/// adds to first_read->baseline_recalc.
const SWITCH_RETURN: &str = r#"
[[chains.clocksource_switch.stages]]
name = "switch_entry"
key = "global"
capture = "(struct clocksource *)arg0->read"
targets = ["fentry:change_clocksource"]

[[chains.clocksource_switch.stages]]
name = "first_read"
key = "global"
match_capture = true
targets = ["fentry:{clocksource_read}"]

[[chains.clocksource_switch.stages]]
name = "baseline_recalc"
key = "global"
targets = ["fentry:timekeeping_update_from_shadow", "fentry:timekeeping_update"]

[[chains.clocksource_switch.stages]]
name = "switch_return"
key = "global"
targets = ["fexit:change_clocksource"]
"#;

fn session(dir: &std::path::Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(name).join("summary.json"))
        .unwrap_or_else(|e| panic!("{name}/summary.json: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Each column of `analysis` (a session's, or one policy's), named from the session `s`.
fn distribution(s: &Value, analysis: &Value) -> String {
    let segs = s["segments"].as_array().unwrap();
    let mut out = String::new();
    let cols = analysis["columns"].as_array().unwrap();
    for (i, c) in cols.iter().enumerate() {
        let name = segs.get(i).and_then(|v| v.as_str()).unwrap_or("total");
        out.push_str(&format!(
            "\n    {name:<32} n={} median={:.2} µs CI=[{:.2}, {:.2}] SD={:.2} µs",
            c["n"],
            c["median"].as_f64().unwrap() / 1e3,
            c["ci"]["lower"].as_f64().unwrap_or(f64::NAN) / 1e3,
            c["ci"]["upper"].as_f64().unwrap_or(f64::NAN) / 1e3,
            c["std_dev"].as_f64().unwrap() / 1e3
        ));
    }
    out
}

/// The targets that ended the segments of a session's complete runs: `stage: kind:function (n)`.
fn attach_kinds(s: &Value) -> String {
    // A run's points are the targets whose hits ended its segments.
    let stages = ["first_read", "baseline_recalc", "switch_return"];
    let mut used: BTreeMap<(usize, String), usize> = BTreeMap::new();
    for run in s["runs"].as_array().unwrap().iter().filter(|r| r["missing"].is_null()) {
        for (i, p) in run["points"].as_array().unwrap().iter().enumerate() {
            *used.entry((i, p.as_str().unwrap().to_string())).or_default() += 1;
        }
    }
    used.iter()
        .map(|((i, t), n)| format!("{}: {t} ({n})", stages.get(*i).unwrap_or(&"?")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Issue 6 and the kernel matrix of issue 16: the clocksource chain on a Debian kernel package
/// (`runs` switches with fentry, as many with kprobes, a third as many with the inlined-update
/// fallback, tsc's notrace read counted), each switch accounted for, the original clocksource
/// back.
fn clocksource_chain_on(kernel: &str, runs: u64) {
    require_root();
    let fallback_runs = runs / 3;
    let script = format!(
        r#"
insmod pps_clockpath.ko phase_ns=250000000; echo "pps_insmod=$?"
echo "pps_name=$(cat /sys/class/pps/pps0/name)"
for i in $(seq 1 100); do case "$(cat /sys/class/pps/pps0/assert)" in *#0) sleep 0.1;; *) break;; esac; done
echo "pps_assert=$(cat /sys/class/pps/pps0/assert)"
./clockpath doctor --json > doctor.json; echo "doctor=$?"
echo "original=$(cat {CS})"
./clockpath run --duration 900 > run.log 2>&1 &
RUN=$!
for i in $(seq 1 150); do wget -q -O /dev/null http://127.0.0.1:39111/healthz 2>/dev/null && break; sleep 0.2; done
./clockpath session --runs {runs} --clocksources hpet,acpi_pm --label probe=fentry --out s-fentry > s-fentry.log 2>&1; echo "session_fentry=$?"
./clockpath --config kprobe.toml session --runs {runs} --clocksources hpet,acpi_pm --label probe=kprobe --out s-kprobe > s-kprobe.log 2>&1; echo "session_kprobe=$?"
./clockpath --config return.toml session --runs {fallback_runs} --clocksources hpet,acpi_pm --label probe=fexit --out s-return > s-return.log 2>&1; echo "session_return=$?"
./clockpath session --runs 30 --clocksources hpet,acpi_pm,tsc --out s-tsc > s-tsc.log 2>&1; echo "session_tsc=$?"
touch sessions-done
for i in $(seq 1 600); do [ -e scraped ] && break; sleep 0.2; done
echo "scrape_seen=$([ -e scraped ] && echo yes || echo no)"
kill -TERM $RUN; wait $RUN; echo "run_exit=$?"
echo "final=$(cat {CS})"
"#
    );
    let guest = Guest::start(
        &script,
        &[("kprobe.toml", KPROBE_ONLY), ("return.toml", SWITCH_RETURN)],
        GuestOptions {
            cmdline: "tsc=reliable".into(),
            forward: Some(39111),
            timeout: Duration::from_secs(900),
            kernel: kernel.into(),
            share_files: vec![clockpath_tests::guest::build_module(kernel, "pps_clockpath")],
            ..Default::default()
        },
    );
    // Scrape the guest's exporter from the host once the sessions are done.
    guest.wait_until("the guest's sessions", Duration::from_secs(800), |share| {
        let ended = std::fs::read_to_string(share.join("results.txt")).unwrap_or_default().contains("GUEST_TEST_EXIT");
        share.join("sessions-done").exists() || ended
    });
    let share = guest.share().to_path_buf();
    // Bounded: a guest that stopped answering fails the test instead of hanging it.
    let scrape = ureq::get(&guest.url("/metrics"))
        .timeout(Duration::from_secs(60))
        .call()
        .map(|r| r.into_string().unwrap_or_default());
    std::fs::write(share.join("scraped"), "").unwrap();
    let out = guest.wait();
    eprintln!("{kernel}: guest finished in {:?}:\n{}", out.elapsed, out.results);
    let dir = out.dir.path();
    let results: BTreeMap<String, String> =
        out.results.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(results.get("doctor").map(String::as_str), Some("0"), "{}", out.serial);

    // The test PPS module, built against this kernel's headers, loads and gives edges at the
    // top of the second plus its phase (250 ms; the hrtimer fires a little after).
    assert_eq!(results.get("pps_insmod").map(String::as_str), Some("0"), "{}", out.serial);
    assert_eq!(results.get("pps_name").map(String::as_str), Some("clockpath-pps"));
    let assert = results.get("pps_assert").expect("pps0 assert");
    let (stamp, seq) = assert.split_once('#').expect("SEC.NSEC#SEQ");
    assert!(seq.parse::<u64>().unwrap() >= 1, "{assert}");
    let nsec: u64 = stamp.split_once('.').unwrap().1.parse().unwrap();
    assert!((250_000_000..300_000_000).contains(&nsec), "edge at the phase: {assert}");

    // doctor: kprobes and fentry available in the stock kernel; the targets the default
    // config attaches, per stage.
    let doctor: Value = serde_json::from_str(&out.file("doctor.json")).unwrap();
    let cs = doctor["chains"].as_array().unwrap().iter().find(|c| c["name"] == "clocksource_switch").unwrap();
    let mut attached = Vec::new();
    for stage in cs["stages"].as_array().unwrap() {
        for point in stage["points"].as_array().unwrap() {
            let first = point["candidates"].as_array().unwrap().iter().find(|c| c["status"]["state"] == "attached");
            let label = point["label"].as_str().map(|l| format!(" ({l})")).unwrap_or_default();
            attached.push(format!(
                "{}{label}: {}",
                stage["name"].as_str().unwrap(),
                first.map_or("none", |c| c["target"].as_str().unwrap())
            ));
        }
    }
    eprintln!("{kernel}: doctor attaches {}", attached.join(", "));
    assert!(attached.iter().any(|a| a.starts_with("switch_entry: fentry:change_clocksource")), "{attached:?}");
    for k in doctor["attach_kinds"].as_array().unwrap() {
        if ["fentry", "kprobe"].contains(&k["kind"].as_str().unwrap()) {
            assert_eq!(k["supported"], true, "{k}");
        }
    }

    // `runs` switches, every one accounted for, first reads of the new clocksource, exact counts.
    for (name, probe) in [("s-fentry", "fentry"), ("s-kprobe", "kprobe")] {
        assert_eq!(
            results.get(&format!("session_{probe}")).map(String::as_str),
            Some("0"),
            "{}",
            std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
        );
        let s = session(dir, name);
        assert_eq!(s["mode"], "kernel", "{name}");
        assert_eq!(s["runs_done"], runs);
        let missing: u64 = s["missing"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(
            s["completed"].as_u64().unwrap() + missing,
            runs,
            "{name}: every switch is complete or counted: {}",
            s["missing"]
        );
        assert!(s["completed"].as_u64().unwrap() >= runs * 29 / 30, "{name}: too many missing: {}", s["missing"]);
        assert_eq!(s["original_clocksource"], s["restored_clocksource"]);
        for run in s["runs"].as_array().unwrap() {
            if run["missing"].is_null() {
                let first = run["points"][0].as_str().unwrap();
                let new = run["new"].as_str().unwrap();
                assert!(
                    first.ends_with(&format!(":{}", read_fn(new))),
                    "{name}: run {} switched to {new} but its first read was {first}",
                    run["index"]
                );
                assert!(first.starts_with(probe), "{name}: {first} should be a {probe} target");
            }
        }
        let k = &s["kernel"];
        assert_eq!(
            k["hist_segments"].as_u64().unwrap(),
            k["segments_received"].as_u64().unwrap() + k["ring_lost_segments"].as_u64().unwrap(),
            "{name}: {k}"
        );
        eprintln!("{kernel} {name} ({} complete): {}", s["completed"], distribution(&s, &s["analysis"]));
        eprintln!("    attach kinds used: {}", attach_kinds(&s));
        // Inside stop_machine, with interrupts off, nothing can interfere with the switch.
        let charged = &s["interference_median_ns"]["switch_entry->first_read"];
        eprintln!("    interference charged to switch_entry->first_read (median ns): {charged}");
        for src in ["irq", "softirq", "hrtimer"] {
            assert_eq!(charged[src].as_f64(), Some(0.0), "{name}: {src} charged inside stop_machine: {charged}");
        }
    }

    // The fallback for inlined update functions, the return of change_clocksource, fires
    // after the update's entry in every switch; what lies between is what the fallback adds.
    assert_eq!(results.get("session_return").map(String::as_str), Some("0"), "{}", out.file("s-return.log"));
    let ret = session(dir, "s-return");
    assert!(ret["completed"].as_u64().unwrap() >= fallback_runs * 19 / 20, "switch_return: {}", ret["missing"]);
    for run in ret["runs"].as_array().unwrap().iter().filter(|r| r["missing"].is_null()) {
        assert_eq!(run["points"][2], "fexit:change_clocksource", "run {}", run["index"]);
    }
    assert_eq!(ret["segments"][2], "baseline_recalc->switch_return");
    // The return is stamped after the recalculation, on the new baseline: in many switches at
    // or before the update's entry (a segment of 0: durations do not go below zero).
    let complete: Vec<&Value> = ret["runs"].as_array().unwrap().iter().filter(|r| r["missing"].is_null()).collect();
    let at_or_before = complete.iter().filter(|r| r["segments_ns"][2].as_u64() == Some(0)).count();
    assert!(complete.iter().all(|r| r["segments_ns"].as_array().map(Vec::len) == Some(3)));
    eprintln!(
        "{kernel} s-return ({} complete): {}\n    attach kinds used: {}\n    switch_return stamped at or before the update's entry in {at_or_before} of {} switches",
        ret["completed"],
        distribution(&ret, &ret["analysis"]),
        attach_kinds(&ret),
        complete.len()
    );

    // Switching to tsc (read_tsc is notrace): each such run is counted with its reason.
    let s = session(dir, "s-tsc");
    let missing = s["missing"].as_object().unwrap();
    assert!(missing.keys().any(|k| k.contains("read_tsc") && k.contains("notrace")), "{missing:?}");
    assert_eq!(s["restored_clocksource"], s["original_clocksource"]);

    // The host scraped the guest's /metrics and saw all three segments.
    let text = scrape.expect("scrape the guest through the forwarded port");
    let sc = Scrape::parse(&text).unwrap();
    for seg in ["switch_entry->first_read", "first_read->baseline_recalc", "total"] {
        let n: f64 = sc
            .named("clockpath_segment_duration_seconds_count")
            .filter(|x| x.labels["chain"] == "clocksource_switch" && x.labels["segment"] == seg)
            .map(|x| x.value)
            .sum();
        assert!(n >= (2 * runs) as f64, "guest /metrics: {seg} count {n}");
    }
    assert_eq!(results.get("run_exit").map(String::as_str), Some("0"));
    assert_eq!(results.get("final"), results.get("original"), "the original clocksource is back");
}

#[test]
fn clocksource_chain_on_debian_6_1() {
    clocksource_chain_on(clockpath_tests::guest::STOCK_KERNEL, 300);
}

#[test]
fn clocksource_chain_on_debian_6_12() {
    // The other kernels of the matrix: which targets attach and that every switch is
    // accounted for; a third of the stock kernel's runs keeps the suite in its budget.
    clocksource_chain_on(&clockpath_tests::guest::kernel_6_12("amd64"), 100);
}

#[test]
fn clocksource_chain_on_debian_6_12_preempt_rt() {
    clocksource_chain_on(&clockpath_tests::guest::kernel_6_12("rt-amd64"), 100);
}

/// Issue 14 in the guest: an interleaved session over two C-state policies and two clocksource
/// pairs on the real clocksource chain. qemu offers the guest no idle states of its own (no
/// _CST; the haltpoll driver needs KVM), so the guest boots with an SSDT
/// (`fixtures/guest-cstates.asl`) that gives each vCPU two HLT states, C1 (1 µs) and C2
/// (50 µs): acpi_idle then offers POLL, C1 and C2, and the shallow policy is `max_cstate=1`.
#[test]
fn cstate_policies_interleaved_over_clocksource_pairs_in_a_stock_kernel() {
    require_root();
    let script = format!(
        r#"
echo "driver=$(cat /sys/devices/system/cpu/cpuidle/current_driver)"
for s in /sys/devices/system/cpu/cpu0/cpuidle/state*; do echo "state=$(cat $s/name):$(cat $s/latency)"; done
echo "original=$(cat {CS})"
echo "disable_before=$(cat /sys/devices/system/cpu/cpu*/cpuidle/state*/disable | tr -d '\n')"
./clockpath session --runs 40 --clocksources hpet,acpi_pm --cstates default,max_cstate=1 --schedule interleaved --out s-cst > s-cst.log 2>&1; echo "session=$?"
echo "disable_after=$(cat /sys/devices/system/cpu/cpu*/cpuidle/state*/disable | tr -d '\n')"
echo "final=$(cat {CS})"
"#
    );
    let out = Guest::start(
        &script,
        &[],
        GuestOptions {
            cmdline: "tsc=reliable".into(),
            timeout: Duration::from_secs(240),
            acpi_tables: vec![clockpath_tests::guest::cstate_table()],
            ..Default::default()
        },
    )
    .wait();
    eprintln!("guest finished in {:?}:\n{}", out.elapsed, out.results);
    let dir = out.dir.path();
    let lines: Vec<(String, String)> =
        out.results.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
    let get = |k: &str| lines.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let states: Vec<&str> = lines.iter().filter(|(k, _)| k == "state").map(|(_, v)| v.as_str()).collect();
    assert_eq!(get("driver"), Some("acpi_idle"), "the SSDT's C-states are in use: {}", out.serial);
    assert_eq!(states, ["POLL:0", "C1:1", "C2:50"]);
    assert_eq!(get("session"), Some("0"), "{}", std::fs::read_to_string(dir.join("s-cst.log")).unwrap_or_default());
    assert_eq!(get("disable_after"), get("disable_before"), "the idle settings are back");
    assert_eq!(get("final"), get("original"), "the original clocksource is back");

    let s = session(dir, "s-cst");
    assert_eq!(s["mode"], "kernel");
    assert_eq!(s["schedule"], "interleaved");
    assert_eq!(s["runs_done"], 80, "40 runs per policy");
    assert_eq!(s["machine"]["cpuidle_driver"], "acpi_idle");
    // Interleaved in units of one pass over the pairs: each policy makes both switches.
    let mut cells: BTreeMap<(String, String), u32> = BTreeMap::new();
    for r in s["runs"].as_array().unwrap() {
        let pair = format!("{}->{}", r["old"].as_str().unwrap(), r["new"].as_str().unwrap());
        *cells.entry((r["policy"].as_str().unwrap().to_string(), pair)).or_default() += 1;
    }
    for policy in ["default", "max_cstate=1"] {
        for pair in ["hpet->acpi_pm", "acpi_pm->hpet"] {
            let n = cells.get(&(policy.to_string(), pair.to_string())).copied().unwrap_or(0);
            assert!(n >= 19, "{policy} made {pair} {n} times: {cells:?}");
        }
    }
    let p = s["policies"].as_array().expect("per-policy results");
    assert_eq!(p.len(), 2);
    let (default, held) = (&p[0], &p[1]);
    assert_eq!((default["policy"].as_str(), held["policy"].as_str()), (Some("default"), Some("max_cstate=1")));
    // C2 frozen while max_cstate=1 holds, entered again under default (the policies alternate).
    assert_eq!(held["evidence"]["disabled"], serde_json::json!(["C2"]), "{}", held["evidence"]);
    assert_eq!(held["evidence"]["held"], true, "{}", held["evidence"]);
    assert_eq!(held["evidence"]["entries"]["C2"], 0, "{}", held["evidence"]);
    assert!(held["evidence"]["entries"]["C1"].as_u64().unwrap() > 0, "{}", held["evidence"]);
    assert!(default["evidence"]["entries"]["C2"].as_u64().unwrap() > 0, "{}", default["evidence"]);
    for (name, pol) in [("default", default), ("max_cstate=1", held)] {
        assert!(pol["completed"].as_u64().unwrap() >= 38, "{name}: {}", s["missing"]);
        eprintln!(
            "{name} ({} complete, evidence {}):{}",
            pol["completed"],
            pol["evidence"],
            distribution(&s, &pol["analysis"])
        );
    }
    let c = &s["comparisons"][0];
    assert_eq!((c["a"].as_str(), c["b"].as_str()), (Some("default"), Some("max_cstate=1")));
    let cols = c["columns"].as_array().unwrap();
    assert_eq!(cols.len(), 3, "two segments and the total: {c}");
    for col in cols {
        let d = &col["median_difference_ns"];
        assert!(d["lower"].as_f64().unwrap() <= d["upper"].as_f64().unwrap(), "{col}");
        assert!(col["variance_ratio"]["estimate"].as_f64().unwrap() > 0.0, "{col}");
        eprintln!(
            "    {:<32} median difference {:.2} µs [{:.2}, {:.2}], variance ratio {:.2} [{:.2}, {:.2}]",
            col["column"].as_str().unwrap(),
            d["estimate"].as_f64().unwrap() / 1e3,
            d["lower"].as_f64().unwrap() / 1e3,
            d["upper"].as_f64().unwrap() / 1e3,
            col["variance_ratio"]["estimate"].as_f64().unwrap(),
            col["variance_ratio"]["lower"].as_f64().unwrap(),
            col["variance_ratio"]["upper"].as_f64().unwrap()
        );
    }
}

/// Least privilege on a kernel where the clocksource chain attaches (issue 15): the exporter
/// as nobody with CAP_BPF, CAP_PERFMON, CAP_SYSLOG (and CAP_SYS_TIME for its PPS device) runs
/// every chain root runs, the clocksource chain included, and measures real switches; after
/// attaching only the PPS reader holds a capability, CAP_SYS_TIME. Without CAP_SYSLOG the
/// chain's first_read cannot match the new clocksource's read function (kallsyms hides
/// addresses), and doctor says so instead of the chain silently never completing.
#[test]
fn least_privileged_exporter_measures_clocksource_switches_in_a_stock_kernel() {
    require_root();
    const SWITCHES: u32 = 40;
    // util-linux setpriv: busybox has one too, earlier in PATH, without --reuid.
    let nobody = |caps: &[&str]| clockpath_tests::capabilities::as_nobody("/usr/bin/setpriv", caps).join(" ");
    let least = nobody(&["bpf", "perfmon", "syslog", "sys_time"]);
    let no_syslog = nobody(&["bpf", "perfmon", "sys_time"]);
    let script = format!(
        r#"
insmod pps_clockpath.ko phase_ns=250000000; echo "pps_insmod=$?"
chmod 0666 /dev/pps0
./clockpath doctor --json > doctor-root.json; echo "doctor_root=$?"
{least} ./clockpath doctor --json > doctor-least.json; echo "doctor_least=$?"
{no_syslog} ./clockpath doctor --json > doctor-nosyslog.json; echo "doctor_nosyslog=$?"
original=$(cat {CS}); echo "original=$original"
{least} ./clockpath --config pps.toml run --duration 900 > run.log 2>&1 &
RUN=$!
for i in $(seq 1 150); do wget -q -O /dev/null http://127.0.0.1:39111/healthz 2>/dev/null && break; sleep 0.2; done
echo "healthy=$(wget -q -O /dev/null http://127.0.0.1:39111/healthz 2>/dev/null && echo yes || echo no)"
for t in /proc/$RUN/task/*; do cat $t/status; echo ---; done > caps.txt
i=0; while [ $i -lt {SWITCHES} ]; do echo hpet > {CS}; echo acpi_pm > {CS}; i=$((i+1)); done
echo "$original" > {CS}
touch switched
for i in $(seq 1 600); do [ -e scraped ] && break; sleep 0.2; done
kill -TERM $RUN; wait $RUN; echo "run_exit=$?"
echo "final=$(cat {CS})"
"#
    );
    let guest = Guest::start(
        &script,
        &[("pps.toml", "[pps]\ndevices = [\"/dev/pps0\"]\n")],
        GuestOptions {
            cmdline: "tsc=reliable".into(),
            forward: Some(39111),
            timeout: Duration::from_secs(400),
            share_files: vec![clockpath_tests::guest::build_module(STOCK_KERNEL, "pps_clockpath")],
            ..Default::default()
        },
    );
    guest.wait_until("the guest's switches", Duration::from_secs(300), |share| {
        let ended = std::fs::read_to_string(share.join("results.txt")).unwrap_or_default().contains("GUEST_TEST_EXIT");
        share.join("switched").exists() || ended
    });
    // Scraped until the PPS reader has read an edge (one a second).
    let scrape = |agent: &ureq::Agent| {
        agent
            .get(&guest.url("/metrics"))
            .timeout(Duration::from_secs(60))
            .call()
            .map(|r| r.into_string().unwrap_or_default())
            .map_err(|e| e.to_string())
    };
    let agent = ureq::Agent::new();
    let pulses = |t: &str| Scrape::parse(t).map(|s| s.sum("clockpath_pps_pulses_total", &[])).unwrap_or(0.0);
    // Polled with a deadline; what a last scrape holds is asserted once the guest's log is in.
    let text = poll_for(Duration::from_secs(30), || scrape(&agent).ok().filter(|t| pulses(t) > 0.0))
        .map_or_else(|| scrape(&agent), Ok);
    std::fs::write(guest.share().join("scraped"), "").unwrap();
    let out = guest.wait();
    let log = out.file("run.log");
    let text = text.unwrap_or_else(|e| panic!("scraping the guest's exporter: {e}\n{log}\n{}", out.results));
    assert!(pulses(&text) > 0.0, "no PPS edge read by the unprivileged exporter:\n{log}");
    eprintln!("guest finished in {:?}:\n{}", out.elapsed, out.results);
    let results: BTreeMap<String, String> =
        out.results.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(results.get("pps_insmod").map(String::as_str), Some("0"), "{}", out.serial);
    assert_eq!(results.get("healthy").map(String::as_str), Some("yes"), "the exporter as nobody never served:\n{log}");

    // The same chains run for nobody with the three capabilities as for root.
    let doctor =
        |name: &str| -> Value { serde_json::from_str(&out.file(name)).unwrap_or_else(|e| panic!("{name}: {e}")) };
    let (root, least_d, no_syslog_d) =
        (doctor("doctor-root.json"), doctor("doctor-least.json"), doctor("doctor-nosyslog.json"));
    assert!(running_chains(&root).contains("clocksource_switch"), "{:?}", running_chains(&root));
    assert_eq!(running_chains(&least_d), running_chains(&root));
    assert_eq!(results.get("doctor_least").map(String::as_str), Some("0"));
    assert!(
        least_d["missing_capabilities"].as_array().unwrap().iter().all(|m| m["fatal"] == false),
        "{}",
        least_d["missing_capabilities"]
    );

    // Without CAP_SYSLOG: the chain is unavailable, naming the capability.
    let cs = no_syslog_d["chains"].as_array().unwrap().iter().find(|c| c["name"] == "clocksource_switch").unwrap();
    assert_eq!(cs["state"]["state"], "disabled", "{cs}");
    let reason = cs["state"]["reason"].as_str().unwrap();
    assert!(reason.contains("first_read") && reason.contains("CAP_SYSLOG"), "{reason}");
    let missing = no_syslog_d["missing_capabilities"].as_array().unwrap();
    assert!(missing.iter().any(|m| m["capability"] == "CAP_SYSLOG"), "{missing:?}");
    eprintln!("without CAP_SYSLOG: {reason}");

    // After attaching: nothing held but the PPS reader's CAP_SYS_TIME.
    let threads = clockpath_tests::capabilities::of_dump(&out.file("caps.txt"));
    assert!(threads.len() >= 4, "{threads:?}");
    let sys_time = 1u64 << clockpath_tests::capabilities::CAP_SYS_TIME;
    for t in &threads {
        assert!(t.no_new_privs, "{t:?}");
        assert_eq!((t.inheritable, t.ambient), (0, 0), "{t:?}");
        if t.name.starts_with("pps-") {
            assert_eq!((t.permitted, t.effective), (sys_time, sys_time), "{t:?}");
        } else {
            assert!(t.holds_none(), "{t:?}");
        }
    }
    assert!(threads.iter().any(|t| t.name.starts_with("pps-")), "a PPS reader: {threads:?}");
    eprintln!(
        "threads after attaching: {:?}",
        threads.iter().map(|t| format!("{} prm={:x}", t.name, t.permitted)).collect::<Vec<_>>()
    );

    // Every switch measured: a first read counts only when it is of the new clocksource's
    // read function, matched by the address CAP_SYSLOG reveals.
    let sc = Scrape::parse(&text).unwrap();
    let switches = f64::from(2 * SWITCHES);
    for seg in ["switch_entry->first_read", "first_read->baseline_recalc", "total"] {
        let n =
            sc.sum("clockpath_segment_duration_seconds_count", &[("chain", "clocksource_switch"), ("segment", seg)]);
        assert!(n >= switches * 0.9, "{seg}: {n} of {switches} switches\n{log}");
        eprintln!("unprivileged exporter: {seg} measured in {n} of {switches} switches");
    }
    assert_eq!(results.get("run_exit").map(String::as_str), Some("0"), "{log}");
    assert!(log.contains("capabilities given up after attaching"), "{log}");
    assert_eq!(results.get("final"), results.get("original"));
}
