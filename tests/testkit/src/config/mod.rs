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

mod auth;
mod route;
mod service;

use std::time::Duration;

pub use gateway::config::discovery::{
    DnsDiscoveryConfig, EurekaDiscoveryConfig, IpVersion, RegistryConfig, RegistryDiscoveryConfig,
    RegistryLimitsConfig, RegistryStore,
};
pub use gateway::config::file::{
    AdminConfig, Algorithm, DiscoveryConfig, GatewayConfig, HashOn, HeaderRulesConfig,
    HealthCheckConfig, HealthCheckKind, InstanceConfig, InstanceDetail, ListenerConfig,
    LoadBalancerConfig, LogConfig, LogFormat, MatchConfig, OtlpConfig, PassiveHealthConfig,
    RetryConfig, RewriteConfig, RouteConfig, ServerConfig, ServiceConfig, StickyConfig,
    TargetConfig, TimeoutsConfig, TlsConfig, TracingConfig, UnderscoreHeadersConfig,
};
pub use gateway::config::resilience::CircuitBreakerConfig;
pub use gateway::config::size::ByteSize;
pub use plugins::auth::config::{
    AuthConfig, CacheConfig, IdentityConfig, IssuerConfig, JwtRouteConfig, OneOrMany,
    RedisErrorPolicy, RevocationConfig, RevocationMode, RevokeWhen, RouteAuthConfig, Scalar,
    SignatureConfig, TokenConfig,
};
pub use plugins::rate_limit::{OnRedisError, RateLimitKey, RateLimitScope};
pub use plugins::{CorsConfig, Dur, RateLimitConfig, RateLimitsConfig};

pub use auth::{hs256_issuer, identity_headers, jwt_auth, revocation, TEST_SECRET};
pub use route::{any_of, cors_for, rate_limit, require, RouteBuilder};
pub use service::ServiceBuilder;

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

/// The admin token of [`GatewayConfigBuilder::shared_registry`].
pub const REGISTRY_TOKEN: &str = "demo-registry-token";

impl GatewayConfigBuilder {
    pub fn new() -> Self {
        Self(GatewayConfig {
            listeners: vec![ListenerConfig::new(HTTP_ADDRESS)],
            ..GatewayConfig::default()
        })
    }

    /// A gateway whose service `member` (every path) is found in the built-in registry,
    /// kept in Redis at `redis_url` (synced every 500 ms) so replicas share it; writes
    /// to the registry need [`REGISTRY_TOKEN`].
    pub fn shared_registry(redis_url: &str) -> Self {
        Self::in_front_of("member", ServiceBuilder::registry()).admin_with(|a| {
            a.token = Some(REGISTRY_TOKEN.into());
            a.registry = Some(RegistryConfig {
                store: RegistryStore::Redis,
                redis_url: Some(redis_url.into()),
                sync_interval: ms(500),
                ..RegistryConfig::default()
            });
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

    /// The `rate_limits:` section: `scope: cluster` limits share budgets in this Redis
    /// (timeout 250ms: a busy test machine is not a Redis outage).
    pub fn rate_limits(mut self, redis_url: &str) -> Self {
        self.0.rate_limits = Some(RateLimitsConfig {
            redis_url: redis_url.to_string(),
            timeout: ms(250),
        });
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
