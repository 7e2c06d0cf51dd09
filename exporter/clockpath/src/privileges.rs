//! Linux capabilities: which ones the exporter uses and what each one's absence disables, and
//! giving them all up once the probes are attached.
//!
//! Capabilities belong to threads, not to the process: `capset` changes only the calling
//! thread. So every thread gives up its own: the runtime's threads as they start, the PPS
//! readers as they start (keeping CAP_SYS_TIME, which re-opening a device needs), and the main
//! thread right after attaching, before it starts the sink threads, which inherit nothing.
//! [`verify`] then reads every thread's sets back from the kernel.

use caps::{CapSet, Capability, CapsHashSet};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("reading this thread's capabilities")]
    Read(#[source] caps::errors::CapsError),
    #[error("giving up capabilities ({what})")]
    Drop {
        what: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("setting no_new_privs")]
    NoNewPrivs(#[source] std::io::Error),
    #[error("listing this process's threads")]
    Threads(#[source] std::io::Error),
    #[error("thread {tid} ({name}) still holds {caps} after giving up capabilities")]
    StillHeld { tid: i32, name: String, caps: String },
}

/// The one capability a PPS reader keeps: re-opening a device that came back enables its
/// capture edge (PPS_SETPARAMS).
pub const PPS_READER_KEEPS: Capability = Capability::CAP_SYS_TIME;

/// The one capability the web config reader thread keeps (`http::config_reader`): reading a
/// rotated key only its owner may read, after the drop.
pub const WEB_CONFIG_READER_KEEPS: Capability = Capability::CAP_DAC_READ_SEARCH;
/// That thread's name, by which [`verify`] allows it its capability.
pub const WEB_CONFIG_READER_THREAD: &str = "web-config";

/// The capabilities the exporter can use (see [`missing`] for what each is for).
pub const USED: &[&str] = &[
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_SYSLOG",
    "CAP_SYS_ADMIN",
    "CAP_SYS_TIME",
    "CAP_DAC_READ_SEARCH",
    "CAP_DAC_OVERRIDE",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_RESOURCE",
];

/// Give up every capability of the calling thread except those of `keep` it holds: bounding
/// set (where CAP_SETPCAP allows), ambient, inheritable, effective and permitted; then set
/// no_new_privs, so nothing this thread executes can gain any back.
pub fn drop_thread(keep: &[Capability]) -> Result<(), PrivilegeError> {
    let drop_err = |what| move |source| PrivilegeError::Drop { what, source };
    let permitted = caps::read(None, CapSet::Permitted).map_err(PrivilegeError::Read)?;
    let kept: CapsHashSet = keep.iter().copied().filter(|c| permitted.contains(c)).collect();
    // A uid-0 thread regains its bounding set on exec: shrink it while CAP_SETPCAP allows.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        let bounding = caps::read(None, CapSet::Bounding).map_err(PrivilegeError::Read)?;
        for cap in bounding.into_iter().filter(|c| !kept.contains(c)) {
            caps::drop(None, CapSet::Bounding, cap).map_err(drop_err("bounding"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(drop_err("ambient"))?;
    // Effective first: it must stay a subset of permitted at every step.
    caps::set(None, CapSet::Effective, &kept).map_err(drop_err("effective"))?;
    caps::clear(None, CapSet::Inheritable).map_err(drop_err("inheritable"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(drop_err("permitted"))?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes an integer flag and no pointers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(PrivilegeError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `(major, minor)` of a kernel release such as `6.1.0-26-amd64`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Why this kernel would refuse the exporter's reads of its own maps once it holds no
/// capability, if it would: before 5.19, `kernel.unprivileged_bpf_disabled` refused every
/// bpf() command without CAP_BPF, not only creating maps and loading programs.
pub fn drop_refused_by_kernel() -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").ok()?;
    let version = kernel_version(release.trim())?;
    (version < (5, 19) && disabled.trim() != "0").then(|| {
        format!(
            "kernel {} (before 5.19) with kernel.unprivileged_bpf_disabled = {} refuses every bpf() call, reads of maps already open included, without CAP_BPF",
            release.trim(),
            disabled.trim()
        )
    })
}

/// [`drop_thread`] for a thread that cannot return the error: logged, naming `thread`. A
/// thread that failed is caught by [`verify`] after attaching.
pub fn drop_thread_or_log(keep: &[Capability], thread: &str) {
    if let Err(error) = drop_thread(keep) {
        tracing::error!(error = %anyhow::Error::new(error), thread, "a thread could not give up its capabilities");
    }
}

/// A thread of this process and the capabilities it may still use (its permitted set).
#[derive(Clone, Debug)]
pub struct ThreadCapabilities {
    pub tid: i32,
    pub name: String,
    pub permitted: CapsHashSet,
}

/// Every thread of this process with its permitted set, read from the kernel.
pub fn threads() -> Result<Vec<ThreadCapabilities>, PrivilegeError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").map_err(PrivilegeError::Threads)? {
        let entry = entry.map_err(PrivilegeError::Threads)?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<i32>().ok()) else { continue };
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim().to_string();
        match caps::read(Some(tid), CapSet::Permitted) {
            Ok(permitted) => out.push(ThreadCapabilities { tid, name, permitted }),
            // The thread exited between the listing and the read.
            Err(_) if !entry.path().exists() => {}
            Err(e) => return Err(PrivilegeError::Read(e)),
        }
    }
    out.sort_by_key(|t| t.tid);
    Ok(out)
}

/// Check that no thread holds a capability, except the PPS readers' [`PPS_READER_KEEPS`] and
/// the web config reader's CAP_DAC_READ_SEARCH (`http::config_reader`).
pub fn verify() -> Result<Vec<ThreadCapabilities>, PrivilegeError> {
    let threads = threads()?;
    for t in &threads {
        let allowed = |c: &Capability| {
            (t.name.starts_with("pps-") && *c == PPS_READER_KEEPS)
                || (t.name == WEB_CONFIG_READER_THREAD && *c == WEB_CONFIG_READER_KEEPS)
        };
        let extra: Vec<Capability> = t.permitted.iter().copied().filter(|c| !allowed(c)).collect();
        if !extra.is_empty() {
            return Err(PrivilegeError::StillHeld { tid: t.tid, name: t.name.clone(), caps: names(&extra).join(", ") });
        }
    }
    Ok(threads)
}

/// [`verify`], given threads that were just spawned `limit` to start and give up their own:
/// a new thread runs nothing, not even the line that names it, until it is first scheduled.
pub fn verify_within(limit: std::time::Duration) -> Result<Vec<ThreadCapabilities>, PrivilegeError> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match verify() {
            Err(PrivilegeError::StillHeld { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            other => return other,
        }
    }
}

/// Sorted capability names (`CAP_BPF`, …).
pub fn names<'a>(caps: impl IntoIterator<Item = &'a Capability>) -> Vec<String> {
    let mut v: Vec<String> = caps.into_iter().map(Capability::to_string).collect();
    v.sort();
    v
}

/// The calling thread's effective capabilities (empty if they cannot be read).
pub fn effective() -> CapsHashSet {
    caps::read(None, CapSet::Effective).unwrap_or_default()
}

/// What the exporter would use a capability for, seen from this machine.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// /proc/kallsyms shows this process zero addresses.
    pub addresses_hidden: bool,
    /// tracefs is mounted but this process may not read it.
    pub tracefs_denied: bool,
    /// tracefs is not mounted.
    pub tracefs_unmounted: bool,
    /// `probe.bpf_stats` is on.
    pub bpf_stats: bool,
    /// The port `http.listen` binds.
    pub listen_port: Option<u16>,
    /// PPS devices whose capture edge is not enabled yet.
    pub pps_edges_disabled: bool,
    /// The kernel's `(major, minor)`.
    pub kernel: Option<(u32, u32)>,
    /// Only what `run` needs: leave out `session`'s (C-state policies).
    pub run_only: bool,
}

impl Context {
    /// This machine as `kernel` shows it to this process, and `config`'s needs.
    pub fn of(kernel: &clockpath_probe::kernel::Kernel, config: &crate::config::Config) -> Context {
        // Any function every kernel has: all of kallsyms is hidden or none of it.
        let addresses_hidden = kernel.symbol("schedule").is_some_and(|s| s.addr == 0);
        let tracefs_denied = kernel.tracefs_denied();
        Context {
            addresses_hidden,
            tracefs_denied,
            tracefs_unmounted: kernel.tracefs().is_err() && !tracefs_denied,
            bpf_stats: config.probe.bpf_stats,
            listen_port: config.http.listen.parse::<std::net::SocketAddr>().ok().map(|a| a.port()),
            pps_edges_disabled: false,
            kernel: kernel_version(&kernel.release()),
            run_only: false,
        }
    }
}

/// A capability the exporter lacks here, and what that disables.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Missing {
    pub capability: String,
    pub disables: String,
    /// Without it nothing runs.
    pub fatal: bool,
}

/// Each capability missing from `held` that this machine and configuration call for.
pub fn missing(held: &CapsHashSet, ctx: &Context) -> Vec<Missing> {
    use Capability::*;
    let has = |c| held.contains(&c);
    let mut out = Vec::new();
    let mut add = |cap: Capability, fatal: bool, disables: &str| {
        out.push(Missing { capability: cap.to_string(), disables: disables.to_string(), fatal })
    };
    // CAP_SYS_ADMIN stands in for both (bpf_capable, perfmon_capable).
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        add(CAP_BPF, true, "no BPF map or program can be created: nothing runs");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        add(
            CAP_PERFMON,
            true,
            "no tracepoint, raw tracepoint, tp_btf, kprobe or fentry program can be loaded: nothing runs",
        );
    }
    if !has(CAP_SYSLOG) && ctx.addresses_hidden {
        add(
            CAP_SYSLOG,
            false,
            "kernel addresses (/proc/kallsyms shows 0): the clocksource chain's first_read, which matches the captured read function by address, and `filter`s naming a function",
        );
    }
    let admin_needed = ctx.bpf_stats || ctx.tracefs_unmounted || !ctx.run_only;
    if !has(CAP_SYS_ADMIN) && admin_needed {
        let mut what = Vec::new();
        if ctx.bpf_stats {
            what.push("probe.bpf_stats (per-program kernel run time): the exporter will not start with it on");
        }
        if ctx.tracefs_unmounted {
            what.push("mounting tracefs, which is not mounted: tracepoint targets");
        }
        if !ctx.run_only {
            what.push("`session --cstates` (cpuidle state writes)");
        }
        add(CAP_SYS_ADMIN, false, &what.join("; "));
    }
    if !has(CAP_DAC_READ_SEARCH) && !has(CAP_DAC_OVERRIDE) && ctx.tracefs_denied {
        add(
            CAP_DAC_READ_SEARCH,
            false,
            "tracefs (mode 0700 of root): tracepoint targets (tp_btf and raw_tp ones still work) and the list of traceable functions",
        );
    }
    if !has(CAP_SYS_TIME) && ctx.pps_edges_disabled {
        add(CAP_SYS_TIME, false, "enabling a PPS device's capture edge (PPS_SETPARAMS): that device cannot be used");
    }
    if !has(CAP_SYS_RESOURCE) && ctx.kernel.is_some_and(|v| v < (5, 11)) {
        add(
            CAP_SYS_RESOURCE,
            false,
            "kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK: raising it beyond its hard limit (clockpath raises it) to load the maps",
        );
    }
    if !has(CAP_NET_BIND_SERVICE) && ctx.listen_port.is_some_and(|p| p != 0 && p < unprivileged_port_start()) {
        add(CAP_NET_BIND_SERVICE, true, "http.listen on a port below 1024: the exporter cannot bind it");
    }
    out
}

fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(c: &[Capability]) -> CapsHashSet {
        c.iter().copied().collect()
    }

    fn names_of(m: &[Missing]) -> Vec<&str> {
        m.iter().map(|m| m.capability.as_str()).collect()
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        let m = missing(&set(&[Capability::CAP_SYS_ADMIN]), &Context::default());
        assert!(m.is_empty(), "{m:?}");
        let m = missing(&set(&[Capability::CAP_BPF]), &Context::default());
        assert_eq!(names_of(&m), ["CAP_PERFMON", "CAP_SYS_ADMIN"]);
        assert!(m[0].fatal && m[0].disables.contains("nothing runs"));
    }

    #[test]
    fn only_what_this_machine_calls_for_is_missing() {
        let held = set(&[Capability::CAP_BPF, Capability::CAP_PERFMON]);
        assert_eq!(names_of(&missing(&held, &Context::default())), ["CAP_SYS_ADMIN"]);
        let ctx = Context {
            addresses_hidden: true,
            tracefs_denied: true,
            pps_edges_disabled: true,
            listen_port: Some(80),
            bpf_stats: true,
            ..Context::default()
        };
        let m = missing(&held, &ctx);
        assert_eq!(
            names_of(&m),
            ["CAP_SYSLOG", "CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_SYS_TIME", "CAP_NET_BIND_SERVICE"]
        );
        assert!(m[0].disables.contains("first_read"));
        assert!(m[1].disables.contains("bpf_stats"));
        assert!(m[4].fatal);
    }

    #[test]
    fn old_kernels_call_for_sys_resource_and_versions_parse() {
        assert_eq!(kernel_version("6.1.0-26-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.10.0"), Some((5, 10)));
        assert_eq!(kernel_version("unknown"), None);
        let held = set(&[Capability::CAP_BPF, Capability::CAP_PERFMON, Capability::CAP_SYS_ADMIN]);
        let old = Context { kernel: Some((5, 10)), ..Context::default() };
        assert_eq!(names_of(&missing(&held, &old)), ["CAP_SYS_RESOURCE"]);
        let new = Context { kernel: Some((5, 11)), ..Context::default() };
        assert!(missing(&held, &new).is_empty());
    }

    #[test]
    fn a_thread_gives_up_all_but_what_it_keeps_and_the_others_are_untouched() {
        let before = caps::read(None, CapSet::Permitted).expect("read");
        let (after, no_new_privs) = std::thread::spawn(|| {
            drop_thread(&[PPS_READER_KEEPS]).expect("drop");
            // SAFETY: PR_GET_NO_NEW_PRIVS has no preconditions.
            let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
            (caps::read(None, CapSet::Permitted).expect("read"), nnp)
        })
        .join()
        .expect("thread");
        let expected: CapsHashSet = before.iter().copied().filter(|c| *c == PPS_READER_KEEPS).collect();
        assert_eq!(after, expected, "held before: {:?}", names(&before));
        assert_eq!(no_new_privs, 1);
        // This thread keeps its own: capset is per thread.
        assert_eq!(caps::read(None, CapSet::Permitted).expect("read"), before);
    }

    #[test]
    fn verify_names_a_thread_that_still_holds_a_capability() {
        let held = caps::read(None, CapSet::Permitted).expect("read");
        match verify() {
            Ok(_) => assert!(held.is_empty(), "verify passed while this thread holds {:?}", names(&held)),
            Err(e) => {
                assert!(!held.is_empty());
                assert!(e.to_string().contains("still holds CAP_"), "{e}");
            }
        }
    }

    #[test]
    fn the_listing_sees_this_thread() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let threads = threads().expect("list threads");
        assert!(threads.iter().any(|t| t.tid == tid), "{threads:?}");
    }
}
