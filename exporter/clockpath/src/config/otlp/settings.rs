//! The effective OTLP settings: `[otlp]` with the standard `OTEL_*` variables over it, resolved
//! once, so the log line at start says exactly where traces go and why.
//!
//! Precedence follows the rest of clockpath (environment over file): the signal-specific
//! variable (`OTEL_EXPORTER_OTLP_TRACES_*`), then the generic one (`OTEL_EXPORTER_OTLP_*`),
//! then `[otlp]`. `OTEL_EXPORTER_OTLP_HEADERS` and `_COMPRESSION` are read by
//! opentelemetry-otlp itself; the TLS files (`_CERTIFICATE`, `_CLIENT_CERTIFICATE`,
//! `_CLIENT_KEY`) are not, so they are resolved and read here.

use std::{collections::BTreeMap, time::Duration};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use super::OtlpConfig;

pub const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
pub const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
pub const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
pub const TRACES_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE";
pub const CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
pub const TRACES_CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE";
pub const CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";
pub const TRACES_CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY";
pub const CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";
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
    /// TLS of an `https://` endpoint (None for `http://`).
    pub tls: Option<Tls>,
}

/// What an `https://` endpoint is trusted and authenticated with: PEM files, read at start.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Tls {
    /// CA bundle that verifies the collector; None: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and key, for collectors that require mutual TLS.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// One TLS file setting, resolved: the signal's variable, the generic one, then `[otlp]`.
struct FileSetting {
    path: String,
    /// The variable it came from, or None for the config key.
    variable: Option<&'static str>,
    key: &'static str,
}

fn file_setting(
    env: &dyn Fn(&str) -> Option<String>,
    traces: &'static str,
    generic: &'static str,
    configured: &str,
    key: &'static str,
) -> Option<FileSetting> {
    match (env(traces), env(generic), configured.trim()) {
        (Some(p), _, _) => Some(FileSetting { path: p.trim().into(), variable: Some(traces), key }),
        (None, Some(p), _) => Some(FileSetting { path: p.trim().into(), variable: Some(generic), key }),
        (None, None, "") => None,
        (None, None, p) => Some(FileSetting { path: p.into(), variable: None, key }),
    }
}

impl FileSetting {
    fn problem(&self, why: String) -> Problem {
        Problem {
            key: if self.variable.is_some() { String::new() } else { self.key.into() },
            variable: self.variable.map(Into::into),
            why,
        }
    }

    /// The file's PEM text, checked with `check`.
    fn read(&self, check: impl Fn(&[u8]) -> Result<(), String>) -> Result<Vec<u8>, Problem> {
        let pem = std::fs::read(&self.path).map_err(|e| self.problem(format!("`{}`: {e}", self.path)))?;
        check(&pem).map_err(|why| self.problem(format!("`{}`: {why}", self.path)))?;
        Ok(pem)
    }
}

fn certificates(pem: &[u8]) -> Result<(), String> {
    let n = CertificateDer::pem_slice_iter(pem)
        .try_fold(0, |n, c| c.map(|_| n + 1))
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if n == 0 { Err("no certificate in it".into()) } else { Ok(()) }
}

fn private_key(pem: &[u8]) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem).map(|_| ()).map_err(|e| format!("not a PEM private key: {e}"))
}

/// The TLS files for an endpoint: read for `https`, refused for `http` (they would be ignored
/// and the traces sent in clear).
fn resolve_tls(
    cfg: &OtlpConfig,
    env: &dyn Fn(&str) -> Option<String>,
    https: bool,
    problems: &mut Vec<Problem>,
) -> Option<Tls> {
    let ca = file_setting(env, TRACES_CERTIFICATE, CERTIFICATE, &cfg.certificate, "otlp.certificate");
    let cert = file_setting(
        env,
        TRACES_CLIENT_CERTIFICATE,
        CLIENT_CERTIFICATE,
        &cfg.client_certificate,
        "otlp.client_certificate",
    );
    let key = file_setting(env, TRACES_CLIENT_KEY, CLIENT_KEY, &cfg.client_key, "otlp.client_key");
    if !https {
        for f in [&ca, &cert, &key].into_iter().flatten() {
            problems.push(
                f.problem(format!("`{}` is set but the endpoint is not https://: traces would go in clear", f.path)),
            );
        }
        return None;
    }
    let mut tls = Tls::default();
    if let Some(ca) = &ca {
        match ca.read(certificates) {
            Ok(pem) => tls.ca_pem = Some(pem),
            Err(p) => problems.push(p),
        }
    }
    match (&cert, &key) {
        (Some(c), Some(k)) => match (c.read(certificates), k.read(private_key)) {
            (Ok(c), Ok(k)) => tls.client = Some((c, k)),
            (c, k) => problems.extend(c.err().into_iter().chain(k.err())),
        },
        (Some(one), None) => {
            problems.push(one.problem("a client certificate needs its key (CLIENT_KEY / otlp.client_key)".into()))
        }
        (None, Some(one)) => problems.push(
            one.problem("a client key needs its certificate (CLIENT_CERTIFICATE / otlp.client_certificate)".into()),
        ),
        (None, None) => {}
    }
    Some(tls)
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
        Some("http" | "https") => {}
        _ => return Err(format!("`{url}` must start with http:// or https://")),
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
        let mut tls = None;
        if let Some((e, from, verbatim)) = endpoint {
            match check_url(&e) {
                Ok(uri) => {
                    tls = resolve_tls(cfg, env, uri.scheme_str() == Some("https"), &mut problems);
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
            tls,
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
                (ENDPOINT, "ftp://secure:4317"),
                (PROTOCOL, "http/json"),
                (TIMEOUT, "soon"),
                (RESOURCE_ATTRIBUTES, "a=1,broken"),
            ]),
        )
        .unwrap_err();
        let vars: Vec<&str> = p.iter().filter_map(|p| p.variable.as_deref()).collect();
        assert_eq!(vars, [PROTOCOL, TIMEOUT, RESOURCE_ATTRIBUTES, ENDPOINT], "{p:?}");
        assert!(p[0].why.contains("http/json is not supported"));
        assert!(p[3].why.contains("must start with http:// or https://"));
    }

    #[test]
    fn tls_files_come_from_the_traces_variable_then_the_generic_one_then_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["collector".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p.display().to_string()
        };
        let (ca, other, client, client_key) = (
            write("ca.pem", &cert.pem()),
            write("other.pem", &cert.pem()),
            write("c.pem", &cert.pem()),
            write("k.pem", &key.serialize_pem()),
        );
        let mut c = cfg();
        c.endpoint = "https://collector:4317".into();
        c.certificate = "/nonexistent/ca.pem".into();
        // The variables win over the broken file setting; the traces variable over the generic one.
        let s = Settings::resolve(
            &c,
            &env_of(&[
                (CERTIFICATE, &other),
                (TRACES_CERTIFICATE, &ca),
                (CLIENT_CERTIFICATE, &client),
                (TRACES_CLIENT_KEY, &client_key),
            ]),
        )
        .unwrap()
        .unwrap();
        let tls = s.tls.expect("https has TLS");
        assert_eq!(tls.ca_pem.as_deref(), Some(cert.pem().as_bytes()));
        assert!(tls.client.is_some());
        // Without a CA anywhere: the system roots.
        c.certificate = String::new();
        assert_eq!(Settings::resolve(&c, &env_of(&[])).unwrap().unwrap().tls, Some(Tls::default()));
        // Problems, each located.
        c.certificate = "/nonexistent/ca.pem".into();
        let p = Settings::resolve(&c, &env_of(&[(CLIENT_CERTIFICATE, &client), (TRACES_CLIENT_KEY, &ca)])).unwrap_err();
        assert!(p.iter().any(|p| p.key == "otlp.certificate" && p.why.contains("/nonexistent/ca.pem")), "{p:?}");
        assert!(
            p.iter()
                .any(|p| p.variable.as_deref() == Some(TRACES_CLIENT_KEY) && p.why.contains("not a PEM private key")),
            "{p:?}"
        );
        let p = Settings::resolve(&cfg(), &env_of(&[(ENDPOINT, "https://c:4317"), (CLIENT_CERTIFICATE, &client)]))
            .unwrap_err();
        assert!(
            p.iter().any(|p| p.variable.as_deref() == Some(CLIENT_CERTIFICATE) && p.why.contains("needs its key")),
            "{p:?}"
        );
        let p = Settings::resolve(&cfg(), &env_of(&[(ENDPOINT, "http://c:4317"), (CERTIFICATE, &ca)])).unwrap_err();
        assert!(
            p.iter().any(|p| p.variable.as_deref() == Some(CERTIFICATE) && p.why.contains("not https://")),
            "{p:?}"
        );
    }
}
