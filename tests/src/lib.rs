//! Shared harness for clockpath's integration tests: locating the built binary, running it,
//! generating scheduler load, and parsing peer tools' output.
//!
//! These tests need root and a kernel with BPF; they panic (never skip) when a capability is
//! missing, so CI fails loudly.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `clockpath` binary under test: `$CLOCKPATH_BIN`, else target/release/clockpath.
pub fn clockpath_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CLOCKPATH_BIN") {
        return PathBuf::from(p);
    }
    let p = workspace().join("target/release/clockpath");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build --release), or set CLOCKPATH_BIN",
        p.display()
    );
    p
}

/// Panic unless running as root: these tests load BPF programs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads BPF programs and must run as root (CI runs as root)"
    );
}

/// Find a program on PATH or in /usr/sbin, panicking with the package to install.
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
    ]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` not found: install the Debian package `{package}` (scripts/setup.sh does)");
}

/// Run clockpath with arguments, capturing output.
pub fn clockpath(args: &[&str]) -> Output {
    Command::new(clockpath_bin())
        .args(args)
        .output()
        .expect("run clockpath")
}

/// Write a config file into a temp dir and return (dir, path).
pub fn config_file(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("clockpath.toml");
    std::fs::write(&path, toml).expect("write config");
    (dir, path)
}

/// A scheduler-heavy workload: `perf bench sched messaging` (processes talking over pipes).
pub fn sched_messaging(loops: u32) -> Child {
    let perf = require_tool("perf", "linux-perf");
    Command::new(perf)
        .args(["bench", "sched", "messaging", "-l", &loops.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start perf bench sched messaging")
}

/// Wait for a child, panicking if it fails.
pub fn wait_ok(child: Child, what: &str) -> Output {
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A log2 histogram as printed by libbpf-tools (`runqlat`, `softirqs -d`…):
/// `(low, high, count)` rows, in the tool's unit.
pub fn parse_log2_hist(text: &str) -> Vec<(u64, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let (range, rest) = l.split_once(':')?;
            let (lo, hi) = range.split_once("->")?;
            let count = rest.split('|').next()?.trim().parse().ok()?;
            Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?, count))
        })
        .collect()
}

/// Index (floor log2 of the low bound, 0 for the 0→1 row) of the row holding the median.
pub fn log2_median_row(rows: &[(u64, u64, u64)]) -> Option<u32> {
    let total: u64 = rows.iter().map(|r| r.2).sum();
    let mut acc = 0;
    for &(lo, _, c) in rows {
        acc += c;
        if total > 0 && acc * 2 >= total {
            return Some(if lo == 0 { 0 } else { lo.ilog2() });
        }
    }
    None
}

/// floor(log2) of a value in the same unit as the rows (0 for values below 2).
pub fn log2_row_of(v: u64) -> u32 {
    if v < 2 { 0 } else { v.ilog2() }
}

/// Sleep helper for tests.
pub fn sleep(d: Duration) {
    std::thread::sleep(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runqlat_output() {
        let text = "     usecs               : count    distribution
         0 -> 1          : 2        |                                        |
         2 -> 3          : 78       |**                                      |
         4 -> 7          : 163      |*****                                   |
        16 -> 31         : 620      |**********************                  |
";
        let rows = parse_log2_hist(text);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[3], (16, 31, 620));
        assert_eq!(log2_median_row(&rows), Some(4));
        assert_eq!(log2_row_of(17), 4);
        assert_eq!(log2_row_of(1), 0);
    }
}
