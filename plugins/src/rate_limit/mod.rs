//! Rate limiting (request_filter stage): a keyed GCRA budget per route.
//!
//! `scope: local` (default): a budget per gateway process (the `governor` crate),
//! no I/O. `scope: cluster`: one budget per key shared by every gateway through
//! Redis ([`cluster`]), spent from small local leases, so most requests make no
//! Redis call; when Redis fails, the route's `on_redis_error` admits (`allow`),
//! refuses with 503 (`deny`) or falls back to this process's own budget with the
//! same quota (`local`, the default).
//!
//! Keys: the client address (as resolved through the trusted proxies), the route,
//! a request header, or a verified JWT claim. A claim-keyed limit runs right after
//! the route's `jwt` plugin (it needs the verified token); the others run before it,
//! so a flood is refused before its tokens are verified.
//!
//! Every answer of a limited route carries `RateLimit-Limit` (the burst),
//! `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the budget is full);
//! a refusal is `429 {"error":"rate_limited"}` with `Retry-After`.
//!
//! Error bound of `scope: cluster`: see [`cluster`] (at most `N × 50 ms` over a
//! single limiter's `burst + N·t`, whatever the number of gateways).

mod cluster;
mod config;
mod gcra;
pub mod headers;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderName, HeaderValue, StatusCode};
use prometheus::IntCounterVec;

pub use cluster::{
    ClusterLimiter, RateLimitStore, RateLimitsConfig, Verdict, ERROR_BACKOFF, KEY_PREFIX,
};
pub use config::{OnRedisError, RateLimitConfig, RateLimitKey, RateLimitScope};
pub use gcra::{lease_size, Gcra, Outcome, LEASE_SHARE, LEASE_TTL, SCRIPT};

use crate::revocation::TaskGuard;
use crate::{ConfigIssue, Flow, Plugin, PluginOutput, Rejection, RequestView};

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
    let c = IntCounterVec::new(prometheus::Opts::new(name, help), labels).ok()?;
    prometheus::default_registry()
        .register(Box::new(c.clone()))
        .ok()?;
    Some(c)
}

static LIMITED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter_vec(
        "gateway_rate_limited_total",
        "Requests refused by a route's rate limit",
        &["route"],
    )
});

static REDIS_ERRORS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter_vec(
        "gateway_rate_limit_redis_errors_total",
        "Requests of cluster rate limits that Redis could not decide, by the on_redis_error policy applied",
        &["route", "policy"],
    )
});

/// The per-process limiter, reporting what is left after each check.
type LocalLimiter =
    RateLimiter<u64, DefaultKeyedStateStore<u64>, DefaultClock, StateInformationMiddleware>;

/// What a budget is keyed by, resolved at compile time.
enum KeySource {
    ClientIp,
    Route,
    Header(HeaderName),
    Claim(String),
}

/// The compiled limiter of one route.
pub struct RateLimit {
    config: RateLimitConfig,
    key: KeySource,
    /// `scope: local`, and the fallback of `scope: cluster` (`on_redis_error: local`).
    local: LocalLimiter,
    cluster: Option<ClusterLimiter>,
    on_redis_error: OnRedisError,
    /// `RateLimit-Limit` (the burst).
    limit: HeaderValue,
    burst: u64,
    interval: Duration,
    limited: Option<prometheus::IntCounter>,
    redis_errors: Option<prometheus::IntCounter>,
    /// The idle-key cleanup task, once activated.
    cleanup: OnceLock<TaskGuard>,
}

/// Longest refill of a cluster budget, in µs (2^48, about 8.9 years): Redis's clock
/// plus this stays below 2^53, where the script's Lua numbers are exact.
const MAX_REFILL_US: u64 = 1 << 48;

/// How often idle keys are dropped (bounded memory).
const CLEANUP_EVERY: Duration = Duration::from_secs(60);

impl RateLimit {
    /// Build a limiter; `path` is the route's key path for errors; `store` is the
    /// compiled `rate_limits:` section, if the config has one.
    pub fn new(
        config: &RateLimitConfig,
        route_id: &str,
        path: &str,
        store: Option<&Arc<RateLimitStore>>,
    ) -> Result<Arc<Self>, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let requests = NonZeroU32::new(config.requests);
        if requests.is_none() {
            issues.push(ConfigIssue::new(
                format!("{path}.requests"),
                "must be at least 1",
            ));
        }
        let burst = NonZeroU32::new(config.burst.unwrap_or(config.requests));
        if burst.is_none() {
            issues.push(ConfigIssue::new(
                format!("{path}.burst"),
                "must be at least 1",
            ));
        }
        let period = config.per.get();
        if period.is_zero() {
            issues.push(ConfigIssue::new(
                format!("{path}.per"),
                "must be above zero",
            ));
        }
        let key = match &config.key {
            RateLimitKey::ClientIp => Some(KeySource::ClientIp),
            RateLimitKey::Route => Some(KeySource::Route),
            RateLimitKey::Header(h) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(h) => Some(KeySource::Header(h)),
                Err(_) => {
                    issues.push(ConfigIssue::new(
                        format!("{path}.key.header"),
                        format!("{h:?} is not a header name"),
                    ));
                    None
                }
            },
            RateLimitKey::Claim(c) if c.is_empty() => {
                issues.push(ConfigIssue::new(
                    format!("{path}.key.claim"),
                    "name a claim of the verified token, e.g. `{claim: sub}`",
                ));
                None
            }
            RateLimitKey::Claim(c) => Some(KeySource::Claim(c.clone())),
        };
        let store = match (config.scope, store) {
            (RateLimitScope::Cluster, None) => {
                issues.push(ConfigIssue::new(
                    format!("{path}.scope"),
                    "scope: cluster shares the budget through Redis: add a top-level `rate_limits: {redis_url: redis://host:6379/0}`, or use scope: local",
                ));
                None
            }
            (RateLimitScope::Cluster, Some(s)) => Some(s.clone()),
            (RateLimitScope::Local, _) => {
                if config.on_redis_error.is_some() {
                    issues.push(ConfigIssue::new(
                        format!("{path}.on_redis_error"),
                        "applies to scope: cluster only (a local limit never asks Redis); remove it or set scope: cluster",
                    ));
                }
                None
            }
        };
        let (Some(requests), Some(burst), Some(key)) = (requests, burst, key) else {
            return Err(issues);
        };
        // one cell every period/requests, `burst` cells at once
        let interval = (period / requests.get()).max(Duration::from_nanos(1));
        let Some(quota) = Quota::with_period(interval).map(|q| q.allow_burst(burst)) else {
            issues.push(ConfigIssue::new(path, "the rate is too high to represent"));
            return Err(issues);
        };
        let gcra = Gcra::new(requests.get(), period, burst.get());
        if store.is_some() && gcra.burst.saturating_mul(gcra.interval_us) > MAX_REFILL_US {
            issues.push(ConfigIssue::new(
                path,
                "a cluster budget must refill within 8 years (burst x per / requests): lower burst or per",
            ));
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let cluster = store.map(|s| {
            let lease = lease_size(requests.get(), period, burst.get());
            ClusterLimiter::new(s, route_id, gcra, lease)
        });
        let on_redis_error = config.on_redis_error.unwrap_or_default();
        Ok(Arc::new(Self {
            config: config.clone(),
            key,
            local: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            cluster,
            on_redis_error,
            limit: headers::number(u64::from(burst.get())),
            burst: u64::from(burst.get()),
            interval,
            limited: LIMITED.as_ref().map(|c| c.with_label_values(&[route_id])),
            redis_errors: REDIS_ERRORS
                .as_ref()
                .filter(|_| config.scope == RateLimitScope::Cluster)
                .map(|c| c.with_label_values(&[route_id, on_redis_error.label()])),
            cleanup: OnceLock::new(),
        }))
    }

    /// The config it was built from.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Whether a reload with `cfg` (and the `rate_limits` section `store`) can keep
    /// this limiter, and with it every client's budget.
    pub fn reusable(&self, cfg: &RateLimitConfig, store: Option<&Arc<RateLimitStore>>) -> bool {
        let same_store = match (&self.cluster, store) {
            (None, _) => true,
            (Some(c), Some(s)) => Arc::ptr_eq(c.store(), s),
            (Some(_), None) => false,
        };
        self.config == *cfg && same_store
    }

    /// Whether this limit needs the verified token (a claim key): it then runs
    /// right after the route's `jwt` plugin instead of before it.
    pub fn after_auth(&self) -> bool {
        matches!(self.key, KeySource::Claim(_))
    }

    /// Keys currently tracked by this process.
    pub fn tracked_keys(&self) -> usize {
        self.local.len() + self.cluster.as_ref().map_or(0, |c| c.tracked_keys())
    }

    /// Start dropping idle keys every minute (once; a reused limiter keeps its task).
    /// The task ends with the limiter, or at once on [`RateLimit::stop`].
    pub fn activate(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        self.cleanup.get_or_init(|| {
            let weak: Weak<Self> = Arc::downgrade(self);
            TaskGuard::new(rt.spawn(async move {
                let mut tick = tokio::time::interval(CLEANUP_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(rl) = weak.upgrade() else { return };
                    rl.local.retain_recent();
                    rl.local.shrink_to_fit();
                    if let Some(c) = &rl.cluster {
                        c.retain_recent();
                    }
                }
            }))
        });
    }

    /// End the cleanup task (a reload dropped this limiter).
    pub fn stop(&self) {
        if let Some(task) = self.cleanup.get() {
            task.abort();
        }
    }

    fn key(&self, req: &RequestView<'_>, out: &PluginOutput) -> u64 {
        let by_ip = || match req.client_ip {
            Some(IpAddr::V4(v4)) => hash(1, &v4.octets()),
            Some(IpAddr::V6(v6)) => hash(1, &v6.octets()),
            None => 0,
        };
        match &self.key {
            KeySource::Route => 0,
            KeySource::ClientIp => by_ip(),
            KeySource::Header(h) => req
                .headers
                .get(h)
                .map_or_else(by_ip, |v| hash(2, v.as_bytes())),
            KeySource::Claim(name) => {
                let claim = out.verified.as_ref().and_then(|v| v.claims.get(name));
                match claim {
                    Some(serde_json::Value::String(s)) => hash(3, s.as_bytes()),
                    Some(serde_json::Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                        (Some(i), _) => hash(4, &i.to_le_bytes()),
                        (None, Some(f)) => hash(5, &f.to_bits().to_le_bytes()),
                        (None, None) => hash(3, n.to_string().as_bytes()),
                    },
                    _ => by_ip(),
                }
            }
        }
    }

    /// This process's budget.
    fn check_local(&self, key: u64) -> Decision {
        match self.local.check_key(&key) {
            Ok(state) => {
                let remaining = u64::from(state.remaining_burst_capacity());
                Decision::Allow {
                    remaining,
                    reset: self.refill(self.burst.saturating_sub(remaining)),
                }
            }
            Err(not_until) => {
                let retry = not_until.wait_time_from(DefaultClock::default().now());
                Decision::Refuse {
                    retry,
                    reset: retry + self.refill(self.burst.saturating_sub(1)),
                }
            }
        }
    }

    /// Time to earn back `n` requests.
    fn refill(&self, n: u64) -> Duration {
        self.interval
            .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn decide(&self, key: u64) -> Decision {
        let Some(cluster) = &self.cluster else {
            return self.check_local(key);
        };
        match cluster.check(key).await {
            Verdict::Allowed { remaining, reset } => Decision::Allow { remaining, reset },
            Verdict::Refused { retry, reset } => Decision::Refuse { retry, reset },
            Verdict::Unavailable => {
                if let Some(c) = &self.redis_errors {
                    c.inc();
                }
                match self.on_redis_error {
                    OnRedisError::Allow => Decision::Unknown,
                    OnRedisError::Deny => Decision::Unavailable,
                    OnRedisError::Local => self.check_local(key),
                }
            }
        }
    }
}

/// One request's answer from its budget.
enum Decision {
    Allow {
        remaining: u64,
        reset: Duration,
    },
    Refuse {
        retry: Duration,
        reset: Duration,
    },
    /// Admitted without a budget (Redis down, `on_redis_error: allow`): no headers.
    Unknown,
    /// Redis down, `on_redis_error: deny`.
    Unavailable,
}

/// FNV-1a over a tag and the key's bytes: stable across processes (cluster budgets
/// are named by it), cheap, and a header value never meets an address's budget.
fn hash(tag: u8, bytes: &[u8]) -> u64 {
    std::iter::once(&tag)
        .chain(bytes)
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[async_trait]
impl Plugin for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    async fn on_request(&self, req: &RequestView<'_>, out: &mut PluginOutput) -> Flow {
        let key = self.key(req, out);
        match self.decide(key).await {
            Decision::Allow { remaining, reset } => {
                out.response_headers
                    .extend(headers::triple(&self.limit, remaining, reset));
                Flow::Continue
            }
            Decision::Unknown => Flow::Continue,
            Decision::Refuse { retry, reset } => {
                if let Some(c) = &self.limited {
                    c.inc();
                }
                out.response_headers
                    .extend(headers::triple(&self.limit, 0, reset));
                let mut r = Rejection::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests; retry later",
                );
                r.headers.push((
                    http::header::RETRY_AFTER,
                    headers::number(headers::seconds(retry).max(1)),
                ));
                Flow::Reject(r)
            }
            Decision::Unavailable => {
                let mut r = Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "rate_limit_unavailable",
                    "the rate limit cannot be checked right now; retry later",
                );
                r.headers
                    .push((http::header::RETRY_AFTER, headers::number(1)));
                Flow::Reject(r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dur;
    use http::{HeaderMap, Method, Uri};

    fn cfg(yaml: &str) -> RateLimitConfig {
        serde_json::from_str(yaml).unwrap()
    }

    async fn run(rl: &RateLimit, ip: [u8; 4], headers: &HeaderMap) -> Flow {
        let uri = Uri::from_static("/");
        let view = RequestView {
            method: &Method::GET,
            uri: &uri,
            headers,
            client_ip: Some(IpAddr::from(ip)),
        };
        rl.on_request(&view, &mut PluginOutput::default()).await
    }

    #[tokio::test]
    async fn refuses_over_the_burst_per_client() {
        let rl = RateLimit::new(
            &cfg(r#"{"requests": 3, "per": "1m"}"#),
            "r",
            "routes[0].rate_limit",
            None,
        )
        .unwrap();
        let h = HeaderMap::new();
        for _ in 0..3 {
            assert!(matches!(run(&rl, [10, 0, 0, 1], &h).await, Flow::Continue));
        }
        match run(&rl, [10, 0, 0, 1], &h).await {
            Flow::Reject(r) => {
                assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
                assert_eq!(r.code, "rate_limited");
                let retry: u64 = r.headers[0].1.to_str().unwrap().parse().unwrap();
                assert!((1..=20).contains(&retry), "{retry}");
            }
            other => panic!("fourth request passed: {other:?}"),
        }
        // another client has its own budget
        assert!(matches!(run(&rl, [10, 0, 0, 2], &h).await, Flow::Continue));
    }

    #[tokio::test]
    async fn header_key_and_route_key() {
        let rl = RateLimit::new(
            &cfg(r#"{"requests": 1, "per": "1m", "key": {"header": "x-api-key"}}"#),
            "r",
            "p",
            None,
        )
        .unwrap();
        let mut a = HeaderMap::new();
        a.insert("x-api-key", HeaderValue::from_static("a"));
        let mut b = HeaderMap::new();
        b.insert("x-api-key", HeaderValue::from_static("b"));
        assert!(matches!(run(&rl, [1, 1, 1, 1], &a).await, Flow::Continue));
        assert!(matches!(run(&rl, [1, 1, 1, 1], &a).await, Flow::Reject(_)));
        assert!(matches!(run(&rl, [1, 1, 1, 1], &b).await, Flow::Continue));

        let rl = RateLimit::new(
            &cfg(r#"{"requests": 1, "per": "1m", "key": "route"}"#),
            "r",
            "p",
            None,
        )
        .unwrap();
        assert!(matches!(run(&rl, [1, 1, 1, 1], &a).await, Flow::Continue));
        assert!(matches!(run(&rl, [2, 2, 2, 2], &b).await, Flow::Reject(_)));
    }

    #[test]
    fn bad_values_are_reported_with_their_path() {
        let e = RateLimit::new(
            &cfg(r#"{"requests": 0, "burst": 0}"#),
            "r",
            "routes[2].rate_limit",
            None,
        )
        .err()
        .unwrap();
        let paths: Vec<_> = e.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[2].rate_limit.requests",
                "routes[2].rate_limit.burst"
            ]
        );
    }

    fn header<'a>(out: &'a PluginOutput, name: &str) -> Option<&'a str> {
        out.response_headers
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[tokio::test]
    async fn claim_keys_give_each_user_a_budget_and_every_answer_its_headers() {
        let rl = RateLimit::new(
            &cfg(r#"{"requests": 2, "per": "1m", "key": {"claim": "sub"}}"#),
            "r",
            "p",
            None,
        )
        .unwrap();
        assert!(rl.after_auth());
        let verified = |sub: serde_json::Value| {
            let mut claims = serde_json::Map::new();
            claims.insert("sub".into(), sub);
            Arc::new(crate::auth::verify::VerifiedToken {
                issuer: 0,
                claims,
                sub: None,
                jti: None,
                iat: None,
                exp: None,
                nbf: None,
                leeway: 0.0,
                identity: Vec::new(),
                key_generation: 0,
            })
        };
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        let view = RequestView {
            method: &Method::GET,
            uri: &uri,
            headers: &headers,
            client_ip: Some(IpAddr::from([10, 0, 0, 1])),
        };
        let run = |sub: serde_json::Value| {
            let mut out = PluginOutput {
                verified: Some(verified(sub)),
                ..PluginOutput::default()
            };
            let rl = rl.clone();
            let view = &view;
            async move {
                let flow = rl.on_request(view, &mut out).await;
                (flow, out)
            }
        };
        let (flow, out) = run("alice".into()).await;
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(header(&out, "ratelimit-limit"), Some("2"));
        assert_eq!(header(&out, "ratelimit-remaining"), Some("1"));
        assert_eq!(header(&out, "ratelimit-reset"), Some("30"));
        assert!(matches!(run("alice".into()).await.0, Flow::Continue));
        let (flow, out) = run("alice".into()).await;
        assert!(matches!(flow, Flow::Reject(r) if r.code == "rate_limited"));
        assert_eq!(header(&out, "ratelimit-remaining"), Some("0"));
        // same address, another user; a numeric claim is a key too
        assert!(matches!(run("bob".into()).await.0, Flow::Continue));
        assert!(matches!(run(42.into()).await.0, Flow::Continue));
        assert!(matches!(run(42.into()).await.0, Flow::Continue));
        assert!(matches!(run(42.into()).await.0, Flow::Reject(_)));
    }

    /// A `rate_limits` store on `redis_url`, 20 ms timeout.
    fn store_at(redis_url: &str) -> Arc<RateLimitStore> {
        RateLimitStore::compile(
            &RateLimitsConfig {
                redis_url: redis_url.into(),
                timeout: Dur(Duration::from_millis(20)),
            },
            None,
            &tokio::runtime::Handle::current(),
        )
        .unwrap()
    }

    /// A cluster limit whose Redis never answers, with `policy`.
    fn unreachable(policy: &str) -> Arc<RateLimit> {
        let store = store_at("redis://127.0.0.1:1");
        let c = format!(
            r#"{{"scope": "cluster", "requests": 1, "per": "1m", "on_redis_error": "{policy}"}}"#
        );
        RateLimit::new(&cfg(&c), "r", "p", Some(&store)).unwrap()
    }

    #[tokio::test]
    async fn redis_down_applies_the_route_policy() {
        let h = HeaderMap::new();
        let allow = unreachable("allow");
        for _ in 0..3 {
            assert!(matches!(
                run(&allow, [1, 1, 1, 1], &h).await,
                Flow::Continue
            ));
        }
        match run(&unreachable("deny"), [1, 1, 1, 1], &h).await {
            Flow::Reject(r) => {
                assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(r.code, "rate_limit_unavailable");
            }
            other => panic!("{other:?}"),
        }
        let local = unreachable("local");
        assert!(matches!(
            run(&local, [1, 1, 1, 1], &h).await,
            Flow::Continue
        ));
        assert!(
            matches!(run(&local, [1, 1, 1, 1], &h).await, Flow::Reject(r) if r.code == "rate_limited")
        );
    }

    #[tokio::test]
    async fn cluster_scope_needs_the_rate_limits_section_and_reuse_needs_the_same_one() {
        let c = cfg(r#"{"scope": "cluster", "requests": 1, "key": {"claim": ""}}"#);
        let e = RateLimit::new(&c, "r", "routes[0].rate_limit", None)
            .err()
            .unwrap();
        let paths: Vec<_> = e.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[0].rate_limit.key.claim",
                "routes[0].rate_limit.scope"
            ]
        );
        let rl = unreachable("deny");
        let same = rl.config().clone();
        let other_store = store_at("redis://127.0.0.1:2");
        let slow = cfg(r#"{"scope": "cluster", "requests": 1, "per": "3650d", "burst": 1000}"#);
        let store = rl.cluster.as_ref().map(|c| c.store());
        let e = RateLimit::new(&slow, "r", "p", store).err().unwrap();
        assert!(e[0].message.contains("within 8 years"), "{e:?}");
        assert!(rl.reusable(&same, store));
        assert!(!rl.reusable(&same, Some(&other_store)));
        assert!(!rl.reusable(&same, None));
    }
}
