//! A recording upstream for retry tests: HTTP/1.1 and HTTP/2 with prior knowledge
//! (h2c) on one port, every request it receives kept (connection, order on that
//! connection, method, path and query, headers), and a scripted behaviour:
//!
//! - `Answer(status)`: answer every request with `status` and a small JSON body;
//! - `ResetReused`: answer the first request of each connection with 200, and reset
//!   the connection (TCP RST, no response) on any later request on it: an instance
//!   that dropped a pooled keep-alive connection while the gateway was reusing it.
//!
//! Runs on a runtime of its own, on a thread of its own; stopped on `Drop`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Answer(u16),
    ResetReused,
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Accepted connection number, from 1.
    pub conn: u64,
    /// Position of the request on its connection, from 1.
    pub seq: u64,
    pub method: String,
    pub path_and_query: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Lower-case name -> every value in arrival order.
    pub headers: BTreeMap<String, Vec<String>>,
    pub header_map: http::HeaderMap,
}

impl Received {
    /// Every value of a header (empty when absent).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get(name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

pub struct Upstream {
    port: u16,
    log: Arc<Mutex<Vec<Received>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start(behaviour: Behaviour) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread_log = log.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("upstream runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let conns = AtomicU64::new(0);
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let conn = conns.fetch_add(1, Ordering::SeqCst) + 1;
                            tokio::spawn(serve(stream, conn, behaviour, thread_log.clone()));
                        }
                    }
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        Self {
            port,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The requests received for this path and query.
    pub fn received_for(&self, path_and_query: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path_and_query == path_and_query)
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    conn: u64,
    behaviour: Behaviour,
    log: Arc<Mutex<Vec<Received>>>,
) {
    // dropping the socket then sends RST, as a host that forgot the connection does
    let _ = stream.set_zero_linger();
    let seq = Arc::new(AtomicU64::new(0));
    let reset = Arc::new(tokio::sync::Notify::new());
    let reset_in = reset.clone();
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
        let record = record(conn, n, &req);
        let path = record.path_and_query.clone();
        log.lock().unwrap_or_else(|e| e.into_inner()).push(record);
        let reset = reset_in.clone();
        async move {
            let status = match behaviour {
                Behaviour::Answer(s) => s,
                Behaviour::ResetReused if n == 1 => 200,
                Behaviour::ResetReused => {
                    reset.notify_one();
                    std::future::pending::<()>().await;
                    500
                }
            };
            let body = format!("{{\"conn\":{conn},\"seq\":{n},\"path\":{path:?}}}");
            let resp = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
            Ok::<_, Infallible>(resp)
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn_fut = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn_fut => {}
        _ = reset.notified() => {}
    }
}

fn record(conn: u64, seq: u64, req: &Request<hyper::body::Incoming>) -> Received {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    Received {
        conn,
        seq,
        method: req.method().to_string(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string(),
        version: format!("{:?}", req.version()),
        headers,
        header_map: req.headers().clone(),
    }
}
