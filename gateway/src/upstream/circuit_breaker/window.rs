//! The circuit breaker's rolling window: call, failure and slow-call counts over the
//! last `window`, kept in a ring of time buckets with atomic counters (no lock, no
//! allocation per call).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of the rolling window; a call lands in the bucket of its end time, and
/// the window is the last `BUCKETS` buckets (the current one partly filled).
const BUCKETS: usize = 10;
const EMPTY: u64 = u64::MAX;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Totals {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

struct Bucket {
    /// Which bucket of time this slot holds (`now_ms / bucket_ms`), or `EMPTY`.
    epoch: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

/// The rolling window: a ring of buckets, each recycled by the first call of a new
/// period (a call counted in the instant its bucket is recycled may be lost; the
/// ratios do not need more precision than that).
pub(super) struct Window {
    buckets: [Bucket; BUCKETS],
    bucket_ms: u64,
}

impl Window {
    pub(super) fn new(window: Duration) -> Self {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Window {
            buckets: std::array::from_fn(|_| Bucket {
                epoch: AtomicU64::new(EMPTY),
                calls: AtomicU32::new(0),
                failures: AtomicU32::new(0),
                slow: AtomicU32::new(0),
            }),
            bucket_ms: (ms / BUCKETS as u64).max(1),
        }
    }

    pub(super) fn add(&self, now_ms: u64, failed: bool, slow: bool) {
        let epoch = now_ms / self.bucket_ms;
        let b = &self.buckets[(epoch % BUCKETS as u64) as usize];
        let seen = b.epoch.load(Ordering::Acquire);
        if seen != epoch {
            if seen != EMPTY && seen > epoch {
                return; // this call ended a whole window ago
            }
            if b.epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                b.calls.store(0, Ordering::Relaxed);
                b.failures.store(0, Ordering::Relaxed);
                b.slow.store(0, Ordering::Relaxed);
            }
        }
        b.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            b.failures.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            b.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn totals(&self, now_ms: u64) -> Totals {
        let epoch = now_ms / self.bucket_ms;
        let mut t = Totals::default();
        for b in &self.buckets {
            let e = b.epoch.load(Ordering::Acquire);
            if e != EMPTY && e <= epoch && epoch - e < BUCKETS as u64 {
                t.calls = t.calls.saturating_add(b.calls.load(Ordering::Relaxed));
                t.failures = t
                    .failures
                    .saturating_add(b.failures.load(Ordering::Relaxed));
                t.slow = t.slow.saturating_add(b.slow.load(Ordering::Relaxed));
            }
        }
        t
    }

    pub(super) fn clear(&self) {
        for b in &self.buckets {
            b.epoch.store(EMPTY, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_old_buckets() {
        let w = Window::new(Duration::from_secs(10)); // 1 s buckets
        w.add(5_000, true, false);
        w.add(5_500, false, true);
        w.add(9_000, false, false);
        let t = w.totals(9_100);
        assert_eq!((t.calls, t.failures, t.slow), (3, 1, 1));
        // 5_000's bucket leaves the window at 15_000
        let t = w.totals(15_000);
        assert_eq!((t.calls, t.failures), (1, 0));
        // a slot is recycled by its next period
        w.add(15_000, true, false);
        let t = w.totals(15_000);
        assert_eq!((t.calls, t.failures), (2, 1));
        w.clear();
        assert_eq!(w.totals(15_000), Totals::default());
    }
}
