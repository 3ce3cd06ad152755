//! The one-command demo: build, start Redis (if needed), member, product, order and the
//! gateway with `config/gateway.yaml`, print a curl walkthrough, and stop everything on
//! Ctrl-C, `kill`, a closed terminal or Ctrl-\ (SIGINT, SIGTERM, SIGHUP, SIGQUIT). The
//! children die with the demo even when it is SIGKILLed (see `children.rs`).
//!
//!     cargo run --release -p backends --bin demo            # or: -- --no-build
//!
//! Ports (`DEMO_*_PORT`, see `ports.rs`) and the data directory (`DEMO_DATA_DIR`,
//! default `data/demo`) can be moved with environment variables.

mod children;
mod ports;
mod signals;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use children::{say, spawn, stop_all, Proc};
use ports::Ports;

/// Must match `auth.identity.signature.secret` in `config/gateway.yaml`. A public
/// DEMO-ONLY key: the demo's gateway signs with it and its services require it.
const DEMO_SIGNING_SECRET: &str = "demo-only-gateway-signing-secret";

fn main() -> ExitCode {
    if let Err(e) = signals::install() {
        eprintln!("demo: {e}");
        return ExitCode::FAILURE;
    }
    let result = run();
    if let Some(sig) = signals::received() {
        // The shell's convention for "ended by a signal".
        return ExitCode::from(128 + sig as u8);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "\ndemo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let root = workspace_root()?;
    let bin_dir = std::env::current_exe()
        .map_err(|e| format!("cannot locate the demo binary: {e}"))?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("cannot locate the target directory")?;
    let release = bin_dir.file_name().is_some_and(|n| n == "release");
    let ports = Ports::from_env()?;
    if !std::env::args().any(|a| a == "--no-build") {
        build(&root, release)?;
    }
    let data = match std::env::var_os("DEMO_DATA_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => root.join("data/demo"),
    };
    let logs = data.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    let config = ports::gateway_config(&root.join("config/gateway.yaml"), &data, &ports)?;
    let config_text = std::fs::read_to_string(&config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    if !config_text.contains(DEMO_SIGNING_SECRET) {
        return Err(format!(
            "{}: auth.identity.signature.secret is not the demo's key, so the services \
             (started with GATEWAY_SIGNING_SECRET={DEMO_SIGNING_SECRET}) would refuse every \
             request; put the demo key back or run the services yourself",
            config.display()
        ));
    }

    let mut procs: Vec<Proc> = Vec::new();
    let result = start_all(
        &root,
        &bin_dir,
        &data,
        &logs,
        &config,
        &config_text,
        &ports,
        &mut procs,
    )
    .and_then(|()| {
        walkthrough(&logs, &ports);
        supervise(&mut procs)
    });
    stop_all(&mut procs);
    result
}

fn workspace_root() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize()
        .map_err(|e| format!("cannot find the workspace at {}: {e}", root.display()))
}

fn build(root: &Path, release: bool) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "-p", "gateway", "-p", "backends", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    say!("Building the gateway and the services (the first build takes a few minutes)...");
    children::die_with_demo(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run cargo: {e}"))?;
    let status = children::wait_interruptible(&mut child)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build failed ({status})"))
    }
}

#[allow(clippy::too_many_arguments)]
fn start_all(
    root: &Path,
    bin_dir: &Path,
    data: &Path,
    logs: &Path,
    config: &Path,
    config_text: &str,
    ports: &Ports,
    procs: &mut Vec<Proc>,
) -> Result<(), String> {
    if redis_ping(ports.redis) {
        say!("Redis:    already running on 127.0.0.1:{}", ports.redis);
    } else {
        procs.push(start_redis(data, logs, ports.redis)?);
    }
    let uses_registry = config_text.contains("type: registry");
    let key = root.join("config/demo-keys/member-private.pem");
    for (name, port) in ports.services() {
        let mut cmd = Command::new(bin_dir.join(name));
        cmd.env("PORT", port.to_string())
            .env("DATA_DIR", data)
            .env("REDIS_URL", format!("redis://127.0.0.1:{}", ports.redis))
            .env("GATEWAY_SIGNING_SECRET", DEMO_SIGNING_SECRET)
            .env_remove("INSECURE_TRUST_UNSIGNED_IDENTITY")
            .env("JWT_PRIVATE_KEY", &key);
        if uses_registry {
            cmd.env(
                "GATEWAY_ADMIN_URL",
                format!("http://127.0.0.1:{}", ports.admin),
            );
        }
        let p = spawn(name, cmd, logs)?;
        procs.push(p);
        wait_ready(procs, &format!("127.0.0.1:{port}"), "/health")?;
        say!(
            "{name:<9} http://127.0.0.1:{port}  (data: {}/{name}.db)",
            data.display()
        );
    }
    let mut cmd = Command::new(bin_dir.join("gateway"));
    cmd.arg("run").arg("-c").arg(config);
    procs.push(spawn("gateway", cmd, logs)?);
    let admin = format!("127.0.0.1:{}", ports.admin);
    wait_ready(procs, &admin, "/health")?;
    wait_ready(procs, &admin, "/ready")?;
    say!(
        "gateway   http://127.0.0.1:{}  (admin: http://{admin}/metrics, config: {})",
        ports.gateway,
        config.display()
    );
    Ok(())
}

fn start_redis(data: &Path, logs: &Path, port: u16) -> Result<Proc, String> {
    let dir = data.join("redis");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "60 1",
    ])
    .arg("--dir")
    .arg(&dir);
    let p = match spawn("redis", cmd, logs) {
        Ok(p) => p,
        Err(e) if e.contains("No such file") || e.contains("not found") => {
            return Err(format!(
                "Redis is not running on 127.0.0.1:{port} and redis-server is not installed.\n\
                 Install it (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: `brew install redis`)\n\
                 or start a Redis on port {port}, then run the demo again."
            ))
        }
        Err(e) => return Err(e),
    };
    let started = Instant::now();
    while !redis_ping(port) {
        if let Some(sig) = signals::received() {
            return Err(format!("stopped by {}", signals::name(sig)));
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "redis-server did not answer; see {}",
                p.log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    say!(
        "Redis:    started redis-server on 127.0.0.1:{port} (data: {})",
        dir.display()
    );
    Ok(p)
}

/// Wait until `GET path` on `addr` answers 200, the last process dies, or a stopping
/// signal arrives.
fn wait_ready(procs: &mut [Proc], addr: &str, path: &str) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if let Some(sig) = signals::received() {
            return Err(format!("stopped by {}", signals::name(sig)));
        }
        if http_status(addr, path) == Some(200) {
            return Ok(());
        }
        if let Some(p) = procs.last_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}); last lines of {}:\n{}\n(is port {} already in use?)",
                    p.name,
                    p.log.display(),
                    tail(&p.log, 15),
                    addr.rsplit(':').next().unwrap_or("?")
                ));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "{} not ready at {addr}{path} after 30 s; see {}",
                    p.name,
                    p.log.display()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn walkthrough(logs: &Path, ports: &Ports) {
    let j = "-H 'content-type: application/json'";
    let gw = format!("localhost:{}", ports.gateway);
    say!(
        r#"
The demo is up. Logs: {logs}/*.log. Press Ctrl-C to stop everything.

Try it (bash):
  # sign up and log in
  curl -s -XPOST {gw}/member/signup {j} -d '{{"email":"ada@example.com","password":"correct horse","name":"Ada"}}'
  TOKEN=$(curl -s -XPOST {gw}/member/login {j} -d '{{"email":"ada@example.com","password":"correct horse"}}' | sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
  curl -s {gw}/member/me -H "authorization: Bearer $TOKEN"

  # browse (public) and order (protected); the saga confirms it a moment later
  curl -s {gw}/product/products
  curl -s -XPOST {gw}/order/orders -H "authorization: Bearer $TOKEN" {j} -d '{{"productId":1,"quantity":2}}'
  curl -s {gw}/order/orders -H "authorization: Bearer $TOKEN"

  # log out: the same token is refused at once (401 token_revoked)
  curl -s -XPOST {gw}/member/logout -H "authorization: Bearer $TOKEN" -o /dev/null -w '%{{http_code}}\n'
  curl -s {gw}/member/me -H "authorization: Bearer $TOKEN"
"#,
        logs = logs.display()
    );
}

/// Run until a stopping signal (Ok) or a child exits on its own (Err).
fn supervise(procs: &mut [Proc]) -> Result<(), String> {
    loop {
        if let Some(sig) = signals::received() {
            say!("\nStopping ({})...", signals::name(sig));
            return Ok(());
        }
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}); last lines of {}:\n{}",
                    p.name,
                    p.log.display(),
                    tail(&p.log, 15)
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 32];
    let n = s.read(&mut head).ok()?;
    std::str::from_utf8(&head[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
