//! Chain definitions as written in the config, and the checks that need no kernel.

use clockpath_common::{
    limits::{MAX_CHAINS, MAX_STAGES, TOTAL_ROW},
    slot::CLOCK_NAMES,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use clockpath_offline::{analysis::ChainDef, chain::ChainShape};
use clockpath_probe::{
    kernel::kvm_exit,
    plan::{ChainSpec, PointSpec, StageSpec, TargetSpec},
    target::Target,
    value::{Filter, KeyExpr, ValueExpr},
};

use super::{ConfigIssue, Loaded};

/// A chain: stages in order, each a set of probe points, correlated by a key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Run this chain (default true).
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// Shown on the landing page and in `doctor`.
    #[serde(default)]
    pub description: String,
    /// An instance older than this is closed as timed out, in ms (at least 1).
    #[serde(default = "timeout_default")]
    pub timeout_ms: u64,
    /// At least two stages, at most 8.
    pub stages: Vec<StageConfig>,
    /// Charge interference (IRQs, softirqs, the task switched out, hrtimer handlers, VM exits)
    /// on a segment's CPU to the segment (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub interference: bool,
    /// Points that close an open instance without completing it (e.g. hrtimer_cancel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abort: Vec<PointConfig>,
    /// Stage 0 opens an instance on only every Nth hit per CPU (default 1: every hit), for
    /// chains whose stage 0 fires far more often than they complete. Exported as
    /// `clockpath_chain_sample_every`; the histograms are exact for the sampled instances.
    #[serde(default = "sample_every_default", skip_serializing_if = "is_one")]
    pub sample_every: u32,
    /// The cause of an instance decoded from the value stage 0 captures, instead of named by
    /// stage 0's points: `kvm_exit_reason` (a VM exit's reason, by the host's SVM or VMX table,
    /// into the classes other, io, npf, msr, cpuid, interrupt, hlt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causes_from: Option<String>,
}

const fn sample_every_default() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Largest `sample_every`: beyond it a chain would see almost nothing.
pub const MAX_SAMPLE_EVERY: u32 = 1_000_000;

const fn enabled_default() -> bool {
    true
}

const fn timeout_default() -> u64 {
    10_000
}

/// One stage: either `targets` (one probe point) or `points` (several, any of which counts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// The stage's name; a segment is named `a->b` after the stages it runs between.
    pub name: String,
    /// Default key for targets that do not give their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Attach targets of a single probe point, in preference order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetConfig>,
    /// Several probe points for this stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<PointConfig>,
    /// Stage 0 only: an instance already open on the key is kept (first hit wins).
    #[serde(default, skip_serializing_if = "is_false")]
    pub first_hit_only: bool,
    /// Stage 0 only: a value stored with the instance, for `match_capture` stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
    /// Later stages only: a hit counts only when the probed function is the one captured at
    /// stage 0 (e.g. the new clocksource's read function).
    #[serde(default, skip_serializing_if = "is_false")]
    pub match_capture: bool,
    /// A hit counts only when `EXPR == VALUE` holds, e.g. `tid == 1234` or `tgid == self`
    /// (`self`: clockpath's own process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The clock this stage stamps its hits with: `monotonic` (default), `boottime` or `tai`
    /// (the BPF helpers). Segments between stages on different clocks carry the clocks'
    /// offset: a chain can reproduce a tool's mix of clocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<String>,
}

/// A stage's `clock`: one the BPF helpers of tracing programs read.
fn check_clock(c: &str) -> Result<(), String> {
    if CLOCK_NAMES.contains(&c) {
        return Ok(());
    }
    let known = CLOCK_NAMES.join(", ");
    Err(match c {
        "coarse" | "monotonic_coarse" => format!(
            "clock `{c}` cannot stamp a stage: the kernel refuses bpf_ktime_get_coarse_ns in tracing programs (`clockpath clocks` reads it from a socket filter); one of {known}"
        ),
        "realtime" => format!(
            "clock `{c}` cannot stamp a stage: BPF programs have no CLOCK_REALTIME helper (`tai` is REALTIME plus the TAI offset); one of {known}"
        ),
        _ => match clockpath_probe::suggest::closest(c, &CLOCK_NAMES) {
            Some(s) => format!("unknown clock `{c}` (did you mean `{s}`? one of {known})"),
            None => format!("unknown clock `{c}` (one of {known})"),
        },
    })
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One probe point: targets in preference order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// Attach targets of this point, in preference order (the first this kernel supports).
    pub targets: Vec<TargetConfig>,
    /// Stage 0 only: what an instance this point opens was caused by (e.g. `wakeup`,
    /// `preempted`), exported as the `cause` label of the chain's segments. Either every
    /// point of stage 0 names a cause, or none does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Overrides the stage's filter for this point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Default key for targets that do not give their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `"kind:name"` or `{ attach = "kind:name", key = "...", filter = "..." }` when the key or
/// the filter differs per target (a tracepoint's field, a tp_btf argument's member).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetConfig {
    /// `kind:name`: `tp_btf:sched_switch`, `tracepoint:sched:sched_switch`,
    /// `raw_tracepoint:…`, `fentry:…`, `fexit:…`, `kprobe:…`, `kretprobe:…`.
    pub attach: String,
    /// The instance key at this target (a tracepoint's field, a tp_btf argument's member),
    /// overriding the point's and the stage's.
    pub key: Option<String>,
    /// Overrides the point's filter for this target.
    pub filter: Option<String>,
}

impl Serialize for TargetConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.key.is_none() && self.filter.is_none() {
            return s.serialize_str(&self.attach);
        }
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("attach", &self.attach)?;
        if let Some(key) = &self.key {
            m.serialize_entry("key", key)?;
        }
        if let Some(filter) = &self.filter {
            m.serialize_entry("filter", filter)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for TargetConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = TargetConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a target string such as \"tracepoint:sched:sched_switch\" or a table { attach = \"...\", key = \"...\", filter = \"...\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetConfig, E> {
                Ok(TargetConfig { attach: v.to_string(), key: None, filter: None })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<TargetConfig, A::Error> {
                let (mut attach, mut key, mut filter) = (None, None, None);
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "attach" => attach = Some(map.next_value::<String>()?),
                        "key" => key = Some(map.next_value::<String>()?),
                        "filter" => filter = Some(map.next_value::<String>()?),
                        other => return Err(de::Error::unknown_field(other, &["attach", "key", "filter"])),
                    }
                }
                let attach = attach.ok_or_else(|| de::Error::missing_field("attach"))?;
                Ok(TargetConfig { attach, key, filter })
            }
        }
        d.deserialize_any(V)
    }
}

impl StageConfig {
    /// The stage's probe points, whichever way they were written.
    pub fn point_list(&self) -> Vec<PointConfig> {
        if self.points.is_empty() {
            vec![PointConfig { targets: self.targets.clone(), key: None, filter: None, cause: None }]
        } else {
            self.points.clone()
        }
    }
}

impl ChainConfig {
    /// What the plan resolver needs of this chain: defaults applied (a target's key falls back
    /// to its point's, then its stage's; a point's filter to its stage's), each point with its
    /// configuration key.
    pub fn spec(&self, name: &str) -> ChainSpec {
        let at = format!("chains.{name}");
        let stages = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let sat = format!("{at}.stages[{i}]");
                let points = stage
                    .point_list()
                    .iter()
                    .enumerate()
                    .map(|(j, point)| {
                        let pat = if stage.points.is_empty() { sat.clone() } else { format!("{sat}.points[{j}]") };
                        point_spec(pat, point, stage.key.as_deref(), stage.filter.as_deref())
                    })
                    .collect();
                StageSpec {
                    name: stage.name.clone(),
                    first_hit_only: stage.first_hit_only,
                    capture: stage.capture.clone(),
                    match_capture: stage.match_capture,
                    clock: stage.clock.clone().unwrap_or_else(|| CLOCK_NAMES[0].to_string()),
                    points,
                }
            })
            .collect();
        let aborts =
            self.abort.iter().enumerate().map(|(j, p)| point_spec(format!("{at}.abort[{j}]"), p, None, None)).collect();
        ChainSpec {
            name: name.to_string(),
            description: self.description.clone(),
            timeout_ns: self.timeout_ms.saturating_mul(1_000_000),
            interference: self.interference,
            sample_every: self.sample_every,
            stages,
            causes_from: self.causes_from.clone(),
            aborts,
        }
    }

    /// The causes stage 0's points name, in point order (empty when they name none).
    pub fn causes(&self) -> Vec<String> {
        if self.causes_from.as_deref() == Some(kvm_exit::DECODER) {
            return kvm_exit::CAUSES.iter().map(|c| c.to_string()).collect();
        }
        self.stages.first().map(|s| s.point_list().iter().filter_map(|p| p.cause.clone()).collect()).unwrap_or_default()
    }

    /// What offline analysis needs of this chain.
    pub fn def(&self, name: &str) -> ChainDef {
        ChainDef {
            shape: ChainShape {
                name: name.to_string(),
                stages: self.stages.iter().map(|s| s.name.clone()).collect(),
                timeout_ns: self.timeout_ms.saturating_mul(1_000_000),
                causes: self.causes(),
            },
            first_hit_only: self.stages.first().is_some_and(|s| s.first_hit_only),
        }
    }
}

fn point_spec(at: String, point: &PointConfig, stage_key: Option<&str>, stage_filter: Option<&str>) -> PointSpec {
    let targets = point
        .targets
        .iter()
        .map(|t| TargetSpec {
            attach: t.attach.clone(),
            key: t.key.as_deref().or(point.key.as_deref()).or(stage_key).unwrap_or_default().to_string(),
            filter: t.filter.clone(),
        })
        .collect();
    PointSpec {
        at,
        targets,
        filter: point.filter.as_deref().or(stage_filter).map(str::to_string),
        cause: point.cause.clone(),
    }
}

fn identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

pub(super) fn validate(loaded: &Loaded, issues: &mut Vec<ConfigIssue>) {
    let enabled = loaded.config.enabled_chains().count();
    if enabled == 0 {
        issues.push(loaded.issue("chains", "no chain is enabled"));
    }
    if enabled > MAX_CHAINS as usize {
        issues.push(
            loaded.issue("chains", format!("{enabled} chains are enabled; at most {MAX_CHAINS} can run at once")),
        );
    }
    for (name, chain) in &loaded.config.chains {
        let at = format!("chains.{name}");
        if !identifier(name) {
            issues.push(loaded.issue(&at, "a chain name is lowercase letters, digits and _"));
        }
        if chain.timeout_ms == 0 {
            issues.push(loaded.issue(format!("{at}.timeout_ms"), "must be at least 1 ms"));
        }
        if !(1..=MAX_SAMPLE_EVERY).contains(&chain.sample_every) {
            issues.push(loaded.issue(format!("{at}.sample_every"), format!("must be 1 to {MAX_SAMPLE_EVERY}")));
        } else if chain.sample_every > 1 && chain.stages.first().is_some_and(|s| s.first_hit_only) {
            // An unsampled first hit would let a later one open the instance: the segment
            // would start late. Last-hit-wins chains have no such bias.
            issues.push(loaded.issue(
                format!("{at}.sample_every"),
                "sampling needs a last-hit-wins stage 0; this chain's first stage is first_hit_only",
            ));
        }
        if chain.stages.len() < 2 {
            issues.push(loaded.issue(
                format!("{at}.stages"),
                format!("chain `{name}` has {} stage(s); a chain needs at least two (one segment)", chain.stages.len()),
            ));
        }
        if chain.stages.len() > MAX_STAGES as usize {
            issues.push(loaded.issue(format!("{at}.stages"), format!("at most {MAX_STAGES} stages per chain")));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, stage) in chain.stages.iter().enumerate() {
            let sat = format!("{at}.stages[{i}]");
            let sname = &stage.name;
            if !identifier(sname) {
                issues.push(loaded.issue(
                    format!("{sat}.name"),
                    format!("stage name `{sname}` is not lowercase letters, digits and _"),
                ));
            }
            if sname == "total" {
                issues.push(loaded.issue(format!("{sat}.name"), "`total` is reserved for the first→last segment"));
            }
            if !seen.insert(sname.clone()) {
                issues.push(
                    loaded.issue(format!("{sat}.name"), format!("duplicate stage name `{sname}` in chain `{name}`")),
                );
            }
            match (stage.targets.is_empty(), stage.points.is_empty()) {
                (true, true) => issues.push(loaded.issue(&sat, format!("stage `{sname}` has no targets"))),
                (false, false) => {
                    issues.push(loaded.issue(&sat, format!("stage `{sname}`: give either targets or points, not both")))
                }
                _ => {}
            }
            if i != 0 && stage.first_hit_only {
                issues.push(
                    loaded.issue(
                        format!("{sat}.first_hit_only"),
                        format!("stage `{sname}`: only stage 0 opens instances"),
                    ),
                );
            }
            if i != 0 && stage.capture.is_some() {
                issues.push(
                    loaded.issue(format!("{sat}.capture"), format!("stage `{sname}`: only stage 0 captures a value")),
                );
            }
            if let Some(f) = &stage.filter
                && let Err(e) = Filter::parse(f)
            {
                issues.push(loaded.issue(format!("{sat}.filter"), format!("stage `{sname}`: {e}")));
            }
            if let Some(c) = &stage.capture
                && let Err(e) = ValueExpr::parse(c)
            {
                issues.push(loaded.issue(format!("{sat}.capture"), format!("stage `{sname}`: {e}")));
            }
            if let Some(c) = &stage.clock
                && let Err(why) = check_clock(c)
            {
                issues.push(loaded.issue(format!("{sat}.clock"), format!("stage `{sname}`: {why}")));
            }
            if stage.match_capture && (i == 0 || chain.stages[0].capture.is_none()) {
                issues.push(loaded.issue(
                    format!("{sat}.match_capture"),
                    format!("stage `{sname}`: match_capture needs a later stage and a capture on stage 0"),
                ));
            }
            for (j, point) in stage.point_list().iter().enumerate() {
                let pat = if stage.points.is_empty() { sat.clone() } else { format!("{sat}.points[{j}]") };
                check_point(loaded, issues, &pat, sname, point, stage.key.as_deref());
                if i != 0 && point.cause.is_some() {
                    issues.push(loaded.issue(
                        format!("{pat}.cause"),
                        format!("stage `{sname}`: only stage 0's points open instances, so only they name a cause"),
                    ));
                }
            }
        }
        check_causes(loaded, issues, &at, chain);
        for (j, point) in chain.abort.iter().enumerate() {
            check_point(loaded, issues, &format!("{at}.abort[{j}]"), "abort", point, None);
        }
    }
}

/// Stage 0's causes: all its points name one or none does; names are identifiers, distinct,
/// and the chain's histogram rows (one per cause and segment) fit the kernel's.
fn check_causes(loaded: &Loaded, issues: &mut Vec<ConfigIssue>, at: &str, chain: &ChainConfig) {
    let Some(stage) = chain.stages.first() else { return };
    let points = stage.point_list();
    let named = points.iter().filter(|p| p.cause.is_some()).count();
    let sat = format!("{at}.stages[0]");
    if let Some(decoder) = &chain.causes_from {
        let fat = format!("{at}.causes_from");
        if decoder != kvm_exit::DECODER {
            issues.push(loaded.issue(&fat, format!("unknown decoder `{decoder}` (known: {})", kvm_exit::DECODER)));
        }
        if stage.capture.is_none() {
            issues.push(loaded.issue(
                &fat,
                format!("causes are decoded from stage 0's captured value, and stage `{}` captures none", stage.name),
            ));
        }
        if named > 0 {
            issues.push(loaded.issue(
                &fat,
                format!("stage `{}`'s points name causes too; a chain's causes come from one place", stage.name),
            ));
        }
        let segments = chain.stages.len().saturating_sub(1).max(1);
        let rows = (TOTAL_ROW as usize) / segments;
        if kvm_exit::CAUSES.len() > rows {
            issues.push(loaded.issue(
                &fat,
                format!(
                    "`{decoder}` has {} causes; a chain of {segments} segment(s) has room for {rows} (one histogram row per cause and segment)",
                    kvm_exit::CAUSES.len()
                ),
            ));
        }
        return;
    }
    if named == 0 {
        return;
    }
    if named != points.len() {
        issues.push(loaded.issue(
            format!("{sat}.points"),
            format!(
                "stage `{}`: {named} of its {} points name a cause; name one for every point or for none",
                stage.name,
                points.len()
            ),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (j, cause) in points.iter().enumerate().filter_map(|(j, p)| Some((j, p.cause.as_deref()?))) {
        let cat = format!("{sat}.points[{j}].cause");
        if !identifier(cause) {
            issues.push(loaded.issue(&cat, format!("cause `{cause}` is not lowercase letters, digits and _")));
        }
        if !seen.insert(cause) {
            issues.push(loaded.issue(&cat, format!("duplicate cause `{cause}` in stage `{}`", stage.name)));
        }
    }
    let segments = chain.stages.len().saturating_sub(1).max(1);
    let rows = (TOTAL_ROW as usize) / segments;
    if named > rows {
        issues.push(loaded.issue(
            format!("{sat}.points"),
            format!(
                "a chain of {segments} segment(s) has room for {rows} causes (one histogram row per cause and segment, {} rows), not {named}",
                TOTAL_ROW
            ),
        ));
    }
}

fn check_point(
    loaded: &Loaded,
    issues: &mut Vec<ConfigIssue>,
    at: &str,
    stage: &str,
    point: &PointConfig,
    stage_key: Option<&str>,
) {
    if point.targets.is_empty() {
        issues.push(
            loaded.issue(format!("{at}.targets"), format!("stage `{stage}`: a probe point needs at least one target")),
        );
    }
    if let Some(f) = &point.filter
        && let Err(e) = Filter::parse(f)
    {
        issues.push(loaded.issue(format!("{at}.filter"), format!("stage `{stage}`: {e}")));
    }
    for (k, t) in point.targets.iter().enumerate() {
        let tat = format!("{at}.targets[{k}]");
        if let Err(e) = Target::check_pattern(&t.attach) {
            issues.push(loaded.issue(&tat, format!("stage `{stage}`: {e}")));
        }
        if let Some(f) = &t.filter
            && let Err(e) = Filter::parse(f)
        {
            issues.push(loaded.issue(format!("{tat}.filter"), format!("stage `{stage}`: {e}")));
        }
        match t.key.as_deref().or(point.key.as_deref()).or(stage_key) {
            None => issues.push(loaded.issue(
                &tat,
                format!("stage `{stage}`: target `{}` has no key (set key on the target or the stage)", t.attach),
            )),
            Some(key) => {
                if let Err(e) = KeyExpr::parse(key) {
                    issues.push(loaded.issue(&tat, format!("stage `{stage}`: key: {e}")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use figment::providers::Env;
    use std::io::Write as _;

    fn issues(toml: &str) -> Vec<String> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        match Config::load_with_env(Some(f.path()), Env::prefixed("CLOCKPATH_TEST_NONE_")) {
            Err(ConfigError::Invalid(i)) => i.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("should be invalid"),
        }
    }

    const ONE: &str =
        "[chains.x]\n[[chains.x.stages]]\nname = \"a\"\nkey = \"cpu\"\ntargets = [\"tracepoint:sched:sched_switch\"]\n";

    #[test]
    fn empty_chain_and_single_stage_are_errors() {
        let i = issues("[chains.x]\nstages = []\n");
        assert!(i.iter().any(|s| s.contains("chains.x.stages") && s.contains("at least two")), "{i:?}");
        let i = issues(ONE);
        assert!(i.iter().any(|s| s.contains("has 1 stage")), "{i:?}");
    }

    #[test]
    fn unknown_attach_kind_names_stage_and_reason() {
        let toml = format!("{ONE}[[chains.x.stages]]\nname = \"b\"\nkey = \"cpu\"\ntargets = [\"uprobe:foo\"]\n");
        let i = issues(&toml);
        assert!(
            i.iter().any(|s| s.contains("chains.x.stages[1].targets[0]")
                && s.contains("stage `b`")
                && s.contains("unknown attach kind `uprobe`")),
            "{i:?}"
        );
    }

    #[test]
    fn duplicate_stage_names_are_errors() {
        let toml = format!(
            "{ONE}[[chains.x.stages]]\nname = \"a\"\nkey = \"cpu\"\ntargets = [\"tracepoint:sched:sched_switch\"]\n"
        );
        let i = issues(&toml);
        assert!(i.iter().any(|s| s.contains("duplicate stage name `a`")), "{i:?}");
    }

    #[test]
    fn duplicate_chain_names_are_a_toml_error() {
        let toml = format!("{ONE}{ONE}");
        let i = issues(&toml);
        assert!(i.iter().any(|s| s.to_lowercase().contains("duplicate")), "{i:?}");
    }

    #[test]
    fn missing_key_and_bad_key_are_errors() {
        let toml = "[chains.x]\n[[chains.x.stages]]\nname = \"a\"\ntargets = [\"tracepoint:sched:sched_switch\"]\n[[chains.x.stages]]\nname = \"b\"\nkey = \"arg0->\"\ntargets = [\"tp_btf:sched_switch\"]\n";
        let i = issues(toml);
        assert!(i.iter().any(|s| s.contains("stage `a`") && s.contains("has no key")), "{i:?}");
        assert!(i.iter().any(|s| s.contains("stage `b`") && s.contains("key:")), "{i:?}");
    }

    #[test]
    fn a_stage_clock_is_one_a_tracing_program_can_read() {
        let stage = |clock: &str| {
            format!(
                "{ONE}[[chains.x.stages]]\nname = \"b\"\nkey = \"cpu\"\nclock = \"{clock}\"\ntargets = [\"tracepoint:sched:sched_switch\"]\n"
            )
        };
        for ok in ["monotonic", "boottime", "tai"] {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(stage(ok).as_bytes()).unwrap();
            let loaded = Config::load_with_env(Some(f.path()), Env::prefixed("CLOCKPATH_TEST_NONE_"));
            assert!(loaded.is_ok_and(|l| l.config.chains["x"].stages[1].clock.as_deref() == Some(ok)), "{ok}");
        }
        let i = issues(&stage("coarse"));
        assert!(
            i.iter().any(|s| s.contains("stages[1].clock") && s.contains("refuses bpf_ktime_get_coarse_ns")),
            "{i:?}"
        );
        let i = issues(&stage("realtime"));
        assert!(i.iter().any(|s| s.contains("no CLOCK_REALTIME helper")), "{i:?}");
        let i = issues(&stage("boottim"));
        assert!(i.iter().any(|s| s.contains("did you mean `boottime`?")), "{i:?}");
    }

    #[test]
    fn stage_zero_only_options_are_checked() {
        let toml = format!(
            "{ONE}[[chains.x.stages]]\nname = \"b\"\nkey = \"cpu\"\nfirst_hit_only = true\nmatch_capture = true\ntargets = [\"tracepoint:sched:sched_switch\"]\n"
        );
        let i = issues(&toml);
        assert!(i.iter().any(|s| s.contains("only stage 0 opens")), "{i:?}");
        assert!(i.iter().any(|s| s.contains("match_capture needs")), "{i:?}");
    }

    #[test]
    fn unknown_target_table_key_is_reported() {
        let toml = "[chains.x]\n[[chains.x.stages]]\nname = \"a\"\ntargets = [{ attach = \"tracepoint:sched:sched_switch\", kee = \"cpu\" }]\n";
        let i = issues(toml);
        assert!(i.iter().any(|s| s.contains("kee") && s.contains("did you mean `key`")), "{i:?}");
    }
}
