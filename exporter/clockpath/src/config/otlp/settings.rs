//! The effective OTLP settings: `[otlp]` with the standard `OTEL_*` variables over it, resolved
//! once, so the log line at start says exactly where traces go and why.
//!
//! Precedence follows the rest of clockpath (environment over file): the signal-specific
//! variable (`OTEL_EXPORTER_OTLP_TRACES_*`), then the generic one (`OTEL_EXPORTER_OTLP_*`),
//! then `[otlp]`. `OTEL_EXPORTER_OTLP_HEADERS` and `_COMPRESSION` are read by
//! opentelemetry-otlp itself.

use std::{collections::BTreeMap, time::Duration};

use super::OtlpConfig;

pub const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
pub const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
pub const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
/// The spec's switch to turn the SDK off.
pub const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";

/// The transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// One problem, at a config key or in an environment variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub variable: Option<String>,
    pub why: String,
}

/// Resolved settings of an enabled OTLP sink.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The URL requests go to (for HTTP, including `/v1/traces`).
    pub endpoint: String,
    /// Where the endpoint came from: a variable name or `otlp.endpoint`.
    pub endpoint_from: String,
    pub protocol: Protocol,
    pub timeout: Duration,
    /// Resource attributes, service.name included.
    pub resource: BTreeMap<String, String>,
    pub queue_chains: usize,
    pub batch_chains: usize,
    pub flush_interval: Duration,
}

/// The process environment, with empty values treated as unset (as the OTel spec asks).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn semconv_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm32",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc32",
        other => other,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// `key=value,key=value` with percent-encoded values (W3C baggage octets), as
/// OTEL_RESOURCE_ATTRIBUTES is defined.
fn parse_resource_attributes(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, item) in text.split(',').enumerate() {
        if item.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("item {} (`{}`) is not key=value", i + 1, item.trim()));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("item {} (`{}`) has an empty key", i + 1, item.trim()));
        }
        let v = percent_encoding::percent_decode_str(v.trim())
            .decode_utf8()
            .map_err(|e| format!("the value of `{k}` is not UTF-8 once percent-decoded: {e}"))?;
        out.push((k.to_string(), v.into_owned()));
    }
    Ok(out)
}

fn check_url(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "`{url}`: https is not supported by this build (no TLS stack); send to a local collector over http"
            ));
        }
        _ => return Err(format!("`{url}` must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(uri)
}

impl Settings {
    /// Resolve `[otlp]` against the environment `env`. `Ok(None)`: no endpoint anywhere (or
    /// OTEL_SDK_DISABLED=true), so no traces.
    pub fn resolve(cfg: &OtlpConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Settings>, Vec<Problem>> {
        let mut problems = Vec::new();
        let var_problem = |var: &str, why: String| Problem { key: String::new(), variable: Some(var.into()), why };
        let key_problem = |key: &str, why: String| Problem { key: key.into(), variable: None, why };

        let (protocol_text, protocol_from) = match (env(TRACES_PROTOCOL), env(PROTOCOL)) {
            (Some(p), _) => (p, Some(TRACES_PROTOCOL)),
            (None, Some(p)) => (p, Some(PROTOCOL)),
            (None, None) => (cfg.protocol.clone(), None),
        };
        let protocol = match protocol_text.trim().to_ascii_lowercase().as_str() {
            "grpc" => Some(Protocol::Grpc),
            "http/protobuf" => Some(Protocol::HttpProtobuf),
            other => {
                let why = if other == "http/json" {
                    "http/json is not supported by this build; use grpc or http/protobuf".to_string()
                } else {
                    format!("`{other}`: expected grpc or http/protobuf")
                };
                problems.push(match protocol_from {
                    Some(var) => var_problem(var, why),
                    None => key_problem("otlp.protocol", why),
                });
                None
            }
        };

        let (timeout_ms, timeout_from) = match (env(TRACES_TIMEOUT), env(TIMEOUT)) {
            (Some(t), _) => (Some(t), Some(TRACES_TIMEOUT)),
            (None, Some(t)) => (Some(t), Some(TIMEOUT)),
            (None, None) => (None, None),
        };
        let timeout = match (timeout_ms, timeout_from) {
            (Some(t), Some(var)) => match t.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    problems.push(var_problem(var, format!("`{t}` is not a positive number of milliseconds")));
                    Duration::from_millis(cfg.timeout_ms.max(1))
                }
            },
            _ => Duration::from_millis(cfg.timeout_ms.max(1)),
        };

        let mut resource: BTreeMap<String, String> = BTreeMap::new();
        resource.insert("service.name".into(), cfg.service_name.clone());
        resource.insert("service.version".into(), env!("CARGO_PKG_VERSION").into());
        resource.insert("host.name".into(), hostname());
        resource.insert("host.arch".into(), semconv_arch().into());
        resource.insert("os.type".into(), std::env::consts::OS.into());
        resource.insert("telemetry.sdk.name".into(), "opentelemetry".into());
        resource.insert("telemetry.sdk.language".into(), "rust".into());
        for (k, v) in &cfg.resource {
            resource.insert(k.clone(), v.clone());
        }
        if let Some(text) = env(RESOURCE_ATTRIBUTES) {
            match parse_resource_attributes(&text) {
                Ok(kvs) => resource.extend(kvs),
                Err(why) => problems.push(var_problem(RESOURCE_ATTRIBUTES, why)),
            }
        }
        if let Some(name) = env(SERVICE_NAME) {
            resource.insert("service.name".into(), name.trim().to_string());
        }

        let disabled = env(SDK_DISABLED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let endpoint = match (env(TRACES_ENDPOINT), env(ENDPOINT), cfg.endpoint.trim()) {
            (Some(e), _, _) => Some((e.trim().to_string(), TRACES_ENDPOINT.to_string(), true)),
            (None, Some(e), _) => Some((e.trim().to_string(), ENDPOINT.to_string(), false)),
            (None, None, "") => None,
            (None, None, e) => Some((e.to_string(), "otlp.endpoint".to_string(), false)),
        };
        let mut url = None;
        if let Some((e, from, verbatim)) = endpoint {
            match check_url(&e) {
                Ok(uri) => {
                    // For HTTP a base URL gets the signal path: always for the generic variable
                    // (as the spec says), for the config key when it names no path.
                    let base_only = uri.path().trim_end_matches('/').is_empty();
                    let append =
                        protocol == Some(Protocol::HttpProtobuf) && !verbatim && (from == ENDPOINT || base_only);
                    url =
                        Some(if append { (format!("{}/v1/traces", e.trim_end_matches('/')), from) } else { (e, from) });
                }
                Err(why) => problems.push(if from.starts_with("OTEL_") {
                    var_problem(&from, why)
                } else {
                    key_problem("otlp.endpoint", why)
                }),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let (Some((endpoint, endpoint_from)), Some(protocol)) = (url, protocol) else { return Ok(None) };
        if disabled {
            return Ok(None);
        }
        Ok(Some(Settings {
            endpoint,
            endpoint_from,
            protocol,
            timeout,
            resource,
            queue_chains: cfg.queue_chains.max(1),
            batch_chains: cfg.batch_chains.clamp(1, cfg.queue_chains.max(1)),
            flush_interval: Duration::from_millis(cfg.flush_interval_ms.max(1)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OtlpConfig {
        crate::config::Config::builtin().otlp
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(Settings::resolve(&cfg(), &env_of(&[])).unwrap(), None);
    }

    #[test]
    fn config_endpoint_and_defaults() {
        let mut c = cfg();
        c.endpoint = "http://collector:4317".into();
        let s = Settings::resolve(&c, &env_of(&[])).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://collector:4317");
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.resource["service.name"], "clockpath");
        assert_eq!(s.resource["os.type"], "linux");
        assert_eq!(s.resource["service.version"], env!("CARGO_PKG_VERSION"));
        assert!(!s.resource["host.name"].is_empty());
        assert_eq!(s.timeout, Duration::from_secs(10));
        c.protocol = "http/protobuf".into();
        c.endpoint = "http://collector:4318".into();
        let s = Settings::resolve(&c, &env_of(&[])).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://collector:4318/v1/traces", "a base URL gets the signal path");
        c.endpoint = "http://collector:4318/custom/path".into();
        let s = Settings::resolve(&c, &env_of(&[])).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://collector:4318/custom/path");
    }

    #[test]
    fn otel_variables_take_precedence() {
        let mut c = cfg();
        c.endpoint = "http://file:4317".into();
        let env = env_of(&[
            (ENDPOINT, "http://env:4318/"),
            (PROTOCOL, "http/protobuf"),
            (TIMEOUT, "2500"),
            (SERVICE_NAME, "clockpath-lab"),
            (RESOURCE_ATTRIBUTES, "deployment.environment.name=lab,rack=r%203,service.name=ignored"),
        ]);
        let s = Settings::resolve(&c, &env).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://env:4318/v1/traces");
        assert_eq!(s.endpoint_from, ENDPOINT);
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(s.resource["service.name"], "clockpath-lab", "OTEL_SERVICE_NAME wins");
        assert_eq!(s.resource["rack"], "r 3");
        assert_eq!(s.resource["deployment.environment.name"], "lab");
        // The signal-specific variables win over the generic ones and are used verbatim.
        let env = env_of(&[
            (ENDPOINT, "http://env:4318"),
            (TRACES_ENDPOINT, "http://traces:9999/x"),
            (PROTOCOL, "grpc"),
            (TRACES_PROTOCOL, "http/protobuf"),
        ]);
        let s = Settings::resolve(&c, &env).unwrap().unwrap();
        assert_eq!((s.endpoint.as_str(), s.protocol), ("http://traces:9999/x", Protocol::HttpProtobuf));
        // OTEL_SDK_DISABLED turns it off.
        assert_eq!(Settings::resolve(&c, &env_of(&[(SDK_DISABLED, "true")])).unwrap(), None);
    }

    #[test]
    fn bad_values_are_located() {
        let mut c = cfg();
        c.endpoint = "collector:4317".into();
        c.protocol = "udp".into();
        let p = Settings::resolve(&c, &env_of(&[])).unwrap_err();
        assert!(
            p.iter().any(|p| p.key == "otlp.protocol" && p.why.contains("expected grpc or http/protobuf")),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.key == "otlp.endpoint" && p.why.contains("http://")), "{p:?}");
        let p = Settings::resolve(
            &cfg(),
            &env_of(&[
                (ENDPOINT, "https://secure:4317"),
                (PROTOCOL, "http/json"),
                (TIMEOUT, "soon"),
                (RESOURCE_ATTRIBUTES, "a=1,broken"),
            ]),
        )
        .unwrap_err();
        let vars: Vec<&str> = p.iter().filter_map(|p| p.variable.as_deref()).collect();
        assert_eq!(vars, [PROTOCOL, TIMEOUT, RESOURCE_ATTRIBUTES, ENDPOINT], "{p:?}");
        assert!(p[0].why.contains("http/json is not supported"));
        assert!(p[3].why.contains("https is not supported"));
    }
}
