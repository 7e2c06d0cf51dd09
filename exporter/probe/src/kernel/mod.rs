//! What a kernel offers for probing: tracefs (tracepoint formats, the traceable-function list),
//! BTF, kallsyms, the kprobe PMU, clocksources, CPU and pid ranges.
//!
//! Every fact is read through one root directory: `/` for the running kernel, or a fixture
//! directory captured from a kernel (`crate::capture`) that mirrors the same paths
//! (`proc/kallsyms`, `sys/kernel/btf/vmlinux`, `sys/kernel/tracing/events/…`). So the plan
//! resolver runs, and is tested, the same way on a captured kernel as on the live one, without
//! root. Each fact is loaded once, on first use.

pub mod btf;
pub mod btf_slice;
pub mod kvm_exit;
pub mod symbols;
pub mod tracefs;

use std::{
    cell::OnceCell,
    fs,
    path::{Path, PathBuf},
};

use btf::KernelBtf;
pub use symbols::Symbol;
use symbols::{NameSet, SymbolTable};
use tracefs::Tracefs;

/// The kprobe PMU; aya attaches kprobes through it.
pub const KPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";
/// The kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
pub const KALLSYMS: &str = "/proc/kallsyms";
pub const CLOCKSOURCE_DIR: &str = "/sys/devices/system/clocksource/clocksource0";
pub const CPU_POSSIBLE: &str = "/sys/devices/system/cpu/possible";
pub const PID_MAX: &str = "/proc/sys/kernel/pid_max";
pub const OSRELEASE: &str = "/proc/sys/kernel/osrelease";

/// Why kprobes cannot be used on a kernel without the kprobe PMU.
pub fn kprobes_missing_reason() -> String {
    format!(
        "kprobes are not built into this kernel ({KPROBE_PMU_TYPE} is missing: CONFIG_KPROBES/CONFIG_KPROBE_EVENTS)"
    )
}

/// The facts of one kernel, read below `root`.
pub struct Kernel {
    root: PathBuf,
    tracefs: Result<Tracefs, String>,
    /// tracefs is mounted but this process may not read it.
    tracefs_denied: bool,
    btf: OnceCell<Result<KernelBtf, String>>,
    kallsyms: OnceCell<SymbolTable>,
    traceable: OnceCell<Option<NameSet>>,
    kprobe_pmu: bool,
}

impl Kernel {
    /// The running kernel (mounting tracefs if needed).
    pub fn open() -> Kernel {
        let opened = Tracefs::open();
        let denied = matches!(opened, Err(tracefs::TracefsError::Denied { .. }));
        let tracefs = opened.map_err(|e| crate::report(&e));
        if let Err(why) = &tracefs {
            // Not fatal: tp_btf, raw_tp, fentry and kprobe targets need no tracefs.
            tracing::warn!(
                "{why}: tracepoint targets are unusable (tp_btf, raw_tp, fentry and kprobe ones still work)"
            );
        }
        Kernel { tracefs_denied: denied, ..Kernel::with_tracefs(PathBuf::from("/"), tracefs) }
    }

    /// A kernel captured into `root` (see [`capture`]): the same paths below it, tracefs at
    /// `sys/kernel/tracing`. Nothing is mounted and nothing outside `root` is read.
    pub fn fixture(root: impl Into<PathBuf>) -> Kernel {
        let root = root.into();
        let tracing = root.join("sys/kernel/tracing");
        let tracefs = if tracing.is_dir() {
            Ok(Tracefs::at(tracing))
        } else {
            Err(format!("{} is missing: tracefs was not captured", tracing.display()))
        };
        Kernel::with_tracefs(root, tracefs)
    }

    fn with_tracefs(root: PathBuf, tracefs: Result<Tracefs, String>) -> Kernel {
        let kprobe_pmu = root.join(rel(KPROBE_PMU_TYPE)).exists();
        Kernel {
            root,
            tracefs,
            btf: OnceCell::new(),
            kallsyms: OnceCell::new(),
            traceable: OnceCell::new(),
            kprobe_pmu,
            tracefs_denied: false,
        }
    }

    /// Where an absolute kernel path (`/proc/kallsyms`) is read from.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(rel(abs))
    }

    /// The root facts are read from (`/` for the running kernel).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn read(&self, abs: &str) -> Option<String> {
        fs::read_to_string(self.path(abs)).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }

    pub fn tracefs(&self) -> Result<&Tracefs, &str> {
        self.tracefs.as_ref().map_err(String::as_str)
    }

    /// Whether tracefs is mounted but closed to this process (mode 0700, not root).
    pub fn tracefs_denied(&self) -> bool {
        self.tracefs_denied
    }

    pub fn btf(&self) -> Result<&KernelBtf, &str> {
        self.btf
            .get_or_init(|| KernelBtf::load(&self.btf_path()).map_err(|e| crate::report(&e)))
            .as_ref()
            .map_err(String::as_str)
    }

    pub fn btf_path(&self) -> PathBuf {
        self.path(VMLINUX_BTF)
    }

    /// Whether kprobes can be attached at all.
    pub fn kprobe_pmu(&self) -> bool {
        self.kprobe_pmu
    }

    /// A text symbol from kallsyms.
    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.kallsyms.get_or_init(|| SymbolTable::load(&self.path(KALLSYMS))).get(name)
    }

    /// `Some(true)` when ftrace can trace `name`, `Some(false)` when it is notrace, `None` when
    /// the list is not readable.
    pub fn traceable(&self, name: &str) -> Option<bool> {
        self.traceable
            .get_or_init(|| self.tracefs.as_ref().ok().and_then(|t| t.traceable_functions().ok()))
            .as_ref()
            .map(|set| set.contains(name))
    }

    /// The kernel release (`6.1.0-26-amd64`), or `unknown`.
    pub fn release(&self) -> String {
        self.read(OSRELEASE).unwrap_or_else(|| "unknown".into())
    }

    /// Registered clocksources: the available ones plus the current one.
    pub fn clocksources(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .read(&format!("{CLOCKSOURCE_DIR}/available_clocksource"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        if let Some(cur) = self.current_clocksource()
            && !v.contains(&cur)
        {
            v.push(cur);
        }
        v
    }

    /// The clocksource in use.
    pub fn current_clocksource(&self) -> Option<String> {
        self.read(&format!("{CLOCKSOURCE_DIR}/current_clocksource"))
    }

    /// Highest possible CPU id + 1 (from `cpu/possible`, e.g. `0-3`).
    pub fn nr_cpu_ids(&self) -> u32 {
        self.read(CPU_POSSIBLE)
            .and_then(|s| s.split(',').filter_map(|r| r.rsplit('-').next()?.trim().parse::<u32>().ok()).max())
            .map_or(1, |m| m + 1)
    }

    /// Whose VM exit codes this host's KVM reports: the vendor module loaded, else the CPU's
    /// vendor; `None` when neither says (no KVM, an unknown CPU).
    pub fn kvm_isa(&self) -> Option<kvm_exit::Isa> {
        if self.path("/sys/module/kvm_amd").is_dir() {
            return Some(kvm_exit::Isa::Svm);
        }
        if self.path("/sys/module/kvm_intel").is_dir() {
            return Some(kvm_exit::Isa::Vmx);
        }
        let cpuinfo = fs::read_to_string(self.path("/proc/cpuinfo")).ok()?;
        let vendor = cpuinfo.lines().find_map(|l| l.strip_prefix("vendor_id")?.split(':').nth(1))?.trim();
        match vendor {
            "AuthenticAMD" | "HygonGenuine" => Some(kvm_exit::Isa::Svm),
            "GenuineIntel" => Some(kvm_exit::Isa::Vmx),
            _ => None,
        }
    }

    /// Largest pid + 1.
    pub fn pid_max(&self) -> u32 {
        self.read(PID_MAX).and_then(|s| s.parse().ok()).unwrap_or(4_194_304)
    }
}

/// An absolute kernel path, relative to a root.
fn rel(abs: &str) -> &str {
    abs.trim_start_matches('/')
}
