//! The HTTP endpoints (hyper): `/metrics` (OpenMetrics text when the scraper asks for it,
//! Prometheus text 0.0.4 otherwise), `/healthz` (200 while probes are attached and the ring
//! reader is alive, 503 otherwise) and `/` (a landing page with the attach plan), over plain
//! HTTP or, with a web config file ([`web_config`]), TLS and basic authentication.

pub mod admission;
pub mod auth;
pub mod config_reader;
pub mod deadline;
pub mod web_config;

use std::{
    convert::Infallible,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use clockpath_probe::plan::{ChainPlan, ChainState};

use crate::{
    daemon::Health,
    exemplars::ExemplarStore,
    exposition::{
        families::{self, HttpSnapshot},
        openmetrics,
    },
    host::TimeSync,
    pps::TimeReference,
};
use auth::BasicAuth;
use web_config::WebConfig;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the handlers serve.
pub struct HttpState {
    pub registry: Registry,
    pub health: Arc<Health>,
    pub landing: String,
    /// Trace exemplars for the OpenMetrics histogram buckets (when traces are exported).
    pub exemplars: Option<Arc<ExemplarStore>>,
    /// The time reference, shown on `/` with the clock's synchronisation state.
    pub reference: Option<Arc<TimeReference>>,
    /// TLS, authentication and headers (`http.web_config`); None: plain HTTP, no auth.
    pub web: Option<Arc<WebConfig>>,
    pub auth: Arc<BasicAuth>,
    pub stats: Arc<HttpStats>,
}

/// What the server counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub auth_failures: AtomicU64,
    /// TLS handshakes that failed: plain HTTP sent to the TLS port, a TLS error, a timeout.
    pub tls_plaintext: AtomicU64,
    pub tls_failed: AtomicU64,
    pub tls_timeout: AtomicU64,
    /// Connections closed at accept: every connection from the address, or every one, busy.
    pub rejected_per_address: AtomicU64,
    pub rejected_total: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// Connections closed because the client stopped taking in a response.
    pub stalled: AtomicU64,
}

/// Adds the server's own metrics (`clockpath_http_*`, `clockpath_web_config_*`) to `registry`.
pub fn register(registry: &mut Registry, stats: Arc<HttpStats>, web: Option<Arc<WebConfig>>) {
    registry.register_collector(Box::new(ServerMetrics { stats, web }));
}

#[derive(Debug)]
struct ServerMetrics {
    stats: Arc<HttpStats>,
    web: Option<Arc<WebConfig>>,
}

impl Collector for ServerMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.stats;
        let reload = self.web.as_ref().map(|w| {
            let st = w.reload_state();
            let at = st.last_success.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            (st.successful, at)
        });
        families::http_server(
            &mut enc,
            &HttpSnapshot {
                auth_failures: s.auth_failures.load(Ordering::Relaxed),
                tls_failures: [
                    ("plaintext", s.tls_plaintext.load(Ordering::Relaxed)),
                    ("handshake", s.tls_failed.load(Ordering::Relaxed)),
                    ("timeout", s.tls_timeout.load(Ordering::Relaxed)),
                ],
                connections_rejected: [
                    ("per_address", s.rejected_per_address.load(Ordering::Relaxed)),
                    ("total", s.rejected_total.load(Ordering::Relaxed)),
                ],
                connections_closed: [
                    ("evicted", s.evicted.load(Ordering::Relaxed)),
                    ("stalled", s.stalled.load(Ordering::Relaxed)),
                ],
                web_config_reload: reload,
            },
        )
    }
}

/// Bind the listener first, so a taken port fails before anything is attached.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
}

/// A client must send a request's headers within this (also bounds an idle keep-alive).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes encoded at once: each reads every kernel map and takes a blocking thread; more
/// would only share the same CPUs (a scrape storm queues here instead of thrashing).
static ENCODES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// A TLS client must complete its handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, mut stop: watch::Receiver<bool>) {
    let admission = admission::Admission::new(admission::MAX_CONNECTIONS, admission::MAX_PER_ADDRESS);
    let reloads = tokio::spawn(reload_on_sighup(state.web.clone()));
    let (mut last_warned, mut rejected_unlogged) = (None, 0u64);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    // Out of file descriptors, typically: retrying at once would spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let ticket = match admission.admit(peer.ip()) {
            Ok((ticket, evicted)) => {
                if evicted {
                    state.stats.evicted.fetch_add(1, Ordering::Relaxed);
                }
                ticket
            }
            Err(why) => {
                let counter = match why {
                    admission::Refused::PerAddress => &state.stats.rejected_per_address,
                    admission::Refused::Total => &state.stats.rejected_total,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                // Logged at most every 10 s: a storm must not flood the log (a blocked stderr
                // would stall this thread), and the counter has every one.
                rejected_unlogged += 1;
                if last_warned.is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(
                        limit = admission::MAX_CONNECTIONS,
                        per_address = admission::MAX_PER_ADDRESS,
                        reason = why.label(),
                        closed = rejected_unlogged,
                        peer = %peer.ip(),
                        "too many busy HTTP connections: closing new ones (clockpath_http_connections_rejected_total)"
                    );
                    last_warned = Some(std::time::Instant::now());
                    rejected_unlogged = 0;
                }
                drop(stream);
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let ticket = Arc::new(ticket);
            // TLS is on or off for the listener's life (a reload cannot switch it).
            match state.web.as_ref().and_then(|w| w.current().tls.clone()) {
                Some(tls) => {
                    if let Some(stream) = handshake(stream, tls, &state.stats).await {
                        serve_connection(deadline::Deadlined::new(stream), state, ticket).await;
                    }
                }
                None => serve_connection(deadline::Deadlined::new(stream), state, ticket).await,
            }
        });
    }
    reloads.abort();
}

/// SIGHUP re-reads the web config (changes are also picked up by themselves within a second).
async fn reload_on_sighup(web: Option<Arc<WebConfig>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        match &web {
            Some(w) => match w.reload() {
                Ok(()) => tracing::info!(path = %w.path().display(), "SIGHUP: web config reloaded"),
                Err(error) => {
                    tracing::warn!(%error, "SIGHUP: web config not reloaded; the last good one stays in force")
                }
            },
            None => tracing::info!("SIGHUP: no http.web_config to reload"),
        }
    }
}

/// A TLS handshake bounded in time; a client that sends plain HTTP gets Go's 400 answer at
/// once (not a hang, not garbage), as Prometheus exporters give it.
async fn handshake(
    stream: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    stats: &HttpStats,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut first = [0u8; 5];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(0) | Err(_)) => return None,
        Ok(Ok(_)) if first[0] == 0x16 => {} // a TLS handshake record
        Ok(Ok(_)) => {
            stats.tls_plaintext.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("plain HTTP (or garbage) on the TLS port: answered 400 and closed");
            let mut stream = stream;
            let _ = stream
                .write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                .await;
            return None;
        }
        Err(_) => {
            stats.tls_timeout.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    }
    match tokio::time::timeout_at(deadline, tokio_rustls::TlsAcceptor::from(tls).accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(error)) => {
            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
        Err(_) => {
            stats.tls_timeout.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

async fn serve_connection<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: I,
    state: Arc<HttpState>,
    ticket: Arc<admission::Ticket>,
) {
    let st = state.clone();
    let t = ticket.clone();
    let svc = service_fn(move |req| {
        let (state, ticket) = (st.clone(), t.clone());
        async move {
            ticket.busy();
            let r = handle(state, req).await;
            ticket.answered(r.as_ref().is_ok_and(|r| r.status() != StatusCode::UNAUTHORIZED));
            r
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let served = tokio::select! {
        r = conn.as_mut() => r,
        () = ticket.evicted() => {
            // Chosen to make room while idle: close between requests (a response under way is
            // finished first, bounded by the write deadline).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = served {
        let stalled = std::error::Error::source(&error)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
        if stalled {
            state.stats.stalled.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(%error, "HTTP connection ended with an error");
    }
}

fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

async fn handle(state: Arc<HttpState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(web) = &state.web else { return Ok(route(&state, req).await) };
    // The settings are read per request: a user removed from the file is refused on a
    // keep-alive connection opened before.
    let settings = web.current();
    // /healthz stays open, so a kubelet probe needs no credentials; it tells only ok or not.
    let mut r = if settings.users.is_empty() || req.uri().path() == "/healthz" {
        route(&state, req).await
    } else {
        let header = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        if state.auth.check(&settings.users, header).await {
            route(&state, req).await
        } else {
            state.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            let mut r = response(StatusCode::UNAUTHORIZED, "text/plain", "Unauthorized\n");
            r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            r
        }
    };
    for (name, value) in &settings.headers {
        r.headers_mut().insert(name.clone(), value.clone());
    }
    Ok(r)
}

async fn route(state: &Arc<HttpState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            let wants_openmetrics = req
                .headers()
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("application/openmetrics-text"));
            // Encoding reads the kernel maps (a few syscalls); keep it off the async workers.
            let _permit = ENCODES.acquire().await;
            let st = state.clone();
            let encoded = tokio::task::spawn_blocking(move || {
                let mut body = String::with_capacity(64 * 1024);
                let r = if wants_openmetrics {
                    prometheus_client::encoding::text::encode(&mut body, &st.registry)
                } else {
                    prometheus_client::encoding::prometheus_text::encode(&mut body, &st.registry)
                };
                match (r, &st.exemplars) {
                    (Ok(()), Some(ex)) if wants_openmetrics => Ok(openmetrics::annotate(&body, ex)),
                    (r, _) => r.map(|()| body),
                }
            })
            .await;
            match encoded {
                Ok(Ok(body)) => {
                    response(StatusCode::OK, if wants_openmetrics { OPENMETRICS } else { PROMETHEUS_TEXT }, body)
                }
                _ => response(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "encoding metrics failed\n"),
            }
        }
        "/healthz" => {
            if state.health.ok() {
                response(StatusCode::OK, "text/plain", "ok\n")
            } else {
                let why = if !state.health.attached.load(Ordering::Relaxed) {
                    "no probe attached\n"
                } else {
                    "ring reader stopped\n"
                };
                response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why)
            }
        }
        "/" => {
            // The plan is fixed once attached; the clock's state is read per request.
            let time = time_section(TimeSync::read().as_ref(), state.reference.as_deref());
            let page = state.landing.replacen("</body>", &format!("{time}</body>"), 1);
            response(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        _ => response(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz or /\n"),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The clock's synchronisation (adjtimex) and each PPS source, for the landing page.
pub fn time_section(sync: Option<&TimeSync>, reference: Option<&TimeReference>) -> String {
    let mut h = String::from("<h2>Time</h2>");
    match sync {
        Some(t) => {
            let class = if t.synchronised { "attached" } else { "bad" };
            let _ = write!(h, "<p>System clock: <span class=\"{class}\">{}</span>.</p>", esc(&t.summary()));
        }
        None => h.push_str("<p>System clock: adjtimex cannot be read.</p>"),
    }
    let sources = reference.map(|r| r.sources()).unwrap_or_default();
    for (device, why) in reference.map(|r| r.unusable()).unwrap_or_default() {
        let _ = write!(h, "<p class=\"bad\">PPS device {} (found by auto) is unusable: {}</p>", esc(device), esc(why));
    }
    if sources.is_empty() {
        h.push_str("<p>PPS reference: none configured (<code>[pps] devices</code>); times are the system clock's.</p>");
        return h;
    }
    h.push_str("<table><tr><th>PPS device</th><th>name</th><th>signal</th><th>offset</th><th>jitter</th><th>pulses</th><th>missed</th></tr>");
    for s in sources {
        let snap = s.snapshot();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.device),
            esc(&s.name),
            if snap.signal_present { "attached" } else { "bad" },
            if snap.signal_present { "present" } else { "lost" },
            snap.last_offset_ns.map_or("–".into(), |o| format!("{:.9} s", o as f64 / 1e9)),
            snap.jitter_ns.map_or("–".into(), |j| format!("{:.0} ns", j)),
            snap.pulses,
            snap.missed
        );
    }
    h.push_str("</table>");
    h
}

/// The landing page: links and the attach plan.
pub fn landing_page(plans: &[ChainPlan], env: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>clockpath</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:left;vertical-align:top}}\
         .attached{{color:#070}}.bad{{color:#a00}}</style></head><body>\
         <h1>clockpath {}</h1><p>Kernel-resident perf exporter for the Linux time path ({}).</p>\
         <ul><li><a href=\"/metrics\">/metrics</a></li><li><a href=\"/healthz\">/healthz</a></li></ul>\
         <h2>Attach plan</h2><p>{}</p>",
        env!("CARGO_PKG_VERSION"),
        esc(env),
        esc(&crate::doctor::summarise(plans).text)
    );
    for p in plans {
        let state = match &p.state {
            ChainState::Running => "<span class=\"attached\">running</span>".to_string(),
            ChainState::Ready => "ready".to_string(),
            ChainState::Disabled(r) => format!("<span class=\"bad\">unavailable: {}</span>", esc(r)),
            ChainState::NotNeeded(r) => format!("not needed: {}", esc(r)),
        };
        let _ = write!(
            h,
            "<h3>{} — {}</h3><p>{}</p><table><tr><th>stage</th><th>target</th><th>key</th><th>state</th><th>reason</th></tr>",
            esc(&p.name),
            state,
            esc(&p.description)
        );
        let stages = p.stages.iter().map(|s| (s.name.as_str(), &s.points));
        for (stage, points) in stages.chain(std::iter::once(("abort", &p.aborts))) {
            for c in points.iter().flat_map(|pt| &pt.candidates) {
                let class = if c.status.label() == "attached" {
                    "attached"
                } else if c.status.reason().is_empty() {
                    ""
                } else {
                    "bad"
                };
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td></tr>",
                    esc(stage),
                    esc(&c.target.to_string()),
                    esc(&c.key),
                    c.status.label(),
                    esc(c.status.reason())
                );
            }
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}
