//! Builds the BPF object (`ebpf/`), which `loader.rs` embeds.
//!
//! The command is aya-build's (`rustup run nightly cargo build --package clockpath-ebpf --bins
//! --release --target bpfel-unknown-none -Z build-std=core`, with its rustflags), but into one
//! fixed target directory, `target/bpf`. aya-build puts its target directory under `OUT_DIR`,
//! which differs between `cargo clippy`, `cargo build` and `cargo test` (and between feature
//! sets), so every one of them compiled `core` and the object again (about a minute each on two
//! cores). With a fixed directory the first command builds it and the others find it fresh.
//! Nested cargo locks `target/bpf` only, never the outer build's directory
//! (<https://github.com/rust-lang/cargo/issues/6412>).
//!
//! Set `AYA_BUILD_SKIP=1` to skip it (lint or fuzz jobs without bpf-linker): the crate then
//! embeds an empty object and the loader refuses to load.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

const PACKAGE: &str = "clockpath-ebpf";
/// The objects' binary names (`[[bin]]`s of the BPF crate): the stage programs, the clock audit.
const OBJECTS: [&str; 2] = ["clockpath", "clocks"];

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        for object in OBJECTS {
            std::fs::write(out_dir.join(object), b"").context("writing an empty BPF object")?;
        }
        println!("cargo:warning=AYA_BUILD_SKIP is set: this build carries no BPF object");
        return Ok(());
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let workspace = manifest.join("../..").canonicalize().context("locating the workspace root")?;
    // Directory-level rerun: cargo compares the newest mtime below each path.
    for dir in ["ebpf", "common"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target_root = env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
    let target_dir = target_root.join("bpf");

    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN not set")?;
    let target = match endian.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => bail!("unsupported endianness {other}"),
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    // Unit separator between flags, as CARGO_ENCODED_RUSTFLAGS wants them.
    let rustflags =
        [format!("--cfg=bpf_target_arch=\"{arch}\""), "-Cdebuginfo=2".into(), "-Clink-arg=--btf".into()].join("\x1f");

    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--package", PACKAGE, "--bins", "--release", "--target", target])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(&target_dir)
        .current_dir(&workspace)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        // The outer build's compiler settings are for the host toolchain, not nightly's.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS");
    let out = cmd.output().with_context(|| format!("running {cmd:?} (is rustup installed?)"))?;
    if !out.status.success() {
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            println!("cargo:warning={line}");
        }
        return Err(anyhow!(
            "building the BPF object failed ({}); scripts/setup.sh installs rust-src and bpf-linker",
            out.status
        ));
    }
    for object in OBJECTS {
        strip_debug(&target_dir.join(target).join("release").join(object), &out_dir.join(object))?;
    }
    Ok(())
}

/// Copy the object without its DWARF sections and its `.BTF.ext`. bpf-linker needs DWARF to
/// emit BTF, and the loader needs `.BTF` (kept: map and program types), but nothing reads
/// DWARF: with it the object is ~20 MB that every exporter maps and pages in while loading.
/// `.BTF.ext` holds the func and line info of every program; the object has no CO-RE
/// relocations in it, the kernel needs neither (subprograms are then verified as static
/// ones, in their caller's context), and aya 0.14 copies a section's whole line info for each
/// program it parses: 108 slot programs made that a 290 MB peak at every start, above the
/// Helm chart's memory limit. `CLOCKPATH_BPF_LINE_INFO=1` keeps it, for verifier logs and
/// `bpftool prog dump` with source lines.
fn strip_debug(from: &Path, to: &Path) -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=CLOCKPATH_BPF_LINE_INFO");
    let keep_line_info = env::var_os("CLOCKPATH_BPF_LINE_INFO").is_some_and(|v| v == "1");
    let candidates = ["/usr/lib/llvm-22/bin/llvm-objcopy", "llvm-objcopy-22", "llvm-objcopy"];
    for objcopy in candidates {
        let mut cmd = Command::new(objcopy);
        cmd.arg("--strip-debug");
        if !keep_line_info {
            cmd.arg("--remove-section=.BTF.ext");
        }
        match cmd.arg(from).arg(to).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                return Err(anyhow!(
                    "{objcopy} --strip-debug {} failed: {}",
                    from.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(_) => continue,
        }
    }
    Err(anyhow!("llvm-objcopy not found (tried {}); scripts/setup.sh installs LLVM 22", candidates.join(", ")))
}
