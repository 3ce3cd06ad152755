//! The member service: accounts (SQLite, argon2 passwords) and tokens. It is the one
//! service that deals in JWTs: it signs RS256 access tokens, publishes their public key
//! as a JWKS, keeps sessions (rotating refresh-token families) in Redis, and writes
//! revocations in the gateway's format on logout and withdrawal.

mod revoke;
mod routes;
mod sessions;
mod store;
mod tokens;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use thiserror::Error;

use crate::config::{duration, EnvError, ServiceSettings};
use crate::db::Db;
use crate::identity::GatewayTrust;

pub use routes::router;
pub use tokens::{AccessClaims, TokenIssuer};

pub const DEFAULT_PORT: u16 = 8081;

/// Member-only settings, from the environment.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    /// `JWT_PRIVATE_KEY`: PEM file (default `config/demo-keys/member-private.pem`).
    pub private_key: PathBuf,
    /// `JWT_KID` (default `demo-member-1`).
    pub kid: String,
    /// `JWT_ISSUER` (default `demo-member`).
    pub issuer: String,
    /// `JWT_AUDIENCE` (default `gateway`).
    pub audience: String,
    /// `ACCESS_TOKEN_TTL` (default 15m).
    pub access_ttl: Duration,
    /// `REFRESH_TOKEN_TTL` (default 7d).
    pub refresh_ttl: Duration,
}

impl MemberSettings {
    pub fn from_env() -> Result<Self, EnvError> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Ok(Self {
            private_key: PathBuf::from(
                get("JWT_PRIVATE_KEY")
                    .unwrap_or_else(|| "config/demo-keys/member-private.pem".into()),
            ),
            kid: get("JWT_KID").unwrap_or_else(|| "demo-member-1".into()),
            issuer: get("JWT_ISSUER").unwrap_or_else(|| "demo-member".into()),
            audience: get("JWT_AUDIENCE").unwrap_or_else(|| "gateway".into()),
            access_ttl: duration(&get, "ACCESS_TOKEN_TTL", Duration::from_secs(15 * 60))?,
            refresh_ttl: duration(&get, "REFRESH_TOKEN_TTL", Duration::from_secs(7 * 86400))?,
        })
    }
}

#[derive(Debug, Error)]
pub enum StartError {
    #[error("{0}")]
    Env(#[from] EnvError),
    #[error("signing key {path}: {message}")]
    Key { path: String, message: String },
    #[error("database: {0}")]
    Db(#[from] crate::db::DbError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("revocation writer: {0}")]
    Revocation(#[from] plugins::revocation::RevocationError),
}

/// Shared state of the member handlers.
#[derive(Clone)]
pub struct MemberState {
    pub db: Db,
    pub redis: redis::aio::ConnectionManager,
    pub tokens: Arc<TokenIssuer>,
    pub revocations: Arc<plugins::revocation::RevocationWriter>,
    pub trust: GatewayTrust,
    pub refresh_ttl: Duration,
}

impl FromRef<MemberState> for GatewayTrust {
    fn from_ref(s: &MemberState) -> GatewayTrust {
        s.trust.clone()
    }
}

/// Build the member state: open the database, load the key, connect to Redis.
pub async fn state(
    settings: &ServiceSettings,
    member: &MemberSettings,
) -> Result<MemberState, StartError> {
    let tokens = TokenIssuer::from_settings(member)?;
    let db = Db::open(&settings.db_path(), store::SCHEMA)?;
    let client = redis::Client::open(settings.redis_url.as_str())?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let redis = client.get_connection_manager_with_config(cfg).await?;
    Ok(MemberState {
        db,
        redis,
        tokens: Arc::new(tokens),
        revocations: Arc::new(revoke::writer(&settings.redis_url)?),
        trust: GatewayTrust::new("member", settings.signing_secret.as_deref()),
        refresh_ttl: member.refresh_ttl,
    })
}
