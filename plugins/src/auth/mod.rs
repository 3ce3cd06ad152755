//! Edge authentication (config compile stage -> request_filter stage): the
//! `auth:` section compiled into issuers, key sources, revocation and identity
//! rendering, and the per-route `jwt` plugin built from it.

pub mod cache;
pub mod config;
pub mod error;
pub mod identity;
pub mod jwks;
pub mod jwt_auth;
pub mod keys;
pub mod metrics;
pub mod mint;
pub mod rules;
pub mod token;
pub mod verify;

use std::collections::HashSet;
use std::sync::Arc;

use http::HeaderName;
use jsonwebtoken::AlgorithmFamily;

pub use config::{AuthConfig, JwtRouteConfig, RedisErrorPolicy, RouteAuthConfig};
pub use error::AuthError;

use crate::revocation::{Revocation, TaskGuard};
use crate::{ConfigIssue, Plugin};
use jwks::{Jwks, JwksSettings};
use jwt_auth::{AuthShared, JwtAuth};
use keys::{family_name, key_from_pem, parse_algorithm, KeyEntry, KeySource};
use verify::Issuer;

/// A JWKS source and the task refreshing it (shared across reloads while unchanged).
struct JwksHandle {
    jwks: Arc<Jwks>,
    _task: TaskGuard,
}

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
            match compile_issuer(ic, &path, prev_jwks, rt) {
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
        };
        Ok(vec![Arc::new(plugin)])
    }

    /// Identity headers a client must never be able to send: removed on every route.
    pub fn strip_headers(&self) -> &[HeaderName] {
        &self.strip
    }

    /// Whether auth can decide right now: revocation state known and every JWKS loaded.
    pub fn is_ready(&self) -> bool {
        self.shared.revocation.as_ref().is_none_or(|r| r.is_ready())
            && self.jwks.iter().all(|h| h.jwks.is_loaded())
    }
}

fn compile_issuer(
    ic: &config::IssuerConfig,
    path: &str,
    prev_jwks: &[Arc<JwksHandle>],
    rt: &tokio::runtime::Handle,
) -> Result<(Issuer, Option<Arc<JwksHandle>>), Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let mut algorithms = Vec::new();
    for (k, a) in ic.algorithms.iter().enumerate() {
        match parse_algorithm(a) {
            Ok(alg) => algorithms.push(alg),
            Err(m) => issues.push(ConfigIssue::new(format!("{path}.algorithms[{k}]"), m)),
        }
    }
    let family = algorithms.first().map(|a| a.family());
    if algorithms.is_empty() && issues.is_empty() {
        issues.push(ConfigIssue::new(
            format!("{path}.algorithms"),
            "list the accepted algorithms, e.g. [RS256]",
        ));
    }
    if algorithms.iter().any(|a| Some(a.family()) != family) {
        issues.push(ConfigIssue::new(
            format!("{path}.algorithms"),
            "mixes algorithm families (e.g. HS256 with RS256): one issuer, one key type; declare two issuers instead",
        ));
    }
    let sources = [
        ic.secret.is_some(),
        ic.secret_env.is_some(),
        ic.public_key_file.is_some(),
        ic.jwks_url.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        issues.push(ConfigIssue::new(
            path,
            "set exactly one key source: secret, secret_env, public_key_file or jwks_url",
        ));
    }
    let Some(family) = family.filter(|_| issues.is_empty()) else {
        return Err(issues);
    };
    let hmac_only = |what: &str| {
        ConfigIssue::new(
            format!("{path}.{what}"),
            format!(
                "a shared secret only verifies HMAC (HS*) tokens, but algorithms are {}",
                family_name(family)
            ),
        )
    };
    let mut handle = None;
    let keys = if let Some(s) = &ic.secret {
        if family != AlgorithmFamily::Hmac {
            return Err(vec![hmac_only("secret")]);
        }
        static_hmac(s.as_bytes(), &format!("{path}.secret"))?
    } else if let Some(var) = &ic.secret_env {
        if family != AlgorithmFamily::Hmac {
            return Err(vec![hmac_only("secret_env")]);
        }
        let s = std::env::var(var).map_err(|_| {
            vec![ConfigIssue::new(
                format!("{path}.secret_env"),
                format!("environment variable {var} is not set (or not UTF-8)"),
            )]
        })?;
        static_hmac(s.as_bytes(), &format!("{path}.secret_env"))?
    } else if let Some(file) = &ic.public_key_file {
        let p = format!("{path}.public_key_file");
        let pem = std::fs::read(file)
            .map_err(|e| vec![ConfigIssue::new(&p, format!("cannot read {file}: {e}"))])?;
        let key = key_from_pem(&pem, family).map_err(|m| vec![ConfigIssue::new(&p, m)])?;
        KeySource::Static(Arc::new(KeyEntry { key, alg: None }))
    } else if let Some(url) = &ic.jwks_url {
        let settings = JwksSettings {
            issuer: ic.name.clone(),
            url: url.clone(),
            refresh: ic.jwks_refresh.get(),
            min_refetch: ic.jwks_min_refetch.get(),
            timeout: ic.jwks_timeout.get(),
        };
        let p = format!("{path}.jwks_url");
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(vec![ConfigIssue::new(
                p,
                "must be an http:// or https:// URL",
            )]);
        }
        if settings.refresh.is_zero() || settings.timeout.is_zero() {
            return Err(vec![ConfigIssue::new(
                format!("{path}.jwks_refresh"),
                "jwks_refresh and jwks_timeout must be more than 0s",
            )]);
        }
        let h = match prev_jwks.iter().find(|h| *h.jwks.settings() == settings) {
            Some(h) => h.clone(),
            None => {
                let jwks = Jwks::new(settings).map_err(|m| vec![ConfigIssue::new(&p, m)])?;
                let task = rt.spawn(jwks.clone().run());
                Arc::new(JwksHandle {
                    jwks,
                    _task: TaskGuard::new(task),
                })
            }
        };
        let keys = KeySource::Jwks(h.jwks.clone());
        handle = Some(h);
        keys
    } else {
        return Err(issues);
    };
    Ok((
        Issuer {
            name: ic.name.clone(),
            iss: ic.issuer.clone(),
            audiences: ic.audiences.clone(),
            algorithms,
            keys,
            leeway: ic.leeway.get().as_secs_f64(),
            require_exp: ic.require_exp,
            required_claims: ic.required_claims.clone(),
        },
        handle,
    ))
}

fn static_hmac(secret: &[u8], path: &str) -> Result<KeySource, Vec<ConfigIssue>> {
    if secret.is_empty() {
        return Err(vec![ConfigIssue::new(path, "the secret is empty")]);
    }
    if secret.len() < 32 {
        tracing::warn!(
            key = path,
            "HMAC secret shorter than 32 bytes: use a longer random secret in production"
        );
    }
    Ok(KeySource::Static(Arc::new(KeyEntry {
        key: jsonwebtoken::DecodingKey::from_secret(secret),
        alg: None,
    })))
}

fn compile_identity(
    c: &config::IdentityConfig,
    issues: &mut Vec<ConfigIssue>,
) -> Option<identity::IdentityRenderer> {
    let signature = match &c.signature {
        None => None,
        Some(s) => {
            let p = "auth.identity.signature";
            let secret = match (&s.secret, &s.secret_env) {
                (Some(v), None) => Some(v.clone()),
                (None, Some(var)) => std::env::var(var).ok().or_else(|| {
                    issues.push(ConfigIssue::new(
                        format!("{p}.secret_env"),
                        format!("environment variable {var} is not set"),
                    ));
                    None
                }),
                _ => {
                    issues.push(ConfigIssue::new(
                        p,
                        "set exactly one of secret or secret_env",
                    ));
                    None
                }
            };
            let secret = secret.filter(|s| {
                let ok = s.len() >= 16;
                if !ok {
                    issues.push(ConfigIssue::new(
                        p,
                        "the signature secret must be at least 16 bytes (32 random bytes recommended)",
                    ));
                }
                ok
            });
            let header = HeaderName::from_bytes(s.header.as_bytes())
                .map_err(|_| {
                    issues.push(ConfigIssue::new(
                        format!("{p}.header"),
                        "not a valid header name",
                    ))
                })
                .ok();
            match (secret, header) {
                (Some(secret), Some(header)) => Some((header, secret.into_bytes())),
                _ => return None,
            }
        }
    };
    let headers: Vec<(String, String)> = c
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match identity::IdentityRenderer::new(&headers, signature) {
        Ok(r) => Some(r),
        Err(errs) => {
            for (h, m) in errs {
                issues.push(ConfigIssue::new(format!("auth.identity.headers.{h}"), m));
            }
            None
        }
    }
}
