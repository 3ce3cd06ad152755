//! The route's `rate_limit:` section as written in the config file (compiled by
//! [`super::RateLimit::new`]).

use serde::{Deserialize, Serialize};

use crate::Dur;

/// A route's `rate_limit:` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `local` (default): a budget per gateway process; `cluster`: one budget shared
    /// by every gateway through the top-level `rate_limits.redis_url`.
    #[serde(default)]
    pub scope: RateLimitScope,
    /// Requests allowed per `per` at a steady rate.
    pub requests: u32,
    /// The period `requests` refers to (default 1s).
    #[serde(default = "one_second")]
    pub per: Dur,
    /// Requests allowed at once above the steady rate (default: `requests`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Who shares a budget: `client_ip` (default), `route` (everyone), `{header: NAME}`
    /// or `{claim: NAME}` (requests without it fall back to the client IP).
    #[serde(default)]
    pub key: RateLimitKey,
    /// `scope: cluster` only: what Redis failing means, `local` (default) | `allow` | `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_redis_error: Option<OnRedisError>,
}

fn one_second() -> Dur {
    Dur::from_secs(1)
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitScope {
    #[default]
    Local,
    Cluster,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RateLimitKey {
    #[default]
    ClientIp,
    Route,
    Header(String),
    /// A claim of the verified JWT (string or number), e.g. `sub`: a budget per user.
    Claim(String),
}

/// What a cluster limit does while Redis cannot answer.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Admit every request.
    Allow,
    /// Refuse with `503 {"error":"rate_limit_unavailable"}`.
    Deny,
    /// Apply the same quota in this process alone.
    #[default]
    Local,
}

impl OnRedisError {
    pub(super) fn label(self) -> &'static str {
        match self {
            OnRedisError::Allow => "allow",
            OnRedisError::Deny => "deny",
            OnRedisError::Local => "local",
        }
    }
}
