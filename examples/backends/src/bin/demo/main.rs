//! The one-command demo: build, start Redis (if needed), member, product, order and the
//! gateway with `config/gateway.yaml`, print a curl walkthrough, stop all on Ctrl-C.
//!
//!     cargo run --release -p backends --bin demo            # or: -- --no-build

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Must match `auth.identity.signature.secret` in `config/gateway.yaml` (DEMO ONLY).
const DEMO_SIGNING_SECRET: &str = "demo-only-gateway-signing-secret";
const REDIS_PORT: u16 = 6379;
const SERVICES: [(&str, u16); 3] = [("member", 8081), ("product", 8082), ("order", 8083)];

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo: {e}");
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
    if !std::env::args().any(|a| a == "--no-build") {
        build(&root, release)?;
    }
    let data = root.join("data/demo");
    let logs = data.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    let config = root.join("config/gateway.yaml");
    let config_text = std::fs::read_to_string(&config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;

    let mut procs: Vec<Proc> = Vec::new();
    let result = start_all(
        &root,
        &bin_dir,
        &data,
        &logs,
        &config,
        &config_text,
        &mut procs,
    )
    .and_then(|()| {
        walkthrough(&logs);
        wait_for_ctrl_c(&mut procs)
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
    println!("Building the gateway and the services (the first build takes a few minutes)...");
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build failed ({status})"))
    }
}

fn start_all(
    root: &Path,
    bin_dir: &Path,
    data: &Path,
    logs: &Path,
    config: &Path,
    config_text: &str,
    procs: &mut Vec<Proc>,
) -> Result<(), String> {
    if redis_ping(REDIS_PORT) {
        println!("Redis:    already running on 127.0.0.1:{REDIS_PORT}");
    } else {
        procs.push(start_redis(data, logs)?);
    }
    let uses_registry = config_text.contains("type: registry");
    let key = root.join("config/demo-keys/member-private.pem");
    for (name, port) in SERVICES {
        let mut cmd = Command::new(bin_dir.join(name));
        cmd.env("PORT", port.to_string())
            .env("DATA_DIR", data)
            .env("REDIS_URL", format!("redis://127.0.0.1:{REDIS_PORT}"))
            .env("GATEWAY_SIGNING_SECRET", DEMO_SIGNING_SECRET)
            .env("JWT_PRIVATE_KEY", &key);
        if uses_registry {
            cmd.env("GATEWAY_ADMIN_URL", "http://127.0.0.1:9090");
        }
        let p = spawn(name, cmd, logs)?;
        procs.push(p);
        wait_ready(procs, &format!("127.0.0.1:{port}"), "/health")?;
        println!(
            "{name:<9} http://127.0.0.1:{port}  (data: {}/{name}.db)",
            data.display()
        );
    }
    let mut cmd = Command::new(bin_dir.join("gateway"));
    cmd.arg("run").arg("-c").arg(config);
    procs.push(spawn("gateway", cmd, logs)?);
    wait_ready(procs, "127.0.0.1:9090", "/health")?;
    wait_ready(procs, "127.0.0.1:9090", "/ready")?;
    println!(
        "gateway   http://127.0.0.1:8080  (admin: http://127.0.0.1:9090/metrics, config: {})",
        config.display()
    );
    Ok(())
}

fn start_redis(data: &Path, logs: &Path) -> Result<Proc, String> {
    let dir = data.join("redis");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &REDIS_PORT.to_string(),
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
                "Redis is not running on 127.0.0.1:{REDIS_PORT} and redis-server is not installed.\n\
                 Install it (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: `brew install redis`)\n\
                 or start a Redis on port {REDIS_PORT}, then run the demo again."
            ))
        }
        Err(e) => return Err(e),
    };
    let started = Instant::now();
    while !redis_ping(REDIS_PORT) {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "redis-server did not answer; see {}",
                p.log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "Redis:    started redis-server on 127.0.0.1:{REDIS_PORT} (data: {})",
        dir.display()
    );
    Ok(p)
}

fn spawn(name: &str, mut cmd: Command, logs: &Path) -> Result<Proc, String> {
    let log = logs.join(format!("{name}.log"));
    let file = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    // Its own process group: a terminal's Ctrl-C reaches only the demo, which then
    // stops everything in order.
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    Ok(Proc {
        name: name.to_string(),
        child,
        log,
    })
}

/// Wait until `GET path` on `addr` answers 200, or the last process dies.
fn wait_ready(procs: &mut [Proc], addr: &str, path: &str) -> Result<(), String> {
    let started = Instant::now();
    loop {
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

fn walkthrough(logs: &Path) {
    let j = "-H 'content-type: application/json'";
    println!(
        r#"
The demo is up. Logs: {logs}/*.log. Press Ctrl-C to stop everything.

Try it (bash):
  # sign up and log in
  curl -s -XPOST localhost:8080/member/signup {j} -d '{{"email":"ada@example.com","password":"correct horse","name":"Ada"}}'
  TOKEN=$(curl -s -XPOST localhost:8080/member/login {j} -d '{{"email":"ada@example.com","password":"correct horse"}}' | sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
  curl -s localhost:8080/member/me -H "authorization: Bearer $TOKEN"

  # browse (public) and order (protected); the saga confirms it a moment later
  curl -s localhost:8080/product/products
  curl -s -XPOST localhost:8080/order/orders -H "authorization: Bearer $TOKEN" {j} -d '{{"productId":1,"quantity":2}}'
  curl -s localhost:8080/order/orders -H "authorization: Bearer $TOKEN"

  # log out: the same token is refused at once (401 token_revoked)
  curl -s -XPOST localhost:8080/member/logout -H "authorization: Bearer $TOKEN" -o /dev/null -w '%{{http_code}}\n'
  curl -s localhost:8080/member/me -H "authorization: Bearer $TOKEN"
"#,
        logs = logs.display()
    );
}

fn wait_for_ctrl_c(procs: &mut [Proc]) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    println!("\nStopping...");
                    return Ok(());
                }
                _ = tick.tick() => {
                    for p in procs.iter_mut() {
                        if let Ok(Some(status)) = p.child.try_wait() {
                            return Err(format!("{} exited ({status}); last lines of {}:\n{}", p.name, p.log.display(), tail(&p.log, 15)));
                        }
                    }
                }
            }
        }
    })
}

/// SIGTERM the services first (they deregister from the still running gateway), then
/// the gateway, then Redis if the demo started it; kill what does not stop in time.
fn stop_all(procs: &mut Vec<Proc>) {
    let rank = |p: &Proc| match p.name.as_str() {
        "redis" => 2,
        "gateway" => 1,
        _ => 0,
    };
    for stage in 0..=2 {
        let mut group: Vec<Proc> = Vec::new();
        let mut i = 0;
        while i < procs.len() {
            if rank(&procs[i]) == stage {
                group.push(procs.remove(i));
            } else {
                i += 1;
            }
        }
        for p in &group {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for mut p in group {
            while Instant::now() < deadline && !matches!(p.child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
            println!("stopped {}", p.name);
        }
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
