//! The signals that stop the demo: SIGINT (Ctrl-C), SIGTERM (`kill`), SIGHUP (the
//! terminal closed) and SIGQUIT (Ctrl-\). Each is caught and recorded, never fatal, so
//! the demo always gets to stop its children; the supervising loops poll
//! [`received`]. A second signal while stopping cuts the graceful wait short.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// Every signal whose default action would end the demo and orphan its children.
pub const STOPPING: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

static LAST: AtomicI32 = AtomicI32::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Only atomic stores: async-signal-safe.
extern "C" fn record(sig: libc::c_int) {
    LAST.store(sig, Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Catch every signal in [`STOPPING`]. Call first thing in `main`, before any child
/// is started, so there is no moment in which a signal kills the demo alone.
pub fn install() -> Result<(), String> {
    for sig in STOPPING {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the
        // handler only does atomic stores.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(format!(
                "cannot catch {}: {}",
                name(sig),
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// The last stopping signal received, if any.
pub fn received() -> Option<libc::c_int> {
    match LAST.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// How many stopping signals arrived so far.
pub fn count() -> usize {
    COUNT.load(Ordering::SeqCst)
}

pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        _ => "a signal",
    }
}
