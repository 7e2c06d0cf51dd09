//! OTLP traces per chain instance (issue 7), against an in-process receiver: trace shape and
//! attributes, kernel times converted to wall clock to the nanosecond (checked against the
//! recorder's raw ktime values), both transports, the collector down then up, exemplars, and
//! TLS (a test CA, mutual TLS, the OTEL_*_CERTIFICATE variables, an untrusted collector).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use clockpath_tests::{
    exposition::{Scrape, exemplars},
    otlp::{Received, Receiver, Transport, attr, attr_i64, hex},
    pki::{Pki, utf8},
    *,
};

/// Stages of the built-in chains that run on this kernel.
const CHAIN_STAGES: &[(&str, &[&str])] = &[
    ("runqueue", &["enqueue", "switch_in"]),
    ("hrtimer", &["start", "expire_entry", "expire_exit"]),
    ("softirq", &["raise", "entry", "exit"]),
];

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC, measured here, independently of clockpath.
fn realtime_minus_monotonic() -> i128 {
    let a = clock_ns(libc::CLOCK_MONOTONIC);
    let r = clock_ns(libc::CLOCK_REALTIME);
    let b = clock_ns(libc::CLOCK_MONOTONIC);
    r - (a + b) / 2
}

fn metric(scrape: &Scrape, name: &str, want: &[(&str, &str)]) -> f64 {
    scrape.sum(name, want)
}

/// One trace, checked for shape: exactly one root, a child per segment under it, every span
/// in the same trace; returns (root, children sorted by segment index).
fn shape(spans: &[Received]) -> (&Received, Vec<&Received>) {
    let roots: Vec<_> = spans.iter().filter(|s| s.span.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root per trace: {spans:#?}");
    let root = roots[0];
    let mut children: Vec<_> = spans.iter().filter(|s| !s.span.parent_span_id.is_empty()).collect();
    for c in &children {
        assert_eq!(c.span.parent_span_id, root.span.span_id, "child not under the root: {c:#?}");
        assert_eq!(c.span.trace_id, root.span.trace_id);
    }
    children.sort_by_key(|c| attr_i64(&c.span.attributes, "clockpath.segment.index"));
    (root, children)
}

/// Kernel ktime of each stage hit, by (chain, instance id, stage), from CSV recorder files.
fn recorded_hits(
    dir: &std::path::Path,
    wanted: &BTreeSet<(String, u64)>,
) -> BTreeMap<(String, u64), Vec<(String, u64)>> {
    let mut out: BTreeMap<(String, u64), Vec<(String, u64)>> = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(dir).expect("recorder dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read recorder file");
        for line in text.lines().skip(1) {
            // timestamp_ns,probe_name,session_id,cpu_id,delta_chain_id,chain,env
            let cols: Vec<&str> = line.split(',').collect();
            assert!(cols.len() >= 7, "{}: short line {line}", f.display());
            let Ok(id) = cols[4].parse::<u64>() else { panic!("{}: bad instance id in {line}", f.display()) };
            let key = (cols[5].to_string(), id);
            if wanted.contains(&key) {
                let ts = cols[0].parse::<u64>().unwrap_or_else(|_| panic!("bad timestamp in {line}"));
                out.entry(key).or_default().push((cols[1].to_string(), ts));
            }
        }
    }
    out
}

#[test]
fn grpc_traces_match_kernel_records_to_the_nanosecond_and_exemplars_point_at_them() {
    require_root();
    let doctor: serde_json::Value = serde_json::from_slice(&clockpath(&["doctor", "--json"]).stdout).expect("doctor");
    let detected_env = doctor["environment"]["env"].as_str().expect("detected env").to_string();
    let rx = Receiver::start(Transport::Grpc, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec_dir = dir.path().join("traces");
    let endpoint = rx.endpoint();
    let started = Instant::now();
    let e = Exporter::start(
        &["--duration", "120"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci,team=time%20path"),
            ("CLOCKPATH_OTLP__FLUSH_INTERVAL_MS", "200"),
            ("CLOCKPATH_OTLP__SAMPLING__PER_CHAIN_PER_SECOND", "50"),
            ("CLOCKPATH_OTLP__SAMPLING__BURST", "50"),
            ("CLOCKPATH_RECORDER__ENABLED", "true"),
            ("CLOCKPATH_RECORDER__DIR", rec_dir.to_str().expect("utf-8 path")),
            ("CLOCKPATH_RECORDER__ROTATE_BYTES", "0"),
        ],
    );
    let offset_before = realtime_minus_monotonic();
    wait_ok(sched_messaging(10), "perf bench sched messaging");
    let got = rx.wait_for_spans(200, Duration::from_secs(20));
    assert!(got >= 200, "only {got} spans received in 20 s");
    // Exemplars are recorded once their chain's export succeeded, after the receiver has them.
    let om = wait_for("exemplars on the OpenMetrics scrape", Duration::from_secs(20), || {
        let om = e.scrape_openmetrics();
        om.contains(" # {trace_id=").then_some(om)
    });
    let text = e.scrape();
    let scrape = Scrape::parse(&text).expect("parse scrape");
    let elapsed = started.elapsed().as_secs_f64();
    let received_after_scrape = rx.span_count();
    let offset_after = realtime_minus_monotonic();
    let out = e.stop();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "clockpath run failed:\n{stderr}");

    // Counters: the token bucket bounds rate-sampled traces; the rest were counted out.
    for (chain, _) in CHAIN_STAGES {
        let by_rate = metric(&scrape, "clockpath_otlp_chains_sampled_total", &[("chain", chain), ("reason", "rate")]);
        assert!(by_rate <= 50.0 * elapsed + 50.0, "{chain}: {by_rate} rate-sampled traces in {elapsed:.1} s");
    }
    let sampled_out = metric(&scrape, "clockpath_otlp_chains_sampled_out_total", &[("chain", "runqueue")]);
    assert!(sampled_out > 1000.0, "runqueue under load: only {sampled_out} chains sampled out");
    let exported = metric(&scrape, "clockpath_otlp_spans_exported_total", &[]);
    assert!(
        exported > 0.0 && exported <= received_after_scrape as f64,
        "exported {exported} vs received {received_after_scrape}"
    );
    assert!(metric(&scrape, "clockpath_otlp_export_requests_total", &[("result", "ok")]) > 0.0);
    assert_eq!(metric(&scrape, "clockpath_otlp_export_requests_total", &[("result", "error")]), 0.0);
    assert!(metric(&scrape, "clockpath_otlp_last_export_timestamp_seconds", &[]) > 1.7e9);

    let traces = rx.traces();
    // `clockpath 0.1.0 (revision, target, profile)`: the version is the second word.
    let version_line = String::from_utf8_lossy(&clockpath(&["--version"]).stdout).into_owned();
    let version = version_line.split_whitespace().nth(1).unwrap_or_default().to_string();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname").trim().to_string();
    let mut wanted = BTreeSet::new();
    let mut per_chain: BTreeMap<String, usize> = BTreeMap::new();
    for spans in traces.values() {
        let (root, children) = shape(spans);
        let a = &root.span.attributes;
        let chain = attr(a, "clockpath.chain").expect("clockpath.chain");
        assert_eq!(root.span.name, chain, "root span named after its chain");
        let stages = CHAIN_STAGES
            .iter()
            .find(|(c, _)| *c == chain)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("unexpected chain {chain}"));
        *per_chain.entry(chain.clone()).or_default() += 1;
        // Resource.
        let r = &root.resource;
        assert_eq!(r.get("service.name").map(String::as_str), Some("clockpath"));
        assert_eq!(r.get("host.name"), Some(&hostname));
        assert_eq!(r.get("os.type").map(String::as_str), Some("linux"));
        assert_eq!(r.get("host.arch").map(String::as_str), Some("amd64"));
        assert_eq!(r.get("service.version"), Some(&version), "{version_line} vs {r:?}");
        assert_eq!(r.get("deployment.environment.name").map(String::as_str), Some("ci"));
        assert_eq!(r.get("team").map(String::as_str), Some("time path"), "percent-decoded resource attribute");
        // Root attributes.
        assert_eq!(attr(a, "clockpath.env").as_deref(), Some(detected_env.as_str()), "env as doctor detects it");
        assert!(attr_i64(a, "clockpath.cpu").is_some_and(|c| (0..1024).contains(&c)));
        let instance = attr_i64(a, "clockpath.instance_id").expect("instance id") as u64;
        let sampled_by = attr(a, "clockpath.sampled_by").expect("sampled_by");
        assert!(["rate", "outlier", "slower_than_p99"].contains(&sampled_by.as_str()), "{sampled_by}");
        for s in stages {
            let kinds =
                attr(a, &format!("clockpath.attach.{s}")).unwrap_or_else(|| panic!("{chain}: attach kind of {s}"));
            // Every default chain prefers tp_btf, which attaches on CI's kernel.
            assert_eq!(kinds, "tp_btf", "{chain}: {s}");
        }
        // Time: ktime + one offset, to the nanosecond; the offset is the clocks' real one.
        let offset = i128::from(attr_i64(a, "clockpath.wall_offset_ns").expect("wall offset"));
        let lo = offset_before.min(offset_after) - 1_000_000;
        let hi = offset_before.max(offset_after) + 1_000_000;
        assert!((lo..=hi).contains(&offset), "offset {offset} outside [{lo}, {hi}]");
        let k_start = attr_i64(a, "clockpath.ktime.start_ns").expect("ktime start") as u64;
        let k_end = attr_i64(a, "clockpath.ktime.end_ns").expect("ktime end") as u64;
        assert_eq!(i128::from(root.span.start_time_unix_nano), i128::from(k_start) + offset);
        assert_eq!(i128::from(root.span.end_time_unix_nano), i128::from(k_end) + offset);
        if attr(a, "clockpath.outcome").as_deref() != Some("completed") {
            continue;
        }
        assert_eq!(children.len(), stages.len() - 1, "{chain}: one child per segment");
        for (i, c) in children.iter().enumerate() {
            let ca = &c.span.attributes;
            let segment = format!("{}->{}", stages[i], stages[i + 1]);
            assert_eq!(attr(ca, "clockpath.segment").as_ref(), Some(&segment));
            assert_eq!(c.span.name, segment, "child span named after its segment");
            assert_eq!(attr_i64(ca, "clockpath.segment.index"), Some(i as i64 + 1));
            assert!(attr(ca, "clockpath.attach").is_some() && attr(ca, "clockpath.target").is_some(), "{ca:?}");
            let s = attr_i64(ca, "clockpath.ktime.start_ns").expect("segment ktime start");
            let t = attr_i64(ca, "clockpath.ktime.end_ns").expect("segment ktime end");
            assert_eq!(i128::from(c.span.start_time_unix_nano), i128::from(s) + offset);
            assert_eq!(i128::from(c.span.end_time_unix_nano), i128::from(t) + offset);
            for ev in &c.span.events {
                assert_eq!(ev.name, "interference");
                assert!(attr_i64(&ev.attributes, "duration_ns").is_some_and(|d| d > 0));
            }
        }
        // Root spans the chain: from the first stage to the last.
        assert_eq!(root.span.start_time_unix_nano, children[0].span.start_time_unix_nano);
        assert_eq!(root.span.end_time_unix_nano, children[children.len() - 1].span.end_time_unix_nano);
        wanted.insert((chain, instance));
    }
    assert!(per_chain.get("runqueue").copied().unwrap_or(0) >= 50, "traces per chain: {per_chain:?}");

    // The recorder wrote the same kernel times: stage hits by instance.
    let recorded = recorded_hits(&rec_dir, &wanted);
    let mut matched = 0;
    for spans in traces.values() {
        let (root, children) = shape(spans);
        let a = &root.span.attributes;
        let chain = attr(a, "clockpath.chain").expect("chain");
        let instance = attr_i64(a, "clockpath.instance_id").expect("instance") as u64;
        if !wanted.contains(&(chain.clone(), instance)) {
            continue;
        }
        let stages = CHAIN_STAGES.iter().find(|(c, _)| *c == chain).map(|(_, s)| *s).expect("known chain");
        let hits = recorded
            .get(&(chain.clone(), instance))
            .unwrap_or_else(|| panic!("{chain} instance {instance} not recorded"));
        let offset = i128::from(attr_i64(a, "clockpath.wall_offset_ns").expect("offset"));
        for (i, stage) in stages.iter().enumerate() {
            let wall =
                if i == 0 { children[0].span.start_time_unix_nano } else { children[i - 1].span.end_time_unix_nano };
            let ktime = (i128::from(wall) - offset) as u64;
            assert!(
                hits.contains(&(stage.to_string(), ktime)),
                "{chain} instance {instance}: {stage} at {ktime} not among recorded hits {hits:?}"
            );
        }
        matched += 1;
    }
    assert_eq!(matched, wanted.len());
    eprintln!("traces per chain {per_chain:?}; {matched} completed ones matched to recorded kernel times");

    // Exemplars on the OpenMetrics scrape point at received traces and fit their bucket.
    let ex = exemplars(&om).expect("parse exemplars");
    let ids: BTreeSet<String> = traces.keys().map(|k| hex(k)).collect();
    let on_segments: Vec<_> = ex.iter().filter(|x| x.name == "clockpath_segment_duration_seconds_bucket").collect();
    assert!(!on_segments.is_empty(), "no exemplars on the segment histogram:\n{}", &om[..om.len().min(3000)]);
    for x in &on_segments {
        let id = x.exemplar.get("trace_id").expect("trace_id label");
        assert!(ids.contains(id), "exemplar trace id {id} was never received");
        assert!(x.exemplar.contains_key("span_id"));
        let le: f64 = x.labels["le"].parse().unwrap_or(f64::INFINITY);
        assert!(x.value <= le, "exemplar value {} above its bucket le {le}", x.value);
        assert!(x.timestamp.is_some_and(|t| t > 1.7e9), "exemplar timestamp {:?}", x.timestamp);
    }
    assert!(ex.iter().all(|x| x.name.ends_with("_bucket")), "exemplars only on histogram buckets");
    assert!(!text.contains("trace_id="), "the Prometheus 0.0.4 text format has no exemplars");
}

#[test]
fn http_protobuf_from_the_standard_otel_variables() {
    require_root();
    let rx = Receiver::start(Transport::Http, 0);
    let endpoint = rx.endpoint();
    let e = Exporter::start(
        &["--duration", "60"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "clockpath-ci-http"),
            ("CLOCKPATH_OTLP__FLUSH_INTERVAL_MS", "200"),
            // The file's settings lose to the environment.
            ("CLOCKPATH_OTLP__ENDPOINT", "http://127.0.0.1:9"),
            ("CLOCKPATH_OTLP__PROTOCOL", "grpc"),
        ],
    );
    wait_ok(sched_messaging(5), "perf bench sched messaging");
    let got = rx.wait_for_spans(20, Duration::from_secs(20));
    let out = e.stop();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(got >= 20, "only {got} spans over HTTP; exporter log:\n{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("http/protobuf"), "the start-up log names the protocol:\n{stderr}");
    for spans in rx.traces().values() {
        let (root, children) = shape(spans);
        assert_eq!(root.resource.get("service.name").map(String::as_str), Some("clockpath-ci-http"));
        if attr(&root.span.attributes, "clockpath.outcome").as_deref() == Some("completed") {
            assert!(!children.is_empty());
        }
    }
}

#[test]
fn collector_down_then_up_drops_are_counted_metrics_answer_and_export_resumes() {
    require_root();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let e = Exporter::start(
        &["--duration", "120"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
            ("CLOCKPATH_OTLP__FLUSH_INTERVAL_MS", "200"),
            ("CLOCKPATH_OTLP__QUEUE_CHAINS", "256"),
        ],
    );
    let mut load = sched_messaging(400);
    let first = Scrape::parse(&e.scrape()).expect("scrape");
    let count = |s: &Scrape| metric(s, "clockpath_segment_duration_seconds_count", &[("chain", "runqueue")]);
    // Down: every scrape answers quickly, histograms keep counting, drops are counted.
    let mut slowest = Duration::ZERO;
    let mut scrapes = 0;
    let down =
        wait_for("drops and failed requests counted while the collector is down", Duration::from_secs(30), || {
            let t = Instant::now();
            let down = Scrape::parse(&e.scrape()).expect("scrape while the collector is down");
            slowest = slowest.max(t.elapsed());
            scrapes += 1;
            let counted = metric(&down, "clockpath_otlp_spans_dropped_total", &[]) > 0.0
                && metric(&down, "clockpath_otlp_export_requests_total", &[("result", "error")]) > 0.0;
            (scrapes >= 25 && counted && count(&down) > count(&first)).then_some(down)
        });
    eprintln!("slowest of {scrapes} scrapes while the collector was down: {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "a scrape took {slowest:?} while the collector was down");
    assert!(count(&down) > count(&first), "histograms stopped while the collector was down");
    let dropped = metric(&down, "clockpath_otlp_spans_dropped_total", &[]);
    assert!(dropped > 0.0, "no drops counted while the collector was down");
    assert!(metric(&down, "clockpath_otlp_export_requests_total", &[("result", "error")]) > 0.0);
    assert_eq!(metric(&down, "clockpath_otlp_spans_exported_total", &[]), 0.0);
    assert!(metric(&down, "clockpath_otlp_queue_capacity_chains", &[]) == 256.0);

    // Up: export resumes by itself.
    let rx = Receiver::start(Transport::Grpc, port);
    let got = rx.wait_for_spans(10, Duration::from_secs(30));
    // The receiver has the spans before the exporter has its answer and counts them.
    let up = wait_for("the exporter to count exported spans", Duration::from_secs(10), || {
        let up = Scrape::parse(&e.scrape()).expect("scrape after the collector came up");
        (metric(&up, "clockpath_otlp_spans_exported_total", &[]) > 0.0).then_some(up)
    });
    let _ = load.kill();
    let _ = load.wait();
    let out = e.stop();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(got >= 10, "export did not resume within 30 s of the collector coming up ({got} spans):\n{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert!(metric(&up, "clockpath_otlp_spans_exported_total", &[]) > 0.0);
    assert!(metric(&up, "clockpath_otlp_spans_dropped_total", &[]) >= dropped, "drop counter went backwards");
    assert!(count(&up) > count(&down));
    for spans in rx.traces().values() {
        shape(spans);
    }
}

/// Runs an exporter against `rx` with `env` under scheduler load until `n` spans arrived.
fn export_to(rx: &Receiver, env: &[(&str, &str)], n: u64) -> (u64, String) {
    let mut env = env.to_vec();
    env.push(("CLOCKPATH_OTLP__FLUSH_INTERVAL_MS", "200"));
    let e = Exporter::start(&["--duration", "60"], &env);
    let mut load = sched_messaging(400);
    let got = rx.wait_for_spans(n, Duration::from_secs(30));
    let _ = load.kill();
    let _ = load.wait();
    let out = e.stop();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    (got, log)
}

#[test]
fn tls_to_the_collector_grpc_with_a_client_certificate_and_http_from_the_traces_variables() {
    require_root();
    let pki = Pki::new();
    let (ca, rogue) = (pki.path("ca.pem"), pki.path("rogue-ca.pem"));
    // gRPC: the collector requires a client certificate from the test CA (mutual TLS).
    let rx = Receiver::start_tls(Transport::Grpc, pki.server_config("server.pem", "server-key.pem", Some("ca.pem")));
    let endpoint = rx.https_endpoint();
    let (got, log) = export_to(
        &rx,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", utf8(&ca)),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", utf8(&pki.path("client.pem"))),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", utf8(&pki.path("client-key.pem"))),
        ],
        20,
    );
    eprintln!("gRPC over mutual TLS: {got} spans, {} failed handshakes", rx.handshake_failures());
    assert!(got >= 20, "only {got} spans over gRPC+mTLS:\n{log}");
    assert_eq!(rx.handshake_failures(), 0, "{log}");
    assert!(!log.contains("OTLP export failed"), "{log}");
    for spans in rx.traces().values() {
        shape(spans);
    }
    rx.stop();

    // HTTP/protobuf: the _TRACES_ variables win over the generic ones (which name a CA that
    // does not sign the collector's certificate).
    let rx = Receiver::start_tls(Transport::Http, pki.server_config("server.pem", "server-key.pem", None));
    let endpoint = format!("{}/v1/traces", rx.https_endpoint());
    let (got, log) = export_to(
        &rx,
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", utf8(&rogue)),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", utf8(&ca)),
        ],
        20,
    );
    eprintln!("HTTP/protobuf over TLS: {got} spans");
    assert!(got >= 20, "only {got} spans over HTTPS:\n{log}");
    assert_eq!(rx.handshake_failures(), 0, "{log}");
}

#[test]
fn an_untrusted_collector_certificate_is_counted_logged_once_and_metrics_answer() {
    require_root();
    let pki = Pki::new();
    // The collector's certificate is signed by a CA the exporter does not trust.
    let rx = Receiver::start_tls(Transport::Grpc, pki.server_config("rogue-server.pem", "rogue-server-key.pem", None));
    let endpoint = rx.https_endpoint();
    let e = Exporter::start(
        &["--duration", "90"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", utf8(&pki.path("ca.pem"))),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("CLOCKPATH_OTLP__FLUSH_INTERVAL_MS", "200"),
        ],
    );
    let mut load = sched_messaging(400);
    let count = |s: &Scrape| metric(s, "clockpath_segment_duration_seconds_count", &[("chain", "runqueue")]);
    let first = Scrape::parse(&e.scrape()).expect("scrape");
    let failed = wait_for("three failed export requests counted", Duration::from_secs(60), || {
        let s = Scrape::parse(&e.scrape()).expect("scrape while exports fail");
        (metric(&s, "clockpath_otlp_export_requests_total", &[("result", "error")]) >= 3.0).then_some(s)
    });
    let _ = load.kill();
    let _ = load.wait();
    assert!(metric(&failed, "clockpath_otlp_spans_dropped_total", &[]) > 0.0);
    assert_eq!(metric(&failed, "clockpath_otlp_spans_exported_total", &[]), 0.0);
    assert!(count(&failed) > count(&first), "histograms kept counting");
    let out = e.stop();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(rx.span_count(), 0);
    assert!(rx.handshake_failures() >= 1, "the collector saw the refused handshakes");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("OTLP export failed")).collect();
    eprintln!("{}", warnings.join("\n"));
    assert_eq!(warnings.len(), 1, "logged once, not per request:\n{log}");
}

#[test]
fn bad_otlp_settings_exit_2_naming_where() {
    require_root();
    let out = std::process::Command::new(clockpath_bin())
        .args(["run", "--duration", "1"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
        .output()
        .expect("run clockpath");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && err.contains("carrier-pigeon"), "{err}");
    assert!(!err.contains("chain running"), "nothing may be attached:\n{err}");

    let (_dir, path) = config_file("[otlp]\nendpoint = \"collector:4317\"\n[otlp.sampling]\nburst = 0\n");
    let out = clockpath(&["run", "--duration", "1", "--config", path.to_str().expect("utf-8 path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(path.to_str().expect("utf-8 path")), "names the file:\n{err}");
    assert!(err.contains("otlp.endpoint"), "names the key:\n{err}");
}

#[test]
fn session_traces_carry_the_session_id_clocksources_and_labels() {
    require_root();
    let (_, avail) = clocksources();
    let rx = Receiver::start(Transport::Grpc, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("s");
    let list = format!("{},{}", avail[0], avail[1]);
    let out = std::process::Command::new(clockpath_bin())
        .args(["session", "--runs", "10", "--clocksources", &list, "--label", "cstate=default", "--out"])
        .arg(&out_dir)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint())
        .output()
        .expect("run clockpath session");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).expect("summary")).expect("json");
    let id = summary["session_id"].as_str().expect("session id");
    let chain = summary["chain"].as_str().expect("chain");
    let completed = summary["completed"].as_u64().expect("completed");
    // Every run of a session is traced; the sink was flushed before the session ended.
    let traces = rx.traces();
    assert_eq!(traces.len() as u64, completed, "one trace per completed run; log:\n{stderr}");
    let mut directions = BTreeSet::new();
    for spans in traces.values() {
        let (root, children) = shape(spans);
        let a = &root.span.attributes;
        assert_eq!(attr(a, "clockpath.session_id").as_deref(), Some(id));
        assert_eq!(attr(a, "clockpath.chain").as_deref(), Some(chain));
        assert_eq!(attr(a, "clockpath.cstate").as_deref(), Some("default"), "session labels on the trace");
        let old = attr(a, "clockpath.old_clocksource").expect("old clocksource");
        let new = attr(a, "clockpath.new_clocksource").expect("new clocksource");
        assert!(old != new && avail.contains(&old) && avail.contains(&new), "{old} -> {new}");
        assert!(a.iter().any(|kv| kv.key.starts_with("clockpath.attach.")), "attach kinds per stage: {a:?}");
        assert!(!children.is_empty());
        directions.insert((old, new));
    }
    assert_eq!(directions.len(), 2, "switches both ways: {directions:?}");
}

#[test]
fn prometheus_stores_exemplars_that_name_received_traces() {
    require_root();
    let rx = Receiver::start(Transport::Grpc, 0);
    let endpoint = rx.endpoint();
    let e = Exporter::start(
        &["--duration", "120"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("CLOCKPATH_OTLP__FLUSH_INTERVAL_MS", "200")],
    );
    let prom = clockpath_tests::prometheus::Prometheus::start_with(&[e.addr()], &["--enable-feature=exemplar-storage"]);
    let mut load = sched_messaging(400);
    // Prometheus asks for OpenMetrics, so it sees (and stores) the exemplars.
    let stored = wait_for("Prometheus to store exemplars for the runqueue histogram", Duration::from_secs(40), || {
        let stored = prom.exemplars("clockpath_segment_duration_seconds_bucket{chain=\"runqueue\"}", 120);
        (!stored.is_empty()).then_some(stored)
    });
    let _ = load.kill();
    let _ = load.wait();
    let received: BTreeSet<String> = rx.traces().keys().map(|k| hex(k)).collect();
    drop(prom);
    let out = e.stop();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut n = 0;
    for series in &stored {
        assert_eq!(series["seriesLabels"]["chain"], "runqueue");
        for x in series["exemplars"].as_array().expect("exemplars") {
            let id = x["labels"]["trace_id"].as_str().expect("trace_id");
            assert!(
                received.contains(id),
                "Prometheus holds an exemplar for trace {id}, which the collector never got"
            );
            n += 1;
        }
    }
    eprintln!("{n} exemplars stored by Prometheus, every one a received trace");
}
