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
