//! Capturing a kernel's facts into a fixture directory that [`Kernel::fixture`] reads: the
//! parts of kallsyms, the traceable-function list, tracepoint formats and BTF that a set of
//! chains (and the interference sources) can touch, plus the kprobe PMU, clocksources, CPU and
//! pid ranges. The plan resolver then runs on the fixture exactly as on that kernel, without
//! root (`clockpath doctor --capture DIR`).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use crate::{
    kernel::{
        CLOCKSOURCE_DIR, CPU_POSSIBLE, KALLSYMS, KPROBE_PMU_TYPE, Kernel, OSRELEASE, PID_MAX, VMLINUX_BTF,
        btf_slice::{self, Roots},
    },
    plan::{CLOCKSOURCE_READ_FUNCTIONS, ChainSpec, resolve::SOURCES},
    target::{AttachKind, CLOCKSOURCE_READ, Target},
    value::{Deref, Filter, KeyExpr, ValueExpr},
};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("slicing the BTF of {path}")]
    Btf {
        path: PathBuf,
        #[source]
        source: btf_slice::SliceError,
    },
    #[error("tracefs: {0}")]
    Tracefs(String),
}

/// What a capture holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    pub functions: BTreeSet<String>,
    /// `category:name` of every tracepoint format copied.
    pub tracepoints: BTreeSet<String>,
    pub structs: BTreeSet<String>,
    /// Bytes of the BTF slice.
    pub btf_bytes: usize,
    /// Whether the kernel listed its traceable functions.
    pub traceable_list: bool,
}

/// Every kernel name `chains` (and the interference sources) can refer to, with templates
/// expanded to every known clocksource read function.
fn names(chains: &[ChainSpec], extra_functions: &[&str]) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let (mut functions, mut tracepoints, mut structs) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    functions.extend(extra_functions.iter().map(|f| f.to_string()));
    functions.extend(CLOCKSOURCE_READ_FUNCTIONS.iter().map(|(_, f)| f.to_string()));
    let mut targets: Vec<String> = Vec::new();
    let mut exprs: Vec<String> = Vec::new();
    for c in chains {
        let points = c.stages.iter().flat_map(|s| &s.points).chain(&c.aborts);
        for p in points {
            let filters = p.filter.iter().chain(p.targets.iter().filter_map(|t| t.filter.as_ref()));
            for cond in filters.filter_map(|f| Filter::parse(f).ok()).flat_map(|f| f.conditions) {
                exprs.push(cond.expr.to_string());
                // A kernel function a filter compares with: its address comes from kallsyms.
                functions.extend(cond.symbol);
            }
            for t in &p.targets {
                targets.push(t.attach.clone());
                exprs.push(t.key.clone());
            }
        }
        exprs.extend(c.stages.iter().filter_map(|s| s.capture.clone()));
    }
    for (_, points) in SOURCES {
        for (_, ts) in points {
            targets.extend(ts.iter().map(|(t, _)| t.to_string()));
        }
    }
    for t in targets {
        let expanded: Vec<String> = if t.contains(CLOCKSOURCE_READ) {
            CLOCKSOURCE_READ_FUNCTIONS.iter().map(|(_, f)| t.replace(CLOCKSOURCE_READ, f)).collect()
        } else {
            vec![t]
        };
        for t in expanded.iter().filter_map(|t| t.parse::<Target>().ok()) {
            match t.kind {
                AttachKind::Tracepoint => {
                    tracepoints.insert(t.name.clone());
                }
                AttachKind::TpBtf | AttachKind::RawTracepoint => {
                    tracepoints.insert(t.name.clone());
                }
                _ => {
                    functions.insert(t.name.clone());
                }
            }
        }
    }
    for e in exprs {
        for v in KeyExpr::parse(&e).map(|k| k.0).unwrap_or_default() {
            if let ValueExpr::Arg { deref: Some(Deref { cast: Some(s), .. }), .. }
            | ValueExpr::Ret { deref: Some(Deref { cast: Some(s), .. }) } = v
            {
                structs.insert(s);
            }
        }
    }
    (functions, tracepoints, structs)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CaptureError> {
    let err = |source| CaptureError::Write { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(err)?;
    }
    // Run as root into a directory the user names: never write through a link planted there.
    clockpath_offline::outfile::write(path, bytes).map_err(err)
}

/// Copy an absolute kernel file below `dir`, when it exists.
fn copy_file(kernel: &Kernel, abs: &str, dir: &Path) -> Result<bool, CaptureError> {
    let from = kernel.path(abs);
    match fs::read(&from) {
        Ok(bytes) => write(&dir.join(abs.trim_start_matches('/')), &bytes).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CaptureError::Read { path: from, source }),
    }
}

/// Capture what `chains` (plus `extra_functions`) can ask of `kernel` into `dir`.
pub fn capture(
    kernel: &Kernel,
    chains: &[ChainSpec],
    extra_functions: &[&str],
    dir: &Path,
) -> Result<Captured, CaptureError> {
    let (functions, tracepoints, structs) = names(chains, extra_functions);
    let mut out = Captured { structs: structs.clone(), ..Default::default() };

    // kallsyms: every text symbol with a wanted name (repeats included: they make a name
    // ambiguous for kprobes).
    let path = kernel.path(KALLSYMS);
    let text = fs::read_to_string(&path).map_err(|source| CaptureError::Read { path: path.clone(), source })?;
    let mut kallsyms = String::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some(_), Some("t" | "T"), Some(name)) = (it.next(), it.next(), it.next())
            && functions.contains(name)
        {
            kallsyms.push_str(line);
            kallsyms.push('\n');
            out.functions.insert(name.to_string());
        }
    }
    write(&dir.join(KALLSYMS.trim_start_matches('/')), kallsyms.as_bytes())?;

    // tracefs: traceable functions among the wanted ones, and the wanted tracepoints' formats.
    let tracefs = kernel.tracefs().map_err(|e| CaptureError::Tracefs(e.to_string()))?;
    let tracing = dir.join("sys/kernel/tracing");
    // Some kernels refuse to list them (EPERM under lockdown): then the fixture has no list
    // either, and the resolver sees the same "unknown" it sees live.
    if let Ok(traceable) = tracefs.traceable_functions() {
        let listed: Vec<&str> = functions.iter().filter(|f| traceable.contains(f)).map(String::as_str).collect();
        write(&tracing.join("available_filter_functions"), (listed.join("\n") + "\n").as_bytes())?;
        out.traceable_list = true;
    }
    for name in &tracepoints {
        for cat in tracefs.categories_of(name) {
            let from = tracefs.event_dir(&cat, name).join("format");
            let bytes = fs::read(&from).map_err(|source| CaptureError::Read { path: from.clone(), source })?;
            write(&tracing.join("events").join(&cat).join(name).join("format"), &bytes)?;
            out.tracepoints.insert(format!("{cat}:{name}"));
        }
    }

    // BTF: the slice the wanted functions, tracepoints and structs need.
    let btf_path = kernel.path(VMLINUX_BTF);
    if let Ok(btf) = fs::read(&btf_path) {
        let roots = Roots { functions, tracepoints, structs };
        let sliced = btf_slice::slice(&btf, &roots).map_err(|source| CaptureError::Btf { path: btf_path, source })?;
        out.btf_bytes = sliced.len();
        write(&dir.join(VMLINUX_BTF.trim_start_matches('/')), &sliced)?;
    }

    for abs in [
        KPROBE_PMU_TYPE,
        CPU_POSSIBLE,
        PID_MAX,
        OSRELEASE,
        &format!("{CLOCKSOURCE_DIR}/available_clocksource"),
        &format!("{CLOCKSOURCE_DIR}/current_clocksource"),
    ] {
        copy_file(kernel, abs, dir)?;
    }
    // What `Kernel::kvm_isa` reads: the KVM vendor module loaded, and the CPU's vendor (only
    // that line of cpuinfo).
    // A module's directory is the fact (a built-in one has no initstate to copy): an empty
    // marker file makes it.
    for module in ["/sys/module/kvm_amd", "/sys/module/kvm_intel"] {
        if kernel.path(module).is_dir() {
            write(&dir.join(module.trim_start_matches('/')).join("captured"), b"")?;
        }
    }
    if let Ok(cpuinfo) = fs::read_to_string(kernel.path("/proc/cpuinfo"))
        && let Some(vendor) = cpuinfo.lines().find(|l| l.starts_with("vendor_id"))
    {
        write(&dir.join("proc/cpuinfo"), format!("{vendor}\n").as_bytes())?;
    }
    Ok(out)
}
