//! Compile one `services.<name>` entry: validate it, resolve its first endpoints,
//! and reuse the previous `Service` (health state, connections) when unchanged.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderName;

use super::super::file::{Algorithm, DiscoveryConfig, InstanceConfig, ServiceConfig};
use super::super::ConfigError;
use crate::runtime::RuntimeConfig;
use crate::upstream::{Endpoint, Service};

pub(super) fn compile_service(
    name: &str,
    cfg: &ServiceConfig,
    path: &str,
    admin: Option<&crate::config::file::AdminConfig>,
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
    let instances: &[InstanceConfig] = match (&cfg.instances, &cfg.discovery) {
        (Some(list), None) => list,
        (None, Some(DiscoveryConfig::Static { instances })) => instances,
        (None, Some(dynamic)) => {
            let dpath = format!("{path}.discovery");
            crate::upstream::discovery::validate(name, dynamic, admin, &dpath, errors);
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
    let lb = &cfg.load_balancer;
    match (lb.algorithm, &lb.hash_on) {
        (Algorithm::ConsistentHash, None) => errors.push(ConfigError::new(
            format!("{path}.load_balancer.hash_on"),
            "consistent_hash needs `hash_on` (header: NAME, cookie: NAME or client_ip)",
        )),
        (alg, Some(_)) if alg != Algorithm::ConsistentHash => errors.push(ConfigError::new(
            format!("{path}.load_balancer.hash_on"),
            "`hash_on` only applies to `algorithm: consistent_hash`",
        )),
        (_, Some(crate::config::file::HashOn::Header(h)))
            if HeaderName::from_bytes(h.as_bytes()).is_err() =>
        {
            errors.push(ConfigError::new(
                format!("{path}.load_balancer.hash_on.header"),
                format!("{h:?} is not a valid header name"),
            ))
        }
        _ => {}
    }
    if let Some(hc) = &cfg.health_check {
        let hpath = format!("{path}.health_check");
        if !hc.path.starts_with('/') || hc.path.parse::<http::Uri>().is_err() {
            errors.push(ConfigError::new(
                format!("{hpath}.path"),
                "must be a path starting with '/'",
            ));
        }
        if hc.interval.get().is_zero() || hc.timeout.get().is_zero() {
            errors.push(ConfigError::new(
                hpath.clone(),
                "interval and timeout must be above zero",
            ));
        }
        if hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
            errors.push(ConfigError::new(
                hpath.clone(),
                "thresholds must be at least 1",
            ));
        }
        if !(100..=599).contains(&hc.expected_status) {
            errors.push(ConfigError::new(
                format!("{hpath}.expected_status"),
                "must be an HTTP status (100..=599)",
            ));
        }
    }
    if cfg.connect_timeout.get().is_zero()
        || cfg.read_timeout.get().is_zero()
        || cfg.write_timeout.get().is_zero()
    {
        errors.push(ConfigError::new(path, "timeouts must be above zero"));
    }
    if errors.len() != before {
        return None;
    }
    let prev = previous.and_then(|p| p.services.get(name));
    if let Some(prev) = prev {
        if prev.config == *cfg {
            return Some(prev.clone());
        }
    }
    if !matches!(cfg.discovery, None | Some(DiscoveryConfig::Static { .. })) {
        // a discovered service starts with what it had; its loop refreshes it
        endpoints = crate::upstream::discovery::initial_endpoints(prev.map(|p| &**p));
    }
    Some(Arc::new(Service::new(
        name,
        cfg.clone(),
        &endpoints,
        prev.map(|p| &**p),
    )))
}
