//! Rate limiting, the first plugin of a route's chain: a keyed GCRA limiter
//! (the `governor` crate) per route, local to this gateway process.
//!
//! Over the limit: `429 {"error":"rate_limited"}` with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::{HeaderName, HeaderValue, StatusCode};
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};

use crate::revocation::TaskGuard;
use crate::{ConfigIssue, Dur, Flow, Plugin, PluginOutput, Rejection, RequestView};

/// A route's `rate_limit:` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests allowed per `per` at a steady rate.
    pub requests: u32,
    /// The period `requests` refers to (default 1s).
    #[serde(default = "one_second")]
    pub per: Dur,
    /// Requests allowed at once above the steady rate (default: `requests`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Who shares a budget: `client_ip` (default), `route` (everyone), or `{header: NAME}`
    /// (requests without the header fall back to the client IP).
    #[serde(default)]
    pub key: RateLimitKey,
}

fn one_second() -> Dur {
    Dur::from_secs(1)
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RateLimitKey {
    #[default]
    ClientIp,
    Route,
    Header(String),
}

static LIMITED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        prometheus::Opts::new(
            "gateway_rate_limited_total",
            "Requests refused by a route's rate limit",
        ),
        &["route"],
    )
    .ok()?;
    prometheus::default_registry()
        .register(Box::new(c.clone()))
        .ok()?;
    Some(c)
});

/// The compiled limiter of one route.
pub struct RateLimit {
    config: RateLimitConfig,
    header: Option<HeaderName>,
    limiter: DefaultKeyedRateLimiter<u64>,
    limited: Option<prometheus::IntCounter>,
    /// The idle-key cleanup task, once activated.
    cleanup: OnceLock<TaskGuard>,
}

/// How often idle keys are dropped (bounded memory).
const CLEANUP_EVERY: Duration = Duration::from_secs(60);

impl RateLimit {
    /// Build a limiter; `path` is the route's key path for errors.
    pub fn new(
        config: &RateLimitConfig,
        route_id: &str,
        path: &str,
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
        let header = match &config.key {
            RateLimitKey::Header(h) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(h) => Some(h),
                Err(_) => {
                    issues.push(ConfigIssue::new(
                        format!("{path}.key.header"),
                        format!("{h:?} is not a header name"),
                    ));
                    None
                }
            },
            _ => None,
        };
        let (Some(requests), Some(burst)) = (requests, burst) else {
            return Err(issues);
        };
        // one cell every period/requests, `burst` cells at once
        let interval = period / requests.get();
        let quota =
            Quota::with_period(interval.max(Duration::from_nanos(1))).map(|q| q.allow_burst(burst));
        let Some(quota) = quota else {
            issues.push(ConfigIssue::new(path, "the rate is too high to represent"));
            return Err(issues);
        };
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Arc::new(Self {
            config: config.clone(),
            header,
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            limited: LIMITED.as_ref().map(|c| c.with_label_values(&[route_id])),
            cleanup: OnceLock::new(),
        }))
    }

    /// The config it was built from (a reload with the same config keeps this limiter).
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Keys currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.limiter.len()
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
                    rl.limiter.retain_recent();
                    rl.limiter.shrink_to_fit();
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

    fn key(&self, req: &RequestView<'_>) -> u64 {
        let by_ip = |ip: Option<IpAddr>| match ip {
            Some(IpAddr::V4(v4)) => hash(&v4.octets()),
            Some(IpAddr::V6(v6)) => hash(&v6.octets()),
            None => 0,
        };
        match (&self.config.key, &self.header) {
            (RateLimitKey::Route, _) => 0,
            (RateLimitKey::Header(_), Some(h)) => match req.headers.get(h) {
                Some(v) => hash(v.as_bytes()),
                None => by_ip(req.client_ip),
            },
            _ => by_ip(req.client_ip),
        }
    }
}

/// FNV-1a: stable, cheap, good enough to spread keys over the limiter's map.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[async_trait]
impl Plugin for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    async fn on_request(&self, req: &RequestView<'_>, _out: &mut PluginOutput) -> Flow {
        match self.limiter.check_key(&self.key(req)) {
            Ok(()) => Flow::Continue,
            Err(not_until) => {
                if let Some(c) = &self.limited {
                    c.inc();
                }
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut r = Rejection::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests; retry later",
                );
                r.headers
                    .push((http::header::RETRY_AFTER, HeaderValue::from(secs.max(1))));
                Flow::Reject(r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
