//! Auth config: the serde types behind the `auth:` section and a route's `auth:` policy.
//!
//! These mirror the YAML one to one (`deny_unknown_fields` everywhere); they are
//! checked and turned into runtime types by [`super::AuthRuntime::compile`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::Dur;

/// The top-level `auth:` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Token issuers the gateway trusts; a token is matched to one by its `iss` claim.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Where the token is read from.
    #[serde(default)]
    pub token: TokenConfig,
    /// Redis-backed revocation (logout blacklist, subject revoked-before).
    #[serde(default)]
    pub revocation: Option<RevocationConfig>,
    /// Identity headers injected into upstream requests.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Cache of verified tokens (skips signature checks for tokens seen recently).
    #[serde(default)]
    pub cache: CacheConfig,
}

/// One trusted issuer and its keys.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Name routes refer to (`routes[].auth.jwt.issuers`).
    pub name: String,
    /// Expected `iss` claim; omit to accept tokens without `iss` (at most one issuer).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values (any one must be present); empty = `aud` not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Allowed algorithms, e.g. `[RS256]`. All must belong to the key's family.
    pub algorithms: Vec<String>,
    /// Inline HMAC secret (HS*).
    #[serde(default)]
    pub secret: Option<String>,
    /// Environment variable holding the HMAC secret (HS*).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// PEM file with the public key (RS*, PS*, ES*, EdDSA).
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// JWKS URL (keys chosen by `kid`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often the JWKS is refetched in the background.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: Dur,
    /// Least time between two refetches triggered by an unknown `kid`.
    #[serde(default = "default_jwks_min_refetch")]
    pub jwks_min_refetch: Dur,
    /// Timeout of one JWKS fetch.
    #[serde(default = "default_jwks_timeout")]
    pub jwks_timeout: Dur,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    /// Refuse tokens without `exp`.
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Claims that must be present (e.g. `[sub]`).
    #[serde(default)]
    pub required_claims: Vec<String>,
}

impl IssuerConfig {
    /// An issuer named `name` allowing `algorithms`, with no key yet and every
    /// other key at its default.
    pub fn new(name: impl Into<String>, algorithms: Vec<String>) -> Self {
        Self {
            name: name.into(),
            issuer: None,
            audiences: Vec::new(),
            algorithms,
            secret: None,
            secret_env: None,
            public_key_file: None,
            jwks_url: None,
            jwks_refresh: default_jwks_refresh(),
            jwks_min_refetch: default_jwks_min_refetch(),
            jwks_timeout: default_jwks_timeout(),
            leeway: default_leeway(),
            require_exp: true,
            required_claims: Vec::new(),
        }
    }
}

/// Where tokens are read from.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Header carrying `Bearer <token>` (the bare token is accepted too on other headers).
    #[serde(default = "default_token_header")]
    pub header: String,
    /// Cookie holding the token, tried when the header is absent.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Query parameter holding the token; used only on routes with `allow_query_token: true`.
    #[serde(default = "default_token_query")]
    pub query: String,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            header: default_token_header(),
            cookie: None,
            query: default_token_query(),
        }
    }
}

/// Redis revocation settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// `redis://[:password@]host:port[/db]` or `rediss://...` for TLS.
    pub redis_url: String,
    /// `mirror` (default, no Redis round trip per request) or `lookup`.
    #[serde(default)]
    pub mode: RevocationMode,
    /// Key whose existence revokes one token: `{jti}` (without one, `{signed_sha256}`),
    /// `{signed_sha256}` (SHA-256 hex of `header.payload`: one id whatever the spelling
    /// of the signature), `{token_sha256}` (of the whole token) or `{token}` (the raw token).
    #[serde(default = "default_blacklist_key")]
    pub blacklist_key: String,
    /// Key holding a unix time; tokens of `{sub}` issued before it are refused.
    #[serde(default = "default_revoked_before_key")]
    pub revoked_before_key: String,
    /// Pub/sub channel announcing new revocations (message = the key written).
    #[serde(default = "default_channel")]
    pub channel: String,
    /// Also follow keyspace notifications (needs `notify-keyspace-events` on the server).
    #[serde(default)]
    pub keyspace_notifications: bool,
    /// Full re-read of the revocation keys (SCAN) in mirror mode.
    #[serde(default = "default_resync")]
    pub resync_interval: Dur,
    /// Timeout of one Redis command (lookup mode, health pings).
    #[serde(default = "default_redis_timeout")]
    pub timeout: Dur,
    /// Lookup mode: reuse a token's answer this long (`0s`, the default: ask every time).
    #[serde(default)]
    pub lookup_cache: Dur,
    /// What a protected route does when the revocation state is unknown (Redis down).
    #[serde(default)]
    pub on_redis_error: RedisErrorPolicy,
}

impl RevocationConfig {
    /// Revocation read from `redis_url`, every other key at its default.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            mode: RevocationMode::default(),
            blacklist_key: default_blacklist_key(),
            revoked_before_key: default_revoked_before_key(),
            channel: default_channel(),
            keyspace_notifications: false,
            resync_interval: default_resync(),
            timeout: default_redis_timeout(),
            lookup_cache: Dur::default(),
            on_redis_error: RedisErrorPolicy::default(),
        }
    }
}

/// How revocations are checked.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RevocationMode {
    /// Local copy fed by pub/sub + periodic resync: no Redis on the request path.
    #[default]
    Mirror,
    /// One pipelined Redis round trip per request.
    Lookup,
}

/// What to do when Redis cannot answer.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RedisErrorPolicy {
    /// Refuse with 503 `revocation_unavailable`.
    #[default]
    Deny,
    /// Let a valid token through unchecked (counted).
    Allow,
}

/// Identity headers: claim templates injected upstream, and headers always stripped.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Header -> template, e.g. `Authenticated-User: "{email}"`; arrays are joined with `,`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// More headers removed from every client request.
    #[serde(default)]
    pub strip: Vec<String>,
    /// HMAC signature over the injected identity.
    #[serde(default)]
    pub signature: Option<SignatureConfig>,
}

/// The identity signature header.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    #[serde(default = "default_signature_header")]
    pub header: String,
    /// Inline HMAC-SHA256 key.
    #[serde(default)]
    pub secret: Option<String>,
    /// Environment variable holding the key.
    #[serde(default)]
    pub secret_env: Option<String>,
}

impl SignatureConfig {
    /// The default signature header, keyed with an inline secret.
    pub fn with_secret(secret: impl Into<String>) -> Self {
        Self {
            header: default_signature_header(),
            secret: Some(secret.into()),
            secret_env: None,
        }
    }
}

/// Verified-token cache.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Entries kept at most; `0` disables the cache.
    #[serde(default = "default_cache_size")]
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_cache_size(),
        }
    }
}

/// A route's `auth:` policy: `public` (default) or `{jwt: {...}}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum RouteAuthConfig {
    #[default]
    Public,
    Jwt(JwtRouteConfig),
}

/// A protected route's settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtRouteConfig {
    /// Issuer names accepted here; empty = every configured issuer.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Claim rules, all must hold: `roles: ADMIN` or `roles: [ADMIN, OPS]` (any of).
    #[serde(default)]
    pub require: BTreeMap<String, OneOrMany>,
    /// Overrides `auth.revocation.on_redis_error` for this route.
    #[serde(default)]
    pub on_redis_error: Option<RedisErrorPolicy>,
    /// Accept the token from the query string (`auth.token.query`).
    #[serde(default)]
    pub allow_query_token: bool,
    /// `on_success`: when the service answers 2xx, the gateway revokes the token the
    /// request presented (a logout route), locally before the answer leaves and in Redis.
    #[serde(default)]
    pub revoke: Option<RevokeWhen>,
}

/// When a route revokes the token it was called with.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RevokeWhen {
    /// After a 2xx answer from the service.
    OnSuccess,
}

/// A scalar or a list of scalars.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(Scalar),
    Many(Vec<Scalar>),
}

/// A claim value a rule compares with.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Str(String),
}

impl OneOrMany {
    pub fn values(&self) -> Vec<Scalar> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_jwks_refresh() -> Dur {
    Dur::from_secs(300)
}
fn default_jwks_min_refetch() -> Dur {
    Dur::from_secs(10)
}
fn default_jwks_timeout() -> Dur {
    Dur::from_secs(2)
}
fn default_leeway() -> Dur {
    Dur::from_secs(30)
}
fn default_token_header() -> String {
    "Authorization".into()
}
fn default_token_query() -> String {
    "access_token".into()
}
pub(crate) fn default_blacklist_key() -> String {
    "blacklist:{jti}".into()
}
pub(crate) fn default_revoked_before_key() -> String {
    "revoked-before:{sub}".into()
}
pub(crate) fn default_channel() -> String {
    "gateway:revocations".into()
}
fn default_resync() -> Dur {
    Dur::from_secs(30)
}
fn default_redis_timeout() -> Dur {
    Dur(Duration::from_millis(250))
}
fn default_signature_header() -> String {
    "X-Gateway-Signature".into()
}
fn default_cache_size() -> usize {
    10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_policy_forms() {
        let p: RouteAuthConfig = serde_json::from_str("\"public\"").unwrap();
        assert_eq!(p, RouteAuthConfig::Public);
        let p: RouteAuthConfig =
            serde_json::from_str(r#"{"jwt":{"require":{"roles":["ADMIN","OPS"]}}}"#).unwrap();
        let RouteAuthConfig::Jwt(j) = p else {
            panic!("not jwt")
        };
        assert_eq!(j.require["roles"].values().len(), 2);
        assert!(serde_json::from_str::<RouteAuthConfig>(r#"{"jwt":{"bogus":1}}"#).is_err());
        let p: RouteAuthConfig =
            serde_json::from_str(r#"{"jwt":{"revoke":"on_success"}}"#).unwrap();
        assert!(matches!(p, RouteAuthConfig::Jwt(j) if j.revoke == Some(RevokeWhen::OnSuccess)));
        assert!(serde_json::from_str::<RouteAuthConfig>(r#"{"jwt":{"revoke":"always"}}"#).is_err());
    }

    #[test]
    fn defaults_fill_in() {
        let c: AuthConfig = serde_json::from_str(
            r#"{"issuers":[{"name":"a","algorithms":["HS256"],"secret":"s"}],
                "revocation":{"redis_url":"redis://127.0.0.1:1"}}"#,
        )
        .unwrap();
        assert_eq!(c.issuers[0].leeway.get(), Duration::from_secs(30));
        assert!(c.issuers[0].require_exp);
        let r = c.revocation.unwrap();
        assert_eq!(r.blacklist_key, "blacklist:{jti}");
        assert_eq!(r.mode, RevocationMode::Mirror);
        assert_eq!(r.on_redis_error, RedisErrorPolicy::Deny);
        assert_eq!(c.token.header, "Authorization");
    }
}
