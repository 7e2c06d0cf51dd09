//! The cost of putting a kernel timestamp on reference time (issue 12: ≤ 50 ns per call):
//! `PulseTrain::reference` alone, and `TimeReference::to_reference` as the recorder and the
//! OTLP exporter call it (the source's lock, the fallback's recalibration check), over an hour
//! of pulses from a clock 30 ppm fast with 2 µs of edge jitter.
//!
//! cargo bench -p clockpath-tests --bench reference

use std::{hint::black_box, sync::Arc, time::Instant};

use clockpath::{
    config::Config,
    ktime::{Edge, PulseTrain, WallClock},
    pps::{PpsSource, TimeReference},
};

const CALLS: u64 = 2_000_000;

fn main() {
    let now = clockpath::ktime::monotonic_now_ns() as i64;
    let start = now - 3600 * 1_000_000_000;
    let edges: Vec<Edge> = (0..3600i64)
        .map(|k| {
            let jitter = ((k * 7919) % 5 - 2) * 1000;
            let mono = start + (k as f64 * 1.000_030e9) as i64 + jitter;
            Edge {
                realtime_ns: 1_795_000_000_000_000_000 + k * 1_000_000_000 + 250_000 + jitter,
                monotonic_ns: mono,
                sequence: k as u32 + 1,
            }
        })
        .collect();
    let mut train = PulseTrain::new(0, 2_500_000_000);
    edges.iter().for_each(|e| {
        train.push(*e);
    });
    let cfg = Config::builtin().pps;
    let source = Arc::new(PpsSource::new("/dev/pps0".into(), "bench".into(), String::new(), &cfg));
    edges.iter().for_each(|e| source.add(*e));
    let reference = TimeReference::with_sources(Arc::new(WallClock::new()), vec![source]);
    // Instants spread over the hour, as records arrive: mostly recent, some older.
    let span = (edges[3599].monotonic_ns - start) as u64;
    let at = |i: u64| start as u64 + (i.wrapping_mul(2_654_435_761) % span);

    let t = Instant::now();
    let mut sum = 0i64;
    for i in 0..CALLS {
        sum = sum.wrapping_add(train.reference(black_box(at(i) as i64)).unwrap_or(0));
    }
    let train_ns = t.elapsed().as_nanos() as f64 / CALLS as f64;
    black_box(sum);

    let t = Instant::now();
    let mut sum = 0u64;
    for i in 0..CALLS {
        sum = sum.wrapping_add(reference.to_reference(black_box(at(i))).ns);
    }
    let full_ns = t.elapsed().as_nanos() as f64 / CALLS as f64;
    black_box(sum);

    // What the reader thread does per edge besides waiting in PPS_FETCH: the bracketed
    // REALTIME − MONOTONIC read and the pulse train's update.
    let fresh = PpsSource::new("/dev/pps1".into(), "bench".into(), String::new(), &cfg);
    let t = Instant::now();
    for e in &edges {
        let offset = clockpath::ktime::measure_offset();
        fresh.add(Edge { monotonic_ns: e.realtime_ns - offset, ..*e });
    }
    let per_edge_ns = t.elapsed().as_nanos() as f64 / edges.len() as f64;

    println!(
        "PPS reader, per edge (offset read + pulse train update): {:.1} µs = {:.4} % of a core at 1 Hz",
        per_edge_ns / 1e3,
        per_edge_ns / 1e9 * 100.0
    );
    println!("reference time over 3600 pulses, {CALLS} calls each:");
    println!("  PulseTrain::reference           {train_ns:6.1} ns/call");
    println!("  TimeReference::to_reference     {full_ns:6.1} ns/call   (target <= 50 ns)");
}
