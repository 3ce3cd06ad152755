//! A real `redis-server` on a free loopback port, for tests of revocation and
//! registry features; `stop()`/`restart()` keep the port so outages can be staged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};

/// A `redis-server` process owned by the test: no persistence, killed on `Drop`.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Start a server on a free port and wait until it answers `PING`.
    ///
    /// Panics with the package to install when `redis-server` is not on `PATH`.
    pub fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether the server answers `PING` right now.
    pub fn is_up(&self) -> bool {
        ping(self.port)
    }

    /// Kill the server (an outage); the port stays reserved for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(
            wait_until(Duration::from_secs(5), || TcpStream::connect(self.addr())
                .is_err()),
            "redis-server on port {} still accepts after stop()",
            self.port
        );
    }

    /// Start the server again on the same port (empty: nothing was persisted).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Run one command with the raw protocol and return the reply as raw protocol
    /// text, trimmed: `cmd(&["SET", "k", "v"])` -> `"+OK"`, a `GET` -> `"$1\r\nv"`
    /// or `"$-1"`. For test setup, not a client.
    pub fn cmd(&self, args: &[&str]) -> String {
        command(self.port, args)
            .unwrap_or_else(|e| panic!("redis-server on port {}: {args:?}: {e}", self.port))
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed; install it with `apt-get install redis-server`"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(10), || ping(self.port));
        if !up {
            let status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "redis-server on port {} did not answer PING within 10 s (exit: {status:?})",
                self.port
            );
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// One reply of the Redis protocol (RESP2), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`, `-MOVED ...`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$N` and its bytes (lossy UTF-8); `None` for `$-1`.
    Bulk(Option<String>),
    /// `*N` and its elements; `None` for `*-1`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a bulk or status reply.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Status(s) | Reply::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// The elements of an array reply (empty for anything else).
    pub(crate) fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(v)) => v,
            _ => &[],
        }
    }

    /// In a flat `[k1, v1, k2, v2, ...]` array (`SENTINEL replicas` entries), the value of `key`.
    pub(crate) fn field(&self, key: &str) -> Option<&str> {
        self.items()
            .chunks(2)
            .find(|kv| kv[0].as_str() == Some(key))
            .and_then(|kv| kv.get(1)?.as_str())
    }
}

/// Send one command to the server on `127.0.0.1:port` over a fresh connection and
/// return the whole reply as raw protocol text, trimmed (`"+OK"`, `":1"`,
/// `"$1\r\nv"`, `"-MOVED 866 127.0.0.1:7001"`). Errors are I/O errors only; an
/// error reply is returned as text.
pub(crate) fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    command_auth(port, None, args)
}

/// Like [`command`], but with `AUTH password` first on the connection when a
/// password is given. A refused `AUTH` is returned as the reply (`"-WRONGPASS ..."`).
pub(crate) fn command_auth(
    port: u16,
    password: Option<&str>,
    args: &[&str],
) -> std::io::Result<String> {
    let mut raw = Vec::new();
    exchange(port, password, args, &mut raw)?;
    Ok(String::from_utf8_lossy(&raw).trim_end().to_string())
}

/// Like [`command`], but the reply parsed.
pub(crate) fn request(port: u16, args: &[&str]) -> std::io::Result<Reply> {
    request_auth(port, None, args)
}

/// Like [`command_auth`], but the reply parsed.
pub(crate) fn request_auth(
    port: u16,
    password: Option<&str>,
    args: &[&str],
) -> std::io::Result<Reply> {
    exchange(port, password, args, &mut Vec::new())
}

fn exchange(
    port: u16,
    password: Option<&str>,
    args: &[&str],
    raw: &mut Vec<u8>,
) -> std::io::Result<Reply> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = String::new();
    let mut push = |args: &[&str]| {
        req.push_str(&format!("*{}\r\n", args.len()));
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
    };
    if let Some(p) = password {
        push(&["AUTH", p]);
    }
    push(args);
    stream.write_all(req.as_bytes())?;
    let mut reader = BufReader::new(stream);
    if password.is_some() {
        let mut auth_raw = Vec::new();
        if let Reply::Error(e) = read_reply(&mut reader, &mut auth_raw)? {
            raw.extend_from_slice(&auth_raw);
            return Ok(Reply::Error(e));
        }
    }
    read_reply(&mut reader, raw)
}

/// Read one complete reply, appending its bytes to `raw`.
fn read_reply(r: &mut impl BufRead, raw: &mut Vec<u8>) -> std::io::Result<Reply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    raw.extend_from_slice(&line);
    let text = String::from_utf8_lossy(&line);
    let text = text.trim_end_matches(['\r', '\n']);
    let (kind, rest) = text.split_at(text.len().min(1));
    let len = || rest.parse::<i64>().map_err(|_| bad(text));
    Ok(match kind {
        "+" => Reply::Status(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(len()?),
        "$" if len()? < 0 => Reply::Bulk(None),
        "$" => {
            let mut data = vec![0u8; len()? as usize + 2];
            r.read_exact(&mut data)?;
            raw.extend_from_slice(&data);
            data.truncate(data.len() - 2);
            Reply::Bulk(Some(String::from_utf8_lossy(&data).into_owned()))
        }
        "*" if len()? < 0 => Reply::Array(None),
        "*" => Reply::Array(Some(
            (0..len()?)
                .map(|_| read_reply(r, raw))
                .collect::<std::io::Result<_>>()?,
        )),
        _ => return Err(bad(text)),
    })
}
