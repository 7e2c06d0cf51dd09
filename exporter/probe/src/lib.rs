//! clockpath's kernel side, in userspace: everything that touches the kernel's tracing
//! machinery.
//!
//! - [`target`] and [`value`]: attach targets (`fentry:X`, `tp_btf:Y`…) and key expressions
//!   (`arg0->pid`, `cpu,vec`), parsed;
//! - [`kernel`]: what a kernel offers for probing (tracefs formats, BTF, kallsyms, traceable
//!   functions, the kprobe PMU), read from the running kernel or from a captured fixture;
//! - [`plan`]: every configured stage resolved against those facts before anything is attached
//!   (model, resolver, instance stores, slot configuration);
//! - [`loader`]: the BPF object loaded and each probe point attached (**where a stage is
//!   attached**);
//! - [`ring`], [`staging`] and [`maps`]: the ring buffer reader, the records staged per CPU,
//!   the kernel histograms and counters;
//! - [`capture`]: a kernel's facts written into a fixture directory (`doctor --capture`);
//! - [`clocks`]: the clock audit, every clock a trace may be stamped with against
//!   CLOCK_MONOTONIC (`clockpath clocks`).

pub mod capture;
pub mod clocks;
pub mod kernel;
pub mod loader;
pub mod maps;
pub mod plan;
pub mod ring;
pub mod staging;
pub mod suggest;
pub mod target;
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
