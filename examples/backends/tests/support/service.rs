//! One sample service as a child process on a free port: started with its
//! environment, health-checked, stopped with SIGTERM (so it deregisters), restarted
//! on the same port with the same data.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{free_port, http_get, wait_until};

/// One sample service process.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    bin: &'static str,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    pub fn start(
        name: &'static str,
        bin: &'static str,
        env: Vec<(String, String)>,
        dir: &Path,
    ) -> Self {
        let mut s = Self {
            name,
            port: free_port(),
            bin,
            env,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("service log file");
        let child = Command::new(self.bin)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PORT", self.port.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin));
        self.child = Some(child);
        let addr = self.addr();
        let up = wait_until(Duration::from_secs(30), || {
            matches!(http_get(&addr, "/health"), Ok((200, _)))
        });
        assert!(
            up,
            "{} not healthy within 30 s; log:\n{}",
            self.name,
            self.log()
        );
    }

    /// SIGTERM (graceful: deregisters), then wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(child.id());
            let exited = wait_until(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if !exited {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Stop and start again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Start again after [`stop`](Self::stop).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Send SIGTERM, as a process manager would.
fn terminate(pid: u32) {
    // SAFETY: plain kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
