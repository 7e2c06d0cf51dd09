//! `[otlp]`: where traces go and how they are sampled, and the checks of that section
//! together with the standard `OTEL_*` variables it combines with (resolved in [`settings`]).

pub mod settings;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigIssue, Loaded, Origin};

/// `[otlp]` (the standard `OTEL_*` variables take precedence; see [`settings`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Collector URL; empty: off (unless an `OTEL_EXPORTER_OTLP_*ENDPOINT` is set).
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: String,
    pub service_name: String,
    /// Extra resource attributes.
    pub resource: BTreeMap<String, String>,
    pub timeout_ms: u64,
    /// Sampled chains waiting for export, at most.
    pub queue_chains: usize,
    /// Chains per export request, at most.
    pub batch_chains: usize,
    /// Longest wait before a partial batch is sent.
    pub flush_interval_ms: u64,
    /// PEM CA bundle that verifies an https collector ("" : the system's roots).
    pub certificate: String,
    /// PEM client certificate and key, for a collector that requires mutual TLS.
    pub client_certificate: String,
    pub client_key: String,
    pub sampling: SamplingConfig,
}

/// `[otlp.sampling]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Traces per second per chain (token bucket rate); 0 keeps only the always-kept ones.
    pub per_chain_per_second: f64,
    /// Token bucket size.
    pub burst: u32,
    /// Always keep instances rejected as outliers by the statistics window.
    pub keep_outliers: bool,
    /// Always keep instances with a segment slower than its p99 over the quantile window.
    pub keep_slower_than_p99: bool,
}

/// Check `[otlp]` and the `OTEL_*` variables it would combine with.
pub fn validate(loaded: &Loaded, issues: &mut Vec<ConfigIssue>) {
    let c = &loaded.config.otlp;
    if c.timeout_ms == 0 {
        issues.push(loaded.issue("otlp.timeout_ms", "must be at least 1 ms"));
    }
    if c.queue_chains == 0 {
        issues.push(loaded.issue("otlp.queue_chains", "must hold at least 1 chain"));
    }
    if c.batch_chains == 0 || c.batch_chains > c.queue_chains.max(1) {
        issues.push(loaded.issue(
            "otlp.batch_chains",
            format!("must be between 1 and otlp.queue_chains ({}); got {}", c.queue_chains, c.batch_chains),
        ));
    }
    if c.flush_interval_ms == 0 {
        issues.push(loaded.issue("otlp.flush_interval_ms", "must be at least 1 ms"));
    }
    let s = &c.sampling;
    if !(s.per_chain_per_second.is_finite() && s.per_chain_per_second >= 0.0) {
        issues.push(loaded.issue("otlp.sampling.per_chain_per_second", "must be a finite number >= 0"));
    }
    if s.burst == 0 {
        issues.push(loaded.issue("otlp.sampling.burst", "must be at least 1"));
    }
    if c.service_name.trim().is_empty() {
        issues.push(loaded.issue("otlp.service_name", "must not be empty"));
    }
    for k in c.resource.keys() {
        if k.trim().is_empty() {
            issues.push(loaded.issue("otlp.resource", "a resource attribute name must not be empty"));
        }
    }
    if let Err(problems) = settings::Settings::resolve(c, &settings::process_env) {
        for p in problems {
            issues.push(match p.variable {
                Some(var) => ConfigIssue { origin: Origin::Variable(var), key: String::new(), why: p.why },
                None => loaded.issue(p.key, p.why),
            });
        }
    }
}
