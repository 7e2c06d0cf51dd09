//! Restore files: what a session changed on the machine (idle states, cpufreq governors) is
//! saved before the first change, durably (written whole, synced, renamed into place), so that
//! the next session can put it back after a crash or `kill -9`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Serialize, de::DeserializeOwned};

use super::SessionError;

/// Where restore files live: /run (gone at reboot, like the settings they restore).
pub fn dir() -> PathBuf {
    if Path::new("/run").is_dir() { PathBuf::from("/run") } else { std::env::temp_dir() }
}

/// Write `value` to `file`, durable before the caller changes anything.
pub fn save<T: Serialize>(file: &Path, value: &T) -> Result<(), SessionError> {
    let out = |source| SessionError::Output { path: file.to_path_buf(), source };
    let tmp = file.with_extension("json.partial");
    let text = serde_json::to_vec(value).map_err(|e| out(std::io::Error::other(e)))?;
    let f = fs::File::create(&tmp).map_err(out)?;
    std::io::Write::write_all(&mut &f, &text).map_err(out)?;
    f.sync_all().map_err(out)?;
    fs::rename(&tmp, file).map_err(out)
}

/// What `file` holds, or None when there is no file (nothing left to restore).
pub fn load<T: DeserializeOwned>(file: &Path) -> Result<Option<T>, SessionError> {
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SessionError::Sysfs { path: file.display().to_string(), source }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| SessionError::Usage(format!("{}: not a clockpath restore file: {e}", file.display())))
}

/// Remove `file` once what it held is back in place.
pub fn remove(file: &Path) -> Result<(), SessionError> {
    fs::remove_file(file).map_err(|source| SessionError::Sysfs { path: file.display().to_string(), source })
}
