//! tracefs: where it is mounted (mounting it when it is not), tracepoint `format` files, and
//! the list of functions ftrace can trace (`available_filter_functions`).

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::symbols::NameSet;

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it on {path} failed (mounting needs CAP_SYS_ADMIN)")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tracefs at {path} is not readable (mode 0700 of root: a non-root user needs CAP_DAC_READ_SEARCH)")]
    Denied { path: PathBuf },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: cannot parse `{text}`")]
    Parse { path: PathBuf, line: usize, text: String },
}

/// A field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// C declaration as written in the format file, e.g. `pid_t next_pid`.
    pub decl: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// A parsed `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub id: u32,
    pub fields: Vec<Field>,
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Parse the text of a `format` file (`path` is only for error messages).
    pub fn parse(path: &Path, text: &str) -> Result<Format, TracefsError> {
        let mut id = None;
        let mut fields = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let err = || TracefsError::Parse { path: path.to_path_buf(), line: n + 1, text: line.to_string() };
            let t = line.trim();
            if let Some(v) = t.strip_prefix("ID:") {
                id = Some(v.trim().parse().map_err(|_| err())?);
            } else if t.starts_with("field:") {
                let mut decl = None;
                let (mut offset, mut size, mut signed) = (None, None, false);
                for part in t.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                    let (k, v) = part.split_once(':').ok_or_else(err)?;
                    match k.trim() {
                        "field" => decl = Some(v.trim().to_string()),
                        "offset" => offset = v.trim().parse().ok(),
                        "size" => size = v.trim().parse().ok(),
                        "signed" => signed = v.trim() == "1",
                        _ => {}
                    }
                }
                let decl = decl.ok_or_else(err)?;
                // The name is the last identifier of the declaration, before any `[N]`.
                let name = decl
                    .split('[')
                    .next()
                    .and_then(|d| d.split_whitespace().last())
                    .map(|n| n.trim_start_matches('*').to_string())
                    .ok_or_else(err)?;
                fields.push(Field { name, decl, offset: offset.ok_or_else(err)?, size: size.ok_or_else(err)?, signed });
            }
        }
        Ok(Format { id: id.unwrap_or(0), fields })
    }
}

/// The tracefs mount.
#[derive(Clone, Debug)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Find tracefs, mounting it on /sys/kernel/tracing if it is not mounted (needs root).
    pub fn open() -> Result<Tracefs, TracefsError> {
        if let Some(root) = Self::find_mount() {
            // Mounted is not enough: tracefs is 0700, so a non-root user without a DAC
            // capability sees the mount and can open none of its files.
            return match fs::read_dir(root.join("events")) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(TracefsError::Denied { path: root }),
                _ => Ok(Tracefs { root }),
            };
        }
        let path = PathBuf::from("/sys/kernel/tracing");
        let c_path = std::ffi::CString::new("/sys/kernel/tracing")
            .map_err(|e| TracefsError::Mount { path: path.clone(), source: std::io::Error::other(e) })?;
        let fstype = c"tracefs";
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe { libc::mount(fstype.as_ptr(), c_path.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            return Err(TracefsError::Mount { path, source: std::io::Error::last_os_error() });
        }
        tracing::info!(path = %path.display(), "tracefs was not mounted: mounted it");
        Ok(Tracefs { root: path })
    }

    /// A tracefs tree at `root` (tests use a fake one).
    pub fn at(root: impl Into<PathBuf>) -> Tracefs {
        Tracefs { root: root.into() }
    }

    fn find_mount() -> Option<PathBuf> {
        let mounts = fs::read_to_string("/proc/mounts").ok()?;
        let from_mounts = mounts.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            let (_dev, dir, fstype) = (it.next()?, it.next()?, it.next()?);
            (fstype == "tracefs").then(|| PathBuf::from(dir))
        });
        from_mounts.or_else(|| {
            // debugfs exposes tracefs under tracing/ on older setups.
            let p = PathBuf::from("/sys/kernel/debug/tracing");
            p.join("events").is_dir().then_some(p)
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn event_dir(&self, category: &str, name: &str) -> PathBuf {
        self.root.join("events").join(category).join(name)
    }

    pub fn has_event(&self, category: &str, name: &str) -> bool {
        self.event_dir(category, name).join("format").is_file()
    }

    /// Whether the kernel registered any event of `category` (a module's tracepoints appear
    /// when it loads: `kvm` with kvm.ko).
    pub fn has_category(&self, category: &str) -> bool {
        self.root.join("events").join(category).is_dir()
    }

    pub fn format(&self, category: &str, name: &str) -> Result<Format, TracefsError> {
        let path = self.event_dir(category, name).join("format");
        let text = fs::read_to_string(&path).map_err(|source| TracefsError::Read { path: path.clone(), source })?;
        Format::parse(&path, &text)
    }

    /// Categories that have an event called `name`.
    pub fn categories_of(&self, name: &str) -> Vec<String> {
        let Ok(dir) = fs::read_dir(self.root.join("events")) else {
            return Vec::new();
        };
        let mut cats: Vec<String> = dir
            .filter_map(Result::ok)
            .filter(|e| e.path().join(name).join("format").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        cats.sort();
        cats
    }

    /// All events as `category:name`, for suggestions.
    pub fn all_events(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(cats) = fs::read_dir(self.root.join("events")) else {
            return out;
        };
        for cat in cats.filter_map(Result::ok) {
            let Ok(events) = fs::read_dir(cat.path()) else {
                continue;
            };
            let c = cat.file_name().to_string_lossy().into_owned();
            for ev in events.filter_map(Result::ok) {
                if ev.path().join("format").is_file() {
                    out.push(format!("{c}:{}", ev.file_name().to_string_lossy()));
                }
            }
        }
        out.sort();
        out
    }

    /// Functions ftrace can attach to; kprobe events and fentry refuse the others ("notrace").
    pub fn traceable_functions(&self) -> Result<NameSet, TracefsError> {
        let path = self.root.join("available_filter_functions");
        NameSet::load(&path).map_err(|source| TracefsError::Read { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHED_SWITCH: &str = "name: sched_switch
ID: 372
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;
\tfield:void * hrtimer;\toffset:64;\tsize:8;\tsigned:0;

print fmt: \"prev_comm=%s\", REC->prev_comm
";

    #[test]
    fn parses_fields_with_offsets_and_sizes() {
        let f = Format::parse(Path::new("format"), SCHED_SWITCH).unwrap();
        assert_eq!(f.id, 372);
        let next = f.field("next_pid").unwrap();
        assert_eq!((next.offset, next.size, next.signed), (56, 4, true));
        assert_eq!(f.field("prev_comm").unwrap().size, 16);
        assert_eq!(f.field("hrtimer").unwrap().offset, 64);
        assert!(f.field("nope").is_none());
    }

    #[test]
    fn reports_the_line_of_a_broken_field() {
        let err = Format::parse(Path::new("x/format"), "ID: 1\n\tfield:int a;\toffset:zz;\n").unwrap_err();
        assert!(err.to_string().contains("x/format: line 2"), "{err}");
    }
}
