//! The compiled, immutable config the request path reads, the settings bound at
//! start, and the shared handle that holds the current config (swapped atomically
//! on reload).
//!
//! Life of a config: `config::compile` turns the file into a [`RuntimeConfig`] and a
//! [`Startup`] without starting anything; [`Shared::swap_in`] activates the new
//! config (health checks, discovery loops, rate-limit cleanup, auth refresh tasks),
//! swaps it in, then retires what the old one ran and the new one no longer uses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::edge::EdgePolicy;
use crate::logging::LogFormat;
use crate::routing::RouteTable;
use crate::upstream::discovery::registry::{RegistryLimits, RegistrySettings};
use crate::upstream::Service;

/// One compiled config. A request holds its `Arc` from start to end, so a
/// reload never mixes two versions within a request.
pub struct RuntimeConfig {
    /// Short hash of the source text.
    pub version: String,
    pub loaded_at: SystemTime,
    pub routes: RouteTable,
    pub services: BTreeMap<String, Arc<Service>>,
    pub auth: Arc<plugins::AuthRuntime>,
    /// The `rate_limits:` section (Redis of `scope: cluster` limits), kept across
    /// reloads while unchanged.
    pub rate_limits: Option<Arc<plugins::RateLimitStore>>,
    /// Client header hygiene, applied before routing: identity and override
    /// headers removed, forwarded headers trusted from trusted proxies only.
    pub edge: EdgePolicy,
    /// Client connection timeouts, read per connection (a reload applies to new waits).
    pub client: ClientTimeouts,
    /// Whether each request is logged (`server.log.access_log`).
    pub access_log: bool,
    /// Whether W3C Trace Context is read and continued (`server.tracing.propagate`).
    pub trace_propagation: bool,
    /// Where sampled requests' spans go (`server.tracing.otlp`), kept across reloads
    /// while unchanged.
    pub span_export: Option<Arc<crate::otlp::SpanExport>>,
    /// Who may call the admin API and what the registry accepts.
    pub admin: AdminSettings,
}

/// Client timeouts (`server.client_header_timeout`, `server.keepalive_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// The whole request header must arrive within this.
    pub header: Duration,
    /// Idle time allowed before the next request; None: no keep-alive.
    pub keepalive: Option<Duration>,
}

/// The admin API's settings that apply on reload.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Bearer token for writes (and reads with `protect_reads`); None: open.
    pub token: Option<String>,
    /// Reads of `/config`, `/registry` and `/discovery` need the token too.
    pub protect_reads: bool,
    /// `/ready` fails while a service has no available instance.
    pub ready_requires_instances: bool,
    /// Caps on registrations (`admin.registry.limits`).
    pub registry_limits: RegistryLimits,
}

/// Settings bound when the process starts; a reload that changes them is
/// reported (they take effect after a restart).
#[derive(Debug, Clone, PartialEq)]
pub struct Startup {
    pub threads: usize,
    /// Work stealing between the worker threads (`server.work_stealing`).
    pub work_stealing: bool,
    /// How long to keep accepting after SIGTERM/SIGINT before draining.
    pub grace_period: Duration,
    /// Upper bound for draining in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Idle upstream connections kept per process.
    pub upstream_keepalive_pool: usize,
    pub log_format: LogFormat,
    pub listeners: Vec<ListenerSpec>,
    /// The admin API's address (None: no admin listener).
    pub admin_address: Option<SocketAddr>,
    /// The registry's store (`admin.registry`, without its limits).
    pub registry: RegistrySettings,
}

/// One proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub address: SocketAddr,
    pub tls: Option<ListenerTls>,
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// Socket-layer buffers per connection, in bytes (0: none).
    pub read_buffer: usize,
    pub write_buffer: usize,
}

/// TLS termination on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub cert: String,
    pub key: String,
    /// Offer HTTP/2 by ALPN.
    pub http2: bool,
}

impl RuntimeConfig {
    /// Start the background work this config needs and does not have yet: health
    /// checkers and discovery loops of its services, idle-key cleanup of its rate
    /// limiters, the auth section's JWKS refresh and revocation sync. Parts reused
    /// from the previous config already run and are left alone.
    pub fn activate(&self, rt: &tokio::runtime::Handle) {
        for svc in self.services.values() {
            crate::upstream::health::ensure_checker(svc, rt);
            crate::upstream::circuit_breaker::publish(svc);
            crate::upstream::discovery::ensure_running(svc, rt);
        }
        for route in self.routes.routes() {
            if let Some(rl) = &route.rate_limit {
                rl.activate(rt);
            }
        }
        self.auth.activate(rt);
        if let Some(export) = &self.span_export {
            export.activate(rt);
        }
    }

    /// Stop the background work of the services and limiters that `next` does
    /// not reuse. (Auth tasks end with the last reference to what they refresh.)
    pub fn retire(&self, next: &RuntimeConfig) {
        for svc in self.services.values() {
            if !next.services.values().any(|n| Arc::ptr_eq(n, svc)) {
                svc.stop();
            }
        }
        let kept: Vec<&Arc<plugins::RateLimit>> = next
            .routes
            .routes()
            .iter()
            .filter_map(|r| r.rate_limit.as_ref())
            .collect();
        for rl in self
            .routes
            .routes()
            .iter()
            .filter_map(|r| r.rate_limit.as_ref())
        {
            if !kept.iter().any(|k| Arc::ptr_eq(k, rl)) {
                rl.stop();
            }
        }
    }
}

/// State shared by the proxy, the admin API and the reloader.
pub struct Shared {
    pub config: ArcSwap<RuntimeConfig>,
    /// What the process was started with (listeners, threads, admin address).
    pub startup: Startup,
    pub config_path: PathBuf,
    /// The control-plane runtime: health checks, discovery, reload, admin.
    pub rt: tokio::runtime::Handle,
}

impl Shared {
    /// Activate `first` and hold it as the current config.
    pub fn new(
        first: RuntimeConfig,
        startup: Startup,
        config_path: PathBuf,
        rt: tokio::runtime::Handle,
    ) -> Self {
        first.activate(&rt);
        Shared {
            config: ArcSwap::from_pointee(first),
            startup,
            config_path,
            rt,
        }
    }

    pub fn current(&self) -> Arc<RuntimeConfig> {
        self.config.load_full()
    }

    /// Activate `next`, make it current, and retire what only the old config used.
    /// Requests in flight finish on the config they started with.
    pub fn swap_in(&self, next: RuntimeConfig) -> Arc<RuntimeConfig> {
        next.activate(&self.rt);
        let old = self.config.swap(Arc::new(next));
        old.retire(&self.current());
        old
    }
}
