//! cpufreq governors at runtime (`--governors`): each cpufreq policy's `scaling_governor`
//! written for the runs of a condition, read back when it ends, and the original governors
//! put back at the end, on error, on a signal and, after a crash, by the next session (the
//! same durable restore file scheme as the idle states, see [`super::restore_file`]).
//!
//! Only where the machine has cpufreq: a virtual machine usually has no cpufreq driver (no
//! `cpufreq/policyN`), and `--governors` there is refused, saying so, before anything changes.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{SessionError, restore_file};

/// Where cpufreq policies live in sysfs.
pub const CPUFREQ_DIR: &str = "/sys/devices/system/cpu/cpufreq";

/// One cpufreq policy's governor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governor {
    /// The policy's directory name (`policy0`).
    pub policy: String,
    pub governor: String,
}

/// The machine's cpufreq policies and the governors every one of them offers.
#[derive(Clone, Debug)]
pub struct Cpufreq {
    root: PathBuf,
    pub policies: Vec<String>,
    pub available: Vec<String>,
}

fn read(path: &Path) -> Result<String, SessionError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| SessionError::Sysfs { path: path.display().to_string(), source })
}

impl Cpufreq {
    /// The cpufreq policies under `root` (`/sys/devices/system/cpu/cpufreq`); None when there
    /// are none (no cpufreq driver).
    pub fn open(root: &Path) -> Result<Option<Cpufreq>, SessionError> {
        let entries = match fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SessionError::Sysfs { path: root.display().to_string(), source }),
        };
        let mut policies: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("policy") && root.join(n).join("scaling_governor").is_file())
            .collect();
        policies.sort_by_key(|n| n.trim_start_matches("policy").parse::<u32>().unwrap_or(u32::MAX));
        let Some(first) = policies.first() else { return Ok(None) };
        // Governors every policy offers (they normally all offer the same).
        let offered = |p: &str| -> Result<Vec<String>, SessionError> {
            Ok(read(&root.join(p).join("scaling_available_governors"))?.split_whitespace().map(String::from).collect())
        };
        let mut available = offered(first)?;
        for p in &policies[1..] {
            let other = offered(p)?;
            available.retain(|g| other.contains(g));
        }
        Ok(Some(Cpufreq { root: root.to_path_buf(), policies, available }))
    }

    fn file(&self, policy: &str) -> PathBuf {
        self.root.join(policy).join("scaling_governor")
    }

    /// Every policy's governor now.
    pub fn governors(&self) -> Result<Vec<Governor>, SessionError> {
        self.policies.iter().map(|p| Ok(Governor { policy: p.clone(), governor: read(&self.file(p))? })).collect()
    }

    /// Refuse a governor the machine does not offer, naming those it does.
    pub fn check(&self, governor: &str) -> Result<(), SessionError> {
        if self.available.iter().any(|g| g == governor) {
            return Ok(());
        }
        Err(SessionError::Usage(format!(
            "--governors {governor}: not offered here (scaling_available_governors: {})",
            self.available.join(" ")
        )))
    }

    /// Refuse, naming the file, when a `scaling_governor` cannot be opened for writing.
    pub fn check_writable(&self) -> Result<(), SessionError> {
        for p in &self.policies {
            let path = self.file(p);
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| SessionError::Usage(format!("--governors: cannot write {}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// Every policy under `governor`.
    pub fn settings(&self, governor: &str) -> Vec<Governor> {
        self.policies.iter().map(|p| Governor { policy: p.clone(), governor: governor.to_string() }).collect()
    }

    /// Write `settings` (only where sysfs says otherwise).
    pub fn apply(&self, settings: &[Governor]) -> Result<(), SessionError> {
        for s in settings {
            let path = self.file(&s.policy);
            if read(&path)? != s.governor {
                fs::write(&path, &s.governor)
                    .map_err(|source| SessionError::Sysfs { path: path.display().to_string(), source })?;
            }
        }
        Ok(())
    }
}

/// Governors checked against this machine: only `preflight` makes one.
#[derive(Clone, Debug)]
pub struct Checked {
    pub cpufreq: Cpufreq,
    pub governors: Vec<String>,
}

/// Check `governors` against the machine's cpufreq policies and their files, changing
/// nothing; None when no governors are asked for.
pub fn preflight(root: &Path, governors: Vec<String>) -> Result<Option<Checked>, SessionError> {
    if governors.is_empty() {
        return Ok(None);
    }
    let cpufreq = Cpufreq::open(root)?.ok_or_else(|| {
        SessionError::Usage(format!(
            "--governors: this machine has no cpufreq policies ({}/policy*): no cpufreq driver is loaded, \
             as in most virtual machines, so there is no governor to set",
            root.display()
        ))
    })?;
    for g in &governors {
        cpufreq.check(g)?;
    }
    cpufreq.check_writable()?;
    Ok(Some(Checked { cpufreq, governors }))
}

/// Holds the original governors (see [`restore_file::Guard`]).
pub type Guard = restore_file::Guard<Cpufreq>;

impl restore_file::Settings for Cpufreq {
    type Values = Vec<Governor>;
    const FILE: &'static str = "clockpath-cpufreq-restore.json";
    const WHAT: &'static str = "cpufreq governors";

    fn root(&self) -> &Path {
        &self.root
    }

    fn reopen(root: &Path) -> Result<Cpufreq, SessionError> {
        Cpufreq::open(root)?
            .ok_or_else(|| SessionError::Usage(format!("{}: no cpufreq policies to restore", root.display())))
    }

    fn read(&self) -> Result<Vec<Governor>, SessionError> {
        self.governors()
    }

    fn write(&self, values: &Vec<Governor>) -> Result<(), SessionError> {
        self.apply(values)
    }

    fn differences(saved: &Vec<Governor>, now: &Vec<Governor>) -> Vec<String> {
        saved
            .iter()
            .filter(|g| now.iter().any(|n| n.policy == g.policy && n.governor != g.governor))
            .map(|g| format!("{} {}", g.policy, g.governor))
            .collect()
    }
}

/// Evidence that a governor held: what every policy said when the condition ended.
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub governor: String,
    /// Policies whose governor read back otherwise (changed behind the session's back).
    pub changed: Vec<Governor>,
    pub held: bool,
}

impl Evidence {
    /// Read back every policy's governor against `governor`.
    pub fn read(cpufreq: &Cpufreq, governor: &str) -> Evidence {
        let changed: Vec<Governor> = match cpufreq.governors() {
            Ok(now) => now.into_iter().filter(|g| g.governor != governor).collect(),
            Err(e) => vec![Governor { policy: "?".into(), governor: format!("unreadable: {e}") }],
        };
        Evidence { governor: governor.to_string(), held: changed.is_empty(), changed }
    }
}

#[cfg(test)]
mod tests {
    use super::{restore_file::restore_leftover, *};

    /// Two cpufreq policies offering performance, powersave and schedutil.
    fn fake(dir: &Path) {
        for p in 0..2 {
            let d = dir.join(format!("policy{p}"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("scaling_available_governors"), "performance powersave schedutil\n").unwrap();
            fs::write(d.join("scaling_governor"), "schedutil\n").unwrap();
        }
    }

    #[test]
    fn no_cpufreq_and_unknown_governors_are_refused_by_name() {
        let t = tempfile::tempdir().unwrap();
        let e = preflight(&t.path().join("cpufreq"), vec!["performance".into()]).unwrap_err().to_string();
        assert!(e.contains("no cpufreq policies") && e.contains("no cpufreq driver"), "{e}");
        fake(t.path());
        let e = preflight(t.path(), vec!["ondemand".into()]).unwrap_err().to_string();
        assert!(e.contains("--governors ondemand") && e.contains("performance powersave schedutil"), "{e}");
        assert_eq!(preflight(t.path(), vec![]).unwrap().map(|c| c.governors), None);
        let c = preflight(t.path(), vec!["performance".into()]).unwrap().unwrap();
        assert_eq!(c.cpufreq.policies, ["policy0", "policy1"]);
    }

    #[test]
    fn governors_are_set_read_back_and_restored_even_after_a_crash() {
        let t = tempfile::tempdir().unwrap();
        fake(t.path());
        let freq = Cpufreq::open(t.path()).unwrap().unwrap();
        let file = t.path().join(<Cpufreq as restore_file::Settings>::FILE);
        let gov = |p: &str| fs::read_to_string(t.path().join(p).join("scaling_governor")).unwrap();
        {
            let mut guard = Guard::save(freq.clone(), file.clone()).unwrap();
            assert!(file.exists(), "saved before the first change");
            freq.apply(&freq.settings("performance")).unwrap();
            assert_eq!((gov("policy0"), gov("policy1")), ("performance".into(), "performance".into()));
            assert!(Evidence::read(&freq, "performance").held);
            // Someone else changes one policy while the condition holds: the evidence says so.
            fs::write(t.path().join("policy1/scaling_governor"), "powersave").unwrap();
            let e = Evidence::read(&freq, "performance");
            assert!(!e.held && e.changed == [Governor { policy: "policy1".into(), governor: "powersave".into() }]);
            guard.now().unwrap();
        }
        assert_eq!(gov("policy0").trim(), "schedutil");
        assert!(!file.exists());

        // Killed with a governor in force: the next session restores from the file.
        let guard = Guard::save(freq.clone(), file.clone()).unwrap();
        freq.apply(&freq.settings("powersave")).unwrap();
        std::mem::forget(guard);
        let said = restore_leftover::<Cpufreq>(&file).unwrap().expect("something restored");
        assert!(said.contains("policy0 schedutil") && said.contains("policy1 schedutil"), "{said}");
        assert_eq!(gov("policy1").trim(), "schedutil");
        assert_eq!(restore_leftover::<Cpufreq>(&file).unwrap(), None, "nothing left");
    }
}
