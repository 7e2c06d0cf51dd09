//! The Helm chart, linted and rendered offline by Helm's own Go SDK (helm-python-sdk, installed
//! by scripts/setup.sh): what it deploys, that the configuration it ships is one clockpath
//! accepts, that its dashboards and PrometheusRule are the repository's, and that bad values
//! are refused with the key named.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use clockpath_tests::*;
use serde_json::Value;

fn helm_python() -> PathBuf {
    let venv = std::env::var_os("CLOCKPATH_HELM_VENV")
        .map_or_else(|| PathBuf::from("/opt/clockpath-test/helm-venv"), PathBuf::from);
    let py = venv.join("bin/python");
    assert!(py.exists(), "{} is missing: run scripts/setup.sh (it installs helm-python-sdk)", py.display());
    py
}

/// Lint and render with `values`; the script's JSON answer.
fn render(values: &Value) -> Value {
    let chart = workspace().join("helm/clockpath");
    let out = Command::new(helm_python())
        .arg(workspace().join("tests/helm/render.py"))
        .arg(&chart)
        .arg(values.to_string())
        .output()
        .expect("run tests/helm/render.py");
    assert!(out.status.success(), "render.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("render.py output: {e}\n{}", String::from_utf8_lossy(&out.stdout)))
}

fn objects(r: &Value) -> Vec<&Value> {
    assert!(r.get("error").is_none(), "rendering failed: {}", r["error"]);
    assert_eq!(r["lint"].as_array().map(Vec::len), Some(0), "helm lint --strict: {}", r["lint"]);
    r["objects"].as_array().expect("objects").iter().collect()
}

fn kind<'a>(objs: &[&'a Value], k: &str) -> Vec<&'a Value> {
    objs.iter().copied().filter(|o| o["kind"] == k).collect()
}

fn env_of(container: &Value) -> Vec<(String, Value)> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("name").to_string(), e.clone()))
        .collect()
}

/// The rendered clockpath.toml must be a configuration clockpath accepts.
fn check_config(objs: &[&Value]) -> String {
    let cm =
        kind(objs, "ConfigMap").into_iter().find(|c| c["data"].get("clockpath.toml").is_some()).expect("config map");
    let toml = cm["data"]["clockpath.toml"].as_str().expect("clockpath.toml").to_string();
    let (_dir, path) = config_file(&toml);
    let out = clockpath(&["config", "--config", path.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "clockpath refuses the chart's config:\n{toml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn default_values_render_a_node_daemonset_clockpath_accepts() {
    let r = render(&serde_json::json!({}));
    let objs = objects(&r);
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().expect("kind")).collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    for k in ["ConfigMap", "DaemonSet", "Service", "ServiceAccount"] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    assert!(kind(&objs, "ServiceMonitor").is_empty() && kind(&objs, "Role").is_empty());
    check_config(&objs);

    let ds = kind(&objs, "DaemonSet")[0];
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["args"], serde_json::json!(["run", "--config", "/etc/clockpath/clockpath.toml"]));
    assert_eq!(c["securityContext"]["privileged"], true);
    assert_eq!(c["ports"][0]["containerPort"], 39111);
    let env = env_of(c);
    let listen = env.iter().find(|(n, _)| n == "CLOCKPATH_HTTP__LISTEN").expect("listen address");
    assert_eq!(listen.1["value"], "0.0.0.0:39111");
    assert!(env.iter().any(|(n, e)| n == "CLOCKPATH_ENVIRONMENT__LABELS__NODE" && e["value"] == "$(NODE_NAME)"));
    assert!(!env.iter().any(|(n, _)| n.starts_with("OTEL_")), "no OTLP without an endpoint");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    // The probes need the host's tracefs and BTF; the config comes from the ConfigMap.
    let mounts: Vec<&str> =
        c["volumeMounts"].as_array().expect("mounts").iter().map(|m| m["mountPath"].as_str().expect("path")).collect();
    for m in ["/etc/clockpath", "/sys/kernel/tracing", "/sys/kernel/btf"] {
        assert!(mounts.contains(&m), "{m} not mounted: {mounts:?}");
    }
    assert_eq!(pod["tolerations"][0]["operator"], "Exists", "runs on tainted nodes too");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(
        ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"].as_str().is_some_and(|s| s.len() == 64)
    );
    let svc = kind(&objs, "Service")[0];
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["ports"][0]["port"], 39111);
    assert_eq!(svc["spec"]["selector"], ds["spec"]["selector"]["matchLabels"]);
}

#[test]
fn overrides_reach_the_exporter() {
    let r = render(&serde_json::json!({
        "port": 39200,
        "config": "[chains.hrtimer]\nenabled = false\n[windows]\ninterval_secs = 30\nsigma = 2.5\n",
        "environment": {"env": "vm", "nodeLabel": ""},
        "otlp": {"endpoint": "http://otel-collector:4318", "protocol": "http/protobuf", "resourceAttributes": "k8s.cluster.name=lab"},
        "serviceMonitor": {"enabled": true, "labels": {"release": "kube-prometheus"}},
        "grafanaDashboard": {"enabled": true},
        "rbac": {"openshiftSCC": true},
        "privileged": false,
    }));
    let objs = objects(&r);
    let effective = check_config(&objs);
    assert!(effective.contains("interval_secs = 30") && effective.contains("sigma = 2.5"), "{effective}");
    let ds = kind(&objs, "DaemonSet")[0];
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let env = env_of(c);
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, e)| e["value"].clone());
    assert_eq!(get("CLOCKPATH_HTTP__LISTEN"), Some(Value::from("0.0.0.0:39200")));
    assert_eq!(get("CLOCKPATH_ENVIRONMENT__ENV"), Some(Value::from("vm")));
    assert_eq!(get("OTEL_EXPORTER_OTLP_ENDPOINT"), Some(Value::from("http://otel-collector:4318")));
    assert_eq!(get("OTEL_EXPORTER_OTLP_PROTOCOL"), Some(Value::from("http/protobuf")));
    assert_eq!(get("OTEL_RESOURCE_ATTRIBUTES"), Some(Value::from("k8s.cluster.name=lab")));
    assert!(get("CLOCKPATH_ENVIRONMENT__LABELS__NODE").is_none());
    assert_eq!(c["securityContext"]["privileged"], false);
    // Exactly the set tests/tests/privileges.rs runs the exporter with as a non-root user.
    assert_eq!(c["securityContext"]["capabilities"]["add"], serde_json::json!(["BPF", "PERFMON", "SYSLOG"]));
    assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(c["ports"][0]["containerPort"], 39200);

    let sm = kind(&objs, "ServiceMonitor");
    assert_eq!(sm.len(), 1);
    assert_eq!(sm[0]["metadata"]["labels"]["release"], "kube-prometheus");
    assert_eq!(sm[0]["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(kind(&objs, "Role").len(), 1);
    assert_eq!(kind(&objs, "RoleBinding").len(), 1);
    check_dashboards(&objs);
    assert!(kind(&objs, "PrometheusRule").is_empty(), "no PrometheusRule unless prometheusRule.enabled");

    // The same endpoint variables as the chart sets, on the real binary, are accepted.
    let (_dir, path) = config_file("");
    let out = Command::new(clockpath_bin())
        .args(["config", "--config", path.to_str().expect("utf-8 path")])
        .env("CLOCKPATH_HTTP__LISTEN", "0.0.0.0:39200")
        .env("CLOCKPATH_ENVIRONMENT__ENV", "vm")
        .env("CLOCKPATH_ENVIRONMENT__LABELS__NODE", "node-a")
        .output()
        .expect("clockpath config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("node = \"node-a\"") && text.contains("0.0.0.0:39200"), "{text}");
}

/// The dashboards ConfigMap carries every dashboards/*.json, each identical to its source.
fn check_dashboards(objs: &[&Value]) {
    let dash = kind(objs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a ConfigMap labelled for Grafana's sidecar");
    let sources: Vec<PathBuf> = std::fs::read_dir(workspace().join("dashboards"))
        .expect("dashboards/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert_eq!(dash["data"].as_object().map(|d| d.len()), Some(sources.len()), "{}", dash["data"]);
    for src in sources {
        let name = src.file_name().and_then(|n| n.to_str()).expect("utf-8 name");
        let shipped = std::fs::read_to_string(&src).expect("dashboard file");
        assert_eq!(
            dash["data"][name].as_str().map(str::trim_end),
            Some(shipped.trim_end()),
            "the chart ships dashboards/{name}"
        );
    }
}

/// A YAML file as JSON, parsed by PyYAML (the helm venv sees Debian's python3-yaml).
fn yaml_file(path: &Path) -> Value {
    let out = Command::new(helm_python())
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"])
        .arg(path)
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("YAML as JSON")
}

#[test]
fn the_chart_ships_both_dashboards_and_the_rules_identical_to_their_sources() {
    // The chart's files are its sources' (helm/clockpath/dashboards/ and rules/ link them).
    for (copy, source) in [
        ("helm/clockpath/dashboards/clockpath.json", "dashboards/clockpath.json"),
        ("helm/clockpath/dashboards/clockpath-fleet.json", "dashboards/clockpath-fleet.json"),
        ("helm/clockpath/rules/clockpath.rules.yml", "rules/clockpath.rules.yml"),
    ] {
        let read = |p: &str| std::fs::read(workspace().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(read(copy) == read(source), "{copy} differs from {source}");
    }

    let r = render(&serde_json::json!({
        "grafanaDashboard": {"enabled": true},
        "prometheusRule": {"enabled": true, "labels": {"release": "kube-prometheus"}},
    }));
    let objs = objects(&r);
    check_dashboards(&objs);
    let rules = kind(&objs, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    let rule = rules[0];
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], "monitoring", "the release's namespace by default");
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus");
    assert_eq!(rule["metadata"]["labels"]["app.kubernetes.io/name"], "clockpath");
    let source = yaml_file(&workspace().join("rules/clockpath.rules.yml"));
    assert!(source["groups"].as_array().is_some_and(|g| g.len() == 2), "{}", source["groups"]);
    assert_eq!(rule["spec"]["groups"], source["groups"], "the PrometheusRule's groups are rules/clockpath.rules.yml's");
    assert_eq!(rule["spec"].as_object().map(|s| s.len()), Some(1), "spec holds only the groups");
    let notes = r["notes"].as_str().expect("notes");
    assert!(notes.contains("PrometheusRule monitoring/cp-clockpath"), "{notes}");

    let r = render(&serde_json::json!({"prometheusRule": {"enabled": true, "namespace": "observability"}}));
    let objs = objects(&r);
    assert_eq!(kind(&objs, "PrometheusRule")[0]["metadata"]["namespace"], "observability");
    assert!(kind(&objs, "ConfigMap").iter().all(|c| c["data"].get("clockpath.json").is_none()), "no dashboards");
}

#[test]
fn a_web_config_secret_and_otlp_tls_are_mounted_and_probes_and_scrapes_use_https() {
    let r = render(&serde_json::json!({
        "webConfig": {"secret": "clockpath-web", "tls": true},
        "otlp": {"endpoint": "https://collector:4317", "tlsSecret": "collector-tls", "clientCertificate": true},
        "serviceMonitor": {"enabled": true, "tlsConfig": {"serverName": "clockpath"}, "basicAuth": {"username": {"name": "s", "key": "u"}}},
    }));
    let objs = objects(&r);
    let ds = kind(&objs, "DaemonSet")[0];
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let env: std::collections::BTreeMap<String, Value> = env_of(c).into_iter().collect();
    assert_eq!(env["CLOCKPATH_HTTP__WEB_CONFIG"]["value"], "/etc/clockpath-web/web.yml");
    assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"], "https://collector:4317");
    assert_eq!(env["OTEL_EXPORTER_OTLP_CERTIFICATE"]["value"], "/etc/clockpath-otlp/ca.crt");
    assert_eq!(env["OTEL_EXPORTER_OTLP_CLIENT_KEY"]["value"], "/etc/clockpath-otlp/tls.key");
    assert_eq!(c["livenessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    let secrets: Vec<&str> = ds["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert_eq!(secrets, ["clockpath-web", "collector-tls"]);
    let ep = &kind(&objs, "ServiceMonitor")[0]["spec"]["endpoints"][0];
    assert_eq!(ep["scheme"], "https");
    assert_eq!(ep["tlsConfig"]["serverName"], "clockpath");
    assert_eq!(ep["basicAuth"]["username"]["key"], "u");
    // Without them: plain HTTP probes and no secret volumes.
    let r = render(&serde_json::json!({}));
    let objs = objects(&r);
    let c = &kind(&objs, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["scheme"], "HTTP");
    assert!(env_of(c).iter().all(|(n, _)| n != "CLOCKPATH_HTTP__WEB_CONFIG"));
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    for (values, expect) in [
        (serde_json::json!({"environment": {"env": "bare-metal"}}), "/environment/env"),
        (serde_json::json!({"otlp": {"endpoint": "grpc://collector:4317"}}), "/otlp/endpoint"),
        (serde_json::json!({"webConfig": {"tls": "yes"}}), "/webConfig/tls"),
        (serde_json::json!({"otlp": {"protocol": "http/json"}}), "/otlp/protocol"),
        (serde_json::json!({"port": 70000}), "/port"),
        (serde_json::json!({"prometheusRule": {"enabled": "yes"}}), "/prometheusRule/enabled"),
        (serde_json::json!({"prometheusRule": {"namespace": "Not_A_Namespace"}}), "/prometheusRule/namespace"),
        (serde_json::json!({"config": {"windows": {"interval_secs": 30}}}), "/config"),
        (
            serde_json::json!({"serviceMonitor": {"enabled": true}, "service": {"enabled": false}}),
            "serviceMonitor.enabled needs service.enabled",
        ),
    ] {
        let r = render(&values);
        let err = r["error"].as_str().unwrap_or_else(|| panic!("{values} was accepted"));
        assert!(err.contains(expect), "{values}: error does not name {expect}: {err}");
    }
}
