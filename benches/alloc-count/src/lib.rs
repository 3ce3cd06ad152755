//! A counting global allocator: wraps another allocator (mimalloc in the gateway
//! and the Pingora floor) and counts allocator calls and requested bytes, so the
//! load harness can report allocations per request.
//!
//! Only binaries built with their `count-allocations` feature use it; release
//! builds keep the bare allocator. The counters leave the process through a file:
//! [`report_to_env_file`] starts a thread that, while `ALLOC_COUNTS_FILE` names a
//! path, rewrites that file every [`REPORT_EVERY`] with one line
//! `allocations=N bytes=N frees=N` (written beside it, then renamed, so a reader
//! never sees half a line). The harness reads it before and after a round, once
//! the load has stopped and the file has caught up. No signals, no port, the same
//! for every binary.
//!
//! `allocations` counts `alloc`, `alloc_zeroed` and `realloc` calls; `bytes` the
//! sizes they asked for (a `realloc` counts its new size); `frees` the `dealloc`
//! calls. Counters are relaxed atomics: one uncontended atomic add per call.

#![deny(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The environment variable naming the counters file.
pub const ENV_FILE: &str = "ALLOC_COUNTS_FILE";

/// How often the counters file is rewritten.
pub const REPORT_EVERY: Duration = Duration::from_millis(25);

/// A global allocator that counts what it forwards to `A`.
pub struct Counting<A> {
    inner: A,
    allocations: AtomicU64,
    bytes: AtomicU64,
    frees: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub allocations: u64,
    pub bytes: u64,
    pub frees: u64,
}

impl<A> Counting<A> {
    pub const fn new(inner: A) -> Self {
        Self {
            inner,
            allocations: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            frees: AtomicU64::new(0),
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            allocations: self.allocations.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            frees: self.frees.load(Ordering::Relaxed),
        }
    }

    #[inline]
    fn count(&self, size: usize) {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `A`, itself a `GlobalAlloc`; the
// counting only touches atomics and never allocates.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size());
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { self.inner.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size());
        // SAFETY: as in `alloc`.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.frees.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as in `alloc`.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count(new_size);
        // SAFETY: as in `alloc`.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

impl Counts {
    /// The line written to the counters file.
    pub fn line(&self) -> String {
        format!(
            "allocations={} bytes={} frees={}\n",
            self.allocations, self.bytes, self.frees
        )
    }

    /// Parse a line written by [`Counts::line`].
    pub fn parse(text: &str) -> Option<Self> {
        let mut c = Counts::default();
        let mut seen = 0;
        for field in text.split_whitespace() {
            let (k, v) = field.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            match k {
                "allocations" => c.allocations = v,
                "bytes" => c.bytes = v,
                "frees" => c.frees = v,
                _ => continue,
            }
            seen += 1;
        }
        (seen == 3).then_some(c)
    }

    /// Read a counters file; `None` while it is missing or unreadable.
    pub fn read(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            allocations: self.allocations.saturating_sub(earlier.allocations),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            frees: self.frees.saturating_sub(earlier.frees),
        }
    }
}

/// When `ALLOC_COUNTS_FILE` is set, start the thread that keeps it current with
/// `alloc`'s counters. Returns the path, or why it could not start.
pub fn report_to_env_file<A: GlobalAlloc + Sync>(
    alloc: &'static Counting<A>,
) -> Option<Result<PathBuf, std::io::Error>> {
    let path = PathBuf::from(std::env::var_os(ENV_FILE)?);
    let tmp = {
        let mut name = path.clone().into_os_string();
        name.push(".tmp");
        PathBuf::from(name)
    };
    if let Err(e) = write_atomically(&path, &tmp, &alloc.counts()) {
        return Some(Err(e));
    }
    let spawned = std::thread::Builder::new()
        .name("alloc-count".into())
        .spawn({
            let path = path.clone();
            move || loop {
                std::thread::sleep(REPORT_EVERY);
                // a failed write leaves the last good line in place
                let _ = write_atomically(&path, &tmp, &alloc.counts());
            }
        });
    Some(spawned.map(|_| path))
}

fn write_atomically(path: &Path, tmp: &Path, counts: &Counts) -> std::io::Result<()> {
    // formatted on the stack: the reporter must not count itself
    let mut buf = [0u8; 96];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    writeln!(
        cur,
        "allocations={} bytes={} frees={}",
        counts.allocations, counts.bytes, counts.frees
    )?;
    let len = usize::try_from(cur.position()).unwrap_or(0);
    let mut f = std::fs::File::create(tmp)?;
    f.write_all(&buf[..len])?;
    drop(f);
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_through_their_line() {
        let c = Counts {
            allocations: 12,
            bytes: 3400,
            frees: 11,
        };
        assert_eq!(Counts::parse(&c.line()), Some(c));
        assert_eq!(Counts::parse("allocations=1 bytes=2"), None);
        assert_eq!(Counts::parse("garbage"), None);
        let later = Counts {
            allocations: 20,
            bytes: 4000,
            frees: 19,
        };
        assert_eq!(
            later.since(&c),
            Counts {
                allocations: 8,
                bytes: 600,
                frees: 8
            }
        );
    }

    #[test]
    fn the_wrapper_counts_what_it_forwards() {
        static A: Counting<std::alloc::System> = Counting::new(std::alloc::System);
        let layout = Layout::from_size_align(100, 8).expect("layout");
        // SAFETY: a fresh allocation of a non-zero layout, grown then freed with
        // the layout it has at each step.
        unsafe {
            let p = A.alloc(layout);
            assert!(!p.is_null());
            let p = A.realloc(p, layout, 300);
            assert!(!p.is_null());
            A.dealloc(p, Layout::from_size_align(300, 8).expect("layout"));
        }
        assert_eq!(
            A.counts(),
            Counts {
                allocations: 2,
                bytes: 400,
                frees: 1
            }
        );
    }
}
