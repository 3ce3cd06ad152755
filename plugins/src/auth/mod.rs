//! Edge authentication (config compile stage -> request_filter stage): the
//! `auth:` section compiled into issuers, key sources, revocation and identity
//! rendering, and the per-route `jwt` plugin built from it.

pub mod cache;
mod compile;
pub mod config;
pub mod error;
pub mod identity;
pub mod jwks;
pub mod jwt_auth;
pub mod key;
pub mod keys;
pub mod metrics;
pub mod mint;
pub mod rules;
pub mod signature;
pub mod token;
pub mod verify;

use std::collections::HashSet;
use std::sync::Arc;

use http::HeaderName;

pub use config::{AuthConfig, JwtRouteConfig, RedisErrorPolicy, RevokeWhen, RouteAuthConfig};
pub use error::AuthError;

use crate::revocation::Revocation;
use crate::{ConfigIssue, Plugin};
use compile::{compile_identity, compile_issuer, JwksHandle};
use jwt_auth::{AuthShared, JwtAuth};

/// Compiled auth state shared by all routes of one config.
pub struct AuthRuntime {
    config: Option<AuthConfig>,
    shared: Arc<AuthShared>,
    jwks: Vec<Arc<JwksHandle>>,
    strip: Vec<HeaderName>,
}

impl AuthRuntime {
    /// Compile the `auth:` section. `previous` lets unchanged state (Redis
    /// connections, revocation mirror, JWKS caches) carry over a reload.
    pub fn compile(
        cfg: Option<&AuthConfig>,
        previous: Option<&Arc<AuthRuntime>>,
        rt: &tokio::runtime::Handle,
    ) -> Result<Arc<AuthRuntime>, Vec<ConfigIssue>> {
        if let Some(p) = previous.filter(|p| p.config.as_ref() == cfg) {
            return Ok(p.clone());
        }
        let default = AuthConfig::default();
        let c = cfg.unwrap_or(&default);
        // touch the metrics so they are exported from the start
        let _ = &metrics::METRICS.success;
        let mut issues = Vec::new();

        let mut jwks_handles = Vec::new();
        let mut issuers = Vec::new();
        let mut names = HashSet::new();
        let mut isses = HashSet::new();
        for (i, ic) in c.issuers.iter().enumerate() {
            let path = format!("auth.issuers[{i}]");
            if ic.name.is_empty() || !names.insert(ic.name.clone()) {
                issues.push(ConfigIssue::new(
                    format!("{path}.name"),
                    format!("issuer name {:?} is empty or used twice", ic.name),
                ));
            }
            if !isses.insert(ic.issuer.clone()) {
                issues.push(ConfigIssue::new(
                    format!("{path}.issuer"),
                    "two issuers expect the same `iss`: tokens could not be told apart",
                ));
            }
            let prev_jwks = previous.map(|p| p.jwks.as_slice()).unwrap_or(&[]);
            match compile_issuer(ic, &path, prev_jwks) {
                Ok((issuer, handle)) => {
                    jwks_handles.extend(handle);
                    issuers.push(issuer);
                }
                Err(mut e) => issues.append(&mut e),
            }
        }

        let token = match HeaderName::from_bytes(c.token.header.as_bytes()) {
            Ok(header) => Some(token::TokenSource {
                header,
                cookie: c.token.cookie.clone(),
                query: c.token.query.clone(),
            }),
            Err(_) => {
                issues.push(ConfigIssue::new(
                    "auth.token.header",
                    "not a valid header name",
                ));
                None
            }
        };

        let revocation = match &c.revocation {
            None => None,
            Some(r) => {
                let prev = previous.and_then(|p| p.shared.revocation.as_ref());
                match Revocation::compile(r, prev, rt, "auth.revocation") {
                    Ok(r) => Some(r),
                    Err(mut e) => {
                        issues.append(&mut e);
                        None
                    }
                }
            }
        };

        let identity = compile_identity(&c.identity, &mut issues);
        let mut strip = Vec::new();
        for (k, name) in c.identity.strip.iter().enumerate() {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => strip.push(h),
                Err(_) => issues.push(ConfigIssue::new(
                    format!("auth.identity.strip[{k}]"),
                    format!("{name:?} is not a valid header name"),
                )),
            }
        }

        let (Some(token), Some(identity), true) = (token, identity, issues.is_empty()) else {
            return Err(issues);
        };
        strip.extend(identity.header_names());
        strip.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        strip.dedup();
        let cache = (c.cache.max_entries > 0).then(|| cache::TokenCache::new(c.cache.max_entries));
        Ok(Arc::new(AuthRuntime {
            config: cfg.cloned(),
            shared: Arc::new(AuthShared {
                issuers,
                token,
                revocation,
                identity,
                cache,
            }),
            jwks: jwks_handles,
            strip,
        }))
    }

    /// Build the plugins a route's policy needs. `path` is the route's key path for errors.
    pub fn route_plugins(
        &self,
        route: &RouteAuthConfig,
        path: &str,
    ) -> Result<Vec<Arc<dyn Plugin>>, Vec<ConfigIssue>> {
        let j = match route {
            RouteAuthConfig::Public => return Ok(Vec::new()),
            RouteAuthConfig::Jwt(j) => j,
        };
        let shared = &self.shared;
        let mut issues = Vec::new();
        if shared.issuers.is_empty() {
            issues.push(ConfigIssue::new(
                path,
                "a jwt policy needs at least one issuer in auth.issuers",
            ));
        }
        let known = || {
            shared
                .issuers
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut allowed = Vec::new();
        for (k, name) in j.issuers.iter().enumerate() {
            match shared.issuers.iter().position(|i| &i.name == name) {
                Some(idx) => allowed.push(idx),
                None => issues.push(ConfigIssue::new(
                    format!("{path}.jwt.issuers[{k}]"),
                    format!("unknown issuer {name:?} (known: {})", known()),
                )),
            }
        }
        if j.issuers.is_empty() {
            allowed = (0..shared.issuers.len()).collect();
        }
        if j.on_redis_error.is_some() && shared.revocation.is_none() {
            issues.push(ConfigIssue::new(
                format!("{path}.jwt.on_redis_error"),
                "has no effect without auth.revocation; remove it or configure revocation",
            ));
        }
        if j.revoke.is_some() && shared.revocation.is_none() {
            issues.push(ConfigIssue::new(
                format!("{path}.jwt.revoke"),
                "the gateway writes this revocation to Redis: configure auth.revocation, or remove revoke",
            ));
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let on_redis_error = j.on_redis_error.unwrap_or_else(|| {
            shared
                .revocation
                .as_ref()
                .map_or(RedisErrorPolicy::Deny, |r| r.on_redis_error())
        });
        let plugin = JwtAuth {
            shared: shared.clone(),
            allowed,
            rules: j
                .require
                .iter()
                .map(|(claim, v)| rules::ClaimRule::new(claim, v))
                .collect(),
            on_redis_error,
            allow_query_token: j.allow_query_token,
            revoke_on_success: j.revoke == Some(RevokeWhen::OnSuccess),
        };
        Ok(vec![Arc::new(plugin)])
    }

    /// Identity headers a client must never be able to send: removed on every route.
    pub fn strip_headers(&self) -> &[HeaderName] {
        &self.strip
    }

    /// Start this section's background work that does not run yet: JWKS refresh
    /// and the revocation mirror's sync. Compiling starts nothing, so a config that
    /// fails to compile, or is never swapped in, leaves no task behind.
    pub fn activate(&self, rt: &tokio::runtime::Handle) {
        for h in &self.jwks {
            h.activate(rt);
        }
        if let Some(r) = &self.shared.revocation {
            r.activate(rt);
        }
    }

    /// Whether auth can decide right now: revocation state known and every JWKS loaded.
    pub fn is_ready(&self) -> bool {
        self.shared.revocation.as_ref().is_none_or(|r| r.is_ready())
            && self.jwks.iter().all(|h| h.jwks.is_loaded())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(secret: &str) -> AuthConfig {
        serde_json::from_value(serde_json::json!({
            "issuers": [{"name": "dev", "issuer": "dev", "algorithms": ["HS256"], "secret": secret}],
            "revocation": {"redis_url": "redis://127.0.0.1:1"},
            "identity": {"headers": {"X-User-Id": "{sub}"}, "strip": ["X-Debug"]}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn unchanged_sections_are_reused_across_reloads() {
        let rt = tokio::runtime::Handle::current();
        let a = AuthRuntime::compile(Some(&cfg("one")), None, &rt).unwrap();
        let same = AuthRuntime::compile(Some(&cfg("one")), Some(&a), &rt).unwrap();
        assert!(
            Arc::ptr_eq(&a, &same),
            "unchanged auth: the whole state carries over"
        );
        let changed = AuthRuntime::compile(Some(&cfg("two")), Some(&a), &rt).unwrap();
        assert!(!Arc::ptr_eq(&a, &changed));
        let (ra, rc) = (
            a.shared.revocation.as_ref().unwrap(),
            changed.shared.revocation.as_ref().unwrap(),
        );
        assert!(
            Arc::ptr_eq(ra, rc),
            "unchanged revocation section: same mirror"
        );
        let names: Vec<&str> = a.strip_headers().iter().map(|h| h.as_str()).collect();
        assert_eq!(names, ["x-debug", "x-user-id"]);
    }

    #[tokio::test]
    async fn route_policies() {
        let rt = tokio::runtime::Handle::current();
        let a = AuthRuntime::compile(Some(&cfg("one")), None, &rt).unwrap();
        assert!(a
            .route_plugins(&RouteAuthConfig::Public, "r")
            .unwrap()
            .is_empty());
        let jwt: RouteAuthConfig = serde_json::from_str(r#"{"jwt":{}}"#).unwrap();
        assert_eq!(a.route_plugins(&jwt, "r").unwrap().len(), 1);
        let bad: RouteAuthConfig = serde_json::from_str(r#"{"jwt":{"issuers":["x"]}}"#).unwrap();
        let e = a.route_plugins(&bad, "routes[0].auth").err().unwrap();
        assert_eq!(e[0].path, "routes[0].auth.jwt.issuers[0]");
        let none = AuthRuntime::compile(None, None, &rt).unwrap();
        assert!(
            none.route_plugins(&jwt, "r").is_err(),
            "jwt needs an issuer"
        );
        assert!(none.strip_headers().is_empty());
        let revoke: RouteAuthConfig =
            serde_json::from_str(r#"{"jwt":{"revoke":"on_success"}}"#).unwrap();
        assert_eq!(a.route_plugins(&revoke, "r").unwrap().len(), 1);
        let mut no_redis = cfg("one");
        no_redis.revocation = None;
        let b = AuthRuntime::compile(Some(&no_redis), None, &rt).unwrap();
        let e = b.route_plugins(&revoke, "routes[2].auth").err().unwrap();
        assert_eq!(e[0].path, "routes[2].auth.jwt.revoke");
    }
}
