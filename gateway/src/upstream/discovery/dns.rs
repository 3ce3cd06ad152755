//! DNS discovery (control plane): resolve a host name's A/AAAA records (with a
//! configured port), or an SRV name's records (targets, ports, weights), and ask
//! again when the answer's TTL runs out, within `min_interval..=max_interval`.
//!
//! Works with Kubernetes headless services (one A record per ready pod; SRV
//! `_port._tcp.svc.ns.svc.cluster.local`) and Consul DNS (`name.service.consul`,
//! SRV with ports). An authoritative "no such name / no records" is an empty
//! set; a timeout or an unreachable server keeps the last set.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use super::{clamp_weight, DiscoveryError, Refresh};
use crate::config::discovery::{DnsDiscoveryConfig, IpVersion};
use crate::config::ConfigError;
use crate::upstream::Endpoint;

/// Check `discovery: {type: dns}` settings.
pub fn validate(cfg: &DnsDiscoveryConfig, path: &str, errors: &mut Vec<ConfigError>) {
    match (&cfg.host, cfg.port, &cfg.srv) {
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
        }
        (Some(_), None, None) => errors.push(ConfigError::new(
            format!("{path}.port"),
            "`host` needs a `port` (A/AAAA records carry none); or use `srv`",
        )),
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
        }
        (Some(_), _, Some(_)) => errors.push(ConfigError::new(
            path,
            "give either `host` (with `port`) or `srv`, not both",
        )),
        (None, _, None) => errors.push(ConfigError::new(
            path,
            "name what to resolve: `host` + `port` (A/AAAA) or `srv`",
        )),
    }
    for (k, ns) in cfg.nameservers.iter().enumerate() {
        if ns.parse::<SocketAddr>().is_err() {
            errors.push(ConfigError::new(
                format!("{path}.nameservers[{k}]"),
                format!("{ns:?} is not an ip:port address (e.g. \"10.96.0.10:53\")"),
            ));
        }
    }
    if cfg.min_interval.get() < Duration::from_millis(100) || cfg.min_interval > cfg.max_interval {
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
}

enum Query {
    Host { name: String, port: u16 },
    Srv(String),
}

/// Resolves one name on an interval that follows its TTL.
pub struct DnsSource {
    resolver: TokioResolver,
    query: Query,
    min: Duration,
    max: Duration,
}

fn dns_err(name: &str, e: impl std::fmt::Display) -> DiscoveryError {
    DiscoveryError::Dns {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

impl DnsSource {
    pub fn new(cfg: &DnsDiscoveryConfig) -> Result<Self, DiscoveryError> {
        let query = match (&cfg.host, cfg.port, &cfg.srv) {
            (Some(h), Some(p), None) => Query::Host {
                name: h.trim().to_string(),
                port: p,
            },
            (None, None, Some(s)) => Query::Srv(s.trim().to_string()),
            _ => return Err(dns_err("?", "invalid dns discovery settings")),
        };
        let name = match &query {
            Query::Host { name, .. } | Query::Srv(name) => name.clone(),
        };
        let mut builder = if cfg.nameservers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| dns_err(&name, format!("reading the system's DNS settings: {e}")))?
        } else {
            let mut group = NameServerConfigGroup::new();
            for ns in &cfg.nameservers {
                let addr: SocketAddr = ns
                    .parse()
                    .map_err(|_| dns_err(&name, format!("bad nameserver {ns:?}")))?;
                for protocol in [Protocol::Udp, Protocol::Tcp] {
                    let mut c = NameServerConfig::new(addr, protocol);
                    c.trust_negative_responses = true;
                    group.push(c);
                }
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], group),
                TokioConnectionProvider::default(),
            )
        };
        let opts = builder.options_mut();
        opts.timeout = cfg.timeout.get();
        opts.attempts = 2;
        opts.ip_strategy = match cfg.ip_version {
            IpVersion::Any => LookupIpStrategy::Ipv4AndIpv6,
            IpVersion::V4 => LookupIpStrategy::Ipv4Only,
            IpVersion::V6 => LookupIpStrategy::Ipv6Only,
        };
        // the cache must never answer for longer than we wait between lookups
        opts.positive_max_ttl = Some(cfg.max_interval.get());
        opts.negative_max_ttl = Some(cfg.min_interval.get());
        Ok(DnsSource {
            resolver: builder.build(),
            query,
            min: cfg.min_interval.get(),
            max: cfg.max_interval.get(),
        })
    }

    pub fn target(&self) -> String {
        match &self.query {
            Query::Host { name, port } => format!("{name}:{port}"),
            Query::Srv(name) => format!("SRV {name}"),
        }
    }

    pub fn retry_after(&self) -> Duration {
        self.min
    }

    fn next_after(&self, valid_until: Instant) -> Duration {
        valid_until
            .saturating_duration_since(Instant::now())
            .clamp(self.min, self.max)
    }

    pub async fn refresh(&mut self) -> Result<Refresh, DiscoveryError> {
        match &self.query {
            Query::Host { name, port } => match self.resolver.lookup_ip(name.as_str()).await {
                Ok(lookup) => {
                    let mut endpoints: Vec<Endpoint> = lookup
                        .iter()
                        .map(|ip| Endpoint {
                            addr: SocketAddr::new(ip, *port),
                            weight: 1,
                        })
                        .collect();
                    endpoints.sort_by_key(|e| e.addr);
                    Ok(Refresh {
                        endpoints,
                        next: self.next_after(lookup.valid_until()),
                    })
                }
                Err(e) if no_records(&e) => Ok(self.empty(name)),
                Err(e) => Err(dns_err(name, e)),
            },
            Query::Srv(name) => self.refresh_srv(name.clone()).await,
        }
    }

    fn empty(&self, name: &str) -> Refresh {
        tracing::warn!(
            name,
            "dns: the name has no records; the service has no instances"
        );
        Refresh {
            endpoints: Vec::new(),
            next: self.min,
        }
    }

    async fn refresh_srv(&self, name: String) -> Result<Refresh, DiscoveryError> {
        let lookup = match self.resolver.srv_lookup(name.as_str()).await {
            Ok(l) => l,
            Err(e) if no_records(&e) => return Ok(self.empty(&name)),
            Err(e) => return Err(dns_err(&name, e)),
        };
        let mut valid_until = lookup.as_lookup().valid_until();
        // only the most preferred (lowest) priority is used, as RFC 2782 asks
        let Some(best) = lookup.iter().map(|s| s.priority()).min() else {
            return Ok(self.empty(&name));
        };
        let mut targets: BTreeMap<String, Vec<(u16, u32)>> = BTreeMap::new();
        for srv in lookup.iter().filter(|s| s.priority() == best) {
            targets
                .entry(srv.target().to_utf8())
                .or_default()
                .push((srv.port(), clamp_weight(u64::from(srv.weight()))));
        }
        let mut endpoints = Vec::new();
        for (target, ports) in targets {
            let ips = match self.resolver.lookup_ip(target.as_str()).await {
                Ok(l) => {
                    valid_until = valid_until.min(l.valid_until());
                    l.iter().collect::<Vec<_>>()
                }
                Err(e) if no_records(&e) => {
                    tracing::warn!(srv = %name, %target, "dns: an SRV target has no address; skipped");
                    continue;
                }
                Err(e) => return Err(dns_err(&target, e)),
            };
            for ip in ips {
                for (port, weight) in &ports {
                    endpoints.push(Endpoint {
                        addr: SocketAddr::new(ip, *port),
                        weight: *weight,
                    });
                }
            }
        }
        endpoints.sort_by_key(|e| e.addr);
        Ok(Refresh {
            endpoints,
            next: self.next_after(valid_until),
        })
    }
}

fn no_records(e: &ResolveError) -> bool {
    e.is_no_records_found() || e.is_nx_domain()
}
