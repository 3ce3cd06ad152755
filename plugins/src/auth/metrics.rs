//! Auth metrics, registered once in the process-wide Prometheus registry (the
//! admin `/metrics` endpoint gathers it). Label handles are resolved up front.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use super::error::AuthError;

/// Every metric the auth plugins export.
pub struct AuthMetrics {
    /// `gateway_auth_failures_total{reason}`: refusals by stable code.
    pub failures: IntCounterVec,
    /// Its series, one per `AuthError` (indexed by `AuthError as usize`), resolved once.
    failure_by_reason: Vec<IntCounter>,
    /// `gateway_auth_success_total`: tokens accepted.
    pub success: IntCounter,
    /// `gateway_revoked_tokens_rejected_total`.
    pub revoked: IntCounter,
    /// `gateway_redis_errors_total{op}`: failed Redis operations (connect, subscribe, resync, lookup).
    pub redis_errors: IntCounterVec,
    /// `gateway_revocation_unavailable_total{policy}`: requests decided by the Redis-down policy.
    pub unavailable: IntCounterVec,
    /// `gateway_revocation_mirror_size{kind}`: entries in the local mirror.
    pub mirror_size: prometheus::IntGaugeVec,
    /// `gateway_revocation_mirror_synced`: 1 while the mirror is current.
    pub mirror_synced: IntGauge,
    /// `gateway_revocation_mirror_out_of_sync_seconds_total`: time the mirror spent
    /// out of sync after losing Redis, added when it is in sync again.
    pub mirror_out_of_sync: prometheus::Counter,
    /// `gateway_revocation_events_total`: revocation messages applied to the mirror.
    pub events: IntCounter,
    /// `gateway_revocation_writes_total{result}`: revocations the gateway wrote to
    /// Redis itself (`revoke: on_success`), `ok` or `error`.
    pub revocation_writes: IntCounterVec,
    /// `gateway_jwks_fetches_total{issuer,result}`.
    pub jwks_fetches: IntCounterVec,
    /// `gateway_auth_cache_total{result}`: verified-token cache hits and misses.
    pub cache: IntCounterVec,
    /// The request path's series, resolved once: `cache{result="hit"}`,
    /// `cache{result="miss"}`, `unavailable{policy="deny"}`, `unavailable{policy="allow"}`.
    pub cache_hit: IntCounter,
    pub cache_miss: IntCounter,
    pub unavailable_deny: IntCounter,
    pub unavailable_allow: IntCounter,
}

fn build() -> prometheus::Result<AuthMetrics> {
    let r = prometheus::default_registry();
    let counter_vec = |name: &str, help: &str, labels: &[&str]| {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        r.register(Box::new(c.clone()))?;
        Ok::<_, prometheus::Error>(c)
    };
    let counter = |name: &str, help: &str| {
        let c = IntCounter::new(name, help)?;
        r.register(Box::new(c.clone()))?;
        Ok::<_, prometheus::Error>(c)
    };
    let mirror_size = prometheus::IntGaugeVec::new(
        Opts::new(
            "gateway_revocation_mirror_size",
            "Revocations held in the local mirror",
        ),
        &["kind"],
    )?;
    r.register(Box::new(mirror_size.clone()))?;
    let mirror_synced = IntGauge::new(
        "gateway_revocation_mirror_synced",
        "1 while the revocation mirror is connected and current",
    )?;
    r.register(Box::new(mirror_synced.clone()))?;
    let mirror_out_of_sync = prometheus::Counter::new(
        "gateway_revocation_mirror_out_of_sync_seconds_total",
        "Seconds the revocation mirror spent out of sync after losing Redis (added when back in sync)",
    )?;
    r.register(Box::new(mirror_out_of_sync.clone()))?;
    let failures = counter_vec(
        "gateway_auth_failures_total",
        "Requests refused by authentication, by reason",
        &["reason"],
    )?;
    let cache = counter_vec(
        "gateway_auth_cache_total",
        "Verified-token cache lookups",
        &["result"],
    )?;
    let unavailable = counter_vec(
        "gateway_revocation_unavailable_total",
        "Requests decided by the on_redis_error policy while revocation state was unknown",
        &["policy"],
    )?;
    Ok(AuthMetrics {
        failure_by_reason: AuthError::ALL
            .iter()
            .map(|e| failures.with_label_values(&[e.code()]))
            .collect(),
        failures,
        success: counter("gateway_auth_success_total", "Tokens accepted")?,
        revoked: counter(
            "gateway_revoked_tokens_rejected_total",
            "Requests refused because their token was revoked",
        )?,
        redis_errors: counter_vec(
            "gateway_redis_errors_total",
            "Failed Redis operations of the revocation check",
            &["op"],
        )?,
        unavailable_deny: unavailable.with_label_values(&["deny"]),
        unavailable_allow: unavailable.with_label_values(&["allow"]),
        unavailable,
        mirror_size,
        mirror_synced,
        mirror_out_of_sync,
        events: counter(
            "gateway_revocation_events_total",
            "Revocation notifications applied to the local mirror",
        )?,
        revocation_writes: counter_vec(
            "gateway_revocation_writes_total",
            "Revocations written to Redis by the gateway itself (revoke: on_success), by result",
            &["result"],
        )?,
        jwks_fetches: counter_vec(
            "gateway_jwks_fetches_total",
            "JWKS fetches by issuer and result",
            &["issuer", "result"],
        )?,
        cache_hit: cache.with_label_values(&["hit"]),
        cache_miss: cache.with_label_values(&["miss"]),
        cache,
    })
}

impl AuthMetrics {
    /// Count a refusal under its reason.
    pub fn failed(&self, e: AuthError) {
        match self.failure_by_reason.get(e as usize) {
            Some(c) => c.inc(),
            // a case missing from `AuthError::ALL` is still counted, by its label
            None => self.failures.with_label_values(&[e.code()]).inc(),
        }
    }
}

/// The process-wide auth metrics.
pub static METRICS: LazyLock<AuthMetrics> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    let m = build().expect("auth metrics are registered once per process");
    // export the failure series from zero, so a rate() over them sees the first
    // outage of a process (a series born at 1 shows no increase)
    for op in ["mirror", "lookup", "revoke"] {
        m.redis_errors.with_label_values(&[op]);
    }
    m
});
