//! Least privilege (issue 15): the exporter as a non-root user holding only CAP_BPF,
//! CAP_PERFMON and CAP_SYSLOG runs every chain root runs; after attaching, no thread of it
//! holds a capability; `doctor` and `run` name each missing capability and what it disables.
//! The clocksource chain, which needs CAP_SYSLOG to match its first read, is tested the same
//! way in the guest (`guest.rs`), where it can attach.

use std::{collections::BTreeSet, os::unix::fs::PermissionsExt as _, path::PathBuf, process::Command, time::Duration};

use clockpath_tests::{capabilities, exposition::Scrape, *};
use serde_json::Value;

/// `setpriv` (from PATH) running its command as nobody with exactly `caps`.
fn as_nobody(caps: &[&str]) -> Vec<String> {
    capabilities::as_nobody("setpriv", caps)
}

/// The clockpath binary and configs in a directory nobody can read (a test's tempdir is 0700).
struct Shared {
    dir: tempfile::TempDir,
}

impl Shared {
    fn new() -> Shared {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::copy(clockpath_bin(), dir.path().join("clockpath")).expect("copy clockpath");
        Shared { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("clockpath")
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        p
    }

    /// `clockpath ARGS` as nobody with `caps`, serving (if it gets that far) on a free port.
    fn run(&self, caps: &[&str], args: &[&str]) -> std::process::Output {
        self.run_listening(caps, args, &format!("127.0.0.1:{}", free_port()))
    }

    /// The same, with `http.listen` at `listen`.
    fn run_listening(&self, caps: &[&str], args: &[&str], listen: &str) -> std::process::Output {
        let wrapper = as_nobody(caps);
        Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(self.bin())
            .args(args)
            .env("CLOCKPATH_HTTP__LISTEN", listen)
            .output()
            .expect("setpriv (util-linux)")
    }
}

fn doctor_json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("doctor --json: {e}\nstdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), stderr(out))
    })
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn missing(doctor: &Value) -> Vec<(String, String)> {
    doctor["missing_capabilities"]
        .as_array()
        .expect("missing_capabilities")
        .iter()
        .map(|m| (m["capability"].as_str().unwrap().to_string(), m["disables"].as_str().unwrap().to_string()))
        .collect()
}

/// Every thread of `pid` holds nothing (and, with `bounding`, cannot regain anything by exec).
fn assert_holds_none(pid: u32, bounding: bool, who: &str) {
    let threads = capabilities::of_process(pid);
    assert!(threads.len() >= 3, "{who}: threads {threads:?}");
    for t in &threads {
        assert!(t.holds_none(), "{who}: thread {} still holds capabilities: {t:?}", t.name);
        assert!(t.no_new_privs, "{who}: thread {} without no_new_privs", t.name);
        if bounding {
            assert_eq!(t.bounding, 0, "{who}: thread {} bounding set {:x}", t.name, t.bounding);
        }
    }
    eprintln!(
        "{who}: {} threads, none holds a capability ({:?})",
        threads.len(),
        threads.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
}

#[test]
fn nobody_with_bpf_perfmon_and_syslog_runs_every_chain_root_runs_but_kvm_and_then_holds_nothing() {
    require_root();
    let shared = Shared::new();
    let root = doctor_json(&clockpath(&["doctor", "--json"]));
    let least = shared.run(&["bpf", "perfmon", "syslog"], &["doctor", "--json"]);
    let least = doctor_json(&least);
    let chains = running_chains(&root);
    assert!(chains.contains("runqueue") && chains.contains("hrtimer"), "root runs {chains:?}");
    // Premise of the kvm exception: root runs the kvm chain here (the kernel has kvm events).
    assert!(chains.contains("kvm"), "root runs {chains:?}");
    // The kvm chain reads the exit reason from the tracepoint's record: its targets are
    // tracepoints only, and tracefs (0700) needs CAP_DAC_READ_SEARCH for nobody. Every other
    // chain has BTF-typed targets first.
    let mut without_kvm = chains.clone();
    without_kvm.remove("kvm");
    assert_eq!(
        running_chains(&least),
        without_kvm,
        "the same chains but kvm run as nobody with CAP_BPF, CAP_PERFMON and CAP_SYSLOG"
    );
    let kvm = least["chains"].as_array().unwrap().iter().find(|c| c["name"] == "kvm").expect("kvm chain");
    let why = kvm["state"]["reason"].as_str().unwrap_or_default();
    assert!(why.contains("CAP_DAC_READ_SEARCH"), "the kvm chain says what it needs: {why}");
    let with_dac = doctor_json(&shared.run(&["bpf", "perfmon", "syslog", "dac_read_search"], &["doctor", "--json"]));
    assert_eq!(running_chains(&with_dac), chains, "with CAP_DAC_READ_SEARCH too, every chain root runs");
    assert_eq!(least["uid"], 65534);
    assert_eq!(least["capabilities"], serde_json::json!(["CAP_BPF", "CAP_PERFMON", "CAP_SYSLOG"]));
    // Nothing fatal is missing; tracefs (0700) is closed to nobody, which costs only the
    // tracepoint fallbacks.
    let m = missing(&least);
    assert!(least["missing_capabilities"].as_array().unwrap().iter().all(|m| m["fatal"] == false), "{m:?}");
    assert!(m.iter().any(|(c, d)| c == "CAP_DAC_READ_SEARCH" && d.contains("tracefs")), "{m:?}");
    assert!(!m.iter().any(|(c, _)| c == "CAP_SYSLOG"), "{m:?}");

    // The exporter itself, under load: every chain completes instances.
    let mut load = Some(sched_messaging(2000));
    let e = Exporter::start_wrapped(
        &as_nobody(&["bpf", "perfmon", "syslog"]).iter().map(String::as_str).collect::<Vec<_>>(),
        &shared.bin(),
        &[],
        &[],
    );
    // Serving means attached, and the capabilities are gone before the first scrape.
    assert_holds_none(e.pid(), false, "nobody's exporter");
    // (kvm aside: it does not run for nobody without CAP_DAC_READ_SEARCH, and no guest runs here.)
    wait_for("every chain root runs but kvm to complete instances as nobody", Duration::from_secs(60), || {
        keep_loaded(&mut load);
        let s = Scrape::parse(&e.scrape()).ok()?;
        without_kvm.iter().all(|c| s.sum("clockpath_chains_completed_total", &[("chain", c)]) > 0.0).then_some(())
    });
    let out = e.stop();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let line =
        log.lines().find(|l| l.contains("capabilities given up after attaching")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("kept=none"), "{line}");

    // As root, too: and root's bounding set goes, so nothing it executed could regain any.
    let e = Exporter::start(&[], &[]);
    assert_holds_none(e.pid(), true, "root's exporter");
    assert!(e.stop().status.success());
}

/// A chain whose stage filters on a kernel function's address.
const FILTERED: &str = only_these_chains!(
    r#"

[chains.tick]
description = "The scheduler tick's hrtimer only"
timeout_ms = 10000

[[chains.tick.stages]]
name = "start"
filter = "arg0->function == tick_nohz_handler"
targets = [{ attach = "tp_btf:hrtimer_start", key = "arg0" }]

[[chains.tick.stages]]
name = "expire_entry"
targets = [{ attach = "tp_btf:hrtimer_expire_entry", key = "arg0" }]
"#
);

#[test]
fn each_missing_capability_is_named_with_what_it_disables() {
    require_root();
    let shared = Shared::new();

    // Nothing: both fatal ones named, doctor fails.
    let out = shared.run(&[], &["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    for cap in ["CAP_BPF", "CAP_PERFMON"] {
        let line = text.lines().find(|l| l.contains(&format!("MISSING {cap}:"))).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("nothing runs"), "{line}");
    }
    assert!(text.contains("uid 65534; effective capabilities: none"), "{text}");

    // CAP_BPF alone: only CAP_PERFMON is named, and `run` says it lacks it instead of
    // blaming the kernel.
    let out = shared.run(&["bpf"], &["doctor", "--json"]);
    let m = missing(&doctor_json(&out));
    assert!(m.iter().any(|(c, _)| c == "CAP_PERFMON") && !m.iter().any(|(c, _)| c == "CAP_BPF"), "{m:?}");
    let out = shared.run(&["bpf"], &["run", "--duration", "1"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("missing capability capability=CAP_PERFMON"), "{err}");
    assert!(err.contains("no chain can run here") && err.contains("this process lacks CAP_PERFMON"), "{err}");
    eprintln!("CAP_BPF only: {}", err.lines().last().unwrap_or_default());

    // Without CAP_SYSLOG kernel addresses are hidden: a filter naming a function cannot work,
    // and says which capability it needs instead of never matching.
    let config = shared.file("filtered.toml", FILTERED);
    let config = config.to_str().unwrap();
    let out = shared.run(&["bpf", "perfmon"], &["--config", config, "doctor", "--json"]);
    let doctor = doctor_json(&out);
    let m = missing(&doctor);
    assert!(m.iter().any(|(c, d)| c == "CAP_SYSLOG" && d.contains("first_read") && d.contains("filter")), "{m:?}");
    let tick = doctor["chains"].as_array().unwrap().iter().find(|c| c["name"] == "tick").expect("tick chain");
    let reason = tick["state"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("hidden") && reason.contains("CAP_SYSLOG"), "{tick}");
    eprintln!("without CAP_SYSLOG the filtered chain is disabled: {reason}");
    let out = shared.run(&["bpf", "perfmon", "syslog"], &["--config", config, "doctor", "--json"]);
    assert_eq!(running_chains(&doctor_json(&out)), BTreeSet::from(["tick".to_string()]));

    // probe.bpf_stats needs CAP_SYS_ADMIN: named when it is asked for, and a clear error.
    let stats = shared.file("stats.toml", "[probe]\nbpf_stats = true\n");
    let stats = stats.to_str().unwrap();
    let out = shared.run(&["bpf", "perfmon", "syslog"], &["--config", stats, "doctor", "--json"]);
    let m = missing(&doctor_json(&out));
    assert!(m.iter().any(|(c, d)| c == "CAP_SYS_ADMIN" && d.contains("bpf_stats")), "{m:?}");
    let out = shared.run(&["bpf", "perfmon", "syslog"], &["--config", stats, "run", "--duration", "1"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("probe.bpf_stats") && err.contains("needs CAP_SYS_ADMIN"), "{err}");

    // A privileged port without CAP_NET_BIND_SERVICE.
    let out = shared.run_listening(&["bpf", "perfmon", "syslog"], &["doctor", "--json"], "127.0.0.1:81");
    let d = doctor_json(&out);
    let m = d["missing_capabilities"].as_array().unwrap();
    assert!(m.iter().any(|m| m["capability"] == "CAP_NET_BIND_SERVICE" && m["fatal"] == true), "{m:?}");
}
