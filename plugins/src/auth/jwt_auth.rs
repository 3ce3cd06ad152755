//! The `jwt` route policy as a plugin (request_filter stage): find the token,
//! verify it (or take it from the verified-token cache), check revocation, apply
//! the route's claim rules, then hand the identity headers to the upstream request.

use std::sync::Arc;

use async_trait::async_trait;

use super::cache::TokenCache;
use super::config::RedisErrorPolicy;
use super::error::AuthError;
use super::identity::IdentityRenderer;
use super::metrics::METRICS;
use super::rules::ClaimRule;
use super::token::TokenSource;
use super::verify::{self, Issuer, VerifiedToken};
use crate::revocation::{Revocation, Verdict};
use crate::{Flow, Plugin, PluginOutput, RequestView};

/// State shared by every protected route of one compiled config.
pub struct AuthShared {
    pub issuers: Vec<Issuer>,
    pub token: TokenSource,
    pub revocation: Option<Arc<Revocation>>,
    pub identity: IdentityRenderer,
    pub cache: Option<TokenCache>,
}

impl AuthShared {
    /// Verify `token` for a route accepting the issuers in `allowed`.
    pub async fn authenticate(
        &self,
        token: &str,
        allowed: &[usize],
        now: f64,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        if let Some(cache) = &self.cache {
            let current = |v: &VerifiedToken| {
                self.issuers
                    .get(v.issuer)
                    .is_some_and(|i| i.keys.generation() == v.key_generation)
            };
            if let Some(hit) = cache.get(token).filter(|v| current(v)) {
                METRICS.cache_hit.inc();
                if !allowed.contains(&hit.issuer) {
                    return Err(AuthError::IssuerUnknown);
                }
                hit.check_time(now)?;
                return Ok(hit);
            }
            METRICS.cache_miss.inc();
        }
        let mut v = verify::verify(&self.issuers, allowed, token, now).await?;
        v.identity = self.identity.render(&v.claims);
        let v = Arc::new(v);
        if let Some(cache) = &self.cache {
            cache.insert(token, v.clone());
        }
        Ok(v)
    }
}

/// A protected route's plugin.
pub struct JwtAuth {
    pub shared: Arc<AuthShared>,
    /// Issuer indexes accepted on this route.
    pub allowed: Vec<usize>,
    pub rules: Vec<ClaimRule>,
    pub on_redis_error: RedisErrorPolicy,
    pub allow_query_token: bool,
    /// `revoke: on_success`: hand the response stage the token to revoke on a 2xx.
    pub revoke_on_success: bool,
}

fn fail(e: AuthError) -> Flow {
    METRICS.failed(e);
    Flow::Reject(e.rejection())
}

impl JwtAuth {
    /// Everything but the plugin plumbing; `Ok` carries the raw and the verified token.
    pub async fn check<'r>(
        &self,
        req: &RequestView<'r>,
        now: f64,
    ) -> Result<(&'r str, Arc<VerifiedToken>), AuthError> {
        let shared = &self.shared;
        let token = shared
            .token
            .find(req.headers, req.uri, self.allow_query_token)
            .ok_or(AuthError::TokenMissing)?;
        let v = shared.authenticate(token, &self.allowed, now).await?;
        if let Some(rev) = &shared.revocation {
            match rev
                .check(token, v.jti.as_deref(), v.sub.as_deref(), v.iat)
                .await
            {
                Verdict::Clear => {}
                Verdict::Revoked => {
                    METRICS.revoked.inc();
                    return Err(AuthError::TokenRevoked);
                }
                Verdict::Unknown => match self.on_redis_error {
                    RedisErrorPolicy::Deny => {
                        METRICS.unavailable_deny.inc();
                        return Err(AuthError::RevocationUnavailable);
                    }
                    RedisErrorPolicy::Allow => {
                        METRICS.unavailable_allow.inc();
                    }
                },
            }
        }
        if !self.rules.iter().all(|r| r.holds(&v.claims)) {
            return Err(AuthError::InsufficientClaims);
        }
        Ok((token, v))
    }
}

#[async_trait]
impl Plugin for JwtAuth {
    fn name(&self) -> &'static str {
        "jwt_auth"
    }

    async fn on_request(&self, req: &RequestView<'_>, out: &mut PluginOutput) -> Flow {
        let now = crate::clock::unix_secs_f64();
        match self.check(req, now).await {
            Ok((token, v)) => {
                METRICS.success.inc();
                if self.revoke_on_success {
                    out.revoke_on_success =
                        self.shared.revocation.as_ref().map(|r| {
                            r.pending(token, v.jti.as_deref(), v.exp.map(|e| e + v.leeway))
                        });
                }
                out.upstream_headers.extend(v.identity.iter().cloned());
                // signed per upstream attempt, once the path and the service are final
                out.identity_signer = self.shared.identity.signer().cloned();
                out.verified = Some(v);
                if self.allow_query_token {
                    out.strip_query_param = Some(self.shared.token.query.clone());
                }
                Flow::Continue
            }
            Err(e) => fail(e),
        }
    }
}
