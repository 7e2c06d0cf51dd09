//! The Prometheus rules (issue 13): rules/clockpath.rules.yml passes `promtool check rules`, its
//! unit tests (rules/clockpath.rules.test.yml, every alert firing and not, the recording rules'
//! values) pass `promtool test rules`, and every rule selects metrics clockpath exposes.

use crate::names;

use std::process::Command;

use clockpath_tests::*;
use serde_json::Value;

fn promtool(args: &[&str]) {
    let bin = require_tool("promtool", "prometheus");
    let out = Command::new(bin).args(args).current_dir(workspace()).output().expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rules_pass_promtool_check() {
    promtool(&["check", "rules", "rules/clockpath.rules.yml"]);
}

#[test]
fn rules_unit_tests_pass() {
    promtool(&["test", "rules", "rules/clockpath.rules.test.yml"]);
}

/// The rules file as JSON (Debian's python3-yaml, which scripts/setup.sh installs).
fn rules() -> Value {
    let py = require_tool("python3", "python3");
    let out = Command::new(py)
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"])
        .arg(workspace().join("rules/clockpath.rules.yml"))
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("rules as JSON")
}

#[test]
fn every_rule_selects_exposed_metrics_and_records_by_level_metric_operations() {
    let exposed = names::exposed();
    let recorded = names::recorded();
    let doc = rules();
    let mut problems = Vec::new();
    let mut alerts = 0;
    for rule in doc["groups"].as_array().expect("groups").iter().flat_map(|g| g["rules"].as_array().expect("rules")) {
        let expr = rule["expr"].as_str().expect("expr");
        let name = rule["record"].as_str().or(rule["alert"].as_str()).expect("record or alert");
        if let Some(r) = rule["record"].as_str() {
            let parts: Vec<&str> = r.split(':').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
                problems.push(format!("{r}: not level:metric:operations"));
            }
        } else {
            alerts += 1;
            for key in ["summary", "description"] {
                if rule["annotations"][key].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("{name}: no {key} annotation"));
                }
            }
            if !["critical", "warning", "info"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")) {
                problems.push(format!("{name}: severity {}", rule["labels"]["severity"]));
            }
        }
        if !names::variables_in(expr).is_empty() {
            problems.push(format!("{name}: a template variable in {expr}"));
        }
        for m in names::used_by(expr) {
            if !exposed.contains(&m) && !recorded.contains(&m) && m != "up" {
                problems.push(format!("{name}: {m} is neither in names.rs nor a recording rule"));
            }
        }
    }
    assert_eq!(recorded.len(), 4, "{recorded:?}");
    assert_eq!(alerts, 8);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
