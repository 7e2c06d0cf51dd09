//! Files clockpath writes, often as root into a directory a user names: never through a link
//! planted there, never into a non-regular file, and never into a directory other users may
//! fill (recorder and session directories are checked with [`check_dir`]).
//!
//! - [`create`]: open for writing, creating or truncating, refusing a symbolic link at the last
//!   component (`O_NOFOLLOW`) and anything but a regular file (a FIFO or a device);
//! - [`create_new`]: the same, and the file must not exist yet (`O_EXCL`): for names a
//!   program picks itself, so a name someone guessed and planted is an error, not a target;
//! - [`write`]: a whole file, written under a fresh temporary name and renamed over the target
//!   (a link at the target is replaced, not followed).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    // O_NONBLOCK: opening a FIFO planted under the name must not block; the file type is
    // checked right after.
    o.write(true).mode(0o644).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
    o
}

fn regular(path: &Path, f: File) -> io::Result<File> {
    let m = f.metadata()?;
    if !m.file_type().is_file() {
        return Err(io::Error::other(format!("{} is not a regular file", path.display())));
    }
    Ok(f)
}

/// Why an open failed, said plainly for the link case (the kernel's ELOOP reads "too many
/// levels of symbolic links").
fn explain(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::new(
            e.kind(),
            format!("{} is a symbolic link: clockpath does not write through links", path.display()),
        );
    }
    e
}

/// Create or truncate `path` for writing, refusing a link or a non-regular file there.
pub fn create(path: &Path) -> io::Result<File> {
    // A FIFO or device under the name is refused by what it is (opening a FIFO without a
    // reader fails with a less telling ENXIO); the open's own check below closes the race.
    if let Ok(m) = fs::symlink_metadata(path)
        && !m.file_type().is_file()
        && !m.file_type().is_symlink()
    {
        return Err(io::Error::other(format!("{} is not a regular file", path.display())));
    }
    // Not truncated by open: a device or FIFO under the name is refused before anything is
    // written to it.
    let f = regular(path, options().create(true).open(path).map_err(|e| explain(path, e))?)?;
    f.set_len(0)?;
    Ok(f)
}

/// Create `path`, which must not exist (a planted file or link is an error).
pub fn create_new(path: &Path) -> io::Result<File> {
    regular(path, options().create_new(true).open(path).map_err(|e| explain(path, e))?)
}

/// Write `bytes` to `path` whole: into a new temporary file beside it, then renamed over it.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let result = create_new(&tmp).and_then(|mut f| f.write_all(bytes)).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Whether `dir` is safe to write files into for this process: owned by this user or root,
/// and not writable by others unless sticky and root-owned (as /tmp: others cannot remove or
/// replace our files there, and [`create_new`] refuses names they planted). The reason
/// otherwise, for an error naming the directory.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let m = fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !m.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me && m.uid() != 0 {
        return Err(format!(
            "{} is owned by uid {}, not by this user (uid {me}) or root: its owner could replace the files written there",
            dir.display(),
            m.uid()
        ));
    }
    let others_write = m.mode() & 0o002 != 0;
    let sticky_root = m.mode() & 0o1000 != 0 && m.uid() == 0;
    if others_write && !sticky_root {
        return Err(format!(
            "{} is writable by every user (mode {:o}) and not a sticky root-owned directory: anyone could plant links or files there; use a directory only this user can write",
            dir.display(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Create `dir` (and its parents) when missing, then [`check_dir`] it.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    check_dir(dir).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    #[test]
    fn links_and_fifos_are_refused_and_the_victim_is_untouched() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let link = d.path().join("out.csv");
        symlink(&victim, &link).unwrap();
        let e = create(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(create_new(&link).is_err());
        write(&link, b"new").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep", "the link was followed");
        assert_eq!(fs::read_to_string(&link).unwrap(), "new", "the link itself was replaced");
        assert!(!fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = create(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // A regular file is truncated and written.
        let f = d.path().join("f");
        fs::write(&f, "old and long").unwrap();
        create(&f).unwrap().write_all(b"x").unwrap();
        assert_eq!(fs::read_to_string(&f).unwrap(), "x");
        assert!(create_new(&f).is_err(), "create_new refuses an existing file");
    }

    #[test]
    fn directories_others_can_write_are_refused_unless_sticky_and_root_owned() {
        let d = tempfile::tempdir().unwrap();
        check_dir(d.path()).unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_dir(d.path()).unwrap_err();
        assert!(e.contains("writable by every user"), "{e}");
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert_eq!(check_dir(d.path()).is_ok(), root, "sticky is enough only when root owns it");
        assert!(check_dir(&d.path().join("missing")).is_err());
    }
}
