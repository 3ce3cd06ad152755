//! Accept stage: limits on downstream connections, applied before Pingora's HTTP
//! code sees a request.
//!
//! - `listeners[].max_connections`: a connection beyond it is closed at once and
//!   counted in `gateway_connections_refused_total{listener}`.
//! - `server.client_header_timeout`: the whole request header must arrive by this
//!   deadline (from accept for the first request, from its first byte for later
//!   ones). Pingora 0.9 bounds each header *read* (60 s), not the header, so a
//!   client sending one byte per second would hold its connection for good.
//!   Late headers get a 408 and the connection is closed
//!   (`gateway_client_header_timeouts_total{listener}`).
//! - `server.keepalive_timeout`: an idle keep-alive connection is closed when no
//!   next request starts within it (0: one request per connection).
//!
//! How: this app reads each HTTP/1 request header itself, then hands the bytes to
//! Pingora's parser as the session's pre-read prefix, so Pingora never waits on
//! the socket for a header. HTTP/2 (TLS ALPN `h2` or the h2c preface) goes to
//! Pingora as is: its streams are bounded by the h2 settings and `h2_idle_timeout`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{wait_for_request, Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use prometheus::{register_int_counter_vec, IntCounterVec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::runtime::{ClientTimeouts, Shared};

/// The h2c connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Pingora's own first header buffer size.
const HEADER_BUF: usize = 4096;
/// Past this, the bytes go to Pingora's parser, which refuses headers over 1 MiB.
const MAX_HEAD: usize = 1024 * 1024;

struct ConnMetrics {
    refused: IntCounterVec,
    header_timeouts: IntCounterVec,
}

static METRICS: LazyLock<Option<ConnMetrics>> = LazyLock::new(|| {
    Some(ConnMetrics {
        refused: register_int_counter_vec!(
            "gateway_connections_refused_total",
            "Connections closed at accept because the listener had max_connections open",
            &["listener"]
        )
        .ok()?,
        header_timeouts: register_int_counter_vec!(
            "gateway_client_header_timeouts_total",
            "Connections closed because a request header did not arrive within client_header_timeout",
            &["listener"]
        )
        .ok()?,
    })
});

/// One proxy listener's connection budget.
pub struct ListenerLimit {
    pub address: SocketAddr,
    pub label: String,
    slots: Arc<Semaphore>,
}

impl ListenerLimit {
    pub fn new(address: SocketAddr, max_connections: usize) -> Self {
        ListenerLimit {
            address,
            label: address.to_string(),
            slots: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
        }
    }
}

/// A Pingora app that applies the limits, then runs `app` (the HTTP proxy).
pub struct ClientLimits<A> {
    app: Arc<A>,
    shared: Arc<Shared>,
    listeners: Vec<ListenerLimit>,
}

impl<A> ClientLimits<A> {
    pub fn new(app: A, shared: Arc<Shared>, listeners: Vec<ListenerLimit>) -> Self {
        ClientLimits {
            app: Arc::new(app),
            shared,
            listeners,
        }
    }

    /// The listener a connection came in on (by its local address).
    fn listener_of(&self, stream: &Stream) -> Option<&ListenerLimit> {
        if let [only] = self.listeners.as_slice() {
            return Some(only);
        }
        let digest = stream.get_socket_digest()?;
        let local = digest.local_addr()?.as_inet()?;
        self.listeners
            .iter()
            .find(|l| l.address == *local)
            .or_else(|| {
                self.listeners
                    .iter()
                    .find(|l| l.address.port() == local.port() && l.address.ip().is_unspecified())
            })
    }
}

/// What waiting for a request header ended with.
enum Head {
    /// The header (and whatever followed it in the same reads).
    Http1(BytesMut),
    /// The h2c preface (these bytes must be put back).
    H2c(BytesMut),
    /// Timed out after `n` bytes of a header.
    Late(usize),
    /// Closed, idle for keepalive_timeout, or shutting down.
    Gone,
}

#[async_trait]
impl<A> ServerApp for ClientLimits<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = Instant::now();
        let listener = self.listener_of(&stream);
        let label = listener.map_or("", |l| l.label.as_str());
        // held until this function returns, i.e. until the connection closes
        let _slot = match listener.map(|l| l.slots.clone().try_acquire_owned()) {
            Some(Err(_)) => {
                if let Some(m) = METRICS.as_ref() {
                    m.refused.with_label_values(&[label]).inc();
                }
                tracing::debug!(
                    listener = label,
                    "max_connections reached: connection refused"
                );
                return None;
            }
            Some(Ok(permit)) => Some(permit),
            None => None,
        };
        let tls = stream.get_ssl_digest().is_some();
        if tls && !matches!(stream.selected_alpn_proto(), None | Some(ALPN::H1)) {
            return self.app.process_new(stream, shutdown).await;
        }
        let h2c = !tls && self.app.server_options().is_some_and(|o| o.h2c);
        let timeouts = self.shared.current().client;

        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        // one timer and one shutdown receiver for the connection's life, moved along
        // for each request: a timer made per request cost a wheel insert and removal,
        // and, when it was the worker's earliest, a wake-up write to its I/O driver.
        // Boxed: held inline, it took this future (allocated per connection) into the
        // allocator's next size class, ~0.5 KiB more per idle connection
        let mut idle = Box::pin(tokio::time::sleep_until(accepted + timeouts.header));
        let mut watch = shutdown.clone();
        loop {
            let head =
                read_head(&mut stream, first, h2c, timeouts, idle.as_mut(), &mut watch).await;
            let bytes = match head {
                Head::Http1(b) => b,
                Head::H2c(b) => {
                    // hand the connection to Pingora's h2 path with the preface put back
                    let mut l4 = stream.into_any().downcast::<L4Stream>().ok()?;
                    l4.rewind(&b);
                    return self.app.process_new(l4, shutdown).await;
                }
                Head::Late(n) => {
                    if let Some(m) = METRICS.as_ref() {
                        m.header_timeouts.with_label_values(&[label]).inc();
                    }
                    if n > 0 {
                        request_timeout(&mut stream).await;
                    }
                    return None;
                }
                Head::Gone => return None,
            };
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => s.apply_to_session(&mut session),
                None => {
                    // Pingora counts keep-alive in whole seconds (0 would mean "forever")
                    session.set_keepalive(
                        timeouts
                            .keepalive
                            .map(|d| d.as_secs_f64().ceil().max(1.0) as u64),
                    );
                    session.set_keepalive_reuses_remaining(
                        self.app
                            .server_options()
                            .and_then(|o| o.keepalive_request_limit),
                    );
                }
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            session.set_pipelined_prefix(bytes);
            let reused = self.app.process_new_http(session, shutdown).await?;
            let (next, persistent) = reused.consume();
            stream = next;
            settings = persistent;
            first = false;
        }
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

/// Wait for the next request and read its header by the deadline. `idle` is the
/// connection's timer: it runs out at the first header's deadline for the first
/// request, and is moved to the end of the keep-alive wait for each later one.
async fn read_head(
    stream: &mut Stream,
    first: bool,
    h2c: bool,
    timeouts: ClientTimeouts,
    mut idle: Pin<&mut Sleep>,
    shutdown: &mut ShutdownWatch,
) -> Head {
    if *shutdown.borrow_and_update() && !first {
        return Head::Gone;
    }
    // idle: the first request's header is due within the header timeout of the
    // accept; a later request only has to start within the keep-alive timeout
    if !first {
        match timeouts.keepalive {
            // a later deadline than the timer's only updates it (no re-registration)
            Some(k) => idle.as_mut().reset(Instant::now() + k),
            None => return Head::Gone,
        }
    }
    // an idle connection holds no buffer (a plain socket is waited on for readability,
    // a TLS stream with a small read boxed for the wait); only a request that arrived
    // gets a header buffer
    let waited = tokio::select! {
        biased;
        r = wait_for_request(stream) => Some(r),
        () = idle.as_mut() => None,
        _ = shutdown.changed(), if !first => return Head::Gone,
    };
    let mut buf = match waited {
        Some(Ok(None)) => BytesMut::with_capacity(HEADER_BUF),
        Some(Ok(Some(read))) if !read.is_empty() => read,
        Some(Ok(Some(_))) | Some(Err(_)) => return Head::Gone,
        None if first => return Head::Late(0),
        None => return Head::Gone,
    };
    let deadline = if first {
        idle.deadline()
    } else {
        Instant::now() + timeouts.header
    };
    let mut scanned = 0;
    loop {
        if h2c && buf.starts_with(H2_PREFACE) {
            return Head::H2c(buf);
        }
        // a part of the preface has an empty line in it: wait for the rest first
        let maybe_h2c = h2c && H2_PREFACE.starts_with(&buf);
        if !maybe_h2c && (header_end(&buf, &mut scanned) || buf.len() > MAX_HEAD) {
            return Head::Http1(buf);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Gone,
            Ok(Ok(_)) => {}
            // a readiness that held no bytes on a kept-alive connection: still idle
            Err(_) if buf.is_empty() && !first => return Head::Gone,
            Err(_) => return Head::Late(buf.len()),
        }
    }
}

/// Whether `buf` holds a complete header (an empty line after a request line);
/// `scanned` remembers how far earlier calls looked.
fn header_end(buf: &[u8], scanned: &mut usize) -> bool {
    // empty lines before a request line are allowed (RFC 9112 section 2.2)
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let from = (*scanned).max(start);
    let mut i = from;
    while let Some(off) = buf.get(i..).and_then(|s| memchr::memchr(b'\n', s)) {
        let nl = i + off;
        match buf.get(nl + 1..) {
            Some([b'\n', ..]) | Some([b'\r', b'\n', ..]) => return true,
            _ => i = nl + 1,
        }
    }
    // the last two bytes may start an end marker completed by the next read
    *scanned = buf.len().saturating_sub(2).max(from);
    false
}

/// Tell a client whose header came too late, then close.
async fn request_timeout(stream: &mut Stream) {
    const BODY: &str =
        r#"{"error":"request_timeout","message":"the request header did not arrive in time"}"#;
    let response = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

#[cfg(test)]
mod tests {
    use super::header_end;

    fn complete(parts: &[&[u8]]) -> bool {
        let mut buf = Vec::new();
        let mut scanned = 0;
        let mut done = false;
        for p in parts {
            buf.extend_from_slice(p);
            done = header_end(&buf, &mut scanned);
        }
        done
    }

    #[test]
    fn header_end_across_reads() {
        assert!(complete(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]));
        assert!(complete(&[
            b"GET / HTTP/1.1\r\nHost: a\r",
            b"\n",
            b"\r",
            b"\n"
        ]));
        assert!(complete(&[b"GET / HTTP/1.1\nHost: a\n\n"]));
        assert!(complete(&[b"\r\n\r\nGET / HTTP/1.1\r\n", b"\r\n"]));
        assert!(!complete(&[b"\r\n\r\nGET / HTTP/1.1\r\n"]));
        assert!(!complete(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]));
        assert!(!complete(&[b"G", b"E", b"T"]));
    }
}
