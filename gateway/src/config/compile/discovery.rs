//! Check and convert the discovery sources of a service (`dns`, `eureka`,
//! `registry`) and the admin registry's settings into the runtime's types.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::super::discovery::{
    DnsDiscoveryConfig, EurekaDiscoveryConfig, IpVersion, RegistryConfig, RegistryStore,
};
use super::super::file::DiscoveryConfig;
use super::super::ConfigError;
use crate::upstream::discovery::registry::{
    parse_network, valid_name, RegistryLimits, RegistrySettings, StoreSettings,
};
use crate::upstream::policy::{DiscoverySpec, DnsQuery, DnsSpec, EurekaSpec, IpFamily};

/// The source of a service with `discovery:` (static lists are handled by the caller).
pub(super) fn discovery_spec(
    service: &str,
    cfg: &DiscoveryConfig,
    has_admin: bool,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<DiscoverySpec> {
    match cfg {
        DiscoveryConfig::Static { .. } => Some(DiscoverySpec::Static),
        DiscoveryConfig::Dns(d) => dns_spec(d, path, errors).map(DiscoverySpec::Dns),
        DiscoveryConfig::Eureka(e) => {
            eureka_spec(service, e, path, errors).map(DiscoverySpec::Eureka)
        }
        DiscoveryConfig::Registry(r) => {
            let before = errors.len();
            if !has_admin {
                errors.push(ConfigError::new(
                    path,
                    "the registry lives on the admin listener: add `admin: {address: \"127.0.0.1:9090\"}`",
                ));
            }
            let name = r.name.as_deref().unwrap_or(service);
            if !valid_name(name) {
                errors.push(ConfigError::new(
                    format!("{path}.name"),
                    format!("{name:?}: registry names use letters, digits, '-', '_' and '.' (at most 128)"),
                ));
            }
            (errors.len() == before).then(|| DiscoverySpec::Registry {
                name: name.to_string(),
            })
        }
    }
}

/// `discovery: {type: dns}`.
fn dns_spec(
    cfg: &DnsDiscoveryConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<DnsSpec> {
    let before = errors.len();
    let query = match (&cfg.host, cfg.port, &cfg.srv) {
        (Some(h), Some(p), None) => {
            if h.trim().is_empty() || h.parse::<IpAddr>().is_ok() {
                errors.push(ConfigError::new(
                    format!("{path}.host"),
                    "a DNS name (for a fixed IP use `instances`)",
                ));
            }
            if p == 0 {
                errors.push(ConfigError::new(
                    format!("{path}.port"),
                    "must be 1..=65535",
                ));
            }
            Some(DnsQuery::Host {
                name: h.trim().to_string(),
                port: p,
            })
        }
        (Some(_), None, None) => {
            errors.push(ConfigError::new(
                format!("{path}.port"),
                "`host` needs a `port` (A/AAAA records carry none); or use `srv`",
            ));
            None
        }
        (None, _, Some(s)) => {
            if s.trim().is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.srv"),
                    "must be a DNS name",
                ));
            }
            if cfg.port.is_some() {
                errors.push(ConfigError::new(
                    format!("{path}.port"),
                    "SRV records carry their ports; remove `port`",
                ));
            }
            Some(DnsQuery::Srv(s.trim().to_string()))
        }
        (Some(_), _, Some(_)) => {
            errors.push(ConfigError::new(
                path,
                "give either `host` (with `port`) or `srv`, not both",
            ));
            None
        }
        (None, _, None) => {
            errors.push(ConfigError::new(
                path,
                "name what to resolve: `host` + `port` (A/AAAA) or `srv`",
            ));
            None
        }
    };
    let mut nameservers = Vec::with_capacity(cfg.nameservers.len());
    for (k, ns) in cfg.nameservers.iter().enumerate() {
        match ns.parse::<SocketAddr>() {
            Ok(a) => nameservers.push(a),
            Err(_) => errors.push(ConfigError::new(
                format!("{path}.nameservers[{k}]"),
                format!("{ns:?} is not an ip:port address (e.g. \"10.96.0.10:53\")"),
            )),
        }
    }
    let (min_interval, max_interval) = (cfg.min_interval.get(), cfg.max_interval.get());
    if min_interval < Duration::from_millis(100) || min_interval > max_interval {
        errors.push(ConfigError::new(
            path,
            "min_interval must be at least 100ms and at most max_interval",
        ));
    }
    if cfg.timeout.get().is_zero() {
        errors.push(ConfigError::new(
            format!("{path}.timeout"),
            "must be above zero",
        ));
    }
    let query = query.filter(|_| errors.len() == before)?;
    Some(DnsSpec {
        query,
        family: match cfg.ip_version {
            IpVersion::Any => IpFamily::Any,
            IpVersion::V4 => IpFamily::V4,
            IpVersion::V6 => IpFamily::V6,
        },
        nameservers,
        min_interval,
        max_interval,
        timeout: cfg.timeout.get(),
    })
}

/// `discovery: {type: eureka}`.
fn eureka_spec(
    service: &str,
    cfg: &EurekaDiscoveryConfig,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<EurekaSpec> {
    let before = errors.len();
    if cfg.servers.is_empty() {
        errors.push(ConfigError::new(
            format!("{path}.servers"),
            "at least one Eureka server URL, e.g. [\"http://eureka:8761/eureka/\"]",
        ));
    }
    for (k, s) in cfg.servers.iter().enumerate() {
        match reqwest::Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => errors.push(ConfigError::new(
                format!("{path}.servers[{k}]"),
                format!("{s:?} is not an http(s) URL (e.g. \"http://eureka:8761/eureka/\")"),
            )),
        }
    }
    if let Some(app) = &cfg.app {
        if !valid_name(app) {
            errors.push(ConfigError::new(
                format!("{path}.app"),
                "application names use letters, digits, '-', '_', '.' and ':'",
            ));
        }
    }
    if cfg.interval.get() < Duration::from_millis(100) || cfg.timeout.get().is_zero() {
        errors.push(ConfigError::new(
            path,
            "interval must be at least 100ms and timeout above zero",
        ));
    }
    (errors.len() == before).then(|| EurekaSpec {
        servers: cfg.servers.clone(),
        // Eureka reports application names upper-cased and compares them so
        app: cfg.app.as_deref().unwrap_or(service).to_ascii_uppercase(),
        interval: cfg.interval.get(),
        timeout: cfg.timeout.get(),
        weight_key: cfg.weight_key.clone(),
        use_hostname: cfg.use_hostname,
    })
}

/// `admin.registry`: the store (bound at start) and the limits (applied on reload).
pub(super) fn registry(
    cfg: Option<&RegistryConfig>,
    errors: &mut Vec<ConfigError>,
) -> (RegistrySettings, RegistryLimits) {
    let Some(cfg) = cfg else {
        return Default::default();
    };
    let store = match (cfg.store, &cfg.redis_url) {
        (RegistryStore::Redis, None) => {
            errors.push(ConfigError::new(
                "admin.registry.redis_url",
                "`store: redis` needs `redis_url`, e.g. \"redis://127.0.0.1:6379/0\"",
            ));
            StoreSettings::Memory
        }
        (RegistryStore::Redis, Some(url)) => {
            if let Err(e) = plugins::redis_link::RedisTarget::parse(url) {
                errors.push(ConfigError::new("admin.registry.redis_url", e));
            }
            StoreSettings::Redis { url: url.clone() }
        }
        (RegistryStore::Memory, Some(_)) => {
            errors.push(ConfigError::new(
                "admin.registry.redis_url",
                "only used with `store: redis`",
            ));
            StoreSettings::Memory
        }
        (RegistryStore::Memory, None) => StoreSettings::Memory,
    };
    if cfg.default_ttl.get() < Duration::from_secs(1) || cfg.default_ttl > cfg.max_ttl {
        errors.push(ConfigError::new(
            "admin.registry.default_ttl",
            "must be at least 1s and at most max_ttl",
        ));
    }
    if cfg.sync_interval.get() < Duration::from_millis(100) {
        errors.push(ConfigError::new(
            "admin.registry.sync_interval",
            "must be at least 100ms",
        ));
    }
    if cfg.key_prefix.is_empty() {
        errors.push(ConfigError::new(
            "admin.registry.key_prefix",
            "must not be empty",
        ));
    }
    let l = &cfg.limits;
    let mut allowed_networks = Vec::with_capacity(l.allowed_networks.len());
    for (k, n) in l.allowed_networks.iter().enumerate() {
        match parse_network(n) {
            Ok(net) => allowed_networks.push(net),
            Err(m) => errors.push(ConfigError::new(
                format!("admin.registry.limits.allowed_networks[{k}]"),
                m,
            )),
        }
    }
    for (key, v) in [
        ("max_services", l.max_services),
        ("max_instances_per_service", l.max_instances_per_service),
    ] {
        if v == 0 {
            errors.push(ConfigError::new(
                format!("admin.registry.limits.{key}"),
                "must be at least 1 (a registry that can hold nothing refuses every registration)",
            ));
        }
    }
    let settings = RegistrySettings {
        store,
        key_prefix: cfg.key_prefix.clone(),
        default_ttl: cfg.default_ttl.get(),
        max_ttl: cfg.max_ttl.get(),
        sync_interval: cfg.sync_interval.get(),
    };
    let limits = RegistryLimits {
        max_services: l.max_services,
        max_instances_per_service: l.max_instances_per_service,
        max_metadata_bytes: l.max_metadata_bytes,
        allowed_networks,
    };
    (settings, limits)
}
