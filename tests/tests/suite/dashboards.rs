//! The Grafana dashboards (issue 13), offline. dashboards/generate.py builds them with Grafana's
//! Foundation SDK (grafana-foundation-sdk, installed by scripts/setup.sh); tests/dashboards/
//! check.py regenerates them byte for byte, round-trips each through the SDK's Dashboard model
//! failing on any key it drops or changes, checks ids, titles, the datasource variable and
//! variable references, and prints every query. Here: the check passes and catches a dropped
//! key, and every query selects metrics clockpath exposes (or the recording rules make), with
//! only the variables the fleet test substitutes.

use crate::names;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use clockpath_tests::*;
use serde_json::Value;

/// The dashboards and the variables each defines.
const DASHBOARDS: &[(&str, &[&str])] = &[
    ("clockpath.json", &["datasource", "env", "instance", "chain", "segment"]),
    ("clockpath-fleet.json", &["datasource", "env", "instance"]),
];
/// Grafana's own variables the queries may use.
const BUILTIN: &[&str] = &["__rate_interval", "__interval"];

fn grafana_python() -> PathBuf {
    let venv = std::env::var_os("CLOCKPATH_GRAFANA_VENV")
        .map_or_else(|| PathBuf::from("/opt/clockpath-test/grafana-venv"), PathBuf::from);
    let py = venv.join("bin/python");
    assert!(py.exists(), "{} is missing: run scripts/setup.sh (it installs grafana-foundation-sdk)", py.display());
    py
}

/// Run check.py on a directory of dashboards (and their generate.py).
fn check(dir: &Path) -> Output {
    Command::new(grafana_python())
        .arg(workspace().join("tests/dashboards/check.py"))
        .arg(dir)
        .output()
        .expect("run tests/dashboards/check.py")
}

/// check.py's queries on the committed dashboards, asserting it passes.
fn queries() -> Vec<Value> {
    let out = check(&workspace().join("dashboards"));
    assert!(out.status.success(), "dashboards fail the schema check:\n{}", String::from_utf8_lossy(&out.stderr));
    let q: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check.py output: {e}\n{}", String::from_utf8_lossy(&out.stdout)));
    assert!(!q.is_empty(), "no queries");
    q
}

fn dashboard(name: &str) -> Value {
    let path = workspace().join("dashboards").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn dashboards_pass_the_grafana_schema_round_trip_and_match_their_generator() {
    let q = queries();
    for (name, vars) in DASHBOARDS {
        let d = dashboard(name);
        let defined: Vec<&str> = d["templating"]["list"]
            .as_array()
            .expect("variables")
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(&defined, vars, "{name}: variables");
        let panels: Vec<&Value> =
            d["panels"].as_array().expect("panels").iter().filter(|p| p["type"] != "row").collect();
        let ids: BTreeSet<i64> =
            d["panels"].as_array().unwrap().iter().map(|p| p["id"].as_i64().expect("id")).collect();
        assert_eq!(ids.len(), d["panels"].as_array().unwrap().len(), "{name}: panel ids are unique");
        for p in &panels {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name} / {}: datasource", p["title"]);
            let listed = q.iter().filter(|x| x["dashboard"] == *name && x["panel"] == p["title"]).count();
            assert!(listed > 0, "{name} / {}: no query listed", p["title"]);
        }
        let listed_vars = q.iter().filter(|x| x["dashboard"] == *name && x["kind"] == "variable").count();
        assert_eq!(listed_vars, vars.len() - 1, "{name}: every query variable is listed (not the datasource one)");
    }
    assert_eq!(dashboard("clockpath.json")["uid"], "clockpath-time-path", "the offset dashboard keeps its uid");
}

#[test]
fn a_key_the_schema_drops_or_a_hand_edit_fails_the_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["generate.py", "clockpath.json", "clockpath-fleet.json"] {
        std::fs::copy(workspace().join("dashboards").join(f), dir.path().join(f)).expect("copy");
    }
    // A variable's `definition`: Grafana writes and accepts it; the SDK's model has no such key.
    let path = dir.path().join("clockpath-fleet.json");
    let mut d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    d["templating"]["list"][1]["definition"] = Value::from("label_values(clockpath_environment_info, env)");
    std::fs::write(&path, serde_json::to_string_pretty(&d).unwrap()).unwrap();
    let out = check(dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a dropped key passed:\n{err}");
    assert!(err.contains("clockpath-fleet.json: /templating/list/1/definition: dropped"), "{err}");
    assert!(err.contains("clockpath-fleet.json: differs from what dashboards/generate.py writes"), "{err}");
    assert!(!err.contains("clockpath.json:"), "the untouched dashboard passes:\n{err}");
}

#[test]
fn every_query_selects_metrics_clockpath_exposes_with_the_shared_variables_only() {
    let exposed = names::exposed();
    let recorded: BTreeSet<String> = names::recorded().into_iter().collect();
    let mut problems = Vec::new();
    for q in queries() {
        let (dash, panel, expr) =
            (q["dashboard"].as_str().unwrap(), q["panel"].as_str().unwrap(), q["expr"].as_str().unwrap());
        let vars: &[&str] = DASHBOARDS.iter().find(|(n, _)| *n == dash).map(|(_, v)| *v).expect("known dashboard");
        let used = names::used_by(expr);
        if used.is_empty() {
            problems.push(format!("{dash} / {panel}: selects no metric: {expr}"));
        }
        for m in used {
            if !exposed.contains(&m) && !recorded.contains(&m) && m != "up" {
                problems.push(format!("{dash} / {panel}: {m} is neither in names.rs nor a recording rule"));
            }
        }
        for v in names::variables_in(expr) {
            if !vars.contains(&v.as_str()) && !BUILTIN.contains(&v.as_str()) {
                problems.push(format!("{dash} / {panel}: references ${v}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
