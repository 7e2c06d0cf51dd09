//! Provides the BPF objects (`ebpf/`) `loader.rs` embeds.
//!
//! The objects are generated once and committed beside their source, in `ebpf/objects/`, with
//! the hash of the sources they were built from (`SOURCES.sha256`), the way bpf2go projects
//! keep their `.o` files: while the sources hash the same, the committed objects are used and a
//! build needs stable Rust only. When they differ (or `CLOCKPATH_BPF_BUILD=1`), the objects
//! are built from source, which needs nightly with rust-src and bpf-linker; without them the
//! build fails naming the command that regenerates the objects (scripts/bpf-objects.sh, which
//! CI also runs to check that the committed objects are exactly what the sources give).
//!
//! The build command is aya-build's (`rustup run nightly cargo build --package clockpath-ebpf --bins
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
    println!("cargo:rerun-if-env-changed=CLOCKPATH_BPF_BUILD");
    let sources = sources_hash(&workspace)?;
    let committed = workspace.join(COMMITTED);
    let recorded = recorded_hash(&committed.join(SOURCES_FILE));
    let fresh = recorded.as_deref() == Some(sources.as_str());
    let forced = env::var_os("CLOCKPATH_BPF_BUILD").is_some_and(|v| v == "1");
    if fresh && !forced {
        // The committed objects were built from these very sources: no BPF toolchain needed.
        for object in OBJECTS {
            let from = committed.join(format!("{object}.o"));
            std::fs::copy(&from, out_dir.join(object)).with_context(|| format!("copying {}", from.display()))?;
        }
        return Ok(());
    }
    match build_from_source(&workspace, &out_dir, &sources) {
        Ok(()) if !fresh => {
            println!(
                "cargo:warning=the committed BPF objects ({COMMITTED}) were built from other sources: scripts/bpf-objects.sh updates them"
            );
            Ok(())
        }
        Ok(()) => Ok(()),
        Err(e) if !fresh => Err(e.context(format!(
            "the BPF sources differ from those the committed objects in {COMMITTED} were built from ({SOURCES_FILE}), so \
             the object must be built, which needs nightly Rust with rust-src and bpf-linker: run \
             scripts/setup.sh, then scripts/bpf-objects.sh (it updates the committed objects)"
        ))),
        Err(e) => Err(e),
    }
}

/// Where the generated objects are kept, beside their source, and the file recording which
/// sources they were built from.
const COMMITTED: &str = "ebpf/objects";
const SOURCES_FILE: &str = "SOURCES.sha256";

/// The files the objects are built from, workspace-relative: everything under `ebpf/` (but the
/// objects) and `common/`, and this script (its flags). The hash is what
/// `(find ebpf common -type f -not -path 'ebpf/objects/*'; echo exporter/probe/build.rs) |
/// LC_ALL=C sort | xargs sha256sum | sha256sum` prints: scripts/bpf-objects.sh computes it so.
fn source_files(workspace: &Path) -> anyhow::Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = e?.path();
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            if rel.starts_with(COMMITTED) {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut files = vec!["exporter/probe/build.rs".to_string()];
    for dir in ["ebpf", "common"] {
        walk(workspace, &workspace.join(dir), &mut files)?;
    }
    files.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(files)
}

fn sources_hash(workspace: &Path) -> anyhow::Result<String> {
    use sha2::{Digest as _, Sha256};
    let mut listing = String::new();
    for f in source_files(workspace)? {
        let bytes = std::fs::read(workspace.join(&f)).with_context(|| format!("reading {f}"))?;
        listing.push_str(&format!("{:x}  {f}\n", Sha256::digest(&bytes)));
    }
    Ok(format!("{:x}", Sha256::digest(listing.as_bytes())))
}

/// The hash a `SOURCES.sha256` records: its last line that is not a comment.
fn recorded_hash(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().map(str::trim).rfind(|l| !l.is_empty() && !l.starts_with('#')).map(String::from)
}

/// Build the objects from source (nightly, rust-src, bpf-linker) into `out_dir`, and leave a
/// copy with its `SOURCES.sha256` in `target/bpf/objects` for scripts/bpf-objects.sh.
fn build_from_source(workspace: &Path, out_dir: &Path, sources: &str) -> anyhow::Result<()> {
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
    // Paths are remapped so that the object does not depend on where the workspace, the
    // registry or the toolchain is (panic locations keep file names): CI rebuilds it elsewhere
    // and compares it byte for byte with the committed one.
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .context("nightly Rust is not installed (rustup run nightly rustc --print sysroot failed)")?;
    let cargo_home =
        env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", env::var("HOME").unwrap_or_default()));
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
        format!("--remap-path-prefix={}=/clockpath", workspace.display()),
        format!("--remap-path-prefix={cargo_home}=/cargo"),
        format!("--remap-path-prefix={sysroot}=/rustc"),
    ]
    .join("\x1f");

    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--package", PACKAGE, "--bins", "--release", "--target", target])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(&target_dir)
        .current_dir(workspace)
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
    let kept = target_dir.join("objects");
    std::fs::create_dir_all(&kept).with_context(|| format!("creating {}", kept.display()))?;
    for object in OBJECTS {
        strip_debug(&target_dir.join(target).join("release").join(object), &out_dir.join(object))?;
        std::fs::copy(out_dir.join(object), kept.join(format!("{object}.o")))
            .with_context(|| format!("copying {object} to {}", kept.display()))?;
    }
    let toolchain = |args: &[&str]| -> String {
        Command::new(args[0])
            .args(&args[1..])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let record = format!(
        "# sha256 of the sources the objects beside this file were built from: every file under ebpf/\n\
         # (but ebpf/objects/) and common/, and exporter/probe/build.rs; the same as\n\
         #   (find ebpf common -type f -not -path 'ebpf/objects/*'; echo exporter/probe/build.rs) | LC_ALL=C sort | xargs sha256sum | sha256sum\n\
         # Built with {} and {}; regenerate with scripts/bpf-objects.sh.\n{sources}\n",
        toolchain(&["rustup", "run", "nightly", "rustc", "--version"]),
        toolchain(&["bpf-linker", "--version"]),
    );
    std::fs::write(kept.join(SOURCES_FILE), record).context("writing SOURCES.sha256")?;
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
