//! The container image: `scripts/image.sh` builds it with Debian's podman from the release
//! binary (FROM scratch, COPY only), and it runs as the Helm DaemonSet runs it: read-only root,
//! the chart's config mount, tracefs and BTF from the host, and only CAP_BPF and CAP_PERFMON
//! (seccomp unconfined: podman's default profile allows bpf(2) only with CAP_SYS_ADMIN). Every
//! default chain attaches, /metrics answers, and SIGTERM exits cleanly.

use std::{process::Command, time::Duration};

use clockpath_tests::{clockpath_bin, exposition::Scrape, free_port, require_root, wait_for, workspace};

struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", &self.0]).output();
    }
}

fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit(2) fills the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut r) }, 0);
    r.rlim_max
}

#[test]
fn the_image_builds_with_podman_and_runs_every_default_chain_with_the_charts_three_capabilities() {
    require_root();
    let bin = clockpath_bin();
    let out = Command::new(workspace().join("scripts/image.sh"))
        .args(["--binary", bin.to_str().expect("utf-8")])
        .env("IMAGE_TAG", "test")
        .output()
        .expect("scripts/image.sh");
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{log}");
    assert!(out.status.success(), "scripts/image.sh failed:\n{log}");
    assert!(
        !log.contains("falling back to the rootfs tarball") && !log.contains("cannot run containers here"),
        "podman must build and run the image on this machine:\n{log}"
    );
    let image = "localhost/clockpath:test";
    let size =
        Command::new("podman").args(["image", "inspect", "--format", "{{.Size}}", image]).output().expect("podman");
    let bytes: u64 = String::from_utf8_lossy(&size.stdout).trim().parse().expect("image size");
    eprintln!("{image}: {} MB", bytes / 1_000_000);

    let conf = tempfile::tempdir().expect("tempdir");
    std::fs::write(conf.path().join("clockpath.toml"), "[windows]\ninterval_secs = 5\n").expect("config");
    let port = free_port();
    let name = format!("clockpath-test-{}", std::process::id());
    let nofile = hard_limit(libc::RLIMIT_NOFILE).min(1 << 20);
    let nproc = hard_limit(libc::RLIMIT_NPROC).min(32768);
    let run = Command::new("podman")
        .args(["--runtime", "runc", "run", "-d", "--name", &name, "--network", "host", "--read-only"])
        .args(["--ulimit", &format!("nofile={nofile}:{nofile}"), "--ulimit", &format!("nproc={nproc}:{nproc}")])
        .args(["--cap-drop=all", "--cap-add=bpf,perfmon,syslog", "--security-opt", "seccomp=unconfined"])
        .args(["-v", "/sys/kernel/tracing:/sys/kernel/tracing:ro", "-v", "/sys/kernel/btf:/sys/kernel/btf:ro"])
        .arg("-v")
        .arg(format!("{}:/etc/clockpath:ro", conf.path().display()))
        .args(["-e", &format!("CLOCKPATH_HTTP__LISTEN=127.0.0.1:{port}")])
        .args([image, "run", "--config", "/etc/clockpath/clockpath.toml"])
        .output()
        .expect("podman run");
    assert!(run.status.success(), "podman run: {}", String::from_utf8_lossy(&run.stderr));
    let container = Container(name.clone());
    let url = format!("http://127.0.0.1:{port}");
    wait_for("the container's exporter to become healthy", Duration::from_secs(60), || {
        ureq::get(&format!("{url}/healthz")).call().ok().map(|_| ())
    });
    let text = ureq::get(&format!("{url}/metrics")).call().expect("scrape").into_string().expect("body");
    let s = Scrape::parse(&text).expect("scrape parses");
    for chain in ["runqueue", "hrtimer", "softirq"] {
        let running = s
            .samples
            .iter()
            .find(|x| x.name == "clockpath_chain_running" && x.labels.get("chain").map(String::as_str) == Some(chain))
            .map(|x| x.value);
        assert_eq!(running, Some(1.0), "{chain} in the container");
    }
    let stop = Command::new("podman").args(["stop", "-t", "20", &name]).output().expect("podman stop");
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    let code =
        Command::new("podman").args(["inspect", "--format", "{{.State.ExitCode}}", &name]).output().expect("inspect");
    let logs = Command::new("podman").args(["logs", &name]).output().expect("podman logs");
    let logs = String::from_utf8_lossy(&logs.stderr);
    assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "0", "SIGTERM exits 0:\n{logs}");
    assert!(logs.contains("summary chain=runqueue"), "the exporter stopped cleanly:\n{logs}");
    // The Helm chart's set (CAP_BPF, CAP_PERFMON, CAP_SYSLOG) lacks nothing the chains use,
    // and is given up once they are attached.
    assert!(!logs.contains("missing capability capability=CAP_SYSLOG"), "{logs}");
    assert!(logs.contains("capabilities given up after attaching"), "{logs}");
    drop(container);
}
