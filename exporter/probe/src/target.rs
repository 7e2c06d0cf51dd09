//! Attach targets: `fentry:X`, `kprobe:X`, `tp_btf:X`, `tracepoint:cat:name`,
//! `raw_tracepoint:name`, `kretprobe:X`, `fexit:X`.

use std::fmt;

use clockpath_common::limits::{
    FENTRY_SLOTS, FEXIT_SLOTS, KPROBE_SLOTS, KRETPROBE_SLOTS, RAW_TRACEPOINT_SLOTS, SlotRange, TP_BTF_SLOTS,
    TRACEPOINT_SLOTS,
};
use serde::{Deserialize, Serialize};

/// How a slot program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachKind {
    Fentry,
    Kprobe,
    TpBtf,
    Tracepoint,
    RawTracepoint,
    Kretprobe,
    Fexit,
}

impl AttachKind {
    pub const ALL: [AttachKind; 7] = [
        AttachKind::Fentry,
        AttachKind::Kprobe,
        AttachKind::TpBtf,
        AttachKind::Tracepoint,
        AttachKind::RawTracepoint,
        AttachKind::Kretprobe,
        AttachKind::Fexit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttachKind::Fentry => "fentry",
            AttachKind::Kprobe => "kprobe",
            AttachKind::TpBtf => "tp_btf",
            AttachKind::Tracepoint => "tracepoint",
            AttachKind::RawTracepoint => "raw_tracepoint",
            AttachKind::Kretprobe => "kretprobe",
            AttachKind::Fexit => "fexit",
        }
    }

    fn from_prefix(s: &str) -> Option<Self> {
        Some(match s {
            "fentry" => AttachKind::Fentry,
            "kprobe" => AttachKind::Kprobe,
            "tp_btf" => AttachKind::TpBtf,
            "tracepoint" | "tp" => AttachKind::Tracepoint,
            "raw_tracepoint" | "raw_tp" => AttachKind::RawTracepoint,
            "kretprobe" => AttachKind::Kretprobe,
            "fexit" => AttachKind::Fexit,
            _ => return None,
        })
    }

    /// The slot programs of this kind in the BPF object.
    pub fn slots(self) -> SlotRange {
        match self {
            AttachKind::Fentry => FENTRY_SLOTS,
            AttachKind::Kprobe => KPROBE_SLOTS,
            AttachKind::TpBtf => TP_BTF_SLOTS,
            AttachKind::Tracepoint => TRACEPOINT_SLOTS,
            AttachKind::RawTracepoint => RAW_TRACEPOINT_SLOTS,
            AttachKind::Kretprobe => KRETPROBE_SLOTS,
            AttachKind::Fexit => FEXIT_SLOTS,
        }
    }

    /// Name of slot program `i` of this kind (see `ebpf/src/*.rs`).
    pub fn program_name(self, i: u32) -> String {
        let prefix = match self {
            AttachKind::Fentry => "cp_fentry",
            AttachKind::Kprobe => "cp_kp",
            AttachKind::TpBtf => "cp_btf",
            AttachKind::Tracepoint => "cp_tp",
            AttachKind::RawTracepoint => "cp_raw",
            AttachKind::Kretprobe => "cp_krp",
            AttachKind::Fexit => "cp_fexit",
        };
        format!("{prefix}_{i}")
    }

    /// Kinds that probe a kernel function (as opposed to a tracepoint).
    pub fn is_function(self) -> bool {
        matches!(self, AttachKind::Fentry | AttachKind::Kprobe | AttachKind::Kretprobe | AttachKind::Fexit)
    }

    /// Kinds whose programs attach by a BTF type id of the kernel (loading needs its BTF).
    pub fn is_btf_typed(self) -> bool {
        matches!(self, AttachKind::TpBtf | AttachKind::Fentry | AttachKind::Fexit)
    }
}

impl fmt::Display for AttachKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed attach target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub kind: AttachKind,
    /// Tracepoint category (`tracepoint` only).
    pub category: Option<String>,
    /// Function or tracepoint name.
    pub name: String,
}

/// Why a target string does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetParseError {
    #[error(
        "`{0}` has no attach kind: write it as kind:name, e.g. tracepoint:sched:sched_switch or kprobe:change_clocksource"
    )]
    MissingKind(String),
    #[error(
        "unknown attach kind `{kind}` in `{target}` (known: fentry, kprobe, tp_btf, tracepoint, raw_tracepoint, kretprobe, fexit)"
    )]
    UnknownKind { kind: String, target: String },
    #[error("`{0}`: a tracepoint is written tracepoint:<category>:<name>, e.g. tracepoint:sched:sched_switch")]
    TracepointNeedsCategory(String),
    #[error("`{0}`: the name is empty or has characters a kernel symbol cannot have")]
    BadName(String),
}

fn valid_symbol(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

impl std::str::FromStr for Target {
    type Err = TargetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (kind, rest) = s.split_once(':').ok_or_else(|| TargetParseError::MissingKind(s.to_string()))?;
        let kind = AttachKind::from_prefix(kind)
            .ok_or_else(|| TargetParseError::UnknownKind { kind: kind.to_string(), target: s.to_string() })?;
        let (category, name) = if kind == AttachKind::Tracepoint {
            let (cat, name) =
                rest.split_once(':').ok_or_else(|| TargetParseError::TracepointNeedsCategory(s.to_string()))?;
            if !valid_symbol(cat) {
                return Err(TargetParseError::BadName(s.to_string()));
            }
            (Some(cat.to_string()), name)
        } else {
            (None, rest)
        };
        if !valid_symbol(name) {
            return Err(TargetParseError::BadName(s.to_string()));
        }
        Ok(Target { kind, category, name: name.to_string() })
    }
}

/// A template variable a target name may contain (`fentry:{clocksource_read}`): the resolver
/// expands it into one probe point per registered clocksource's read function.
pub const CLOCKSOURCE_READ: &str = "{clocksource_read}";
/// Every template variable.
pub const TEMPLATES: &[&str] = &[CLOCKSOURCE_READ];

impl Target {
    /// Check a target as written in a configuration, where the name may be a template.
    pub fn check_pattern(s: &str) -> Result<(), TargetParseError> {
        let mut name = s.to_string();
        for tpl in TEMPLATES {
            name = name.replace(tpl, "template");
        }
        name.parse::<Target>().map(|_| ()).map_err(|e| match e {
            TargetParseError::MissingKind(_) => TargetParseError::MissingKind(s.to_string()),
            TargetParseError::UnknownKind { kind, .. } => TargetParseError::UnknownKind { kind, target: s.to_string() },
            TargetParseError::TracepointNeedsCategory(_) => TargetParseError::TracepointNeedsCategory(s.to_string()),
            TargetParseError::BadName(_) => TargetParseError::BadName(s.to_string()),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.category {
            Some(cat) => write!(f, "{}:{}:{}", self.kind, cat, self.name),
            None => write!(f, "{}:{}", self.kind, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let cases = [
            ("fentry:change_clocksource", AttachKind::Fentry, None, "change_clocksource"),
            ("kprobe:read_hpet", AttachKind::Kprobe, None, "read_hpet"),
            ("tp_btf:sched_switch", AttachKind::TpBtf, None, "sched_switch"),
            ("tracepoint:sched:sched_switch", AttachKind::Tracepoint, Some("sched"), "sched_switch"),
            ("raw_tracepoint:sched_switch", AttachKind::RawTracepoint, None, "sched_switch"),
            ("kretprobe:do_nanosleep", AttachKind::Kretprobe, None, "do_nanosleep"),
            ("fexit:timekeeping_update", AttachKind::Fexit, None, "timekeeping_update"),
        ];
        for (s, kind, cat, name) in cases {
            let t: Target = s.parse().unwrap();
            assert_eq!(t.kind, kind);
            assert_eq!(t.category.as_deref(), cat);
            assert_eq!(t.name, name);
            assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn templates_are_valid_names_in_patterns_only() {
        assert!(Target::check_pattern("fentry:{clocksource_read}").is_ok());
        assert!("fentry:{clocksource_read}".parse::<Target>().is_err());
        let e = Target::check_pattern("uprobe:{clocksource_read}").unwrap_err();
        assert!(e.to_string().contains("`uprobe:{clocksource_read}`"), "{e}");
    }

    #[test]
    fn rejects_bad_targets_with_a_reason() {
        assert!(matches!("uprobe:foo".parse::<Target>(), Err(TargetParseError::UnknownKind { .. })));
        assert!(matches!("change_clocksource".parse::<Target>(), Err(TargetParseError::MissingKind(_))));
        assert!(matches!(
            "tracepoint:sched_switch".parse::<Target>(),
            Err(TargetParseError::TracepointNeedsCategory(_))
        ));
        assert!(matches!("kprobe:".parse::<Target>(), Err(TargetParseError::BadName(_))));
        assert!(matches!("kprobe:a b".parse::<Target>(), Err(TargetParseError::BadName(_))));
    }
}
