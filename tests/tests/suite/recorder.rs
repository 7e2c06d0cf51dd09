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
