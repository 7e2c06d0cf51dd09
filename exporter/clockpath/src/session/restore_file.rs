//! Restore files: what a session changes on the machine (idle states, cpufreq governors) is
//! saved before the first change, durably (written whole, synced, renamed into place), so that
//! the next session can put it back after a crash or `kill -9`. [`Guard`] holds the original
//! settings for the session's lifetime; [`restore_leftover`] is the next session's side.

use std::{
    fs,
    ops::Deref,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::SessionError;

/// Machine settings a session changes and must put back.
pub trait Settings: Sized {
    /// One reading of every setting: what is saved and put back.
    type Values: Serialize + DeserializeOwned + Clone;
    /// What they are, for messages (`idle states`, `cpufreq governors`).
    const WHAT: &'static str;
    /// The restore file's name in [`dir`].
    const FILE: &'static str;
    /// Where they live (a sysfs directory), saved so that another process can reopen them.
    fn root(&self) -> &Path;
    fn reopen(root: &Path) -> Result<Self, SessionError>;
    fn read(&self) -> Result<Self::Values, SessionError>;
    fn write(&self, values: &Self::Values) -> Result<(), SessionError>;
    /// The settings of `saved` that `now` differs from, described.
    fn differences(saved: &Self::Values, now: &Self::Values) -> Vec<String>;
}

/// Where restore files live: /run (root's, gone at reboot like the settings they restore).
/// Never a shared temporary directory, where another user could plant the name first; a
/// system without /run (a minimal initramfs) gets it made, root's and 0755, as the FHS has it.
pub fn dir() -> PathBuf {
    PathBuf::from("/run")
}

/// Where the settings `S` are saved before the first change.
pub fn path<S: Settings>() -> PathBuf {
    dir().join(S::FILE)
}

/// What a restore file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Saved<V> {
    root: PathBuf,
    pid: u32,
    // Files written before governors existed named the idle states' field `disables`.
    #[serde(alias = "disables")]
    settings: V,
}

/// Write `value` to `file`, durable before the caller changes anything.
fn save<T: Serialize>(file: &Path, value: &T) -> Result<(), SessionError> {
    let out = |source| SessionError::Output { path: file.to_path_buf(), source };
    if let Some(parent) = file.parent() {
        if !parent.exists() {
            use std::os::unix::fs::DirBuilderExt as _;
            fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).map_err(out)?;
        }
        // Refused when others could plant links or files there.
        clockpath_offline::outfile::check_dir(parent).map_err(|e| out(std::io::Error::other(e)))?;
    }
    let tmp = file.with_extension("json.partial");
    let text = serde_json::to_vec(value).map_err(|e| out(std::io::Error::other(e)))?;
    // A stale partial file of ours is replaced; a link planted under the name is refused.
    let _ = fs::remove_file(&tmp);
    let f = clockpath_offline::outfile::create_new(&tmp).map_err(out)?;
    std::io::Write::write_all(&mut &f, &text).map_err(out)?;
    f.sync_all().map_err(out)?;
    fs::rename(&tmp, file).map_err(out)
}

/// Put back what a session that did not end saved in `file`, if anything; says what it
/// restored.
pub fn restore_leftover<S: Settings>(file: &Path) -> Result<Option<String>, SessionError> {
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SessionError::Sysfs { path: file.display().to_string(), source }),
    };
    let saved: Saved<S::Values> = serde_json::from_str(&text)
        .map_err(|e| SessionError::Usage(format!("{}: not a clockpath restore file: {e}", file.display())))?;
    let settings = S::reopen(&saved.root)?;
    let changed = S::differences(&saved.settings, &settings.read()?);
    settings.write(&saved.settings)?;
    fs::remove_file(file).map_err(|source| SessionError::Sysfs { path: file.display().to_string(), source })?;
    Ok(Some(if changed.is_empty() {
        format!("session {} left {}; its {} were already in place", saved.pid, file.display(), S::WHAT)
    } else {
        format!("restored the {} of session {} (which did not end): {}", S::WHAT, saved.pid, changed.join(", "))
    }))
}

/// Holds the original settings: saved to the restore file on creation, put back by `now` or
/// on drop (error paths, unwinding), and the file removed once they are. Derefs to the
/// settings it guards.
pub struct Guard<S: Settings> {
    settings: S,
    original: S::Values,
    file: PathBuf,
    done: bool,
}

impl<S: Settings> Guard<S> {
    pub fn save(settings: S, file: PathBuf) -> Result<Guard<S>, SessionError> {
        let original = settings.read()?;
        let saved = Saved { root: settings.root().to_path_buf(), pid: std::process::id(), settings: original.clone() };
        save(&file, &saved)?;
        Ok(Guard { settings, original, file, done: false })
    }

    /// The settings as the session found them.
    pub fn original(&self) -> &S::Values {
        &self.original
    }

    /// Put the original settings back (once) and remove the restore file.
    pub fn now(&mut self) -> Result<(), SessionError> {
        if !self.done {
            self.settings.write(&self.original)?;
            let _ = fs::remove_file(&self.file);
            self.done = true;
            tracing::info!("original {} restored", S::WHAT);
        }
        Ok(())
    }
}

impl<S: Settings> Deref for Guard<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.settings
    }
}

impl<S: Settings> Drop for Guard<S> {
    fn drop(&mut self) {
        if let Err(error) = self.now() {
            tracing::error!(%error, file = %self.file.display(), "could not restore the {}; `clockpath session --restore` retries", S::WHAT);
        }
    }
}
