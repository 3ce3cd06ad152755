//! A real Prometheus server (Debian package `prometheus`) on a free loopback port,
//! with its own config and TSDB in a temp dir, scraping the targets a test names
//! every second and evaluating its rule files every second: for tests that check
//! dashboards and alert rules against what the gateway really exports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, http_get, wait_until};

/// A `prometheus` process owned by the test, killed on `Drop` (its data dir goes too).
pub struct PrometheusServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrometheusServer {
    /// Start Prometheus scraping `metrics_path` on each of `targets` (`ip:port`) as job
    /// `job`, every second, with `rule_files` evaluated every second; wait until it is
    /// ready.
    ///
    /// Panics with the package to install when `prometheus` is not installed.
    pub fn start(
        job: &str,
        targets: &[String],
        metrics_path: &str,
        rule_files: &[PathBuf],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|r| format!("'{}'", r.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{rules}]\n\
             scrape_configs:\n  - job_name: '{job}'\n    metrics_path: '{metrics_path}'\n    \
             static_configs:\n      - targets: [{targets}]\n",
            rules = rules.join(", "),
            targets = targets.join(", "),
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write prometheus.yml");
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The file Prometheus logs to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    /// Everything Prometheus has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let bin = binary();
        let log = std::fs::File::create(self.log_path()).expect("create log file");
        let path = |p: &Path| p.display().to_string();
        let child = Command::new(&bin)
            .arg(format!(
                "--config.file={}",
                path(&self.dir.path().join("prometheus.yml"))
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                path(&self.dir.path().join("data"))
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        let ready = wait_until(Duration::from_secs(20), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "prometheus exited during start ({status}); log:\n{}",
                    self.log()
                );
            }
            matches!(http_get(&addr, "/-/ready"), Ok((200, _)))
        });
        assert!(
            ready,
            "prometheus not ready within 20 s; log:\n{}",
            self.log()
        );
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `prometheus` from `PATH`, else Debian's `/usr/bin/prometheus`; a clear failure
/// naming the package when neither exists.
fn binary() -> String {
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("prometheus").is_file())
    });
    if on_path {
        return "prometheus".to_string();
    }
    if Path::new("/usr/bin/prometheus").is_file() {
        return "/usr/bin/prometheus".to_string();
    }
    panic!("prometheus is not installed; install it with `apt-get install prometheus`")
}

/// `promtool` next to the `prometheus` binary (the same Debian package).
pub fn promtool() -> String {
    let bin = binary();
    match Path::new(&bin).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("promtool").display().to_string(),
        _ => "promtool".to_string(),
    }
}
