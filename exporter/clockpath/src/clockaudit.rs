//! The clock audit around a run or a session: this machine's clocks against CLOCK_MONOTONIC
//! at the start and at the end (`clockpath_probe::clocks`), recorded in the run's summary and
//! the session's report, so a trace carries the offsets that held while it was recorded and a
//! jump between the two (a suspend, a clock step) shows.
//!
//! The sources are opened once, at the start, while the process still holds its capabilities:
//! the BPF programs stay loaded and the tracing instance stays, so the audit at the end needs
//! none (an exporter that dropped its capabilities after attaching still measures every clock).

use std::{path::PathBuf, time::Duration};

use clockpath_offline::clockdomain::audit::ClockAudit;
use clockpath_probe::clocks::{self, AuditOptions, Source};
use serde::Serialize;

use crate::config::Loaded;

/// Rounds this far apart at the start and end of a run: drift over a run comes from the two
/// audits, not from within one.
const ROUNDS_APART: Duration = Duration::from_millis(100);

/// The audit's options for a configuration: its PPS devices (`auto`: every one present).
pub fn options(loaded: &Loaded, duration: Duration, samples: usize) -> AuditOptions {
    let d = &loaded.config.pps.devices;
    let pps = if d.iter().any(|x| x == "auto") {
        crate::pps::device::discover()
    } else {
        d.iter().map(PathBuf::from).collect()
    };
    AuditOptions { duration, samples, pps }
}

/// The audits of a run or session.
#[derive(Clone, Debug, Serialize)]
pub struct StartEnd {
    pub at_start: ClockAudit,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_end: Option<ClockAudit>,
}

/// Sources opened at the start, kept for the end.
pub struct Audits {
    sources: Vec<Box<dyn Source>>,
    opts: AuditOptions,
    at_start: ClockAudit,
}

impl Audits {
    /// Open the sources and audit now.
    pub fn start(loaded: &Loaded) -> Audits {
        let opts = options(loaded, ROUNDS_APART, 8);
        let mut sources = clocks::sources(&opts);
        let at_start = clocks::audit_with(&mut sources, &opts);
        Audits { sources, opts, at_start }
    }

    /// Audit again and close the sources.
    pub fn finish(mut self) -> StartEnd {
        let at_end = clocks::audit_with(&mut self.sources, &self.opts);
        StartEnd { at_start: self.at_start, at_end: Some(at_end) }
    }
}
