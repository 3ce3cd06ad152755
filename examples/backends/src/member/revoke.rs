//! Revocations in the gateway's format: `SET blacklist:{jti} 1 EX <remaining life>`
//! for one token, `SET revoked-before:{sub} <unix time>` for every token of a user,
//! each announced on the `gateway:revocations` channel (the message is the key) so
//! every gateway's local mirror takes it within milliseconds.

use std::time::Duration;

pub const CHANNEL: &str = "gateway:revocations";

/// Revoke one access token until it would have expired anyway.
pub async fn revoke_token(
    redis: &mut redis::aio::ConnectionManager,
    jti: &str,
    remaining: Duration,
) -> redis::RedisResult<()> {
    let key = format!("blacklist:{jti}");
    redis::pipe()
        .set_ex(&key, 1, remaining.as_secs().max(1))
        .ignore()
        .publish(CHANNEL, &key)
        .ignore()
        .query_async::<()>(redis)
        .await
}

/// Refuse every token of `sub` issued up to now. The key outlives the longest
/// access token (`keep`), after which those tokens are expired anyway.
pub async fn revoke_subject(
    redis: &mut redis::aio::ConnectionManager,
    sub: &str,
    now: i64,
    keep: Duration,
) -> redis::RedisResult<()> {
    let key = format!("revoked-before:{sub}");
    redis::pipe()
        .set_ex(&key, now, keep.as_secs().max(1))
        .ignore()
        .publish(CHANNEL, &key)
        .ignore()
        .query_async::<()>(redis)
        .await
}
