//! The configuration stack: built-in defaults (`default.toml`), then an optional TOML file,
//! then `CLOCKPATH_`-prefixed environment variables (nested keys joined with `__`).
//!
//! This module is a leaf of the crate: it owns every section's type and every check that needs
//! no kernel, and imports none of the modules that use it (pipeline, sinks, daemon, session,
//! cli); only lower crates (the target and key parsers, the statistics settings, the bucket
//! math). The kernel-dependent checks (does the tracepoint exist, is the field in its format)
//! are the plan resolver's, whose problems come back here to be located ([`Loaded::issue`]).

pub mod chains;
pub mod otlp;
pub mod reference;

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use clockpath_offline::analysis::ChainDef;
use clockpath_probe::{
    loader::LoadOptions,
    plan::{ChainSpec, PlanIssue},
    suggest::closest,
};
use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::{Deserialize, Serialize};

pub use chains::{ChainConfig, PointConfig, StageConfig, TargetConfig};
pub use otlp::{OtlpConfig, SamplingConfig};

use clockpath_offline::{stats, trace::Format as TraceFormat};

/// The built-in default configuration, documented.
pub const DEFAULT_TOML: &str = include_str!("default.toml");
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "CLOCKPATH_";

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub probe: ProbeConfig,
    pub http: HttpConfig,
    pub metrics: MetricsConfig,
    pub windows: WindowsConfig,
    pub recorder: RecorderConfig,
    pub otlp: OtlpConfig,
    pub pps: PpsConfig,
    pub time_sync: TimeSyncConfig,
    pub clock_audit: ClockAuditConfig,
    pub environment: EnvironmentConfig,
    /// Chains by name; their index in the kernel follows the name order.
    pub chains: BTreeMap<String, ChainConfig>,
}

/// Kernel-side sizes and the ring reader.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Ring buffer size in bytes: a power of two, at least 4096.
    pub ring_bytes: u32,
    /// Open instances tracked at once, all chains together.
    pub max_instances: u32,
    /// Ring drain period in ms (at least 1).
    pub drain_interval_ms: u64,
    /// Timed-out instance sweep period in ms (at least 10).
    pub sweep_interval_ms: u64,
    /// Stream every stage hit (raw mode).
    pub raw_hits: bool,
    /// Enable kernel.bpf_stats_enabled while running.
    pub bpf_stats: bool,
}

impl ProbeConfig {
    /// The sizes and switches the BPF object is loaded with.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            ring_bytes: self.ring_bytes,
            max_instances: self.max_instances,
            raw_hits: self.raw_hits,
            bpf_stats: self.bpf_stats,
        }
    }
}

/// The HTTP endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `ADDRESS:PORT` to listen on.
    pub listen: String,
    /// A Prometheus exporter-toolkit web config file (TLS, basic auth, headers); "" for none.
    pub web_config: String,
}

/// What the Prometheus sink exports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Histogram `le` bounds in seconds; each a kernel bucket boundary.
    pub buckets_seconds: Vec<f64>,
    /// Quantiles in (0, 1) of the HDR window.
    pub quantiles: Vec<f64>,
    /// Length of the HDR quantile window, in seconds (at least 6).
    pub quantile_window_secs: u64,
    /// Significant digits of the HDR histograms (1–5).
    pub quantile_precision: u8,
}

/// Statistics windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsConfig {
    /// Publish every this many seconds (at least 1).
    pub interval_secs: u64,
    /// Also close a window after this many completed chains (0: off).
    pub every_chains: u64,
    /// Reservoir size in runs (at least 10).
    pub reservoir: usize,
    /// Outlier rejection: σ multiple (> 0).
    pub sigma: f64,
    /// Reference segment per chain name (`a->b`); default the first segment.
    pub reference: BTreeMap<String, String>,
    pub bootstrap: stats::Bootstrap,
}

/// `[recorder]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderConfig {
    /// Record stage hits to files.
    pub enabled: bool,
    /// Directory for the files (created if missing).
    pub dir: PathBuf,
    /// `csv`, `jsonl` or `parquet`.
    pub format: TraceFormat,
    /// Start a new file once one reaches this many bytes (0: never).
    pub rotate_bytes: u64,
    /// Keep at most this many files, deleting the oldest (0: keep all).
    pub keep_files: usize,
}

/// `[pps]`: PPS sources, the time reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpsConfig {
    /// Device paths; `auto` for every `/sys/class/pps/ppsN`; empty: no PPS reference.
    #[serde(deserialize_with = "one_or_many")]
    pub devices: Vec<String>,
    /// Which edge marks the second.
    pub edge: PpsEdge,
    /// How late an edge reaches the kernel after the true second (cable, receiver), ns.
    pub cable_delay_ns: i64,
    /// The signal is lost after this long without an edge, ms.
    pub lost_after_ms: u64,
}

impl PpsConfig {
    /// `devices = ["auto"]` (or `devices = "auto"`).
    pub fn auto(&self) -> bool {
        self.devices.iter().any(|d| d == "auto")
    }
}

/// The edge of a PPS signal that marks the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PpsEdge {
    Assert,
    Clear,
}

/// A list, or one string for a one-element list (so `CLOCKPATH_PPS__DEVICES=auto` works).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) if s.is_empty() => Vec::new(),
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// `[time_sync]`: when the system clock's synchronisation is worth a warning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSyncConfig {
    /// Warn when the kernel's maximum error (adjtimex) exceeds this, ms (0: never).
    pub max_error_ms: u64,
}

/// `[clock_audit]`: the exporter's periodic clock audit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockAuditConfig {
    /// Seconds between audits (0: off).
    pub interval_secs: u64,
    /// Bracketed reads per clock and round (1–1000).
    pub samples: u16,
    /// Movement beyond drift and uncertainty that counts as a jump, µs (at least 1).
    pub jump_threshold_us: u64,
}

/// The `env` label and static labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// `host`, `vm` or `auto`.
    pub env: String,
    /// Static labels on every chain series.
    pub labels: BTreeMap<String, String>,
}

/// Labels clockpath sets itself; a static label may not reuse them.
pub const RESERVED_LABELS: &[&str] = &[
    "chain",
    "segment",
    "stage",
    "env",
    "q",
    "quantile",
    "le",
    "source",
    "session",
    "governor",
    "cstate_limit",
    "target",
    "attach",
    "state",
    "reason",
    "program",
    "outcome",
    "device",
    "reference",
    "name",
    "path",
];

/// Where a configuration value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env,
    /// A named environment variable outside the `CLOCKPATH_` set (e.g. `OTEL_SERVICE_NAME`).
    Variable(String),
    Unknown,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default config"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env => write!(f, "environment ({ENV_PREFIX}*)"),
            Origin::Variable(v) => write!(f, "environment variable {v}"),
            Origin::Unknown => f.write_str("configuration"),
        }
    }
}

/// One configuration problem: where, which key, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    pub origin: Origin,
    /// Dotted key path, e.g. `chains.sched_wakeup.stages[1].targets[0]`.
    pub key: String,
    pub why: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.why)
        } else {
            write!(f, "{}: key `{}`: {}", self.origin, self.key, self.why)
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", list(.0))]
    Invalid(Vec<ConfigIssue>),
}

fn list(issues: &[ConfigIssue]) -> String {
    let mut s = format!("invalid configuration ({} problem{})", issues.len(), if issues.len() == 1 { "" } else { "s" });
    for i in issues {
        s.push_str("\n  - ");
        s.push_str(&i.to_string());
    }
    s
}

/// A loaded configuration and the figment it came from (to locate keys in later checks).
pub struct Loaded {
    pub config: Config,
    figment: Figment,
}

impl Loaded {
    /// Locate the plan resolver's problems: which file, default or variable set each key.
    pub fn locate(&self, issues: Vec<PlanIssue>) -> Vec<ConfigIssue> {
        issues.into_iter().map(|i| self.issue(i.key, i.why)).collect()
    }

    /// Where `key` (dotted path) was set, as precisely as the figment knows.
    pub fn origin(&self, key: &str) -> Origin {
        origin_of(&self.figment, key)
    }

    /// The same sources with a modified configuration (e.g. a session enabling one chain).
    pub fn with_config(&self, config: Config) -> Loaded {
        Loaded { config, figment: self.figment.clone() }
    }

    /// A `ConfigIssue` located at `key`.
    pub fn issue(&self, key: impl Into<String>, why: impl Into<String>) -> ConfigIssue {
        let key = key.into();
        ConfigIssue { origin: self.origin(&key), key, why: why.into() }
    }
}

fn origin_of(figment: &Figment, key: &str) -> Origin {
    // Strip array indices and walk up to the deepest key the figment has metadata for.
    let clean: String = key.split('[').next().unwrap_or(key).to_string();
    let mut parts: Vec<&str> = clean.split('.').collect();
    while !parts.is_empty() {
        if let Some(md) = figment.find_metadata(&parts.join(".")) {
            return match &md.source {
                Some(figment::Source::File(p)) => Origin::File(p.clone()),
                _ if md.name.contains("environment") => Origin::Env,
                // The only string source is the embedded default config.
                Some(figment::Source::Code(_)) | None => Origin::Default,
                _ => Origin::Unknown,
            };
        }
        parts.pop();
    }
    Origin::Unknown
}

impl Config {
    /// Load defaults, then `file`, then the environment; check everything that needs no kernel.
    pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
        Self::load_with_env(file, Env::prefixed(ENV_PREFIX))
    }

    /// The built-in default configuration alone.
    pub fn builtin() -> Config {
        // The default config is part of the binary and covered by tests; failing to parse it is
        // a build defect, not a user error.
        #[expect(clippy::expect_used, reason = "the embedded default config is tested")]
        Figment::from(Toml::string(DEFAULT_TOML)).extract().expect("built-in default config parses")
    }

    fn load_with_env(file: Option<&Path>, env: Env) -> Result<Loaded, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            // figment silently skips a missing file; an explicit --config must exist.
            std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Unreadable { path: path.to_path_buf(), source })?;
            figment = figment.merge(Toml::file_exact(path));
        }
        // Every configuration key is nested in a section, so a variable is configuration only
        // with a `__` in its name: CLOCKPATH_CONFIG and CLOCKPATH_LOG (command-line settings)
        // and other tools' CLOCKPATH_* variables (CLOCKPATH_BIN, CLOCKPATH_GRAFANA_VENV) are not.
        let env = env.filter(|k| k.as_str().contains("__")).split("__");
        figment = figment.merge(env);
        let config: Config = figment.extract().map_err(|e| ConfigError::Invalid(figment_issues(&figment, e)))?;
        let loaded = Loaded { config, figment };
        let issues = loaded.validate();
        if issues.is_empty() { Ok(loaded) } else { Err(ConfigError::Invalid(issues)) }
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Enabled chains in kernel-index order.
    pub fn enabled_chains(&self) -> impl Iterator<Item = (&str, &ChainConfig)> {
        self.chains.iter().filter(|(_, c)| c.enabled).map(|(n, c)| (n.as_str(), c))
    }

    /// The enabled chains as the plan resolver takes them, in kernel-index order.
    pub fn chain_specs(&self) -> Vec<ChainSpec> {
        self.enabled_chains().map(|(name, c)| c.spec(name)).collect()
    }

    /// Every configured chain (enabled or not) as offline analysis knows it: a trace may come
    /// from a machine that ran other chains.
    pub fn chain_defs(&self) -> Vec<ChainDef> {
        self.chains.iter().map(|(name, c)| c.def(name)).collect()
    }
}

impl Loaded {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let p = &self.config.probe;
        if p.ring_bytes < 4096 || !p.ring_bytes.is_power_of_two() {
            issues.push(
                self.issue("probe.ring_bytes", format!("{} is not a power of two of at least 4096", p.ring_bytes)),
            );
        }
        if p.max_instances == 0 {
            issues.push(self.issue("probe.max_instances", "must be at least 1"));
        }
        if p.drain_interval_ms == 0 {
            issues.push(self.issue("probe.drain_interval_ms", "must be at least 1 ms"));
        }
        if p.sweep_interval_ms < 10 {
            issues.push(self.issue("probe.sweep_interval_ms", "must be at least 10 ms"));
        }
        if let Err(why) = self.config.http.listen.parse::<std::net::SocketAddr>() {
            issues.push(
                self.issue("http.listen", format!("`{}` is not an ADDRESS:PORT ({why})", self.config.http.listen)),
            );
        }
        let m = &self.config.metrics;
        if let Err(why) = clockpath_common::hist::check_buckets(&m.buckets_seconds) {
            issues.push(self.issue("metrics.buckets_seconds", why.to_string()));
        }
        if m.quantiles.is_empty() || m.quantiles.iter().any(|q| !(*q > 0.0 && *q < 1.0)) {
            issues.push(self.issue("metrics.quantiles", "each quantile must be strictly between 0 and 1"));
        }
        if m.quantile_window_secs < 6 {
            issues.push(self.issue("metrics.quantile_window_secs", "must be at least 6 seconds"));
        }
        if !(1..=5).contains(&m.quantile_precision) {
            issues.push(self.issue("metrics.quantile_precision", "must be 1 to 5 significant digits"));
        }
        let w = &self.config.windows;
        if w.interval_secs == 0 {
            issues.push(self.issue("windows.interval_secs", "must be at least 1 second"));
        }
        if w.reservoir < 10 {
            issues.push(self.issue("windows.reservoir", "must hold at least 10 runs"));
        }
        if let Err(e) = stats::reject_outliers(&[0.0], w.sigma) {
            issues.push(self.issue("windows.sigma", e.to_string()));
        }
        if let Err(e) = w.bootstrap.validate() {
            let key = match e {
                stats::StatsError::TooFewResamples(_) => "windows.bootstrap.resamples",
                _ => "windows.bootstrap.level",
            };
            issues.push(self.issue(key, e.to_string()));
        }
        for (chain, seg) in &w.reference {
            match self.config.chains.get(chain) {
                None => issues.push(self.issue(format!("windows.reference.{chain}"), format!("no chain `{chain}`"))),
                Some(c) => {
                    let names: Vec<String> =
                        c.stages.windows(2).map(|p| format!("{}->{}", p[0].name, p[1].name)).collect();
                    if !names.contains(seg) {
                        issues.push(self.issue(
                            format!("windows.reference.{chain}"),
                            format!("chain `{chain}` has no segment `{seg}` (segments: {})", names.join(", ")),
                        ));
                    }
                }
            }
        }
        let a = &self.config.clock_audit;
        if !(1..=1000).contains(&a.samples) {
            issues.push(self.issue("clock_audit.samples", "must be 1 to 1000 reads"));
        }
        if a.jump_threshold_us == 0 {
            issues.push(self.issue("clock_audit.jump_threshold_us", "must be at least 1 µs"));
        }
        otlp::validate(self, &mut issues);
        let pps = &self.config.pps;
        for (i, d) in pps.devices.iter().enumerate() {
            if d != "auto" && !d.starts_with('/') {
                issues.push(self.issue(
                    format!("pps.devices[{i}]"),
                    format!("`{d}`: expected a device path (/dev/ppsN) or \"auto\""),
                ));
            }
        }
        if !(0..1_000_000_000).contains(&pps.cable_delay_ns) {
            issues.push(self.issue("pps.cable_delay_ns", "must be at least 0 and under a second"));
        }
        if !(1100..=3_600_000).contains(&pps.lost_after_ms) {
            issues.push(
                self.issue(
                    "pps.lost_after_ms",
                    "must exceed one pulse period and be at most an hour: 1100 to 3600000 ms",
                ),
            );
        }
        let e = &self.config.environment;
        if !["auto", "host", "vm"].contains(&e.env.as_str()) {
            issues.push(self.issue("environment.env", format!("`{}`: expected auto, host or vm", e.env)));
        }
        for name in e.labels.keys() {
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with("__");
            if !valid {
                issues.push(self.issue(
                    format!("environment.labels.{name}"),
                    "a label name is [a-zA-Z_][a-zA-Z0-9_]* and does not start with __",
                ));
            } else if RESERVED_LABELS.contains(&name.as_str()) {
                issues.push(
                    self.issue(
                        format!("environment.labels.{name}"),
                        format!("`{name}` is a label clockpath sets itself"),
                    ),
                );
            }
        }
        chains::validate(self, &mut issues);
        issues
    }
}

/// Turn figment's deserialization errors into located issues, with a suggestion for unknown keys.
fn figment_issues(figment: &Figment, err: figment::Error) -> Vec<ConfigIssue> {
    err.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                Some(figment::Source::File(p)) => Origin::File(p.clone()),
                _ => match &e.metadata {
                    Some(m) if m.name.contains("environment") => Origin::Env,
                    _ => origin_of(figment, &key),
                },
            };
            let why = match &e.kind {
                figment::error::Kind::UnknownField(field, expected) => match closest(field, expected) {
                    Some(s) => format!("unknown key `{field}`; did you mean `{s}`?"),
                    None => format!("unknown key `{field}`; expected one of: {}", expected.join(", ")),
                },
                kind => kind.to_string(),
            };
            ConfigIssue { origin, key, why }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn load_str(toml: &str) -> Result<Loaded, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        Config::load_with_env(Some(f.path()), Env::prefixed("CLOCKPATH_TEST_NONE_"))
    }

    fn issues(toml: &str) -> Vec<ConfigIssue> {
        match load_str(toml) {
            Err(ConfigError::Invalid(i)) => i,
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("config should be invalid:\n{toml}"),
        }
    }

    #[test]
    fn builtin_default_is_valid_and_has_the_six_chains_five_on() {
        let loaded = Config::load_with_env(None, Env::prefixed("CLOCKPATH_TEST_NONE_")).unwrap();
        let names: Vec<_> = loaded.config.chains.keys().cloned().collect();
        assert_eq!(names, ["clocksource_switch", "hrtimer", "kvm", "runqueue", "sched_wakeup", "softirq"]);
        let on: Vec<_> = loaded.config.enabled_chains().map(|(n, _)| n).collect();
        assert_eq!(on, ["clocksource_switch", "hrtimer", "kvm", "runqueue", "softirq"]);
        assert_eq!(loaded.config, Config::builtin());
    }

    #[test]
    fn causes_from_needs_a_known_decoder_a_capture_and_no_point_causes() {
        let chain = |extra: &str, capture: &str, cause: &str| {
            format!(
                r#"
[chains.vmexit]
{extra}
[[chains.vmexit.stages]]
name = "exit"
key = "tid"
{capture}
points = [{{ {cause} targets = ["tracepoint:kvm:kvm_exit"] }}]
[[chains.vmexit.stages]]
name = "entry"
key = "tid"
targets = ["tracepoint:kvm:kvm_entry"]
"#
            )
        };
        let why = |toml: String| issues(&toml).into_iter().map(|i| format!("{}: {}", i.key, i.why)).collect::<Vec<_>>();
        let unknown = why(chain("causes_from = \"vmx_reason\"", "capture = \"exit_reason\"", ""));
        assert!(
            unknown
                .iter()
                .any(|w| w.contains("chains.vmexit.causes_from") && w.contains("unknown decoder `vmx_reason`")),
            "{unknown:?}"
        );
        let uncaptured = why(chain("causes_from = \"kvm_exit_reason\"", "", ""));
        assert!(uncaptured.iter().any(|w| w.contains("captures none")), "{uncaptured:?}");
        let both = why(chain("causes_from = \"kvm_exit_reason\"", "capture = \"exit_reason\"", "cause = \"exit\","));
        assert!(both.iter().any(|w| w.contains("come from one place")), "{both:?}");
        // Written correctly it loads, with the decoder's causes.
        let ok = load_str(&chain("causes_from = \"kvm_exit_reason\"", "capture = \"exit_reason\"", "")).unwrap();
        assert_eq!(ok.config.chains["vmexit"].causes()[..2], ["other", "io"]);
    }

    #[test]
    fn printed_config_parses_back_to_the_same_config() {
        let c = Config::builtin();
        let printed = c.to_toml().unwrap();
        let back = load_str(&printed).unwrap().config;
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_key_is_an_error_with_a_suggestion_and_the_file() {
        let i = issues("[probe]\nring_byte = 4096\n");
        assert_eq!(i.len(), 1, "{i:?}");
        assert!(matches!(i[0].origin, Origin::File(_)), "{i:?}");
        assert!(i[0].why.contains("did you mean `ring_bytes`"), "{}", i[0]);
    }

    #[test]
    fn bad_values_name_their_key() {
        let i = issues("[probe]\nring_bytes = 5000\ndrain_interval_ms = 0\n");
        let keys: Vec<_> = i.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["probe.ring_bytes", "probe.drain_interval_ms"]);
    }

    #[test]
    fn sampling_is_bounded_and_only_for_last_hit_wins_chains() {
        let i = issues("[chains.sched_wakeup]\nsample_every = 0\n");
        assert_eq!(i[0].key, "chains.sched_wakeup.sample_every", "{i:?}");
        assert!(i[0].why.contains("1 to 1000000"), "{i:?}");
        let i = issues("[chains.softirq]\nsample_every = 8\n");
        assert_eq!(i[0].key, "chains.softirq.sample_every", "{i:?}");
        assert!(i[0].why.contains("first_hit_only"), "{i:?}");
        let ok = load_str("[chains.hrtimer]\nsample_every = 64\n").unwrap();
        assert_eq!(ok.config.chains["hrtimer"].sample_every, 64);
        assert_eq!(ok.config.chains["hrtimer"].spec("hrtimer").sample_every, 64);
    }

    #[test]
    fn wrong_type_names_key_and_file() {
        let i = issues("[probe]\nraw_hits = \"yes\"\n");
        assert_eq!(i[0].key, "probe.raw_hits");
        assert!(matches!(&i[0].origin, Origin::File(p) if p.starts_with(std::env::temp_dir())), "{}", i[0]);
    }

    #[test]
    fn bad_window_statistics_settings_are_config_errors() {
        let i = issues("[windows]\nsigma = 0.0\n[windows.bootstrap]\nresamples = 5\nlevel = 1.2\nseed = 1\n");
        let keys: Vec<_> = i.iter().map(|i| i.key.as_str()).collect();
        assert!(keys.contains(&"windows.sigma"), "{i:?}");
        assert!(keys.contains(&"windows.bootstrap.resamples"), "{i:?}");
        let i = issues("[windows.bootstrap]\nresamples = 500\nlevel = 0.0\nseed = 1\n");
        assert_eq!(i[0].key, "windows.bootstrap.level", "{i:?}");
        assert!(i[0].why.contains("strictly between 0 and 1"), "{i:?}");
        let i = issues("[windows]\nreference = { sched_wakeup = \"nope\" }\n");
        assert!(i[0].why.contains("no segment `nope`") && i[0].why.contains("wakeup->switch_in"), "{i:?}");
    }

    #[test]
    fn example_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/configs");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            Config::load_with_env(Some(&p), Env::prefixed("CLOCKPATH_TEST_NONE_"))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
        assert!(n >= 3);
    }

    #[test]
    fn pps_settings_are_checked_and_located() {
        let i = issues("[pps]\ndevices = [\"pps0\"]\ncable_delay_ns = -1\nlost_after_ms = 900\n");
        let keys: Vec<_> = i.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["pps.devices[0]", "pps.cable_delay_ns", "pps.lost_after_ms"], "{i:?}");
        assert!(i[0].why.contains("/dev/ppsN"), "{}", i[0]);
        let i = issues("[pps]\nedge = \"rising\"\n");
        assert_eq!(i[0].key, "pps.edge", "{i:?}");
        let i = issues("[pps]\nlost_after_ms = 10000000000000\n");
        assert_eq!(i[0].key, "pps.lost_after_ms", "no overflow to a negative bound: {i:?}");
        // Trace columns and PPS info labels are clockpath's own.
        let i = issues("[environment]\nlabels = { reference = \"x\", path = \"y\" }\n");
        assert_eq!(i.len(), 2, "{i:?}");
        assert!(load_str("[pps]\ndevices = \"auto\"\n").unwrap().config.pps.auto());
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment::Jail closures return figment::Error")]
    fn pps_devices_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("CLOCKPATH_PPS__DEVICES", "/dev/pps1");
            jail.set_env("CLOCKPATH_TIME_SYNC__MAX_ERROR_MS", "5");
            let loaded = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(loaded.config.pps.devices, ["/dev/pps1"]);
            assert_eq!(loaded.config.time_sync.max_error_ms, 5);
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_unreadable() {
        let e = Config::load(Some(Path::new("/nonexistent/clockpath.toml"))).err().unwrap();
        assert!(matches!(e, ConfigError::Unreadable { .. }));
        assert!(e.to_string().contains("/nonexistent/clockpath.toml"));
    }

    // Environment tests run in a figment::Jail: variables are set under a lock every Jail
    // shares and removed afterwards, and the other tests never read the real `CLOCKPATH_`
    // prefix, so no test sees another's environment.
    #[test]
    #[expect(clippy::result_large_err, reason = "figment::Jail closures return figment::Error")]
    fn environment_overrides_nested_keys() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("CLOCKPATH_PROBE__RING_BYTES", "8192");
            jail.set_env("CLOCKPATH_CHAINS__HRTIMER__ENABLED", "false");
            // Command-line settings and other tools' variables, not config keys: ignored here.
            jail.set_env("CLOCKPATH_LOG", "debug");
            jail.set_env("CLOCKPATH_CONFIG", "/nonexistent.toml");
            jail.set_env("CLOCKPATH_BIN", "x");
            jail.set_env("CLOCKPATH_GRAFANA_VENV", "/opt/venv");
            let loaded = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(loaded.config.probe.ring_bytes, 8192);
            assert!(!loaded.config.chains["hrtimer"].enabled);
            assert_eq!(loaded.config.enabled_chains().count(), 4);
            assert_eq!(loaded.origin("probe.ring_bytes"), Origin::Env);
            assert_eq!(loaded.origin("probe.max_instances"), Origin::Default);
            Ok(())
        });
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment::Jail closures return figment::Error")]
    fn a_misspelt_section_in_the_environment_is_still_an_error() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("CLOCKPATH_PROBES__RING_BYTES", "8192");
            let Err(ConfigError::Invalid(i)) = Config::load(None) else { panic!("expected an error") };
            assert!(i.iter().any(|x| x.to_string().contains("probes")), "{i:?}");
            Ok(())
        });
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment::Jail closures return figment::Error")]
    fn environment_wins_over_the_file_and_errors_say_so() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("clockpath.toml", "[probe]\nring_bytes = 65536\nmax_instances = 10\n")?;
            jail.set_env("CLOCKPATH_PROBE__RING_BYTES", "12");
            let Err(ConfigError::Invalid(i)) = Config::load(Some(Path::new("clockpath.toml"))) else {
                panic!("expected an error");
            };
            assert_eq!(i.len(), 1, "{i:?}");
            assert_eq!(i[0].key, "probe.ring_bytes");
            assert_eq!(i[0].origin, Origin::Env, "{}", i[0]);
            jail.set_env("CLOCKPATH_PROBE__RING_BYTES", "131072");
            let loaded = Config::load(Some(Path::new("clockpath.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(loaded.config.probe.ring_bytes, 131072, "the environment wins");
            assert_eq!(loaded.config.probe.max_instances, 10, "the file's other keys stay");
            assert_eq!(loaded.origin("probe.max_instances"), Origin::File("clockpath.toml".into()));
            Ok(())
        });
    }
}
