//! Soak: `clockpath run` with every default chain, the recorder and OTLP export on, under
//! continuous scheduler load (`perf bench sched messaging`, restarted as it ends) for
//! SOAK_MINUTES (default 30), scraped 4 times a second throughout.
//!
//! Prints one row per minute: resident size (and without the ring's mapping), data-path CPU
//! per ring record over that minute, scrape latency p50/p99/max over that minute, ring records
//! lost (in the minute and in all), records received, spans exported and recorder bytes. Then
//! RSS flatness after warm-up (SOAK_WARMUP_MINUTES, default 5; target: within 10 %), and
//! writes the series as an SVG (target/soak.svg, or SOAK_SVG). Prints figures; asserts
//! nothing.
//!
//! `cargo bench -p clockpath-tests --bench soak` (root).

use std::{
    path::PathBuf,
    process::Child,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clockpath_tests::{
    Exporter, keep_loaded,
    otlp::{Receiver, Transport},
    procstat::{ring_kib, scrape_values, status_kib, thread_seconds},
    require_root, workspace,
};
use plotters::prelude::*;

struct Row {
    minute: u64,
    rss_mib: f64,
    without_ring_mib: f64,
    cpu_per_record_us: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    scrapes: usize,
    lost_minute: f64,
    lost_total: f64,
    records: f64,
    spans: f64,
    recorder_mib: f64,
    /// Heap by component (clockpath_memory_bytes), MiB.
    heap: Vec<(String, f64)>,
}

fn value(text: &str, family: &str) -> f64 {
    scrape_values(text, family).iter().map(|(_, v)| v).sum()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

fn main() {
    require_root();
    let env_u64 = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let minutes = env_u64("SOAK_MINUTES", 30);
    let warmup = env_u64("SOAK_WARMUP_MINUTES", 5);
    let svg: PathBuf = std::env::var("SOAK_SVG").map_or_else(|_| workspace().join("target/soak.svg"), PathBuf::from);
    let traces = tempfile::tempdir().expect("tempdir");
    let rx = Receiver::counting(Transport::Grpc, None);
    let endpoint = rx.endpoint();
    let e = Exporter::start(
        &[],
        &[
            ("CLOCKPATH_RECORDER__ENABLED", "true"),
            ("CLOCKPATH_RECORDER__DIR", traces.path().to_str().expect("utf-8")),
            // Bounded disk: 8 files of 64 MiB.
            ("CLOCKPATH_RECORDER__ROTATE_BYTES", "67108864"),
            ("CLOCKPATH_RECORDER__KEEP_FILES", "8"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ],
    );
    let pid = e.child.as_ref().expect("running").id();
    println!(
        "soak: clockpath run (default chains, recorder csv, OTLP gRPC), pid {pid}, {minutes} min of `perf bench sched messaging`, scraped every 250 ms"
    );
    println!(
        "{:>4} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>7} {:>10} {:>10} {:>12} {:>10} {:>9}",
        "min",
        "RSS MiB",
        "-ring",
        "µs/record",
        "p50 ms",
        "p99 ms",
        "max ms",
        "scrapes",
        "lost/min",
        "lost all",
        "records",
        "spans",
        "rec MiB"
    );

    // The scraper: 4 scrapes a second, latencies kept per minute.
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (url, latencies, stop) = (e.url("/metrics"), latencies.clone(), stop.clone());
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = agent.get(&url).call().ok().and_then(|r| r.into_string().ok()).is_some();
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if let Ok(mut l) = latencies.lock() {
                    l.push(if ok { ms } else { f64::INFINITY });
                }
                std::thread::sleep(Duration::from_millis(250).saturating_sub(t.elapsed()));
            }
        })
    };

    let started = Instant::now();
    let mut load: Option<Child> = None;
    let mut rows: Vec<Row> = Vec::new();
    let (mut prev_cpu, mut prev_records, mut prev_lost) = (0.0, 0.0, 0.0);
    for minute in 1..=minutes {
        let until = started + Duration::from_secs(minute * 60);
        while Instant::now() < until {
            keep_loaded(&mut load);
            // A benchmark paces itself by the clock; tests poll with deadlines instead.
            std::thread::sleep(Duration::from_millis(200));
        }
        let text = e.scrape();
        let records = value(&text, "clockpath_ring_records_received_total");
        let lost = value(&text, "clockpath_ring_records_lost_total");
        // The data path: every thread but the statistics worker and the main thread.
        let cpu = thread_seconds(pid, None)
            - thread_seconds(pid, Some("clockpath-windo"))
            - thread_seconds(pid, Some("clockpath"));
        let mut lat = std::mem::take(&mut *latencies.lock().expect("latencies"));
        lat.sort_by(f64::total_cmp);
        let (rss, ring) = (status_kib(pid, "VmRSS:") as f64 / 1024.0, ring_kib(pid) as f64 / 1024.0);
        let row = Row {
            minute,
            rss_mib: rss,
            without_ring_mib: rss - ring,
            cpu_per_record_us: (cpu - prev_cpu) * 1e6 / (records - prev_records).max(1.0),
            p50_ms: percentile(&lat, 0.5),
            p99_ms: percentile(&lat, 0.99),
            max_ms: lat.last().copied().unwrap_or(f64::NAN),
            scrapes: lat.len(),
            lost_minute: lost - prev_lost,
            lost_total: lost,
            records,
            spans: rx.span_count() as f64,
            recorder_mib: dir_bytes(traces.path()) as f64 / (1 << 20) as f64,
            heap: scrape_values(&text, "clockpath_memory_bytes{")
                .into_iter()
                .filter(|(c, _)| c != "ring_mapping")
                .map(|(c, b)| (c, b / (1 << 20) as f64))
                .collect(),
        };
        (prev_cpu, prev_records, prev_lost) = (cpu, records, lost);
        println!(
            "{:>4} {:>8.1} {:>8.1} {:>10.3} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>10.0} {:>10.0} {:>12.0} {:>10.0} {:>9.1}",
            row.minute,
            row.rss_mib,
            row.without_ring_mib,
            row.cpu_per_record_us,
            row.p50_ms,
            row.p99_ms,
            row.max_ms,
            row.scrapes,
            row.lost_minute,
            row.lost_total,
            row.records,
            row.spans,
            row.recorder_mib
        );
        let heap: Vec<String> = row.heap.iter().map(|(c, m)| format!("{c} {m:.2}")).collect();
        println!("      heap MiB: {}", heap.join(", "));
        rows.push(row);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = scraper.join();
    if let Some(mut c) = load {
        let _ = c.kill();
        let _ = c.wait();
    }
    let out = e.stop();
    println!("exporter exit: {}", out.status);

    let after: Vec<&Row> = rows.iter().filter(|r| r.minute > warmup).collect();
    if let (Some(first), Some(_)) = (after.first(), after.last()) {
        let (lo, hi) =
            after.iter().fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(r.without_ring_mib), h.max(r.without_ring_mib)));
        let spread = (hi - lo) / first.without_ring_mib * 100.0;
        println!(
            "RSS without the ring after minute {warmup}: {lo:.1}–{hi:.1} MiB, a spread of {spread:.1} % of minute {}'s {:.1} MiB (target: within 10 %: {})",
            first.minute,
            first.without_ring_mib,
            if spread <= 10.0 { "met" } else { "NOT met" }
        );
        let p99 = after.iter().map(|r| r.p99_ms).fold(f64::MIN, f64::max);
        let cpu: f64 = after.iter().map(|r| r.cpu_per_record_us).sum::<f64>() / after.len() as f64;
        println!("worst minute's scrape p99 after warm-up: {p99:.1} ms; mean data-path CPU per record: {cpu:.3} µs");
    }
    match plot(&rows, &svg) {
        Ok(()) => println!("series written to {}", svg.display()),
        Err(e) => println!("could not write {}: {e}", svg.display()),
    }
}

fn plot(rows: &[Row], path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    clockpath_offline::analysis::plot::ensure_font()?;
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    let minutes = rows.len().max(1) as u64;
    let rss_max = rows.iter().map(|r| r.rss_mib).fold(1.0, f64::max) * 1.15;
    let mut c = ChartBuilder::on(&top)
        .caption("clockpath soak: resident memory (MiB)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0u64..minutes, 0.0..rss_max)?;
    c.configure_mesh().x_desc("minute").draw()?;
    c.draw_series(LineSeries::new(rows.iter().map(|r| (r.minute, r.rss_mib)), &BLUE))?
        .label("RSS")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    c.draw_series(LineSeries::new(rows.iter().map(|r| (r.minute, r.without_ring_mib)), &GREEN))?
        .label("RSS without the ring")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    c.configure_series_labels().border_style(BLACK).draw()?;
    let p99_max = rows.iter().map(|r| r.p99_ms).filter(|v| v.is_finite()).fold(1.0, f64::max) * 1.15;
    let mut c = ChartBuilder::on(&bottom)
        .caption("scrape latency p99 per minute (ms)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0u64..minutes, 0.0..p99_max)?;
    c.configure_mesh().x_desc("minute").draw()?;
    c.draw_series(LineSeries::new(rows.iter().map(|r| (r.minute, r.p99_ms)), &RED))?;
    root.present()?;
    Ok(())
}
