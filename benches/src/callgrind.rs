//! Instructions per request (`loadtest --instructions`): the Rust targets (the floor,
//! the gateway, the pipeline) run under `valgrind --tool=callgrind` with
//! instrumentation off. Each measured round switches it on, drives the load, dumps
//! the counts and switches it off again; the instructions of every thread of the
//! target in that dump, divided by the round's requests, is the figure.
//!
//! Instructions are counted, not timed, so the figure holds on a busy or shared
//! machine where CPU time per request moves by several percent between runs. What it
//! does not see: the kernel's share of a request (about half of a small request on
//! loopback, nearly the same for every target), cache misses and system call cost.
//! Under valgrind a target runs tens of times slower, so its req/s, latency and CPU
//! time in the same run are not comparable with the others'.
//!
//! Copies and fills: glibc copies a block of a few KiB or more with one `rep movsb`
//! (`rep stosb` to fill), which the CPU runs at tens of bytes per cycle but callgrind
//! counts as one instruction per byte. The engine copies each request's ~15 KiB
//! future that way, so that count made a quarter of the floor's figure out of what
//! is a few hundred cycles. The targets run with glibc's thresholds for those
//! instructions raised ([`GLIBC_TUNABLES`]): every copy takes the vector loop, whose
//! count follows its cost.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// valgrind and `callgrind_control` are on the PATH.
pub fn check_installed() -> Result<(), String> {
    for tool in ["valgrind", "callgrind_control"] {
        if crate::procs::which(tool).is_none() {
            return Err(format!(
                "{tool} is not installed (Debian: apt-get install valgrind)"
            ));
        }
    }
    Ok(())
}

/// glibc tunables for the counted targets: no copy or fill by `rep movsb`/`rep stosb`
/// (see the module's text); ignored by a libc or CPU without them.
pub const GLIBC_TUNABLES: &str =
    "glibc.cpu.x86_rep_movsb_threshold=0x40000000:glibc.cpu.x86_rep_stosb_threshold=0x40000000";

/// `cmd` under callgrind with instrumentation off; its dumps are written as
/// `<prefix>.<pid>.<part>-<thread>`.
pub fn wrap(cmd: &Command, prefix: &Path) -> Command {
    let mut w = Command::new("valgrind");
    w.args([
        "--tool=callgrind",
        "--instr-atstart=no",
        "--separate-threads=yes",
    ])
    .arg(format!("--callgrind-out-file={}.%p", prefix.display()))
    .arg(cmd.get_program())
    .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => w.env(key, v),
            None => w.env_remove(key),
        };
    }
    // after the command's own: a tunable the caller set for another reason is kept,
    // one it removed from the command stays removed
    let own = match cmd.get_envs().find(|(k, _)| *k == "GLIBC_TUNABLES") {
        Some((_, value)) => value.map(std::ffi::OsStr::to_os_string),
        None => std::env::var_os("GLIBC_TUNABLES"),
    };
    let mut tunables = std::ffi::OsString::from(GLIBC_TUNABLES);
    if let Some(own) = own.filter(|o| !o.is_empty()) {
        tunables = own;
        tunables.push(":");
        tunables.push(GLIBC_TUNABLES);
    }
    w.env("GLIBC_TUNABLES", tunables);
    if let Some(dir) = cmd.get_current_dir() {
        w.current_dir(dir);
    }
    w
}

/// Switches counting on and off in one target and reads what it counted.
#[derive(Debug, Clone)]
pub struct Counter {
    pid: u32,
    dir: PathBuf,
    /// File names of this target's dumps start with this.
    stem: String,
}

impl Counter {
    /// The target `pid` started by [`wrap`] with `prefix`.
    pub fn new(pid: u32, prefix: &Path) -> Self {
        let dir = prefix.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = prefix
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Counter {
            pid,
            dir,
            stem: format!("{name}.{pid}."),
        }
    }

    /// Start counting.
    pub fn start(&self) -> Result<(), String> {
        self.control(&["-i", "on"])
    }

    /// Stop counting: the instructions counted since [`Counter::start`], over every
    /// thread.
    pub fn stop(&self) -> Result<u64, String> {
        let before = self.dumps();
        self.control(&["-d"])?;
        let off = self.control(&["-i", "off"]);
        // the dump is written by the target itself, between two of its basic blocks
        let deadline = Instant::now() + Duration::from_secs(30);
        let fresh = loop {
            let fresh: Vec<PathBuf> = self.dumps().difference(&before).cloned().collect();
            if !fresh.is_empty() || Instant::now() >= deadline {
                break fresh;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        off?;
        if fresh.is_empty() {
            return Err(format!("callgrind wrote no dump for pid {}", self.pid));
        }
        // each thread's file is complete once the dump command returned
        let mut total = 0u64;
        for path in &fresh {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            total += totals(&text).ok_or_else(|| format!("{}: no totals line", path.display()))?;
        }
        Ok(total)
    }

    fn dumps(&self) -> HashSet<PathBuf> {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&self.stem))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn control(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("callgrind_control")
            .args(args)
            .arg(self.pid.to_string())
            .output()
            .map_err(|e| format!("cannot run callgrind_control: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "callgrind_control {} {}: {}",
                args.join(" "),
                self.pid,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// The instruction count of one callgrind dump (its `totals:` or `summary:` line).
fn totals(dump: &str) -> Option<u64> {
    dump.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_read_from_either_line() {
        assert_eq!(
            totals("events: Ir\nfn=x\n1 2\ntotals: 12345\n"),
            Some(12345)
        );
        assert_eq!(totals("events: Ir\nsummary: 99\n"), Some(99));
        assert_eq!(totals("events: Ir\n"), None);
        assert_eq!(totals("totals: lots\n"), None);
    }

    #[test]
    fn the_wrapped_command_keeps_program_arguments_and_environment() {
        let mut cmd = Command::new("/bin/gateway");
        cmd.args(["run", "-c", "g.yaml"]).env("RUST_LOG", "warn");
        let w = wrap(&cmd, Path::new("/tmp/x/gateway.cg"));
        assert_eq!(w.get_program(), "valgrind");
        let args: Vec<_> = w
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--tool=callgrind",
                "--instr-atstart=no",
                "--separate-threads=yes",
                "--callgrind-out-file=/tmp/x/gateway.cg.%p",
                "/bin/gateway",
                "run",
                "-c",
                "g.yaml"
            ]
        );
        assert!(w
            .get_envs()
            .any(|(k, v)| k == "RUST_LOG" && v == Some("warn".as_ref())));
        let tunables = env(&w, "GLIBC_TUNABLES");
        assert!(tunables.ends_with(GLIBC_TUNABLES), "{tunables}");
    }

    #[test]
    fn a_tunable_of_the_command_is_kept_before_the_copy_thresholds() {
        let mut cmd = Command::new("/bin/gateway");
        cmd.env("GLIBC_TUNABLES", "glibc.malloc.arena_max=1");
        let w = wrap(&cmd, Path::new("/tmp/x/gateway.cg"));
        assert_eq!(
            env(&w, "GLIBC_TUNABLES"),
            format!("glibc.malloc.arena_max=1:{GLIBC_TUNABLES}")
        );
    }

    fn env(cmd: &Command, key: &str) -> String {
        cmd.get_envs()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}
