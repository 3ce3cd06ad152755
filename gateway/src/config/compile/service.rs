//! Compile one `services.<name>` entry: validate it into a [`ServiceSpec`], resolve
//! its first endpoints, and reuse the previous `Service` (health state, connections)
//! when its spec is unchanged.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderName;

use super::super::file::{
    Algorithm, DiscoveryConfig, HashOn, HealthCheckConfig, HealthCheckKind, InstanceConfig,
    LoadBalancerConfig, ServiceConfig,
};
use super::super::ConfigError;
use super::discovery::discovery_spec;
use super::resilience::{circuit_breaker, passive_health};
use crate::runtime::RuntimeConfig;
use crate::upstream::policy::{
    ActiveHealth, Balance, DiscoverySpec, HashKey, PeerOptions, Probe, ServiceSpec,
};
use crate::upstream::{Endpoint, Service};

pub(super) fn compile_service(
    name: &str,
    cfg: &ServiceConfig,
    path: &str,
    has_admin: bool,
    previous: Option<&RuntimeConfig>,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<Service>> {
    let before = errors.len();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        errors.push(ConfigError::new(
            path,
            "service names use letters, digits, '-', '_' and '.' only",
        ));
    }
    let mut discovery = Some(DiscoverySpec::Static);
    let instances: &[InstanceConfig] = match (&cfg.instances, &cfg.discovery) {
        (Some(list), None) => list,
        (None, Some(DiscoveryConfig::Static { instances })) => instances,
        (None, Some(dynamic)) => {
            let dpath = format!("{path}.discovery");
            discovery = discovery_spec(name, dynamic, has_admin, &dpath, errors);
            &[]
        }
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(
                path,
                "give either `instances` or `discovery`, not both",
            ));
            &[]
        }
        (None, None) => {
            errors.push(ConfigError::new(
                path,
                "no instances: add `instances: [\"host:port\"]` or a `discovery` section",
            ));
            &[]
        }
    };
    let mut endpoints = Vec::with_capacity(instances.len());
    for (k, inst) in instances.iter().enumerate() {
        let ipath = format!("{path}.instances[{k}]");
        match inst.address().parse::<SocketAddr>() {
            Ok(addr) => endpoints.push(Endpoint {
                addr,
                weight: inst.weight(),
            }),
            Err(_) => errors.push(ConfigError::new(
                ipath.clone(),
                format!(
                    "{:?} is not an ip:port address (static instances are IP addresses; use `discovery: {{type: dns}}` for host names)",
                    inst.address()
                ),
            )),
        }
        if inst.weight() == 0 || inst.weight() > 10_000 {
            errors.push(ConfigError::new(
                format!("{ipath}.weight"),
                "weight must be 1..=10000",
            ));
        }
    }
    let balance = balance(&cfg.load_balancer, path, errors);
    let health_check = cfg
        .health_check
        .as_ref()
        .and_then(|hc| active_health(hc, &format!("{path}.health_check"), errors));
    let passive_health = passive_health(
        &cfg.passive_health,
        &format!("{path}.passive_health"),
        errors,
    );
    let circuit_breaker = cfg
        .circuit_breaker
        .as_ref()
        .and_then(|cb| circuit_breaker(cb, &format!("{path}.circuit_breaker"), errors));
    if cfg.connect_timeout.get().is_zero()
        || cfg.read_timeout.get().is_zero()
        || cfg.write_timeout.get().is_zero()
    {
        errors.push(ConfigError::new(path, "timeouts must be above zero"));
    }
    if errors.len() != before {
        return None;
    }
    let (Some(balance), Some(discovery), Some(passive_health)) =
        (balance, discovery, passive_health)
    else {
        return None;
    };
    let spec = ServiceSpec {
        balance,
        health_check,
        passive_health,
        circuit_breaker,
        peer: PeerOptions {
            tls: cfg.tls,
            http2: cfg.http2,
            sni: cfg.sni.clone().unwrap_or_default(),
            connect_timeout: cfg.connect_timeout.get(),
            read_timeout: cfg.read_timeout.get(),
            write_timeout: cfg.write_timeout.get(),
            idle_timeout: cfg.idle_timeout.get(),
        },
        discovery,
    };
    let prev = previous.and_then(|p| p.services.get(name));
    if let Some(prev) = prev {
        // a static service's endpoints are part of what must match
        let same_endpoints = spec.discovery != DiscoverySpec::Static
            || crate::upstream::discovery::initial_endpoints(Some(prev)) == endpoints;
        if prev.spec == spec && same_endpoints {
            return Some(prev.clone());
        }
    }
    if spec.discovery != DiscoverySpec::Static {
        // a discovered service starts with what it had; its loop refreshes it
        endpoints = crate::upstream::discovery::initial_endpoints(prev.map(|p| &**p));
    }
    Some(Arc::new(Service::new(
        name,
        spec,
        &endpoints,
        prev.map(|p| &**p),
    )))
}

/// `load_balancer`: the algorithm and, for consistent hashing, its key.
fn balance(lb: &LoadBalancerConfig, path: &str, errors: &mut Vec<ConfigError>) -> Option<Balance> {
    let hpath = format!("{path}.load_balancer.hash_on");
    let key = match &lb.hash_on {
        None => None,
        Some(HashOn::Header(h)) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => Some(HashKey::Header(name)),
            Err(_) => {
                errors.push(ConfigError::new(
                    format!("{hpath}.header"),
                    format!("{h:?} is not a valid header name"),
                ));
                return None;
            }
        },
        Some(HashOn::Cookie(c)) => Some(HashKey::Cookie(c.clone())),
        Some(HashOn::ClientIp) => Some(HashKey::ClientIp),
    };
    let balance = match (lb.algorithm, key) {
        (Algorithm::ConsistentHash, Some(key)) => Balance::ConsistentHash(key),
        (Algorithm::ConsistentHash, None) => {
            errors.push(ConfigError::new(
                hpath,
                "consistent_hash needs `hash_on` (header: NAME, cookie: NAME or client_ip)",
            ));
            return None;
        }
        (_, Some(_)) => {
            errors.push(ConfigError::new(
                hpath,
                "`hash_on` only applies to `algorithm: consistent_hash`",
            ));
            return None;
        }
        (Algorithm::RoundRobin, None) => Balance::RoundRobin,
        (Algorithm::LeastConnections, None) => Balance::LeastConnections,
        (Algorithm::PowerOfTwoChoices, None) => Balance::PowerOfTwoChoices,
        (Algorithm::Random, None) => Balance::Random,
    };
    Some(balance)
}

/// `health_check`: the probe, its timing and thresholds.
fn active_health(
    hc: &HealthCheckConfig,
    hpath: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<ActiveHealth> {
    let before = errors.len();
    let uri = hc
        .path
        .parse::<http::Uri>()
        .ok()
        .filter(|_| hc.path.starts_with('/'));
    if uri.is_none() {
        errors.push(ConfigError::new(
            format!("{hpath}.path"),
            "must be a path starting with '/'",
        ));
    }
    if hc.interval.get().is_zero() || hc.timeout.get().is_zero() {
        errors.push(ConfigError::new(
            hpath,
            "interval and timeout must be above zero",
        ));
    }
    if hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
        errors.push(ConfigError::new(hpath, "thresholds must be at least 1"));
    }
    if !(100..=599).contains(&hc.expected_status) {
        errors.push(ConfigError::new(
            format!("{hpath}.expected_status"),
            "must be an HTTP status (100..=599)",
        ));
    }
    let uri = uri.filter(|_| errors.len() == before)?;
    let probe = match hc.kind {
        HealthCheckKind::Tcp => Probe::Tcp,
        HealthCheckKind::Http => Probe::Http {
            path: uri,
            host: hc.host.clone().unwrap_or_else(|| "localhost".to_string()),
            expected_status: hc.expected_status,
        },
    };
    Some(ActiveHealth {
        probe,
        interval: hc.interval.get(),
        timeout: hc.timeout.get(),
        healthy_threshold: hc.healthy_threshold,
        unhealthy_threshold: hc.unhealthy_threshold,
    })
}
