//! How a service is reached, as the runtime owns it: the balancing algorithm and
//! its hash key, active and passive health, connection options, and where the
//! instances come from. `config::compile` is the only producer of these types (it
//! validates the file and converts it); nothing in `upstream` reads the file schema.
//!
//! Every type compares by value, so a reload that produces an equal [`ServiceSpec`]
//! keeps the running service (its instances, health state and pooled connections).

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use serde::Serialize;

/// Everything about one service except its live instances.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSpec {
    pub balance: Balance,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<ActiveHealth>,
    pub passive_health: PassiveHealth,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    #[serde(skip)]
    pub peer: PeerOptions,
    #[serde(skip)]
    pub discovery: DiscoverySpec,
}

/// How one instance is chosen per attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "algorithm", content = "hash_on")]
pub enum Balance {
    /// Smooth weighted round robin.
    RoundRobin,
    LeastConnections,
    /// Power of two random choices: the one with fewer requests in flight wins.
    PowerOfTwoChoices,
    /// Rendezvous hashing on a request key; requests without the key go round robin.
    ConsistentHash(HashKey),
    Random,
}

impl Balance {
    /// What a consistent-hash balancer hashes, if this is one.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match self {
            Balance::ConsistentHash(k) => Some(k),
            _ => None,
        }
    }
}

/// The request key of consistent hashing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    Header(#[serde(serialize_with = "header_name")] HeaderName),
    Cookie(String),
    ClientIp,
}

fn header_name<S: serde::Serializer>(h: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_str())
}

/// Active health checks: one prober per service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveHealth {
    pub probe: Probe,
    #[serde(with = "human_duration")]
    pub interval: Duration,
    #[serde(with = "human_duration")]
    pub timeout: Duration,
    /// Consecutive passes before an unhealthy instance takes traffic again.
    pub healthy_threshold: u32,
    /// Consecutive failures before an instance is taken out.
    pub unhealthy_threshold: u32,
}

/// What one health probe does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Probe {
    /// GET `path` with `Host: host`; healthy when the answer has `expected_status`.
    Http {
        #[serde(serialize_with = "uri")]
        path: http::Uri,
        host: String,
        expected_status: u16,
    },
    /// A TCP (or TLS) connect.
    Tcp,
}

fn uri<S: serde::Serializer>(u: &http::Uri, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(u)
}

/// Passive health: eject an instance after consecutive failed attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PassiveHealth {
    /// 0: passive ejection off.
    pub consecutive_failures: u32,
    /// The first ejection; each repeat doubles it (see `Instance::report_failure`).
    #[serde(with = "human_duration")]
    pub ejection_time: Duration,
    /// Cap of the doubling (at least `ejection_time`).
    #[serde(with = "human_duration")]
    pub max_ejection_time: Duration,
}

/// A service's circuit breaker (`upstream::circuit_breaker`): when to open, how long to stay
/// open, how many probes decide in half-open.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CircuitBreakerSpec {
    /// Open when at least this share of the window's calls failed (0 < r <= 1).
    pub failure_ratio: f64,
    /// Open when at least this share were slow; 1.0 turns the slow-call rule off.
    pub slow_call_ratio: f64,
    #[serde(with = "human_duration")]
    pub slow_call_duration: Duration,
    #[serde(with = "human_duration")]
    pub window: Duration,
    /// No decision with fewer calls than this in the window.
    pub minimum_calls: u32,
    #[serde(with = "human_duration")]
    pub open_for: Duration,
    pub half_open_calls: u32,
}

impl CircuitBreakerSpec {
    /// Whether slow calls count at all (`slow_call_ratio` below 1.0).
    pub fn counts_slow_calls(&self) -> bool {
        self.slow_call_ratio < 1.0
    }
}

/// Connection settings for every instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerOptions {
    pub tls: bool,
    pub http2: bool,
    /// SNI and Host for TLS upstreams (empty: the instance address).
    pub sni: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Where a service's instances come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoverySpec {
    /// A fixed list, given by compile as the first endpoints.
    Static,
    Dns(DnsSpec),
    Eureka(EurekaSpec),
    /// Instances registered on the admin API under this name.
    Registry {
        name: String,
    },
}

impl DiscoverySpec {
    /// `static`, `dns`, `eureka` or `registry`.
    pub fn kind(&self) -> &'static str {
        match self {
            DiscoverySpec::Static => "static",
            DiscoverySpec::Dns(_) => "dns",
            DiscoverySpec::Eureka(_) => "eureka",
            DiscoverySpec::Registry { .. } => "registry",
        }
    }
}

/// What a DNS source resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsQuery {
    /// A/AAAA records of `name`, every address on `port`.
    Host { name: String, port: u16 },
    /// SRV records (targets, ports and weights from the records).
    Srv(String),
}

/// Which address families a host lookup returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    Any,
    V4,
    V6,
}

/// A DNS discovery source.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSpec {
    pub query: DnsQuery,
    pub family: IpFamily,
    /// Servers to ask instead of the system's resolv.conf (empty: the system's).
    pub nameservers: Vec<SocketAddr>,
    pub min_interval: Duration,
    pub max_interval: Duration,
    pub timeout: Duration,
}

/// A Eureka discovery source for one application.
#[derive(Debug, Clone, PartialEq)]
pub struct EurekaSpec {
    /// Server URLs, tried in order.
    pub servers: Vec<String>,
    /// The application name, upper-cased as Eureka reports it.
    pub app: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Instance metadata key holding the weight.
    pub weight_key: String,
    /// Connect to `hostName` instead of `ipAddr`.
    pub use_hostname: bool,
}

/// Durations in the admin view spelled as the config file spells them (`5s`, `1m 30s`).
mod human_duration {
    use std::time::Duration;

    use serde::Serialize;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        plugins::Dur(*d).serialize(s)
    }
}
