//! [`RouteBuilder`]: what a route matches, how it rewrites, and its plugins; with
//! the small policies routes share (CORS, rate limits, claim rules).

use std::collections::BTreeMap;

use super::{
    ByteSize, CorsConfig, Dur, HeaderRulesConfig, JwtRouteConfig, OneOrMany, RateLimitConfig,
    RateLimitKey, RateLimitScope, RetryConfig, RewriteConfig, RouteAuthConfig, RouteConfig, Scalar,
    StickyConfig, TargetConfig, TimeoutsConfig,
};

/// A route to a service; it matches every request until conditions are added.
#[derive(Debug, Clone)]
pub struct RouteBuilder(RouteConfig);

impl RouteBuilder {
    /// A public route to `service`.
    pub fn to(service: &str) -> Self {
        Self(RouteConfig::new(service))
    }

    /// A public route split over `(service, weight)` targets (`targets:`).
    pub fn split(targets: &[(&str, u32)]) -> Self {
        let mut route = RouteConfig::new("");
        route.service = None;
        route.targets = targets
            .iter()
            .map(|(service, weight)| TargetConfig {
                service: service.to_string(),
                weight: *weight,
            })
            .collect();
        Self(route)
    }

    /// Keep a cookie or header value on one target of the split.
    pub fn sticky(mut self, sticky: StickyConfig) -> Self {
        self.0.sticky = Some(sticky);
        self
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
        scope: RateLimitScope::Local,
        requests,
        per,
        burst: None,
        key,
        on_redis_error: None,
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
