//! C-state policies at runtime, without a reboot: which cpuidle states a session lets the CPUs
//! enter, set on every CPU by two means at once:
//!
//! - cpuidle sysfs (`cpuN/cpuidle/stateK/disable`) names the exact states a policy means
//!   (`max_cstate=N` is not expressible as a latency), and the menu, teo and ladder governors
//!   honour it;
//! - a PM QoS CPU latency request (`/dev/cpu_dma_latency`, held open while the policy is in
//!   force) of the deepest allowed state's exit latency, because the haltpoll governor (KVM
//!   guests, this development VM) ignores `disable` and only honours a latency request. The
//!   kernel drops the request when the file is closed, so it cannot outlive the process.
//!
//! Each state's `usage` counter, read when a policy is set and when it ends, shows whether a
//! disabled state was still entered: the evidence a summary carries.
//!
//! The original sysfs settings are saved to a file before the first change (`restore_file::path`,
//! see [`super::restore_file`])
//! and put back at the end, on error, on a signal (the session stops and unwinds through the
//! guard) and, after a crash, by the next `clockpath session` or `clockpath session --restore`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{SessionError, restore_file};

/// Where CPUs live in sysfs.
pub const CPU_DIR: &str = "/sys/devices/system/cpu";

/// What a session may let the CPUs enter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The machine's own settings, as found.
    Default,
    /// States up to index N (state0 is POLL on x86): `intel_idle.max_cstate=N` at runtime.
    MaxCstate(usize),
    /// Only the polling state.
    Poll,
}

impl Policy {
    pub fn parse(s: &str) -> Result<Policy, SessionError> {
        let s = s.trim();
        match s {
            "default" => return Ok(Policy::Default),
            "poll" => return Ok(Policy::Poll),
            _ => {}
        }
        if let Some(n) = s.strip_prefix("max_cstate=")
            && let Ok(n) = n.parse()
        {
            return Ok(Policy::MaxCstate(n));
        }
        Err(SessionError::Usage(format!("--cstates: unknown policy `{s}` (expected default, max_cstate=N or poll)")))
    }

    pub fn label(&self) -> String {
        match self {
            Policy::Default => "default".into(),
            Policy::MaxCstate(n) => format!("max_cstate={n}"),
            Policy::Poll => "poll".into(),
        }
    }
}

/// One idle state, as cpu0 describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IdleState {
    pub index: usize,
    pub name: String,
    /// Exit latency, µs.
    pub latency_us: u64,
}

/// One CPU's `disable` of one state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disable {
    pub cpu: u32,
    pub state: usize,
    pub disabled: bool,
}

/// The machine's cpuidle states and the CPUs that have them.
#[derive(Clone, Debug)]
pub struct Cpuidle {
    pub(super) root: PathBuf,
    pub cpus: Vec<u32>,
    pub states: Vec<IdleState>,
}

fn read(path: &Path) -> Result<String, SessionError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| SessionError::Sysfs { path: path.display().to_string(), source })
}

impl Cpuidle {
    /// The cpuidle states under `root` (`/sys/devices/system/cpu`); None when there are none.
    pub fn open(root: &Path) -> Result<Option<Cpuidle>, SessionError> {
        let online = read(&root.join("online"))?;
        let cpus = parse_cpu_list(&online)
            .ok_or_else(|| SessionError::Usage(format!("{}/online: cannot parse `{online}`", root.display())))?;
        let mut states = Vec::new();
        for index in 0.. {
            let dir = root.join(format!("cpu{}/cpuidle/state{index}", cpus.first().copied().unwrap_or(0)));
            if !dir.is_dir() {
                break;
            }
            let latency = read(&dir.join("latency"))?;
            states.push(IdleState {
                index,
                name: read(&dir.join("name"))?,
                latency_us: latency.parse().map_err(|_| {
                    SessionError::Usage(format!("{}: not a number: `{latency}`", dir.join("latency").display()))
                })?,
            });
        }
        Ok((!states.is_empty()).then(|| Cpuidle { root: root.to_path_buf(), cpus, states }))
    }

    fn state_file(&self, cpu: u32, state: usize, file: &str) -> PathBuf {
        self.root.join(format!("cpu{cpu}/cpuidle/state{state}/{file}"))
    }

    /// Every CPU's `disable` of every state.
    pub fn disables(&self) -> Result<Vec<Disable>, SessionError> {
        let mut out = Vec::new();
        for &cpu in &self.cpus {
            for s in &self.states {
                let v = read(&self.state_file(cpu, s.index, "disable"))?;
                out.push(Disable { cpu, state: s.index, disabled: v != "0" });
            }
        }
        Ok(out)
    }

    /// Refuse, naming the file, when a `disable` (or the PM QoS device) cannot be opened for
    /// writing (not root, a read-only sysfs in a container): before anything is changed.
    pub fn check_writable(&self) -> Result<(), SessionError> {
        fs::OpenOptions::new()
            .write(true)
            .open(PM_QOS_DEVICE)
            .map_err(|e| SessionError::Usage(format!("--cstates: cannot write {PM_QOS_DEVICE}: {e}")))?;
        for &cpu in &self.cpus {
            for s in &self.states {
                let path = self.state_file(cpu, s.index, "disable");
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| SessionError::Usage(format!("--cstates: cannot write {}: {e}", path.display())))?;
            }
        }
        Ok(())
    }

    /// Entries into each state, summed over the CPUs.
    pub fn usage(&self) -> Vec<u64> {
        self.states
            .iter()
            .map(|s| {
                self.cpus
                    .iter()
                    .filter_map(|&cpu| read(&self.state_file(cpu, s.index, "usage")).ok()?.parse::<u64>().ok())
                    .sum()
            })
            .collect()
    }

    /// Bring every CPU out of idle once, by running this thread on each in turn. A CPU's usage
    /// counter counts an entry when the state is left, so one that was already idling in a
    /// state when it was disabled would count that entry later, as if the policy had let it
    /// in; after this, every entry counted from here began under the settings now written.
    pub fn flush(&self) -> Result<(), SessionError> {
        let affinity = |set: &libc::cpu_set_t| {
            // SAFETY: pid 0 is this thread; `set` is a valid cpu_set_t of the size given.
            let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
            if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        };
        let err = |source| SessionError::Sysfs { path: "sched_setaffinity".into(), source };
        // SAFETY: cpu_set_t is plain data; zeroed is the empty set, filled by sched_getaffinity.
        let mut original: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above, for this thread.
        if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut original) } != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        let mut result = Ok(());
        for &cpu in &self.cpus {
            // SAFETY: as above.
            let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: cpu is a CPU number below CPU_SETSIZE (from sysfs `online`).
            unsafe { libc::CPU_SET(cpu as usize, &mut one) };
            // Returns once the thread has been moved to `cpu` and runs there.
            if let Err(e) = affinity(&one) {
                result = Err(err(e));
                break;
            }
        }
        affinity(&original).map_err(err)?;
        result
    }

    /// Refuse a policy this machine cannot express, naming what it has.
    pub fn check(&self, policy: &Policy) -> Result<(), SessionError> {
        let have = || {
            self.states
                .iter()
                .map(|s| format!("state{} {} ({} µs)", s.index, s.name, s.latency_us))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match policy {
            Policy::Default => Ok(()),
            Policy::MaxCstate(n) if *n < self.states.len() => Ok(()),
            Policy::MaxCstate(n) => Err(SessionError::Usage(format!(
                "--cstates max_cstate={n}: this machine has no idle state {n} (it has {})",
                have()
            ))),
            Policy::Poll if self.states.iter().any(|s| s.name == "POLL") => Ok(()),
            Policy::Poll => Err(SessionError::Usage(format!("--cstates poll: no POLL state here (it has {})", have()))),
        }
    }

    /// The settings `policy` means, given the machine's own (`original`).
    pub fn settings(&self, policy: &Policy, original: &[Disable]) -> Vec<Disable> {
        original
            .iter()
            .map(|d| Disable {
                disabled: match policy {
                    Policy::Default => d.disabled,
                    Policy::MaxCstate(n) => d.state > *n,
                    Policy::Poll => self.states.get(d.state).is_none_or(|s| s.name != "POLL"),
                },
                ..*d
            })
            .collect()
    }

    /// Write `settings` (only the ones that differ from what sysfs says).
    pub fn apply(&self, settings: &[Disable]) -> Result<(), SessionError> {
        for d in settings {
            let path = self.state_file(d.cpu, d.state, "disable");
            let want = if d.disabled { "1" } else { "0" };
            if read(&path)? != want {
                fs::write(&path, want)
                    .map_err(|source| SessionError::Sysfs { path: path.display().to_string(), source })?;
            }
        }
        Ok(())
    }
}

/// Policies checked against this machine's idle states and the files they write: only
/// `preflight` makes one.
#[derive(Clone, Debug)]
pub struct Checked {
    pub idle: Cpuidle,
    pub policies: Vec<Policy>,
}

/// Check `policies` against this machine's idle states and the files they need for writing,
/// changing nothing; None when there are no policies.
pub fn preflight(root: &Path, policies: Vec<Policy>) -> Result<Option<Checked>, SessionError> {
    if policies.is_empty() {
        return Ok(None);
    }
    let idle = Cpuidle::open(root)?.ok_or_else(|| {
        SessionError::Usage(format!("--cstates: this machine has no cpuidle states ({}/cpu*/cpuidle)", root.display()))
    })?;
    for p in &policies {
        idle.check(p)?;
    }
    idle.check_writable()?;
    Ok(Some(Checked { idle, policies }))
}

/// The PM QoS device: a CPU latency request lasts while it is held open.
pub const PM_QOS_DEVICE: &str = "/dev/cpu_dma_latency";

impl Cpuidle {
    /// The latency limit that matches `settings`: the exit latency of the deepest state left
    /// enabled, when any state is disabled (µs).
    pub fn latency_limit(&self, settings: &[Disable]) -> Option<u64> {
        if !settings.iter().any(|d| d.disabled) {
            return None;
        }
        self.states
            .iter()
            .filter(|s| settings.iter().filter(|d| d.state == s.index).all(|d| !d.disabled))
            .map(|s| s.latency_us)
            .max()
            .or(Some(0))
    }
}

/// A PM QoS CPU latency request, in force until dropped.
pub struct LatencyRequest {
    _file: fs::File,
    pub latency_us: u64,
}

impl LatencyRequest {
    pub fn hold(device: &Path, latency_us: u64) -> Result<LatencyRequest, SessionError> {
        let err = |source| SessionError::Sysfs { path: device.display().to_string(), source };
        let mut f = fs::OpenOptions::new().write(true).open(device).map_err(err)?;
        let v = i32::try_from(latency_us).unwrap_or(i32::MAX);
        std::io::Write::write_all(&mut f, &v.to_ne_bytes()).map_err(err)?;
        Ok(LatencyRequest { _file: f, latency_us })
    }
}

/// `0-3,5,7-8` → [0, 1, 2, 3, 5, 7, 8].
fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<u32>().ok()?..=b.parse::<u32>().ok()?),
            None => out.push(part.parse().ok()?),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Holds the original idle-state settings (see [`restore_file::Guard`]).
pub type Guard = restore_file::Guard<Cpuidle>;

impl restore_file::Settings for Cpuidle {
    type Values = Vec<Disable>;
    const FILE: &'static str = "clockpath-cpuidle-restore.json";
    const WHAT: &'static str = "idle states";

    fn root(&self) -> &Path {
        &self.root
    }

    fn reopen(root: &Path) -> Result<Cpuidle, SessionError> {
        Cpuidle::open(root)?
            .ok_or_else(|| SessionError::Usage(format!("{}: no cpuidle states to restore", root.display())))
    }

    fn read(&self) -> Result<Vec<Disable>, SessionError> {
        self.disables()
    }

    fn write(&self, values: &Vec<Disable>) -> Result<(), SessionError> {
        self.apply(values)
    }

    fn differences(saved: &Vec<Disable>, now: &Vec<Disable>) -> Vec<String> {
        saved
            .iter()
            .filter(|d| now.iter().any(|n| n.cpu == d.cpu && n.state == d.state && n.disabled != d.disabled))
            .map(|d| format!("cpu{} state{} {}", d.cpu, d.state, if d.disabled { "disabled" } else { "enabled" }))
            .collect()
    }
}

/// Evidence that a policy held: entries into each state while it was in force.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Evidence {
    /// States the policy disabled (names).
    pub disabled: Vec<String>,
    /// Entries per state (name → count) while the policy was in force.
    pub entries: std::collections::BTreeMap<String, u64>,
    /// True when no disabled state was entered.
    pub held: bool,
    /// The PM QoS latency request held with the policy (µs), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_request_us: Option<u64>,
}

impl Evidence {
    pub fn new(idle: &Cpuidle, settings: &[Disable]) -> Evidence {
        let disabled = idle
            .states
            .iter()
            .filter(|s| settings.iter().any(|d| d.state == s.index && d.disabled))
            .map(|s| s.name.clone())
            .collect();
        Evidence { disabled, entries: Default::default(), held: true, latency_request_us: idle.latency_limit(settings) }
    }

    /// Add the entries between two `usage` snapshots.
    pub fn add(&mut self, idle: &Cpuidle, before: &[u64], after: &[u64]) {
        for (s, (b, a)) in idle.states.iter().zip(before.iter().zip(after)) {
            *self.entries.entry(s.name.clone()).or_default() += a.saturating_sub(*b);
        }
        self.held = self.disabled.iter().all(|d| self.entries.get(d).copied().unwrap_or(0) == 0);
    }
}

/// Order of policies over a session's runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Schedule {
    /// All runs of the first policy, then all of the next.
    Blocks,
    /// One run of each policy in turn.
    Interleaved,
    /// The runs of all policies in a random order (`--seed`).
    Random,
}

/// The policy index of each run: `runs` runs of each of `policies` policies, ordered in units
/// of `cycle` consecutive runs (one pass over the session's clocksource pairs). A policy keeps
/// a whole unit so that every policy switches through every pair equally often: with two
/// clocksources and policies alternating run by run, each policy would only ever make the one
/// same switch, and the pair's effect would pass for the policy's.
pub fn schedule(kind: Schedule, policies: usize, runs: usize, cycle: usize, seed: u64) -> Vec<usize> {
    let cycle = cycle.max(1);
    let mut left = vec![runs; policies];
    units(kind, policies, runs.div_ceil(cycle), seed)
        .into_iter()
        .flat_map(|p| {
            let n = left[p].min(cycle);
            left[p] -= n;
            std::iter::repeat_n(p, n)
        })
        .collect()
}

/// The policy of each unit: `units` units of each policy.
fn units(kind: Schedule, policies: usize, units: usize, seed: u64) -> Vec<usize> {
    match kind {
        Schedule::Blocks => (0..policies).flat_map(|p| std::iter::repeat_n(p, units)).collect(),
        Schedule::Interleaved => (0..units).flat_map(|_| 0..policies).collect(),
        Schedule::Random => {
            use rand::{RngExt as _, SeedableRng as _};
            let mut order = self::units(Schedule::Blocks, policies, units, seed);
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
            for i in (1..order.len()).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            order
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{restore_file::restore_leftover, *};

    /// A sysfs tree with two CPUs and the dev machine's states (POLL, haltpoll idle).
    fn fake(dir: &Path) {
        fs::write(dir.join("online"), "0-1\n").unwrap();
        for cpu in 0..2 {
            for (i, (name, lat)) in [("POLL", 0), ("haltpoll idle", 1)].iter().enumerate() {
                let d = dir.join(format!("cpu{cpu}/cpuidle/state{i}"));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("name"), format!("{name}\n")).unwrap();
                fs::write(d.join("latency"), format!("{lat}\n")).unwrap();
                fs::write(d.join("disable"), "0\n").unwrap();
                fs::write(d.join("usage"), format!("{}\n", 100 * (i + 1))).unwrap();
            }
        }
    }

    #[test]
    fn policies_parse_and_bad_ones_are_named() {
        assert_eq!(Policy::parse("max_cstate=1").unwrap(), Policy::MaxCstate(1));
        assert_eq!(Policy::parse("poll").unwrap().label(), "poll");
        let e = Policy::parse("max_cstate=deep").unwrap_err().to_string();
        assert!(e.contains("`max_cstate=deep`"), "{e}");
        assert_eq!(parse_cpu_list("0-2,5"), Some(vec![0, 1, 2, 5]));
    }

    #[test]
    fn a_policy_sets_each_cpu_and_the_guard_restores_even_after_a_crash() {
        let t = tempfile::tempdir().unwrap();
        fake(t.path());
        let idle = Cpuidle::open(t.path()).unwrap().expect("states");
        assert_eq!(idle.states.len(), 2);
        let e = idle.check(&Policy::MaxCstate(2)).unwrap_err().to_string();
        assert!(e.contains("no idle state 2") && e.contains("state1 haltpoll idle (1 µs)"), "{e}");
        idle.check(&Policy::Poll).unwrap();

        let file = t.path().join("restore.json");
        let mut guard = Guard::save(idle.clone(), file.clone()).unwrap();
        assert!(file.exists(), "saved before the first change");
        let poll = idle.settings(&Policy::Poll, guard.original());
        idle.apply(&poll).unwrap();
        assert_eq!(fs::read_to_string(t.path().join("cpu1/cpuidle/state1/disable")).unwrap(), "1");
        assert_eq!(fs::read_to_string(t.path().join("cpu1/cpuidle/state0/disable")).unwrap().trim(), "0");
        assert_eq!(idle.latency_limit(&poll), Some(0), "POLL's exit latency");
        assert_eq!(idle.latency_limit(guard.original()), None, "nothing disabled: no request");
        let mut ev = Evidence::new(&idle, &poll);
        ev.add(&idle, &[200, 400], &[260, 400]);
        assert!(ev.held && ev.disabled == ["haltpoll idle"], "{ev:?}");
        ev.add(&idle, &[0, 0], &[0, 3]);
        assert!(!ev.held, "a disabled state was entered");
        guard.now().unwrap();
        assert_eq!(fs::read_to_string(t.path().join("cpu1/cpuidle/state1/disable")).unwrap(), "0");
        assert!(!file.exists());

        // A session killed with its policy in force: the next one restores from the file.
        let guard = Guard::save(idle.clone(), file.clone()).unwrap();
        idle.apply(&idle.settings(&Policy::MaxCstate(0), guard.original())).unwrap();
        std::mem::forget(guard);
        let said = restore_leftover::<Cpuidle>(&file).unwrap().expect("something restored");
        assert!(said.contains("cpu0 state1 enabled") && said.contains("cpu1 state1 enabled"), "{said}");
        assert_eq!(fs::read_to_string(t.path().join("cpu0/cpuidle/state1/disable")).unwrap(), "0");
        assert_eq!(restore_leftover::<Cpuidle>(&file).unwrap(), None, "nothing left");
    }

    #[test]
    fn schedules_cover_every_run_in_their_order() {
        assert_eq!(schedule(Schedule::Blocks, 2, 3, 1, 0), [0, 0, 0, 1, 1, 1]);
        assert_eq!(schedule(Schedule::Interleaved, 2, 3, 1, 0), [0, 1, 0, 1, 0, 1]);
        // Units of two (two clocksource pairs); the last unit of each policy is cut short.
        assert_eq!(schedule(Schedule::Interleaved, 2, 3, 2, 0), [0, 0, 1, 1, 0, 1]);
        let r = schedule(Schedule::Random, 2, 50, 1, 7);
        assert_eq!(r, schedule(Schedule::Random, 2, 50, 1, 7), "the seed fixes the order");
        assert_ne!(r, schedule(Schedule::Random, 2, 50, 1, 8));
        assert_eq!(r.iter().filter(|&&p| p == 1).count(), 50);
        assert_ne!(r, schedule(Schedule::Blocks, 2, 50, 1, 7));
    }

    /// Every policy makes every switch of the cycle equally often, whatever the schedule.
    #[test]
    fn schedules_balance_policies_over_clocksource_pairs() {
        let sources = ["hpet", "acpi_pm", "tsc"];
        for cycle in [2, 3] {
            for kind in [Schedule::Blocks, Schedule::Interleaved, Schedule::Random] {
                let order = schedule(kind, 2, 12, cycle, 3);
                // The runner's walk: the next requested clocksource, starting from the last.
                let mut counts = std::collections::BTreeMap::new();
                let mut current = sources[cycle - 1];
                for (i, p) in order.iter().enumerate() {
                    let next = sources[i % cycle];
                    *counts.entry((*p, current, next)).or_insert(0) += 1;
                    current = next;
                }
                for ((p, from, to), n) in &counts {
                    assert_eq!(*n, 12 / cycle, "{kind:?} cycle {cycle}: policy {p} made {from}->{to} {n} times");
                }
                assert_eq!(counts.len(), 2 * cycle, "{kind:?} cycle {cycle}: {counts:?}");
            }
        }
    }
}
