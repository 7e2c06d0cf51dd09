//! A memory cgroup of the test's own, with a limit: cgroup v2 where the unified hierarchy has
//! the memory controller, else v1's `memory` hierarchy (what a container runtime on the node
//! would use). Created under the test process's own cgroup and removed on drop.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// Which cgroup interface the group uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

pub struct MemoryCgroup {
    pub dir: PathBuf,
    pub version: Version,
}

/// The first cgroup path of `/proc/self/cgroup` whose line matches `pred` (v1: its
/// controllers field; v2: the empty one).
fn own_path(pred: impl Fn(&str) -> bool) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, controllers, path) = (it.next()?, it.next()?, it.next()?);
        pred(controllers).then(|| path.to_string())
    })
}

fn read_u64(path: &Path) -> u64 {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A `key value` line of a flat-keyed cgroup file (`memory.events`, `memory.oom_control`).
fn keyed(path: &Path, key: &str) -> u64 {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or(0)
}

impl MemoryCgroup {
    /// A new group named `name` limited to `limit` bytes, v2 when the unified hierarchy has the
    /// memory controller, else v1. Panics (the test needs it) when neither does.
    pub fn create(name: &str, limit: u64) -> MemoryCgroup {
        let v2_root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].into_iter().map(PathBuf::from).find(|r| {
            fs::read_to_string(r.join("cgroup.controllers")).is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
        });
        let (dir, version) = match v2_root {
            Some(root) => {
                let own = own_path(|c| c.is_empty()).unwrap_or_default();
                let parent = root.join(own.trim_start_matches('/'));
                // The memory controller must be enabled for the parent's children.
                let _ = fs::write(parent.join("cgroup.subtree_control"), "+memory");
                (parent.join(name), Version::V2)
            }
            None => {
                let root = PathBuf::from("/sys/fs/cgroup/memory");
                assert!(
                    root.join("memory.limit_in_bytes").exists(),
                    "no memory cgroup controller: neither cgroup v2 with `memory` nor a v1 memory hierarchy at {}",
                    root.display()
                );
                let own = own_path(|c| c.split(',').any(|x| x == "memory")).unwrap_or_default();
                (root.join(own.trim_start_matches('/')).join(name), Version::V1)
            }
        };
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("create cgroup {}: {e}", dir.display()));
        let g = MemoryCgroup { dir, version };
        let file = g.file("memory.max", "memory.limit_in_bytes");
        fs::write(&file, limit.to_string()).unwrap_or_else(|e| panic!("set {}: {e}", file.display()));
        if version == Version::V2 {
            // No swap to hide behind: the limit is what the exporter gets.
            let _ = fs::write(g.dir.join("memory.swap.max"), "0");
        }
        g
    }

    /// The group's file named `v2` in cgroup v2, `v1` in v1.
    fn file(&self, v2: &str, v1: &str) -> PathBuf {
        self.dir.join(match self.version {
            Version::V2 => v2,
            Version::V1 => v1,
        })
    }

    /// The file a process's pid is written to to move it in.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The limit in force, bytes.
    pub fn limit(&self) -> u64 {
        read_u64(&self.file("memory.max", "memory.limit_in_bytes"))
    }

    /// The most memory the group was charged (user memory, page cache and kernel memory the
    /// processes allocated, BPF maps included), bytes.
    pub fn peak(&self) -> u64 {
        read_u64(&self.file("memory.peak", "memory.max_usage_in_bytes"))
    }

    /// Charged now, bytes.
    pub fn current(&self) -> u64 {
        read_u64(&self.file("memory.current", "memory.usage_in_bytes"))
    }

    /// Processes the kernel's OOM killer killed in the group.
    pub fn oom_kills(&self) -> u64 {
        keyed(&self.file("memory.events", "memory.oom_control"), "oom_kill")
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // A group with processes cannot be removed: move any that are left to the parent.
        if let (Ok(procs), Some(parent)) = (fs::read_to_string(self.procs()), self.dir.parent()) {
            for pid in procs.lines() {
                let _ = fs::write(parent.join("cgroup.procs"), pid);
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}
