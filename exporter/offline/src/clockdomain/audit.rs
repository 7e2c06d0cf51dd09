//! The clock audit's data: every clock a trace may be stamped with, its offset from
//! CLOCK_MONOTONIC at a moment of one boot, how well that offset is known, and why a clock is
//! missing. `clockpath clocks --json` writes it (measured by `clockpath_probe::clocks`);
//! `clockpath explain --clocks` reads it. The JSON schema is documented in
//! docs/src/clocks.md; `schema` names its version.

use std::{fmt::Write as _, path::Path};

use serde::{Deserialize, Serialize};

/// The version written in and required of every audit file.
pub const SCHEMA: &str = "clockpath-clock-audit/1";

/// The clock every offset is measured against.
pub const REFERENCE: &str = "posix:monotonic";

/// One audit of one machine at one time.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClockAudit {
    pub schema: String,
    pub identity: Identity,
    /// Always [`REFERENCE`]: offsets are "clock minus CLOCK_MONOTONIC".
    pub reference: String,
    /// CLOCK_MONOTONIC and CLOCK_REALTIME when the audit began (ns).
    pub started_monotonic_ns: u64,
    pub started_realtime_ns: i64,
    /// From the first sample round to the last (ns); drift is measured over it.
    pub duration_ns: u64,
    pub clocks: Vec<AuditedClock>,
}

/// Which boot of which machine an audit holds for: offsets between clocks hold per boot.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: String,
    pub hostname: String,
    /// `uname -r`.
    pub kernel: String,
    /// "host" or "vm" (the CPU's hypervisor flag).
    pub environment: String,
    /// The hypervisor's CPUID vendor when in a VM (e.g. "KVMKVMKVM").
    pub hypervisor: Option<String>,
    pub clocksource: String,
    pub available_clocksources: Vec<String>,
}

/// Where a clock is read.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `clock_gettime(2)`.
    Posix,
    /// A BPF helper, read inside a BPF program.
    Bpf,
    /// A tracefs `trace_clock`, through a private tracing instance.
    Ftrace,
    /// The CPU's time-stamp counter.
    Tsc,
    /// A PTP hardware clock (`/dev/ptp*`; in a KVM guest `ptp_kvm` is the host's clock).
    Ptp,
    /// A PPS source's phase: its edges against the system clock's second (modulo one second).
    Pps,
}

/// One clock of the audit: measured, or missing with the reason.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditedClock {
    /// Unique in the audit: `posix:boottime`, `bpf:ktime_get_boot_ns`, `ftrace:local`, `tsc`,
    /// `ptp:ptp0`, `pps:pps0`.
    pub name: String,
    pub family: Family,
    /// What a reader of a trace recognises it by (`CLOCK_BOOTTIME`, `trace_clock=local`).
    pub description: String,
    #[serde(flatten)]
    pub reading: Reading,
}

/// A clock's measurement, or why there is none.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reading {
    Measured(Measured),
    Unavailable { reason: String },
}

/// Offsets are `clock − CLOCK_MONOTONIC` in ns, each from the tightest of several bracketed
/// reads: the clock read between two CLOCK_MONOTONIC reads, against their midpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Measured {
    /// At the start of the audit.
    pub offset_ns: i64,
    /// Half the tightest bracket plus the clock's resolution: the offset is within
    /// `offset_ns ± uncertainty_ns`.
    pub uncertainty_ns: u64,
    /// At the end of the audit (same uncertainty rule).
    pub offset_end_ns: i64,
    pub uncertainty_end_ns: u64,
    /// (end − start) / duration, in parts per million; with its uncertainty from the two
    /// offsets' uncertainties.
    pub drift_ppm: f64,
    pub drift_uncertainty_ppm: f64,
    /// The smallest step the clock takes (ns): 1 for ns clocks, the tick for coarse ones.
    pub resolution_ns: u64,
    /// For clocks that count something other than ns: ns per count (jiffies, TSC cycles).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ns_per_count: Option<f64>,
    /// The offset holds modulo this many ns only (a PPS phase: 1 s).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub modulo_ns: Option<u64>,
    /// Per-CPU offsets where the clock is per CPU (ftrace `local`, the TSC).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub per_cpu: Vec<CpuOffset>,
    /// max − min of `per_cpu` offsets (ns).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cpu_spread_ns: Option<u64>,
    /// Anything a reader should know (how it was read, what the offset means).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CpuOffset {
    pub cpu: u32,
    pub offset_ns: i64,
    pub uncertainty_ns: u64,
}

/// An audit file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditFileError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not a clock audit (line {line}, column {column}): {message}")]
    Parse { path: String, line: usize, column: usize, message: String },
    #[error("{path}: audit schema `{found}`, this clockpath reads `{SCHEMA}`")]
    Schema { path: String, found: String },
}

impl ClockAudit {
    /// Read an audit written by `clockpath clocks --json`.
    pub fn read(path: &Path) -> Result<ClockAudit, AuditFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuditFileError::Read { path: p.clone(), source })?;
        Self::parse(&p, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<ClockAudit, AuditFileError> {
        // The schema first, so a file from another version says so rather than failing on a field.
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| AuditFileError::Parse {
            path: path.into(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let found = value.get("schema").and_then(|s| s.as_str()).unwrap_or("(none)");
        if found != SCHEMA {
            return Err(AuditFileError::Schema { path: path.into(), found: found.into() });
        }
        serde_json::from_str(text).map_err(|e| AuditFileError::Parse {
            path: path.into(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }

    pub fn clock(&self, name: &str) -> Option<&AuditedClock> {
        self.clocks.iter().find(|c| c.name == name)
    }

    /// The measured clocks.
    pub fn measured(&self) -> impl Iterator<Item = (&AuditedClock, &Measured)> {
        self.clocks.iter().filter_map(|c| match &c.reading {
            Reading::Measured(m) => Some((c, m)),
            Reading::Unavailable { .. } => None,
        })
    }

    /// The table `clockpath clocks` prints.
    pub fn table(&self) -> String {
        let id = &self.identity;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "clock audit of {} (boot {}, kernel {}, {}{}), clocksource {}; offsets are clock − CLOCK_MONOTONIC, over {:.3} s",
            id.hostname,
            id.boot_id,
            id.kernel,
            id.environment,
            id.hypervisor.as_deref().map(|h| format!(" on {h}")).unwrap_or_default(),
            id.clocksource,
            self.duration_ns as f64 / 1e9
        );
        let rows: Vec<[String; 6]> = self
            .clocks
            .iter()
            .map(|c| match &c.reading {
                Reading::Measured(m) => [
                    c.name.clone(),
                    format_offset(m.offset_ns),
                    format!("± {}", format_ns(m.uncertainty_ns as f64)),
                    if m.drift_uncertainty_ppm > 1000.0 {
                        "—".into()
                    } else {
                        format!("{:+.2} ± {:.2}", m.drift_ppm, m.drift_uncertainty_ppm)
                    },
                    format_ns(m.resolution_ns as f64),
                    [
                        m.cpu_spread_ns.map(|s| format!("CPU spread {}", format_ns(s as f64))),
                        m.modulo_ns.map(|n| format!("modulo {}", format_ns(n as f64))),
                        Some(c.description.clone()),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; "),
                ],
                Reading::Unavailable { reason } => {
                    [c.name.clone(), "unavailable".into(), String::new(), String::new(), String::new(), reason.clone()]
                }
            })
            .collect();
        let head = ["clock", "offset", "uncertainty", "drift (ppm)", "resolution", "notes"];
        let mut width = head.map(str::len);
        for r in &rows {
            for (w, cell) in width.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut l = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(cell);
                } else if i == 1 || i == 3 {
                    let _ = write!(l, "{:>w$}  ", cell, w = width[i]);
                } else {
                    let _ = write!(l, "{:<w$}  ", cell, w = width[i]);
                }
            }
            l.trim_end().to_string()
        };
        let _ = writeln!(s, "{}", line(&head.map(String::from)));
        for r in &rows {
            let _ = writeln!(s, "{}", line(r));
        }
        s
    }
}

/// A signed offset in the unit that keeps it readable, with ns precision under a second.
pub fn format_offset(ns: i64) -> String {
    let a = ns.unsigned_abs();
    let sign = if ns < 0 { "−" } else { "+" };
    if a >= 86_400_000_000_000 {
        format!("{sign}{:.9} s ({:.1} d)", a as f64 / 1e9, a as f64 / 86_400e9)
    } else if a >= 1_000_000_000 {
        format!("{sign}{}.{:09} s", a / 1_000_000_000, a % 1_000_000_000)
    } else {
        format!("{sign}{}", format_ns(a as f64))
    }
}

/// ns, µs, ms or s with three significant decimals.
pub fn format_ns(ns: f64) -> String {
    let a = ns.abs();
    if a < 1e3 {
        format!("{ns:.0} ns")
    } else if a < 1e6 {
        format!("{:.3} µs", ns / 1e3)
    } else if a < 1e9 {
        format!("{:.3} ms", ns / 1e6)
    } else {
        format!("{:.6} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn measured(offset_ns: i64, uncertainty_ns: u64) -> Reading {
        Reading::Measured(Measured {
            offset_ns,
            uncertainty_ns,
            offset_end_ns: offset_ns,
            uncertainty_end_ns: uncertainty_ns,
            drift_ppm: 0.0,
            drift_uncertainty_ppm: 0.01,
            resolution_ns: 1,
            ns_per_count: None,
            modulo_ns: None,
            per_cpu: Vec::new(),
            cpu_spread_ns: None,
            note: None,
        })
    }

    fn audit() -> ClockAudit {
        ClockAudit {
            schema: SCHEMA.into(),
            identity: Identity { boot_id: "b".into(), environment: "host".into(), ..Default::default() },
            reference: REFERENCE.into(),
            started_monotonic_ns: 1,
            started_realtime_ns: 2,
            duration_ns: 500_000_000,
            clocks: vec![
                AuditedClock {
                    name: "posix:boottime".into(),
                    family: Family::Posix,
                    description: "CLOCK_BOOTTIME".into(),
                    reading: measured(5_000_000_000, 40),
                },
                AuditedClock {
                    name: "ptp:ptp0".into(),
                    family: Family::Ptp,
                    description: "PTP hardware clock".into(),
                    reading: Reading::Unavailable { reason: "no /dev/ptp* on this machine".into() },
                },
            ],
        }
    }

    #[test]
    fn round_trips_through_json_with_reasons_kept() {
        let a = audit();
        let text = serde_json::to_string_pretty(&a).unwrap();
        assert!(text.contains("\"status\": \"unavailable\""), "{text}");
        assert!(text.contains("\"reason\": \"no /dev/ptp* on this machine\""), "{text}");
        assert_eq!(ClockAudit::parse("a.json", &text).unwrap(), a);
    }

    #[test]
    fn refuses_other_schemas_and_locates_parse_errors() {
        let e = ClockAudit::parse("x.json", r#"{"schema": "clockpath-clock-audit/0"}"#).unwrap_err();
        assert!(e.to_string().contains("audit schema `clockpath-clock-audit/0`"), "{e}");
        let e = ClockAudit::parse("x.json", "{\n  \"schema\": ").unwrap_err();
        assert!(e.to_string().starts_with("x.json: not a clock audit (line 2"), "{e}");
        let e = ClockAudit::parse("x.json", &format!(r#"{{"schema": "{SCHEMA}"}}"#)).unwrap_err();
        assert!(e.to_string().contains("missing field"), "{e}");
    }

    #[test]
    fn table_lists_unavailable_clocks_with_their_reason() {
        let t = audit().table();
        assert!(t.contains("posix:boottime") && t.contains("+5.000000000 s"), "{t}");
        assert!(t.contains("ptp:ptp0") && t.contains("unavailable") && t.contains("no /dev/ptp*"), "{t}");
    }

    #[test]
    fn offsets_format_with_sign_and_unit() {
        assert_eq!(format_offset(1_111_000_141), "+1.111000141 s");
        assert_eq!(format_offset(-24_600_000), "−24.600 ms");
        assert_eq!(format_offset(37), "+37 ns");
    }
}
