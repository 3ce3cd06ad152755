//! Slow and greedy clients against the real binary, with raw TCP clients: a header
//! sent one byte at a time is cut off (408), an idle keep-alive connection is
//! closed, connections beyond a listener's `max_connections` are refused and
//! counted, an oversized body (declared or chunked) gets a 413 without the
//! backend receiving more than the limit, and a kept-alive connection that idles
//! with no buffer takes its next request in whatever shape it comes (in pieces,
//! pipelined, long, with a body, or not at all), and is closed when the gateway
//! starts draining.
//!
//! Bounds are generous (seconds, against timeouts of one second): the tests check
//! that a connection ends, never how fast.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::config::{
    secs, ByteSize, GatewayConfigBuilder, ListenerConfig, RouteBuilder, ServiceBuilder,
    HTTP_ADDRESS,
};
use testkit::{libc, wait_until, Backend, GatewayProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
/// Far beyond any timeout configured here; the tests fail if nothing happens by then.
const BOUND: Duration = Duration::from_secs(15);

/// The listener and admin, one echo service, one catch-all route.
fn echo_config(b: &Backend) -> GatewayConfigBuilder {
    GatewayConfigBuilder::in_front_of("echo", ServiceBuilder::instances([b.addr()]))
}

/// Read one response with a Content-Length body; the head and the body.
async fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed inside a body");
                buf.extend_from_slice(&chunk[..n]);
            }
            return (head, buf[end + 4..end + 4 + len].to_vec());
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Everything the peer sends until it closes (or resets) the connection, or None
/// when it is still open after `BOUND`.
async fn until_closed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_sent_one_byte_at_a_time_is_cut_off() {
    let b = Backend::start("b");
    let gw = GatewayProcess::start(
        BIN,
        &echo_config(&b)
            .server(|s| s.client_header_timeout = secs(1))
            .yaml(),
    );
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // one byte every 100 ms, never the empty line that ends the header
    let drip = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut cut = false;
    for byte in drip {
        if started.elapsed() > BOUND {
            break;
        }
        if s.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut one = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), s.peek(&mut one)).await {
            Ok(Ok(_)) => {
                cut = true;
                break;
            }
            Ok(Err(_)) => {
                cut = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        cut,
        "the slow header was still being accepted after {:?}",
        started.elapsed()
    );
    let rest = until_closed(&mut s).await.expect("closed after the answer");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert_eq!(b.requests(), 0);
    assert!(gw.metric("gateway_client_header_timeouts_total", &[]) >= 1.0);

    // a client that sends its header at once is unaffected
    let mut ok = TcpStream::connect(gw.addr()).await.unwrap();
    ok.write_all(b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut ok).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_is_closed_after_the_timeout() {
    let b = Backend::start("b");
    let gw = GatewayProcess::start(
        BIN,
        &echo_config(&b)
            .server(|s| s.keepalive_timeout = secs(1))
            .yaml(),
    );
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    for i in 0..2 {
        s.write_all(format!("GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (head, _) = read_response(&mut s).await;
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "keep-alive still works: {head}"
        );
    }
    let rest = until_closed(&mut s)
        .await
        .expect("the idle connection was still open");
    assert!(rest.is_empty(), "closed without a response: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_are_closed_when_draining_starts() {
    let b = Backend::start("b");
    // kept open, an idle connection would outlast the drain: only the drain's start
    // can close it while a slow request is still being served
    let mut gw = GatewayProcess::start(
        BIN,
        &echo_config(&b)
            .server(|s| {
                s.keepalive_timeout = secs(60);
                s.shutdown_timeout = secs(40);
            })
            .yaml(),
    );
    // one connection idle after one request, one after three (its timer moved along)
    let mut idle = Vec::new();
    for requests in [1, 3] {
        let mut s = TcpStream::connect(gw.addr()).await.unwrap();
        for i in 0..requests {
            s.write_all(format!("GET /d{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let (head, _) = read_response(&mut s).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        }
        idle.push(s);
    }
    let slow = tokio::spawn(testkit::client().get(gw.url("/slow?delay_ms=6000")).send());
    assert!(
        wait_until(BOUND, || b.in_flight() == 1),
        "the slow request arrived"
    );
    gw.signal(libc::SIGTERM);
    for s in &mut idle {
        let rest = until_closed(s)
            .await
            .expect("an idle keep-alive connection outlived the start of the drain");
        assert!(rest.is_empty(), "closed without a response: {rest:?}");
        assert_eq!(b.in_flight(), 1, "closed only when the gateway exited");
    }
    let resp = slow.await.unwrap().expect("the slow request is served");
    assert_eq!(resp.status(), 200);
    let status = gw.wait_exit(BOUND).expect("the gateway exits");
    assert!(status.success(), "{status}");
}

/// Send `parts` with a pause before each, then read one response; its status line
/// and its echo.
async fn exchange(s: &mut TcpStream, parts: &[&[u8]], pause: Duration) -> (String, testkit::Echo) {
    for part in parts {
        tokio::time::sleep(pause).await;
        s.write_all(part).await.unwrap();
    }
    let (head, body) = read_response(s).await;
    let echo = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {head} {}", String::from_utf8_lossy(&body)));
    (head, echo)
}

/// An idle keep-alive connection waits for its next request holding no buffer (the
/// socket is waited on for readability and its write buffer is released until the
/// next response): every shape a next request can take still arrives whole, and
/// every answer leaves whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_take_every_shape_of_next_request() {
    let b = Backend::start("b");
    let gw = GatewayProcess::start(BIN, &echo_config(&b).yaml());
    let idle = Duration::from_millis(200);
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();

    let (head, echo) = exchange(&mut s, &[b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"], idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(echo.path, "/first");

    // after an idle pause: a header larger than the gateway's header buffer (4 KiB),
    // in three pieces, the first shorter than a request line (its echo, a response
    // larger than the socket's write buffer, leaves whole too)
    let big = "v".repeat(6000);
    let request = format!("GET /big HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let (a, rest) = request.as_bytes().split_at(3);
    let (b2, c) = rest.split_at(3000);
    let (head, echo) = exchange(&mut s, &[a, b2, c], idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        (echo.path.as_str(), echo.header("x-big")),
        ("/big", Some(big.as_str()))
    );

    // a body that follows its header after a pause
    let (head, echo) = exchange(
        &mut s,
        &[
            b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
            b"hello",
        ],
        idle,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!((echo.path.as_str(), echo.body_bytes), ("/post", 5));

    // two requests in one write after an idle pause: the first is answered, then the
    // connection closes without a word (HTTP/1.1 pipelining is off, as in Pingora by
    // default; a client retries the rest on a new connection, RFC 9112 9.3.2)
    tokio::time::sleep(idle).await;
    s.write_all(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echo: testkit::Echo = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo.path, "/p1");
    let rest = until_closed(&mut s).await.expect("the connection was kept");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // a new connection is served; one that goes away while idle costs nothing
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let (head, echo) = exchange(&mut s, &[b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"], idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(echo.path, "/after");
    drop(s);
    tokio::time::sleep(idle).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let (head, echo) = exchange(&mut s, &[b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n"], idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(echo.path, "/last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_are_refused_and_counted() {
    let b = Backend::start("b");
    let gw = GatewayProcess::start(
        BIN,
        &echo_config(&b)
            .listeners(vec![ListenerConfig {
                max_connections: 2,
                ..ListenerConfig::new(HTTP_ADDRESS)
            }])
            .yaml(),
    );
    let listener = gw.addr();
    let mut held = Vec::new();
    for i in 0..2 {
        let mut s = TcpStream::connect(&listener).await.unwrap();
        s.write_all(format!("GET /h{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (head, _) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(s);
    }
    let mut third = TcpStream::connect(&listener).await.unwrap();
    let _ = third
        .write_all(b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = until_closed(&mut third)
        .await
        .expect("the third connection was kept");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    let refused = || {
        gw.metric(
            "gateway_connections_refused_total",
            &[("listener", listener.as_str())],
        )
    };
    assert_eq!(refused(), 1.0);

    // a freed slot is taken again
    drop(held.pop());
    let served = async {
        for _ in 0..50 {
            let Ok(mut s) = TcpStream::connect(&listener).await else {
                continue;
            };
            if s.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .is_ok()
            {
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).await.is_ok() && buf.starts_with(b"HTTP/1.1 200") {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(served.await);
}

/// A backend that never answers and counts the bytes it receives.
fn byte_sink() -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
    let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std.set_nonblocking(true).unwrap();
    let addr = std.local_addr().unwrap().to_string();
    let (bytes, conns) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (b2, c2) = (bytes.clone(), conns.clone());
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(std).unwrap();
        while let Ok((mut s, _)) = listener.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            let b3 = b2.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    b3.fetch_add(n as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, bytes, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_the_backend_never_gets_them() {
    let (sink, sink_bytes, sink_conns) = byte_sink();
    let b = Backend::start("b");
    let gw = GatewayProcess::start(
        BIN,
        &GatewayConfigBuilder::new()
            .admin()
            .server(|s| s.max_body_size = ByteSize(1024))
            .service("sink", ServiceBuilder::instances([sink]))
            .service("echo", ServiceBuilder::instances([b.addr()]))
            .route(
                RouteBuilder::to("echo")
                    .prefix("/big/")
                    .max_body_size(ByteSize::mib(1)),
            )
            .route(RouteBuilder::to("sink").prefix("/"))
            .yaml(),
    );

    // declared: refused before anything is forwarded
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let body = vec![b'a'; 2000];
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        .await
        .unwrap();
    let _ = s.write_all(&body).await;
    let (head, resp) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let v: Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(v["error"], "body_too_large");
    assert_eq!(
        sink_conns.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );

    // chunked: cut as it streams; the backend gets the head and at most the limit
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        req.extend_from_slice(b"3e8\r\n");
        req.extend_from_slice(&[b'b'; 1000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let answer = until_closed(&mut s).await.expect("answered and closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("body_too_large"), "{text}");
    // the request head (< 1 KiB here) plus at most 1 KiB of body
    assert!(
        sink_bytes.load(Ordering::SeqCst) < 2048,
        "the backend received {} bytes",
        sink_bytes.load(Ordering::SeqCst)
    );

    // a route's own limit overrides the server's
    let resp = testkit::client()
        .post(gw.url("/big/upload"))
        .body(vec![b'c'; 4000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["body_bytes"], 4000);
    assert!(wait_until(Duration::from_secs(5), || {
        gw.metric("gateway_requests_total", &[("status", "4xx")]) >= 2.0
    }));
}
