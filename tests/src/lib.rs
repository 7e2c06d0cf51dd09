//! Shared harness for clockpath's integration tests: locating the built binary, running it,
//! generating scheduler load, and parsing peer tools' output.
//!
//! These tests need root and a kernel with BPF; they panic (never skip) when a capability is
//! missing, so CI fails loudly.

pub mod btf;
pub mod capabilities;
pub mod cgroup;
pub mod exposition;
pub mod guest;
pub mod otlp;
pub mod peer;
pub mod pki;
pub mod procstat;
pub mod prometheus;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `clockpath` binary under test: `$TEST_CLOCKPATH_BIN`, else target/release/clockpath.
pub fn clockpath_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TEST_CLOCKPATH_BIN") {
        return PathBuf::from(p);
    }
    let p = workspace().join("target/release/clockpath");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build --release), or set TEST_CLOCKPATH_BIN",
        p.display()
    );
    p
}

/// Panic unless running as root: these tests load BPF programs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test loads BPF programs and must run as root (CI runs as root)");
}

/// A program on PATH or in the sbin directories.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// Find a program, panicking with the package to install.
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    which(name)
        .unwrap_or_else(|| panic!("`{name}` not found: install the Debian package `{package}` (scripts/setup.sh does)"))
}

/// Run clockpath with arguments, capturing output.
pub fn clockpath(args: &[&str]) -> Output {
    Command::new(clockpath_bin()).args(args).output().expect("run clockpath")
}

/// Configuration TOML that turns the built-in chains off, then `$rest` (a literal): for tests
/// and benches that run chains of their own.
#[macro_export]
macro_rules! only_these_chains {
    ($rest:literal) => {
        concat!(
            "[chains.runqueue]\nenabled = false\n",
            "[chains.sched_wakeup]\nenabled = false\n[chains.hrtimer]\nenabled = false\n",
            "[chains.softirq]\nenabled = false\n[chains.clocksource_switch]\nenabled = false\n",
            $rest
        )
    };
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
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// CLOCK_MONOTONIC now, ns (the clock BPF programs stamp with).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Stop a tracing tool with SIGINT (it detaches and prints what it gathered). bpftrace can
/// miss one (seen in CI: it went on polling for ever), so it is repeated every 2 s until
/// `within`. Returns the exit status and when the last SIGINT went out (CLOCK_MONOTONIC ns:
/// the end of the tool's window); None if the tool is still running at the deadline (then
/// it is killed).
pub fn interrupt(child: &mut Child, within: Duration) -> Option<(std::process::ExitStatus, u64)> {
    let mut next = Instant::now();
    let mut last = monotonic_ns();
    let status = poll_for(within, || {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= next {
            last = monotonic_ns();
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            next = Instant::now() + Duration::from_secs(2);
        }
        None
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status.map(|s| (s, last))
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

/// A free TCP port on loopback (bound, then released: fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Keeps one `perf bench sched messaging` running: starts one when there is none or the last
/// one ended (benchmarks that load the machine continuously call this as they pace).
pub fn keep_loaded(load: &mut Option<Child>) {
    let done = match load.as_mut() {
        None => true,
        Some(c) => c.try_wait().ok().flatten().is_some(),
    };
    if done {
        *load = Some(sched_messaging(2000));
    }
}

/// A running `clockpath run`, serving on a loopback port; killed (SIGTERM) on drop.
pub struct Exporter {
    pub child: Option<Child>,
    pub port: u16,
    /// `http`, or `https` with an agent that trusts the server.
    pub scheme: &'static str,
    pub agent: ureq::Agent,
}

impl Exporter {
    /// Start `clockpath run` with extra arguments and environment, and wait for /healthz.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Exporter {
        Self::start_as(args, env, "http", ureq::Agent::new())
    }

    /// Same, served over TLS (a web config in `env` or `args`), reached with `agent`.
    pub fn start_tls(args: &[&str], env: &[(&str, &str)], agent: ureq::Agent) -> Exporter {
        Self::start_as(args, env, "https", agent)
    }

    /// Start `clockpath` (at `bin`) run through `wrapper` (`setpriv …`, which execs it: the
    /// child's pid is the exporter's).
    pub fn start_wrapped(wrapper: &[&str], bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Exporter {
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(bin);
        Self::spawn(cmd, args, env, "http", ureq::Agent::new())
    }

    fn start_as(args: &[&str], env: &[(&str, &str)], scheme: &'static str, agent: ureq::Agent) -> Exporter {
        Self::spawn(Command::new(clockpath_bin()), args, env, scheme, agent)
    }

    fn spawn(
        mut cmd: Command,
        args: &[&str],
        env: &[(&str, &str)],
        scheme: &'static str,
        agent: ureq::Agent,
    ) -> Exporter {
        let port = free_port();
        cmd.arg("run").args(args).env("CLOCKPATH_HTTP__LISTEN", format!("127.0.0.1:{port}")).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start clockpath run");
        let mut e = Exporter { child: Some(child), port, scheme, agent };
        wait_for(&format!("clockpath to become healthy on port {port}"), Duration::from_secs(30), || {
            if e.agent.get(&e.url("/healthz")).call().is_ok() {
                return Some(());
            }
            // An exporter that exited will never answer: say why at once.
            if let Some(c) = e.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let out = e.child.take().expect("child").wait_with_output().expect("exporter output");
                panic!("clockpath run exited ({status}) before serving:\n{}", String::from_utf8_lossy(&out.stderr));
            }
            None
        });
        e
    }

    /// The exporter's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn url(&self, path: &str) -> String {
        // TLS by the name the test certificate carries.
        match self.scheme {
            "https" => format!("https://localhost:{}{path}", self.port),
            _ => format!("http://127.0.0.1:{}{path}", self.port),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A Prometheus text (0.0.4) scrape.
    pub fn scrape(&self) -> String {
        self.agent.get(&self.url("/metrics")).call().expect("scrape").into_string().expect("scrape body")
    }

    /// An OpenMetrics scrape.
    pub fn scrape_openmetrics(&self) -> String {
        self.agent
            .get(&self.url("/metrics"))
            .set("Accept", "application/openmetrics-text; version=1.0.0")
            .call()
            .expect("scrape")
            .into_string()
            .expect("scrape body")
    }

    /// SIGTERM, wait, and return the output.
    pub fn stop(mut self) -> Output {
        let child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait_with_output().expect("wait for clockpath")
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

/// The kernel's clocksource directory in sysfs.
pub const CLOCKSOURCE_DIR: &str = "/sys/devices/system/clocksource/clocksource0";

/// The current clocksource.
pub fn current_clocksource() -> String {
    std::fs::read_to_string(format!("{CLOCKSOURCE_DIR}/current_clocksource"))
        .expect("current_clocksource")
        .trim()
        .to_string()
}

/// (current, available) clocksources; panics unless there are two to switch between.
pub fn clocksources() -> (String, Vec<String>) {
    let avail: Vec<String> = std::fs::read_to_string(format!("{CLOCKSOURCE_DIR}/available_clocksource"))
        .expect("available_clocksource")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(avail.len() >= 2, "this test switches clocksources and needs two; available: {avail:?}");
    (current_clocksource(), avail)
}

/// How often [`wait_for`] looks again.
const POLL: Duration = Duration::from_millis(100);

/// Poll `probe` until it returns `Some`, and return that; panic naming `what` when `within`
/// passes first. Tests synchronise with what they wait for through this, never by sleeping.
pub fn wait_for<T>(what: &str, within: Duration, probe: impl FnMut() -> Option<T>) -> T {
    wait_for_or(what, within, probe, String::new)
}

/// [`wait_for`], with `context()` (what the thing waited for left behind) in the panic.
pub fn wait_for_or<T>(
    what: &str,
    within: Duration,
    probe: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    poll_for(within, probe).unwrap_or_else(|| panic!("timed out after {within:?} waiting for {what}{}", context()))
}

/// Poll `probe` until it returns `Some`, or `within` passes (None): for a test that has more
/// to collect before it can say why something never came.
pub fn poll_for<T>(within: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// The chains `clockpath doctor --json` reports running.
pub fn running_chains(doctor: &serde_json::Value) -> std::collections::BTreeSet<String> {
    doctor["chains"]
        .as_array()
        .expect("doctor's chains")
        .iter()
        .filter(|c| c["state"]["state"] == "running")
        .map(|c| c["name"].as_str().expect("chain name").to_string())
        .collect()
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
    }
}
