//! The machine clockpath runs on: kernel, clocksources, host or VM (and which hypervisor),
//! cpufreq and cpuidle governors, C-state limits. Read from /proc, /sys and CPUID; every value
//! that cannot be read is reported as such rather than guessed.

use std::{collections::BTreeSet, fs, path::Path};

use serde::Serialize;

const CLOCKSOURCE_DIR: &str = "/sys/devices/system/clocksource/clocksource0";

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Environment {
    pub kernel: String,
    pub btf: bool,
    pub current_clocksource: String,
    pub available_clocksources: Vec<String>,
    /// `host` or `vm`.
    pub env: String,
    /// Hypervisor name when `env` is `vm` (e.g. `kvm`, `xen`, `vmware`), `none` on a host.
    pub hypervisor: String,
    /// How `env` was decided.
    pub env_evidence: Vec<String>,
    /// cpufreq scaling governors in use (`none` without cpufreq).
    pub cpufreq_governor: String,
    /// cpuidle governor (`none` without cpuidle).
    pub cpuidle_governor: String,
    /// C-state limit from the kernel command line or module parameters (`none` when unlimited).
    pub cstate_limit: String,
    /// Idle states the first CPU offers, with disabled ones marked.
    pub idle_states: Vec<String>,
}

fn read_trim(p: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl Environment {
    pub fn detect() -> Environment {
        let kernel = read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into());
        let (env, hypervisor, env_evidence) = detect_virt();
        Environment {
            kernel,
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            current_clocksource: read_trim(format!("{CLOCKSOURCE_DIR}/current_clocksource"))
                .unwrap_or_else(|| "unknown".into()),
            available_clocksources: read_trim(format!("{CLOCKSOURCE_DIR}/available_clocksource"))
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            env,
            hypervisor,
            env_evidence,
            cpufreq_governor: cpufreq_governor(),
            cpuidle_governor: read_trim("/sys/devices/system/cpu/cpuidle/current_governor")
                .or_else(|| read_trim("/sys/devices/system/cpu/cpuidle/current_governor_ro"))
                .unwrap_or_else(|| "none".into()),
            cstate_limit: cstate_limit(&read_trim("/proc/cmdline").unwrap_or_default()),
            idle_states: idle_states()
                .into_iter()
                .map(|(name, _, disabled)| if disabled { format!("{name} (disabled)") } else { name })
                .collect(),
        }
    }
}

impl Environment {
    /// The `env` label: `configured` (`environment.env`) unless it is `auto`.
    pub fn env_label(&self, configured: &str) -> String {
        if configured == "auto" { self.env.clone() } else { configured.to_string() }
    }
}

/// Hypervisor from the CPUID vendor signature (leaf 0x40000000).
fn cpuid_hypervisor() -> Option<(bool, String)> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // CPUID is always available on x86_64; leaf 1 ECX bit 31 is the hypervisor-present bit.
        let leaf1 = __cpuid(1);
        let present = leaf1.ecx & (1 << 31) != 0;
        if !present {
            return Some((false, String::new()));
        }
        let l = __cpuid(0x4000_0000);
        let mut sig = Vec::with_capacity(12);
        for r in [l.ebx, l.ecx, l.edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        let sig = String::from_utf8_lossy(&sig).trim_matches('\0').trim().to_string();
        let name = match sig.as_str() {
            "KVMKVMKVM" => "kvm",
            "Microsoft Hv" => "hyperv",
            "VMwareVMware" => "vmware",
            "XenVMMXenVMM" => "xen",
            "TCGTCGTCGTCG" => "qemu-tcg",
            "bhyve bhyve" => "bhyve",
            "ACRNACRNACRN" => "acrn",
            "VBoxVBoxVBox" => "virtualbox",
            " lrpepyh  vr" | "lrpepyh  vr" => "parallels",
            "" => "unknown",
            other => return Some((true, format!("unknown ({other})"))),
        };
        Some((true, name.to_string()))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

fn detect_virt() -> (String, String, Vec<String>) {
    let mut evidence = Vec::new();
    let mut hypervisor = None;
    if let Some((present, name)) = cpuid_hypervisor() {
        if present {
            evidence.push(format!("CPUID hypervisor bit set, vendor {name}"));
            hypervisor = Some(name);
        } else {
            evidence.push("CPUID hypervisor bit clear".into());
        }
    }
    if let Some(t) = read_trim("/sys/hypervisor/type") {
        evidence.push(format!("/sys/hypervisor/type = {t}"));
        hypervisor.get_or_insert(t);
    }
    let dmi_vendor = read_trim("/sys/class/dmi/id/sys_vendor");
    let dmi_product = read_trim("/sys/class/dmi/id/product_name");
    if let Some(v) = &dmi_vendor {
        let p = dmi_product.clone().unwrap_or_default();
        let known = [
            ("QEMU", "kvm"),
            ("VMware", "vmware"),
            ("Microsoft Corporation", "hyperv"),
            ("Xen", "xen"),
            ("innotek", "virtualbox"),
            ("Amazon EC2", "kvm"),
            ("Google", "kvm"),
        ];
        if let Some((_, h)) = known.iter().find(|(k, _)| v.contains(k) || p.contains(k)) {
            evidence.push(format!("DMI vendor `{v}`, product `{p}`"));
            hypervisor.get_or_insert(h.to_string());
        }
    }
    match hypervisor {
        Some(h) => ("vm".into(), h, evidence),
        None => ("host".into(), "none".into(), evidence),
    }
}

fn cpufreq_governor() -> String {
    let mut set = BTreeSet::new();
    if let Ok(dir) = fs::read_dir("/sys/devices/system/cpu") {
        for e in dir.filter_map(Result::ok) {
            if let Some(g) = read_trim(e.path().join("cpufreq/scaling_governor")) {
                set.insert(g);
            }
        }
    }
    if set.is_empty() { "none".into() } else { set.into_iter().collect::<Vec<_>>().join(",") }
}

/// The C-state limit set on the kernel command line or by module parameters.
pub fn cstate_limit(cmdline: &str) -> String {
    let mut limits = Vec::new();
    for arg in cmdline.split_whitespace() {
        for key in ["intel_idle.max_cstate=", "processor.max_cstate=", "idle=", "cpuidle.off="] {
            if arg.starts_with(key) {
                limits.push(arg.to_string());
            }
        }
    }
    if limits.is_empty() {
        for (param, label) in [
            ("/sys/module/intel_idle/parameters/max_cstate", "intel_idle.max_cstate"),
            ("/sys/module/processor/parameters/max_cstate", "processor.max_cstate"),
        ] {
            // The defaults (9 for processor, 9 or more for intel_idle) mean "no limit".
            if let Some(v) = read_trim(param)
                && v.parse::<u32>().is_ok_and(|n| n < 8)
            {
                limits.push(format!("{label}={v}"));
            }
        }
    }
    if limits.is_empty() { "none".into() } else { limits.join(",") }
}

/// cpu0's idle states in index order: name, exit latency (µs) as sysfs writes it, disabled.
fn idle_states() -> Vec<(String, String, bool)> {
    let dir = Path::new("/sys/devices/system/cpu/cpu0/cpuidle");
    (0..)
        .map(|i| dir.join(format!("state{i}")))
        .take_while(|d| d.is_dir())
        .map(|d| {
            (
                read_trim(d.join("name")).unwrap_or_default(),
                read_trim(d.join("latency")).unwrap_or_default(),
                read_trim(d.join("disable")).is_some_and(|v| v != "0"),
            )
        })
        .collect()
}

/// Everything a result must say about the machine it was measured on (the investigation
/// documents CPU, scheduler and kernel with every result): the environment plus the kernel
/// command line, CPU, TSC flags, cpufreq and cpuidle drivers, idle states with their exit
/// latencies, scheduler knobs and the kernel clock's synchronisation state.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    #[serde(flatten)]
    pub environment: Environment,
    pub cmdline: String,
    pub cpu_model: String,
    pub vcpus: usize,
    /// constant_tsc, nonstop_tsc, tsc_reliable, tsc_known_freq: those the CPU reports.
    pub tsc_flags: Vec<String>,
    pub cpufreq_driver: String,
    pub cpuidle_driver: String,
    /// `name (exit latency µs)` of each idle state of cpu0.
    pub idle_state_latencies: Vec<String>,
    /// sched_* knobs under /proc/sys/kernel, and the preemption model.
    pub scheduler: std::collections::BTreeMap<String, String>,
    /// None where adjtimex cannot be read.
    pub time_sync: Option<TimeSync>,
    pub clockpath_version: String,
}

/// The kernel clock's discipline, read with `adjtimex` (modes 0: reads only). Units as
/// node_exporter's timex collector converts them, so the metrics join with its `node_timex_*`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimeSync {
    /// adjtimex did not return TIME_ERROR (STA_UNSYNC or STA_CLOCKERR clear).
    pub synchronised: bool,
    pub max_error_us: i64,
    pub est_error_us: i64,
    /// The kernel's offset (ns when STA_NANO, else µs) and frequency (ppm).
    pub offset: i64,
    pub frequency_ppm: f64,
    /// STA_PPSFREQ, STA_PPSTIME, STA_PPSSIGNAL, STA_PPSJITTER, STA_PPSWANDER, STA_PPSERROR as
    /// set: the kernel's own PPS discipline (hardpps), when a source is bound to it.
    pub pps_flags: Vec<String>,
    pub tai_offset_s: i32,
    /// The raw status word.
    pub status: i32,
    pub offset_seconds: f64,
    pub loop_time_constant: i64,
    pub tick_seconds: f64,
    pub pps_frequency_hertz: f64,
    pub pps_jitter_seconds: f64,
    pub pps_shift_seconds: f64,
    pub pps_stability_hertz: f64,
    pub pps_jitter_count: i64,
    pub pps_calibration_count: i64,
    pub pps_error_count: i64,
    pub pps_stability_exceeded_count: i64,
}

impl TimeSync {
    pub fn read() -> Option<TimeSync> {
        // SAFETY: a zeroed timex with modes 0 only reads; adjtimex fills it.
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: t is a valid timex.
        let state = unsafe { libc::adjtimex(&mut t) };
        if state < 0 {
            return None;
        }
        let pps = [
            (libc::STA_PPSFREQ, "PPSFREQ"),
            (libc::STA_PPSTIME, "PPSTIME"),
            (libc::STA_PPSSIGNAL, "PPSSIGNAL"),
            (libc::STA_PPSJITTER, "PPSJITTER"),
            (libc::STA_PPSWANDER, "PPSWANDER"),
            (libc::STA_PPSERROR, "PPSERROR"),
        ]
        .iter()
        .filter(|(bit, _)| t.status & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
        // Offset and PPS jitter are in ns with STA_NANO, else µs; frequencies are ppm × 2^16.
        let sub = if t.status & libc::STA_NANO != 0 { 1e-9 } else { 1e-6 };
        let scaled_ppm = |v: i64| v as f64 / 65536.0;
        Some(TimeSync {
            synchronised: state != libc::TIME_ERROR,
            max_error_us: t.maxerror,
            est_error_us: t.esterror,
            offset: t.offset,
            frequency_ppm: scaled_ppm(t.freq),
            pps_flags: pps,
            tai_offset_s: t.tai,
            status: t.status,
            offset_seconds: t.offset as f64 * sub,
            loop_time_constant: t.constant,
            tick_seconds: t.tick as f64 / 1e6,
            pps_frequency_hertz: scaled_ppm(t.ppsfreq) / 1e6,
            pps_jitter_seconds: t.jitter as f64 * sub,
            pps_shift_seconds: (1i64 << t.shift.clamp(0, 62)) as f64,
            pps_stability_hertz: scaled_ppm(t.stabil) / 1e6,
            pps_jitter_count: t.jitcnt,
            pps_calibration_count: t.calcnt,
            pps_error_count: t.errcnt,
            pps_stability_exceeded_count: t.stbcnt,
        })
    }

    /// One line for people (`doctor`, `/`): synchronised or not, errors, offset, frequency, TAI
    /// offset and the kernel's PPS discipline flags.
    pub fn summary(&self) -> String {
        format!(
            "{} (max error {:.3} ms, estimated {:.3} ms, offset {:.9} s, freq {:+.3} ppm, TAI {} s{})",
            if self.synchronised { "synchronised" } else { "NOT synchronised" },
            self.max_error_us as f64 / 1e3,
            self.est_error_us as f64 / 1e3,
            self.offset_seconds,
            self.frequency_ppm,
            self.tai_offset_s,
            if self.pps_flags.is_empty() {
                String::new()
            } else {
                format!(", kernel PPS: {}", self.pps_flags.join(" "))
            }
        )
    }

    /// The frequency adjustment as a ratio (node_exporter's `frequency_adjustment_ratio`).
    pub fn frequency_adjustment_ratio(&self) -> f64 {
        1.0 + self.frequency_ppm / 1e6
    }

    /// What is wrong with the clock's synchronisation for a measurement, if anything:
    /// unsynchronised, or a maximum error above `max_error_ms` (0: no bound).
    pub fn problem(&self, max_error_ms: u64) -> Option<String> {
        if !self.synchronised {
            return Some(
                "the system clock is not synchronised (adjtimex: TIME_ERROR): wall-clock times are the local clock's"
                    .into(),
            );
        }
        let max_error_ms_now = self.max_error_us as f64 / 1000.0;
        (max_error_ms > 0 && max_error_ms_now > max_error_ms as f64).then(|| {
            format!(
                "the system clock's maximum error is {max_error_ms_now:.1} ms (adjtimex), above time_sync.max_error_ms = {max_error_ms}"
            )
        })
    }
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let flags: Vec<String> = field("flags").unwrap_or_default().split_whitespace().map(str::to_string).collect();
        let mut scheduler = std::collections::BTreeMap::new();
        if let Ok(dir) = fs::read_dir("/proc/sys/kernel") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("sched_")
                    && let Some(v) = read_trim(e.path())
                {
                    scheduler.insert(name, v);
                }
            }
        }
        if let Some(p) = read_trim("/sys/kernel/debug/sched/preempt") {
            scheduler.insert("preempt".into(), p);
        }
        let idle_state_latencies =
            idle_states().into_iter().map(|(name, latency, _)| format!("{name} ({latency} µs)")).collect();
        Machine {
            environment: Environment::detect(),
            cmdline: read_trim("/proc/cmdline").unwrap_or_default(),
            cpu_model: field("model name").unwrap_or_else(|| "unknown".into()),
            vcpus: std::thread::available_parallelism().map_or(0, usize::from),
            tsc_flags: ["constant_tsc", "nonstop_tsc", "tsc_reliable", "tsc_known_freq"]
                .into_iter()
                .filter(|f| flags.iter().any(|x| x == f))
                .map(str::to_string)
                .collect(),
            cpufreq_driver: read_trim("/sys/devices/system/cpu/cpu0/cpufreq/scaling_driver")
                .unwrap_or_else(|| "none".into()),
            cpuidle_driver: read_trim("/sys/devices/system/cpu/cpuidle/current_driver")
                .unwrap_or_else(|| "none".into()),
            idle_state_latencies,
            scheduler,
            time_sync: TimeSync::read(),
            clockpath_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// The few facts small enough to label every trace row with, for `analyze` and
    /// `compare --group-by`.
    pub fn labels(&self) -> Vec<(String, String)> {
        vec![
            ("kernel".into(), self.environment.kernel.clone()),
            ("hypervisor".into(), self.environment.hypervisor.clone()),
            ("vcpus".into(), self.vcpus.to_string()),
            ("cpufreq_governor".into(), self.environment.cpufreq_governor.clone()),
            ("cpuidle_governor".into(), self.environment.cpuidle_governor.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cstate_limit_reads_the_command_line() {
        assert_eq!(
            cstate_limit("ro quiet intel_idle.max_cstate=1 processor.max_cstate=1"),
            "intel_idle.max_cstate=1,processor.max_cstate=1"
        );
        assert_eq!(cstate_limit("idle=poll"), "idle=poll");
    }

    #[test]
    fn time_sync_problems() {
        let mut t = TimeSync::read().expect("adjtimex reads on Linux");
        t.synchronised = true;
        t.max_error_us = 16_000_000;
        assert!(t.problem(100).unwrap().contains("16000.0 ms"), "{:?}", t.problem(100));
        assert_eq!(t.problem(0), None, "no bound");
        t.max_error_us = 50_000;
        assert_eq!(t.problem(100), None);
        t.synchronised = false;
        assert!(t.problem(100).unwrap().contains("not synchronised"));
    }

    #[test]
    fn detect_fills_every_field() {
        let e = Environment::detect();
        assert!(!e.kernel.is_empty());
        assert!(e.env == "host" || e.env == "vm");
        assert!(!e.hypervisor.is_empty());
        assert!(!e.cpufreq_governor.is_empty());
    }
}
