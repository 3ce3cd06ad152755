//! `scope: cluster` (request_filter stage, inside the rate-limit plugin): one budget
//! per key shared by every gateway through Redis, spent from local leases.
//!
//! A request first spends a token this process leased earlier (no I/O). Without
//! one, it runs the GCRA script ([`super::gcra::SCRIPT`]) once, bounded by
//! `rate_limits.timeout`, taking a lease of tokens sized by how the key's last
//! lease was used (see `Lease::want`); a refusal is remembered until the next
//! token is due, and while a call for a spent budget is under way the key's other
//! requests are refused here, so a flood costs about one call per token earned. After a Redis
//! failure the limiter stops asking for [`ERROR_BACKOFF`] (the route's
//! `on_redis_error` decides meanwhile) and then tries again: no restart is needed
//! when Redis is back.
//!
//! Error bound: leased tokens are counted in Redis when taken and dropped unspent
//! [`super::gcra::LEASE_TTL`] later, so an admission is at most that late against
//! the budget. Over any window of `t` seconds all gateways together admit at most
//! `burst + N·(t + 0.05)` requests (N per second), where one process alone admits
//! `burst + N·t`: at most 5 % of a second's budget more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::redis_link::{RedisConn, RedisTarget};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::gcra::{Gcra, LEASE_TTL, SCRIPT};
use crate::auth::metrics::METRICS;
use crate::{ConfigIssue, Dur};

/// The top-level `rate_limits:` section (what `scope: cluster` limits share).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// `redis://[:password@]host:port/db` (or `rediss://` for TLS).
    pub redis_url: String,
    /// Longest a request waits for Redis before its route's `on_redis_error` applies.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_timeout() -> Dur {
    Dur(Duration::from_millis(50))
}

/// Prefix of every budget key: `gateway:rl:{<route>:<key hash>}`.
pub const KEY_PREFIX: &str = "gateway:rl:";

/// After a failed call, Redis is left alone this long (no request waits on a
/// Redis that just failed); the next request after it tries again.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// The compiled section: one lazy, self-reconnecting connection shared by every
/// cluster limiter of a config (kept across reloads while the section is unchanged).
pub struct RateLimitStore {
    config: RateLimitsConfig,
    conn: RedisConn,
    script: redis::Script,
    /// Shared by every limiter of the section, so one route seeing Redis answer
    /// again resumes every route at once.
    health: Mutex<Health>,
}

/// Whether Redis answered lately.
#[derive(Debug, Default)]
struct Health {
    /// Redis is not asked before this (set after a failure).
    retry_at: Option<Instant>,
    /// Failing since the last answer (the outage and the recovery are logged once).
    down: bool,
}

impl RateLimitStore {
    /// Build from config, or return `previous` when the section is unchanged.
    /// Call with `rt` entered or not: the connection is built lazily inside it.
    pub fn compile(
        cfg: &RateLimitsConfig,
        previous: Option<&Arc<RateLimitStore>>,
        rt: &tokio::runtime::Handle,
    ) -> Result<Arc<RateLimitStore>, Vec<ConfigIssue>> {
        if let Some(p) = previous.filter(|p| p.config == *cfg) {
            return Ok(p.clone());
        }
        let path = "rate_limits";
        let mut issues = Vec::new();
        let target = RedisTarget::parse(&cfg.redis_url)
            .map_err(|e| issues.push(ConfigIssue::new(format!("{path}.redis_url"), e)))
            .ok();
        let timeout = cfg.timeout.get();
        if timeout.is_zero() || timeout > Duration::from_secs(1) {
            issues.push(ConfigIssue::new(
                format!("{path}.timeout"),
                "must be above 0s and at most 1s (requests wait this long for Redis)",
            ));
        }
        let (Some(target), true) = (target, issues.is_empty()) else {
            return Err(issues);
        };
        let _enter = rt.enter();
        let conn = target.connection(timeout).map_err(|e| {
            vec![ConfigIssue::new(
                format!("{path}.redis_url"),
                format!("cannot set up the Redis connection: {}", e.category()),
            )]
        })?;
        Ok(Arc::new(RateLimitStore {
            config: cfg.clone(),
            conn,
            script: redis::Script::new(SCRIPT),
            health: Mutex::new(Health::default()),
        }))
    }

    fn timeout(&self) -> Duration {
        self.config.timeout.get()
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may be made now (no recent failure).
    fn may_ask(&self, now: Instant) -> bool {
        self.health().retry_at.is_none_or(|at| now >= at)
    }

    fn failed(&self, why: &str) {
        METRICS
            .redis_errors
            .with_label_values(&["rate_limit"])
            .inc();
        let mut h = self.health();
        h.retry_at = Some(Instant::now() + ERROR_BACKOFF);
        if !h.down {
            h.down = true;
            tracing::warn!(error = %why, "cluster rate limits: Redis failed; routes apply their on_redis_error until it answers");
        }
    }

    fn answered(&self) {
        let mut h = self.health();
        h.retry_at = None;
        if h.down {
            h.down = false;
            tracing::info!("cluster rate limits: Redis answers again");
        }
    }
}

/// What the cluster budget says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; about `remaining` tokens left (Redis's count at the last call plus
    /// this process's lease, at most the burst), full again after `reset`.
    Allowed { remaining: u64, reset: Duration },
    /// Refused; the next token is free after `retry`, the budget full after `reset`.
    Refused { retry: Duration, reset: Duration },
    /// Redis did not answer in time (or failed): the route's policy decides.
    Unavailable,
}

/// This process's view of one key's budget.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Leased tokens not spent yet.
    tokens: u64,
    /// Tokens granted since the lease began (spent: `taken - tokens`).
    taken: u64,
    /// The lease's tokens are dropped at this moment.
    expires: Instant,
    /// Tokens the next call asks for: starts at 1, doubles while leases are spent
    /// in time (up to the limiter's lease size), falls to what was spent when one
    /// expires with tokens left, so a key used by few requests wastes little.
    want: u64,
    /// Calls to Redis under way for this key; while one is, others ask for 1 token
    /// (a burst of concurrent misses does not take a lease each).
    in_flight: u32,
    /// Redis's free tokens when the lease was taken.
    remaining: u64,
    /// When the budget is full again (as of the last call).
    full_at: Instant,
    /// Refused by Redis until then (no token is free anywhere before it).
    refused_until: Option<Instant>,
    /// Redis had no token left at the last answer: while a call is under way for
    /// the one token due since, other misses are refused here instead of calling.
    exhausted: bool,
}

impl Lease {
    fn empty(now: Instant) -> Self {
        Lease {
            tokens: 0,
            taken: 0,
            expires: now,
            want: 1,
            in_flight: 0,
            remaining: 0,
            full_at: now,
            refused_until: None,
            exhausted: false,
        }
    }
}

/// What this process can answer without Redis.
#[derive(Debug, PartialEq, Eq)]
enum Local {
    Decided(Verdict),
    /// Ask Redis for this many tokens.
    Ask(u64),
}

/// A route's cluster limiter.
pub struct ClusterLimiter {
    store: Arc<RateLimitStore>,
    gcra: Gcra,
    lease: u64,
    /// `gateway:rl:{<route>:`, the fixed head of this route's keys.
    key_head: String,
    leases: Mutex<HashMap<u64, Lease>>,
}

impl ClusterLimiter {
    pub fn new(store: Arc<RateLimitStore>, route_id: &str, gcra: Gcra, lease: u64) -> Self {
        // braces would end the hash tag early: the route id stays inside it
        let route: String = route_id
            .chars()
            .map(|c| if c == '{' || c == '}' { '_' } else { c })
            .collect();
        Self {
            store,
            gcra,
            lease: lease.max(1),
            key_head: format!("{KEY_PREFIX}{{{route}:"),
            leases: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<RateLimitStore> {
        &self.store
    }

    /// The Redis key of budget `key`: the whole name inside one `{...}` hash tag,
    /// so a budget maps to one Redis Cluster slot.
    pub fn redis_key(&self, key: u64) -> String {
        format!("{}{key:016x}}}", self.key_head)
    }

    /// Admit or refuse one request of budget `key`.
    pub async fn check(&self, key: u64) -> Verdict {
        let now = Instant::now();
        let want = match self.spend_lease(key, now) {
            Local::Decided(v) => return v,
            Local::Ask(want) => want,
        };
        if !self.store.may_ask(now) {
            // Redis failed just now: no request waits on it before the back-off ends
            self.call_ended(key);
            return Verdict::Unavailable;
        }
        let mut conn = self.store.conn.clone();
        let mut call = self.store.script.key(self.redis_key(key));
        call.arg(self.gcra.interval_us)
            .arg(self.gcra.burst)
            .arg(want);
        let reply = tokio::time::timeout(
            self.store.timeout(),
            call.invoke_async::<(u64, u64, u64, u64)>(&mut conn),
        )
        .await;
        match reply {
            Ok(Ok((granted, remaining, reset_us, retry_us))) => {
                self.record(key, Instant::now(), granted, remaining, reset_us, retry_us)
            }
            Ok(Err(e)) => {
                self.call_ended(key);
                self.store.failed(&e.to_string());
                Verdict::Unavailable
            }
            Err(_) => {
                self.call_ended(key);
                self.store.failed("no answer within rate_limits.timeout");
                Verdict::Unavailable
            }
        }
    }

    /// Spend a leased token, or refuse from a remembered refusal; else say how
    /// many tokens to ask Redis for (and count the call as under way).
    fn spend_lease(&self, key: u64, now: Instant) -> Local {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let l = leases.entry(key).or_insert_with(|| Lease::empty(now));
        if let Some(until) = l.refused_until {
            if now < until {
                return Local::Decided(Verdict::Refused {
                    retry: until - now,
                    reset: l.full_at.saturating_duration_since(now),
                });
            }
            l.refused_until = None;
        }
        if l.tokens > 0 && now < l.expires {
            l.tokens -= 1;
            return Local::Decided(Verdict::Allowed {
                remaining: (l.remaining + l.tokens).min(self.gcra.burst),
                reset: l.full_at.saturating_duration_since(now),
            });
        }
        if l.in_flight == 0 && l.taken > 0 {
            // size the next lease by how the last one went
            l.want = if l.tokens > 0 {
                (l.taken - l.tokens).max(1)
            } else {
                l.want.saturating_mul(2).min(self.lease)
            };
            l.tokens = 0;
            l.taken = 0;
        }
        if l.in_flight > 0 && l.exhausted {
            // a flood on a spent budget: one call per token due, not one per request
            return Local::Decided(Verdict::Refused {
                retry: Duration::from_micros(self.gcra.interval_us),
                reset: l.full_at.saturating_duration_since(now),
            });
        }
        let want = if l.in_flight > 0 { 1 } else { l.want };
        l.in_flight += 1;
        Local::Ask(want.clamp(1, self.lease))
    }

    /// A call counted by [`Self::spend_lease`] ended without an answer to record.
    fn call_ended(&self, key: u64) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = leases.get_mut(&key) {
            l.in_flight = l.in_flight.saturating_sub(1);
        }
    }

    /// Keep what Redis answered; one granted token is this request's.
    fn record(
        &self,
        key: u64,
        now: Instant,
        granted: u64,
        remaining: u64,
        reset_us: u64,
        retry_us: u64,
    ) -> Verdict {
        self.store.answered();
        let reset = Duration::from_micros(reset_us);
        let full_at = now + reset;
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let entry = leases.entry(key).or_insert_with(|| Lease::empty(now));
        entry.in_flight = entry.in_flight.saturating_sub(1);
        entry.remaining = remaining;
        entry.full_at = full_at;
        entry.exhausted = remaining == 0;
        if granted == 0 {
            let retry = Duration::from_micros(retry_us.max(1));
            entry.refused_until = Some(now + retry);
            return Verdict::Refused { retry, reset };
        }
        entry.refused_until = None;
        // tokens still held from an earlier lease keep their (earlier) expiry, so
        // no token is ever spent later than LEASE_TTL after Redis counted it
        if entry.tokens == 0 || now >= entry.expires {
            entry.tokens = 0;
            entry.taken = 0;
            entry.expires = now + LEASE_TTL;
        }
        entry.tokens += granted - 1;
        entry.taken += granted;
        // concurrent answers may be recorded out of Redis's order: never report
        // more than a full budget
        Verdict::Allowed {
            remaining: (remaining + entry.tokens).min(self.gcra.burst),
            reset,
        }
    }

    /// Drop the state of keys that hold nothing any more (bounded memory).
    pub fn retain_recent(&self) {
        let now = Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases.retain(|_, l| {
            now < l.expires || l.in_flight > 0 || l.refused_until.is_some_and(|u| now < u)
        });
        leases.shrink_to_fit();
    }

    /// Keys this process holds a lease or a refusal for.
    pub fn tracked_keys(&self) -> usize {
        self.leases.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(lease: u64) -> ClusterLimiter {
        let rt = tokio::runtime::Handle::current();
        let cfg = RateLimitsConfig {
            redis_url: "redis://127.0.0.1:1".into(),
            timeout: Dur(Duration::from_millis(20)),
        };
        let store = RateLimitStore::compile(&cfg, None, &rt).unwrap();
        let gcra = Gcra::new(100, Duration::from_secs(1), 10);
        ClusterLimiter::new(store, "or{ders}", gcra, lease)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_spent_locally_grows_while_used_and_shrinks_when_wasted() {
        let l = limiter(4);
        let now = Instant::now();
        assert_eq!(l.spend_lease(7, now), Local::Ask(1), "a new key asks for 1");
        // Redis granted 4 (this request takes one), 6 left there
        let v = l.record(7, now, 4, 6, 400_000, 0);
        assert_eq!(
            v,
            Verdict::Allowed {
                remaining: 9,
                reset: Duration::from_millis(400)
            }
        );
        for left in [8, 7, 6] {
            match l.spend_lease(7, now) {
                Local::Decided(Verdict::Allowed { remaining, .. }) => assert_eq!(remaining, left),
                other => panic!("{other:?}"),
            }
        }
        // spent within its lifetime: the next lease doubles (1 -> 2)
        assert_eq!(l.spend_lease(7, now), Local::Ask(2));
        // while that call is under way, another miss asks for a single token
        assert_eq!(l.spend_lease(7, now), Local::Ask(1));
        l.call_ended(7);
        l.record(7, now, 3, 0, 1_000_000, 0);
        // the rest expires unspent after LEASE_TTL; the next lease is what was used
        tokio::time::advance(LEASE_TTL).await;
        assert_eq!(l.spend_lease(7, Instant::now()), Local::Ask(1));
        l.call_ended(7);
        l.retain_recent();
        assert_eq!(l.tracked_keys(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_remembered_until_the_next_token() {
        let l = limiter(4);
        let now = Instant::now();
        let v = l.record(1, now, 0, 0, 900_000, 10_000);
        assert!(matches!(v, Verdict::Refused { retry, .. } if retry == Duration::from_millis(10)));
        tokio::time::advance(Duration::from_millis(5)).await;
        assert!(matches!(
            l.spend_lease(1, Instant::now()),
            Local::Decided(Verdict::Refused { retry, .. }) if retry == Duration::from_millis(5)
        ));
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(
            l.spend_lease(1, Instant::now()),
            Local::Ask(1),
            "due: ask Redis"
        );
        // while that call is under way, the spent budget refuses other misses here
        assert!(matches!(
            l.spend_lease(1, Instant::now()),
            Local::Decided(Verdict::Refused { retry, .. }) if retry == Duration::from_millis(10)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn held_tokens_keep_their_expiry_when_a_new_lease_arrives() {
        let l = limiter(4);
        let t0 = Instant::now();
        l.record(2, t0, 2, 0, 0, 0); // holds 1 until t0 + TTL
        tokio::time::advance(LEASE_TTL / 2).await;
        l.record(2, Instant::now(), 3, 0, 0, 0); // holds 1 + 2, still until t0 + TTL
        tokio::time::advance(LEASE_TTL / 2).await;
        assert!(matches!(l.spend_lease(2, Instant::now()), Local::Ask(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn redis_down_is_unavailable_then_left_alone_for_the_backoff() {
        let l = limiter(1);
        assert_eq!(l.check(3).await, Verdict::Unavailable);
        let asked_at = Instant::now();
        // within the back-off no call is made: the answer comes without waiting
        assert_eq!(l.check(3).await, Verdict::Unavailable);
        assert_eq!(Instant::now(), asked_at);
        assert!(!l.store.may_ask(asked_at));
        tokio::time::advance(ERROR_BACKOFF).await;
        assert!(
            l.store.may_ask(Instant::now()),
            "asks again after the back-off"
        );
    }

    #[tokio::test]
    async fn keys_carry_the_prefix_and_one_hash_tag() {
        let l = limiter(1);
        assert_eq!(l.redis_key(0xab), "gateway:rl:{or_ders_:00000000000000ab}");
    }
}
