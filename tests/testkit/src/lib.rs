//! Test fixtures shared by the workspace's integration tests: free ports, a real
//! `redis-server`, real Redis topologies (a Sentinel set that fails over,
//! [`RedisSentinelSet`], and a three-primary cluster, [`RedisClusterSet`]),
//! echoing HTTP/WebSocket backends, the `gateway` process, a self-signed
//! certificate, a real Prometheus server, an OTLP trace receiver, and typed
//! builders for the gateway's config ([`config`]). Every fixture cleans up on `Drop`.
//!
//! The fixtures are synchronous to construct (each backend owns its runtime on a
//! thread of its own), so they work the same from `#[test]` and `#[tokio::test]`.
//!
//! ```no_run
//! use testkit::config::{GatewayConfigBuilder, RouteBuilder, ServiceBuilder};
//! use testkit::{Backend, GatewayProcess};
//! let a = Backend::start("a");
//! let config = GatewayConfigBuilder::new() // a listener on $HTTP_PORT
//!     .admin() // on $ADMIN_PORT
//!     .service("s", ServiceBuilder::instances([a.addr()]))
//!     .route(RouteBuilder::to("s").prefix("/"));
//! let gw = GatewayProcess::start(
//!     "target/debug/gateway", // in gateway tests: env!("CARGO_BIN_EXE_gateway")
//!     &config.yaml(),
//! );
//! let url = gw.url("/hello");
//! ```

mod backend;
pub mod config;
pub mod eureka;
mod gateway;
mod otlp;
mod prometheus_server;
mod redis;
mod redis_topology;
mod serve;
mod tls;

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use self::gateway::{check_config, check_file, CheckOutput, GatewayProcess};
pub use backend::{Backend, Echo};
pub use otlp::{OtlpMode, OtlpReceiver, ReceivedSpan};
pub use prometheus_server::{promtool, PrometheusServer};
pub use redis::RedisServer;
pub use redis_topology::{RedisClusterSet, RedisSentinelSet};
pub use tls::SelfSigned;

/// Re-exported for signal numbers (`testkit::libc::SIGHUP`).
pub use libc;
/// Re-exported so tests use the same WebSocket client the backend is tested with.
pub use tokio_tungstenite;

/// A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral
/// range (`ip_local_port_range`) when there is room there.
///
/// Why not port 0: the kernel hands out ports from the ephemeral range, the range
/// outgoing connections take their local port from. A process started on the port
/// that connects out before it binds (a gateway to Redis or its services) could be
/// given that very port for its own connection, and then never bind it.
///
/// A port is never handed out twice by one test process, so parallel tests in one
/// binary do not race each other for it.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let below = ephemeral_low().unwrap_or(32768);
    for attempt in 0..256 {
        // the last tries fall back to what the kernel picks
        let port = if below > LOWEST_PORT && attempt < 192 {
            let port = rand::random_range(LOWEST_PORT..below);
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            port
        } else {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            listener.local_addr().expect("local addr").port()
        };
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free port found on 127.0.0.1 after 256 tries");
}

/// Ports [`free_port`] picks from start here (clear of the well-known and
/// registered services most machines run below it).
const LOWEST_PORT: u16 = 20000;

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Poll `cond` every 20 ms until it returns true; false when `timeout` passed first.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async twin of [`wait_until`] for conditions that make requests.
pub async fn wait_until_async<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A reqwest client for tests: no proxy from the environment, no redirects, a 30 s
/// timeout, and no connection reuse surprises across a gateway restart.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build reqwest client")
}

/// Send `n` sequential GETs of `path` through the gateway, each with `decorate(k,
/// request)` applied, and count the answers by the backend that served them (the
/// `x-backend` header of [`Backend`]); every answer must be 200.
pub async fn tally(
    gw: &GatewayProcess,
    path: &str,
    n: usize,
    decorate: impl Fn(usize, reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> std::collections::HashMap<String, usize> {
    let c = client();
    let mut out = std::collections::HashMap::new();
    for k in 0..n {
        let resp = decorate(k, c.get(gw.url(path))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let name = resp.headers()["x-backend"].to_str().unwrap().to_string();
        *out.entry(name).or_default() += 1;
    }
    out
}

/// A client that speaks HTTP/2 with prior knowledge (h2c on plain listeners).
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build h2c client")
}

/// Minimal blocking HTTP/1.1 GET over a fresh connection: `(status, body)`.
/// For readiness polling from sync code; tests should use [`client`].
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.80}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Resident set size of a process in bytes (Linux `/proc/PID/status` VmRSS).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident set size of a process in bytes (`VmHWM`).
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
