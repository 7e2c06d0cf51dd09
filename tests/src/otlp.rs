//! An in-process OTLP trace receiver (gRPC and HTTP/protobuf) for tests and benchmarks: it
//! keeps every span it is sent, with its resource attributes, on its own Tokio runtime thread;
//! over TLS when given a rustls server configuration.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::Span,
};
use prost::Message as _;
use tokio::{net::TcpListener, sync::oneshot};
use tokio_stream::wrappers::TcpListenerStream;

/// The transport a receiver speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

/// One received span and the resource it came with.
#[derive(Clone, Debug)]
pub struct Received {
    pub resource: BTreeMap<String, String>,
    pub span: Span,
}

#[derive(Clone, Default)]
struct Store {
    spans: Arc<Mutex<Vec<Received>>>,
    requests: Arc<AtomicU64>,
    /// Keep only counts (benchmarks).
    count_only: bool,
    count: Arc<AtomicU64>,
    /// TLS handshakes that failed (TLS receivers).
    handshake_failures: Arc<AtomicU64>,
}

impl Store {
    fn take(&self, req: ExportTraceServiceRequest) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut n = 0u64;
        let mut kept = Vec::new();
        for rs in req.resource_spans {
            let resource: BTreeMap<String, String> = rs
                .resource
                .map(|r| r.attributes.iter().map(|kv| (kv.key.clone(), value_text(kv.value.as_ref()))).collect())
                .unwrap_or_default();
            for ss in rs.scope_spans {
                n += ss.spans.len() as u64;
                if !self.count_only {
                    kept.extend(ss.spans.into_iter().map(|span| Received { resource: resource.clone(), span }));
                }
            }
        }
        self.count.fetch_add(n, Ordering::Relaxed);
        if !kept.is_empty()
            && let Ok(mut s) = self.spans.lock()
        {
            s.extend(kept);
        }
    }
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// A value as text: strings as themselves, numbers and booleans printed.
pub fn value_text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// An attribute of a span (or event), as text.
pub fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).map(|kv| value_text(kv.value.as_ref()))
}

/// An integer attribute.
pub fn attr_i64(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// Lower-case hex of an id.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    pub transport: Transport,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

async fn http_handle(store: Store, req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/x-protobuf"));
        r
    };
    if req.uri().path() != "/v1/traces" {
        return Ok(reply(StatusCode::NOT_FOUND, Vec::new()));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, Vec::new())),
    };
    match ExportTraceServiceRequest::decode(body) {
        Ok(r) => {
            store.take(r);
            Ok(reply(StatusCode::OK, ExportTraceServiceResponse { partial_success: None }.encode_to_vec()))
        }
        Err(_) => Ok(reply(StatusCode::BAD_REQUEST, Vec::new())),
    }
}

impl Receiver {
    /// Listen on 127.0.0.1:`port` (0: any free port).
    pub fn start(transport: Transport, port: u16) -> Receiver {
        Self::start_with(transport, port, false, None, None)
    }

    /// A receiver speaking TLS with `tls` (ALPN set here: h2 for gRPC, http/1.1 for HTTP).
    pub fn start_tls(transport: Transport, tls: Arc<rustls::ServerConfig>) -> Receiver {
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![match transport {
            Transport::Grpc => b"h2".to_vec(),
            Transport::Http => b"http/1.1".to_vec(),
        }];
        Self::start_with(transport, 0, false, None, Some(Arc::new(tls)))
    }

    /// A receiver that only counts spans, its runtime threads pinned to `cpu` (benchmarks).
    pub fn counting(transport: Transport, cpu: Option<usize>) -> Receiver {
        Self::start_with(transport, 0, true, cpu, None)
    }

    fn start_with(
        transport: Transport,
        port: u16,
        count_only: bool,
        cpu: Option<usize>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Receiver {
        let store = Store { count_only, ..Default::default() };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let st = store.clone();
        let thread = thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    pin_to(cpu);
                }
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .on_thread_start(move || {
                        if let Some(cpu) = cpu {
                            pin_to(cpu);
                        }
                    })
                    .build()
                    .expect("receiver runtime");
                rt.block_on(async move {
                    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind the OTLP receiver");
                    addr_tx.send(listener.local_addr().expect("local addr")).expect("report address");
                    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
                    match (transport, acceptor) {
                        (Transport::Grpc, Some(acceptor)) => {
                            // Handshakes happen off the accept loop; tonic gets the TLS streams.
                            let (tx, rx) = tokio::sync::mpsc::channel(16);
                            let failures = st.handshake_failures.clone();
                            let accept = tokio::spawn(async move {
                                while let Ok((tcp, _)) = listener.accept().await {
                                    let (acceptor, tx, failures) = (acceptor.clone(), tx.clone(), failures.clone());
                                    tokio::spawn(async move {
                                        match acceptor.accept(tcp).await {
                                            Ok(s) => {
                                                let _ = tx.send(Ok::<_, std::io::Error>(s)).await;
                                            }
                                            Err(_) => {
                                                failures.fetch_add(1, Ordering::Relaxed);
                                            }
                                        }
                                    });
                                }
                            });
                            tonic::transport::Server::builder()
                                .add_service(TraceServiceServer::new(st))
                                .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), async {
                                    let _ = stop_rx.await;
                                })
                                .await
                                .expect("gRPC TLS receiver");
                            accept.abort();
                        }
                        (Transport::Http, Some(acceptor)) => {
                            let mut stop_rx = stop_rx;
                            loop {
                                let (stream, _) = tokio::select! {
                                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                                    _ = &mut stop_rx => break,
                                };
                                let (st, acceptor) = (st.clone(), acceptor.clone());
                                tokio::spawn(async move {
                                    let stream = match acceptor.accept(stream).await {
                                        Ok(s) => s,
                                        Err(_) => {
                                            st.handshake_failures.fetch_add(1, Ordering::Relaxed);
                                            return;
                                        }
                                    };
                                    let svc = service_fn(move |req| http_handle(st.clone(), req));
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), svc)
                                        .await;
                                });
                            }
                        }
                        (Transport::Grpc, None) => {
                            tonic::transport::Server::builder()
                                .add_service(TraceServiceServer::new(st))
                                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                                    let _ = stop_rx.await;
                                })
                                .await
                                .expect("gRPC receiver");
                        }
                        (Transport::Http, None) => {
                            let mut stop_rx = stop_rx;
                            loop {
                                let (stream, _) = tokio::select! {
                                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                                    _ = &mut stop_rx => break,
                                };
                                let st = st.clone();
                                tokio::spawn(async move {
                                    let svc = service_fn(move |req| http_handle(st.clone(), req));
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), svc)
                                        .await;
                                });
                            }
                        }
                    }
                });
            })
            .expect("start the receiver thread");
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("receiver bound");
        Receiver { addr, transport, store, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// The endpoint an exporter should use (base URL).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The endpoint of a TLS receiver, by the name its certificate carries.
    pub fn https_endpoint(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// TLS handshakes that failed.
    pub fn handshake_failures(&self) -> u64 {
        self.store.handshake_failures.load(Ordering::Relaxed)
    }

    pub fn spans(&self) -> Vec<Received> {
        self.store.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Spans received so far (also in counting mode).
    pub fn span_count(&self) -> u64 {
        self.store.count.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.store.requests.load(Ordering::Relaxed)
    }

    /// Spans grouped by trace id.
    pub fn traces(&self) -> BTreeMap<Vec<u8>, Vec<Received>> {
        let mut t: BTreeMap<Vec<u8>, Vec<Received>> = BTreeMap::new();
        for r in self.spans() {
            t.entry(r.span.trace_id.clone()).or_default().push(r);
        }
        t
    }

    /// Wait until at least `n` spans arrived.
    pub fn wait_for_spans(&self, n: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.span_count();
            if have >= n || Instant::now() >= deadline {
                return have;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop listening (the port is free again when this returns).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Pin the calling thread to one CPU.
pub fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity(0, …)
    // act on the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
