//! The web configuration file of Prometheus exporters (exporter-toolkit's `--web.config.file`
//! format), given as `http.web_config`: TLS for the listener (`tls_server_config`), response
//! headers (`http_server_config.headers`) and basic authentication (`basic_auth_users`, bcrypt
//! hashes). Unknown keys are errors, as in the toolkit; each error names the key.
//!
//! Differences from the toolkit, each refused with a clear error rather than half-honoured:
//! TLS 1.0/1.1, `CurveP521`, CBC and RSA-key-exchange cipher suites (rustls implements none of
//! them); `RequestClientCert` and `RequireAnyClientCert` (they accept unverified client
//! certificates); `client_allowed_sans` and `rate_limit` (not implemented). HTTP/2 is not
//! served: `http2` is accepted and the listener offers HTTP/1.1 only.
//!
//! [`WebConfig`] re-reads the file, and every file it names, when one of them changes (checked
//! at most once a second, on connections and requests) or on [`WebConfig::reload`] (SIGHUP). A
//! file that fails to load keeps the last good settings in force (the toolkit would fail every
//! request instead) and is logged and exported; TLS on or off is fixed at start, as in the
//! toolkit.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use hyper::header::{HeaderName, HeaderValue};
use rustls::{
    RootCertStore, ServerConfig, SupportedProtocolVersion,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;

/// A web configuration problem, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not have the toolkit's shape (the parser's message names the key).
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid { path: String, key: String, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    rate_limit: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<String>,
    key_file: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    client_ca_file: Option<String>,
    client_ca: Option<String>,
    client_auth_type: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The settings in force: what one file read produced.
#[derive(Debug, Default)]
pub struct WebSettings {
    /// TLS for new connections (None: plain HTTP).
    pub tls: Option<Arc<ServerConfig>>,
    /// user → bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Set on every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// TLS clients must present a certificate the client CA signed.
    pub client_cert_required: bool,
}

/// One consistent read: the settings, the stamps they were read under, and which security
/// keys the file names (a reload may turn a defence off only when the file says so).
struct Read {
    settings: WebSettings,
    stamps: Vec<Stamp>,
    names_users: bool,
    names_client_auth: bool,
}

/// What a file's change is detected by.
#[derive(Clone, Debug, PartialEq)]
struct Stamp {
    path: PathBuf,
    seen: Option<(u64, u64, i64, i64)>,
}

impl Stamp {
    fn of(path: &Path) -> Stamp {
        // stat follows symlinks: a Kubernetes Secret volume swaps its `..data` link.
        let seen = std::fs::metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.size() as i64, m.mtime_nsec() + m.mtime() * 1_000_000_000));
        Stamp { path: path.to_path_buf(), seen }
    }
}

/// How often the files are checked for a change, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The outcome of the last reload, for `/metrics`.
#[derive(Clone, Copy, Debug)]
pub struct ReloadState {
    pub successful: bool,
    /// Unix time of the last successful load (the first included).
    pub last_success: SystemTime,
}

/// A web configuration file in force, re-read when it (or a file it names) changes.
#[derive(Debug)]
pub struct WebConfig {
    path: PathBuf,
    tls_enabled: bool,
    current: RwLock<Arc<WebSettings>>,
    watch: Mutex<(Instant, Vec<Stamp>)>,
    state: Mutex<ReloadState>,
    /// Reloads read on this thread, which keeps CAP_DAC_READ_SEARCH after the drop (None: it
    /// could not start; reloads read on the calling thread).
    reader: Option<super::config_reader::ConfigReader>,
}

impl WebConfig {
    /// Load the file: any problem is an error naming the key.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let Read { settings, stamps, .. } = read_consistent(path)?;
        Ok(WebConfig {
            path: path.to_path_buf(),
            tls_enabled: settings.tls.is_some(),
            current: RwLock::new(Arc::new(settings)),
            watch: Mutex::new((Instant::now(), stamps)),
            state: Mutex::new(ReloadState { successful: true, last_success: SystemTime::now() }),
            reader: super::config_reader::ConfigReader::start()
                .inspect_err(|error| {
                    tracing::warn!(%error, "web config reader thread not started: reloads read with the caller's rights")
                })
                .ok(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the listener speaks TLS (fixed at start).
    pub fn tls_enabled(&self) -> bool {
        self.tls_enabled
    }

    pub fn reload_state(&self) -> ReloadState {
        self.state.lock().map(|s| *s).unwrap_or(ReloadState { successful: false, last_success: SystemTime::UNIX_EPOCH })
    }

    /// The settings in force, after re-reading the files if one changed since the last check
    /// (checked at most once a second).
    pub fn current(&self) -> Arc<WebSettings> {
        let changed = match self.watch.lock() {
            Ok(mut w) if w.0.elapsed() >= CHECK_EVERY => {
                w.0 = Instant::now();
                w.1.iter().any(|s| Stamp::of(&s.path) != *s)
            }
            _ => false,
        };
        if changed && let Err(error) = self.reload() {
            tracing::warn!(%error, "web config not reloaded; the last good one stays in force");
        }
        self.settings()
    }

    fn settings(&self) -> Arc<WebSettings> {
        self.current.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Re-read the files now (SIGHUP). On an error the settings in force stay.
    pub fn reload(&self) -> Result<(), WebConfigError> {
        let running = self.settings();
        // The watched files as they are before this read: a failed read keeps these, so a
        // write that ends after it (or during it) is seen as a change and read at the next check.
        let before: Vec<Stamp> = match self.watch.lock() {
            Ok(w) => w.1.iter().map(|s| Stamp::of(&s.path)).collect(),
            Err(_) => Vec::new(),
        };
        let read = match &self.reader {
            Some(reader) => {
                let path = self.path.clone();
                reader.run(move || read_consistent(&path)).unwrap_or_else(|| {
                    Err(WebConfigError::Invalid {
                        path: self.path.display().to_string(),
                        key: "(file)".into(),
                        message: "the web config reader thread is gone".into(),
                    })
                })
            }
            None => read_consistent(&self.path),
        };
        let outcome = read.and_then(|r| {
            let refuse = |key: &str, message: String| {
                Err(WebConfigError::Invalid { path: self.path.display().to_string(), key: key.into(), message })
            };
            if r.settings.tls.is_some() != self.tls_enabled {
                return refuse(
                    "tls_server_config",
                    format!(
                        "TLS was {} at start; turning it {} needs a restart",
                        if self.tls_enabled { "on" } else { "off" },
                        if self.tls_enabled { "off" } else { "on" }
                    ),
                );
            }
            // A file truncated or half written (by an editor, a config tool, a copy) must not
            // read as "no authentication": turning a defence off takes the key, written out.
            if !running.users.is_empty() && !r.names_users {
                return refuse(
                    "basic_auth_users",
                    format!(
                        "missing, while {} user(s) must authenticate now: an empty or half-written file would turn authentication off; write `basic_auth_users: {{}}` to mean it",
                        running.users.len()
                    ),
                );
            }
            if running.client_cert_required && !r.settings.client_cert_required && !r.names_client_auth {
                return refuse(
                    "tls_server_config.client_auth_type",
                    "missing, while clients must present a certificate now: write `client_auth_type: NoClientCert` to stop requiring one".into(),
                );
            }
            Ok((r.settings, r.stamps))
        });
        let mut state = self.state.lock().ok();
        match outcome {
            Ok((settings, stamps)) => {
                if let Ok(mut c) = self.current.write() {
                    *c = Arc::new(settings);
                }
                if let Ok(mut w) = self.watch.lock() {
                    *w = (Instant::now(), stamps);
                }
                if let Some(s) = state.as_mut() {
                    **s = ReloadState { successful: true, last_success: SystemTime::now() };
                }
                tracing::info!(path = %self.path.display(), "web config reloaded");
                Ok(())
            }
            Err(e) => {
                // Stamp the broken state too, so it is not re-read (and re-logged) every second.
                if let Ok(mut w) = self.watch.lock() {
                    *w = (Instant::now(), before);
                }
                if let Some(s) = state.as_mut() {
                    s.successful = false;
                }
                Err(e)
            }
        }
    }
}

/// Reads of the file and everything it names, until one saw no file change while it read
/// (every file is stamped before it is read and checked after: a writer between the two would
/// otherwise leave a half-written file in force until its next change). No waiting between
/// attempts (this runs on the serving threads): a write still going on after the last one is
/// read at the next check, since a failed reload keeps the stamps from before it.
fn read_consistent(path: &Path) -> Result<Read, WebConfigError> {
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let r = read(path)?;
        if r.stamps.iter().all(|s| Stamp::of(&s.path) == *s) {
            return Ok(r);
        }
        tracing::debug!(attempt, path = %path.display(), "web config changed while being read: reading it again");
    }
    Err(WebConfigError::Invalid {
        path: path.display().to_string(),
        key: "(file)".into(),
        message: format!("changed while being read, {ATTEMPTS} times in a row"),
    })
}

/// One read of the file and everything it names.
fn read(path: &Path) -> Result<Read, WebConfigError> {
    let shown = path.display().to_string();
    let mut stamps = vec![Stamp::of(path)];
    let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read { path: shown.clone(), source })?;
    let file: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        serde_norway::from_str(&text)
            .map_err(|e| WebConfigError::Parse { path: shown.clone(), message: e.to_string() })?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let invalid =
        |key: &str, message: String| WebConfigError::Invalid { path: shown.clone(), key: key.into(), message };
    if file.rate_limit.is_some() {
        return Err(invalid("rate_limit", "not supported by clockpath (connections are bounded instead)".into()));
    }
    let names_users = file.basic_auth_users.is_some();
    let names_client_auth = file.tls_server_config.as_ref().is_some_and(|t| t.client_auth_type.is_some());
    let client_cert_required = file
        .tls_server_config
        .as_ref()
        .is_some_and(|t| tls_enabled(t) && t.client_auth_type.as_deref() == Some("RequireAndVerifyClientCert"));
    let mut users = BTreeMap::new();
    for (user, hash) in file.basic_auth_users.unwrap_or_default() {
        if let Err(e) = hash.parse::<bcrypt::HashParts>() {
            return Err(invalid(&format!("basic_auth_users.{user}"), format!("not a bcrypt hash ({e})")));
        }
        if user.contains(':') {
            return Err(invalid(&format!("basic_auth_users.{user}"), "a user name cannot contain `:`".into()));
        }
        users.insert(user, hash);
    }
    let mut headers = Vec::new();
    if let Some(h) = &file.http_server_config {
        for (name, value) in &h.headers {
            headers.push(header(name, value).map_err(|m| invalid(&format!("http_server_config.headers.{name}"), m))?);
        }
        if h.http2.unwrap_or(true) {
            tracing::debug!("http_server_config.http2: clockpath serves HTTP/1.1 only");
        }
    }
    let tls = match &file.tls_server_config {
        Some(t) if tls_enabled(t) => Some(Arc::new(tls_config(t, dir, &mut stamps, &invalid)?)),
        _ => None,
    };
    Ok(Read {
        settings: WebSettings { tls, users, headers, client_cert_required },
        stamps,
        names_users,
        names_client_auth,
    })
}

/// The toolkit's test: TLS is on when any of these is set.
fn tls_enabled(t: &TlsFile) -> bool {
    t.cert_file.is_some()
        || t.cert.is_some()
        || t.key_file.is_some()
        || t.key.is_some()
        || t.client_ca_file.is_some()
        || t.client_ca.is_some()
        || t.client_auth_type.is_some()
}

/// The only headers the toolkit lets a web config set, and their allowed values.
fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let allowed: Option<&[&str]> = match name {
        "Content-Security-Policy" | "X-XSS-Protection" | "Strict-Transport-Security" => None,
        "X-Frame-Options" => Some(&["deny", "sameorigin"]),
        "X-Content-Type-Options" => Some(&["nosniff"]),
        _ => return Err(format!("HTTP header \"{name}\" can not be configured")),
    };
    if let Some(values) = allowed
        && !values.iter().any(|v| v.eq_ignore_ascii_case(value))
    {
        return Err(format!("invalid value \"{value}\" (allowed: {})", values.join(", ")));
    }
    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
    let v = HeaderValue::from_str(value).map_err(|e| format!("invalid value: {e}"))?;
    Ok((n, v))
}

fn version(key: &str, v: &str) -> Result<u8, String> {
    match v {
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        "TLS10" | "TLS11" => Err(format!("{key}: {v} is not implemented by rustls (TLS12 or TLS13)")),
        _ => Err(format!("{key}: unknown TLS version: {v}")),
    }
}

fn tls_config(
    t: &TlsFile,
    dir: &Path,
    stamps: &mut Vec<Stamp>,
    invalid: &dyn Fn(&str, String) -> WebConfigError,
) -> Result<ServerConfig, WebConfigError> {
    let k = |key: &str| format!("tls_server_config.{key}");
    if t.client_allowed_sans.is_some() {
        return Err(invalid(&k("client_allowed_sans"), "not supported by clockpath".into()));
    }
    let file = |key: &str, p: &str, stamps: &mut Vec<Stamp>| -> Result<Vec<u8>, WebConfigError> {
        // Relative paths are the web config file's directory's, as in the toolkit.
        let p = dir.join(p);
        stamps.push(Stamp::of(&p));
        std::fs::read(&p).map_err(|e| invalid(&k(key), format!("{}: {e}", p.display())))
    };
    let cert_pem = match (&t.cert_file, &t.cert) {
        (Some(f), _) => file("cert_file", f, stamps)?,
        (None, Some(c)) => c.clone().into_bytes(),
        (None, None) => return Err(invalid(&k("cert_file"), "missing one of cert or cert_file".into())),
    };
    let key_key = if t.key_file.is_some() { "key_file" } else { "key" };
    let key_pem = match (&t.key_file, &t.key) {
        (Some(f), _) => file("key_file", f, stamps)?,
        (None, Some(c)) => c.clone().into_bytes(),
        (None, None) => return Err(invalid(&k("key_file"), "missing one of key or key_file".into())),
    };
    let cert_key = if t.cert_file.is_some() { "cert_file" } else { "cert" };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&k(cert_key), format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(&k(cert_key), "no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(&k(key_key), format!("not a PEM private key: {e}")))?;

    let min = version("min_version", t.min_version.as_deref().unwrap_or("TLS12"))
        .map_err(|m| invalid(&k("min_version"), m))?;
    let max = version("max_version", t.max_version.as_deref().unwrap_or("TLS13"))
        .map_err(|m| invalid(&k("max_version"), m))?;
    if min > max {
        return Err(invalid(&k("min_version"), "is above max_version".into()));
    }
    let versions: Vec<&'static SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();

    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = &t.cipher_suites {
        // Like Go, the list applies to TLS 1.2; every TLS 1.3 suite stays.
        let mut kept: Vec<_> =
            provider.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS13).copied().collect();
        for name in names {
            let suite = provider
                .cipher_suites
                .iter()
                .find(|s| {
                    s.version() == &rustls::version::TLS12
                        && go_suite_name(&format!("{:?}", s.suite())) == go_suite_name(name)
                })
                .ok_or_else(|| invalid(&k("cipher_suites"), format!("unknown or unsupported cipher: {name}")))?;
            kept.push(*suite);
        }
        provider.cipher_suites = kept;
    }
    if let Some(curves) = &t.curve_preferences {
        let mut groups = Vec::new();
        for c in curves {
            let wanted = match c.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                "CurveP521" => {
                    return Err(invalid(
                        &k("curve_preferences"),
                        "CurveP521 is not implemented by rustls' ring provider".into(),
                    ));
                }
                _ => return Err(invalid(&k("curve_preferences"), format!("unknown curve: {c}"))),
            };
            if let Some(g) = provider.kx_groups.iter().find(|g| g.name() == wanted) {
                groups.push(*g);
            }
        }
        provider.kx_groups = groups;
    }
    let provider: Arc<CryptoProvider> = Arc::new(provider);

    let client_ca_pem = match (&t.client_ca_file, &t.client_ca) {
        (Some(f), _) => Some(("client_ca_file", file("client_ca_file", f, stamps)?)),
        (None, Some(c)) => Some(("client_ca", c.clone().into_bytes())),
        (None, None) => None,
    };
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| invalid(&k("cipher_suites"), format!("no cipher suite left for the TLS versions: {e}")))?;
    let roots = |pem: &[u8], key: &str| -> Result<Arc<RootCertStore>, WebConfigError> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(|e| invalid(&k(key), format!("not a PEM certificate bundle: {e}")))?;
            roots.add(c).map_err(|e| invalid(&k(key), format!("a CA certificate cannot be used: {e}")))?;
        }
        if roots.is_empty() {
            return Err(invalid(&k(key), "no CA certificate in it".into()));
        }
        Ok(Arc::new(roots))
    };
    let builder = match (auth, &client_ca_pem) {
        ("NoClientCert" | "", None) => builder.with_no_client_auth(),
        ("NoClientCert" | "", Some(_)) => {
            return Err(invalid(
                &k("client_auth_type"),
                "client CA's have been configured without a Client Auth Policy".into(),
            ));
        }
        ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert", None) => {
            return Err(invalid(
                &k("client_ca_file"),
                format!("{auth} needs a client CA (client_ca_file or client_ca)"),
            ));
        }
        ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert", Some((key, pem))) => {
            let b = WebPkiClientVerifier::builder_with_provider(roots(pem, key)?, provider.clone());
            let b = if auth == "VerifyClientCertIfGiven" { b.allow_unauthenticated() } else { b };
            let verifier = b.build().map_err(|e| invalid(&k(key), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert", _) => {
            return Err(invalid(
                &k("client_auth_type"),
                format!(
                    "{auth} accepts unverified client certificates and is not supported; use RequireAndVerifyClientCert"
                ),
            ));
        }
        (other, _) => return Err(invalid(&k("client_auth_type"), format!("invalid ClientAuth: {other}"))),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&k(key_key), format!("does not go with the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    Ok(config)
}

/// Go spells ChaCha suites both with and without the `_SHA256` tail.
fn go_suite_name(n: &str) -> &str {
    n.strip_suffix("_SHA256").filter(|s| s.ends_with("CHACHA20_POLY1305")).unwrap_or(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        dir: tempfile::TempDir,
    }

    fn pki() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write");
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).expect("write");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write");
        Pki { dir }
    }

    fn load(p: &Pki, yaml: &str) -> Result<WebConfig, WebConfigError> {
        let path = p.dir.path().join("web.yml");
        std::fs::write(&path, yaml).expect("write");
        WebConfig::load(&path)
    }

    fn err(p: &Pki, yaml: &str) -> String {
        load(p, yaml).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("accepted:\n{yaml}"))
    }

    fn hash() -> String {
        bcrypt::hash("secret", 4).expect("bcrypt")
    }

    #[test]
    fn an_empty_file_is_plain_http_and_relative_paths_are_the_files_directory() {
        let p = pki();
        let w = load(&p, "").expect("empty");
        assert!(!w.tls_enabled() && w.current().users.is_empty());
        let w = load(
            &p,
            &format!(
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  alice: '{}'\n",
                hash()
            ),
        )
        .expect("valid");
        assert!(w.tls_enabled());
        assert_eq!(w.current().users.len(), 1);
        assert_eq!(w.current().tls.as_ref().map(|t| t.alpn_protocols.clone()), Some(vec![b"http/1.1".to_vec()]));
    }

    #[test]
    fn every_mistake_names_its_key() {
        let p = pki();
        let tls = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
        for (yaml, wanted) in [
            ("tls_server_config:\n  cert_file: cert.pem\n  kye_file: key.pem\n", "unknown field `kye_file`"),
            ("basic_auth_users:\n  bob: plain\n", "basic_auth_users.bob: not a bcrypt hash"),
            (
                "tls_server_config:\n  key_file: key.pem\n",
                "tls_server_config.cert_file: missing one of cert or cert_file",
            ),
            ("tls_server_config:\n  cert_file: nope.pem\n  key_file: key.pem\n", "tls_server_config.cert_file:"),
            (
                "tls_server_config:\n  cert_file: key.pem\n  key_file: key.pem\n",
                "tls_server_config.cert_file: no certificate",
            ),
            (
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: cert.pem\n",
                "tls_server_config.key_file: not a PEM private key",
            ),
            (
                &format!("{tls}  min_version: TLS11\n"),
                "tls_server_config.min_version: min_version: TLS11 is not implemented",
            ),
            (&format!("{tls}  max_version: TLS14\n"), "unknown TLS version: TLS14"),
            (&format!("{tls}  min_version: TLS13\n  max_version: TLS12\n"), "min_version: is above max_version"),
            (
                &format!("{tls}  client_auth_type: Sometimes\n"),
                "tls_server_config.client_auth_type: invalid ClientAuth: Sometimes",
            ),
            (
                &format!("{tls}  client_ca_file: ca.pem\n"),
                "client CA's have been configured without a Client Auth Policy",
            ),
            (
                &format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"),
                "tls_server_config.client_ca_file: RequireAndVerifyClientCert needs a client CA",
            ),
            (
                &format!("{tls}  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca.pem\n"),
                "accepts unverified client certificates",
            ),
            (
                &format!("{tls}  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n"),
                "tls_server_config.cipher_suites: unknown or unsupported cipher",
            ),
            (&format!("{tls}  curve_preferences: [CurveP521]\n"), "tls_server_config.curve_preferences: CurveP521"),
            (
                "http_server_config:\n  headers:\n    Server: x\n",
                "http_server_config.headers.Server: HTTP header \"Server\" can not be configured",
            ),
            ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "invalid value \"allow\""),
            ("rate_limit:\n  interval: 1s\n", "rate_limit: not supported"),
        ] {
            let e = err(&p, yaml);
            assert!(e.contains(wanted), "{yaml}\n→ {e}\n(wanted {wanted})");
            assert!(e.contains("web.yml"), "{e}");
        }
    }

    #[test]
    fn suites_curves_and_client_verification_are_honoured() {
        let p = pki();
        let w = load(
            &p,
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305]\n  curve_preferences: [X25519]\n",
        )
        .expect("valid");
        assert!(w.current().tls.is_some());
    }

    #[test]
    fn a_change_is_picked_up_and_a_broken_file_keeps_the_last_good_settings() {
        let p = pki();
        let path = p.dir.path().join("web.yml");
        let w = load(&p, &format!("basic_auth_users:\n  alice: '{}'\n", hash())).expect("valid");
        std::fs::write(&path, format!("basic_auth_users:\n  alice: '{h}'\n  bob: '{h}'\n", h = hash())).expect("write");
        w.reload().expect("reload");
        assert_eq!(w.current().users.len(), 2);
        assert!(w.reload_state().successful);
        std::fs::write(&path, "basic_auth_users:\n  carol: nothash\n").expect("write");
        assert!(w.reload().is_err());
        assert_eq!(w.current().users.len(), 2, "the last good settings stay");
        assert!(!w.reload_state().successful);
        std::fs::write(&path, "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n").expect("write");
        let e = w.reload().expect_err("TLS cannot be turned on").to_string();
        assert!(e.contains("needs a restart"), "{e}");
    }

    #[test]
    fn a_truncated_or_half_written_file_never_turns_a_defence_off() {
        let p = pki();
        let path = p.dir.path().join("web.yml");
        let tls = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
        let mtls = format!("{tls}  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n");
        let w = load(&p, &format!("{mtls}basic_auth_users:\n  alice: '{}'\n", hash())).expect("valid");
        assert!(w.current().client_cert_required);
        // Truncated: empty, then only the TLS half (auth missing), then TLS without the client CA.
        for (text, key) in [
            (String::new(), "tls_server_config"),
            (mtls.clone(), "basic_auth_users"),
            (format!("{tls}basic_auth_users:\n  alice: '{}'\n", hash()), "client_auth_type"),
        ] {
            std::fs::write(&path, &text).expect("write");
            let e = w.reload().expect_err("a defence would be lost").to_string();
            assert!(e.contains(key), "{text:?}: {e}");
            assert!(!w.reload_state().successful);
            let now = w.current();
            assert_eq!((now.users.len(), now.client_cert_required), (1, true), "{text:?}: the last good settings stay");
        }
        // Written out, the change is taken.
        std::fs::write(&path, format!("{tls}  client_auth_type: NoClientCert\nbasic_auth_users: {{}}\n"))
            .expect("write");
        w.reload().expect("an explicit change applies");
        let now = w.current();
        assert_eq!((now.users.len(), now.client_cert_required), (0, false));
        assert!(w.reload_state().successful);
    }
}
