//! DNS discovery (control plane): resolve a host name's A/AAAA records (with a
//! configured port), or an SRV name's records (targets, ports, weights), and ask
//! again when the answer's TTL runs out, within `min_interval..=max_interval`.
//!
//! Works with Kubernetes headless services (one A record per ready pod; SRV
//! `_port._tcp.svc.ns.svc.cluster.local`) and Consul DNS (`name.service.consul`,
//! SRV with ports). An authoritative "no such name / no records" is an empty
//! set; a timeout or an unreachable server keeps the last set.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use super::{clamp_weight, DiscoveryError, Refresh};
use crate::upstream::policy::{DnsQuery, DnsSpec, IpFamily};
use crate::upstream::Endpoint;

/// Resolves one name on an interval that follows its TTL.
pub struct DnsSource {
    resolver: TokioResolver,
    query: DnsQuery,
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
    pub fn new(spec: &DnsSpec) -> Result<Self, DiscoveryError> {
        let name = match &spec.query {
            DnsQuery::Host { name, .. } | DnsQuery::Srv(name) => name.clone(),
        };
        let mut builder = if spec.nameservers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| dns_err(&name, format!("reading the system's DNS settings: {e}")))?
        } else {
            let mut group = NameServerConfigGroup::new();
            for addr in &spec.nameservers {
                for protocol in [Protocol::Udp, Protocol::Tcp] {
                    let mut c = NameServerConfig::new(*addr, protocol);
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
        opts.timeout = spec.timeout;
        opts.attempts = 2;
        opts.ip_strategy = match spec.family {
            IpFamily::Any => LookupIpStrategy::Ipv4AndIpv6,
            IpFamily::V4 => LookupIpStrategy::Ipv4Only,
            IpFamily::V6 => LookupIpStrategy::Ipv6Only,
        };
        // the cache must never answer for longer than we wait between lookups
        opts.positive_max_ttl = Some(spec.max_interval);
        opts.negative_max_ttl = Some(spec.min_interval);
        Ok(DnsSource {
            resolver: builder.build(),
            query: spec.query.clone(),
            min: spec.min_interval,
            max: spec.max_interval,
        })
    }

    pub fn target(&self) -> String {
        match &self.query {
            DnsQuery::Host { name, port } => format!("{name}:{port}"),
            DnsQuery::Srv(name) => format!("SRV {name}"),
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
            DnsQuery::Host { name, port } => match self.resolver.lookup_ip(name.as_str()).await {
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
            DnsQuery::Srv(name) => self.refresh_srv(name.clone()).await,
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
