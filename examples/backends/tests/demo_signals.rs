//! The demo leaves no orphans: whatever stops it (SIGINT, SIGTERM, SIGHUP, SIGQUIT, or
//! SIGKILL, which it cannot catch), Redis, member, product, order and the gateway stop
//! too and free their ports. The real demo binary on free ports, real children.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use testkit::{free_port, http_get, libc, wait_until};

/// One demo at a time: each is five processes, and these tests are about them.
static ONE_DEMO: Mutex<()> = Mutex::new(());

struct Demo {
    child: Child,
    ports: Vec<u16>,
    log: PathBuf,
    _data: tempfile::TempDir,
}

impl Demo {
    fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let names = [
            "DEMO_GATEWAY_PORT",
            "DEMO_ADMIN_PORT",
            "DEMO_MEMBER_PORT",
            "DEMO_PRODUCT_PORT",
            "DEMO_ORDER_PORT",
            "DEMO_REDIS_PORT",
        ];
        let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let log = data.path().join("demo.out");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_demo"))
            .arg("--no-build")
            .envs(names.iter().zip(&ports).map(|(k, p)| (*k, p.to_string())))
            .env("DEMO_DATA_DIR", data.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let demo = Self {
            child,
            ports,
            log,
            _data: data,
        };
        let admin = format!("127.0.0.1:{}", demo.ports[1]);
        let up = wait_until(Duration::from_secs(90), || {
            matches!(http_get(&admin, "/ready"), Ok((200, _)))
                && demo.output().contains("demo is up")
        });
        assert!(up, "the demo did not come up:\n{}", demo.output());
        demo
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if let Ok(dir) = std::fs::read_dir(self._data.path().join("logs")) {
            for e in dir.flatten() {
                let body = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = body.lines().rev().take(10).collect();
                text += &format!("\n--- {}\n", e.path().display());
                text += &tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            }
        }
        text
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process as seen in `/proc/PID/stat`: name, state, parent, start time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    pid: u32,
    name: String,
    start: u64,
}

fn stat(pid: u32) -> Option<(String, char, u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 2..].split_whitespace().collect();
    // After the name: state (field 3), ppid (4), ..., starttime (22).
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((name, state, ppid, start))
}

fn children_of(parent: u32) -> Vec<Proc> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some((name, _, ppid, start)) = stat(pid) {
            if ppid == parent {
                out.push(Proc { pid, name, start });
            }
        }
    }
    out.sort();
    out
}

/// Still running: same pid, same start time (not a reused pid), not a zombie.
/// Alive, or still tearing down: a killed multi-threaded process shows its leader as a
/// zombie while its other threads exit, and those still hold its sockets.
fn running(p: &Proc) -> bool {
    let threads = || std::fs::read_dir(format!("/proc/{}/task", p.pid)).map_or(0, |d| d.count());
    matches!(stat(p.pid), Some((_, state, _, start)) if start == p.start && (state != 'Z' || threads() > 1))
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn stop_with(sig: libc::c_int) {
    let _one = ONE_DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let mut demo = Demo::start();
    let kids = children_of(demo.pid());
    let names: BTreeSet<&str> = kids.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["gateway", "member", "order", "product", "redis-server"]),
        "{kids:?}"
    );

    // SAFETY: kill(2) on the demo we started and have not reaped.
    assert_eq!(unsafe { libc::kill(demo.pid() as libc::pid_t, sig) }, 0);
    let mut status = None;
    let exited = wait_until(Duration::from_secs(60), || {
        status = demo.child.try_wait().ok().flatten();
        status.is_some()
    });
    assert!(
        exited,
        "the demo did not exit on signal {sig}:\n{}",
        demo.output()
    );
    if sig != libc::SIGKILL {
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(128 + sig),
            "exit status after signal {sig}:\n{}",
            demo.output()
        );
    }

    let gone = wait_until(Duration::from_secs(20), || !kids.iter().any(running));
    let left: Vec<&Proc> = kids.iter().filter(|p| running(p)).collect();
    // Clean up what a failure left behind before asserting.
    for p in &left {
        // SAFETY: kill(2) on a process this test's demo started (pid and start time checked).
        unsafe {
            libc::kill(p.pid as libc::pid_t, libc::SIGKILL);
        }
    }
    assert!(
        gone,
        "orphans after signal {sig}: {left:?}\n{}",
        demo.output()
    );
    let busy: Vec<u16> = demo
        .ports
        .iter()
        .copied()
        .filter(|p| !port_free(*p))
        .collect();
    assert!(
        busy.is_empty(),
        "ports still held after signal {sig}: {busy:?}"
    );
}

#[test]
fn sigint_stops_every_child() {
    stop_with(libc::SIGINT);
}

#[test]
fn sigterm_stops_every_child() {
    stop_with(libc::SIGTERM);
}

#[test]
fn sighup_stops_every_child() {
    stop_with(libc::SIGHUP);
}

#[test]
fn sigquit_stops_every_child() {
    stop_with(libc::SIGQUIT);
}

/// SIGKILL runs no code in the demo: the kernel's parent-death signal does the work.
#[test]
fn sigkill_of_the_demo_kills_every_child() {
    stop_with(libc::SIGKILL);
}
