//! Clocksource control through sysfs: what is available and in use, switching, putting the
//! original back (a guard restores it on every exit path, unwinding included), and the lock
//! that keeps two sessions from switching at once.

use std::{
    fs,
    path::{Path, PathBuf},
};

use clockpath_probe::kernel::CLOCKSOURCE_DIR;

use super::SessionError;

fn read(file: &str) -> Result<String, SessionError> {
    let path = format!("{CLOCKSOURCE_DIR}/{file}");
    fs::read_to_string(&path).map(|s| s.trim().to_string()).map_err(|source| SessionError::Sysfs { path, source })
}

/// The clocksource in use.
pub fn current() -> Result<String, SessionError> {
    read("current_clocksource")
}

/// The clocksources the kernel can switch to.
pub fn available() -> Result<Vec<String>, SessionError> {
    Ok(read("available_clocksource")?.split_whitespace().map(str::to_string).collect())
}

/// Switch to `name` (the kernel runs the whole switch inside this write).
pub fn switch_to(name: &str) -> Result<(), SessionError> {
    let path = format!("{CLOCKSOURCE_DIR}/current_clocksource");
    fs::write(&path, name).map_err(|source| SessionError::Sysfs { path, source })
}

/// Check the requested clocksources against what the kernel offers: each must be available,
/// and there must be something to switch to.
pub fn check_requested(requested: &[String], available: &[String], current: &str) -> Result<(), SessionError> {
    for cs in requested {
        if !available.contains(cs) {
            return Err(SessionError::Usage(format!(
                "clocksource `{cs}` is not available here (available: {}; current: {current})",
                available.join(", ")
            )));
        }
    }
    let mut distinct = requested.to_vec();
    distinct.dedup();
    if distinct.len() < 2 && !(distinct.len() == 1 && distinct[0] != current) {
        return Err(SessionError::Usage(
            "--clocksources needs two clocksources (or one other than the current one)".into(),
        ));
    }
    Ok(())
}

/// Puts the original clocksource back when told to or when dropped (error paths, unwinding).
pub struct Restore {
    original: String,
    done: bool,
}

impl Restore {
    pub fn new(original: String) -> Restore {
        Restore { original, done: false }
    }

    /// Restore now (once).
    pub fn now(&mut self) -> Result<(), SessionError> {
        if !self.done {
            switch_to(&self.original)?;
            self.done = true;
            tracing::info!(clocksource = %self.original, "original clocksource restored");
        }
        Ok(())
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(error) = self.now() {
            tracing::error!(%error, "could not restore the original clocksource");
        }
    }
}

/// One session at a time per machine: an exclusive lock on `/run/clockpath-session.lock`, held
/// while the returned file is open.
pub fn lock() -> Result<fs::File, SessionError> {
    let dir = if Path::new("/run").is_dir() { PathBuf::from("/run") } else { std::env::temp_dir() };
    let path = dir.join("clockpath-session.lock").to_string_lossy().into_owned();
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| SessionError::Sysfs { path: path.clone(), source })?;
    // SAFETY: flock on a valid fd.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(SessionError::Usage(format!("another clockpath session is running (it holds {path})")));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn requested_clocksources_must_exist_and_differ() {
        let avail = v(&["tsc", "hpet", "acpi_pm"]);
        assert!(check_requested(&v(&["hpet", "acpi_pm"]), &avail, "tsc").is_ok());
        assert!(check_requested(&v(&["hpet"]), &avail, "tsc").is_ok(), "one other than the current one");
        let e = check_requested(&v(&["hpet", "pit"]), &avail, "tsc").unwrap_err().to_string();
        assert!(e.contains("`pit` is not available") && e.contains("tsc, hpet, acpi_pm"), "{e}");
        assert!(check_requested(&v(&["tsc"]), &avail, "tsc").is_err(), "nothing to switch to");
    }
}
