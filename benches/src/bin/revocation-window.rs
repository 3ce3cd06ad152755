//! `revocation-window`: how long another gateway still accepts a token after a
//! logout was answered by the gateway that carried it.
//!
//! Starts redis, one fixed-response backend and two gateways (A, B) in mirror
//! mode sharing that Redis. Each try: a fresh token is used at B (so B has it
//! verified and cached), logged out at A (route `revoke: on_success`), then sent
//! to B in a tight keep-alive loop until B refuses it. The window is the time from
//! A's answer to B's first refusal; A itself must refuse on the very next request.
//! Bounded: `--tries` (default 300), each given up after 2 s.
//!
//! `cargo run --release -p benches --bin revocation-window -- [--tries N] [--gateway PATH]`

#![deny(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use benches::procs::{self, Proc};
use benches::{sys, tokens};
use clap::Parser;

const SECRET: &str = "revocation-window-secret-0123456789abcdef";
const ISSUER: &str = "bench";

#[derive(Parser)]
#[command(about = "Time from a logout answer at one gateway to a refusal at another")]
struct Cli {
    /// Logouts to measure.
    #[arg(long, default_value_t = 300)]
    tries: usize,
    /// The gateway binary (default: `gateway` beside this binary).
    #[arg(long)]
    gateway: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("revocation-window: {e}");
            ExitCode::FAILURE
        }
    }
}

fn beside(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no folder for this binary")?;
    Ok(dir.join(name))
}

fn loopback() -> Result<SocketAddr, String> {
    let port = sys::free_port().map_err(|e| format!("no free port: {e}"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn gateway_yaml(listen: SocketAddr, backend: SocketAddr, redis: SocketAddr) -> String {
    format!(
        "server: {{threads: 1, log: {{access_log: false}}}}\n\
         listeners: [{{address: \"{listen}\"}}]\n\
         services: {{app: {{instances: [\"{backend}\"]}}}}\n\
         auth:\n\
         \x20 issuers: [{{name: bench, issuer: {ISSUER}, algorithms: [HS256], secret: \"{SECRET}\"}}]\n\
         \x20 revocation: {{redis_url: \"redis://{redis}\", mode: mirror}}\n\
         routes:\n\
         \x20 - {{id: logout, match: {{path: /logout, methods: [POST]}}, service: app, auth: {{jwt: {{revoke: on_success}}}}}}\n\
         \x20 - {{id: api, match: {{prefix: /api/}}, service: app, auth: {{jwt: {{}}}}}}\n"
    )
}

fn start_gateway(bin: &Path, dir: &Path, name: &str, yaml: &str) -> Result<Proc, String> {
    let listen = yaml
        .lines()
        .find_map(|l| l.split("address: \"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .ok_or("no listener in the config")?;
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("-c").arg(&file).env("RUST_LOG", "warn");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let mut p = procs::spawn(name, cmd, listen, &logs.join(format!("{name}.log")), None)
        .map_err(|e| e.to_string())?;
    p.wait_tcp().map_err(|e| e.to_string())?;
    Ok(p)
}

/// A keep-alive HTTP/1.1 connection (one request at a time).
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn, String> {
        let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        Ok(Conn {
            reader: BufReader::new(s),
        })
    }

    /// Send one request; the status once the whole response is read.
    fn send(&mut self, method: &str, path: &str, token: &str) -> Result<u16, String> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
        );
        let io = |e: std::io::Error| e.to_string();
        self.reader
            .get_mut()
            .write_all(req.as_bytes())
            .map_err(io)?;
        let mut line = String::new();
        self.reader.read_line(&mut line).map_err(io)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP response: {line:?}"))?;
        let (mut length, mut chunked) = (0usize, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line).map_err(io)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().map_err(|_| "bad content-length")?;
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).map_err(io)?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(|_| "bad chunk")?;
                let mut buf = vec![0u8; size + 2];
                self.reader.read_exact(&mut buf).map_err(io)?;
                if size == 0 {
                    break;
                }
            }
        } else {
            let mut buf = vec![0u8; length];
            self.reader.read_exact(&mut buf).map_err(io)?;
        }
        Ok(status)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn run(cli: Cli) -> Result<(), String> {
    let gateway = match cli.gateway {
        Some(p) => p,
        None => beside("gateway")?,
    };
    let backend_bin = beside("bench-backend")?;
    let work = std::env::temp_dir().join(format!("revocation-window-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;

    let redis_bin = procs::which("redis-server").ok_or("redis-server is not installed")?;
    let redis_addr = loopback()?;
    let mut cmd = Command::new(redis_bin);
    cmd.args([
        "--bind",
        "127.0.0.1",
        "--port",
        &redis_addr.port().to_string(),
    ])
    .args(["--save", "", "--appendonly", "no", "--daemonize", "no"]);
    let mut redis = procs::spawn("redis", cmd, redis_addr, &work.join("redis.log"), None)
        .map_err(|e| e.to_string())?;
    redis.wait_tcp().map_err(|e| e.to_string())?;
    let backend = procs::spawn_backend(&backend_bin, "backend", None).map_err(|e| e.to_string())?;
    let a_addr = loopback()?;
    let b_addr = loopback()?;
    let _a = start_gateway(
        &gateway,
        &work,
        "gateway-a",
        &gateway_yaml(a_addr, backend.addr, redis_addr),
    )?;
    let _b = start_gateway(
        &gateway,
        &work,
        "gateway-b",
        &gateway_yaml(b_addr, backend.addr, redis_addr),
    )?;

    let (mut a, mut b) = (Conn::open(a_addr)?, Conn::open(b_addr)?);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // both mirrors synced: a token passes at both
    let probe = tokens::mint(SECRET, ISSUER, usize::MAX, now);
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.send("GET", "/api/x", &probe)? != 200 || b.send("GET", "/api/x", &probe)? != 200 {
        if Instant::now() > deadline {
            return Err("the gateways never accepted a token (mirror not synced?)".into());
        }
        std::thread::sleep(Duration::from_millis(50));
        (a, b) = (Conn::open(a_addr)?, Conn::open(b_addr)?);
    }

    let (mut windows, mut logouts, mut polls) = (Vec::new(), Vec::new(), 0u64);
    let (mut here_passed, mut gave_up) = (0, 0);
    for n in 0..cli.tries {
        let t = tokens::mint(SECRET, ISSUER, n, now);
        if b.send("GET", "/api/x", &t)? != 200 {
            return Err(format!("try {n}: a fresh token was refused at B"));
        }
        let sent = Instant::now();
        let s = a.send("POST", "/logout", &t)?;
        let answered = Instant::now();
        if s != 200 {
            return Err(format!("try {n}: logout answered {s}"));
        }
        logouts.push(answered - sent);
        let mut refused = None;
        while answered.elapsed() < Duration::from_secs(2) {
            polls += 1;
            if b.send("GET", "/api/x", &t)? == 401 {
                refused = Some(answered.elapsed());
                break;
            }
        }
        match refused {
            Some(w) => windows.push(w),
            None => gave_up += 1,
        }
        if a.send("GET", "/api/x", &t)? != 401 {
            here_passed += 1;
        }
    }
    windows.sort();
    logouts.sort();
    println!(
        "tries {}: window at the other gateway (logout answer at A -> first refusal at B, mirror mode)",
        cli.tries
    );
    println!(
        "  p50 {}  p90 {}  p99 {}  max {}  ({} polls of B; {} never refused within 2 s)",
        us(percentile(&windows, 0.5)),
        us(percentile(&windows, 0.9)),
        us(percentile(&windows, 0.99)),
        us(windows.last().copied().unwrap_or_default()),
        polls,
        gave_up
    );
    println!(
        "  logout round trip at A (service + local pin + Redis SET/PUBLISH): p50 {}  p99 {}",
        us(percentile(&logouts, 0.5)),
        us(percentile(&logouts, 0.99))
    );
    println!(
        "  next request at A passed after logout: {here_passed} of {}",
        cli.tries
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
