//! OTLP export throughput and cost: synthetic chain instances (three segments, so four spans
//! each, with interference events) go through the OTLP sink to an in-process receiver, with
//! everything clockpath runs pinned to CPU 0 and the receiver to CPU 1.
//!
//! Prints, per transport: spans per second exported on one core, CPU per exported span of the
//! export threads (from /proc/self/task/*/schedstat), and the assembly-thread cost per chain
//! (sampling decision and hand-off).
//!
//! `cargo bench -p clockpath-tests --bench otlp_export` (CHAINS=N to change the count).

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use clockpath::{
    config::Config,
    config::otlp::settings::Settings,
    exemplars::ExemplarStore,
    ktime::WallClock,
    pipeline::Sink as _,
    pps::TimeReference,
    sinks::otlp::{ChainMeta, OtlpParts, OtlpSink, Sampler, SpanContextInfo},
};
use clockpath_offline::chain::{ChainRecord, ChainShape, Outcome, Segment};
use clockpath_tests::otlp::{Receiver, Transport, pin_to};

/// Nanoseconds on CPU of this process's threads whose name starts with `prefix`.
fn threads_cpu_ns(prefix: &str) -> u64 {
    let mut total = 0;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0 };
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with(prefix) {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            total += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid timespec pointer; the per-thread CPU clock always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn record(i: u64) -> ChainRecord {
    let t0 = 1_000_000_000 + i * 10_000;
    let seg = |index: u8, a: u64, b: u64| Segment {
        index,
        start_ns: t0 + a,
        end_ns: t0 + b,
        cpu: (i % 2) as u32,
        slot: index,
        interference_ns: [120, 0, 0, 40 + i % 7, 0],
    };
    ChainRecord {
        chain: 0,
        instance_id: i,
        key: i % 64,
        capture: 0,
        cpu: (i % 2) as u32,
        cause: 0,
        start_ns: t0,
        end_ns: t0 + 3_000 + i % 500,
        segments: vec![seg(1, 0, 900), seg(2, 900, 2_100), seg(3, 2_100, 3_000 + i % 500)],
        outcome: Outcome::Completed,
        session: None,
        labels: Vec::new(),
    }
}

fn run(transport: Transport, chains: u64) {
    let receiver = Receiver::counting(transport, Some(1));
    // clockpath's side on CPU 0: the export thread and its runtime inherit this affinity.
    pin_to(0);
    let mut config = Config::builtin();
    config.otlp.endpoint = receiver.endpoint();
    config.otlp.protocol = match transport {
        Transport::Grpc => "grpc".into(),
        Transport::Http => "http/protobuf".into(),
    };
    config.otlp.queue_chains = 8192;
    config.otlp.batch_chains = 512;
    config.otlp.flush_interval_ms = 50;
    let settings = Settings::resolve(&config.otlp, &|_| None).expect("valid settings").expect("an endpoint");
    let shape = ChainShape {
        name: "bench".into(),
        stages: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        timeout_ns: 0,
        causes: Vec::new(),
    };
    let mut sampling = config.otlp.sampling.clone();
    sampling.per_chain_per_second = f64::MAX;
    sampling.burst = u32::MAX;
    let sampler = Sampler::new(sampling, &config.windows, &[Some(shape.clone())], None, None);
    let info = SpanContextInfo {
        chains: vec![Some(ChainMeta {
            name: Arc::from("bench"),
            stages: shape.stages.iter().map(|s| Arc::from(s.as_str())).collect(),
            segments: (1..=3u8).map(|i| Arc::from(shape.segment_name(i))).collect(),
            stage_attach: vec!["tp_btf".into(); 4],
            causes: Vec::new(),
        })],
        slots: (1..=3u8)
            .map(|i| (i, (Arc::from("tp_btf"), Arc::from(format!("tp_btf:stage{i}")))))
            .collect::<HashMap<_, _>>(),
        env: Arc::from("vm"),
    };
    let le = config.metrics.buckets_seconds.iter().map(|b| clockpath_common::hist::le_index(*b).unwrap()).collect();
    let mut sink = OtlpSink::start(OtlpParts {
        settings,
        info,
        sampler,
        reference: Arc::new(TimeReference::system(Arc::new(WallClock::new()))),
        exemplars: Some(Arc::new(ExemplarStore::new(le))),
    })
    .expect("start the OTLP sink");
    let stats = sink.stats();
    let cpu_before = threads_cpu_ns("clockpath-otlp");
    let start = Instant::now();
    let mut feed_cpu = 0u64;
    for i in 0..chains {
        // Keep the queue fed but never full: this measures export, not drops.
        while stats.queued.load(Ordering::Relaxed) >= 7_000 {
            std::thread::sleep(Duration::from_micros(200));
        }
        let t = thread_cpu_ns();
        sink.on_chain(&record(i));
        feed_cpu += thread_cpu_ns() - t;
    }
    let spans = chains * 4;
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats.spans_exported.load(Ordering::Relaxed) < spans && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed();
    let cpu = threads_cpu_ns("clockpath-otlp") - cpu_before;
    let exported = stats.spans_exported.load(Ordering::Relaxed);
    sink.finish();
    let received = receiver.wait_for_spans(exported, Duration::from_secs(10));
    let dropped: u64 = stats.spans_dropped.iter().map(|d| d.load(Ordering::Relaxed)).sum();
    println!(
        "otlp {:<13} {chains} chains, {exported} spans exported ({received} received, {dropped} dropped) in {:.2} s: \
         {:.0} spans/s on one core; export threads {:.0} ns CPU per span ({:.1} % of the core); \
         assembly thread {:.0} ns per chain",
        match transport {
            Transport::Grpc => "grpc",
            Transport::Http => "http/protobuf",
        },
        elapsed.as_secs_f64(),
        exported as f64 / elapsed.as_secs_f64(),
        cpu as f64 / exported.max(1) as f64,
        100.0 * cpu as f64 / elapsed.as_nanos() as f64,
        feed_cpu as f64 / chains as f64,
    );
    assert_eq!(exported, spans, "every span is exported");
    assert_eq!(received, spans, "the receiver got every span");
}

fn main() {
    let chains: u64 = std::env::var("CHAINS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    for t in [Transport::Grpc, Transport::Http] {
        run(t, chains);
    }
}
