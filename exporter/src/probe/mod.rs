//! Everything that touches the kernel's tracing machinery: attach targets and key expressions,
//! what the running kernel offers (tracefs, BTF, kallsyms), the attach plan, loading and
//! attaching the BPF object, and reading its ring buffer and maps.

pub mod btf;
pub mod kernel;
pub mod loader;
pub mod maps;
pub mod plan;
pub mod ring;
pub mod target;
pub mod tracefs;
pub mod value;

/// An error and its causes on one line (`outer: cause: root cause`), for reasons reported as
/// text (plan statuses, doctor, metrics labels).
pub fn report(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}
