//! Compile helpers of the `auth:` section (config compile stage): one issuer with
//! its key source, and the identity renderer with its signature secret.

use std::sync::{Arc, OnceLock};

use http::HeaderName;
use jsonwebtoken::AlgorithmFamily;

use super::config;
use super::identity;
use super::jwks::{Jwks, JwksSettings};
use super::key::KeyEntry;
use super::keys::{family_name, key_from_pem, parse_algorithm, KeySource};
use super::verify::Issuer;
use crate::revocation::TaskGuard;
use crate::ConfigIssue;

/// A JWKS source and the task refreshing it (shared across reloads while unchanged).
pub(super) struct JwksHandle {
    pub(super) jwks: Arc<Jwks>,
    /// The refresh task, once activated.
    task: OnceLock<TaskGuard>,
}

impl JwksHandle {
    /// Start refreshing (once; a handle reused by a reload keeps its task).
    pub(super) fn activate(&self, rt: &tokio::runtime::Handle) {
        self.task
            .get_or_init(|| TaskGuard::new(rt.spawn(self.jwks.clone().run())));
    }
}

pub(super) fn compile_issuer(
    ic: &config::IssuerConfig,
    path: &str,
    prev_jwks: &[Arc<JwksHandle>],
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
                Arc::new(JwksHandle {
                    jwks,
                    task: OnceLock::new(),
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

pub(super) fn compile_identity(
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
