//! The HTTP endpoints (hyper): `/metrics` (OpenMetrics text when the scraper asks for it,
//! Prometheus text 0.0.4 otherwise), `/healthz` (200 while probes are attached and the ring
//! reader is alive, 503 otherwise) and `/` (a landing page with the attach plan).

use std::{
    convert::Infallible,
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ACCEPT, CONTENT_TYPE},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::watch};

use clockpath_probe::plan::{ChainPlan, ChainState};

use crate::{daemon::Health, exemplars::ExemplarStore, exposition::openmetrics, host::TimeSync, pps::TimeReference};

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
}

/// Bind the listener first, so a taken port fails before anything is attached.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
}

/// Serve until `stop` turns true.
/// Connections served at once; more are closed at accept (a scraper needs one or two).
const MAX_CONNECTIONS: usize = 64;
/// A client must send a request's headers within this (also bounds an idle keep-alive).
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn serve(listener: TcpListener, state: Arc<HttpState>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(limit = MAX_CONNECTIONS, "too many HTTP connections: closing a new one");
            drop(stream);
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
            drop(slot);
        });
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
    Ok(match req.uri().path() {
        "/metrics" => {
            let wants_openmetrics = req
                .headers()
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("application/openmetrics-text"));
            // Encoding reads the kernel maps (a few syscalls); keep it off the async workers.
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
    })
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
         <h2>Attach plan</h2>",
        env!("CARGO_PKG_VERSION"),
        esc(env)
    );
    for p in plans {
        let state = match &p.state {
            ChainState::Running => "<span class=\"attached\">running</span>".to_string(),
            ChainState::Ready => "ready".to_string(),
            ChainState::Disabled(r) => format!("<span class=\"bad\">unavailable: {}</span>", esc(r)),
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
