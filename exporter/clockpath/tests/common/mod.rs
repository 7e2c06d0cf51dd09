//! What the CLI test files share: running the binary under test.

use std::process::{Command, Output};

/// `clockpath ARGS` with warnings-only logging, its output captured.
pub fn clockpath(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clockpath"))
        .args(args)
        .env("CLOCKPATH_LOG", "warn")
        .output()
        .expect("run clockpath")
}
