//! Capture a kernel's facts as a plan-resolution fixture (`exporter/probe/fixtures/kernels/`):
//! with no argument, the stock Debian kernel the guest tests boot; with `--host`, this machine's
//! kernel. The guest runs `clockpath doctor --capture`; its output is copied to DEST.
//!
//! ```sh
//! cargo build --release -p clockpath
//! cargo run --release -p clockpath-tests --example capture_kernel_fixture -- DEST
//! cargo run --release -p clockpath-tests --example capture_kernel_fixture -- --host DEST
//! ```

use std::{path::Path, process::Command, time::Duration};

use clockpath_tests::{
    clockpath_bin,
    guest::{Guest, GuestOptions},
    require_root,
};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the destination");
    let status = Command::new("cp").arg("-a").arg(format!("{}/.", from.display())).arg(to).status().expect("cp");
    assert!(status.success(), "copying {} to {}", from.display(), to.display());
}

fn main() {
    require_root();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (host, dest) = match args.as_slice() {
        [flag, dest] if flag == "--host" => (true, dest.clone()),
        [dest] => (false, dest.clone()),
        _ => panic!("usage: capture_kernel_fixture [--host] DEST"),
    };
    let dest = Path::new(&dest);
    if host {
        let out = Command::new(clockpath_bin()).args(["doctor", "--capture"]).arg(dest).output().expect("clockpath");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        print!("{}", String::from_utf8_lossy(&out.stdout));
        return;
    }
    // tsc=reliable offers tsc as a clocksource, as the clocksource tests do.
    let guest = Guest::start(
        "./clockpath doctor --capture fixture; echo capture=$?\n",
        &[],
        GuestOptions { cmdline: "tsc=reliable".into(), timeout: Duration::from_secs(300), ..Default::default() },
    );
    let out = guest.wait();
    assert!(out.results.contains("capture=0"), "guest capture failed:\n{}\n{}", out.results, out.serial);
    copy_dir(&out.dir.path().join("fixture"), dest);
    print!("{}", out.results);
}
