//! The clock audit around a run or a session: this machine's clocks against CLOCK_MONOTONIC
//! at the start and at the end (`clockpath_probe::clocks`), recorded in the run's summary and
//! the session's report, so a trace carries the offsets that held while it was recorded and a
//! jump between the two (a suspend, a clock step) shows.
//!
//! The sources are opened once, at the start, while the process still holds its capabilities:
//! the BPF programs stay loaded and the tracing instance stays, so the audit at the end needs
//! none (an exporter that dropped its capabilities after attaching still measures every clock).
//!
//! `run` also audits every `clock_audit.interval_secs` on a thread of its own ([`Audits::live`])
//! and publishes the offsets ([`LiveClocks`]), counting a jump when an offset moves beyond
//! what the drift of the interval before explains.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
    time::Duration,
};

use clockpath_offline::clockdomain::audit::{ClockAudit, Reading};
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
        let opts = options(loaded, ROUNDS_APART, loaded.config.clock_audit.samples.into());
        let mut sources = clocks::sources(&opts);
        let at_start = clocks::audit_with(&mut sources, &opts);
        Audits { sources, opts, at_start }
    }

    /// Audit again and close the sources.
    pub fn finish(mut self) -> StartEnd {
        let at_end = clocks::audit_with(&mut self.sources, &self.opts);
        StartEnd { at_start: self.at_start, at_end: Some(at_end) }
    }

    /// Audit every `interval` on a thread of its own, publishing into `shared` (the audit at
    /// the start is its first), until [`LiveAudits::stop`] gives the sources back.
    pub fn live(self, interval: Duration, jump_threshold_ns: u64, shared: SharedClocks) -> std::io::Result<LiveAudits> {
        let (stop, stopped) = mpsc::channel::<()>();
        if let Ok(mut l) = shared.lock() {
            l.update(&self.at_start, jump_threshold_ns, 0.0);
        }
        let thread = std::thread::Builder::new().name("clock-audit".into()).spawn(move || {
            let mut audits = self;
            // A message or a closed channel both mean stop.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let cpu = thread_cpu_seconds();
                let audit = clocks::audit_with(&mut audits.sources, &audits.opts);
                let spent = thread_cpu_seconds() - cpu;
                match shared.lock() {
                    Ok(mut l) => l.update(&audit, jump_threshold_ns, spent),
                    Err(_) => break,
                }
            }
            audits
        })?;
        Ok(LiveAudits { stop, thread })
    }
}

/// The periodic audit's thread.
pub struct LiveAudits {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Audits>,
}

impl LiveAudits {
    /// Stop auditing; the sources come back for the audit at the end.
    pub fn stop(self) -> Option<Audits> {
        let _ = self.stop.send(());
        self.thread.join().ok()
    }
}

/// CPU time this thread has used, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec out-pointer; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc == 0 { ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9 } else { 0.0 }
}

/// The live audit as the metrics endpoint reads it.
pub type SharedClocks = Arc<Mutex<LiveClocks>>;

/// The latest audit of every clock, and the jumps seen between audits.
#[derive(Clone, Debug, Default)]
pub struct LiveClocks {
    pub clocks: BTreeMap<String, LiveClock>,
    /// Audits done (the one at the start included).
    pub audits: u64,
    /// CPU the periodic audits took, in seconds.
    pub cpu_seconds: f64,
    /// CLOCK_REALTIME at the end of the latest audit, in UNIX seconds.
    pub last_unix: f64,
}

/// One clock in the live audit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveClock {
    /// Measured in the latest audit: clock − CLOCK_MONOTONIC at its end, and its uncertainty (ns).
    pub offset_ns: Option<i64>,
    pub uncertainty_ns: u64,
    /// Drift against CLOCK_MONOTONIC (dimensionless): over the last interval without a jump,
    /// else within the latest audit.
    pub drift: Option<f64>,
    /// Offsets that moved beyond drift, uncertainty and the threshold between two audits.
    pub jumps: u64,
    /// CLOCK_MONOTONIC (ns) of `offset_ns`.
    at_ns: i64,
    /// The drift over the last interval and its uncertainty, when that interval had no jump.
    interval_drift: Option<(f64, f64)>,
}

impl LiveClocks {
    /// Take in an audit. A clock's jump is judged against the previous audit: the offset it
    /// had then, carried forward by the drift of the interval before (or, after a start or a
    /// jump, the drift within this audit), explains the new one within both uncertainties, the
    /// drift's uncertainty over the interval, and `threshold_ns`; anything beyond is a jump.
    pub fn update(&mut self, audit: &ClockAudit, threshold_ns: u64, cpu_seconds: f64) {
        self.audits += 1;
        self.cpu_seconds += cpu_seconds;
        let start = audit.started_monotonic_ns as i64;
        let end = start.saturating_add(audit.duration_ns as i64);
        self.last_unix = (audit.started_realtime_ns as f64 + audit.duration_ns as f64) / 1e9;
        for c in &audit.clocks {
            let live = self.clocks.entry(c.name.clone()).or_default();
            let m = match &c.reading {
                Reading::Measured(m) => m,
                Reading::Unavailable { .. } => {
                    // A clock that went away is not published; its history starts again.
                    *live = LiveClock { jumps: live.jumps, ..LiveClock::default() };
                    continue;
                }
            };
            let within = (m.drift_ppm / 1e6, m.drift_uncertainty_ppm / 1e6);
            if let (Some(prev), false) = (live.offset_ns, m.modulo_ns.is_some()) {
                let dt = (start - live.at_ns).max(1) as f64;
                let (drift, drift_u) = live.interval_drift.unwrap_or(within);
                let predicted = prev as f64 + drift * dt;
                let tolerance = threshold_ns as f64 + (live.uncertainty_ns + m.uncertainty_ns) as f64 + drift_u * dt;
                if (m.offset_ns as f64 - predicted).abs() > tolerance {
                    live.jumps += 1;
                    live.interval_drift = None;
                } else {
                    let u = (live.uncertainty_ns + m.uncertainty_ns) as f64 / dt;
                    live.interval_drift = Some(((m.offset_ns - prev) as f64 / dt, u));
                }
            }
            live.offset_ns = Some(m.offset_end_ns);
            live.uncertainty_ns = m.uncertainty_end_ns;
            live.at_ns = end;
            live.drift = Some(live.interval_drift.map_or(within.0, |d| d.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use clockpath_offline::clockdomain::audit::{AuditedClock, Family, Identity, Measured, SCHEMA};

    use super::*;

    const AUDIT_NS: u64 = 100_000_000;

    /// A clock whose offset is `offset_ns` at the audit's start and drifts by `ppm`.
    fn clock(name: &str, offset_ns: i64, ppm: f64, modulo: bool) -> AuditedClock {
        let end = offset_ns + (ppm * AUDIT_NS as f64 / 1e6) as i64;
        AuditedClock {
            name: name.into(),
            family: Family::Posix,
            description: name.into(),
            reading: Reading::Measured(Measured {
                offset_ns,
                uncertainty_ns: 200,
                offset_end_ns: end,
                uncertainty_end_ns: 200,
                drift_ppm: ppm,
                drift_uncertainty_ppm: 400.0 / AUDIT_NS as f64 * 1e6,
                resolution_ns: 1,
                ns_per_count: None,
                modulo_ns: modulo.then_some(1_000_000_000),
                per_cpu: Vec::new(),
                cpu_spread_ns: None,
                note: None,
            }),
        }
    }

    fn audit(at_s: u64, clocks: Vec<AuditedClock>) -> ClockAudit {
        ClockAudit {
            schema: SCHEMA.into(),
            identity: Identity::default(),
            reference: "posix:monotonic".into(),
            started_monotonic_ns: at_s * 1_000_000_000,
            started_realtime_ns: 1_800_000_000_000_000_000 + (at_s * 1_000_000_000) as i64,
            duration_ns: AUDIT_NS,
            clocks,
        }
    }

    /// Audits every 60 s: realtime constant, mono_raw drifting 200 ppm (12 ms a minute, far
    /// beyond the threshold: only the drift explains it), boottime stepping by 5 s (a
    /// suspend) between the third and fourth audit, a PPS phase wrapping.
    fn run(step_at: usize) -> LiveClocks {
        let mut live = LiveClocks::default();
        for i in 0..8usize {
            let t = 1_000 + 60 * i as u64;
            let raw = -236_000_000 + (200.0 * (t * 1_000_000_000 - 1_000_000_000_000) as f64 / 1e6) as i64;
            let boot = 1_111_000_000 + if i >= step_at { 5_000_000_000 } else { 0 };
            let phase = ((i as i64 * 400_000_000) % 1_000_000_000) - 500_000_000;
            let a = audit(
                t,
                vec![
                    clock("posix:realtime", 1_790_000_000_000_000_000, 0.0, false),
                    clock("posix:monotonic_raw", raw, 200.0, false),
                    clock("posix:boottime", boot, 0.0, false),
                    clock("pps:pps0", phase, 0.0, true),
                ],
            );
            live.update(&a, 1_000_000, 0.03);
        }
        live
    }

    #[test]
    fn a_step_is_one_jump_and_drift_is_none() {
        let live = run(3);
        let jumps = |n: &str| live.clocks[n].jumps;
        assert_eq!(jumps("posix:boottime"), 1, "the suspend, once (not again at the audit after)");
        assert_eq!(jumps("posix:realtime"), 0);
        assert_eq!(jumps("posix:monotonic_raw"), 0, "200 ppm over a minute is drift, not a jump");
        assert_eq!(jumps("pps:pps0"), 0, "a phase modulo one second never jumps");
        assert_eq!(live.clocks["posix:boottime"].offset_ns, Some(6_111_000_000));
        let drift = live.clocks["posix:monotonic_raw"].drift.unwrap_or(f64::NAN);
        assert!((drift - 200e-6).abs() < 1e-9, "{drift}");
        assert_eq!(live.audits, 8);
        assert!((live.cpu_seconds - 0.24).abs() < 1e-9);
    }

    #[test]
    fn a_step_in_the_first_interval_is_caught_by_the_drift_within_the_audit() {
        let live = run(1);
        assert_eq!(live.clocks["posix:boottime"].jumps, 1);
        assert_eq!(live.clocks["posix:monotonic_raw"].jumps, 0);
    }

    #[test]
    fn a_step_within_the_threshold_is_not_a_jump_and_an_unavailable_clock_is_not_published() {
        let mut live = LiveClocks::default();
        live.update(&audit(10, vec![clock("posix:tai", 37_000_000_000, 0.0, false)]), 1_000_000, 0.0);
        live.update(&audit(70, vec![clock("posix:tai", 37_000_500_000, 0.0, false)]), 1_000_000, 0.0);
        assert_eq!(live.clocks["posix:tai"].jumps, 0, "0.5 ms < 1 ms threshold");
        live.update(&audit(130, vec![clock("posix:tai", 37_002_500_000, 0.0, false)]), 1_000_000, 0.0);
        assert_eq!(live.clocks["posix:tai"].jumps, 1, "1.5 ms beyond the interval's drift");
        let gone = AuditedClock {
            name: "posix:tai".into(),
            family: Family::Posix,
            description: "CLOCK_TAI".into(),
            reading: Reading::Unavailable { reason: "gone".into() },
        };
        live.update(&audit(190, vec![gone]), 1_000_000, 0.0);
        assert_eq!(live.clocks["posix:tai"].offset_ns, None);
        assert_eq!(live.clocks["posix:tai"].jumps, 1, "the count survives");
    }
}
