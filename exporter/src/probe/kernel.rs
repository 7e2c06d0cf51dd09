//! What the running kernel offers for probing: tracefs, BTF, kallsyms, the traceable-function
//! list and the kprobe PMU. Each is loaded once, on first use.

use std::{
    cell::OnceCell,
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
};

use super::{
    btf::{KernelBtf, VMLINUX_BTF},
    tracefs::Tracefs,
};

/// The kprobe PMU; aya attaches kprobes through it.
pub const KPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";

/// Why kprobes cannot be used on a kernel without the kprobe PMU.
pub fn kprobes_missing_reason() -> String {
    format!(
        "kprobes are not built into this kernel ({KPROBE_PMU_TYPE} is missing: CONFIG_KPROBES/CONFIG_KPROBE_EVENTS)"
    )
}

/// A kernel symbol table entry count and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub addr: u64,
    /// How many text symbols share the name (static functions can repeat).
    pub count: u32,
}

pub struct Kernel {
    tracefs: Result<Tracefs, String>,
    btf_path: PathBuf,
    btf: OnceCell<Result<KernelBtf, String>>,
    kallsyms: OnceCell<HashMap<String, Symbol>>,
    traceable: OnceCell<Option<HashSet<String>>>,
    kprobe_pmu: bool,
}

impl Kernel {
    /// Probe the running kernel (mounting tracefs if needed).
    pub fn open() -> Kernel {
        Kernel {
            tracefs: Tracefs::open().map_err(|e| super::report(&e)),
            btf_path: PathBuf::from(VMLINUX_BTF),
            btf: OnceCell::new(),
            kallsyms: OnceCell::new(),
            traceable: OnceCell::new(),
            kprobe_pmu: Path::new(KPROBE_PMU_TYPE).exists(),
        }
    }

    pub fn tracefs(&self) -> Result<&Tracefs, &str> {
        self.tracefs.as_ref().map_err(String::as_str)
    }

    pub fn btf(&self) -> Result<&KernelBtf, &str> {
        self.btf
            .get_or_init(|| KernelBtf::load(&self.btf_path).map_err(|e| super::report(&e)))
            .as_ref()
            .map_err(String::as_str)
    }

    pub fn btf_path(&self) -> &Path {
        &self.btf_path
    }

    /// Whether kprobes can be attached at all.
    pub fn kprobe_pmu(&self) -> bool {
        self.kprobe_pmu
    }

    /// A text symbol from /proc/kallsyms.
    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.kallsyms.get_or_init(load_kallsyms).get(name).copied()
    }

    /// `Some(true)` when ftrace can trace `name`, `Some(false)` when it is notrace, `None` when
    /// the list is not readable.
    pub fn traceable(&self, name: &str) -> Option<bool> {
        self.traceable
            .get_or_init(|| self.tracefs.as_ref().ok().and_then(|t| t.traceable_functions().ok()))
            .as_ref()
            .map(|set| set.contains(name))
    }
}

/// Highest possible CPU id + 1 (from /sys/devices/system/cpu/possible, e.g. `0-3`).
pub fn nr_cpu_ids() -> u32 {
    fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| s.trim().split(',').filter_map(|r| r.rsplit('-').next()?.trim().parse::<u32>().ok()).max())
        .map_or(1, |m| m + 1)
}

/// Largest pid + 1 (/proc/sys/kernel/pid_max).
pub fn pid_max() -> u32 {
    fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(4_194_304)
}

fn load_kallsyms() -> HashMap<String, Symbol> {
    let mut map: HashMap<String, Symbol> = HashMap::new();
    let Ok(text) = fs::read_to_string("/proc/kallsyms") else {
        return map;
    };
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(addr), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if !matches!(ty, "t" | "T") {
            continue;
        }
        let addr = u64::from_str_radix(addr, 16).unwrap_or(0);
        map.entry(name.to_string()).and_modify(|s| s.count += 1).or_insert(Symbol { addr, count: 1 });
    }
    map
}
