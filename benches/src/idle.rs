//! The idle-connection scenario (`idle-10k`): how much memory a target holds for
//! each client connection that sent one request and now waits, idle, on keep-alive.
//!
//! For each target, alone: start it, warm it up (50 connections for half a
//! second, which also fills its upstream pool), let it settle and read its
//! resident memory (`VmRSS` summed over its process tree); open N connections
//! that each send one small `GET` and read the whole answer, 50 at a time; let it
//! settle and read the memory again; then close every connection and stop the
//! target. The growth divided by N is what one idle connection costs.
//!
//! Bounded: each connection has 10 s to answer and the opening phase 120 s in
//! all; whatever did not open by then counts as failed.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::loadgen;
use crate::run::{self, Options, ScenarioResult};
use crate::scenario::{Scenario, Target};
use crate::setup::{self, Setup};
use crate::sys;

/// Connections being opened at once.
const OPEN_CONCURRENCY: usize = 50;
/// Longest one connection may take to connect and answer.
const PER_CONNECTION: Duration = Duration::from_secs(10);
/// Longest the whole opening phase may take.
const OPEN_BUDGET: Duration = Duration::from_secs(120);
/// Warm-up load before the first memory reading.
const WARMUP: Duration = Duration::from_millis(500);
/// Pause before each memory reading (lets the target finish its bookkeeping).
const SETTLE: Duration = Duration::from_millis(500);
/// The one request every client sends.
const REQUEST: &[u8] = b"GET /small HTTP/1.1\r\nHost: bench.local\r\n\r\n";
/// Descriptors the harness needs beside the held connections.
pub const SPARE_FDS: u64 = 256;

/// What one target holds for the idle connections.
#[derive(Debug, Clone)]
pub struct IdleMeasured {
    pub target: Target,
    /// Connections asked for.
    pub requested: usize,
    /// Connections that got their answer and were held.
    pub opened: usize,
    /// Connections that failed to connect or answer in time (or never started).
    pub failed: usize,
    /// Held connections the target had not closed when memory was read.
    pub still_open: usize,
    /// Resident memory (bytes) after the warm-up, before the connections.
    pub rss_before: u64,
    /// Resident memory (bytes) with every connection held.
    pub rss_after: u64,
    /// Seconds to open all of them.
    pub open_secs: f64,
}

impl IdleMeasured {
    /// Growth in bytes (0 if it shrank).
    pub fn growth(&self) -> u64 {
        self.rss_after.saturating_sub(self.rss_before)
    }

    pub fn growth_mib(&self) -> f64 {
        self.growth() as f64 / (1024.0 * 1024.0)
    }

    /// Growth per held connection, in KiB.
    pub fn kib_per_connection(&self) -> f64 {
        self.growth() as f64 / 1024.0 / self.opened.max(1) as f64
    }
}

/// Run the scenario against every selected target, one at a time.
pub fn run_scenario(
    opts: &Options,
    sc: &Scenario,
    tag: &str,
    target_cpu: Option<usize>,
    load_cpu: Option<usize>,
) -> ScenarioResult {
    let n = opts.idle_connections.max(1);
    let mut result = ScenarioResult::empty(sc, n);
    let limit = sys::nofile_limit().unwrap_or(0);
    if limit < n as u64 + SPARE_FDS {
        let why = format!(
            "the open-files limit is {limit}, {n} idle connections need {}",
            n as u64 + SPARE_FDS
        );
        eprintln!("{tag} {why}");
        result.skip_all(sc, opts, &why);
        return result;
    }
    let dir = opts.out_dir.join("work").join(sc.key);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("{tag} cannot create {}: {e}", dir.display());
        return result;
    }
    let mut s = match Setup::new(opts, &dir, load_cpu, target_cpu) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{tag} cannot start the upstream backends: {e}");
            return result;
        }
    };
    let tokens = Arc::new(run::make_tokens(opts, sc));
    for &t in sc.targets.iter().filter(|&&t| opts.wants(t)) {
        let started = match setup::start(&mut s, t, sc, "") {
            Ok(started) => started,
            Err(why) => {
                eprintln!("{tag} skipped {}: {why}", t.name());
                result.skipped.push((t, why));
                continue;
            }
        };
        let proc = started.proc;
        let mut warm = run::spec(sc, proc.addr, &tokens, WARMUP, load_cpu);
        warm.connections = OPEN_CONCURRENCY;
        let _ = loadgen::run(&warm, &|| 0.0);
        std::thread::sleep(SETTLE);
        let pid = proc.pid();
        let rss = move || sys::rss(&sys::process_tree(pid));
        let rss_before = rss();
        match hold(proc.addr, n, load_cpu, &rss) {
            Ok(h) => {
                let m = IdleMeasured {
                    target: t,
                    requested: n,
                    opened: h.opened,
                    failed: h.failed,
                    still_open: h.still_open,
                    rss_before,
                    rss_after: h.rss_after,
                    open_secs: h.open_secs,
                };
                eprintln!(
                    "{tag} {:<17} {} held ({} failed) in {:.1} s: RSS {:.1} -> {:.1} MiB, \
                     +{:.1} MiB, {:.1} KiB per connection",
                    t.name(),
                    m.opened,
                    m.failed,
                    m.open_secs,
                    m.rss_before as f64 / 1048576.0,
                    m.rss_after as f64 / 1048576.0,
                    m.growth_mib(),
                    m.kib_per_connection()
                );
                result.idle.push(m);
            }
            Err(e) => {
                eprintln!("{tag} idle clients failed on {}: {e}", t.name());
                result
                    .skipped
                    .push((t, format!("idle clients failed: {e}")));
            }
        }
        drop(proc);
    }
    result
}

/// What the clients saw.
struct Held {
    opened: usize,
    failed: usize,
    still_open: usize,
    rss_after: u64,
    open_secs: f64,
}

/// Open `n` connections to `addr` (one request each) on a thread of its own,
/// read `measure()` while they are all held, then close them.
fn hold(
    addr: SocketAddr,
    n: usize,
    cpu: Option<usize>,
    measure: &(dyn Fn() -> u64 + Sync),
) -> io::Result<Held> {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            if let Some(cpu) = cpu {
                // a failed pin only costs accuracy; the run goes on
                let _ = sys::pin_current_thread(cpu);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, hold_all(addr, n, measure))
        });
        handle
            .join()
            .map_err(|_| io::Error::other("the idle client thread panicked"))?
    })
}

async fn hold_all(
    addr: SocketAddr,
    n: usize,
    measure: &(dyn Fn() -> u64 + Sync),
) -> io::Result<Held> {
    let started = Instant::now();
    let deadline = started + OPEN_BUDGET;
    let mut open: Vec<TcpStream> = Vec::with_capacity(n);
    let mut failed = 0;
    let mut launched = 0;
    let mut opening = tokio::task::JoinSet::new();
    loop {
        while launched < n && opening.len() < OPEN_CONCURRENCY && Instant::now() < deadline {
            opening.spawn_local(tokio::time::timeout(PER_CONNECTION, open_one(addr)));
            launched += 1;
        }
        match opening.join_next().await {
            Some(Ok(Ok(Ok(stream)))) => open.push(stream),
            Some(_) => failed += 1,
            None => break,
        }
    }
    failed += n - launched;
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_after = measure();
    let still_open = open.iter().filter(|s| is_open(s)).count();
    let opened = open.len();
    drop(open);
    Ok(Held {
        opened,
        failed,
        still_open,
        rss_after,
        open_secs,
    })
}

/// Connect, send the request, read the whole 2xx answer; keep the connection.
async fn open_one(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(REQUEST).await?;
    let mut buf = Vec::with_capacity(512);
    loop {
        if let Some(done) = answer_complete(&buf)? {
            if !done {
                return Err(io::Error::other("not a 2xx answer"));
            }
            return Ok(stream);
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("answer larger than 64 KiB"));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::other("closed before the whole answer"));
        }
    }
}

/// `Some(is 2xx)` once `buf` holds a whole answer (head and body), `None` before.
fn answer_complete(buf: &[u8]) -> io::Result<Option<bool>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf).map_err(io::Error::other)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let ok = matches!(resp.code, Some(200..=299));
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let body = &buf[head..];
    if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| io::Error::other("bad Content-Length"))?;
        return Ok((body.len() >= len).then_some(ok));
    }
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return Ok(body.ends_with(b"0\r\n\r\n").then_some(ok));
    }
    Err(io::Error::other("an answer without a length on keep-alive"))
}

/// The peer has not closed the connection (nothing to read, no EOF).
fn is_open(s: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv(2) with MSG_PEEK | MSG_DONTWAIT writes at most one byte into
    // `byte`, which lives for the call; the descriptor is owned by `s`.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => false,
        n if n > 0 => true,
        _ => io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_complete_only_with_their_whole_body() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n";
        assert_eq!(answer_complete(head).ok(), Some(None));
        let whole = [&head[..], b"hello, world\n"].concat();
        assert_eq!(answer_complete(&whole).ok(), Some(Some(true)));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nd\r\nhello, world\n\r\n0\r\n\r\n";
        assert_eq!(answer_complete(chunked).ok(), Some(Some(true)));
        let refused = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(answer_complete(refused).ok(), Some(Some(false)));
        assert_eq!(answer_complete(b"HTTP/1.1 2").ok(), Some(None));
        assert!(answer_complete(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
