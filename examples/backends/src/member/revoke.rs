//! Revocations in the gateway's format, written with the gateway's own
//! `RevocationWriter`: `SET blacklist:{jti} 1 EX <remaining life>` for one token,
//! `SET revoked-before:{sub} <unix time>` for every token of a user, each announced on
//! `gateway:revocations` so every gateway's local mirror applies it within milliseconds.

use std::time::Duration;

use plugins::revocation::{RevocationError, RevocationKeys, RevocationWriter, LEEWAY_MARGIN};

/// Build the writer for the default key templates (the gateway's defaults).
pub fn writer(redis_url: &str) -> Result<RevocationWriter, RevocationError> {
    RevocationWriter::new(redis_url, RevocationKeys::default())
}

/// Revoke one access token (the raw JWT) until the gateway would refuse it anyway:
/// its remaining life plus the gateway's leeway. The key is the writer's
/// (`KeySchema::token_id`, the one the gateway checks): the `jti`, or the SHA-256 of
/// the signed part for a token without one, never a spelling of the signature.
pub async fn revoke_token(
    w: &RevocationWriter,
    token: &str,
    remaining: Duration,
) -> Result<String, RevocationError> {
    w.revoke_token(token, remaining.max(Duration::from_secs(1)) + LEEWAY_MARGIN)
        .await
}

/// Refuse every token of `sub` issued up to `now`. The key outlives the longest
/// access token (`keep`), after which those tokens are expired anyway.
pub async fn revoke_subject(
    w: &RevocationWriter,
    sub: &str,
    now: i64,
    keep: Duration,
) -> Result<String, RevocationError> {
    w.revoke_subject(sub, now.max(0) as u64, keep.max(Duration::from_secs(1)))
        .await
}
