//! PPS sources: the time reference. Each configured device is read on a thread of its own
//! (a blocking `PPS_FETCH` with a short timeout), so neither the ring reader nor `/metrics`
//! ever waits for a pulse. Every edge goes into the source's [`PulseTrain`] (offset, missed
//! pulses, jitter, reference time) and its offset into a statistics window published like the
//! chains' windows. [`TimeReference::to_reference`] puts a kernel timestamp on the first source
//! whose pulses cover it, or on the system clock, saying which.

pub mod device;

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use clockpath_offline::{
    analysis::align::REFERENCE_LABEL,
    stats::{self, ColumnStats},
    trace::TraceHit,
};

use self::device::{Device, DeviceError};
use crate::{
    config::{PpsConfig, WindowsConfig},
    ktime::{self, Basis, Edge, PulseTrain, WallClock},
};

/// How long one fetch waits: bounds how late the thread notices a stop, a lost signal or a
/// removed device, and sets how often an idle reader wakes.
const FETCH_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("pps.devices[{index}]: {source}")]
pub struct StartError {
    /// Index in `pps.devices` of the entry that named (or discovered) the device.
    pub index: usize,
    #[source]
    pub source: DeviceError,
}

/// The statistics of one closed window of offsets.
#[derive(Clone, Debug)]
pub struct OffsetWindow {
    /// Offsets in seconds: median, SD, bootstrap CI of the median, after outlier rejection.
    pub stats: ColumnStats,
    pub rejected: usize,
    pub end_unix: f64,
}

/// One PPS device and what its pulses say.
#[derive(Debug)]
pub struct PpsSource {
    /// The device's path, as the `device` label.
    pub device: String,
    /// The source's name and path (sysfs).
    pub name: String,
    pub source_path: String,
    train: Mutex<PulseTrain>,
    /// Offsets (s) of the window being filled, and when it started.
    window: Mutex<(Vec<f64>, Instant)>,
    published: Mutex<Option<OffsetWindow>>,
    pub read_errors: AtomicU64,
    /// Times the device went away under the reader (driver unloaded, receiver unplugged).
    pub removals: AtomicU64,
}

/// A consistent read of a source for the metrics.
#[derive(Clone, Debug)]
pub struct SourceSnapshot {
    pub signal_present: bool,
    pub pulses: u64,
    pub missed: u64,
    pub last_offset_ns: Option<i64>,
    pub jitter_ns: Option<f64>,
    pub window: Option<OffsetWindow>,
    pub read_errors: u64,
    pub removals: u64,
    /// Edges dropped as glitches (under half a second after the previous one).
    pub glitches: u64,
}

impl PpsSource {
    /// A source named `device` (its path), `name` and `source_path` (sysfs), fed by `add`.
    pub fn new(device: String, name: String, source_path: String, cfg: &PpsConfig) -> PpsSource {
        PpsSource {
            device,
            name,
            source_path,
            train: Mutex::new(PulseTrain::new(cfg.cable_delay_ns, cfg.lost_after_ms as i64 * 1_000_000)),
            window: Mutex::new((Vec::new(), Instant::now())),
            published: Mutex::new(None),
            read_errors: AtomicU64::new(0),
            removals: AtomicU64::new(0),
        }
    }

    pub fn snapshot(&self) -> SourceSnapshot {
        let now = ktime::monotonic_now_ns() as i64;
        let (signal_present, pulses, missed, glitches, last_offset_ns, jitter_ns) = match self.train.lock() {
            Ok(t) => (t.signal_present(now), t.pulses(), t.missed(), t.glitches(), t.last_offset_ns(), t.jitter_ns()),
            Err(_) => (false, 0, 0, 0, None, None),
        };
        SourceSnapshot {
            signal_present,
            pulses,
            missed,
            last_offset_ns,
            jitter_ns,
            window: self.published.lock().ok().and_then(|w| w.clone()),
            read_errors: self.read_errors.load(Ordering::Relaxed),
            removals: self.removals.load(Ordering::Relaxed),
            glitches,
        }
    }

    /// Reference ns of a monotonic instant on this source's pulses, if they cover it.
    fn reference(&self, monotonic_ns: u64) -> Option<u64> {
        let ns = self.train.lock().ok()?.reference(i64::try_from(monotonic_ns).ok()?)?;
        Some(ns.max(0) as u64)
    }

    /// One edge read from the device.
    pub fn add(&self, edge: Edge) {
        let pulse = match self.train.lock() {
            Ok(mut t) => t.push(edge),
            Err(_) => return,
        };
        let Some(p) = pulse else { return };
        // One line per edge at debug level (`--log clockpath::pps=debug`): what ppstest prints
        // for the same pulse, to compare with it.
        tracing::debug!(
            device = %self.device,
            sequence = edge.sequence,
            assert = %format_args!("{}.{:09}", edge.realtime_ns.div_euclid(1_000_000_000), edge.realtime_ns.rem_euclid(1_000_000_000)),
            offset_ns = p.offset_ns,
            "PPS edge"
        );
        if p.resumed {
            tracing::info!(device = %self.device, missed = p.missed, "PPS signal back");
        } else if p.missed > 0 {
            tracing::debug!(device = %self.device, missed = p.missed, "PPS pulses missed");
        }
        if let Ok(mut w) = self.window.lock() {
            w.0.push(p.offset_ns as f64 / 1e9);
        }
    }

    /// Close the window if it is due: its statistics replace the published ones.
    fn close_window(&self, cfg: &WindowsConfig) {
        let values = {
            let Ok(mut w) = self.window.lock() else { return };
            if w.1.elapsed() < Duration::from_secs(cfg.interval_secs) {
                return;
            }
            w.1 = Instant::now();
            std::mem::take(&mut w.0)
        };
        let published = if values.is_empty() {
            None
        } else {
            match stats::analyze_runs(&[values], 0, cfg.sigma, &cfg.bootstrap) {
                Ok(a) => a.columns.into_iter().next().map(|stats| OffsetWindow {
                    stats,
                    rejected: a.rejection.rejected,
                    end_unix: ktime::realtime_now_ns() as f64 / 1e9,
                }),
                Err(error) => {
                    tracing::warn!(device = %self.device, %error, "PPS offset window not computed");
                    None
                }
            }
        };
        if let Ok(mut p) = self.published.lock() {
            *p = published;
        }
    }
}

/// The time reference: the PPS sources (possibly none) and the system clock to fall back on.
#[derive(Debug)]
pub struct TimeReference {
    wall: Arc<WallClock>,
    sources: Vec<Arc<PpsSource>>,
    /// Devices `auto` found but could not use: (device, why).
    unusable: Vec<(String, String)>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Monotonic ns of the wall clock's last calibration.
    calibrated_at: AtomicU64,
}

/// How often the system-clock fallback is recalibrated.
const RECALIBRATE_NS: u64 = 10_000_000_000;

/// A kernel timestamp put on reference time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReferenceTime<'a> {
    /// ns since the UNIX epoch.
    pub ns: u64,
    pub basis: Basis,
    /// The device whose pulses gave it (for `Basis::Pps`).
    pub device: Option<&'a str>,
}

impl ReferenceTime<'_> {
    /// `pps:/dev/pps0`, `system` (no PPS configured) or `system-signal-lost`: the `reference`
    /// column of traces and the span attribute.
    pub fn label(&self) -> String {
        match (self.basis, self.device) {
            (Basis::Pps, Some(d)) => format!("pps:{d}"),
            (Basis::SystemSignalLost, _) => "system-signal-lost".into(),
            _ => "system".into(),
        }
    }
}

impl TimeReference {
    /// The system clock alone.
    pub fn system(wall: Arc<WallClock>) -> TimeReference {
        TimeReference {
            wall,
            sources: Vec::new(),
            unusable: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::default(),
            calibrated_at: AtomicU64::new(ktime::monotonic_now_ns()),
        }
    }

    /// A reference on sources fed by their `add` (replayed pulses, benchmarks), read by no
    /// thread.
    pub fn with_sources(wall: Arc<WallClock>, sources: Vec<Arc<PpsSource>>) -> TimeReference {
        let mut r = TimeReference::system(wall);
        r.sources = sources;
        r
    }

    /// Open the configured devices and start reading them. A device that cannot be used is an
    /// error naming its entry; `auto` finding no device is a warning.
    pub fn start(cfg: &PpsConfig, windows: &WindowsConfig, wall: Arc<WallClock>) -> Result<TimeReference, StartError> {
        // Named devices first, then what `auto` finds that is not one of them (each device
        // once: two readers of one device would export its series twice).
        let mut seen = std::collections::HashSet::new();
        let mut paths: Vec<(usize, PathBuf)> = Vec::new();
        let mut add = |index: usize, p: PathBuf| {
            if seen.insert(std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone())) {
                paths.push((index, p));
            }
        };
        for (index, d) in cfg.devices.iter().enumerate().filter(|(_, d)| *d != "auto") {
            add(index, PathBuf::from(d));
        }
        if let Some(index) = cfg.devices.iter().position(|d| d == "auto") {
            let found = device::discover();
            if found.is_empty() {
                tracing::warn!("pps.devices = auto: no PPS device in /sys/class/pps; times are the system clock's");
            }
            found.into_iter().for_each(|p| add(index, p));
        }
        let mut devices = Vec::new();
        let mut unusable = Vec::new();
        for (index, path) in paths {
            match Device::open(&path, cfg.edge) {
                Ok(dev) => {
                    tracing::info!(device = %path.display(), name = %dev.name, capabilities = %dev.capabilities.join(","), "PPS source");
                    devices.push(dev);
                }
                // A device named in the configuration must work; one `auto` found is listed.
                Err(source) if cfg.devices.get(index).is_some_and(|d| d == "auto") => {
                    let why = format!("{:#}", anyhow::Error::new(source));
                    tracing::warn!(device = %path.display(), reason = %why, "PPS device found by `auto` is unusable");
                    unusable.push((path.display().to_string(), why));
                }
                Err(source) => return Err(StartError { index, source }),
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut sources = Vec::new();
        for dev in devices {
            let source = Arc::new(PpsSource::new(
                dev.path().display().to_string(),
                dev.name.clone(),
                dev.source_path.clone(),
                cfg,
            ));
            sources.push(source.clone());
            let stop = stop.clone();
            let windows = windows.clone();
            let edge = cfg.edge;
            // The reader gives up its capabilities before `start` returns (all but
            // CAP_SYS_TIME, which re-opening a device that came back needs): the exporter
            // checks every thread's after attaching.
            let (dropped_tx, dropped_rx) = std::sync::mpsc::sync_channel(1);
            let spawned = std::thread::Builder::new()
                .name(format!("pps-{}", dev.path().file_name().unwrap_or_default().to_string_lossy()))
                .spawn(move || {
                    crate::privileges::drop_thread_or_log(&[crate::privileges::PPS_READER_KEEPS], "PPS reader");
                    let _ = dropped_tx.send(());
                    read_loop(dev, edge, &source, &windows, &stop)
                });
            match spawned {
                Ok(t) => {
                    let _ = dropped_rx.recv();
                    threads.push(t)
                }
                Err(error) => tracing::error!(%error, "cannot start a PPS reader thread"),
            }
        }
        Ok(TimeReference {
            wall,
            sources,
            unusable,
            stop,
            threads: Mutex::new(threads),
            calibrated_at: AtomicU64::new(ktime::monotonic_now_ns()),
        })
    }

    pub fn sources(&self) -> &[Arc<PpsSource>] {
        &self.sources
    }

    /// Devices `auto` found but could not use, and why.
    pub fn unusable(&self) -> &[(String, String)] {
        &self.unusable
    }

    pub fn wall(&self) -> &WallClock {
        &self.wall
    }

    /// A kernel monotonic timestamp on reference time: the first source whose pulses cover
    /// it, else the system clock.
    pub fn to_reference(&self, monotonic_ns: u64) -> ReferenceTime<'_> {
        for s in &self.sources {
            if let Some(ns) = s.reference(monotonic_ns) {
                return ReferenceTime { ns, basis: Basis::Pps, device: Some(&s.device) };
            }
        }
        // The fallback follows steps of the wall clock: recalibrated at most every 10 s (the
        // record's own time stands in for now).
        let last = self.calibrated_at.load(Ordering::Relaxed);
        if monotonic_ns.saturating_sub(last) > RECALIBRATE_NS
            && self.calibrated_at.compare_exchange(last, monotonic_ns, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let step = self.wall.recalibrate();
            if step != 0 {
                tracing::info!(step_ns = step, "the system clock was stepped: wall-clock times follow");
            }
        }
        let (ns, basis) = ktime::to_reference(monotonic_ns, self.wall.offset_ns(), None);
        let basis = if self.sources.is_empty() { basis } else { Basis::SystemSignalLost };
        ReferenceTime { ns, basis, device: None }
    }

    /// Put a trace hit on reference time: its `reference_ns`, and the `reference` label saying
    /// which reference that was.
    pub fn stamp(&self, hit: &mut TraceHit) {
        let at = self.to_reference(hit.timestamp_ns);
        hit.reference_ns = Some(at.ns);
        hit.labels.insert(REFERENCE_LABEL.to_string(), at.label());
    }

    /// Stop the reader threads (each notices within one fetch wait).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut threads) = self.threads.lock() {
            for t in threads.drain(..) {
                // A reader parked on a removed or failing device wakes now.
                t.thread().unpark();
                let _ = t.join();
            }
        }
    }
}

impl Drop for TimeReference {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the device is still registered (its sysfs node exists).
fn registered(path: &std::path::Path) -> bool {
    // A udev link (/dev/gpspps0) names the device by its target (/dev/pps0).
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    real.file_name().is_some_and(|n| std::path::Path::new("/sys/class/pps").join(n).exists())
}

fn read_loop(
    dev: Device,
    edge: crate::config::PpsEdge,
    source: &PpsSource,
    windows: &WindowsConfig,
    stop: &AtomicBool,
) {
    let path = dev.path().to_path_buf();
    let mut dev = Some(dev);
    let mut present = false;
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let Some(d) = dev.as_ref() else {
            // Removed: wait for the device to come back (the driver reloaded, the receiver
            // plugged in again) and open it anew.
            if registered(&path) {
                match Device::open(&path, edge) {
                    Ok(d) => {
                        tracing::info!(device = %source.device, name = %d.name, "PPS device back: reading it again");
                        dev = Some(d);
                    }
                    Err(error) => tracing::debug!(device = %source.device, %error, "PPS device not usable yet"),
                }
            }
            std::thread::park_timeout(FETCH_WAIT);
            source.close_window(windows);
            continue;
        };
        match d.fetch(FETCH_WAIT) {
            Ok(Some(ev)) => {
                failing = false;
                // REALTIME − MONOTONIC now, within microseconds of the edge: the edge's monotonic
                // time (a step of the wall clock in between would be a step in its offset).
                let offset = ktime::measure_offset();
                source.add(Edge {
                    realtime_ns: ev.realtime_ns,
                    monotonic_ns: ev.realtime_ns - offset,
                    sequence: ev.sequence,
                });
            }
            Ok(None) => {
                // An unregistered device answers fetches with timeouts for ever: notice it is gone.
                if !registered(&path) {
                    source.removals.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(device = %source.device, "PPS device removed (driver unloaded or unplugged): times fall back to the system clock until it is back");
                    dev = None;
                }
            }
            Err(error) => {
                source.read_errors.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::error!(%error, "PPS read failed; retrying every second");
                    failing = true;
                }
                // Paced (a second), not spinning; still stops promptly.
                for _ in 0..2 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::park_timeout(FETCH_WAIT);
                }
            }
        }
        let now = ktime::monotonic_now_ns() as i64;
        let is_present = source.train.lock().is_ok_and(|t| t.signal_present(now));
        if present && !is_present {
            tracing::warn!(device = %source.device, "PPS signal lost: times fall back to the system clock");
        }
        present = is_present;
        source.close_window(windows);
    }
}
