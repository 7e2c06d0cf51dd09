//! Builds the BPF object (`ebpf/`) with aya-build: `rustup run nightly cargo build
//! --target bpfel-unknown-none -Z build-std=core`, then the exporter embeds it.
//! Set `AYA_BUILD_SKIP=1` to skip it (lint jobs without bpf-linker); the binary then embeds
//! an empty object and refuses to load.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    // The revision shown in clockpath_build_info, when built from a git checkout.
    if let Ok(out) = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output()
        && out.status.success()
    {
        let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("cargo:rustc-env=BUILD_GIT_REVISION={rev}");
    }
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v != "0") {
        // Lint or fuzz builds without bpf-linker: an empty object, which the loader refuses.
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
        std::fs::write(out.join("clockpath"), b"").context("writing the empty BPF object")?;
        println!("cargo:warning=AYA_BUILD_SKIP is set: this build carries no BPF object");
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "clockpath-ebpf")
        .ok_or_else(|| anyhow!("package clockpath-ebpf not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("clockpath-ebpf manifest has no parent directory"))?
        .to_string();
    let package = aya_build::Package { name: ebpf.name.as_str(), root_dir: &root_dir, ..Default::default() };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
}
