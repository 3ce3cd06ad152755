//! The YAML schema of the dynamic discovery sources (`dns`, `eureka`, `registry`)
//! and of the admin registry's store. `config::compile` checks and converts them
//! into the runtime's `upstream::DiscoverySpec` and registry settings.

use serde::{Deserialize, Serialize};

use super::duration::Dur;
use crate::upstream::discovery::registry::{RegistryLimits, RegistrySettings};

/// `discovery: {type: dns, ...}`: A/AAAA records of a host name, or SRV records.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscoveryConfig {
    /// Host name resolved to A/AAAA records (needs `port`), e.g. a Kubernetes
    /// headless service `member.shop.svc.cluster.local`.
    #[serde(default)]
    pub host: Option<String>,
    /// Port of every address `host` resolves to.
    #[serde(default)]
    pub port: Option<u16>,
    /// SRV name, e.g. `_http._tcp.member.shop.svc.cluster.local` or
    /// `member.service.consul`: targets, ports and weights come from the records.
    #[serde(default)]
    pub srv: Option<String>,
    /// `any` (default), `v4` or `v6`.
    #[serde(default)]
    pub ip_version: IpVersion,
    /// DNS servers (`ip:port`, UDP then TCP) to ask instead of the system's resolv.conf.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Never re-resolve sooner than this, even when the TTL is shorter (Consul answers TTL 0).
    #[serde(default = "default_dns_min_interval")]
    pub min_interval: Dur,
    /// Re-resolve at least this often, even when the TTL is longer.
    #[serde(default = "default_dns_max_interval")]
    pub max_interval: Dur,
    /// Timeout of one DNS query.
    #[serde(default = "default_dns_timeout")]
    pub timeout: Dur,
}

fn default_dns_min_interval() -> Dur {
    Dur::from_secs(1)
}
fn default_dns_max_interval() -> Dur {
    Dur::from_secs(30)
}
fn default_dns_timeout() -> Dur {
    Dur::from_secs(2)
}

/// What `{type: dns}` parses to before `host` or `srv` is set.
impl Default for DnsDiscoveryConfig {
    fn default() -> Self {
        Self {
            host: None,
            port: None,
            srv: None,
            ip_version: IpVersion::default(),
            nameservers: Vec::new(),
            min_interval: default_dns_min_interval(),
            max_interval: default_dns_max_interval(),
            timeout: default_dns_timeout(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IpVersion {
    #[default]
    Any,
    V4,
    V6,
}

/// `discovery: {type: eureka, ...}`: poll a Eureka server for one application.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EurekaDiscoveryConfig {
    /// Eureka server URLs, tried in order (Spring's `defaultZone` form
    /// `http://host:8761/eureka/` and a bare `http://host:8761` both work).
    pub servers: Vec<String>,
    /// Application name as registered (`spring.application.name`); default: the
    /// service name. Eureka compares it case-insensitively.
    #[serde(default)]
    pub app: Option<String>,
    /// How often to poll (the Spring Cloud client default is 30s).
    #[serde(default = "default_eureka_interval")]
    pub interval: Dur,
    /// Timeout of one request to one server.
    #[serde(default = "default_eureka_timeout")]
    pub timeout: Dur,
    /// Instance metadata key that holds the instance's weight (default `weight`).
    #[serde(default = "default_weight_key")]
    pub weight_key: String,
    /// Connect to `hostName` instead of `ipAddr` (like `eureka.instance.prefer-ip-address: false`).
    #[serde(default)]
    pub use_hostname: bool,
}

fn default_eureka_interval() -> Dur {
    Dur::from_secs(10)
}
fn default_eureka_timeout() -> Dur {
    Dur::from_secs(3)
}
fn default_weight_key() -> String {
    "weight".to_string()
}

impl EurekaDiscoveryConfig {
    /// Poll these servers, every other key at its default.
    pub fn new(servers: Vec<String>) -> Self {
        Self {
            servers,
            app: None,
            interval: default_eureka_interval(),
            timeout: default_eureka_timeout(),
            weight_key: default_weight_key(),
            use_hostname: false,
        }
    }
}

/// `discovery: {type: registry}`: instances that registered on the admin port.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryDiscoveryConfig {
    /// Name the instances register under; default: the service name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `admin.registry`: where the built-in registry keeps its state.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `memory` (default: one gateway) or `redis` (replicas share one registry).
    #[serde(default)]
    pub store: RegistryStore,
    /// For `store: redis`, e.g. `redis://127.0.0.1:6379/0`.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Prefix of the Redis keys and the change channel.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// TTL of a registration that names none.
    #[serde(default = "default_ttl")]
    pub default_ttl: Dur,
    /// Longest TTL a registration may ask for.
    #[serde(default = "default_max_ttl")]
    pub max_ttl: Dur,
    /// With Redis: how often each gateway re-reads the whole registry (changes
    /// from other replicas also arrive at once by pub/sub).
    #[serde(default = "default_sync_interval")]
    pub sync_interval: Dur,
    /// Caps on what registrations may hold (applied on reload, no restart needed).
    #[serde(default)]
    pub limits: RegistryLimitsConfig,
}

/// `admin.registry.limits`: a registration beyond any of these is refused with a 4xx.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryLimitsConfig {
    /// Distinct service names with at least one instance.
    #[serde(default = "default_max_services")]
    pub max_services: usize,
    /// Instances of one service.
    #[serde(default = "default_max_instances")]
    pub max_instances_per_service: usize,
    /// Size of one instance's `metadata`, as compact JSON.
    #[serde(default = "default_max_metadata_bytes")]
    pub max_metadata_bytes: usize,
    /// CIDRs a registered address must fall in (after resolving); empty: any.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
}

impl Default for RegistryLimitsConfig {
    fn default() -> Self {
        Self {
            max_services: default_max_services(),
            max_instances_per_service: default_max_instances(),
            max_metadata_bytes: default_max_metadata_bytes(),
            allowed_networks: Vec::new(),
        }
    }
}

// the defaults are the runtime's, so the file and a gateway without the section agree
fn default_max_services() -> usize {
    RegistryLimits::default().max_services
}
fn default_max_instances() -> usize {
    RegistryLimits::default().max_instances_per_service
}
fn default_max_metadata_bytes() -> usize {
    RegistryLimits::default().max_metadata_bytes
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            store: RegistryStore::Memory,
            redis_url: None,
            key_prefix: default_key_prefix(),
            default_ttl: default_ttl(),
            max_ttl: default_max_ttl(),
            sync_interval: default_sync_interval(),
            limits: RegistryLimitsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RegistryStore {
    #[default]
    Memory,
    Redis,
}

fn default_key_prefix() -> String {
    RegistrySettings::default().key_prefix
}
fn default_ttl() -> Dur {
    Dur(RegistrySettings::default().default_ttl)
}
fn default_max_ttl() -> Dur {
    Dur(RegistrySettings::default().max_ttl)
}
fn default_sync_interval() -> Dur {
    Dur(RegistrySettings::default().sync_interval)
}
