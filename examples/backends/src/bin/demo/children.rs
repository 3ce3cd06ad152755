//! The demo's child processes: started so they can never outlive it, and stopped in
//! order (services, then the gateway, then Redis), gracefully, then killed after a
//! bound.
//!
//! Two ways a child goes down with the demo:
//! - the demo stops on any signal in [`super::signals::STOPPING`] and runs
//!   [`stop_all`] (SIGTERM, wait, SIGKILL);
//! - on Linux every child asks the kernel for `PR_SET_PDEATHSIG = SIGKILL`, so it dies
//!   even when the demo is SIGKILLed or crashes and runs no code at all. The kernel
//!   sends it when the *thread* that forked the child exits: every child is spawned
//!   from the main thread, which lives as long as the process.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::signals;

/// How long a child gets between SIGTERM and SIGKILL.
pub const STOP_BOUND: Duration = Duration::from_secs(10);

pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

/// Print a line; never panics (after SIGHUP the terminal may be gone, and a failed
/// `println!` would panic before the children are stopped).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use say;

/// Make `cmd`'s process die with the demo (see the module doc).
pub fn die_with_demo(cmd: &mut Command) {
    let demo = std::process::id();
    // SAFETY: the closure runs between fork and exec and only calls prctl(2) and
    // getppid(2), both async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The demo may have died between fork and prctl: then no signal
                // would ever come, so do not start at all.
                if libc::getppid() as u32 != demo {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            #[cfg(not(target_os = "linux"))]
            let _ = demo;
            Ok(())
        });
    }
}

/// Start `cmd` as the child `name`, its output in `<logs>/<name>.log`.
pub fn spawn(name: &str, mut cmd: Command, logs: &Path) -> Result<Proc, String> {
    let log = logs.join(format!("{name}.log"));
    let file = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    die_with_demo(&mut cmd);
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

/// SIGTERM the services first (they deregister from the still running gateway), then
/// the gateway, then Redis if the demo started it; SIGKILL what is still running after
/// [`STOP_BOUND`], or at once when another signal arrives while waiting.
pub fn stop_all(procs: &mut Vec<Proc>) {
    let rank = |p: &Proc| match p.name.as_str() {
        "redis" => 2,
        "gateway" => 1,
        _ => 0,
    };
    let signals_at_start = signals::count();
    for stage in 0..=2 {
        let (group, rest): (Vec<Proc>, Vec<Proc>) = procs.drain(..).partition(|p| rank(p) == stage);
        *procs = rest;
        for p in &group {
            terminate(&p.child);
        }
        let deadline = Instant::now() + STOP_BOUND;
        for mut p in group {
            while Instant::now() < deadline
                && signals::count() == signals_at_start
                && !matches!(p.child.try_wait(), Ok(Some(_)))
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
            say!("stopped {}", p.name);
        }
    }
}

fn terminate(child: &Child) {
    // SAFETY: kill(2) on a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// Wait for `child` (e.g. cargo) to finish; on a stopping signal stop it and say so.
pub fn wait_interruptible(child: &mut Child) -> Result<std::process::ExitStatus, String> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if let Some(sig) = signals::received() {
            terminate(child);
            let deadline = Instant::now() + STOP_BOUND;
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("stopped by {}", signals::name(sig)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
