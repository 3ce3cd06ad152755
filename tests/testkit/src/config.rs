//! Gateway configs for tests, built from the gateway's own file types
//! (`gateway::config::file`, the discovery and auth sections) and written out as
//! YAML, so a test states what it configures in Rust and a renamed or retyped key
//! is a compile error instead of a gateway that refuses to start.
//!
//! ```no_run
//! use testkit::config::{GatewayConfigBuilder, RouteBuilder, ServiceBuilder};
//! use testkit::{Backend, GatewayProcess};
//! let a = Backend::start("a");
//! let config = GatewayConfigBuilder::new()
//!     .admin()
//!     .service("echo", ServiceBuilder::instances([a.addr()]))
//!     .route(RouteBuilder::to("echo").id("api").prefix("/api/"));
//! // in gateway tests: env!("CARGO_BIN_EXE_gateway")
//! let gw = GatewayProcess::start("target/debug/gateway", &config.yaml());
//! ```
//!
//! Addresses may hold the placeholders [`GatewayProcess`](crate::GatewayProcess)
//! fills in (`$HTTP_PORT`, `$ADMIN_PORT`, `$DIR`, ...). Keep YAML text only where
//! the text itself is under test (syntax errors, spellings, fuzzing).

use std::collections::BTreeMap;
use std::time::Duration;

pub use gateway::config::discovery::{
    DnsDiscoveryConfig, EurekaDiscoveryConfig, IpVersion, RegistryConfig, RegistryDiscoveryConfig,
    RegistryLimitsConfig, RegistryStore,
};
pub use gateway::config::file::{
    AdminConfig, Algorithm, DiscoveryConfig, GatewayConfig, HashOn, HeaderRulesConfig,
    HealthCheckConfig, HealthCheckKind, InstanceConfig, InstanceDetail, ListenerConfig,
    LoadBalancerConfig, LogConfig, LogFormat, MatchConfig, PassiveHealthConfig, RetryConfig,
    RewriteConfig, RouteConfig, ServerConfig, ServiceConfig, TimeoutsConfig, TlsConfig,
    UnderscoreHeadersConfig,
};
pub use gateway::config::size::ByteSize;
pub use plugins::auth::config::{
    AuthConfig, CacheConfig, IdentityConfig, IssuerConfig, JwtRouteConfig, OneOrMany,
    RedisErrorPolicy, RevocationConfig, RevocationMode, RevokeWhen, RouteAuthConfig, Scalar,
    SignatureConfig, TokenConfig,
};
pub use plugins::rate_limit::RateLimitKey;
pub use plugins::{CorsConfig, Dur, RateLimitConfig};

/// The plain listener every test gateway gets by default.
pub const HTTP_ADDRESS: &str = "127.0.0.1:$HTTP_PORT";
/// The TLS listener address ([`GatewayConfigBuilder::https`]).
pub const HTTPS_ADDRESS: &str = "127.0.0.1:$HTTPS_PORT";
/// The admin listener address ([`GatewayConfigBuilder::admin`]).
pub const ADMIN_ADDRESS: &str = "127.0.0.1:$ADMIN_PORT";

/// `n` milliseconds as a config duration.
pub fn ms(n: u64) -> Dur {
    Dur(Duration::from_millis(n))
}

/// `n` seconds as a config duration.
pub fn secs(n: u64) -> Dur {
    Dur::from_secs(n)
}

/// The YAML text of a config, as the gateway reads it.
pub fn to_yaml(config: &GatewayConfig) -> String {
    serde_saphyr::to_string(config).unwrap_or_else(|e| panic!("serialize {config:?}: {e}"))
}

/// A whole config: one plain listener on `$HTTP_PORT`, no admin, no services yet.
#[derive(Debug, Clone)]
pub struct GatewayConfigBuilder(GatewayConfig);

impl Default for GatewayConfigBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayConfigBuilder {
    pub fn new() -> Self {
        Self(GatewayConfig {
            listeners: vec![ListenerConfig::new(HTTP_ADDRESS)],
            ..GatewayConfig::default()
        })
    }

    /// A gateway in front of one service: the listener, the admin listener, the
    /// service `name`, and one route to it for every path.
    pub fn in_front_of(name: &str, service: impl Into<ServiceConfig>) -> Self {
        Self::new()
            .admin()
            .service(name, service)
            .route(RouteBuilder::to(name).prefix("/"))
    }

    /// The admin listener on `$ADMIN_PORT` (readiness then waits for its `/health`).
    pub fn admin(self) -> Self {
        self.admin_config(AdminConfig::new(ADMIN_ADDRESS))
    }

    /// An admin section of the caller's making.
    pub fn admin_config(mut self, admin: AdminConfig) -> Self {
        self.0.admin = Some(admin);
        self
    }

    /// Change the admin section ([`admin`](Self::admin) first adds the default one).
    pub fn admin_with(mut self, f: impl FnOnce(&mut AdminConfig)) -> Self {
        f(self
            .0
            .admin
            .get_or_insert_with(|| AdminConfig::new(ADMIN_ADDRESS)));
        self
    }

    /// One more listener.
    pub fn listener(mut self, listener: ListenerConfig) -> Self {
        self.0.listeners.push(listener);
        self
    }

    /// Replace the listeners.
    pub fn listeners(mut self, listeners: Vec<ListenerConfig>) -> Self {
        self.0.listeners = listeners;
        self
    }

    /// A TLS listener on `$HTTPS_PORT` with these PEM files (e.g. `$DIR/cert.pem`).
    pub fn https(self, cert: &str, key: &str) -> Self {
        self.listener(ListenerConfig {
            tls: Some(TlsConfig::new(cert, key)),
            ..ListenerConfig::new(HTTPS_ADDRESS)
        })
    }

    /// Change the `server` section.
    pub fn server(mut self, f: impl FnOnce(&mut ServerConfig)) -> Self {
        f(&mut self.0.server);
        self
    }

    /// Add (or replace) the service `name`.
    pub fn service(mut self, name: &str, service: impl Into<ServiceConfig>) -> Self {
        self.0.services.insert(name.to_string(), service.into());
        self
    }

    /// Append a route (routes keep the order they are added in).
    pub fn route(mut self, route: impl Into<RouteConfig>) -> Self {
        self.0.routes.push(route.into());
        self
    }

    /// Set the `auth` section.
    pub fn auth(mut self, auth: AuthConfig) -> Self {
        self.0.auth = Some(auth);
        self
    }

    /// Change anything else.
    pub fn with(mut self, f: impl FnOnce(&mut GatewayConfig)) -> Self {
        f(&mut self.0);
        self
    }

    pub fn build(self) -> GatewayConfig {
        self.0
    }

    /// The YAML text for `GatewayProcess::start` / `rewrite_config`.
    pub fn yaml(&self) -> String {
        to_yaml(&self.0)
    }
}

impl From<GatewayConfigBuilder> for GatewayConfig {
    fn from(b: GatewayConfigBuilder) -> Self {
        b.0
    }
}

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

    /// Passive ejection after `failures` (0: off) for `ejection_time`.
    pub fn passive_health(mut self, failures: u32, ejection_time: Dur) -> Self {
        self.0.passive_health = PassiveHealthConfig {
            consecutive_failures: failures,
            ejection_time,
        };
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

/// A route to a service; it matches every request until conditions are added.
#[derive(Debug, Clone)]
pub struct RouteBuilder(RouteConfig);

impl RouteBuilder {
    /// A public route to `service`.
    pub fn to(service: &str) -> Self {
        Self(RouteConfig::new(service))
    }

    pub fn id(mut self, id: &str) -> Self {
        self.0.id = Some(id.to_string());
        self
    }

    /// Match a path prefix.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.0.matcher.prefix = Some(prefix.to_string());
        self
    }

    /// Match an exact path or a glob (`/api/**`).
    pub fn path(mut self, path: &str) -> Self {
        self.0.matcher.path = Some(path.to_string());
        self
    }

    /// Match a regex over the whole path.
    pub fn regex(mut self, regex: &str) -> Self {
        self.0.matcher.regex = Some(regex.to_string());
        self
    }

    /// Match a host (`api.example.com`, `*.example.com`).
    pub fn host(mut self, host: &str) -> Self {
        self.0.matcher.host = Some(host.to_string());
        self
    }

    /// Match these methods only.
    pub fn methods(mut self, methods: &[&str]) -> Self {
        self.0.matcher.methods = methods.iter().map(|m| m.to_string()).collect();
        self
    }

    /// Match a header value (`"*"`: presence).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0
            .matcher
            .headers
            .insert(name.to_string(), value.to_string());
        self
    }

    pub fn strip_prefix(mut self, prefix: &str) -> Self {
        self.0.strip_prefix = Some(prefix.to_string());
        self
    }

    pub fn rewrite(mut self, regex: &str, replacement: &str) -> Self {
        self.0.rewrite = Some(RewriteConfig {
            regex: regex.to_string(),
            replacement: replacement.to_string(),
        });
        self
    }

    /// Set (replace) a header on the upstream request.
    pub fn set_request_header(mut self, name: &str, value: &str) -> Self {
        self.0
            .request_headers
            .set
            .insert(name.to_string(), value.to_string());
        self
    }

    /// Change the upstream request's header rules.
    pub fn request_headers(mut self, f: impl FnOnce(&mut HeaderRulesConfig)) -> Self {
        f(&mut self.0.request_headers);
        self
    }

    /// Change the response's header rules.
    pub fn response_headers(mut self, f: impl FnOnce(&mut HeaderRulesConfig)) -> Self {
        f(&mut self.0.response_headers);
        self
    }

    /// Override the service's read timeout.
    pub fn read_timeout(mut self, d: Dur) -> Self {
        self.0
            .timeouts
            .get_or_insert(TimeoutsConfig {
                connect: None,
                read: None,
            })
            .read = Some(d);
        self
    }

    /// Override the service's connect timeout.
    pub fn connect_timeout(mut self, d: Dur) -> Self {
        self.0
            .timeouts
            .get_or_insert(TimeoutsConfig {
                connect: None,
                read: None,
            })
            .connect = Some(d);
        self
    }

    /// `attempts` extra tries on connect errors (idempotent methods only).
    pub fn retries(self, attempts: u32) -> Self {
        self.retry(RetryConfig {
            attempts,
            on_status: Vec::new(),
            non_idempotent: false,
        })
    }

    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.0.retries = Some(retry);
        self
    }

    pub fn rate_limit(mut self, limit: RateLimitConfig) -> Self {
        self.0.rate_limit = Some(limit);
        self
    }

    pub fn cors(mut self, cors: CorsConfig) -> Self {
        self.0.cors = Some(cors);
        self
    }

    /// Protect the route with a JWT policy.
    pub fn jwt(mut self, policy: JwtRouteConfig) -> Self {
        self.0.auth = RouteAuthConfig::Jwt(policy);
        self
    }

    /// Protect the route: any configured issuer, no claim rules.
    pub fn protected(self) -> Self {
        self.jwt(JwtRouteConfig::default())
    }

    pub fn max_body_size(mut self, size: ByteSize) -> Self {
        self.0.max_body_size = Some(size);
        self
    }

    /// Change anything else.
    pub fn with(mut self, f: impl FnOnce(&mut RouteConfig)) -> Self {
        f(&mut self.0);
        self
    }

    pub fn build(self) -> RouteConfig {
        self.0
    }
}

impl From<RouteBuilder> for RouteConfig {
    fn from(b: RouteBuilder) -> Self {
        b.0
    }
}

/// A CORS policy for these origins, every other key at its default (the defaults
/// are the parser's: the policy is read from `{allow_origins: [...]}`).
pub fn cors_for(origins: &[&str]) -> CorsConfig {
    serde_json::from_value(serde_json::json!({ "allow_origins": origins }))
        .unwrap_or_else(|e| panic!("a CORS policy for {origins:?}: {e}"))
}

/// A rate limit of `requests` per `per`, shared by `key`, burst at its default.
pub fn rate_limit(requests: u32, per: Dur, key: RateLimitKey) -> RateLimitConfig {
    RateLimitConfig {
        requests,
        per,
        burst: None,
        key,
    }
}

/// A claim rule for [`JwtRouteConfig::require`]: the claim holds any of `values`.
pub fn any_of(values: &[&str]) -> OneOrMany {
    match values {
        [one] => OneOrMany::One(Scalar::Str(one.to_string())),
        many => OneOrMany::Many(many.iter().map(|v| Scalar::Str(v.to_string())).collect()),
    }
}

/// A JWT policy whose claim `claim` must hold any of `values` (`roles: [ADMIN, OPS]`).
pub fn require(claim: &str, values: &[&str]) -> JwtRouteConfig {
    JwtRouteConfig {
        require: BTreeMap::from([(claim.to_string(), any_of(values))]),
        ..JwtRouteConfig::default()
    }
}

/// The HS256 secret tests sign their tokens with unless they need their own.
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// The demo issuer: `name: dev`, `issuer: dev`, HS256 with `secret` (what
/// `MintOptions::hs256` signs as).
pub fn hs256_issuer(secret: &str) -> IssuerConfig {
    IssuerConfig {
        issuer: Some("dev".to_string()),
        secret: Some(secret.to_string()),
        ..IssuerConfig::new("dev", vec!["HS256".to_string()])
    }
}

/// An `auth` section trusting the demo issuer under `secret`.
pub fn jwt_auth(secret: &str) -> AuthConfig {
    AuthConfig {
        issuers: vec![hs256_issuer(secret)],
        ..AuthConfig::default()
    }
}

/// Revocation read from a test Redis (mirror mode, deny when it is down).
pub fn revocation(redis_url: &str) -> RevocationConfig {
    RevocationConfig::new(redis_url)
}

/// The demo identity headers: `Authenticated-User: {email}` and `X-User-Id: {sub}`.
pub fn identity_headers() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("Authenticated-User".to_string(), "{email}".to_string()),
        ("X-User-Id".to_string(), "{sub}".to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every builder and fixture, with values that need quoting in YAML.
    fn everything() -> GatewayConfig {
        GatewayConfigBuilder::new()
            .https("$DIR/cert.pem", "$DIR/key.pem")
            .admin_with(|a| {
                a.token = Some("admin-token".into());
                a.registry = Some(RegistryConfig {
                    store: RegistryStore::Redis,
                    redis_url: Some("redis://127.0.0.1:1".into()),
                    ..RegistryConfig::default()
                });
            })
            .server(|s| {
                s.trusted_proxies = vec!["10.0.0.0/8".into()];
                s.headers_with_underscores = UnderscoreHeadersConfig::Reject;
                s.max_body_size = ByteSize(1024);
                s.log.format = LogFormat::Json;
            })
            .auth(AuthConfig {
                revocation: Some(RevocationConfig {
                    mode: RevocationMode::Lookup,
                    lookup_cache: ms(250),
                    ..revocation("redis://127.0.0.1:1")
                }),
                identity: IdentityConfig {
                    headers: identity_headers(),
                    strip: vec!["X-Internal".into()],
                    signature: Some(SignatureConfig::with_secret("sig")),
                },
                ..jwt_auth(TEST_SECRET)
            })
            .service(
                "a",
                ServiceBuilder::weighted([("127.0.0.1:1", 3), ("127.0.0.1:2", 1)])
                    .hash_on(HashOn::Header("x-user".into()))
                    .health_check(HealthCheckConfig {
                        kind: HealthCheckKind::Tcp,
                        interval: ms(100),
                        ..HealthCheckConfig::default()
                    })
                    .passive_health(2, secs(3))
                    .read_timeout(ms(1500))
                    .tls()
                    .sni("localhost")
                    .http2(),
            )
            .service("b", ServiceBuilder::instances(["127.0.0.1:3"]))
            .service("r", ServiceBuilder::registry())
            .service(
                "d",
                ServiceBuilder::dns(DnsDiscoveryConfig {
                    srv: Some("_http._tcp.b.test".into()),
                    nameservers: vec!["127.0.0.1:53".into()],
                    ..DnsDiscoveryConfig::default()
                }),
            )
            .service(
                "e",
                ServiceBuilder::eureka(EurekaDiscoveryConfig::new(vec![
                    "http://127.0.0.1:8761/eureka/".into(),
                ])),
            )
            .route(
                RouteBuilder::to("a")
                    .id("all")
                    .path("/api/**")
                    .host("*.example.com")
                    .methods(&["GET", "post"])
                    .header("x-ver", "2")
                    .header("x-beta", "*")
                    .strip_prefix("/api")
                    .rewrite("^/v1/(?<rest>.*)$", "/${rest}")
                    .set_request_header("x-route", "{sub}")
                    .response_headers(|h| h.remove.push("server".into()))
                    .read_timeout(ms(300))
                    .retry(RetryConfig {
                        attempts: 2,
                        on_status: vec![503],
                        non_idempotent: true,
                    })
                    .rate_limit(RateLimitConfig {
                        burst: Some(1),
                        ..rate_limit(5, secs(1), RateLimitKey::Header("x-key".into()))
                    })
                    .cors(CorsConfig {
                        allow_credentials: true,
                        ..cors_for(&["https://app.example.com"])
                    })
                    .jwt(JwtRouteConfig {
                        on_redis_error: Some(RedisErrorPolicy::Allow),
                        revoke: Some(RevokeWhen::OnSuccess),
                        ..require("roles", &["ADMIN", "true", "7"])
                    })
                    .max_body_size(ByteSize(0)),
            )
            .route(
                RouteBuilder::to("b")
                    .regex("/items/[0-9]+")
                    .jwt(require("tier", &["1"])),
            )
            .route(RouteBuilder::to("lb://b"))
            .build()
    }

    #[test]
    fn built_configs_round_trip_through_the_gateway_parser() {
        let config = everything();
        let text = to_yaml(&config);
        let parsed = gateway::config::parse(&text).unwrap_or_else(|e| panic!("{e:?} in\n{text}"));
        assert_eq!(parsed, config, "{text}");
    }

    #[test]
    fn the_plain_builder_is_a_listener_and_nothing_else() {
        let text = GatewayConfigBuilder::new().yaml();
        let parsed = gateway::config::parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(parsed.listeners, vec![ListenerConfig::new(HTTP_ADDRESS)]);
        assert!(parsed.routes.is_empty() && parsed.admin.is_none());
    }

    #[test]
    fn in_front_of_is_one_service_behind_a_catch_all_route() {
        let built = GatewayConfigBuilder::in_front_of("s", ServiceBuilder::registry()).build();
        let parsed = gateway::config::parse(&to_yaml(&built)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(parsed, built);
        assert_eq!(parsed.admin, Some(AdminConfig::new(ADMIN_ADDRESS)));
        assert_eq!(
            parsed.routes,
            vec![RouteBuilder::to("s").prefix("/").build()]
        );
    }
}
