//! A running process, measured from /proc (resident size, the ring buffer's mapping, CPU per
//! thread) and from its own scrape: what the footprint and soak benchmarks sample.

pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Resident KiB of the BPF map mappings (the ring buffer; no other map is mmapped).
pub fn ring_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_ring = false;
    let mut total = 0;
    for l in smaps.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            in_ring = l.ends_with("anon_inode:bpf-map");
        } else if in_ring && l.starts_with("Rss:") {
            total += l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

/// Seconds on a CPU of one thread, from its `schedstat` (nanoseconds, exact). `stat`'s
/// user and system times are sampled at the tick on this kernel (TICK_CPU_ACCOUNTING): a
/// thread woken by a timer that runs briefly between ticks is mostly never charged, so they
/// cannot resolve a fraction of a microsecond per record.
pub fn schedstat_seconds(task: &std::path::Path) -> f64 {
    std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

/// CPU seconds of the process's threads whose name (`comm`, at most 15 bytes) is `name`, or
/// of all of them.
pub fn thread_seconds(pid: u32, name: Option<&str>) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    tasks
        .flatten()
        .filter(|t| {
            name.is_none_or(|n| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == n))
        })
        .map(|t| schedstat_seconds(&t.path()))
        .sum()
}

/// Value of an unlabelled series, or of every series of a family with `label="…"`.
pub fn scrape_values(text: &str, family: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            let label = name.split_once("=\"").map_or("", |(_, r)| r.trim_end_matches("\"}"));
            Some((label.to_string(), v.parse().ok()?))
        })
        .collect()
}
