//! This process's own resources: its usage from procfs (what `process_resident_memory_bytes`
//! and `process_cpu_seconds_total` report), and the allocator settings that keep a daemon's
//! resident size flat.

/// Allocator settings for a long-running daemon, before its threads start. glibc gives every
/// thread that allocates an arena of its own (up to 8 per core), and the statistics worker's
/// per-window columns fragment them: resident size creeps up for hours. Two arenas, and the
/// worker handing freed pages back after each window (`release_freed_memory`), keep it flat.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hand freed heap pages back to the kernel. Planning and attaching parse the kernel's
/// symbols and BTF: tens of MB in small allocations that glibc keeps mapped after they are
/// freed, in the middle of the heap where its automatic trimming does not reach.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Memory, CPU time, start time and file descriptors of this process: what other exporters'
/// process collectors export (client_golang's `process_*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessUsage {
    pub resident_bytes: u64,
    /// The most resident memory so far (VmHWM): for the exporter, its start-up peak.
    pub peak_resident_bytes: u64,
    /// Virtual memory size (VmSize).
    pub virtual_bytes: u64,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    /// When the process started, seconds since the Unix epoch (boot time plus its start tick).
    pub start_time_seconds: f64,
    /// Open file descriptors, and the soft limit on them.
    pub open_fds: u64,
    pub max_fds: u64,
}

impl ProcessUsage {
    /// Read /proc/self; None where procfs is not mounted.
    pub fn read() -> Option<ProcessUsage> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let btime = boot.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
        let mut u = parse(&status, &stat, clock_ticks(), btime)?;
        u.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            u.max_fds = limit.rlim_cur;
        }
        Some(u)
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as u64 } else { 100 }
}

/// A `Name:   N kB` line of /proc/PID/status, in bytes.
fn status_bytes(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse::<u64>().ok()).map(|k| k * 1024)
}

/// `status` gives resident memory now (VmRSS), at its peak (VmHWM) and virtual (VmSize);
/// `stat`'s fields 14 and 15 (after the command name, which may contain spaces and
/// parentheses) are user and system ticks, field 22 the start in ticks after boot (`btime`,
/// seconds since the epoch). File descriptors are filled in by the caller.
fn parse(status: &str, stat: &str, ticks: u64, btime: u64) -> Option<ProcessUsage> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After the command: state is field 3, so utime (14), stime (15) and starttime (22) are
    // at 11, 12 and 19.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let start: u64 = fields.get(19)?.parse().ok()?;
    Some(ProcessUsage {
        resident_bytes: status_bytes(status, "VmRSS:")?,
        peak_resident_bytes: status_bytes(status, "VmHWM:")?,
        virtual_bytes: status_bytes(status, "VmSize:")?,
        cpu_seconds: (utime + stime) as f64 / ticks as f64,
        start_time_seconds: btime as f64 + start as f64 / ticks as f64,
        open_fds: 0,
        max_fds: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_a_stat_line_whose_command_has_spaces() {
        let stat = "4242 (clock path) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 7 0 1000 123456789 5000 18446744073709551615";
        let status = "Name:\tx\nVmSize:\t  200000 kB\nVmHWM:\t   85664 kB\nVmRSS:\t 51200 kB\n";
        let u = parse(status, stat, 100, 1_700_000_000).unwrap();
        assert_eq!((u.resident_bytes, u.peak_resident_bytes), (51200 * 1024, 85664 * 1024));
        assert_eq!(u.virtual_bytes, 200000 * 1024);
        assert!((u.cpu_seconds - 3.0).abs() < 1e-9, "{u:?}");
        // starttime 1000 ticks after boot.
        assert!((u.start_time_seconds - 1_700_000_010.0).abs() < 1e-9, "{u:?}");
        assert!(parse("x", stat, 100, 0).is_none());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(ProcessUsage::read().is_some_and(|u| u.resident_bytes > 0
            && u.peak_resident_bytes >= u.resident_bytes
            && u.virtual_bytes >= u.resident_bytes
            && u.open_fds >= 3
            && u.max_fds >= u.open_fds
            && u.start_time_seconds <= now + 1.0
            && u.start_time_seconds > now - 86_400.0 * 365.0));
    }
}
