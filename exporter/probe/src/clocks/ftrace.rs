//! The tracefs trace clocks (`trace_clock`: what ftrace, trace-cmd and perf's ftrace stamp
//! with), read through a private tracing instance (`instances/clockpath-audit-PID`) so a tracer
//! the user runs is never touched. For each clock: the instance's `trace_clock` set (which
//! empties the instance's buffer), `trace_marker` lines written between two CLOCK_MONOTONIC
//! reads, and their timestamps read back from the instance's `trace` in raw format (`PID CPU
//! TS # …`: ns, or counts for the clocks that are not in ns).

use std::{
    collections::BTreeMap,
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
};

use clockpath_offline::clockdomain::audit::{CpuOffset, Family};

use super::{ClockInfo, Sample, Source, mono, on_cpu, online_cpus, sample_of, tsc};
use crate::kernel::tracefs::Tracefs;

/// The instance, removed again when the audit ends.
struct Instance {
    dir: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove the clock audit's tracing instance");
        }
    }
}

pub struct Ftrace {
    instance: Result<Instance, String>,
    clocks: Vec<String>,
}

/// How a trace clock's timestamps convert to ns, and what it is.
fn unit(clock: &str) -> Result<(Option<f64>, u64, &'static str, bool), String> {
    // (ns per count, resolution ns, description, per CPU)
    Ok(match clock {
        "local" => (None, 1, "trace_clock=local: sched_clock, per CPU (ftrace's and trace-cmd's default)", true),
        "global" => (None, 1, "trace_clock=global: sched_clock made monotonic across CPUs", false),
        "perf" => (None, 1, "trace_clock=perf: local_clock, as perf stamps", true),
        "mono" => (None, 1, "trace_clock=mono: CLOCK_MONOTONIC (NMI-safe reader)", false),
        "mono_raw" => (None, 1, "trace_clock=mono_raw: CLOCK_MONOTONIC_RAW", false),
        "boot" => (None, 1, "trace_clock=boot: CLOCK_BOOTTIME", false),
        "tai" => (None, 1, "trace_clock=tai: CLOCK_TAI", false),
        "uptime" => {
            // SAFETY: plain libc call.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            (Some(1e9 / hz), (1e9 / hz) as u64, "trace_clock=uptime: jiffies since boot in USER_HZ ticks", false)
        }
        "x86-tsc" => match tsc::ns_per_cycle() {
            Some((ns, _)) => (Some(ns), 1, "trace_clock=x86-tsc: the TSC in cycles", true),
            None => return Err("the TSC frequency is unknown here (see the tsc row)".into()),
        },
        "counter" => return Err("trace_clock=counter is an event counter, not a time: it has no offset".into()),
        other => return Err(format!("trace_clock={other}: no unit known to clockpath for this clock")),
    })
}

impl Ftrace {
    pub fn open() -> Ftrace {
        let tracefs = match Tracefs::open() {
            Ok(t) => t,
            Err(e) => return Ftrace { instance: Err(crate::report(&e)), clocks: Vec::new() },
        };
        let instances = tracefs.root().join("instances");
        remove_stale(&instances);
        let dir = instances.join(format!("clockpath-audit-{}", std::process::id()));
        let instance = match fs::create_dir(&dir) {
            Ok(()) => Instance { dir },
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Instance { dir },
            Err(e) => {
                return Ftrace {
                    instance: Err(format!(
                        "creating a private tracing instance {}: {e} (needs root or write access to tracefs)",
                        dir.display()
                    )),
                    clocks: Vec::new(),
                };
            }
        };
        let clocks = match fs::read_to_string(instance.dir.join("trace_clock")) {
            Ok(s) => s.split_whitespace().map(|c| c.trim_matches(['[', ']']).to_string()).collect(),
            Err(e) => {
                return Ftrace {
                    instance: Err(format!("reading {}/trace_clock: {e}", instance.dir.display())),
                    clocks: Vec::new(),
                };
            }
        };
        if let Err(e) = write_control(&instance.dir.join("options/raw"), "1") {
            return Ftrace { instance: Err(format!("setting {}/options/raw: {e}", instance.dir.display())), clocks };
        }
        Ftrace { instance: Ok(instance), clocks }
    }

    /// Markers on `cpus` (`per_cpu` of them each), with their brackets: (cpu, before, after) by id.
    fn write_markers(
        dir: &std::path::Path,
        cpus: &[u32],
        per_cpu: usize,
    ) -> Result<BTreeMap<u32, (u32, i128, i128)>, String> {
        let mut marker = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join("trace_marker"))
            .map_err(|e| format!("opening trace_marker: {e}"))?;
        let mut brackets = BTreeMap::new();
        let mut id = 0u32;
        for &cpu in cpus {
            let r = on_cpu(cpu, || -> Result<(), String> {
                for _ in 0..per_cpu {
                    let line = format!("clockpath-audit {id}\n");
                    let before = mono();
                    marker.write_all(line.as_bytes()).map_err(|e| format!("writing trace_marker: {e}"))?;
                    let after = mono();
                    brackets.insert(id, (cpu, before, after));
                    id += 1;
                }
                Ok(())
            })?;
            r?;
        }
        Ok(brackets)
    }

    fn read_clock(&self, dir: &std::path::Path, clock: &str, samples: usize) -> Result<Sample, String> {
        let (ns_per_count, resolution, _, per_cpu) = unit(clock)?;
        write_control(&dir.join("trace_clock"), clock).map_err(|e| format!("selecting trace_clock {clock}: {e}"))?;
        let cpus = if per_cpu { online_cpus() } else { vec![current_cpu()] };
        let per = if per_cpu { samples.div_ceil(cpus.len()).max(4) } else { samples.max(1) };
        let brackets = Self::write_markers(dir, &cpus, per)?;
        let text = fs::read_to_string(dir.join("trace")).map_err(|e| format!("reading the instance's trace: {e}"))?;
        // Raw lines: `PID CPU TS # IP clockpath-audit ID`.
        let mut best: BTreeMap<u32, Sample> = BTreeMap::new();
        let mut seen = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((head, msg)) = line.split_once(" # ") else { continue };
            let Some(id) = msg
                .split_whitespace()
                .skip_while(|w| *w != "clockpath-audit")
                .nth(1)
                .and_then(|w| w.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(ts) = head.split_whitespace().nth(2).and_then(|t| t.parse::<u64>().ok()) else { continue };
            let Some(&(cpu, before, after)) = brackets.get(&id) else { continue };
            seen += 1;
            let value = match ns_per_count {
                Some(k) => (ts as f64 * k) as i128,
                None => ts as i128,
            };
            let s = sample_of(before, value, after, resolution);
            if best.get(&cpu).is_none_or(|b| s.uncertainty < b.uncertainty) {
                best.insert(cpu, s);
            }
        }
        if seen == 0 {
            return Err(format!("no marker came back from the instance's trace with trace_clock={clock}"));
        }
        let overall = best.values().min_by_key(|s| s.uncertainty).cloned().ok_or("no marker")?;
        let mut s = overall;
        if per_cpu && best.len() > 1 {
            s.per_cpu = best
                .iter()
                .map(|(&cpu, b)| CpuOffset { cpu, offset_ns: b.offset as i64, uncertainty_ns: b.uncertainty })
                .collect();
        }
        Ok(s)
    }
}

/// Write a tracefs control file of the instance, as root: never through a link.
fn write_control(path: &std::path::Path, value: &str) -> std::io::Result<()> {
    OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(path)?.write_all(value.as_bytes())
}

/// Remove the instances of audits whose process is gone (killed before it could remove its
/// own): each would keep its buffers until the next boot.
fn remove_stale(instances: &std::path::Path) {
    let Ok(entries) = fs::read_dir(instances) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("clockpath-audit-").and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            match fs::remove_dir(e.path()) {
                Ok(()) => {
                    tracing::info!(instance = %name, "removed the tracing instance of a clock audit whose process is gone")
                }
                Err(err) => {
                    tracing::warn!(instance = %name, error = %err, "could not remove a stale clock audit instance")
                }
            }
        }
    }
}

fn current_cpu() -> u32 {
    // SAFETY: plain libc call.
    u32::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0)
}

impl Source for Ftrace {
    fn round(&mut self, samples: usize, _realtime: Option<i128>) -> Vec<(ClockInfo, Result<Sample, String>)> {
        let dir = match &self.instance {
            Ok(i) => i.dir.clone(),
            Err(e) => {
                let info = ClockInfo {
                    name: "ftrace".into(),
                    family: Family::Ftrace,
                    description: "tracefs trace clocks".into(),
                    resolution_ns: 1,
                    ns_per_count: None,
                    modulo_ns: None,
                    note: None,
                };
                return vec![(info, Err(e.clone()))];
            }
        };
        let out = self
            .clocks
            .iter()
            .map(|clock| {
                let u = unit(clock);
                let info = ClockInfo {
                    name: format!("ftrace:{clock}"),
                    family: Family::Ftrace,
                    description: u.as_ref().map(|u| u.2.to_string()).unwrap_or_else(|_| format!("trace_clock={clock}")),
                    resolution_ns: u.as_ref().map(|u| u.1).unwrap_or(1),
                    ns_per_count: u.as_ref().ok().and_then(|u| u.0),
                    modulo_ns: None,
                    note: Some("trace_marker timestamps read back (raw format) from a private instance".into()),
                };
                (info, self.read_clock(&dir, clock, samples))
            })
            .collect();
        // Leave the instance on the default clock with an empty buffer.
        let _ = write_control(&dir.join("trace_clock"), "local");
        out
    }
}
