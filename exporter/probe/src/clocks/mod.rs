//! The clock audit (`clockpath clocks`): every clock a trace on this machine may be stamped
//! with, its offset from CLOCK_MONOTONIC, how well that is known, and why a clock is missing.
//!
//! Each source ([`posix`], [`bpf`], [`ftrace`], [`tsc`], [`ptp`], [`pps`]) reads its clocks
//! bracketed: a clock read between two CLOCK_MONOTONIC reads gives `offset = value − midpoint`
//! within half the bracket; of several reads the tightest counts. Two rounds, `duration` apart,
//! give each offset's drift. The data model and the table live in
//! `clockpath_offline::clockdomain::audit`.

pub mod bpf;
pub mod ftrace;
pub mod posix;
pub mod pps;
pub mod ptp;
pub mod tsc;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use clockpath_offline::clockdomain::audit::{
    AuditedClock, ClockAudit, CpuOffset, Family, Identity, Measured, REFERENCE, Reading, SCHEMA,
};

/// What the audit reads and for how long.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Between the first and the last round (drift is measured over it).
    pub duration: Duration,
    /// Bracketed reads per clock per round; the tightest counts.
    pub samples: usize,
    /// PPS devices whose phase to report (`[pps]` of the configuration).
    pub pps: Vec<PathBuf>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions { duration: Duration::from_millis(500), samples: 16, pps: Vec::new() }
    }
}

/// A clock as its source describes it.
#[derive(Clone, Debug)]
pub struct ClockInfo {
    pub name: String,
    pub family: Family,
    pub description: String,
    pub resolution_ns: u64,
    pub ns_per_count: Option<f64>,
    pub modulo_ns: Option<u64>,
    pub note: Option<String>,
}

/// One round's reading of one clock.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// clock − CLOCK_MONOTONIC (ns).
    pub offset: i128,
    /// Half the bracket plus the resolution (ns).
    pub uncertainty: u64,
    pub per_cpu: Vec<CpuOffset>,
}

/// A source of clocks: each round, every clock it knows, read or with the reason it cannot be.
pub trait Source: Send {
    fn round(&mut self, samples: usize, realtime_offset: Option<i128>) -> Vec<(ClockInfo, Result<Sample, String>)>;
}

/// CLOCK_MONOTONIC now (ns).
pub fn mono() -> i128 {
    posix::read(libc::CLOCK_MONOTONIC).unwrap_or(0)
}

/// The tightest of `n` bracketed reads: (before, value, after) in CLOCK_MONOTONIC ns.
pub fn bracketed<T>(n: usize, mut read: impl FnMut() -> Result<T, String>) -> Result<(i128, T, i128), String> {
    let mut best: Option<(i128, T, i128)> = None;
    for _ in 0..n.max(1) {
        let before = mono();
        let v = read()?;
        let after = mono();
        if best.as_ref().is_none_or(|(b, _, a)| after - before < a - b) {
            best = Some((before, v, after));
        }
    }
    best.ok_or_else(|| "no read".to_string())
}

/// A value read between `before` and `after` (ns on the clock's scale): its offset sample.
/// A tick-granular clock (resolution > 1 ns) lags the true time by up to a tick, and by more
/// while NO_HZ idle has stopped the tick: two ticks are added to its uncertainty.
pub fn sample_of(before: i128, value_ns: i128, after: i128, resolution_ns: u64) -> Sample {
    let mid = before + (after - before) / 2;
    let half = ((after - before) / 2).max(0) as u64 + u64::from((after - before) % 2 != 0);
    Sample {
        offset: value_ns - mid,
        uncertainty: half + if resolution_ns > 1 { 2 * resolution_ns } else { 0 },
        per_cpu: Vec::new(),
    }
}

/// The CPUs this process may run on (the audit pins itself to each in turn for per-CPU clocks).
pub fn online_cpus() -> Vec<u32> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer and size.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as u32)
        // SAFETY: index within the set.
        .filter(|&c| unsafe { libc::CPU_ISSET(c as usize, &set) })
        .collect()
}

/// Run `f` pinned to `cpu`, then restore this thread's affinity.
pub fn on_cpu<T>(cpu: u32, f: impl FnOnce() -> T) -> Result<T, String> {
    // SAFETY: as in online_cpus.
    let mut old: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer and size.
    unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) };
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: index within CPU_SETSIZE (from online_cpus).
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: valid pointer and size.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(format!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error()));
    }
    let out = f();
    // SAFETY: restores the mask read above.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &old) };
    Ok(out)
}

/// The machine and boot the audit holds for.
pub fn identity() -> Identity {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    // SAFETY: a zeroed utsname is valid; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    let ok = unsafe { libc::uname(&mut u) } == 0;
    let field = |f: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates its fields.
        unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }.to_string_lossy().into_owned()
    };
    let (hostname, kernel) = if ok { (field(&u.nodename), field(&u.release)) } else { (String::new(), String::new()) };
    let cpuinfo = read("/proc/cpuinfo");
    let vm = cpuinfo.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
    const CS: &str = "/sys/devices/system/clocksource/clocksource0";
    Identity {
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        hostname,
        kernel,
        environment: if vm { "vm" } else { "host" }.into(),
        hypervisor: if vm { tsc::hypervisor_vendor() } else { None },
        clocksource: read(&format!("{CS}/current_clocksource")),
        available_clocksources: read(&format!("{CS}/available_clocksource"))
            .split_whitespace()
            .map(String::from)
            .collect(),
    }
}

/// Every source of this machine, in the order the table lists them.
pub fn sources(opts: &AuditOptions) -> Vec<Box<dyn Source>> {
    vec![
        Box::new(posix::Posix),
        Box::new(bpf::Bpf::load()),
        Box::new(ftrace::Ftrace::open()),
        Box::new(tsc::Tsc),
        Box::new(ptp::Ptp::open()),
        Box::new(pps::Pps::new(opts.pps.clone())),
    ]
}

/// Audit this machine: two rounds over every source, `duration` apart.
pub fn audit(opts: &AuditOptions) -> ClockAudit {
    let mut sources = sources(opts);
    audit_with(&mut sources, opts)
}

/// Audit with given sources (the exporter keeps its sources loaded between windows).
pub fn audit_with(sources: &mut [Box<dyn Source>], opts: &AuditOptions) -> ClockAudit {
    let identity = identity();
    let started_monotonic = mono();
    let started_realtime = posix::read(libc::CLOCK_REALTIME).unwrap_or(0);
    let t0 = Instant::now();
    let first = one_round(sources, opts);
    let first_mono = mono();
    if let Some(rest) = opts.duration.checked_sub(t0.elapsed()) {
        // Sampling over time: the second round is what drift is measured against.
        std::thread::sleep(rest);
    }
    let last: BTreeMap<String, (ClockInfo, Result<Sample, String>)> = one_round(sources, opts).into_iter().collect();
    let elapsed = (mono() - first_mono).max(1) as f64;
    let clocks = first
        .into_iter()
        .map(|(name, (info, start))| {
            let end = last.get(&name).map(|(_, r)| r.clone());
            let reading = match (start, end) {
                (Ok(s), Some(Ok(e))) => Reading::Measured(measured(&info, s, e, elapsed)),
                (Err(reason), _) | (Ok(_), Some(Err(reason))) => Reading::Unavailable { reason },
                (Ok(_), None) => Reading::Unavailable { reason: "read in the first round only".into() },
            };
            AuditedClock { name: info.name.clone(), family: info.family, description: info.description, reading }
        })
        .collect();
    ClockAudit {
        schema: SCHEMA.into(),
        identity,
        reference: REFERENCE.into(),
        started_monotonic_ns: started_monotonic.max(0) as u64,
        started_realtime_ns: started_realtime as i64,
        duration_ns: elapsed as u64,
        clocks,
    }
}

type Round = Vec<(String, (ClockInfo, Result<Sample, String>))>;

fn one_round(sources: &mut [Box<dyn Source>], opts: &AuditOptions) -> Round {
    // The realtime offset first: the PPS phase is against the system clock's second.
    let realtime =
        bracketed(opts.samples, || posix::read(libc::CLOCK_REALTIME).ok_or_else(|| "clock_gettime".to_string()))
            .ok()
            .map(|(b, v, a)| sample_of(b, v, a, 1).offset);
    sources
        .iter_mut()
        .flat_map(|s| s.round(opts.samples, realtime))
        .map(|(info, r)| (info.name.clone(), (info, r)))
        .collect()
}

fn measured(info: &ClockInfo, s: Sample, e: Sample, elapsed_ns: f64) -> Measured {
    let clamp = |x: i128| x.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    let drift = if info.modulo_ns.is_some() { 0.0 } else { (e.offset - s.offset) as f64 / elapsed_ns * 1e6 };
    let spread = (!s.per_cpu.is_empty()).then(|| {
        let (lo, hi) =
            s.per_cpu.iter().fold((i64::MAX, i64::MIN), |(lo, hi), c| (lo.min(c.offset_ns), hi.max(c.offset_ns)));
        (hi - lo).max(0) as u64
    });
    Measured {
        offset_ns: clamp(s.offset),
        uncertainty_ns: s.uncertainty,
        offset_end_ns: clamp(e.offset),
        uncertainty_end_ns: e.uncertainty,
        drift_ppm: drift,
        drift_uncertainty_ppm: (s.uncertainty + e.uncertainty) as f64 / elapsed_ns * 1e6,
        resolution_ns: info.resolution_ns,
        ns_per_count: info.ns_per_count,
        modulo_ns: info.modulo_ns,
        per_cpu: s.per_cpu,
        cpu_spread_ns: spread,
        note: info.note.clone(),
    }
}

/// Names of this machine's clocks in an audit, for error messages (`unknown clock`).
pub fn names(audit: &ClockAudit) -> Vec<String> {
    audit.clocks.iter().map(|c| c.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_the_value_against_the_brackets_midpoint() {
        let s = sample_of(1_000, 5_000, 1_100, 1);
        assert_eq!((s.offset, s.uncertainty), (3_950, 50));
        let s = sample_of(1_000, 5_000, 1_101, 4_000_000);
        assert_eq!(s.offset, 3_950);
        assert_eq!(s.uncertainty, 51 + 8_000_000, "half the bracket, rounded up, plus two ticks");
    }

    #[test]
    fn the_tightest_bracket_counts() {
        let mut n = 0;
        let (b, v, a) = bracketed(8, || {
            n += 1;
            Ok(n)
        })
        .unwrap();
        assert!(a >= b && (1..=8).contains(&v));
        let e = bracketed::<()>(3, || Err("refused".into())).unwrap_err();
        assert_eq!(e, "refused");
    }
}
