//! The git revision shown in `clockpath_build_info`, when built from a git checkout, and the
//! target triple.
fn main() {
    // The host triple, for tests that ask cargo about this platform's dependency graph.
    if let Ok(target) = std::env::var("TARGET") {
        println!("cargo:rustc-env=BUILD_TARGET={target}");
    }
    if let Ok(out) = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output()
        && out.status.success()
    {
        let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("cargo:rustc-env=BUILD_GIT_REVISION={rev}");
    }
    // `clockpath --version`: version, revision (when known), target and profile.
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "unknown revision".to_string(), |o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let version = format!(
        "{} ({rev}, {}, {} build)",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
        std::env::var("TARGET").unwrap_or_default(),
        std::env::var("PROFILE").unwrap_or_default()
    );
    println!("cargo:rustc-env=BUILD_LONG_VERSION={version}");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
}
