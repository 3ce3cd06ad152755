//! One upstream instance and its live state (health, ejection, requests in flight).
//!
//! Instances are shared by `Arc` across config reloads and discovery refreshes, so
//! an instance that survives a change keeps its health verdict and its counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use plugins::clock::monotonic_ms;

/// A resolved instance of a service.
#[derive(Debug)]
pub struct Instance {
    /// `ip:port`, the instance's identity in metrics and the admin view.
    pub id: Arc<str>,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Verdict of the active health check (instances start healthy).
    healthy: AtomicBool,
    hc_streak: AtomicU32,
    passive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    inflight: AtomicUsize,
    requests: AtomicU64,
    /// Hash of the id, mixed with request keys for rendezvous hashing.
    pub(crate) id_hash: u64,
}

impl Instance {
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        let id: Arc<str> = Arc::from(addr.to_string());
        let id_hash = super::hash::hash_bytes(id.as_bytes());
        Self {
            id,
            addr,
            weight: weight.max(1),
            healthy: AtomicBool::new(true),
            hc_streak: AtomicU32::new(0),
            passive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            id_hash,
        }
    }

    /// Healthy by the active check and not passively ejected right now.
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Count a request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }

    /// Feed one active-check result; returns `Some(new_state)` when the verdict flips.
    ///
    /// A streak counts consecutive results that disagree with the current verdict:
    /// `rise` successes bring an unhealthy instance back, `fall` failures take a
    /// healthy one out.
    pub fn observe_check(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        let healthy = self.healthy.load(Ordering::Relaxed);
        if ok == healthy {
            self.hc_streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.hc_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if ok { rise } else { fall };
        if streak >= needed.max(1) {
            self.hc_streak.store(0, Ordering::Relaxed);
            self.healthy.store(ok, Ordering::Relaxed);
            if ok {
                // a recovered instance starts with a clean passive record
                self.passive_failures.store(0, Ordering::Relaxed);
                self.ejected_until_ms.store(0, Ordering::Relaxed);
            }
            Some(ok)
        } else {
            None
        }
    }

    /// Record a failed request (connect error, 502/503/504). Returns true when
    /// this failure ejected the instance.
    pub fn report_failure(&self, threshold: u32, ejection: Duration) -> bool {
        if threshold == 0 {
            return false;
        }
        let n = self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= threshold {
            self.passive_failures.store(0, Ordering::Relaxed);
            let until = monotonic_ms() + ejection.as_millis() as u64;
            self.ejected_until_ms.store(until, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Record a good response: the failure streak starts over.
    pub fn report_success(&self) {
        if self.passive_failures.load(Ordering::Relaxed) != 0 {
            self.passive_failures.store(0, Ordering::Relaxed);
        }
    }
}

/// Holds one request in flight on an instance (for least-connections and P2C).
#[derive(Debug)]
pub struct InflightGuard(Arc<Instance>);

impl InflightGuard {
    pub fn instance(&self) -> &Arc<Instance> {
        &self.0
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst() -> Instance {
        Instance::new("127.0.0.1:1".parse().unwrap(), 1)
    }

    #[test]
    fn rise_and_fall_need_streaks() {
        let i = inst();
        assert_eq!(i.observe_check(false, 2, 3), None);
        assert_eq!(i.observe_check(false, 2, 3), None);
        assert_eq!(i.observe_check(true, 2, 3), None); // streak broken
        assert_eq!(i.observe_check(false, 2, 3), None);
        assert_eq!(i.observe_check(false, 2, 3), None);
        assert_eq!(i.observe_check(false, 2, 3), Some(false));
        assert!(!i.is_available(monotonic_ms()));
        assert_eq!(i.observe_check(true, 2, 3), None);
        assert_eq!(i.observe_check(true, 2, 3), Some(true));
        assert!(i.is_available(monotonic_ms()));
    }

    #[test]
    fn passive_ejection_after_threshold() {
        let i = inst();
        assert!(!i.report_failure(2, Duration::from_secs(60)));
        assert!(i.report_failure(2, Duration::from_secs(60)));
        assert!(!i.is_available(monotonic_ms()));
        assert!(i.is_ejected(monotonic_ms()));
    }

    #[test]
    fn success_resets_streak() {
        let i = inst();
        assert!(!i.report_failure(2, Duration::from_secs(60)));
        i.report_success();
        assert!(!i.report_failure(2, Duration::from_secs(60)));
        assert!(i.is_available(monotonic_ms()));
    }

    #[test]
    fn guard_counts_inflight() {
        let i = Arc::new(inst());
        let g = i.begin();
        assert_eq!(i.inflight(), 1);
        drop(g);
        assert_eq!(i.inflight(), 0);
        assert_eq!(i.requests(), 1);
    }
}
