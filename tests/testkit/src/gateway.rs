//! The real `gateway` binary as a child process: its config in a temp dir, its
//! stdout and stderr in a log file the test can read, killed on `Drop`.
//!
//! Config text may use placeholders that the fixture fills in (the same values for
//! every rewrite): `$HTTP_PORT`, `$HTTPS_PORT`, `$ADMIN_PORT` (free ports) and
//! `$DIR` (the temp dir, e.g. for certificate files).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{free_port, http_get, wait_until};

/// A running gateway process.
pub struct GatewayProcess {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Port behind `$HTTP_PORT`.
    pub http_port: u16,
    /// Port behind `$HTTPS_PORT`.
    pub https_port: u16,
    /// Port behind `$ADMIN_PORT`.
    pub admin_port: u16,
    uses: Uses,
}

/// Which placeholders the config uses (what readiness waits for).
#[derive(Clone, Copy)]
struct Uses {
    http: bool,
    https: bool,
    admin: bool,
}

impl GatewayProcess {
    /// Write `yaml` to `gateway.yaml` in a temp dir, run `gateway run -c` on it and
    /// wait until it serves: admin `/health` answers (when the config uses `$ADMIN_PORT`)
    /// and the `$HTTP_PORT` / `$HTTPS_PORT` listeners accept. Panics with the log if
    /// it exits or is not up within 20 s.
    pub fn start(bin: impl AsRef<Path>, yaml: &str) -> Self {
        Self::start_with_files(bin, yaml, &[])
    }

    /// Like [`start`](Self::start), first writing extra files (`name`, contents) into
    /// the temp dir, e.g. certificates referenced as `$DIR/cert.pem`.
    pub fn start_with_files(bin: impl AsRef<Path>, yaml: &str, files: &[(&str, &[u8])]) -> Self {
        let mut gw = Self::launch_with_files(bin, yaml, files);
        gw.wait_ready();
        gw
    }

    /// Start the binary and return at once, without waiting for it to be ready: for
    /// what a process must withstand while it starts (a signal, say).
    pub fn launch(bin: impl AsRef<Path>, yaml: &str) -> Self {
        Self::launch_with_files(bin, yaml, &[])
    }

    fn launch_with_files(bin: impl AsRef<Path>, yaml: &str, files: &[(&str, &[u8])]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, data) in files {
            std::fs::write(dir.path().join(name), data).expect("write fixture file");
        }
        let mut gw = Self {
            bin: bin.as_ref().to_path_buf(),
            dir,
            child: None,
            http_port: free_port(),
            https_port: free_port(),
            admin_port: free_port(),
            uses: Uses {
                http: yaml.contains("$HTTP_PORT"),
                https: yaml.contains("$HTTPS_PORT"),
                admin: yaml.contains("$ADMIN_PORT"),
            },
        };
        std::fs::write(gw.config_path(), gw.fill(yaml)).expect("write config");
        gw.spawn_child();
        gw
    }

    fn spawn(&mut self) {
        self.spawn_child();
        self.wait_ready();
    }

    fn spawn_child(&mut self) {
        let log = File::create(self.log_path()).expect("create log file");
        let child = Command::new(&self.bin)
            .args(["run", "-c"])
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("GATEWAY_TEST_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    fn wait_ready(&mut self) {
        let ready = wait_until(Duration::from_secs(20), || {
            if let Some(status) = self.try_exit() {
                panic!(
                    "gateway exited during start ({status}); log:\n{}",
                    self.log()
                );
            }
            self.is_ready()
        });
        assert!(ready, "gateway not ready within 20 s; log:\n{}", self.log());
    }

    fn is_ready(&self) -> bool {
        let accepts = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        (!self.uses.admin || matches!(http_get(&self.admin_addr(), "/health"), Ok((200, _))))
            && (!self.uses.http || accepts(self.http_port))
            && (!self.uses.https || accepts(self.https_port))
    }

    /// Replace the placeholders in a config text with this process's values.
    pub fn fill(&self, yaml: &str) -> String {
        yaml.replace("$HTTP_PORT", &self.http_port.to_string())
            .replace("$HTTPS_PORT", &self.https_port.to_string())
            .replace("$ADMIN_PORT", &self.admin_port.to_string())
            .replace("$DIR", &self.dir.path().display().to_string())
    }

    /// Write a new config atomically (temp file + rename, as editors and
    /// ConfigMaps do). The gateway's file watch picks it up; nothing waits here.
    pub fn rewrite_config(&self, yaml: &str) {
        let tmp = self.dir.path().join(".gateway.yaml.tmp");
        std::fs::write(&tmp, self.fill(yaml)).expect("write temp config");
        std::fs::rename(&tmp, self.config_path()).expect("rename config into place");
    }

    /// Write a new config in place (truncate + write the same inode).
    pub fn rewrite_config_in_place(&self, yaml: &str) {
        std::fs::write(self.config_path(), self.fill(yaml)).expect("write config");
    }

    /// The config file the gateway runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// The temp dir (config, log, extra files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file stdout and stderr go to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// Everything the gateway has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Wait until the log contains `needle`; false after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// How many times `needle` occurs in the log so far.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// `http://127.0.0.1:$HTTP_PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// `https://localhost:$HTTPS_PORT{path}` (the [`SelfSigned`](crate::SelfSigned) name).
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https_port)
    }

    /// `http://127.0.0.1:$ADMIN_PORT{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// `127.0.0.1:$HTTP_PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// `127.0.0.1:$ADMIN_PORT`.
    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    /// The Prometheus text from admin `/metrics` (blocking GET).
    pub fn metrics(&self) -> String {
        match http_get(&self.admin_addr(), "/metrics") {
            Ok((200, body)) => body,
            other => panic!("GET /metrics failed: {other:?}"),
        }
    }

    /// Sum of every sample of `name` whose labels contain all of `labels`
    /// (e.g. `metric("gateway_config_reloads_total", &[("result", "failure")])`).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels)
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("gateway not running")
    }

    /// Send a signal such as `libc::SIGHUP` or `libc::SIGTERM`.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid() as i32;
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// The exit status if the process has ended.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Wait up to `timeout` for the process to end.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.try_exit();
            status.is_some()
        });
        status
    }

    /// Kill the process now and start it again with the current config file.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kill the process (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- gateway log ----\n{}\n---- end ----", self.log());
        }
    }
}

/// Sum the samples of metric `name` whose label set includes every `labels` pair.
pub(crate) fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// What `gateway check` printed.
#[derive(Debug, Clone)]
pub struct CheckOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `gateway check -c FILE` on `yaml` written to a temp dir (`$DIR` is filled in).
pub fn check_config(bin: impl AsRef<Path>, yaml: &str) -> CheckOutput {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    let text = yaml.replace("$DIR", &dir.path().display().to_string());
    std::fs::write(&path, text).expect("write config");
    check_file(bin, &path)
}

/// Run `gateway check -c PATH` on an existing file.
pub fn check_file(bin: impl AsRef<Path>, path: &Path) -> CheckOutput {
    let out = Command::new(bin.as_ref())
        .args(["check", "-c"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.as_ref().display()));
    CheckOutput {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn metric_sums_matching_series() {
        let text = "# HELP x\nx_total{result=\"success\"} 2\nx_total{result=\"failure\"} 3\ny 1\n";
        assert_eq!(metric_value(text, "x_total", &[("result", "failure")]), 3.0);
        assert_eq!(metric_value(text, "x_total", &[]), 5.0);
        assert_eq!(metric_value(text, "y", &[]), 1.0);
    }
}
