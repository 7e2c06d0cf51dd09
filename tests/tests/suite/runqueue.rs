//! The two scheduler chains against peers that measure the same thing, on the same events, in
//! the same run (issue 26):
//! - `runqueue` (every run-queue wait: woken, new, or switched out still runnable) against
//!   libbpf-tools' runqlat, row by row in runqlat's log2(µs) rows;
//! - `sched_wakeup` (wakeup → first switch-in) against a bpftrace program that records exactly
//!   that, row by row in bpftrace's `hist()` buckets;
//!
//! under `perf bench sched pipe` and `perf bench sched messaging`, each with the machine idle
//! and with a busy loop on every CPU, one chain and one peer per run. Each test checks the
//! premises it rests on first (the chain runs, the workload made waits, no record was lost,
//! every program saw every sched_switch of the window) and fails naming the one that does not
//! hold.

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use clockpath::{
    config::Config,
    daemon::{self, Daemon},
    pipeline::Sink,
};
use clockpath_offline::chain::ChainRecord;
use clockpath_probe::kernel::Kernel;
use clockpath_tests::{
    peer::{CpuHog, PEER_TOLERANCE, aligned, assume, bpftrace_bucket, parse_bpftrace_hist, runqlat_row},
    *,
};

/// One scheduler chain (`{chain}`), records for every segment (a ring that cannot drop any
/// at this load), and the kernel's BPF run-time statistics (the run counts show every program
/// saw every hit). One chain per run: every program on a tracepoint runs in turn, and each one
/// before a peer's moves the peer's timestamp.
fn config(chain: &str) -> String {
    let mut toml = String::from("[probe]\nring_bytes = 134217728\nbpf_stats = true\n");
    for c in ["runqueue", "sched_wakeup", "hrtimer", "softirq", "clocksource_switch"] {
        toml.push_str(&format!("[chains.{c}]\nenabled = {}\n", c == chain));
    }
    toml
}

/// bpftrace's wakeup → first switch-in, the sched_wakeup chain's semantics: a wakeup (or a new
/// task's) opens, replacing an open one; the task's next switch-in closes.
const WAKEUP_ONLY: &str = r#"
BEGIN { printf("ready\n"); }
tracepoint:sched:sched_wakeup, tracepoint:sched:sched_wakeup_new { @start[args->pid] = nsecs; }
tracepoint:sched:sched_switch {
  $s = @start[args->next_pid];
  if ($s != 0) { @usecs = hist((nsecs - $s) / 1000); delete(@start[args->next_pid]); }
}
END { clear(@start); }
"#;

/// One segment of a scheduler chain.
struct Seg {
    chain: String,
    cause: Option<String>,
    start_ns: u64,
    end_ns: u64,
}

impl Seg {
    fn ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

#[derive(Clone, Default)]
struct Segments(Arc<Mutex<Vec<Seg>>>);

struct Collect {
    names: Vec<Option<(String, Vec<String>)>>,
    out: Segments,
}

impl Sink for Collect {
    fn on_chain(&mut self, rec: &ChainRecord) {
        let Some(Some((name, causes))) = self.names.get(rec.chain as usize) else { return };
        let mut v = self.out.0.lock().unwrap();
        for s in &rec.segments {
            v.push(Seg {
                chain: name.clone(),
                cause: causes.get(rec.cause as usize).cloned(),
                start_ns: s.start_ns,
                end_ns: s.end_ns,
            });
        }
    }
}

/// Run counts of the peers' programs on sched_switch (named after it) and of clockpath's
/// (named after their slot; their target says where they are attached).
fn switch_program_runs(d: &Daemon) -> BTreeMap<String, u64> {
    let peers = aya::programs::loaded_programs().filter_map(Result::ok).filter_map(|p| {
        let name = p.name_as_str()?.to_string();
        name.contains("sched_switch").then(|| (format!("{name} (id {})", p.id()), p.run_count()))
    });
    let ours = d
        .program_stats()
        .into_iter()
        .filter(|p| p.target.contains("sched_switch"))
        .map(|p| (format!("clockpath {}/{} {}", p.chain, p.stage, p.target), p.run_count));
    peers.chain(ours).collect()
}

/// Start a peer and wait until it prints `ready` (it does once attached); returns it, its
/// output, and when the line arrived (CLOCK_MONOTONIC ns, stamped by the reading thread as it
/// reads it: the start of the peer's window, a few µs after its attach).
fn peer(cmd: &mut Command, ready: &'static str) -> (Child, std::thread::JoinHandle<String>, u64) {
    use std::io::BufRead as _;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start peer");
    let out = child.stdout.take().expect("peer stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let text = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains(ready) {
                let _ = tx.send(monotonic_ns());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let at = wait_for(&format!("the peer to print `{ready}`"), Duration::from_secs(60), || rx.try_recv().ok());
    (child, text, at)
}

/// Interrupt the peer (SIGINT: it prints its histogram and exits); returns when its window
/// ended (the SIGINT it obeyed) and its output.
fn stop_peer(mut child: Child, text: std::thread::JoinHandle<String>) -> (u64, String) {
    let (status, at) = interrupt(&mut child, Duration::from_secs(30)).expect("the peer exits within 30 s of SIGINT");
    assert!(status.success(), "peer exited with {status}");
    (at, text.join().expect("peer output"))
}

enum Workload {
    Pipe,
    Messaging,
}

/// Who clockpath is compared with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// libbpf-tools' runqlat, against the runqueue chain.
    Runqlat,
    /// The wakeup-only bpftrace program, against the sched_wakeup chain.
    WakeupOnly,
}

impl Peer {
    fn chain(self) -> &'static str {
        match self {
            Peer::Runqlat => "runqueue",
            Peer::WakeupOnly => "sched_wakeup",
        }
    }
}

fn run(workload: Workload, busy: bool, who: Peer) {
    require_root();
    let perf = require_tool("perf", "linux-perf");
    let mut peer_cmd = match who {
        Peer::Runqlat => {
            let mut c = Command::new(require_tool("stdbuf", "coreutils"));
            c.arg("-oL").arg(require_tool("runqlat", "libbpf-tools")).args(["600", "1"]);
            c
        }
        Peer::WakeupOnly => {
            let mut c = Command::new(require_tool("bpftrace", "bpftrace"));
            c.args(["-e", WAKEUP_ONLY]);
            c
        }
    };
    let ready = if who == Peer::Runqlat { "Tracing" } else { "ready" };
    let chain = who.chain();
    let _hog = busy.then(CpuHog::start);
    let (_dir, path) = config_file(&config(chain));
    let loaded = Config::load(Some(&path)).expect("config");
    let plans = daemon::plan(&loaded, &Kernel::open()).expect("plan");
    let mut names = vec![None; 16];
    for p in plans.iter().filter(|p| p.is_chain()) {
        names[p.index as usize] = Some((p.name.clone(), p.causes.clone()));
    }
    let segments = Segments::default();
    let sink = Collect { names, out: segments.clone() };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (from, until, runs, peer_text, counters, dropped) = rt.block_on(async {
        let d = Daemon::start(&loaded, plans, vec![Box::new(sink)]).expect("start clockpath");
        let p = d.plans.iter().find(|p| p.name == chain).expect("chain planned");
        assume(&format!("the {chain} chain runs on this kernel"), p.is_running(), || format!("{:?}", p.state));
        // The window starts when the peer says it is attached and ends at its SIGINT.
        let (q, q_text, from) = peer(&mut peer_cmd, ready);
        let runs0 = switch_program_runs(&d);
        let args: Vec<&str> = match workload {
            Workload::Pipe => vec!["bench", "sched", "pipe", "-l", if busy { "20000" } else { "50000" }],
            Workload::Messaging => vec!["bench", "sched", "messaging", "-l", "400"],
        };
        let w = Command::new(&perf).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("perf");
        tokio::task::spawn_blocking(move || wait_ok(w, "perf bench")).await.unwrap();
        let runs1 = switch_program_runs(&d);
        let (until, peer_text) = stop_peer(q, q_text);
        let plans = d.plans.clone();
        let maps = d.maps.clone();
        let stats = d.stats.clone();
        d.stop().await;
        let m = maps.lock().unwrap();
        let counters: Vec<_> = plans
            .iter()
            .filter(|p| p.is_chain())
            .map(|p| (p.name.clone(), m.chain_counters(p.index).expect("chain counters")))
            .collect();
        let runs: Vec<(String, u64)> =
            runs1.iter().filter_map(|(name, n1)| Some((name.clone(), n1 - runs0.get(name)?))).collect();
        let dropped = stats.dropped.load(std::sync::atomic::Ordering::Relaxed);
        (from, until, runs, peer_text, counters, dropped)
    });

    // Premises.
    for (name, c) in &counters {
        assume(&format!("clockpath lost no {name} record"), c.ring_lost == 0 && dropped == 0, || {
            format!("ring lost {}, dropped in userspace {dropped}", c.ring_lost)
        });
    }
    let (lo, hi) = (runs.iter().map(|r| r.1).min().unwrap_or(0), runs.iter().map(|r| r.1).max().unwrap_or(0));
    assume(
        "every program on sched_switch (clockpath's and the peer's) ran for every hit of the window",
        runs.len() >= 2 && lo > 0 && (hi - lo) as f64 <= 0.005 * hi as f64,
        || format!("run counts {runs:?}"),
    );
    let segs = segments.0.lock().unwrap();
    // The chain's segments that ended while the peer was attached.
    let window: Vec<&Seg> = segs.iter().filter(|s| s.chain == chain && s.end_ns >= from && s.end_ns <= until).collect();
    let n = window.len();
    assume("the workload made at least 10 000 waits", n >= 10_000, || format!("{n} waits"));

    let comparison = match who {
        Peer::Runqlat => {
            // runqlat stamps a wakeup's (or new task's) wait in its wakeup handler, a preempted
            // task's in its switch handler: each group of clockpath's waits gets its own
            // alignment. Rows: runqlat's, log2 of whole µs.
            let preempted = |s: &&&Seg| s.cause.as_deref() == Some("preempted");
            let at_switch: Vec<u64> = window.iter().filter(preempted).map(|s| s.ns()).collect();
            let at_wakeup: Vec<u64> = window.iter().filter(|s| !preempted(s)).map(|s| s.ns()).collect();
            let mut causes: BTreeMap<String, u64> = BTreeMap::new();
            for s in &window {
                *causes.entry(s.cause.clone().unwrap_or_default()).or_insert(0) += 1;
            }
            eprintln!("runqueue waits by cause: {causes:?}");
            if busy {
                assume("a busy machine preempts the workload", !at_switch.is_empty(), || format!("{causes:?}"));
            }
            let rows: BTreeMap<u32, u64> =
                parse_log2_hist(&peer_text).into_iter().map(|(lo, _, c)| (runqlat_row(lo), c)).collect();
            assume("runqlat printed its histogram", !rows.is_empty(), || peer_text.clone());
            aligned(&[&at_wakeup, &at_switch], rows, |ns| runqlat_row(ns / 1000))
        }
        Peer::WakeupOnly => {
            let durations: Vec<u64> = window.iter().map(|s| s.ns()).collect();
            let rows = parse_bpftrace_hist(&peer_text, "@usecs");
            assume("bpftrace printed its histogram", !rows.is_empty(), || peer_text.clone());
            aligned(&[&durations], rows, |ns| bpftrace_bucket(ns / 1000))
        }
    };
    let table = comparison.table(if who == Peer::Runqlat { "log2 us" } else { "hist bucket" });
    eprintln!("{chain} against its peer:\n{table}");
    let bad = comparison.disagreements(PEER_TOLERANCE);
    assert!(bad.is_empty(), "{chain} and its peer disagree: {bad:?}\n{table}");
}

#[test]
fn runqueue_agrees_with_runqlat_under_sched_pipe() {
    run(Workload::Pipe, false, Peer::Runqlat);
}

#[test]
fn runqueue_agrees_with_runqlat_under_sched_pipe_on_a_busy_machine() {
    run(Workload::Pipe, true, Peer::Runqlat);
}

#[test]
fn runqueue_agrees_with_runqlat_under_sched_messaging() {
    run(Workload::Messaging, false, Peer::Runqlat);
}

#[test]
fn runqueue_agrees_with_runqlat_under_sched_messaging_on_a_busy_machine() {
    run(Workload::Messaging, true, Peer::Runqlat);
}

#[test]
fn sched_wakeup_agrees_with_a_wakeup_only_peer_under_sched_pipe() {
    run(Workload::Pipe, false, Peer::WakeupOnly);
}

#[test]
fn sched_wakeup_agrees_with_a_wakeup_only_peer_under_sched_pipe_on_a_busy_machine() {
    run(Workload::Pipe, true, Peer::WakeupOnly);
}

#[test]
fn sched_wakeup_agrees_with_a_wakeup_only_peer_under_sched_messaging() {
    run(Workload::Messaging, false, Peer::WakeupOnly);
}

#[test]
fn sched_wakeup_agrees_with_a_wakeup_only_peer_under_sched_messaging_on_a_busy_machine() {
    run(Workload::Messaging, true, Peer::WakeupOnly);
}
