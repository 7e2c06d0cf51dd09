//! Rebuild the BPF object when bpf-linker changes: cargo does not see it as a dependency.
//! Without bpf-linker nothing is said here: the committed objects serve while the sources are
//! unchanged, and exporter/probe/build.rs names what to install when they are not.
use which::which;

fn main() {
    if let Ok(path) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
