//! A real Prometheus server for tests: Debian's `prometheus` on loopback, scraping given
//! targets every second, queried through its HTTP API. Stopped (and its data removed) on drop.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{free_port, require_tool};

pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Start Prometheus scraping `targets` (host:port) as job `clockpath` every second.
    pub fn start(targets: &[String]) -> Prometheus {
        Self::start_with(targets, &[])
    }

    /// Same, with extra command-line flags (e.g. `--enable-feature=exemplar-storage`).
    pub fn start_with(targets: &[String], flags: &[&str]) -> Prometheus {
        Self::start_with_rules(targets, &[], flags)
    }

    /// Same, evaluating the rule files `rules` every second.
    pub fn start_with_rules(targets: &[String], rules: &[PathBuf], flags: &[&str]) -> Prometheus {
        Self::start_full(targets, rules, flags, "")
    }

    /// Same, with `job` (YAML keys at the scrape job's level, e.g. `scheme: https` and a
    /// `tls_config`) added to the clockpath job.
    pub fn start_full(targets: &[String], rules: &[PathBuf], flags: &[&str], job: &str) -> Prometheus {
        let bin = require_tool("prometheus", "prometheus");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rule_files: String = rules.iter().map(|r| format!("  - '{}'\n", r.display())).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{}scrape_configs:\n  - job_name: clockpath\n{}    static_configs:\n      - targets: [{}]\n",
            if rule_files.is_empty() { String::new() } else { format!("rule_files:\n{rule_files}") },
            job.lines().map(|l| format!("    {l}\n")).collect::<String>(),
            list.join(", ")
        );
        let cfg: PathBuf = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).expect("write prometheus.yml");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { child, port, _dir: dir };
        crate::wait_for(&format!("prometheus to become ready on port {port}"), Duration::from_secs(30), || {
            ureq::get(&format!("http://127.0.0.1:{port}/-/ready")).call().ok().map(|_| ())
        });
        p
    }

    /// GET `/api/v1/{endpoint}` with `params`; the answer's `data`, after checking the status.
    fn api(&self, endpoint: &str, params: &[(&str, String)]) -> Value {
        let url = format!("http://127.0.0.1:{}/api/v1/{endpoint}", self.port);
        let mut req = ureq::get(&url);
        for (k, v) in params {
            req = req.query(k, v);
        }
        let what = format!("{endpoint} {params:?}");
        let body = req
            .call()
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
            .into_string()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        assert_eq!(v["status"], "success", "{what}: {v}");
        v["data"].clone()
    }

    /// Run an instant query; returns the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        self.api("query", &[("query", promql.to_string())])["result"].as_array().cloned().unwrap_or_default()
    }

    /// A range query over the last `secs` seconds (step `step_secs`), as Grafana runs a
    /// panel's query; returns the `data.result` matrix.
    pub fn query_range(&self, promql: &str, secs: u64, step_secs: u64) -> Vec<Value> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        // Whole steps back from one step ahead of now (`now` is truncated), so the last step is
        // after every sample written so far: a series that appeared in the last second is not
        // missed.
        let end = now + step_secs;
        let params = [
            ("query", promql.to_string()),
            ("start", (end - (secs.div_ceil(step_secs) + 1) * step_secs).to_string()),
            ("end", end.to_string()),
            ("step", step_secs.to_string()),
        ];
        self.api("query_range", &params)["result"].as_array().cloned().unwrap_or_default()
    }

    /// Exemplars of the series `promql` selects over the last `secs` seconds: the `data` array
    /// of /api/v1/query_exemplars (one entry per series, each with its `exemplars`).
    pub fn exemplars(&self, promql: &str, secs: u64) -> Vec<Value> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let params =
            [("query", promql.to_string()), ("start", (now - secs).to_string()), ("end", (now + 1).to_string())];
        self.api("query_exemplars", &params).as_array().cloned().unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT`, its HTTP API's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The first sample's value of an instant query, if any.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql);
        let v = r.first()?["value"][1].as_str()?.to_string();
        v.parse().ok()
    }

    /// Wait until `promql` returns a value satisfying `ok`, or panic after `timeout`.
    pub fn wait_for(&self, promql: &str, timeout: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let last = std::cell::Cell::new(None);
        crate::wait_for_or(
            &format!("`{promql}` to satisfy the condition"),
            timeout,
            || {
                let v = self.value(promql);
                last.set(v);
                v.filter(|v| ok(*v))
            },
            || format!("; last value {:?}", last.get()),
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
