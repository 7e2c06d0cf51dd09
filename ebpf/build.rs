//! Rebuild the BPF object when bpf-linker changes: cargo does not see it as a dependency.
use which::which;

fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(error) => {
            println!("cargo:warning=bpf-linker not found on PATH ({error}); run scripts/setup.sh")
        }
    }
}
