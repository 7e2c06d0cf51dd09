//! The recorder sink (issue 5): stage hits to rotated trace files while the exporter runs;
//! every file complete at SIGTERM; the files analyse.

use clockpath_tests::*;

fn recorded(extra_env: &[(&str, &str)]) -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
    recorded_while(extra_env, |_| {})
}

/// Record while `sched messaging` runs; `during` sees the recorder's directory before the stop.
fn recorded_while(
    extra_env: &[(&str, &str)],
    during: impl FnOnce(&std::path::Path),
) -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("traces");
    let mut env = vec![
        ("CLOCKPATH_RECORDER__ENABLED", "true"),
        ("CLOCKPATH_RECORDER__DIR", rec.to_str().unwrap()),
        ("CLOCKPATH_RECORDER__ROTATE_BYTES", "262144"),
    ];
    env.extend_from_slice(extra_env);
    let e = Exporter::start(&["--duration", "60"], &env);
    wait_ok(sched_messaging(40), "perf bench sched messaging");
    during(&rec);
    // Stopping detaches, drains the ring and closes the files: nothing to wait for.
    let out = e.stop();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut files: Vec<_> = std::fs::read_dir(&rec).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    (dir, files)
}

/// `clockpath analyze` over `files` into `out`; its report.json.
fn analyze(out: &std::path::Path, files: &[std::path::PathBuf]) -> serde_json::Value {
    let mut args = vec!["analyze".to_string(), "--no-plots".into(), "--out".into(), out.display().to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = clockpath(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn recorded_traces_rotate_end_with_whole_lines_and_analyse() {
    require_root();
    let (dir, files) = recorded(&[]);
    assert!(files.len() >= 2, "rotation at 256 KiB should give several files: {files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            // The base columns, the hit on reference time, the cause of a runqueue wait, and
            // which reference (here, with no PPS source, the system clock).
            text.starts_with(
                "timestamp_ns,probe_name,session_id,cpu_id,delta_chain_id,chain,env,reference_ns,cause,reference\n"
            ) && text.lines().nth(1).is_some_and(|l| l.ends_with(",system")),
            "{}",
            f.display()
        );
        assert!(text.ends_with('\n'), "{} ends mid-line", f.display());
        // Every hit of a runqueue instance names its cause; other chains' hits leave it empty.
        for l in text.lines().skip(1) {
            let cause = l.rsplit(',').nth(1).unwrap_or_default();
            let runqueue = l.split(',').nth(5) == Some("runqueue");
            assert_eq!(
                runqueue,
                ["wakeup", "new", "preempted"].contains(&cause),
                "{}: cause `{cause}` on {l}",
                f.display()
            );
        }
    }
    let r = analyze(&dir.path().join("report"), &files);
    let sched = r["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chain"] == "runqueue")
        .expect("runqueue in the recorded traces");
    let seen: u64 = sched["sessions"].as_array().unwrap().iter().map(|s| s["seen"].as_u64().unwrap()).sum();
    assert!(seen > 1000, "only {seen} runqueue chains recorded");
    assert_eq!(r["read"]["partial_lines"], 0);
}

#[test]
fn raw_hits_are_recorded_with_their_stage() {
    require_root();
    let (_dir, files) = recorded(&[("CLOCKPATH_PROBE__RAW_HITS", "true"), ("CLOCKPATH_RECORDER__FORMAT", "jsonl")]);
    let first = std::fs::read_to_string(&files[0]).unwrap();
    let hit: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    for field in ["timestamp_ns", "probe_name", "session_id", "cpu_id", "delta_chain_id", "chain", "env"] {
        assert!(hit.get(field).is_some(), "{field} missing from {hit}");
    }
    let stages = ["enqueue", "switch_in", "start", "expire_entry", "expire_exit", "raise", "entry", "exit"];
    assert!(
        first.lines().take(200).all(|l| stages.iter().any(|s| l.contains(&format!("\"probe_name\":\"{s}\"")))),
        "{}",
        &first[..first.len().min(2000)]
    );
}

/// Issue 11: Parquet recording. A `.parquet` file is whole (magic at both ends) or not there
/// yet: the open file is `NAME.parquet.partial` until rotation or the stop renames it.
#[test]
fn recorded_parquet_files_are_whole_and_analyse() {
    require_root();
    let names = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    let (dir, files) = recorded_while(
        &[("CLOCKPATH_RECORDER__FORMAT", "parquet"), ("CLOCKPATH_RECORDER__ROTATE_BYTES", "32768")],
        |rec| {
            let open = wait_for("the open Parquet file", std::time::Duration::from_secs(10), || {
                names(rec).into_iter().find(|n| n.ends_with(".parquet.partial"))
            });
            assert!(open.starts_with("traces-"), "{open}");
        },
    );
    assert!(
        files.len() >= 2,
        "rotation at 32 KiB (Parquet compresses ~10x) should give several files: {files:?} ({:?} bytes)",
        files.iter().map(|f| std::fs::metadata(f).unwrap().len()).collect::<Vec<_>>()
    );
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(name.ends_with(".parquet"), "{name}: left unfinished");
        let bytes = std::fs::read(f).unwrap();
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"), "{name}: not a whole Parquet file");
    }
    let r = analyze(&dir.path().join("report"), &files);
    let sched = r["chains"].as_array().unwrap().iter().find(|c| c["chain"] == "runqueue").expect("runqueue");
    let seen: u64 = sched["sessions"].as_array().unwrap().iter().map(|s| s["seen"].as_u64().unwrap()).sum();
    assert!(seen > 1000, "only {seen} runqueue chains recorded");
    assert_eq!(r["read"]["bad_lines"], 0);
}

/// `clockpath run` with the recorder writing to `dir`; its exit status and stderr, for a run
/// that is refused before it serves (killed after `within` otherwise).
fn run_recording_into(dir: &std::path::Path) -> (Option<i32>, String) {
    let port = free_port();
    let mut child = std::process::Command::new(clockpath_bin())
        .args(["run", "--duration", "3"])
        .env("CLOCKPATH_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("CLOCKPATH_RECORDER__ENABLED", "true")
        .env("CLOCKPATH_RECORDER__DIR", dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start clockpath run");
    let status =
        wait_for("clockpath run to end", std::time::Duration::from_secs(60), || child.try_wait().ok().flatten());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).expect("stderr");
    (status.code(), err)
}

/// The names the recorder gives its first file in each of the next `seconds` seconds.
fn next_file_names(seconds: u64) -> Vec<String> {
    let now = std::time::SystemTime::now();
    (0..seconds)
        .map(|s| {
            let t = humantime::format_rfc3339_seconds(now + std::time::Duration::from_secs(s)).to_string();
            format!("traces-{}-0001.csv", t.replace(':', ""))
        })
        .collect()
}

/// Issue 31, "the recorder writes through symlinks": as uid 65534, a world-writable directory
/// holding links named after the next 90 seconds' trace files, pointed at a root-owned 0600
/// file. The exporter refuses the directory (owned by another user, writable by everyone) and
/// the file is untouched. In a directory others may write only as /tmp allows (sticky,
/// root-owned), the planted link is not followed either: the recorder's file must be new, so
/// the run is refused naming it, and the file is untouched. A recorder directory removed while
/// the exporter runs is made again at the next rotation.
///
/// Rests on: uid 65534 exists as a plain number here (no name needed: chown by id), and the
/// test runs as root (checked).
#[test]
fn the_recorder_never_writes_through_links_and_refuses_directories_others_can_fill() {
    require_root();
    use std::os::unix::fs::{PermissionsExt as _, symlink};
    let base = tempfile::tempdir().unwrap();
    let victim = base.path().join("victim");
    std::fs::write(&victim, "root's secret\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let plant = |dir: &std::path::Path| {
        for name in next_file_names(90) {
            let l = dir.join(name);
            symlink(&victim, &l).unwrap();
            std::os::unix::fs::lchown(&l, Some(65534), Some(65534)).unwrap();
        }
    };

    // Another user's world-writable directory.
    let evil = base.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    std::os::unix::fs::chown(&evil, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o777)).unwrap();
    plant(&evil);
    let (code, err) = run_recording_into(&evil);
    assert_ne!(code, Some(0), "the exporter ran with its recorder in another user's directory:\n{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's secret\n");

    // A sticky root-owned world-writable directory (as /tmp) with the links planted.
    let shared = base.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    plant(&shared);
    let (code, err) = run_recording_into(&shared);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's secret\n");
    assert!(
        std::fs::read_dir(&shared).unwrap().all(|e| e.unwrap().file_type().unwrap().is_symlink()),
        "a file was created beside the links"
    );

    // Removed while running: made again at the next rotation.
    let (_dir, files) = recorded_while(&[("CLOCKPATH_RECORDER__ROTATE_BYTES", "16384")], |rec| {
        // Moved away in one step (removing it file by file races with the recorder's next
        // file): the directory is gone from its path, as if removed.
        std::fs::rename(rec, rec.with_extension("gone")).unwrap();
        wait_for("the recorder directory made again", std::time::Duration::from_secs(30), || {
            let _ = sched_messaging(5).wait();
            std::fs::read_dir(rec).ok().and_then(|mut d| d.next()).map(|_| ())
        });
    });
    assert!(!files.is_empty());
}
