//! `/metrics` over TLS with basic authentication, configured by a Prometheus exporter web
//! config file (`http.web_config`): a real Prometheus scrapes it over HTTPS; wrong credentials
//! get 401; plain HTTP on the TLS port is answered at once; changes and SIGHUP reload it
//! without dropping the listener; client certificates are verified; a bad file is exit 2
//! naming its key.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::MetadataExt as _,
    time::{Duration, Instant},
};

use clockpath_tests::{
    Exporter, clockpath_bin, exposition::Scrape, pki::Pki, pki::utf8, prometheus::Prometheus, require_root, wait_for,
};

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn status(agent: &ureq::Agent, url: &str, auth: Option<&str>) -> (u16, Option<String>, Option<String>) {
    let mut req = agent.get(url);
    if let Some(a) = auth {
        req = req.set("Authorization", a);
    }
    match req.call() {
        Ok(r) => (
            r.status(),
            r.header("WWW-Authenticate").map(str::to_string),
            r.header("X-Content-Type-Options").map(str::to_string),
        ),
        Err(ureq::Error::Status(code, r)) => (
            code,
            r.header("WWW-Authenticate").map(str::to_string),
            r.header("X-Content-Type-Options").map(str::to_string),
        ),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

fn hash(password: &str) -> String {
    bcrypt::hash(password, 6).expect("bcrypt")
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    Scrape::parse(text).expect("scrape parses").sum(name, labels)
}

#[test]
fn prometheus_scrapes_over_https_with_basic_auth_and_edits_reload_without_dropping_the_listener() {
    require_root();
    let pki = Pki::new();
    let web = pki.path("web.yml");
    let (alice, bob_old, bob_new) = (hash("alice-pw"), hash("bob-old"), hash("bob-new"));
    let write_web = |users: &[(&str, &str)]| {
        let mut y = String::from(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  min_version: TLS12\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\nbasic_auth_users:\n",
        );
        for (u, h) in users {
            y.push_str(&format!("  {u}: '{h}'\n"));
        }
        std::fs::write(&web, y).expect("write web.yml");
    };
    write_web(&[("prometheus", &alice)]);
    std::fs::write(pki.path("password"), "alice-pw\n").expect("password file");
    let agent = pki.agent(false);
    let e = Exporter::start_tls(&["--duration", "180"], &[("CLOCKPATH_HTTP__WEB_CONFIG", utf8(&web))], agent.clone());
    let metrics = e.url("/metrics");

    // A real Prometheus, over HTTPS with the CA and basic auth (password file).
    let job = format!(
        "scheme: https\ntls_config:\n  ca_file: {}\n  server_name: localhost\nbasic_auth:\n  username: prometheus\n  password_file: {}\n",
        utf8(&pki.path("ca.pem")),
        utf8(&pki.path("password"))
    );
    let prom = Prometheus::start_full(&[e.addr()], &[], &[], &job);
    prom.wait_for("up{job=\"clockpath\"}", Duration::from_secs(30), |v| v == 1.0);
    let n = prom.wait_for("count(clockpath_probe_info)", Duration::from_secs(20), |v| v > 0.0);
    eprintln!("Prometheus scraped {n} clockpath_probe_info series over HTTPS with basic auth");

    // Credentials: right → 200; wrong, unknown, none → 401 with the challenge; headers on both.
    let (code, _, nosniff) = status(&agent, &metrics, Some(&basic("prometheus", "alice-pw")));
    assert_eq!((code, nosniff.as_deref()), (200, Some("nosniff")));
    for auth in [Some(basic("prometheus", "wrong")), Some(basic("mallory", "alice-pw")), None] {
        let (code, challenge, nosniff) = status(&agent, &metrics, auth.as_deref());
        assert_eq!(code, 401, "{auth:?}");
        assert_eq!(challenge.as_deref(), Some("Basic"), "{auth:?}");
        assert_eq!(nosniff.as_deref(), Some("nosniff"), "configured headers are on 401s too");
    }
    // /healthz needs no credentials (Kubernetes probes).
    assert_eq!(status(&agent, &e.url("/healthz"), None).0, 200);

    // Plain HTTP on the TLS port: an immediate 400, not a hang.
    let t = Instant::now();
    let mut plain = TcpStream::connect(e.addr()).expect("connect");
    plain.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    plain.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut answer = String::new();
    let _ = plain.read_to_string(&mut answer);
    eprintln!("plain HTTP on the TLS port answered in {:?}: {:?}", t.elapsed(), answer.lines().next());
    assert!(answer.starts_with("HTTP/1.0 400 Bad Request"), "{answer:?}");
    assert!(answer.contains("HTTPS server"), "{answer:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    // A TLS client that does not trust the server fails its handshake.
    let untrusting = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    let err = untrusting.get(&metrics).call().expect_err("an unknown CA must fail");
    assert!(matches!(err, ureq::Error::Transport(_)), "{err}");

    let authed = |user: &str, pw: &str| status(&agent, &metrics, Some(&basic(user, pw))).0;
    let scrape = || {
        agent
            .get(&metrics)
            .set("Authorization", &basic("prometheus", "alice-pw"))
            .call()
            .expect("scrape")
            .into_string()
            .expect("body")
    };
    // The server counts a refused handshake in the connection's task, after the client has
    // already given up: poll for it.
    let text = wait_for("the refused handshake to be counted", Duration::from_secs(10), || {
        let t = scrape();
        (metric(&t, "clockpath_http_tls_handshake_failures_total", &[("reason", "handshake")]) >= 1.0).then_some(t)
    });
    assert!(metric(&text, "clockpath_http_auth_failures_total", &[]) >= 3.0);
    assert!(metric(&text, "clockpath_http_tls_handshake_failures_total", &[("reason", "plaintext")]) >= 1.0);
    assert_eq!(metric(&text, "clockpath_web_config_last_reload_successful", &[]), 1.0);

    // An edit is picked up by itself: bob appears.
    write_web(&[("prometheus", &alice), ("bob", &bob_old)]);
    wait_for("the edited web config (bob added) to be in force", Duration::from_secs(10), || {
        (authed("bob", "bob-old") == 200).then_some(())
    });

    // SIGHUP: bob's new hash, written in place with the old mtime, so only the signal can
    // reload it (the file's size is unchanged: bcrypt hashes are all 60 characters).
    let before = std::fs::metadata(&web).expect("stat");
    write_web(&[("prometheus", &alice), ("bob", &bob_new)]);
    let times = [
        libc::timespec { tv_sec: before.atime(), tv_nsec: before.atime_nsec() },
        libc::timespec { tv_sec: before.mtime(), tv_nsec: before.mtime_nsec() },
    ];
    let c = std::ffi::CString::new(utf8(&web)).expect("path");
    // SAFETY: a valid C path and two timespecs, as utimensat(2) takes.
    assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) }, 0);
    let after = std::fs::metadata(&web).expect("stat");
    assert_eq!((after.ino(), after.size(), after.mtime_nsec()), (before.ino(), before.size(), before.mtime_nsec()));
    // Requests drive the change check (at most once a second): for 1.5 s after the edit, every
    // one must still refuse the new password, so the check has passed over the edit unseen.
    let edited = std::time::Instant::now();
    while edited.elapsed() < Duration::from_millis(1500) {
        assert_eq!(authed("bob", "bob-new"), 401, "the in-place edit must not be seen without SIGHUP");
    }
    let pid = e.child.as_ref().expect("running").id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for("SIGHUP to reload the web config", Duration::from_secs(10), || {
        (authed("bob", "bob-new") == 200).then_some(())
    });
    assert_eq!(authed("bob", "bob-old"), 401);

    // A broken edit keeps the last good settings, says so, and the listener stays.
    std::fs::write(&web, "basic_auth_users:\n  bob: not-a-hash\n").expect("write");
    let text = wait_for("the failed reload to be exported", Duration::from_secs(10), || {
        let t = scrape();
        (metric(&t, "clockpath_web_config_last_reload_successful", &[]) == 0.0).then_some(t)
    });
    assert!(metric(&text, "clockpath_web_config_last_reload_success_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(authed("bob", "bob-new"), 200, "the last good settings stay in force");

    // A truncated file (`: > web.yml`) and one holding only its TLS half never turn
    // authentication off: refused, reported, and the last good settings stay.
    let tls_half = "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n";
    for (what, text) in [("truncated", ""), ("TLS half only", tls_half)] {
        write_web(&[("prometheus", &alice), ("bob", &bob_new)]);
        wait_for("the good web config back in force", Duration::from_secs(10), || {
            (metric(&scrape(), "clockpath_web_config_last_reload_successful", &[]) == 1.0).then_some(())
        });
        std::fs::write(&web, text).expect("write");
        wait_for(&format!("the {what} web config to be refused"), Duration::from_secs(10), || {
            (metric(&scrape(), "clockpath_web_config_last_reload_successful", &[]) == 0.0).then_some(())
        });
        assert_eq!(status(&agent, &metrics, None).0, 401, "{what}: /metrics without credentials");
        assert_eq!(authed("bob", "bob-new"), 200, "{what}: the last good users stay");
    }
    let up = prom.wait_for("up{job=\"clockpath\"}", Duration::from_secs(10), |v| v == 1.0);
    assert_eq!(up, 1.0);
    let out = e.stop();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("scheme=\"https\"") || log.contains("scheme=https"), "the start-up line says https:\n{log}");
    assert!(
        log.contains("basic_auth_users.bob: not a bcrypt hash"),
        "the failed reload is logged with its key:\n{log}"
    );
    assert!(
        log.contains("basic_auth_users: missing, while 2 user(s) must authenticate now"),
        "the refused half-written file is logged:\n{log}"
    );
}

#[test]
fn client_certificates_are_required_and_verified() {
    require_root();
    let pki = Pki::new();
    let web = pki.path("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n",
    )
    .expect("write");
    let with_cert = pki.agent(true);
    let e =
        Exporter::start_tls(&["--duration", "60"], &[("CLOCKPATH_HTTP__WEB_CONFIG", utf8(&web))], with_cert.clone());
    let text = e.scrape();
    assert!(text.contains("clockpath_probe_info"), "scrape with a client certificate");
    let err = pki.agent(false).get(&e.url("/metrics")).call().expect_err("no client certificate must fail");
    assert!(matches!(err, ureq::Error::Transport(_)), "{err}");
    wait_for("the refused handshake to be counted", Duration::from_secs(10), || {
        (metric(&e.scrape(), "clockpath_http_tls_handshake_failures_total", &[("reason", "handshake")]) >= 1.0)
            .then_some(())
    });
    assert!(e.stop().status.success());
}

#[test]
fn a_bad_web_config_is_exit_2_naming_the_key_before_anything_attaches() {
    require_root();
    let pki = Pki::new();
    let cases = [
        (
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  client_auth_type: Sometimes\n",
            "tls_server_config.client_auth_type: invalid ClientAuth: Sometimes",
        ),
        ("tls_server_config:\n  cert_file: server.pem\n  key_file: missing-key.pem\n", "tls_server_config.key_file:"),
        ("basic_auth_users:\n  prometheus: hunter2\n", "basic_auth_users.prometheus: not a bcrypt hash"),
        ("tls_server_config:\n  cert_file: server.pem\n  keyfile: server-key.pem\n", "unknown field `keyfile`"),
        (
            "tls_server_config:\n  cert_file: server.pem\n  key_file: client-key.pem\n",
            "tls_server_config.key_file: does not go with the certificate",
        ),
    ];
    for (yaml, wanted) in cases {
        let web = pki.path("web.yml");
        std::fs::write(&web, yaml).expect("write");
        let out = std::process::Command::new(clockpath_bin())
            .args(["run", "--duration", "1"])
            .env("CLOCKPATH_HTTP__WEB_CONFIG", utf8(&web))
            .env("CLOCKPATH_HTTP__LISTEN", format!("127.0.0.1:{}", clockpath_tests::free_port()))
            .output()
            .expect("run clockpath");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}\n{err}");
        assert!(err.contains("http.web_config") && err.contains(utf8(&web)), "names the setting and the file:\n{err}");
        assert!(err.contains(wanted), "{yaml}\nwanted {wanted:?} in:\n{err}");
        assert!(!err.contains("chain running") && !err.contains("attached"), "nothing may be attached:\n{err}");
    }
    let out = std::process::Command::new(clockpath_bin())
        .args(["run", "--duration", "1"])
        .env("CLOCKPATH_HTTP__WEB_CONFIG", "/nonexistent/web.yml")
        .output()
        .expect("run clockpath");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/web.yml") && err.contains("No such file"), "{err}");
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `from`, with a receive
/// buffer of `rcvbuf` bytes if given (set before connecting, so the window stays small).
fn connect_from(from: [u8; 4], port: u16, rcvbuf: Option<i32>) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd as _;
    let sockaddr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip) },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns until it is wrapped.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        if let Some(b) = rcvbuf {
            let v: libc::c_int = b;
            let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&v as *const libc::c_int).cast(), size) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let src = sockaddr(from, 0);
        if libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let dst = sockaddr([127, 0, 0, 1], port);
        if libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// No lock-outs (issue 31): idle connections, from another address or from the scraper's own,
/// and slow readers that pipeline requests and read nothing cannot keep a scraper out. One
/// address holds at most 16 of the 64 connections; at a limit the longest-idle connection is
/// closed to make room; a client that takes in less than 1 KiB of a response in 10 s is closed.
///
/// Rests on: the loopback network answers from any 127.0.0.0/8 address (checked first).
#[test]
fn idle_connections_and_slow_readers_cannot_lock_scrapers_out() {
    require_root();
    let e = Exporter::start(&[], &[]);
    let port = e.port;
    connect_from([127, 0, 0, 2], port, None).expect("assumption: 127.0.0.2 reaches 127.0.0.1 over loopback");
    let fresh = || ureq::AgentBuilder::new().max_idle_connections(0).timeout(Duration::from_secs(5)).build();
    let scrape = || -> Result<(Duration, String), String> {
        let t = Instant::now();
        let body = fresh()
            .get(&e.url("/metrics"))
            .call()
            .map_err(|err| err.to_string())?
            .into_string()
            .map_err(|err| err.to_string())?;
        Ok((t.elapsed(), body))
    };

    // 100 idle connections from another address, then 100 from the scraper's own.
    let mut idle = Vec::new();
    for from in [[127, 0, 0, 2], [127, 0, 0, 1]] {
        for _ in 0..100 {
            idle.push(connect_from(from, port, None).expect("connect"));
        }
    }
    for i in 0..5 {
        let (took, _) = scrape().unwrap_or_else(|err| panic!("scrape {i} beside 200 idle connections: {err}"));
        assert!(took < Duration::from_secs(3), "scrape {i} took {took:?}");
    }
    let text = wait_for("idle connections beyond 16 per address evicted", Duration::from_secs(10), || {
        let t = scrape().ok()?.1;
        (metric(&t, "clockpath_http_connections_closed_total", &[("reason", "evicted")]) >= 168.0).then_some(t)
    });
    eprintln!(
        "evicted {} idle connections",
        metric(&text, "clockpath_http_connections_closed_total", &[("reason", "evicted")])
    );
    // The first one from 127.0.0.2 was closed by the server.
    let first = &mut idle[0];
    first.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    assert_eq!(first.read(&mut [0u8; 16]).expect("EOF, not a timeout"), 0, "the evicted connection is closed");
    drop(idle);

    // 64 slow readers: 4 KiB receive buffers, 40 pipelined scrapes each (megabytes of answers:
    // more than the kernel's send buffer takes), nothing read.
    let request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(40);
    let writers: Vec<_> = (0..64)
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || {
                let mut s = connect_from([127, 0, 0, 3], port, Some(4096)).expect("connect");
                s.set_write_timeout(Some(Duration::from_secs(2))).expect("timeout");
                let _ = s.write_all(request.as_bytes());
                s
            })
        })
        .collect();
    let slow: Vec<TcpStream> = writers.into_iter().map(|w| w.join().expect("writer")).collect();
    let mut scrapes = 0;
    let text = wait_for("the slow readers to be closed for stalling", Duration::from_secs(60), || {
        let (took, t) = scrape().unwrap_or_else(|err| panic!("a scrape during the slow-reader attack failed: {err}"));
        assert!(took < Duration::from_secs(3), "a scrape during the slow-reader attack took {took:?}");
        scrapes += 1;
        (metric(&t, "clockpath_http_connections_closed_total", &[("reason", "stalled")]) >= 16.0).then_some(t)
    });
    eprintln!(
        "{scrapes} scrapes answered during the attack; closed for stalling: {}, evicted: {}, rejected: {}",
        metric(&text, "clockpath_http_connections_closed_total", &[("reason", "stalled")]),
        metric(&text, "clockpath_http_connections_closed_total", &[("reason", "evicted")]),
        metric(&text, "clockpath_http_connections_rejected_total", &[])
    );
    drop(slow);
    let out = e.stop();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 31, finding 4: a key file only its owner may read (0600, another user's, as a secret
/// volume or a certificate tool leaves it) loads at start; after every thread gave up its
/// capabilities, uid 0 alone cannot read it, and a rotated key never applied. The reload now
/// reads on the web config reader thread, which keeps CAP_DAC_READ_SEARCH.
#[test]
fn a_rotated_key_only_its_owner_may_read_applies_after_the_capability_drop() {
    use std::os::unix::fs::PermissionsExt as _;
    require_root();
    let pki = Pki::new();
    let web = pki.path("web.yml");
    std::fs::write(&web, "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n").expect("write");
    let (cert, key) = (pki.path("server.pem"), pki.path("server-key.pem"));
    let own = |p: &std::path::Path| {
        let c = std::ffi::CString::new(utf8(p)).expect("path");
        // SAFETY: a valid C path; chown(2) to nobody.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0, "chown {}", p.display());
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    };
    own(&cert);
    own(&key);
    let agent = pki.agent(false);
    let e = Exporter::start_tls(&["--duration", "60"], &[("CLOCKPATH_HTTP__WEB_CONFIG", utf8(&web))], agent.clone());
    let text = e.scrape();
    let started = metric(&text, "clockpath_web_config_last_reload_success_timestamp_seconds", &[]);
    // The premises: the key is another user's, readable by its owner only, and the exporter
    // serves with no capability left on its main thread (the drop happened).
    let m = std::fs::metadata(&key).expect("stat key");
    assert_eq!((m.uid(), m.mode() & 0o777), (65534, 0o600));
    let pid = e.child.as_ref().expect("running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("").to_string();
    assert_eq!(field("CapPrm:"), "0000000000000000", "the main thread gave up its capabilities:\n{status}");
    // Rotate: the same certificate and key written anew (new mtime), still 0600 and nobody's.
    let (c, k) = (std::fs::read(&cert).expect("read"), std::fs::read(&key).expect("read"));
    std::fs::write(&cert, c).expect("rewrite cert");
    std::fs::write(&key, k).expect("rewrite key");
    own(&cert);
    own(&key);
    let text = wait_for("the rotated key to be reloaded", Duration::from_secs(15), || {
        let t = e.scrape();
        (metric(&t, "clockpath_web_config_last_reload_success_timestamp_seconds", &[]) > started
            || metric(&t, "clockpath_web_config_last_reload_successful", &[]) == 0.0)
            .then_some(t)
    });
    assert_eq!(
        metric(&text, "clockpath_web_config_last_reload_successful", &[]),
        1.0,
        "the reload after the drop could not read the key"
    );
    let out = e.stop();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("web config reloaded"), "{log}");
    assert!(
        log.contains("web-config keeps CAP_DAC_READ_SEARCH"),
        "the one thread that keeps a capability is named:\n{log}"
    );
}
