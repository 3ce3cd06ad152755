//! A real `redis-server` on a free loopback port, for tests of revocation and
//! registry features; `stop()`/`restart()` keep the port so outages can be staged.

use std::io::{Read, Write};
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

    /// Run one command with the raw protocol and return the first reply line,
    /// e.g. `cmd(&["SET", "k", "v"])` -> `"+OK"`. For test setup, not a client.
    pub fn cmd(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect(self.addr()).expect("connect to redis-server");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set timeout");
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(req.as_bytes()).expect("write to redis");
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).expect("read from redis");
        String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
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
