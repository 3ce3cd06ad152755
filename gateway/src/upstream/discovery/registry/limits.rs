//! Caps on what the registry holds (`admin.registry.limits`): a registration that
//! would pass any of them is refused before it is stored, so a client that can
//! write to the registry cannot grow it without bound or point traffic anywhere.
//!
//! The memory store checks under its lock; the Redis store checks inside one Lua
//! script (`redis_store::PUT_CAPPED`), so replicas racing each other hold the caps too.

use std::net::IpAddr;

use ipnet::IpNet;

/// `admin.registry.limits` as the runtime owns it (networks parsed by compile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Distinct service names with at least one instance.
    pub max_services: usize,
    /// Instances of one service.
    pub max_instances_per_service: usize,
    /// Size of one instance's `metadata`, as compact JSON.
    pub max_metadata_bytes: usize,
    /// Networks a registered address must fall in; empty: any.
    pub allowed_networks: Vec<IpNet>,
}

impl Default for RegistryLimits {
    /// The documented defaults of `admin.registry.limits` (the file's defaults read these).
    fn default() -> Self {
        RegistryLimits {
            max_services: 256,
            max_instances_per_service: 256,
            max_metadata_bytes: 4096,
            allowed_networks: Vec::new(),
        }
    }
}

/// Which cap a registration ran into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the registry already holds {max} services (admin.registry.limits.max_services)")]
    TooManyServices { max: usize },
    #[error("service {service:?} already has {max} instances (admin.registry.limits.max_instances_per_service)")]
    TooManyInstances { service: String, max: usize },
    #[error("metadata is {size} bytes as JSON; the limit is {max} (admin.registry.limits.max_metadata_bytes)")]
    MetadataTooLarge { size: usize, max: usize },
    #[error("address {addr} is outside admin.registry.limits.allowed_networks")]
    AddressNotAllowed { addr: IpAddr },
}

impl LimitError {
    /// The `error` code of the JSON refusal and the metric's `reason` label.
    pub fn code(&self) -> &'static str {
        match self {
            LimitError::TooManyServices { .. } => "too_many_services",
            LimitError::TooManyInstances { .. } => "too_many_instances",
            LimitError::MetadataTooLarge { .. } => "metadata_too_large",
            LimitError::AddressNotAllowed { .. } => "address_not_allowed",
        }
    }
}

/// The metadata's size as compact JSON (what is stored and served).
pub(super) fn check_metadata(
    metadata: &std::collections::BTreeMap<String, serde_json::Value>,
    limits: &RegistryLimits,
) -> Result<(), LimitError> {
    let size = serde_json::to_vec(metadata).map_or(usize::MAX, |v| v.len());
    if size > limits.max_metadata_bytes {
        return Err(LimitError::MetadataTooLarge {
            size,
            max: limits.max_metadata_bytes,
        });
    }
    Ok(())
}

/// The resolved address must be in one of `allowed_networks` (when any are listed).
pub(super) fn check_address(ip: IpAddr, limits: &RegistryLimits) -> Result<(), LimitError> {
    if limits.allowed_networks.is_empty() {
        return Ok(());
    }
    // an IPv4-mapped IPv6 address is checked as the IPv4 address it is
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let allowed = limits.allowed_networks.iter().any(|net| net.contains(&ip));
    if allowed {
        Ok(())
    } else {
        Err(LimitError::AddressNotAllowed { addr: ip })
    }
}

/// A CIDR (`10.0.0.0/8`) or a single address (`10.0.0.5`).
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{s:?} is not a CIDR such as \"10.0.0.0/8\" or an address"))
}

/// Check the memory map before inserting `service`/`id` (called under its lock).
pub(super) fn check_counts(
    entries: &super::Entries,
    service: &str,
    id: &str,
    now: u64,
    limits: &RegistryLimits,
) -> Result<(), LimitError> {
    let live = |m: &std::collections::BTreeMap<String, super::Record>| {
        m.values().filter(|r| r.live(now)).count()
    };
    match entries.get(service) {
        Some(m) if m.get(id).is_some_and(|r| r.live(now)) => Ok(()),
        Some(m) if live(m) > 0 => {
            if live(m) >= limits.max_instances_per_service {
                return Err(LimitError::TooManyInstances {
                    service: service.to_string(),
                    max: limits.max_instances_per_service,
                });
            }
            Ok(())
        }
        _ => {
            if limits.max_instances_per_service == 0 {
                return Err(LimitError::TooManyInstances {
                    service: service.to_string(),
                    max: 0,
                });
            }
            let services = entries.values().filter(|m| live(m) > 0).count();
            if services >= limits.max_services {
                return Err(LimitError::TooManyServices {
                    max: limits.max_services,
                });
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_mapped_addresses() {
        let limits = RegistryLimits {
            allowed_networks: vec![
                parse_network("10.0.0.0/8").unwrap(),
                parse_network("192.168.1.7").unwrap(),
            ],
            ..RegistryLimits::default()
        };
        let ok = |s: &str| check_address(s.parse().unwrap(), &limits).is_ok();
        assert!(ok("10.1.2.3"));
        assert!(ok("::ffff:10.1.2.3"));
        assert!(ok("192.168.1.7"));
        assert!(!ok("192.168.1.8"));
        assert!(!ok("127.0.0.1"));
        assert!(parse_network("10.0.0.0/33").is_err());
    }
}
