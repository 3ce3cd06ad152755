//! Child processes the harness starts (backends, the gateway, the Pingora floor,
//! nginx, haproxy, redis): spawn pinned, wait until they answer, stop them on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} did not become ready within {secs} s{log}")]
    NotReady {
        what: String,
        secs: u64,
        log: String,
    },
    #[error("{what} exited at start{log}")]
    Exited { what: String, log: String },
}

/// A running child; sent SIGTERM (then SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    log: Option<PathBuf>,
    /// How long it may take to answer after it started.
    ready_within: Duration,
}

impl Proc {
    /// Give it `d` to become ready (a target under valgrind starts slowly).
    pub fn ready_within(mut self, d: Duration) -> Self {
        self.ready_within = d;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// This process and its descendants.
    pub fn tree(&self) -> Vec<u32> {
        crate::sys::process_tree(self.pid())
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    fn log_tail(&self) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail: Vec<String> = lines[lines.len().saturating_sub(3)..]
            .iter()
            .map(|l| l.chars().take(240).collect())
            .collect();
        let tail = tail.join("\n    ");
        format!(" (log {}):\n    {tail}", path.display())
    }

    /// Wait until `GET path` with `headers` answers 2xx.
    pub fn wait_http(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<(), StartError> {
        self.wait_until(|addr| matches!(http_status(addr, path, headers), Ok(200..=299)))
    }

    /// Wait until `ready(addr)` holds (checked every 50 ms, for up to 15 s unless
    /// [`Proc::ready_within`] said otherwise).
    pub fn wait_until(&mut self, ready: impl Fn(SocketAddr) -> bool) -> Result<(), StartError> {
        let secs = self.ready_within.as_secs();
        let deadline = Instant::now() + self.ready_within;
        while Instant::now() < deadline {
            if self.exited() {
                return Err(StartError::Exited {
                    what: self.name.clone(),
                    log: self.log_tail(),
                });
            }
            if ready(self.addr) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(StartError::NotReady {
            what: self.name.clone(),
            secs,
            log: self.log_tail(),
        })
    }

    /// Wait until the address accepts TCP connections.
    pub fn wait_tcp(&mut self) -> Result<(), StartError> {
        let secs = 15;
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.exited() {
                return Err(StartError::Exited {
                    what: self.name.clone(),
                    log: self.log_tail(),
                });
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        Err(StartError::NotReady {
            what: self.name.clone(),
            secs,
            log: self.log_tail(),
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `cmd` (pinned to `cpu`) with stdout and stderr to `log`.
pub fn spawn(
    name: &str,
    mut cmd: Command,
    addr: SocketAddr,
    log: &Path,
    cpu: Option<usize>,
) -> Result<Proc, StartError> {
    let err = |source| StartError::Spawn {
        what: name.to_string(),
        source,
    };
    let out = std::fs::File::create(log).map_err(err)?;
    let out2 = out.try_clone().map_err(err)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(out2);
    crate::sys::prepare_command(&mut cmd, cpu);
    let child = cmd.spawn().map_err(err)?;
    Ok(Proc {
        name: name.to_string(),
        addr,
        child,
        log: Some(log.to_path_buf()),
        ready_within: Duration::from_secs(15),
    })
}

/// Start a `bench-backend` on a port it picks itself; returns once it listens.
pub fn spawn_backend(bin: &Path, name: &str, cpu: Option<usize>) -> Result<Proc, StartError> {
    let mut cmd = Command::new(bin);
    cmd.arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    crate::sys::prepare_command(&mut cmd, cpu);
    let mut child = cmd.spawn().map_err(|source| StartError::Spawn {
        what: format!("{name} ({})", bin.display()),
        source,
    })?;
    let line = child.stdout.take().and_then(|out| {
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).ok()?;
        Some(line)
    });
    let addr = line
        .as_deref()
        .and_then(|l| l.trim().strip_prefix("listening "))
        .and_then(|a| a.parse().ok());
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(StartError::Exited {
            what: name.to_string(),
            log: String::new(),
        });
    };
    Ok(Proc {
        name: name.to_string(),
        addr,
        child,
        log: None,
        ready_within: Duration::from_secs(15),
    })
}

/// One blocking `GET` over a fresh connection; the status code.
pub fn http_status(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    request_status(&mut stream, path, headers)
}

/// Send `GET path` (`Connection: close`) on `stream` and read the status code.
pub fn request_status(
    stream: &mut (impl Read + Write),
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<u16> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.flush()?;
    let mut head = [0u8; 32];
    let n = stream.read(&mut head)?;
    let text = String::from_utf8_lossy(&head[..n]);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))
}

/// `name` on `PATH`, if installed (also looks in the sbin folders).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
