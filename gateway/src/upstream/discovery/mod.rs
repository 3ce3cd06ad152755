//! Discovery stage (control plane): one background loop per discovered service
//! asks its source (`dns`, `eureka`, `registry`) for the current endpoints and
//! swaps them in with [`Service::update_endpoints`]. The request path only ever
//! reads the resulting snapshot.
//!
//! A loop holds a `Weak` to its service: when a reload drops the service, the
//! loop ends; a reload that keeps the service keeps the loop (one per `Service`).
//! When a source fails, the last known set stays (stale-while-error).

pub mod dns;
pub mod eureka;
pub mod registry;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use prometheus::{register_gauge_vec, register_int_counter_vec, register_int_gauge_vec};
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec};
use serde::Serialize;

use super::{DiscoverySpec, Endpoint, Service};

/// Why one refresh failed (the previous instance set stays in use).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("dns lookup of {name} failed: {reason}")]
    Dns { name: String, reason: String },
    #[error("eureka: no server answered ({0})")]
    Eureka(String),
    #[error("registry store unavailable: {0}")]
    Registry(String),
}

/// One successful answer from a source.
#[derive(Debug)]
pub struct Refresh {
    pub endpoints: Vec<Endpoint>,
    /// When to ask again (DNS: the TTL within bounds; others: the interval).
    pub next: Duration,
}

/// What the admin view shows about a service's discovery.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiscoveryStatus {
    /// `static`, `dns`, `eureka` or `registry`.
    pub source: &'static str,
    /// What is asked: host name, SRV name, Eureka app, registry name.
    pub target: String,
    pub refreshes: u64,
    pub last_refresh_unix_ms: Option<u64>,
    pub last_success_unix_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_unix_ms: Option<u64>,
    pub consecutive_errors: u64,
    pub errors_total: u64,
}

/// Per-`Service` discovery bookkeeping (lives inside the service).
#[derive(Debug, Default)]
pub struct DiscoveryState {
    started: AtomicBool,
    status: Mutex<DiscoveryStatus>,
}

impl DiscoveryState {
    /// A copy of the current status.
    pub fn status(&self) -> DiscoveryStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut DiscoveryStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}

struct DiscoveryMetrics {
    errors: IntCounterVec,
    instances: IntGaugeVec,
    last_refresh: GaugeVec,
}

static METRICS: LazyLock<DiscoveryMetrics> = LazyLock::new(|| DiscoveryMetrics {
    // registration only fails on a duplicate name, which is a programming error
    errors: register_int_counter_vec!(
        "gateway_discovery_errors_total",
        "Failed discovery refreshes (the last known instances stay in use), by service and source",
        &["service", "source"]
    )
    .expect("discovery metrics are registered once"),
    instances: register_int_gauge_vec!(
        "gateway_discovery_instances",
        "Instances the last successful discovery refresh returned, by service",
        &["service"]
    )
    .expect("discovery metrics are registered once"),
    last_refresh: register_gauge_vec!(
        "gateway_discovery_last_refresh_timestamp_seconds",
        "Unix time of the last successful discovery refresh, by service",
        &["service"]
    )
    .expect("discovery metrics are registered once"),
});

pub use plugins::clock::unix_ms;

/// Endpoints a rebuilt dynamic service starts with: the previous service's, so a
/// reload that changes other settings does not empty it until the first refresh.
pub fn initial_endpoints(previous: Option<&Service>) -> Vec<Endpoint> {
    previous
        .map(|p| {
            p.instances()
                .instances
                .iter()
                .map(|i| Endpoint {
                    addr: i.addr,
                    weight: i.weight,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Start the discovery loop of `service` on `rt` unless it has one (or is static).
pub fn ensure_running(service: &Arc<Service>, rt: &tokio::runtime::Handle) {
    let built = match &service.spec.discovery {
        DiscoverySpec::Static => {
            service.discovery.update(|s| s.source = "static");
            return;
        }
        _ if service.discovery.started.swap(true, Ordering::AcqRel) => return,
        DiscoverySpec::Dns(d) => dns::DnsSource::new(d).map(|d| Source::Dns(Box::new(d))),
        DiscoverySpec::Eureka(e) => {
            eureka::EurekaSource::new(e, service.spec.peer.tls).map(Source::Eureka)
        }
        DiscoverySpec::Registry { name } => {
            Ok(Source::Registry(registry::RegistrySource::new(name)))
        }
    };
    let source = match built {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(service = %service.name, error = %e, "cannot start discovery");
            service
                .discovery
                .update(|s| s.last_error = Some(e.to_string()));
            return;
        }
    };
    service.discovery.update(|s| {
        s.source = source.kind();
        s.target = source.target();
    });
    METRICS
        .instances
        .with_label_values(&[&service.name])
        .set(service.instances().len() as i64);
    service.adopt(rt.spawn(run(Arc::downgrade(service), source)));
}

enum Source {
    Dns(Box<dns::DnsSource>),
    Eureka(eureka::EurekaSource),
    Registry(registry::RegistrySource),
}

impl Source {
    fn kind(&self) -> &'static str {
        match self {
            Source::Dns(_) => "dns",
            Source::Eureka(_) => "eureka",
            Source::Registry(_) => "registry",
        }
    }

    fn target(&self) -> String {
        match self {
            Source::Dns(d) => d.target(),
            Source::Eureka(e) => e.target(),
            Source::Registry(r) => r.target(),
        }
    }

    async fn refresh(&mut self) -> Result<Refresh, DiscoveryError> {
        match self {
            Source::Dns(d) => d.refresh().await,
            Source::Eureka(e) => e.refresh().await,
            Source::Registry(r) => r.refresh(),
        }
    }

    /// Sleep up to `max`; true when the source saw a change (registry) and wants a refresh now.
    async fn wait(&mut self, max: Duration) -> bool {
        match self {
            Source::Registry(r) => r.wait(max).await,
            _ => {
                tokio::time::sleep(max).await;
                false
            }
        }
    }

    fn retry_after(&self) -> Duration {
        match self {
            Source::Dns(d) => d.retry_after(),
            Source::Eureka(e) => e.retry_after(),
            Source::Registry(_) => Duration::from_secs(1),
        }
    }
}

/// Longest a loop sleeps before checking that its service still exists.
const MAX_WAIT: Duration = Duration::from_secs(5);

async fn run(service: Weak<Service>, mut source: Source) {
    loop {
        let result = source.refresh().await;
        let Some(svc) = service.upgrade() else {
            return;
        };
        let next = apply(&svc, source.kind(), result).unwrap_or_else(|| source.retry_after());
        drop(svc);
        // sleep in MAX_WAIT steps so a dropped service ends its loop soon
        let deadline = tokio::time::Instant::now() + next;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let changed = source.wait(left.min(MAX_WAIT)).await;
            if service.strong_count() == 0 {
                return;
            }
            if changed {
                break;
            }
        }
    }
}

/// Apply one refresh result; the delay until the next one on success.
fn apply(
    svc: &Service,
    kind: &'static str,
    result: Result<Refresh, DiscoveryError>,
) -> Option<Duration> {
    let now = unix_ms();
    match result {
        Ok(refresh) => {
            let changed = swap(svc, &refresh.endpoints);
            let count = svc.instances().len();
            if changed {
                tracing::info!(service = %svc.name, source = kind, instances = count, "discovery: instance set changed");
                super::health::publish_health(svc);
            }
            METRICS
                .instances
                .with_label_values(&[&svc.name])
                .set(count as i64);
            METRICS
                .last_refresh
                .with_label_values(&[&svc.name])
                .set(now as f64 / 1000.0);
            svc.discovery.update(|s| {
                if s.consecutive_errors > 0 {
                    tracing::info!(service = %svc.name, source = kind, "discovery source answers again");
                }
                s.refreshes += 1;
                s.last_refresh_unix_ms = Some(now);
                s.last_success_unix_ms = Some(now);
                s.consecutive_errors = 0;
            });
            Some(refresh.next)
        }
        Err(e) => {
            METRICS.errors.with_label_values(&[&svc.name, kind]).inc();
            tracing::warn!(service = %svc.name, source = kind, error = %e,
                instances = svc.instances().len(), "discovery refresh failed; keeping the last known instances");
            svc.discovery.update(|s| {
                s.refreshes += 1;
                s.last_refresh_unix_ms = Some(now);
                s.last_error = Some(e.to_string());
                s.last_error_unix_ms = Some(now);
                s.consecutive_errors += 1;
                s.errors_total += 1;
            });
            None
        }
    }
}

/// The first IPv4 address of a host lookup, else the first address: `localhost`
/// may list `::1` first while services often listen on IPv4 only.
pub(crate) fn prefer_ipv4(
    addrs: impl Iterator<Item = std::net::SocketAddr>,
) -> Option<std::net::SocketAddr> {
    let all: Vec<_> = addrs.collect();
    all.iter().find(|a| a.is_ipv4()).or(all.first()).copied()
}

/// Clamp a weight from a source to the range static instances allow.
pub(crate) fn clamp_weight(w: u64) -> u32 {
    w.clamp(1, 10_000) as u32
}

/// Apply the registry's current instances of `name` to every service that reads
/// it, right away (the admin API calls this after a write, so a registration
/// takes traffic as soon as its `PUT` answers; the loops then find no change).
pub fn apply_registry_now<'a>(services: impl IntoIterator<Item = &'a Arc<Service>>, name: &str) {
    let registry = registry::global();
    for svc in services {
        if !matches!(&svc.spec.discovery, DiscoverySpec::Registry { name: n } if n == name) {
            continue;
        }
        let Ok(endpoints) = registry.endpoints(name) else {
            continue;
        };
        if swap(svc, &endpoints) {
            let count = svc.instances().len();
            tracing::info!(service = %svc.name, source = "registry", instances = count, "discovery: instance set changed");
            super::health::publish_health(svc);
            METRICS
                .instances
                .with_label_values(&[&svc.name])
                .set(count as i64);
        }
    }
}

/// Swap in `endpoints`; drop the health series of instances that left, so churn
/// (new pod IPs) does not grow the metric set without bound. True on change.
fn swap(svc: &Service, endpoints: &[Endpoint]) -> bool {
    let before = svc.instances();
    if !svc.update_endpoints(endpoints) {
        return false;
    }
    let after = svc.instances();
    for gone in before
        .instances
        .iter()
        .filter(|i| !after.instances.iter().any(|j| j.id == i.id))
    {
        let _ = crate::observe::METRICS
            .upstream_healthy
            .remove_label_values(&[&svc.name, &gone.id]);
    }
    true
}
