//! One upstream instance and its live state (health, ejection, requests in flight).
//!
//! Instances are shared by `Arc` across config reloads and discovery refreshes, so
//! an instance that survives a change keeps its health verdict and its counters.
//!
//! Passive ejection backs off: the first ejection lasts `ejection_time`, each repeat
//! doubles it up to `max_ejection_time`. The doubling decays: every full
//! `ejection_time` the instance spends in service after an ejection ends takes one
//! doubling off, so an instance whose last ejection had `n` doublings and that then
//! stays in for `(n + 1) x ejection_time` starts over at `ejection_time`. A passing
//! active check ends an ejection at once (the back-off level stays).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use plugins::clock::monotonic_ms;

use super::policy::PassiveHealth;

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
    /// End of the current or last ejection (0: never ejected, or a clean record).
    ejected_until_ms: AtomicU64,
    /// Doublings of the last ejection time (0: the last lasted `ejection_time`).
    ejection_level: AtomicU32,
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
            ejection_level: AtomicU32::new(0),
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

    /// Doublings of the last ejection time (the back-off level, before decay).
    pub fn ejection_level(&self) -> u32 {
        self.ejection_level.load(Ordering::Relaxed)
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
                self.ejection_level.store(0, Ordering::Relaxed);
            }
            Some(ok)
        } else {
            None
        }
    }

    /// End a passive ejection now (a passing active check: the instance answers
    /// again). Returns true when it was ejected. The back-off level stays, so an
    /// instance that fails again at once sits out longer next time.
    pub fn end_ejection(&self, now_ms: u64) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until > now_ms
            && self
                .ejected_until_ms
                .compare_exchange(until, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Record a failed attempt (connect error, 502/503/504). Returns how long the
    /// instance is ejected for when this failure ejected it. Failures while it is
    /// ejected (requests sent before, or in panic mode) do not count: it is out already.
    pub fn report_failure(&self, passive: &PassiveHealth, now_ms: u64) -> Option<Duration> {
        let threshold = passive.consecutive_failures;
        if threshold == 0 || self.is_ejected(now_ms) {
            return None;
        }
        let n = self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        // one of concurrent failures at the threshold ejects: the one that resets the count
        if n < threshold
            || self
                .passive_failures
                .compare_exchange(n, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        let base_ms = u64::try_from(passive.ejection_time.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last_end = self.ejected_until_ms.load(Ordering::Relaxed);
        let level = if last_end == 0 {
            0
        } else {
            // a repeat: one doubling more than the last, less one per `ejection_time`
            // spent in service since it ended
            let quiet = now_ms.saturating_sub(last_end) / base_ms;
            let repeat = u64::from(self.ejection_level.load(Ordering::Relaxed)) + 1;
            u32::try_from(repeat.saturating_sub(quiet)).unwrap_or(MAX_LEVEL)
        };
        let level = level.min(MAX_LEVEL);
        let time = passive
            .ejection_time
            .saturating_mul(1 << level)
            .min(passive.max_ejection_time.max(passive.ejection_time));
        self.ejection_level.store(level, Ordering::Relaxed);
        let until = now_ms.saturating_add(u64::try_from(time.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until_ms.store(until.max(1), Ordering::Relaxed);
        Some(time)
    }

    /// Record a good response: the failure streak starts over.
    pub fn report_success(&self) {
        if self.passive_failures.load(Ordering::Relaxed) != 0 {
            self.passive_failures.store(0, Ordering::Relaxed);
        }
    }
}

/// Highest back-off level: 2^20 x any ejection time is past any sensible cap.
const MAX_LEVEL: u32 = 20;

/// Passive health that ejects on the first failure for `secs` (tests).
#[cfg(test)]
pub(crate) fn one_strike(secs: u64) -> PassiveHealth {
    PassiveHealth {
        consecutive_failures: 1,
        ejection_time: Duration::from_secs(secs),
        max_ejection_time: Duration::from_secs(secs),
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

    fn passive(failures: u32, base: u64, max: u64) -> PassiveHealth {
        PassiveHealth {
            consecutive_failures: failures,
            ejection_time: Duration::from_secs(base),
            max_ejection_time: Duration::from_secs(max),
        }
    }

    #[test]
    fn passive_ejection_after_threshold() {
        let i = inst();
        let p = passive(2, 60, 60);
        let now = monotonic_ms();
        assert_eq!(i.report_failure(&p, now), None);
        assert_eq!(i.report_failure(&p, now), Some(Duration::from_secs(60)));
        assert!(!i.is_available(now));
        assert!(i.is_ejected(now));
        // failures while ejected do not count towards another ejection
        assert_eq!(i.report_failure(&p, now), None);
        assert_eq!(i.report_failure(&p, now), None);
        assert_eq!(i.ejection_level(), 0);
    }

    #[test]
    fn success_resets_streak() {
        let i = inst();
        let p = passive(2, 60, 60);
        assert_eq!(i.report_failure(&p, 1), None);
        i.report_success();
        assert_eq!(i.report_failure(&p, 1), None);
        assert!(i.is_available(1));
    }

    #[test]
    fn repeat_ejections_double_up_to_the_cap_and_decay_in_service() {
        let i = inst();
        let p = passive(1, 10, 45);
        let s = Duration::from_secs;
        // each ejection is repeated the moment the last one ends
        let mut now = 1_000;
        let mut times = Vec::new();
        for _ in 0..4 {
            let t = i.report_failure(&p, now).unwrap();
            times.push(t);
            now += t.as_millis() as u64;
        }
        assert_eq!(times, [s(10), s(20), s(40), s(45)]);
        assert_eq!(i.ejection_level(), 3);
        // two ejection times in service: two doublings off the next one (level 4 - 2)
        now += 20_000;
        assert_eq!(i.report_failure(&p, now), Some(s(40)));
        now += 40_000;
        // long enough in service: start over
        now += 10 * 10_000;
        assert_eq!(i.report_failure(&p, now), Some(s(10)));
    }

    #[test]
    fn a_passing_check_ends_an_ejection_and_keeps_the_level() {
        let i = inst();
        let p = passive(1, 10, 300);
        assert!(i.report_failure(&p, 1_000).is_some());
        assert!(i.is_ejected(2_000));
        assert!(i.end_ejection(2_000));
        assert!(!i.is_ejected(2_000) && i.is_available(2_000));
        assert!(!i.end_ejection(2_000), "nothing left to end");
        // failing again at once: a repeat, twice as long
        assert_eq!(i.report_failure(&p, 2_000), Some(Duration::from_secs(20)));
        // a recovery from an unhealthy verdict is a clean record
        i.observe_check(false, 1, 1);
        i.observe_check(true, 1, 1);
        assert_eq!(i.ejection_level(), 0);
        assert_eq!(i.report_failure(&p, 3_000), Some(Duration::from_secs(10)));
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
