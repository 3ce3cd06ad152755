//! The YAML schema: serde types that mirror `gateway.yaml` key for key.
//!
//! Nothing here is validated beyond its shape; `config::compile` turns these
//! into runtime types and reports every semantic error with its key path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::duration::Dur;
use super::resilience::CircuitBreakerConfig;
use super::size::ByteSize;
pub use crate::logging::LogFormat;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub auth: Option<plugins::AuthConfig>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Where `scope: cluster` rate limits keep their shared budgets (Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<plugins::RateLimitsConfig>,
}

/// Process-wide settings. Changing them needs a restart.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads of the proxy (Pingora's default of 1 is rarely what you want).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// With more than one thread: Pingora's work-stealing scheduler (true), or one
    /// single-threaded runtime per worker, connections spread over them (false).
    #[serde(default = "yes")]
    pub work_stealing: bool,
    /// How long to keep accepting after SIGTERM/SIGINT before draining.
    #[serde(default = "default_grace_period")]
    pub grace_period: Dur,
    /// Upper bound for draining in-flight requests at shutdown.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Dur,
    /// Idle upstream connections kept per process.
    #[serde(default = "default_keepalive_pool")]
    pub upstream_keepalive_pool: usize,
    #[serde(default)]
    pub log: LogConfig,
    /// Peers (CIDRs or addresses) whose `X-Forwarded-*`/`Forwarded` headers are
    /// believed; from any other peer they are replaced by the gateway's own view.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Client headers whose name has `_`: `drop` (default), `reject` (400) or `allow`.
    #[serde(default)]
    pub headers_with_underscores: UnderscoreHeadersConfig,
    /// The whole request header must arrive within this (408 and close otherwise).
    #[serde(default = "default_client_header_timeout")]
    pub client_header_timeout: Dur,
    /// Close a keep-alive connection when no next request starts within this (0s: no keep-alive).
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: Dur,
    /// Largest request body (413 `body_too_large` beyond it); routes may override; 0: no limit.
    #[serde(default = "default_max_body_size")]
    pub max_body_size: ByteSize,
    /// W3C Trace Context: continue the client's trace or start one (docs/tracing.md).
    #[serde(default)]
    pub tracing: TracingConfig,
}

/// `server.tracing`: how the gateway takes part in a distributed trace.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Read the client's `traceparent`/`tracestate` and send the service a
    /// `traceparent` naming the gateway's span (default on). Off: the headers pass
    /// through untouched, as any other.
    #[serde(default = "yes")]
    pub propagate: bool,
    /// Export a span per sampled request over OTLP/HTTP (off when absent).
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            propagate: true,
            otlp: None,
        }
    }
}

/// `server.tracing.otlp`: where and how the gateway's spans go (docs/tracing.md).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP traces URL (protobuf), e.g.
    /// `http://otel-collector:4318/v1/traces`; a URL without a path gets `/v1/traces`.
    pub endpoint: String,
    /// Share of the traces the gateway starts that it records (0.0..=1.0); a client's
    /// sampled flag decides for the traces it started.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    #[serde(default = "default_otlp_service_name")]
    pub service_name: String,
    /// Extra headers of each export request (e.g. a collector's API key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Give up on one export request after this.
    #[serde(default = "default_otlp_timeout")]
    pub timeout: Dur,
    /// Spans waiting for export at most; past it new spans are dropped and counted.
    #[serde(default = "default_otlp_queue_size")]
    pub queue_size: usize,
    /// Spans per export request at most.
    #[serde(default = "default_otlp_batch_size")]
    pub batch_size: usize,
    /// Export what has queued at least this often.
    #[serde(default = "default_otlp_export_interval")]
    pub export_interval: Dur,
}

fn default_sample_ratio() -> f64 {
    1.0
}
fn default_otlp_service_name() -> String {
    "gateway".to_string()
}
fn default_otlp_timeout() -> Dur {
    Dur::from_secs(10)
}
fn default_otlp_queue_size() -> usize {
    2048
}
fn default_otlp_batch_size() -> usize {
    512
}
fn default_otlp_export_interval() -> Dur {
    Dur::from_secs(5)
}

fn default_client_header_timeout() -> Dur {
    Dur::from_secs(10)
}
fn default_keepalive_timeout() -> Dur {
    Dur::from_secs(60)
}
fn default_max_body_size() -> ByteSize {
    ByteSize::mib(1)
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoreHeadersConfig {
    #[default]
    Drop,
    Reject,
    Allow,
}

fn default_threads() -> usize {
    2
}
fn default_grace_period() -> Dur {
    Dur::from_secs(0)
}
fn default_shutdown_timeout() -> Dur {
    Dur::from_secs(10)
}
fn default_keepalive_pool() -> usize {
    256
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: default_threads(),
            work_stealing: true,
            grace_period: default_grace_period(),
            shutdown_timeout: default_shutdown_timeout(),
            upstream_keepalive_pool: default_keepalive_pool(),
            log: LogConfig::default(),
            trusted_proxies: Vec::new(),
            headers_with_underscores: UnderscoreHeadersConfig::default(),
            client_header_timeout: default_client_header_timeout(),
            keepalive_timeout: default_keepalive_timeout(),
            max_body_size: default_max_body_size(),
            tracing: TracingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// One line per request at INFO on the `access` target.
    #[serde(default = "yes")]
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            access_log: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// One listening socket of the proxy.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `ip:port`, e.g. `0.0.0.0:8080`.
    pub address: String,
    /// Serve HTTPS with these files; HTTP/2 is offered by ALPN.
    /// Plain listeners accept HTTP/1.1 and HTTP/2 with prior knowledge (h2c).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Open connections at most; more are closed at accept (and counted).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Per-connection read buffer of the socket layer (0: none; request headers are
    /// read into a buffer of their own either way). Held for the connection's life.
    #[serde(default = "default_read_buffer")]
    pub read_buffer: ByteSize,
    /// Per-connection write buffer of the socket layer (0: none). With no read
    /// buffer, released while the connection idles between requests.
    #[serde(default = "default_write_buffer")]
    pub write_buffer: ByteSize,
}

fn default_max_connections() -> usize {
    16384
}
fn default_read_buffer() -> ByteSize {
    ByteSize(0)
}
fn default_write_buffer() -> ByteSize {
    ByteSize(1460)
}

impl ListenerConfig {
    /// A plain listener on `address` with the default connection cap.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            tls: None,
            max_connections: default_max_connections(),
            read_buffer: default_read_buffer(),
            write_buffer: default_write_buffer(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// Offer `h2` by ALPN (default true).
    #[serde(default = "yes")]
    pub http2: bool,
}

impl TlsConfig {
    /// These PEM files, `h2` offered.
    pub fn new(cert: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            http2: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` of the admin listener (metrics, health, config view, registry).
    pub address: String,
    /// Bearer token required for write calls (registry); none = open, which is
    /// refused on a non-loopback address unless `allow_unauthenticated_writes`.
    #[serde(default)]
    pub token: Option<String>,
    /// Environment variable holding the token instead of `token` (a Kubernetes
    /// Secret, so the token is not in the config file).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Accept registry writes without a token on a non-loopback admin address
    /// (an explicit, loudly logged opt-out of the exposure rule).
    #[serde(default)]
    pub allow_unauthenticated_writes: bool,
    /// Require the token for `/config`, `/registry/...` and `/discovery` reads too
    /// (`/metrics`, `/health` and `/ready` stay open).
    #[serde(default)]
    pub protect_reads: bool,
    /// `/ready` fails while a service has no available instance (default true: a
    /// single gateway or a compose stack is ready once its services are). Behind a
    /// load balancer of several replicas, turn it off: every replica shares that
    /// condition, and taking them all out turns one empty service into an outage of
    /// every route.
    #[serde(default = "yes")]
    pub ready_requires_instances: bool,
    /// Store of the built-in service registry (memory by default).
    #[serde(default)]
    pub registry: Option<super::discovery::RegistryConfig>,
}

impl AdminConfig {
    /// An admin listener on `address`, every other key at its default.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            token: None,
            token_env: None,
            allow_unauthenticated_writes: false,
            protect_reads: false,
            ready_requires_instances: true,
            registry: None,
        }
    }
}

/// A named set of instances and how to spread load over them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Shorthand for `discovery: {type: static, instances: [...]}`.
    #[serde(default)]
    pub instances: Option<Vec<InstanceConfig>>,
    /// Where the instances come from.
    #[serde(default)]
    pub discovery: Option<DiscoveryConfig>,
    #[serde(default)]
    pub load_balancer: LoadBalancerConfig,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Eject an instance after consecutive failures (connect errors, 502/503/504).
    #[serde(default)]
    pub passive_health: PassiveHealthConfig,
    /// Stop sending to the service for a while when too many calls fail (absent: no breaker).
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Connect to instances over TLS.
    #[serde(default)]
    pub tls: bool,
    /// Speak HTTP/2 to instances (gRPC): by ALPN over TLS, prior knowledge (h2c) in plaintext.
    #[serde(default)]
    pub http2: bool,
    /// SNI and Host for TLS upstreams (defaults to the instance host).
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Dur,
    #[serde(default = "default_read_timeout")]
    pub write_timeout: Dur,
    /// How long an idle upstream connection is kept in the pool.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
}

fn default_connect_timeout() -> Dur {
    Dur::from_secs(2)
}
fn default_read_timeout() -> Dur {
    Dur::from_secs(30)
}
fn default_idle_timeout() -> Dur {
    Dur::from_secs(60)
}

/// What an empty `{}` service parses to (no instances yet).
impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            instances: None,
            discovery: None,
            load_balancer: LoadBalancerConfig::default(),
            health_check: None,
            passive_health: PassiveHealthConfig::default(),
            circuit_breaker: None,
            tls: false,
            http2: false,
            sni: None,
            connect_timeout: default_connect_timeout(),
            read_timeout: default_read_timeout(),
            write_timeout: default_read_timeout(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

/// An instance: `"10.0.0.5:8080"` or `{address: "10.0.0.5:8080", weight: 3}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum InstanceConfig {
    Address(String),
    Detailed(InstanceDetail),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstanceDetail {
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// By hand instead of `untagged`, so a typo inside the map is reported as such
/// (`unknown field `wieght``) rather than "did not match any variant".
impl<'de> Deserialize<'de> for InstanceConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = InstanceConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address \"ip:port\" or {address: \"ip:port\", weight: N}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<InstanceConfig, E> {
                Ok(InstanceConfig::Address(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<InstanceConfig, A::Error> {
                InstanceDetail::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(InstanceConfig::Detailed)
            }
        }
        d.deserialize_any(Shape)
    }
}

impl InstanceConfig {
    pub fn address(&self) -> &str {
        match self {
            InstanceConfig::Address(a) => a,
            InstanceConfig::Detailed(d) => &d.address,
        }
    }
    pub fn weight(&self) -> u32 {
        match self {
            InstanceConfig::Address(_) => 1,
            InstanceConfig::Detailed(d) => d.weight,
        }
    }
}

/// Discovery sources. `static` lists addresses; the others refresh in the background.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DiscoveryConfig {
    Static { instances: Vec<InstanceConfig> },
    Dns(super::discovery::DnsDiscoveryConfig),
    Eureka(super::discovery::EurekaDiscoveryConfig),
    Registry(super::discovery::RegistryDiscoveryConfig),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerConfig {
    #[serde(default)]
    pub algorithm: Algorithm,
    /// For `consistent_hash`: what to hash. Requests without the key are spread round robin.
    #[serde(default)]
    pub hash_on: Option<HashOn>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Weighted round robin (weights default to 1, so equal weights = plain round robin).
    #[default]
    #[serde(alias = "weighted", alias = "weighted_round_robin")]
    RoundRobin,
    LeastConnections,
    /// Power of two random choices, the one with fewer requests in flight wins.
    #[serde(alias = "p2c")]
    PowerOfTwoChoices,
    /// Rendezvous hashing on `hash_on`: a key sticks to one instance while it is healthy.
    ConsistentHash,
    Random,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HashOn {
    Header(String),
    Cookie(String),
    ClientIp,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http` (default) or `tcp`.
    #[serde(default, rename = "type")]
    pub kind: HealthCheckKind,
    /// HTTP path to GET.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Host header for the HTTP check (defaults to `localhost`).
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_expected_status")]
    pub expected_status: u16,
    #[serde(default = "default_health_interval")]
    pub interval: Dur,
    #[serde(default = "default_health_timeout")]
    pub timeout: Dur,
    /// Consecutive successes before an unhealthy instance takes traffic again.
    #[serde(default = "default_rise")]
    pub healthy_threshold: u32,
    /// Consecutive failures before an instance is taken out.
    #[serde(default = "default_fall")]
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    #[default]
    Http,
    Tcp,
}

fn default_health_path() -> String {
    "/health".to_string()
}
fn default_expected_status() -> u16 {
    200
}
fn default_health_interval() -> Dur {
    Dur::from_secs(5)
}
fn default_health_timeout() -> Dur {
    Dur::from_secs(1)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

/// What an empty `health_check: {}` parses to.
impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            kind: HealthCheckKind::default(),
            path: default_health_path(),
            host: None,
            expected_status: default_expected_status(),
            interval: default_health_interval(),
            timeout: default_health_timeout(),
            healthy_threshold: default_rise(),
            unhealthy_threshold: default_fall(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthConfig {
    /// 0 turns passive ejection off.
    #[serde(default = "default_passive_failures")]
    pub consecutive_failures: u32,
    /// How long an ejected instance first sits out; doubles for each repeat ejection.
    #[serde(default = "default_ejection_time")]
    pub ejection_time: Dur,
    /// Cap of the doubling.
    #[serde(default = "default_max_ejection_time")]
    pub max_ejection_time: Dur,
}

fn default_passive_failures() -> u32 {
    5
}
fn default_ejection_time() -> Dur {
    Dur::from_secs(10)
}
fn default_max_ejection_time() -> Dur {
    Dur::from_secs(300)
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: default_passive_failures(),
            ejection_time: default_ejection_time(),
            max_ejection_time: default_max_ejection_time(),
        }
    }
}

/// One route: what it matches and where it sends the request.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Stable name used in metrics and logs (default `route-<index>`).
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// Target service name; `lb://name` (Spring Cloud Gateway style) is accepted too.
    /// Exactly one of `service` and `targets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A weighted split over several services (canary, blue/green) instead of `service`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetConfig>,
    /// With `targets`: requests carrying the same cookie or header value always go
    /// to the same target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyConfig>,
    /// Remove this prefix from the path before forwarding.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Rewrite the path with a regex (captures `$1`, `${name}` in the replacement).
    #[serde(default)]
    pub rewrite: Option<RewriteConfig>,
    #[serde(default)]
    pub request_headers: HeaderRulesConfig,
    #[serde(default)]
    pub response_headers: HeaderRulesConfig,
    /// Overrides the service's timeouts for this route.
    #[serde(default)]
    pub timeouts: Option<TimeoutsConfig>,
    #[serde(default)]
    pub retries: Option<RetryConfig>,
    /// Request budget per client, route, header or JWT claim, per process or shared
    /// by every gateway (`scope: cluster`); see plugins::rate_limit.
    #[serde(default)]
    pub rate_limit: Option<plugins::RateLimitConfig>,
    /// Cross-origin policy: preflights answered at the edge, CORS headers on responses.
    #[serde(default)]
    pub cors: Option<plugins::CorsConfig>,
    /// `public` (default) or a JWT policy; see the auth section.
    #[serde(default)]
    pub auth: plugins::RouteAuthConfig,
    /// Overrides `server.max_body_size` for this route (0: no limit).
    #[serde(default)]
    pub max_body_size: Option<ByteSize>,
}

impl RouteConfig {
    /// A public route to `service` that matches every request.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            id: None,
            matcher: MatchConfig::default(),
            service: Some(service.into()),
            targets: Vec::new(),
            sticky: None,
            strip_prefix: None,
            rewrite: None,
            request_headers: HeaderRulesConfig::default(),
            response_headers: HeaderRulesConfig::default(),
            timeouts: None,
            retries: None,
            rate_limit: None,
            cors: None,
            auth: plugins::RouteAuthConfig::default(),
            max_body_size: None,
        }
    }
}

/// One side of a route's weighted split (`routes[].targets[]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Service name (`lb://name` accepted).
    pub service: String,
    /// Share of the requests relative to the other targets' weights (at least 1).
    pub weight: u32,
}

/// What keeps a client on one target of a split: a cookie or a header value.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum StickyConfig {
    Cookie(String),
    Header(String),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact path (`/health`) or glob (`/api/**`, `/users/*/orders`).
    #[serde(default)]
    pub path: Option<String>,
    /// Plain string prefix of the path.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Regex over the whole path.
    #[serde(default)]
    pub regex: Option<String>,
    /// `api.example.com` or `*.example.com`.
    #[serde(default)]
    pub host: Option<String>,
    /// Allowed methods (any when empty).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header name -> exact value, or `"*"` for presence.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    pub regex: String,
    pub replacement: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderRulesConfig {
    /// Replace (or create) these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append these headers (keeping existing values).
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    #[serde(default)]
    pub connect: Option<Dur>,
    #[serde(default)]
    pub read: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Extra attempts after the first (0 = no retry).
    pub attempts: u32,
    /// Also retry when an instance answers one of these statuses.
    #[serde(default)]
    pub on_status: Vec<u16>,
    /// Retry POST/PATCH and other non-idempotent methods too.
    #[serde(default)]
    pub non_idempotent: bool,
}
