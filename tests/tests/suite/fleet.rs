//! A fleet under one real Prometheus (issue 13): this machine's exporter and two guests on
//! Debian's stock kernel, each running `clockpath run` with its own env and labels (guest B
//! with a PPS source and clocksource switches, guest C booted with `processor.max_cstate=1`),
//! scraped by Debian's Prometheus with the project's rules. Every dashboard query and every
//! recording rule returns series; `compare --prometheus` agrees with the offline `compare` on
//! the recorders' traces of the same runs within one bucket width.
//!
//! This machine is itself a VM: auto-detection would call all three `vm`, so the roles are set
//! explicitly (`environment.env`): this machine is the fleet's `host`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use clockpath_tests::{
    guest::{Guest, GuestOptions, STOCK_KERNEL},
    prometheus::Prometheus,
    *,
};
use serde_json::Value;

/// Dashboard panels that cannot have data on these machines, and why.
const NO_DATA_HERE: &[(&str, &str)] = &[];

fn guest_config(node: &str, pps: bool) -> String {
    format!(
        r#"
[environment]
env = "vm"
labels = {{ node = "{node}" }}
[windows]
interval_secs = 15
[recorder]
enabled = true
dir = "traces"
[pps]
devices = [{}]
"#,
        if pps { "\"/dev/pps0\"" } else { "" }
    )
}

fn guest_script(pps: bool) -> String {
    let (insmod, session) = if pps {
        (
            "insmod pps_clockpath.ko phase_ns=250000000; echo \"pps_insmod=$?\"",
            "./clockpath session --runs 30 --clocksources hpet,acpi_pm --out s > s.log 2>&1; echo \"session=$?\"",
        )
    } else {
        ("", "")
    };
    format!(
        r#"
{insmod}
./clockpath --config fleet.toml run > run.log 2>&1 &
RUN=$!
for i in $(seq 1 300); do wget -q -O /dev/null http://127.0.0.1:39111/healthz 2>/dev/null && break; sleep 0.2; done
{session}
touch ready
for i in $(seq 1 3000); do [ -e done ] && break; sleep 0.2; done
kill -TERM $RUN; wait $RUN; echo "run_exit=$?"
"#
    )
}

/// The dashboards' queries, from tests/dashboards/check.py (which also schema-checks them).
fn dashboard_queries() -> Vec<Value> {
    let py = std::env::var_os("CLOCKPATH_GRAFANA_VENV")
        .map_or_else(|| PathBuf::from("/opt/clockpath-test/grafana-venv"), PathBuf::from)
        .join("bin/python");
    assert!(py.exists(), "{} is missing: run scripts/setup.sh", py.display());
    let out = Command::new(py).arg(workspace().join("tests/dashboards/check.py")).output().expect("run check.py");
    assert!(out.status.success(), "check.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("check.py prints the queries as JSON")
}

/// A dashboard expression with its variables set: every env and instance, the runqueue
/// chain and its segment (which have data everywhere), Grafana's intervals.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
        .replace("${env}", ".*")
        .replace("$env", ".*")
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
        .replace("${chain}", "runqueue")
        .replace("$chain", "runqueue")
        .replace("${segment}", "enqueue->switch_in")
        .replace("$segment", "enqueue->switch_in")
}

/// A variable query (`label_values(metric, label)`) as PromQL returning the label's values.
fn variable_promql(q: &str) -> String {
    let q = substitute(q);
    match q.trim().strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
        Some(inner) => match inner.rsplit_once(',') {
            Some((metric, label)) => format!("group by ({}) ({})", label.trim(), metric.trim()),
            None => format!("group by ({}) ({{__name__=~\".+\"}})", inner.trim()),
        },
        None => q,
    }
}

/// Segment durations of chain `chain` in the CSV traces under `dir`: stage k's hit minus stage
/// k−1's, per instance, for the segment ending at stage `end`.
fn traced_durations(dir: &Path, chain: &str, start: &str, end: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
        let (ts, probe, id, ch) = (col("timestamp_ns"), col("probe_name"), col("delta_chain_id"), col("chain"));
        let mut open: BTreeMap<&str, u64> = BTreeMap::new();
        for l in lines {
            let f: Vec<&str> = l.split(',').collect();
            if f[ch] != chain {
                continue;
            }
            let t: u64 = f[ts].parse().unwrap();
            if f[probe] == start {
                open.insert(f[id], t);
            } else if f[probe] == end
                && let Some(s) = open.remove(f[id])
            {
                out.push(t.saturating_sub(s) as f64);
            }
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn trace_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path().display().to_string()).collect()
}

#[test]
fn a_fleet_under_one_prometheus_dashboards_rules_and_compare() {
    require_root();
    let queries = dashboard_queries();
    let started = std::time::Instant::now();
    let module = clockpath_tests::guest::build_module(STOCK_KERNEL, "pps_clockpath");
    let b = Guest::start(
        &guest_script(true),
        &[("fleet.toml", &guest_config("vm-b", true))],
        GuestOptions {
            forward: Some(39111),
            timeout: Duration::from_secs(900),
            share_files: vec![module],
            ..Default::default()
        },
    );
    let c = Guest::start(
        &guest_script(false),
        &[("fleet.toml", &guest_config("vm-c", false))],
        GuestOptions {
            forward: Some(39111),
            timeout: Duration::from_secs(900),
            cmdline: "processor.max_cstate=1".into(),
            ..Default::default()
        },
    );
    let host_traces = tempfile::tempdir().unwrap();
    let (_cfg_dir, host_cfg) = config_file(&format!(
        "[environment]\nenv = \"host\"\nlabels = {{ node = \"host-a\" }}\n[probe]\nbpf_stats = true\n[windows]\ninterval_secs = 15\n[recorder]\nenabled = true\ndir = \"{}\"\n",
        host_traces.path().display()
    ));
    eprintln!("this machine is a VM itself: its exporter's env is set to `host` explicitly");
    let host = Exporter::start(&["--config", host_cfg.to_str().unwrap()], &[]);
    let targets = vec![
        host.addr(),
        b.url("").trim_start_matches("http://").to_string(),
        c.url("").trim_start_matches("http://").to_string(),
    ];
    let rules = workspace().join("rules/clockpath.rules.yml");
    let prom = Prometheus::start_with_rules(&targets, std::slice::from_ref(&rules), &[]);

    // All three up, their chains running, the guests' work done, windows closed.
    b.wait_until("guest B's exporter and session", Duration::from_secs(600), |s| s.join("ready").exists());
    c.wait_until("guest C's exporter", Duration::from_secs(600), |s| s.join("ready").exists());
    prom.wait_for("count(up == 1)", Duration::from_secs(120), |v| v == 3.0);
    prom.wait_for(
        "count(count by (instance) (clockpath_window_median_seconds{chain=\"runqueue\",segment=\"enqueue->switch_in\"}))",
        Duration::from_secs(120),
        |v| v == 3.0,
    );
    prom.wait_for(
        "sum(clockpath_segment_duration_seconds_count{chain=\"clocksource_switch\",node=\"vm-b\"})",
        Duration::from_secs(120),
        |v| v >= 25.0,
    );
    prom.wait_for("count(clockpath_pps_window_median_seconds)", Duration::from_secs(120), |v| v >= 1.0);
    // The window holding B's switches closes after the session.
    prom.wait_for(
        "count(clockpath_window_median_seconds{chain=\"clocksource_switch\"})",
        Duration::from_secs(120),
        |v| v >= 1.0,
    );
    let kernels = prom.query("count by (kernel, env) (clockpath_environment_info)");
    eprintln!("fleet: {}", kernels.iter().map(|k| k["metric"].to_string()).collect::<Vec<_>>().join(" "));

    // Every recording rule gives series.
    let rule_text = std::fs::read_to_string(&rules).unwrap();
    let recorded: Vec<&str> = rule_text
        .lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("record:"))
        .map(str::trim)
        .collect();
    assert!(!recorded.is_empty(), "the rules record nothing");
    for r in &recorded {
        let n = prom.wait_for(&format!("count({r})"), Duration::from_secs(60), |v| v >= 1.0);
        eprintln!("recording rule {r}: {n} series");
    }

    // Every dashboard query returns series for the data it shows: panels over the run, as
    // Grafana queries them (a range), variables now.
    let run_secs = started.elapsed().as_secs() + 1;
    let mut empty = Vec::new();
    for q in &queries {
        let (dash, panel, kind) =
            (q["dashboard"].as_str().unwrap(), q["panel"].as_str().unwrap(), q["kind"].as_str().unwrap());
        let expr = q["expr"].as_str().unwrap();
        let (promql, n) = if kind == "variable" {
            let p = variable_promql(expr);
            let n = prom.query(&p).len();
            (p, n)
        } else {
            let p = substitute(expr);
            let n = prom.query_range(&p, run_secs, 5).len();
            (p, n)
        };
        eprintln!("{dash} / {panel} ({kind}): {n} series  <- {promql}");
        if n == 0 && !NO_DATA_HERE.iter().any(|(p, _)| *p == panel) {
            empty.push(format!("{dash} / {panel}: {promql}"));
        }
    }
    assert!(empty.is_empty(), "dashboard queries without data:\n{}", empty.join("\n"));

    // compare --prometheus over the whole run, by env (host against the two VMs), by C-state
    // limit, by instance and by a static label.
    let range = "900s";
    let compare = |by: &str| {
        let o = clockpath(&[
            "compare",
            "--prometheus",
            &prom.url(),
            "--by",
            by,
            "--chain",
            "runqueue",
            "--range",
            range,
            "--json",
        ]);
        assert!(o.status.success(), "compare --by {by}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Vec<Value>>(&o.stdout).expect("compare JSON")
    };
    let by_env = compare("env");
    for by in ["cstate", "instance", "node"] {
        let r = compare(by);
        assert!(!r.is_empty(), "--by {by}");
        eprintln!("compare --by {by}: {}", r.iter().map(|c| c["verdict"].to_string()).collect::<Vec<_>>().join(" | "));
        if by == "cstate" {
            let groups: Vec<&str> =
                r.iter().flat_map(|c| [c["a"].as_str().unwrap(), c["b"].as_str().unwrap()]).collect();
            assert!(groups.contains(&"processor.max_cstate=1"), "guest C's C-state limit is a group: {groups:?}");
        }
    }

    // Bad input: an unknown label, no data, an unreachable server.
    let o = clockpath(&["compare", "--prometheus", &prom.url(), "--by", "nosuchlabel", "--range", range]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("no clockpath_segment_duration_seconds series carries the label `nosuchlabel`")
    );
    let o = clockpath(&["compare", "--prometheus", &prom.url(), "--by", "env", "--chain", "nope", "--range", range]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no clockpath_segment_duration_seconds data for chain `nope`"));
    assert!(o.stdout.is_empty(), "nothing printed as a result");
    let o = clockpath(&["compare", "--prometheus", &format!("http://127.0.0.1:{}", free_port()), "--by", "env"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach Prometheus"));

    // Stop everything; the recorders' traces hold the same runs.
    std::fs::write(b.share().join("done"), "").unwrap();
    std::fs::write(c.share().join("done"), "").unwrap();
    assert!(host.stop().status.success());
    let (ob, oc) = (b.wait(), c.wait());
    for o in [&ob, &oc] {
        assert!(o.results.contains("run_exit=0"), "{}\n{}", o.results, o.file("run.log"));
    }
    let vm_dirs = [ob.dir.path().join("traces"), oc.dir.path().join("traces")];

    // The same comparison offline, on the traces: the difference of medians agrees within a
    // bucket width, and so does each group's median.
    let mut files = trace_files(host_traces.path());
    for d in &vm_dirs {
        files.extend(trace_files(d));
    }
    let mut args = vec!["compare", "--group-by", "env", "--chain", "runqueue", "--json"];
    args.extend(files.iter().map(String::as_str));
    let o = clockpath(&args);
    assert!(o.status.success(), "offline compare: {}", String::from_utf8_lossy(&o.stderr));
    let offline: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let fleet = by_env.iter().find(|c| c["segment"] == "enqueue->switch_in").expect("fleet enqueue->switch_in");
    let off = offline.iter().find(|c| c["segment"] == "enqueue->switch_in").expect("offline enqueue->switch_in");
    assert_eq!((fleet["a"].as_str(), fleet["b"].as_str()), (off["a"].as_str(), off["b"].as_str()));
    // The unit on both sides: Prometheus' instances, the recorders' runs (each exporter run is
    // a session, even in two VMs of one image with the same hostname and pid).
    assert_eq!(
        (fleet["unit"].as_str(), fleet["a_sessions"].as_u64(), fleet["b_sessions"].as_u64()),
        (Some("instance"), Some(1), Some(2)),
        "{fleet}"
    );
    assert_eq!(
        (off["unit"].as_str(), off["a_sessions"].as_u64(), off["b_sessions"].as_u64()),
        (Some("session"), Some(1), Some(2)),
        "{off}"
    );
    let resolution = fleet["resolution_ns"].as_f64().expect("resolution_ns (none when a median is in the +Inf bucket)");
    let (df, doff) = (
        fleet["median_difference"]["estimate"].as_f64().unwrap(),
        off["median_difference"]["estimate"].as_f64().unwrap(),
    );
    eprintln!(
        "host vs vm, enqueue->switch_in: fleet {df:.0} ns ({}), offline {doff:.0} ns ({}), resolution {resolution:.0} ns",
        fleet["verdict"], off["verdict"]
    );
    assert!((df - doff).abs() <= resolution, "difference of medians: fleet {df} ns, offline {doff} ns");
    let host_median = median(traced_durations(host_traces.path(), "runqueue", "enqueue", "switch_in"));
    let mut vm = Vec::new();
    for d in &vm_dirs {
        vm.extend(traced_durations(d, "runqueue", "enqueue", "switch_in"));
    }
    let vm_median = median(vm);
    for (name, traced, fleet_median) in [
        ("host", host_median, fleet["a_median_ns"].as_f64().unwrap()),
        ("vm", vm_median, fleet["b_median_ns"].as_f64().unwrap()),
    ] {
        eprintln!("{name} median: traces {traced:.0} ns, Prometheus {fleet_median:.0} ns");
        assert!(
            (traced - fleet_median).abs() <= resolution,
            "{name}: traces {traced} ns, Prometheus {fleet_median} ns"
        );
    }
}
