//! A test backend on 127.0.0.1: echoes each request as JSON with its name, and has
//! switches (status, delay, health) and counters the tests read. Runs on a tokio
//! runtime of its own, on a thread of its own, so it works from any test.
//!
//! - any path: JSON [`Echo`] of the request (the request body is streamed and counted);
//!   query `status=N` answers N, `delay_ms=N` waits first, `bytes=N` answers N bytes
//!   of `x` (streamed) instead of JSON
//! - `/health`: 200 `ok`, or 503 after `set_healthy(false)`
//! - `/ws`: WebSocket echo (text and binary)
//!
//! Every response carries `x-backend: NAME`; accepted connections are counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// What the backend saw, as it answers it (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Echo {
    pub backend: String,
    pub method: String,
    pub path: String,
    /// Raw query string, empty when none.
    pub query: String,
    /// Lower-case header name -> every value in arrival order.
    pub headers: BTreeMap<String, Vec<String>>,
    /// Bytes of request body received.
    pub body_bytes: u64,
    /// `HTTP/1.1` or `HTTP/2.0` (the hop from the gateway).
    pub version: String,
}

impl Echo {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Every value of a header (empty when absent).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

struct Inner {
    name: String,
    status: AtomicU16,
    delay_ms: AtomicU64,
    healthy: AtomicBool,
    requests: AtomicU64,
    health_checks: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    connections: AtomicU64,
}

/// A running test backend; stopped (connections cut) on `Drop`.
pub struct Backend {
    inner: Arc<Inner>,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    /// Start a backend named `name` on a free port.
    pub fn start(name: &str) -> Self {
        Self::start_on(name, 0)
    }

    /// Start on a given port (e.g. to bring a stopped instance back at its address).
    pub fn start_on(name: &str, port: u16) -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("backend {name}: bind 127.0.0.1:{port}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let inner = Arc::new(Inner {
            name: name.to_string(),
            status: AtomicU16::new(0),
            delay_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            requests: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/health", get(health))
            .route("/ws", get(ws))
            .fallback(echo)
            .with_state(inner.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let counter = inner.clone();
        let thread = std::thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("backend runtime");
                rt.block_on(async move {
                    use axum::serve::ListenerExt;
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("tokio listener")
                        .tap_io(move |_| {
                            counter.connections.fetch_add(1, Ordering::SeqCst);
                        });
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    }
                });
                // cut open connections (like a process that died)
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("spawn backend thread");
        Self {
            inner,
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as a gateway instance address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer every non-health request with this status (None: normal echo).
    pub fn set_status(&self, status: Option<u16>) {
        self.inner
            .status
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Wait this long before answering each non-health request.
    pub fn set_delay(&self, delay: Duration) {
        self.inner
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Make `/health` answer 200 (true) or 503 (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.inner.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Non-health requests received (counted on arrival, WebSocket upgrades included).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Requests to `/health`.
    pub fn health_checks(&self) -> u64 {
        self.inner.health_checks.load(Ordering::SeqCst)
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// TCP connections accepted since start or the last reset.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Highest `in_flight` seen since start or the last reset.
    pub fn max_in_flight(&self) -> u64 {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    /// Zero the request, health-check and connection counters.
    pub fn reset_counts(&self) {
        self.inner.connections.store(0, Ordering::SeqCst);
        self.inner.requests.store(0, Ordering::SeqCst);
        self.inner.health_checks.store(0, Ordering::SeqCst);
        self.inner.max_in_flight.store(0, Ordering::SeqCst);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn health(State(st): State<Arc<Inner>>) -> Response {
    st.health_checks.fetch_add(1, Ordering::SeqCst);
    let status = if st.healthy.load(Ordering::SeqCst) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    with_name(
        &st,
        (
            status,
            if status.is_success() {
                "ok"
            } else {
                "unhealthy"
            },
        )
            .into_response(),
    )
}

async fn ws(State(st): State<Arc<Inner>>, upgrade: WebSocketUpgrade) -> Response {
    st.requests.fetch_add(1, Ordering::SeqCst);
    with_name(&st, upgrade.on_upgrade(ws_echo))
}

async fn ws_echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(t) => Message::Text(t),
            Message::Binary(b) => Message::Binary(b),
            Message::Close(_) => break,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn echo(State(st): State<Arc<Inner>>, req: Request) -> Response {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(&st);

    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_string();
    let param = |key: &str| -> Option<u64> {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse().ok())
    };
    let delay = param("delay_ms").unwrap_or_else(|| st.delay_ms.load(Ordering::SeqCst));
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut body_bytes = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => body_bytes += c.len() as u64,
            Err(_) => break,
        }
    }
    let forced = st.status.load(Ordering::SeqCst);
    let status = param("status")
        .map(|s| s as u16)
        .or((forced != 0).then_some(forced))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);

    if let Some(n) = param("bytes") {
        return with_name(&st, (status, download(n)).into_response());
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let echo = Echo {
        backend: st.name.clone(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query,
        headers,
        body_bytes,
        version: format!("{:?}", parts.version),
    };
    with_name(&st, (status, axum::Json(echo)).into_response())
}

/// `n` bytes of `x`, streamed in 64 KiB chunks.
fn download(n: u64) -> Body {
    static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    let stream = futures::stream::unfold(n, |left| async move {
        if left == 0 {
            return None;
        }
        let take = left.min(CHUNK.len() as u64) as usize;
        Some((
            Ok::<_, std::io::Error>(Bytes::from_static(&CHUNK[..take])),
            left - take as u64,
        ))
    });
    Body::from_stream(stream)
}

fn with_name(st: &Inner, mut resp: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&st.name) {
        resp.headers_mut().insert("x-backend", v);
    }
    resp
}
