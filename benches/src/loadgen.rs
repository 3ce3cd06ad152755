//! The load generator: a fixed number of keep-alive HTTP/1.1 connections
//! (hyper client), each sending requests back to back until the time is up; or,
//! in new-connection mode, that many clients each opening a fresh connection per
//! request (over TLS: a full handshake each time). Plain TCP or TLS (rustls).
//!
//! It runs on a thread of its own (a single-threaded runtime, optionally pinned to
//! one CPU), records every latency in an HDR histogram (microseconds) and counts
//! errors: transport failures, timeouts and non-2xx answers.
//!
//! With a rate, each keep-alive connection sends on a fixed schedule (its share of
//! the rate, the connections' schedules staggered) instead of back to back, so a
//! target that keeps up does the same work per second as any other: CPU per request
//! below saturation, where a target that batches more under full load does not look
//! cheaper for it. A connection that falls behind sends at once until it catches up.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the connect phase may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to send, how hard and for how long.
#[derive(Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: HeaderValue,
    pub method: Method,
    /// Request targets (origin form), used in turn.
    pub paths: Arc<Vec<Uri>>,
    /// Request body (e.g. 1 MiB for the upload scenario).
    pub body: Option<Bytes>,
    /// `Authorization` values used in turn (distinct tokens defeat a token cache).
    pub tokens: Option<Arc<Vec<HeaderValue>>>,
    pub connections: usize,
    pub duration: Duration,
    /// CPU to pin the generator's thread to.
    pub cpu: Option<usize>,
    /// Speak TLS with this client config.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// A fresh connection per request (`Connection: close`), closed after the answer.
    pub new_connection_per_request: bool,
    /// Requests per second over all connections, paced evenly; None: each
    /// connection sends its next request as soon as the answer is in.
    pub rate: Option<f64>,
}

/// What one run measured.
pub struct LoadResult {
    /// Successful (2xx) requests.
    pub requests: u64,
    pub errors: u64,
    /// Length of the measured window (after every connection was open).
    pub elapsed: Duration,
    /// Latency of successful requests, in microseconds.
    pub latency: Histogram<u64>,
    /// Response body bytes received.
    pub bytes: u64,
    /// `probe()` at the start and at the end of the measured window.
    pub probe: (f64, f64),
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct State {
    latency: RefCell<Histogram<u64>>,
    requests: Cell<u64>,
    errors: Cell<u64>,
    bytes: Cell<u64>,
    next: Cell<usize>,
}

impl State {
    /// Count one exchange that started at `t0`: `(2xx, body bytes)`, or `None`
    /// when the transport failed or timed out. False when the connection is unusable.
    fn tally(&self, outcome: Option<(bool, u64)>, t0: Instant) -> bool {
        let micros = t0.elapsed().as_micros().max(1) as u64;
        let Some((ok, n)) = outcome else {
            self.errors.set(self.errors.get() + 1);
            return false;
        };
        self.bytes.set(self.bytes.get() + n);
        if ok {
            self.requests.set(self.requests.get() + 1);
            let _ = self.latency.borrow_mut().record(micros);
        } else {
            self.errors.set(self.errors.get() + 1);
        }
        true
    }
}

/// Run `spec` on a fresh thread; `probe` is read when the measured window opens
/// and closes (the harness passes the target's CPU time).
pub fn run(spec: &LoadSpec, probe: &(dyn Fn() -> f64 + Sync)) -> io::Result<LoadResult> {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            if let Some(cpu) = spec.cpu {
                // a failed pin only costs accuracy; the run goes on
                let _ = crate::sys::pin_current_thread(cpu);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, drive(spec, probe))
        });
        handle
            .join()
            .map_err(|_| io::Error::other("the load generator thread panicked"))?
    })
}

async fn drive(spec: &LoadSpec, probe: &(dyn Fn() -> f64 + Sync)) -> io::Result<LoadResult> {
    let latency = Histogram::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| io::Error::other(format!("histogram: {e}")))?;
    let state = Rc::new(State {
        latency: RefCell::new(latency),
        requests: Cell::new(0),
        errors: Cell::new(0),
        bytes: Cell::new(0),
        next: Cell::new(0),
    });
    let spec = Rc::new(spec.clone());

    // open every connection first, so the window measures steady state only
    let mut senders = Vec::with_capacity(spec.connections);
    if spec.new_connection_per_request {
        senders.resize_with(spec.connections.max(1), || None);
    } else {
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..spec.connections.max(1) {
            let spec = spec.clone();
            opening.spawn_local(async move {
                tokio::time::timeout(CONNECT_TIMEOUT, connect(&spec))
                    .await
                    .unwrap_or_else(|_| Err(io::Error::other("connect timed out")))
            });
        }
        while let Some(joined) = opening.join_next().await {
            match joined {
                Ok(Ok(s)) => senders.push(Some(s)),
                _ => {
                    state.errors.set(state.errors.get() + 1);
                    senders.push(None);
                }
            }
        }
    }

    let p0 = probe();
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut workers = tokio::task::JoinSet::new();
    let n = senders.len().max(1);
    for (i, sender) in senders.into_iter().enumerate() {
        if spec.new_connection_per_request {
            workers.spawn_local(one_per_connection(spec.clone(), state.clone(), deadline));
        } else {
            // a rate too small to express sends nothing: its first request is never due
            let pace =
                spec.rate.filter(|r| *r > 0.0).map(|rate| {
                    match Duration::try_from_secs_f64(n as f64 / rate) {
                        Ok(every) => Pace {
                            next: start
                                .checked_add(every.mul_f64(i as f64 / n as f64))
                                .unwrap_or(deadline),
                            every,
                        },
                        Err(_) => Pace {
                            next: deadline,
                            every: Duration::ZERO,
                        },
                    }
                });
            workers.spawn_local(worker(sender, spec.clone(), state.clone(), deadline, pace));
        }
    }
    while workers.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let p1 = probe();

    let latency = state
        .latency
        .replace(Histogram::new(1).map_err(io::Error::other)?);
    Ok(LoadResult {
        requests: state.requests.get(),
        errors: state.errors.get(),
        elapsed,
        latency,
        bytes: state.bytes.get(),
        probe: (p0, p1),
    })
}

type Sender = SendRequest<Full<Bytes>>;

/// Open a connection (TCP, then TLS when the spec asks) and its HTTP/1.1 client.
async fn connect(spec: &LoadSpec) -> io::Result<Sender> {
    let stream = TcpStream::connect(spec.addr).await?;
    stream.set_nodelay(true)?;
    match &spec.tls {
        None => handshake(stream).await,
        Some(cfg) => {
            let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(crate::tls::server_name()?, stream)
                .await?;
            handshake(tls).await
        }
    }
}

async fn handshake<T>(io: T) -> io::Result<Sender>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(io::Error::other)?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A connection's schedule under a rate: when its next request is due.
struct Pace {
    next: Instant,
    every: Duration,
}

async fn worker(
    mut sender: Option<Sender>,
    spec: Rc<LoadSpec>,
    st: Rc<State>,
    deadline: Instant,
    mut pace: Option<Pace>,
) {
    while Instant::now() < deadline {
        if let Some(p) = pace.as_mut() {
            if p.next >= deadline {
                return;
            }
            tokio::time::sleep_until(p.next.into()).await;
            p.next = p.next.checked_add(p.every).unwrap_or(deadline);
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => {
                match tokio::time::timeout(CONNECT_TIMEOUT, connect(&spec)).await {
                    Ok(Ok(s)) => sender = Some(s),
                    _ => {
                        st.errors.set(st.errors.get() + 1);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                continue;
            }
        };
        if s.ready().await.is_err() {
            // the server closed an idle keep-alive connection: open another
            sender = None;
            continue;
        }
        let Some(req) = build(&spec, &st) else {
            st.errors.set(st.errors.get() + 1);
            return;
        };
        let t0 = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, exchange(s, req)).await;
        if !st.tally(outcome.ok().and_then(Result::ok), t0) {
            sender = None;
        }
    }
}

/// New-connection mode: connect (and handshake), one request, close; the latency
/// counts the whole of it.
async fn one_per_connection(spec: Rc<LoadSpec>, st: Rc<State>, deadline: Instant) {
    while Instant::now() < deadline {
        let Some(mut req) = build(&spec, &st) else {
            st.errors.set(st.errors.get() + 1);
            return;
        };
        req.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        let t0 = Instant::now();
        let once = async {
            let mut s = connect(&spec).await?;
            exchange(&mut s, req).await.map_err(io::Error::other)
        };
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, once).await;
        if !st.tally(outcome.ok().and_then(Result::ok), t0) {
            // do not spin on a refused connect
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn build(spec: &LoadSpec, st: &State) -> Option<Request<Full<Bytes>>> {
    let k = st.next.get();
    st.next.set(k.wrapping_add(1));
    let path = spec.paths.get(k % spec.paths.len().max(1))?.clone();
    let mut b = Request::builder()
        .method(spec.method.clone())
        .uri(path)
        .header(header::HOST, spec.host.clone());
    if let Some(tokens) = &spec.tokens {
        if !tokens.is_empty() {
            b = b.header(header::AUTHORIZATION, tokens[k % tokens.len()].clone());
        }
    }
    b.body(Full::new(spec.body.clone().unwrap_or_default()))
        .ok()
}

/// Send one request and read the whole answer: `(2xx, body bytes)`.
async fn exchange(s: &mut Sender, req: Request<Full<Bytes>>) -> Result<(bool, u64), hyper::Error> {
    let resp = s.send_request(req).await?;
    let ok = resp.status().is_success();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        n += frame?.data_ref().map_or(0, |d| d.len() as u64);
    }
    Ok((ok, n))
}

/// Parse an origin-form path list (a helper for callers and tests).
pub fn paths(list: &[String]) -> Result<Arc<Vec<Uri>>, http::uri::InvalidUri> {
    list.iter()
        .map(|p| p.parse::<Uri>())
        .collect::<Result<Vec<_>, _>>()
        .map(Arc::new)
}
