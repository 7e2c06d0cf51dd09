//! A real Prometheus server for tests: Debian's `prometheus` on loopback, scraping given
//! targets every second, queried through its HTTP API. Stopped (and its data removed) on drop.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
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
        let bin = require_tool("prometheus", "prometheus");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rule_files: String = rules.iter().map(|r| format!("  - '{}'\n", r.display())).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{}scrape_configs:\n  - job_name: clockpath\n    static_configs:\n      - targets: [{}]\n",
            if rule_files.is_empty() { String::new() } else { format!("rule_files:\n{rule_files}") },
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

    /// Run an instant query; returns the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let body = ureq::get(&url)
            .query("query", promql)
            .call()
            .unwrap_or_else(|e| panic!("query `{promql}` failed: {e}"))
            .into_string()
            .expect("query body");
        let v: Value = serde_json::from_str(&body).expect("query JSON");
        assert_eq!(v["status"], "success", "query `{promql}`: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// A range query over the last `secs` seconds (step `step_secs`), as Grafana runs a
    /// panel's query; returns the `data.result` matrix.
    pub fn query_range(&self, promql: &str, secs: u64, step_secs: u64) -> Vec<Value> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let url = format!("http://127.0.0.1:{}/api/v1/query_range", self.port);
        let body = ureq::get(&url)
            .query("query", promql)
            // Whole steps back from one step ahead of now (`now` is truncated), so the last
            // step is after every sample written so far: a series that appeared in the last
            // second is not missed.
            .query("start", &(now + step_secs - (secs.div_ceil(step_secs) + 1) * step_secs).to_string())
            .query("end", &(now + step_secs).to_string())
            .query("step", &step_secs.to_string())
            .call()
            .unwrap_or_else(|e| panic!("range query `{promql}` failed: {e}"))
            .into_string()
            .expect("range query body");
        let v: Value = serde_json::from_str(&body).expect("range query JSON");
        assert_eq!(v["status"], "success", "range query `{promql}`: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Exemplars of the series `promql` selects over the last `secs` seconds: the `data` array
    /// of /api/v1/query_exemplars (one entry per series, each with its `exemplars`).
    pub fn exemplars(&self, promql: &str, secs: u64) -> Vec<Value> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let url = format!("http://127.0.0.1:{}/api/v1/query_exemplars", self.port);
        let body = ureq::get(&url)
            .query("query", promql)
            .query("start", &(now - secs).to_string())
            .query("end", &(now + 1).to_string())
            .call()
            .unwrap_or_else(|e| panic!("exemplar query `{promql}` failed: {e}"))
            .into_string()
            .expect("exemplar body");
        let v: Value = serde_json::from_str(&body).expect("exemplar JSON");
        assert_eq!(v["status"], "success", "exemplar query `{promql}`: {v}");
        v["data"].as_array().cloned().unwrap_or_default()
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
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.value(promql);
            if let Some(v) = last
                && ok(v)
            {
                return v;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("`{promql}` never satisfied the condition within {timeout:?}; last value {last:?}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
