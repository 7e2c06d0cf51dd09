//! A process's threads and their capability sets, from `/proc/PID/task/*/status` (the host's,
//! or a dump a guest wrote: the blocks of `status` files separated by `---` lines).

use std::path::Path;

/// One thread's sets (bit masks) and no_new_privs.
#[derive(Clone, Debug, Default)]
pub struct ThreadStatus {
    pub name: String,
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub no_new_privs: bool,
}

impl ThreadStatus {
    /// One `status` file's text.
    pub fn parse(status: &str) -> ThreadStatus {
        let mut t = ThreadStatus::default();
        for line in status.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            let v = v.trim();
            let mask = || u64::from_str_radix(v, 16).unwrap_or_else(|e| panic!("{k}: `{v}`: {e}"));
            match k {
                "Name" => t.name = v.to_string(),
                "CapInh" => t.inheritable = mask(),
                "CapPrm" => t.permitted = mask(),
                "CapEff" => t.effective = mask(),
                "CapBnd" => t.bounding = mask(),
                "CapAmb" => t.ambient = mask(),
                "NoNewPrivs" => t.no_new_privs = v == "1",
                _ => {}
            }
        }
        t
    }

    /// No capability in any set a thread or what it executes could use.
    pub fn holds_none(&self) -> bool {
        self.inheritable == 0 && self.permitted == 0 && self.effective == 0 && self.ambient == 0
    }
}

/// Every thread of process `pid`.
pub fn of_process(pid: u32) -> Vec<ThreadStatus> {
    let dir = Path::new("/proc").join(pid.to_string()).join("task");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let e = e.expect("task entry");
        // A thread that exited meanwhile has no status left to read.
        if let Ok(text) = std::fs::read_to_string(e.path().join("status")) {
            out.push(ThreadStatus::parse(&text));
        }
    }
    out
}

/// The threads of a dump: `status` files separated by lines of `---`.
pub fn of_dump(text: &str) -> Vec<ThreadStatus> {
    text.split("\n---").map(str::trim).filter(|b| !b.is_empty()).map(ThreadStatus::parse).collect()
}

/// CAP_SYS_TIME's bit (linux/capability.h): what a PPS reader keeps.
pub const CAP_SYS_TIME: u32 = 25;

/// `setpriv` (util-linux, at `setpriv`) running its command as nobody (65534) with exactly
/// `caps` (setpriv's names, e.g. `bpf`), made ambient so they survive the exec.
pub fn as_nobody(setpriv: &str, caps: &[&str]) -> Vec<String> {
    let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
    vec![
        setpriv.to_string(),
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        format!("--inh-caps=-all{set}"),
        format!("--ambient-caps=-all{set}"),
        "--".into(),
    ]
}
