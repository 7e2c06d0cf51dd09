//! The offline analyser and simulator, through the CLI (issue 5): formats, groups, compare,
//! regress, plots, and every kind of bad input.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use common::clockpath;
use serde_json::Value;

mod common;

fn ok(args: &[&str]) -> String {
    let o = clockpath(args);
    assert!(o.status.success(), "clockpath {args:?}: {}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn simulate(dir: &Path, extra: &[&str]) -> PathBuf {
    let out = dir.join("sim");
    let mut args = vec!["simulate", "--out", out.to_str().unwrap(), "--seed", "7"];
    args.extend_from_slice(extra);
    ok(&args);
    out
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn column<'a>(groups: &'a Value, name: &str, col: usize) -> &'a Value {
    &groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name}: {groups}"))["columns"][col]
}

#[test]
fn simulated_host_and_vm_sessions_are_analysed_grouped_and_plotted() {
    let d = tempfile::tempdir().unwrap();
    let sim = simulate(d.path(), &["--offset", "1.111", "--cstates", "default,max_cstate=1"]);
    let out = d.path().join("report");
    let md = ok(&["analyze", sim.join("sessions.csv").to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(md.contains("## clocksource_switch") && md.contains("### By env"), "{md}");
    let r = report(&out);
    let chain = &r["chains"][0];
    assert_eq!(chain["chain"], "clocksource_switch");
    assert_eq!(
        chain["columns"],
        serde_json::json!(["switch_entry->first_read", "first_read->baseline_recalc", "total"])
    );
    assert_eq!(chain["sessions"].as_array().unwrap().len(), 4);
    // The model: 1.111 s offset plus ~20 µs on a host, ~35 µs in a VM, on the first segment.
    let host = column(&chain["groups"]["env"], "host", 0);
    let vm = column(&chain["groups"]["env"], "vm", 0);
    assert_eq!(r["unit"], "s", "durations in SI seconds");
    let (h, v) = (host["median"].as_f64().unwrap(), vm["median"].as_f64().unwrap());
    assert!((h - 1.111 - 20e-6).abs() < 3e-6, "host median {h}");
    assert!(v > h + 5e-6, "vm median {v} should exceed host {h}");
    // Each table reads in its own unit: the 1.111 s segment in seconds, the µs one in µs.
    assert!(
        md.contains("#### `switch_entry->first_read` (s)") && md.contains("#### `first_read->baseline_recalc` (µs)"),
        "{md}"
    );
    assert!(md.contains("| 1.1110"), "{md}");
    for g in chain["sessions"].as_array().unwrap() {
        for c in g["columns"].as_array().unwrap() {
            let (m, lo, hi) =
                (c["median"].as_f64().unwrap(), c["ci"]["lower"].as_f64().unwrap(), c["ci"]["upper"].as_f64().unwrap());
            assert!(lo <= m && m <= hi, "{g}");
            assert_eq!(c["reliable"], true, "300 runs per session are enough");
        }
        assert!(g["rejected"].as_u64().unwrap() > 0, "the model has 1 % outliers: {g}");
    }
    for f in [
        "report.md",
        "histograms.csv",
        "histograms.json",
        "plots/forest-clocksource_switch-switch_entry--first_read.svg",
        "plots/hist-clocksource_switch-total.svg",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let hist = std::fs::read_to_string(out.join("histograms.csv")).unwrap();
    assert!(hist.starts_with("chain,segment,lower_ns,upper_ns,count"));
    let total: u64 = hist
        .lines()
        .skip(1)
        .filter(|l| l.contains(",total,"))
        .map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 1200, "the histograms count every complete run, exactly");
    let svg =
        std::fs::read_to_string(out.join("plots/forest-clocksource_switch-switch_entry--first_read.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("env=vm"));
}

#[test]
fn compare_gives_ci_verdicts_for_two_inputs_and_for_groups() {
    let d = tempfile::tempdir().unwrap();
    // Three recordings of each setting, each with its own shift (sd 1 µs): sessions are the unit.
    let sim = simulate(d.path(), &["--cstates", "default,max_cstate=1", "--sessions", "3", "--session-sd", "1"]);
    let csv = sim.join("sessions.csv");
    let text = ok(&["compare", csv.to_str().unwrap(), "--group-by", "env"]);
    let first = text.lines().next().unwrap();
    assert!(
        first.contains("switch_entry->first_read (vm vs host: 6 / 6 sessions") && first.contains("higher in vm"),
        "{text}"
    );
    let json = ok(&["compare", csv.to_str().unwrap(), "--group-by", "env", "--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["unit"], "session");
    assert_eq!(v[0]["strata"], serde_json::json!(["cstate"]), "the C-state policy varies inside both envs: {}", v[0]);
    assert_eq!(v[0]["degrees_of_freedom"], 9, "12 sessions − intercept, env, cstate");
    assert_eq!(v[0]["units"]["median_difference"], "ns (b − a)");
    let json = ok(&["compare", csv.to_str().unwrap(), "--group-by", "cstate", "--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let seg1 = &v[0];
    assert_eq!(seg1["a"], "default");
    assert!(
        seg1["variance_ratio"]["upper"].as_f64().unwrap() < 1.0,
        "max_cstate=1 removes the deep-idle variance: {seg1}"
    );
    // Two inputs: a simulation against itself differs by nothing, and says no more than that.
    let text = ok(&["compare", csv.to_str().unwrap(), csv.to_str().unwrap(), "--chain", "clocksource_switch"]);
    let verdicts: Vec<&str> = text.lines().filter(|l| !l.starts_with("  note:")).collect();
    assert!(
        verdicts.iter().all(|l| l.contains("no median difference detected at 95 %")
            && l.contains("no variance difference detected at 95 %")),
        "{text}"
    );
    // One session against one: a statement about those two sessions only.
    let one = simulate(&d.path().join("one"), &[]);
    let json = ok(&["compare", one.join("sessions.csv").to_str().unwrap(), "--group-by", "env", "--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["unit"], "run");
    assert!(v[0]["verdict"].as_str().unwrap().ends_with("between these two sessions only"), "{}", v[0]);
    let o = clockpath(&["compare", csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

fn coefficient<'a>(e: &'a Value, name: &str) -> &'a Value {
    e["coefficients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no coefficient {name}: {e}"))
}

fn covers(c: &Value, v: f64) -> bool {
    c["lower"].as_f64().unwrap() <= v && v <= c["upper"].as_f64().unwrap()
}

/// Issue 11: the regression finds what was planted and nothing where nothing was.
#[test]
fn regress_recovers_planted_effects_and_covers_zero_where_there_are_none() {
    let d = tempfile::tempdir().unwrap();
    // IRQ time adds to the first segment one for one, softirq time does not; max_cstate=1
    // removes the deep-idle exit (30 % of runs × 40 µs mean = 12 µs); the governor does nothing.
    let sim = simulate(
        d.path(),
        &[
            "--envs",
            "host",
            "--cstates",
            "default,max_cstate=1",
            "--governors",
            "performance,powersave",
            "--interference",
            "--outliers",
            "0",
            "--runs",
            "400",
        ],
    );
    let csv = sim.join("sessions.csv");
    // No outlier rejection: the exit-latency tail is the effect.
    let json = ok(&["regress", csv.to_str().unwrap(), "--sigma", "1000", "--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let r = &v[0];
    assert_eq!(r["chain"], "clocksource_switch");
    let e = &r["explanatory"];
    assert_eq!(e["response"], "switch_entry->first_read");
    assert_eq!(e["reference_levels"]["cstate"], "default");
    assert_eq!(e["left_out"]["env"], "one level only (`host`)");
    let irq = coefficient(e, "interference_irq_ns");
    assert!(covers(irq, 1.0), "IRQ time adds one for one: {irq}");
    let softirq = coefficient(e, "interference_softirq_ns");
    assert!(covers(softirq, 0.0), "softirq time adds nothing: {softirq}");
    let c1 = coefficient(e, "cstate=max_cstate=1");
    assert_eq!(c1["unit"], "s");
    assert!(covers(c1, -12e-6), "max_cstate=1 saves 12 µs on average: {c1}");
    let gov = coefficient(e, "governor=powersave");
    assert!(covers(gov, 0.0), "the governor does nothing: {gov}");
    // Variance attribution: shares sum to 1, the first segment carries the C-state variance.
    for a in r["attribution"].as_array().unwrap() {
        let shares: Vec<f64> = a["shares"].as_array().unwrap().iter().map(|s| s["share"].as_f64().unwrap()).collect();
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{a}");
    }
    let default = r["attribution"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["session"].as_str().unwrap().contains("-default-"))
        .unwrap();
    assert!(default["shares"][0]["share"].as_f64().unwrap() > 0.9, "{default}");
    // Model check: segments drawn independently. At its 95 % level the check flags about one
    // independent session in 16 (6.3 % in the calibration suite), so of these four at most one
    // (this seed's data: one, at the median, by 0.03 µs).
    let checks = r["model_check"].as_array().unwrap();
    assert_eq!(checks.len(), 4);
    let flagged: Vec<&Value> = checks.iter().filter(|m| m["consistent_with_independence"] != true).collect();
    assert!(flagged.len() <= 1, "{flagged:?}");
    // The table reads.
    let text = ok(&["regress", csv.to_str().unwrap(), "--sigma", "1000"]);
    assert!(text.contains("### Variance attribution") && text.contains("| cstate=max_cstate=1 |"), "{text}");
    // A factor asked for with one level is refused, naming it.
    let o = clockpath(&["regress", csv.to_str().unwrap(), "--factor", "env"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("factor `env` has one level only (`host`)"), "{err}");
    let o = clockpath(&["regress", csv.to_str().unwrap(), "--segment", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no segment `nope`"));
}

/// Issue 11: an outer chain around the inner one: the intercept is what no inner probe covers.
#[test]
fn regress_outer_on_inner_finds_the_uncovered_part() {
    let d = tempfile::tempdir().unwrap();
    // 2 µs + Exp(1 µs) before the switch, 3 µs + Exp(1 µs) after: 7 µs on average.
    let sim = simulate(d.path(), &["--envs", "host", "--outer", "--outliers", "0", "--runs", "400"]);
    let csv = sim.join("sessions.csv");
    let json = ok(&["regress", csv.to_str().unwrap(), "--outer", "clocksource_write", "--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "the outer chain is not regressed itself");
    let o = &v[0]["outer"];
    // Outer instances beyond ±3σ are rejected like any other; the rest pair up.
    assert!(o["pairs"].as_u64().unwrap() >= 350, "{o}");
    let intercept = &o["coefficients"][0];
    assert!(covers(intercept, 7e-6), "{intercept}");
    for slope in &o["coefficients"].as_array().unwrap()[1..] {
        assert!(covers(slope, 1.0), "{slope}");
    }
    let m = o["median_uncovered"].as_f64().unwrap();
    assert!((6.0e-6..7.5e-6).contains(&m), "median uncovered {m}");
    // With the 1.111 s offset on the first segment the intercept is an extrapolation far
    // from the data (it was reported as the uncovered part: 151 ms [−20, 314] ms in an audit);
    // the per-pair difference is not: its mean covers the planted 7 µs (2 + 1 + 3 + 1).
    let offset =
        simulate(&d.path().join("offset"), &["--envs", "host", "--outer", "--outliers", "0", "--offset", "1.111"]);
    let json =
        ok(&["regress", offset.join("sessions.csv").to_str().unwrap(), "--outer", "clocksource_write", "--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let o = &v[0]["outer"];
    let (lo, hi) = (o["mean_uncovered_lower"].as_f64().unwrap(), o["mean_uncovered_upper"].as_f64().unwrap());
    assert!(lo <= 7e-6 && 7e-6 <= hi, "mean uncovered [{lo}, {hi}] s: {o}");
    assert!(o["coefficients"][0]["name"].as_str().unwrap().starts_with("intercept (slope-model term"), "{o}");
    // Correlated segments fail the model check.
    let corr = d.path().join("corr.csv");
    let mut text = String::from("timestamp_ns,probe_name,session_id,delta_chain_id\n");
    let mut t = 1_000_000u64;
    let mut x = 12345u64;
    for id in 1..=300u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let s = 10_000 + x % 20_000;
        text.push_str(&format!(
            "{t},switch_entry,c,{id}\n{},first_read,c,{id}\n{},baseline_recalc,c,{id}\n",
            t + s,
            t + 2 * s
        ));
        t += 1_000_000;
    }
    std::fs::write(&corr, text).unwrap();
    let v: Value = serde_json::from_str(&ok(&["regress", corr.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(v[0]["model_check"][0]["consistent_with_independence"], false, "{}", v[0]["model_check"]);
}

#[test]
fn csv_jsonl_plain_and_gzip_give_the_same_runs() {
    let d = tempfile::tempdir().unwrap();
    let runs_of = |files: &[&Path]| -> u64 {
        let out = d.path().join(format!("r{}", files.len()));
        let mut args = vec!["analyze", "--no-plots", "--out", out.to_str().unwrap()];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        ok(&args);
        report(&out)["chains"][0]["sessions"].as_array().unwrap().iter().map(|s| s["seen"].as_u64().unwrap()).sum()
    };
    let csv = simulate(&d.path().join("a"), &["--runs", "120"]).join("sessions.csv");
    let jsonl = simulate(&d.path().join("b"), &["--runs", "120", "--format", "jsonl"]).join("sessions.jsonl");
    let plain = simulate(&d.path().join("c"), &["--runs", "120", "--format", "plain"]);
    let parquet = simulate(&d.path().join("e"), &["--runs", "120", "--format", "parquet"]).join("sessions.parquet");
    let gz = d.path().join("sessions.csv.gz");
    let mut e = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    e.write_all(&std::fs::read(&csv).unwrap()).unwrap();
    e.finish().unwrap();
    assert_eq!(runs_of(&[&csv]), 240);
    assert_eq!(runs_of(&[&jsonl]), 240);
    assert_eq!(runs_of(&[&gz]), 240);
    assert_eq!(runs_of(&[&parquet]), 240);
    // Not just as many runs: the same statistics, label groups included.
    let (from_csv, _) = chains_of(&d.path().join("rc"), &[&csv], &[]);
    let (from_parquet, _) = chains_of(&d.path().join("rp"), &[&parquet], &[]);
    assert_eq!(from_csv, from_parquet, "CSV and Parquet of the same runs give different reports");
    let p1 = plain.join("sim-host-default.txt");
    let p2 = plain.join("sim-vm-default.txt");
    assert_eq!(runs_of(&[&p1, &p2]), 240, "old-tooling lines with do_clocksource_switch_entry");
}

#[test]
fn bad_input_is_located_and_counted() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.csv");
    std::fs::write(&bad, "timestamp_ns,probe_name,delta_chain_id\n1,switch_entry,1\n2,first_read,1\noops,first_read,1\n3,baseline_recalc,1\n4,mystery,2\n5,mystery,3\n").unwrap();
    let out = d.path().join("r");
    let o = clockpath(&["analyze", bad.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.csv:4:") && err.contains("timestamp_ns `oops` is not a non-negative integer"), "{err}");
    let o = clockpath(&[
        "analyze",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--skip-bad-lines",
        "--no-plots",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("skipped 1 malformed line") && err.contains("bad.csv:4"), "{err}");
    assert!(err.contains("unknown probe names, ignored: mystery (2)"), "{err}");
    assert_eq!(report(&out)["unknown_probes"]["mystery"], 2);
    // Empty input, and a file that does not exist.
    let empty = d.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let o = clockpath(&["analyze", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no trace lines"));
    let o = clockpath(&["analyze", "/nonexistent/trace.csv"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/trace.csv"));
    // A partial last line is reported and skipped, the rest analysed.
    let partial = d.path().join("partial.csv");
    std::fs::write(
        &partial,
        "timestamp_ns,probe_name,delta_chain_id\n1,switch_entry,1\n2,first_read,1\n3,baseline_recalc,1\n4,switch_en",
    )
    .unwrap();
    let o = clockpath(&["analyze", partial.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-plots"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("partial line"));
    // Bad statistics options.
    let o = clockpath(&["analyze", partial.to_str().unwrap(), "--resamples", "5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("at least 10"));
}

#[test]
fn shipped_examples_analyse() {
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/traces");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ex).expect("examples/traces").map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let d = tempfile::tempdir().unwrap();
        ok(&["analyze", f.to_str().unwrap(), "--out", d.path().to_str().unwrap(), "--no-plots"]);
    }
}

/// Lines of `path` (a header kept first when it has one), reordered by `f`.
fn reordered(path: &Path, out: &Path, f: impl Fn(&mut Vec<String>)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let header = lines.first().is_some_and(|l| l.starts_with("timestamp_ns")).then(|| lines.remove(0));
    f(&mut lines);
    let mut body = header.into_iter().chain(lines).collect::<Vec<_>>().join("\n");
    body.push('\n');
    std::fs::write(out, body).unwrap();
}

/// A way to reorder the lines of a trace.
type Reorder = Box<dyn Fn(&mut Vec<String>)>;

/// The chains of a report, which must not depend on the order of the lines.
fn chains_of(dir: &Path, files: &[&Path], extra: &[&str]) -> (Value, Value) {
    let mut args = vec!["analyze", "--no-plots", "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    ok(&args);
    let r = report(dir);
    (r["chains"].clone(), r["order"].clone())
}

/// Issue 11: a trace in any line order (shuffled, sorted by probe name, its halves swapped, a
/// sort spilled to disk) gives the report of the time-sorted trace, bit for bit; the lines out
/// of time order are counted.
#[test]
fn any_line_order_gives_the_report_of_the_time_sorted_trace() {
    let d = tempfile::tempdir().unwrap();
    let sim = simulate(&d.path().join("sim"), &["--runs", "150", "--cstates", "default,max_cstate=1"]);
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/traces");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&ex).unwrap().map(|e| e.unwrap().path()).collect();
    fixtures.sort();
    fixtures.push(sim.join("sessions.csv"));
    for (k, f) in fixtures.iter().enumerate() {
        let (sorted, order) = chains_of(&d.path().join(format!("r{k}")), &[f], &[]);
        assert_eq!(order["sorted"], false, "{}: the fixture is in time order", f.display());
        let seed = 0x9e37_79b9_7f4a_7c15u64 ^ (k as u64 + 1);
        let variants: Vec<(&str, Reorder)> = vec![
            (
                "shuffled",
                Box::new(move |l: &mut Vec<String>| {
                    let mut y = seed;
                    for i in (1..l.len()).rev() {
                        y ^= y << 13;
                        y ^= y >> 7;
                        y ^= y << 17;
                        l.swap(i, (y % (i as u64 + 1)) as usize);
                    }
                }),
            ),
            (
                "by probe name",
                Box::new(|l: &mut Vec<String>| {
                    let probe = |s: &str| -> String {
                        if s.starts_with('{') {
                            s.split("\"probe_name\":\"").nth(1).unwrap_or("").to_string()
                        } else if s.contains(',') {
                            s.split(',').nth(1).unwrap_or("").to_string()
                        } else {
                            s.split_whitespace().nth(1).unwrap_or("").to_string()
                        }
                    };
                    l.sort_by_key(|s| probe(s));
                }),
            ),
            (
                "halves swapped",
                Box::new(|l: &mut Vec<String>| {
                    let half = l.len() / 2;
                    l.rotate_left(half)
                }),
            ),
        ];
        for (name, f_reorder) in &variants {
            // Same file name: plain traces take their session from it.
            let vdir = d.path().join(format!("v{k}-{}", name.replace(' ', "-")));
            std::fs::create_dir_all(&vdir).unwrap();
            let file = vdir.join(f.file_name().unwrap());
            reordered(f, &file, f_reorder);
            let dir = d.path().join(format!("r{k}-{}", name.replace(' ', "-")));
            let (chains, order) = chains_of(&dir, &[&file], &[]);
            assert_eq!(chains, sorted, "{} {name}: the report differs from the time-sorted trace's", f.display());
            // Swapped halves are in time order within each session unless a session spans both.
            let disordered = order["sorted"] == true;
            assert!(disordered || *name == "halves swapped", "{} {name}: {order}", f.display());
            assert_eq!(
                order["out_of_order_lines"].as_u64().unwrap() > 0,
                disordered,
                "{} {name}: {order}",
                f.display()
            );
            // The same through a sort that spills to disk (a tiny budget).
            let dir = d.path().join(format!("s{k}-{}", name.replace(' ', "-")));
            let (chains, order) = chains_of(&dir, &[&file], &["--sort-memory", "4K"]);
            assert_eq!(chains, sorted, "{} {name}, spilled sort", f.display());
            assert!(!disordered || order["spilled_runs"].as_u64().unwrap() > 1, "{order}");
        }
    }
}

/// Issue 11: the investigation's own example, one switch entry and one first read, is the
/// Δ(entry → first_read) it is about; the chain that never reached its last stage is counted.
#[test]
fn a_partial_chain_contributes_the_segment_it_has() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("seed.txt");
    std::fs::write(&f, "171223.534912180 do_clocksource_switch_entry\n171224.645912321 first_read\n").unwrap();
    let out = d.path().join("r");
    // No chain completed: the report is written, and the exit status says it measures nothing.
    let o = clockpath(&["analyze", "--no-plots", "--out", out.to_str().unwrap(), f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let md = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "no complete chain in the input (clocksource_switch: 1 incomplete: 1 stopped before `baseline_recalc`)"
        ),
        "{err}"
    );
    let r = report(&out);
    assert_eq!(r["chains"][0]["completeness"]["complete"], 0);
    assert_eq!(r["chains"][0]["completeness"]["missing_stage"]["baseline_recalc"], 1);
    let s = &r["chains"][0]["sessions"][0];
    let m = s["columns"][0]["median"].as_f64().unwrap();
    assert!((m - 1.111000141).abs() < 1e-12, "Δ(entry → first_read) = {m}");
    assert_eq!(s["columns"][0]["n"], 1);
    assert_eq!(s["columns"][1]["n"], 0, "no first_read → baseline_recalc");
    assert_eq!((s["seen"].as_u64(), s["complete"].as_u64()), (Some(1), Some(0)));
    assert_eq!(s["missing_stage"]["baseline_recalc"], 1);
    assert!(md.contains("| 1.111000 |") && md.contains("1 stopped before `baseline_recalc`"), "{md}");
    assert!(md.contains("No complete chain: 1 incomplete"), "{md}");
}

/// Chains that never got past their first stage make no run at all; the report still says how
/// many there were and where they stopped, and the exit status is 3. One complete chain among
/// them is enough for success; an input with no probe of any chain is bad input (2).
#[test]
fn an_input_with_no_complete_chain_says_where_the_chains_stopped_and_exits_3() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("entries.txt");
    std::fs::write(&f, "171223.534912180 do_clocksource_switch_entry\n171224.534912180 do_clocksource_switch_entry\n")
        .unwrap();
    let out = d.path().join("r");
    let o = clockpath(&["analyze", "--no-plots", "--out", out.to_str().unwrap(), f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("2 incomplete: 2 stopped before `first_read`"), "{err}");
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.contains("**no complete chain in the input**"), "{md}");
    assert_eq!(report(&out)["chains"][0]["completeness"]["incomplete"], 2);

    let g = d.path().join("other.txt");
    std::fs::write(&g, "10.0 something_else\n").unwrap();
    let o = clockpath(&["analyze", "--no-plots", "--out", out.to_str().unwrap(), g.to_str().unwrap()]);
    // Not one probe name of a chain is bad input, not an empty measurement.
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no probe name in the input belongs to a configured chain"));

    let h = d.path().join("one.txt");
    let complete = "171225.0 do_clocksource_switch_entry\n171225.1 first_read\n171225.2 baseline_recalc\n";
    std::fs::write(&h, format!("{}{complete}", std::fs::read_to_string(&f).unwrap())).unwrap();
    ok(&["analyze", "--no-plots", "--out", out.to_str().unwrap(), h.to_str().unwrap()]);
}

/// The pinned Python with DuckDB that `scripts/setup.sh` installs.
fn analysis_python() -> PathBuf {
    let venv =
        std::env::var_os("CLOCKPATH_ANALYSIS_VENV").unwrap_or_else(|| "/opt/clockpath-test/analysis-venv".into());
    let py = Path::new(&venv).join("bin/python");
    assert!(py.exists(), "{} is missing: run scripts/setup.sh (it installs DuckDB for this test)", py.display());
    py
}

/// Run `script` (Python with duckdb imported as `duckdb`) with `args`; its stdout.
fn duckdb(script: &str, args: &[&str]) -> String {
    let o = Command::new(analysis_python())
        .arg("-c")
        .arg(format!("import duckdb, sys, json\n{script}"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "duckdb: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// README's SQL: per session, the median of switch_entry→first_read over the runs the ±kσ rule
/// keeps (what `clockpath analyze` reports).
const PER_SESSION_MEDIAN_SQL: &str = include_str!("../../../docs/sql/per_session_median.sql");

/// Issue 11: the investigation's aggregation, run by DuckDB over clockpath's Parquet, gives the
/// per-session medians (and kept-run counts) `clockpath analyze` reports; and a Parquet file
/// DuckDB wrote (plain strings, signed integers) is read too, its wrong schema named.
#[test]
fn duckdb_over_clockpaths_parquet_gives_analyzes_per_session_medians() {
    let d = tempfile::tempdir().unwrap();
    let sim = simulate(
        d.path(),
        &[
            "--runs",
            "301",
            "--offset",
            "1.111",
            "--cstates",
            "default,max_cstate=1",
            "--outliers",
            "0.03",
            "--format",
            "parquet",
        ],
    );
    let pq = sim.join("sessions.parquet");
    let out = d.path().join("r");
    ok(&["analyze", "--no-plots", "--out", out.to_str().unwrap(), pq.to_str().unwrap()]);
    let r = report(&out);
    let sessions = r["chains"][0]["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 4);

    let rows = duckdb(
        "rows = duckdb.execute(open(sys.argv[1]).read(), {'path': sys.argv[2], 'k': 3.0}).fetchall()\n\
         print(json.dumps([[s, k, m] for s, k, m in rows]))",
        &[concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/sql/per_session_median.sql"), pq.to_str().unwrap()],
    );
    let rows: Vec<(String, u64, f64)> = serde_json::from_str(&rows).unwrap();
    assert_eq!(rows.len(), sessions.len(), "{rows:?}");
    for (session, kept, median_ns) in rows {
        let s = sessions.iter().find(|s| s["name"] == session.as_str()).unwrap_or_else(|| panic!("{session}"));
        assert_eq!(s["runs"].as_u64().unwrap() - s["rejected"].as_u64().unwrap(), kept, "{session}: kept runs");
        let ours = s["columns"][0]["median"].as_f64().unwrap();
        assert!(
            (ours - median_ns / 1e9).abs() <= 1e-12 * ours.abs(),
            "{session}: clockpath {ours} s, DuckDB {} s",
            median_ns / 1e9
        );
        assert!((ours - 1.111).abs() < 1e-3, "{session}: {ours}");
    }
    assert!(PER_SESSION_MEDIAN_SQL.contains("read_parquet($path)"));

    // A Parquet file DuckDB wrote itself reads; one without probe_name is refused by name.
    let theirs = d.path().join("theirs.parquet");
    let wrong = d.path().join("wrong.parquet");
    duckdb(
        "duckdb.execute(f\"COPY (SELECT CAST(timestamp_ns AS BIGINT) AS timestamp_ns, CAST(probe_name AS VARCHAR) AS probe_name, \
         CAST(session_id AS VARCHAR) AS session_id, delta_chain_id, CAST(env AS VARCHAR) AS env FROM read_parquet('{sys.argv[1]}')) TO '{sys.argv[2]}' (FORMAT parquet)\")\n\
         duckdb.execute(f\"COPY (SELECT 1 AS timestamp_ns, 'switch_entry' AS probe) TO '{sys.argv[3]}' (FORMAT parquet)\")",
        &[pq.to_str().unwrap(), theirs.to_str().unwrap(), wrong.to_str().unwrap()],
    );
    let out2 = d.path().join("r2");
    ok(&["analyze", "--no-plots", "--out", out2.to_str().unwrap(), theirs.to_str().unwrap()]);
    let theirs_sessions = report(&out2)["chains"][0]["sessions"].clone();
    for (a, b) in sessions.iter().zip(theirs_sessions.as_array().unwrap()) {
        assert_eq!(
            (&a["name"], &a["runs"], &a["columns"][0]["median"]),
            (&b["name"], &b["runs"], &b["columns"][0]["median"])
        );
    }
    let o = clockpath(&["analyze", wrong.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("wrong.parquet") && err.contains("no column `probe_name`"), "{err}");
}

/// Issue 11: the per-session and per-group statistics run on every core; the report is the
/// same, bit for bit, on 1, 2 or 4 threads.
#[test]
fn the_report_does_not_depend_on_the_number_of_threads() {
    let d = tempfile::tempdir().unwrap();
    let sim = simulate(
        d.path(),
        &[
            "--runs",
            "120",
            "--cstates",
            "default,max_cstate=1,max_cstate=2",
            "--governors",
            "performance,powersave,schedutil",
        ],
    );
    let csv = sim.join("sessions.csv");
    let mut reports = Vec::new();
    for threads in ["1", "2", "4"] {
        let out = d.path().join(format!("t{threads}"));
        ok(&["analyze", "--no-plots", "--threads", threads, "--out", out.to_str().unwrap(), csv.to_str().unwrap()]);
        reports.push(std::fs::read_to_string(out.join("report.json")).unwrap());
    }
    let r: Value = serde_json::from_str(&reports[0]).unwrap();
    assert_eq!(r["chains"][0]["sessions"].as_array().unwrap().len(), 18);
    assert_eq!(reports[0], reports[1], "1 vs 2 threads");
    assert_eq!(reports[0], reports[2], "1 vs 4 threads");
    let o = clockpath(&["analyze", "--threads", "0", csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Two trace sets with a reference time: a host and a VM whose clock is 111 ms behind the
/// host's against the same PPS reference. `analyze` pairs them on reference time.
#[test]
fn two_trace_sets_are_aligned_on_reference_time() {
    let d = tempfile::tempdir().unwrap();
    let t0: u64 = 1_700_000_000_000_000_000;
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    let mut jitter = move || {
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        (noise % 60_001) as i64 - 30_000
    };
    // (env, file, clock error against the reference in ns, phase of its hits in ns)
    let sets = [("host", "host.csv", 5_000i64, 0u64), ("vm", "vm.csv", 5_000 - 111_000_000, 37_000_000)];
    let mut files = Vec::new();
    for (env, name, error, phase) in sets {
        let mut text =
            String::from("timestamp_ns,probe_name,session_id,cpu_id,delta_chain_id,chain,env,reference_ns,reference\n");
        // 60 s, a switch every 100 ms: three stage hits 20 µs apart.
        for i in 0..600u64 {
            for (k, stage) in ["switch_entry", "first_read", "baseline_recalc"].iter().enumerate() {
                let r = t0 + phase + i * 100_000_000 + k as u64 * 20_000;
                let ts = (r as i64 + error + jitter()) as u64;
                text.push_str(&format!(
                    "{ts},{stage},{env}-1,0,{},clocksource_switch,{env},{r},pps:/dev/pps0\n",
                    i + 1
                ));
            }
        }
        let f = d.path().join(name);
        std::fs::write(&f, text).unwrap();
        files.push(f);
    }
    let (host, vm) = (files[0].to_str().unwrap(), files[1].to_str().unwrap());
    let out = d.path().join("r");
    let md = ok(&["analyze", "--no-plots", "--out", out.to_str().unwrap(), host, vm]);
    let r = report(&out);
    let offsets = r["clock_offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 1, "{offsets:?}");
    let o = &offsets[0];
    // Host is A: its clock minus the VM's is +111 ms.
    assert_eq!(
        (&o["label"], &o["a"], &o["b"], &o["established"]),
        (&"env".into(), &"host".into(), &"vm".into(), &true.into()),
        "{o}"
    );
    let m = o["median"].as_f64().unwrap();
    assert!((m - 0.111).abs() < 1e-3, "median {m}: {o}");
    assert!(covers(&o["ci"], 0.111) && covers(&o["ci"], m), "{o}");
    assert_eq!((o["ci"]["level"].as_f64(), o["ci"]["resamples"].as_u64()), (Some(0.95), Some(500)));
    // One point per 10 ms of reference time and group: a switch's three hits 20 µs apart are one.
    assert_eq!((o["pairs"].as_u64(), o["bins"].as_u64()), (Some(600), Some(60)), "{o}");
    let (lo, hi) = (o["min_bin_median"].as_f64().unwrap(), o["max_bin_median"].as_f64().unwrap());
    assert!(lo <= m && m <= hi && hi - lo < 1e-3, "{o}");
    assert_eq!(o["reference_a"], serde_json::json!(["pps:/dev/pps0"]));
    assert_eq!(o["reference_b"], serde_json::json!(["pps:/dev/pps0"]));
    assert!(r.get("clock_offset_notes").is_none(), "{r}");
    assert!(md.contains("## Clock offsets on reference time") && md.contains("modulo one second"), "{md}");
    assert!(md.contains("| host | vm |"), "{md}");
    // The chains are analysed as before: `reference` is a label like any other.
    assert_eq!(r["chains"][0]["sessions"].as_array().unwrap().len(), 2);

    // A narrower window, as a duration.
    let out2 = d.path().join("r2");
    ok(&["analyze", "--no-plots", "--align-within", "50ms", "--out", out2.to_str().unwrap(), host, vm]);
    assert_eq!(report(&out2)["clock_offsets"][0]["within"], 0.05);
    // A label the hits do not have, and a name that is no label.
    let o = clockpath(&["analyze", "--no-plots", "--align", "governor", "--out", out2.to_str().unwrap(), host, vm]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "--align governor: no hit has the label `governor` (the hits with reference_ns have: env, reference)"
        ),
        "{err}"
    );
    let o = clockpath(&["analyze", "--align", "no label", host]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("a label name is [a-zA-Z_][a-zA-Z0-9_]*"), "{err}");
    let o = clockpath(&["analyze", "--align-within", "soon", host]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("neither a number of seconds nor a duration"));

    // Without a reference time: an empty list, and no section.
    let plain = d.path().join("plain.csv");
    std::fs::write(
        &plain,
        "timestamp_ns,probe_name,delta_chain_id,env\n1,switch_entry,1,host\n2,first_read,1,host\n3,baseline_recalc,1,host\n",
    )
    .unwrap();
    let md = ok(&["analyze", "--no-plots", "--out", out2.to_str().unwrap(), plain.to_str().unwrap()]);
    assert_eq!(report(&out2)["clock_offsets"], serde_json::json!([]));
    assert!(!md.contains("Clock offsets"), "{md}");
}

/// Issue 30, items 1, 4 and 5, through `analyze`: a group of sessions weighs each session by
/// the runs it saw (not by the runs its reservoir kept), counts them all in `seen`, and has
/// the session as the unit of its interval; `--outlier-spread mad` rejects a far run the SD
/// rule cannot see in a small session.
#[test]
fn groups_weigh_sessions_by_what_they_saw_and_take_the_session_as_unit() {
    let d = tempfile::tempdir().unwrap();
    let trace = d.path().join("capped.csv");
    let mut text = String::from("timestamp_ns,probe_name,session_id,delta_chain_id,chain,env\n");
    let mut t = 1_000_000u64;
    let mut id = 0u64;
    // s1: 2 000 runs at 19.5–20.5 µs; s2: 500 runs at 29.5–30.5 µs; one env.
    for (session, runs, base) in [("s1", 2_000u64, 19_500u64), ("s2", 500, 29_500)] {
        for i in 0..runs {
            id += 1;
            let s = base + (i * 7919) % 1_000;
            text.push_str(&format!(
                "{t},switch_entry,{session},{id},clocksource_switch,host\n{},first_read,{session},{id},clocksource_switch,host\n\
                 {},baseline_recalc,{session},{id},clocksource_switch,host\n",
                t + s,
                t + s + 1_000
            ));
            t += 100_000;
        }
    }
    std::fs::write(&trace, text).unwrap();
    let out = d.path().join("r");
    ok(&[
        "analyze",
        "--no-plots",
        "--reservoir",
        "500",
        "--sigma",
        "1000",
        "--out",
        out.to_str().unwrap(),
        trace.to_str().unwrap(),
    ]);
    let r = report(&out);
    let host = &r["chains"][0]["groups"]["env"][0];
    assert_eq!(host["name"], "host", "{host}");
    assert_eq!(host["seen"], 2_500, "every run seen counts: {host}");
    assert_eq!(host["runs"], 1_000, "500 kept per session: {host}");
    assert_eq!((host["sessions"].as_u64(), host["unit"].as_str()), (Some(2), Some("session")), "{host}");
    assert!(host["between_session_share"].as_f64().unwrap() > 0.9, "{host}");
    // The median of the 2 500 runs seen lies in s1's runs (its 62.5th percentile ≈ 20.125 µs),
    // not between the sessions (25 µs) as the 1 000 kept runs alone would put it.
    let c = &host["columns"][0];
    let m = c["median"].as_f64().unwrap();
    assert!((m - 20.125e-6).abs() < 0.05e-6, "group median {m}: {c}");
    // Two sessions that disagree by 10 µs: the interval says how little two sessions tell.
    let (lo, hi) = (c["ci"]["lower"].as_f64().unwrap(), c["ci"]["upper"].as_f64().unwrap());
    assert!(lo < 20e-6 && hi > 30e-6, "[{lo}, {hi}]");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| env | sessions | n |"), "{md}");

    // Eight runs near 20 µs and one at 1 ms in one session: ±3 SDs cannot reject it (n ≤ k²),
    // ±3 MADs does.
    let small = d.path().join("small.csv");
    let mut text = String::from("timestamp_ns,probe_name,session_id,delta_chain_id\n");
    for (i, s) in [20_000u64, 20_100, 20_200, 19_900, 19_800, 20_050, 19_950, 20_150, 1_000_000].iter().enumerate() {
        let t = 1_000_000 + i as u64 * 10_000_000;
        text.push_str(&format!(
            "{t},switch_entry,x,{i}\n{},first_read,x,{i}\n{},baseline_recalc,x,{i}\n",
            t + s,
            t + s + 1
        ));
    }
    std::fs::write(&small, text).unwrap();
    let rejected = |spread: &str| -> u64 {
        let out = d.path().join(format!("small-{spread}"));
        ok(&[
            "analyze",
            "--no-plots",
            "--outlier-spread",
            spread,
            "--out",
            out.to_str().unwrap(),
            small.to_str().unwrap(),
        ]);
        let r = report(&out);
        assert_eq!(r["spread"], spread, "the report names the rule's σ");
        r["chains"][0]["sessions"][0]["rejected"].as_u64().unwrap()
    };
    assert_eq!((rejected("sd"), rejected("mad")), (0, 1));
    let o = clockpath(&["analyze", "--outlier-spread", "iqr", small.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}
