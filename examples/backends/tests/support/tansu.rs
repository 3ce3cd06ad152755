//! A Kafka-protocol broker for the Kafka tests: `tansu` with in-memory storage on a
//! free loopback port, killed on drop.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `tansu` broker with in-memory storage, killed on drop.
pub struct Tansu {
    child: Child,
    port: u16,
}

impl Tansu {
    /// Start a broker, or `None` (after printing why) when `tansu` is not installed.
    pub fn start(test: &str) -> Option<Self> {
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("tansu").is_file()))
            .unwrap_or(false);
        if !on_path {
            println!(
                "SKIPPED {test}: no `tansu` Kafka broker on PATH \
                 (install: cargo install tansu --locked --features dynostore)"
            );
            return None;
        }
        let port = testkit::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let broker = Tansu { child, port };
        let up = testkit::wait_until(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "tansu did not listen on {port} within 20 s");
        Some(broker)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
