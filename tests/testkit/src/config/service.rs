//! [`ServiceBuilder`]: a service's instances, balancer, health and timeouts.

use super::{
    Algorithm, CircuitBreakerConfig, DiscoveryConfig, DnsDiscoveryConfig, Dur,
    EurekaDiscoveryConfig, HashOn, HealthCheckConfig, InstanceConfig, InstanceDetail,
    PassiveHealthConfig, RegistryDiscoveryConfig, ServiceConfig,
};

/// A service: where its instances come from and how load is spread.
#[derive(Debug, Clone)]
pub struct ServiceBuilder(ServiceConfig);

impl ServiceBuilder {
    /// A static list of `ip:port` addresses, each of weight 1.
    pub fn instances<I>(addresses: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self(ServiceConfig {
            instances: Some(
                addresses
                    .into_iter()
                    .map(|a| InstanceConfig::Address(a.into()))
                    .collect(),
            ),
            ..ServiceConfig::default()
        })
    }

    /// A static list of `(address, weight)`.
    pub fn weighted<I, S>(instances: I) -> Self
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        Self(ServiceConfig {
            instances: Some(
                instances
                    .into_iter()
                    .map(|(address, weight)| {
                        InstanceConfig::Detailed(InstanceDetail {
                            address: address.into(),
                            weight,
                        })
                    })
                    .collect(),
            ),
            ..ServiceConfig::default()
        })
    }

    /// Instances from a discovery source.
    pub fn discovery(discovery: DiscoveryConfig) -> Self {
        Self(ServiceConfig {
            discovery: Some(discovery),
            ..ServiceConfig::default()
        })
    }

    /// Instances from the admin registry (`discovery: {type: registry}`).
    pub fn registry() -> Self {
        Self::discovery(DiscoveryConfig::Registry(RegistryDiscoveryConfig::default()))
    }

    /// Instances from DNS.
    pub fn dns(dns: DnsDiscoveryConfig) -> Self {
        Self::discovery(DiscoveryConfig::Dns(dns))
    }

    /// Instances from Eureka.
    pub fn eureka(eureka: EurekaDiscoveryConfig) -> Self {
        Self::discovery(DiscoveryConfig::Eureka(eureka))
    }

    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.0.load_balancer.algorithm = algorithm;
        self
    }

    /// `consistent_hash` on this key.
    pub fn hash_on(mut self, key: HashOn) -> Self {
        self.0.load_balancer.algorithm = Algorithm::ConsistentHash;
        self.0.load_balancer.hash_on = Some(key);
        self
    }

    pub fn health_check(mut self, check: HealthCheckConfig) -> Self {
        self.0.health_check = Some(check);
        self
    }

    /// Passive ejection after `failures` (0: off) for `ejection_time` (the default cap
    /// of its doubling, or `ejection_time` when that is longer).
    pub fn passive_health(mut self, failures: u32, ejection_time: Dur) -> Self {
        let max_ejection_time = PassiveHealthConfig::default()
            .max_ejection_time
            .max(ejection_time);
        self.0.passive_health = PassiveHealthConfig {
            consecutive_failures: failures,
            ejection_time,
            max_ejection_time,
        };
        self
    }

    /// A circuit breaker for the service.
    pub fn circuit_breaker(mut self, breaker: CircuitBreakerConfig) -> Self {
        self.0.circuit_breaker = Some(breaker);
        self
    }

    /// No passive ejection (`consecutive_failures: 0`).
    pub fn no_passive_health(mut self) -> Self {
        self.0.passive_health.consecutive_failures = 0;
        self
    }

    pub fn connect_timeout(mut self, d: Dur) -> Self {
        self.0.connect_timeout = d;
        self
    }

    pub fn read_timeout(mut self, d: Dur) -> Self {
        self.0.read_timeout = d;
        self
    }

    pub fn write_timeout(mut self, d: Dur) -> Self {
        self.0.write_timeout = d;
        self
    }

    pub fn idle_timeout(mut self, d: Dur) -> Self {
        self.0.idle_timeout = d;
        self
    }

    /// TLS to the instances.
    pub fn tls(mut self) -> Self {
        self.0.tls = true;
        self
    }

    /// SNI and Host for TLS instances.
    pub fn sni(mut self, sni: &str) -> Self {
        self.0.sni = Some(sni.to_string());
        self
    }

    /// HTTP/2 to the instances (h2c without TLS).
    pub fn http2(mut self) -> Self {
        self.0.http2 = true;
        self
    }

    /// Change anything else.
    pub fn with(mut self, f: impl FnOnce(&mut ServiceConfig)) -> Self {
        f(&mut self.0);
        self
    }

    pub fn build(self) -> ServiceConfig {
        self.0
    }
}

impl From<ServiceBuilder> for ServiceConfig {
    fn from(b: ServiceBuilder) -> Self {
        b.0
    }
}
