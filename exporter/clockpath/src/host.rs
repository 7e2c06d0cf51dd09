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
            idle_states: idle_states(),
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

fn idle_states() -> Vec<String> {
    let dir = Path::new("/sys/devices/system/cpu/cpu0/cpuidle");
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut states: Vec<(u32, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n: u32 = e.file_name().to_str()?.strip_prefix("state")?.parse().ok()?;
            let name = read_trim(e.path().join("name"))?;
            let disabled = read_trim(e.path().join("disable")).is_some_and(|d| d != "0");
            Some((n, if disabled { format!("{name} (disabled)") } else { name }))
        })
        .collect();
    states.sort();
    states.into_iter().map(|(_, s)| s).collect()
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
    fn detect_fills_every_field() {
        let e = Environment::detect();
        assert!(!e.kernel.is_empty());
        assert!(e.env == "host" || e.env == "vm");
        assert!(!e.hypervisor.is_empty());
        assert!(!e.cpufreq_governor.is_empty());
    }
}
