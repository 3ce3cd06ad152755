//! The writing side of revocation, for services that log users out (e.g. the
//! sample member service): `SET` the key with a TTL, then `PUBLISH` it so every
//! gateway's mirror applies it at once.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tokio::sync::OnceCell;

use super::keys::{KeySchema, RevocationKeys};
use crate::redis_link::{RedisConn, RedisTarget};

/// Connecting and each write wait at most this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Added to a token's remaining life when its revocation TTL is derived from
/// `exp`: the gateway still accepts a token up to its issuer's `leeway` (30 s by
/// default) after `exp`, and the key must not vanish before then.
pub const LEEWAY_MARGIN: Duration = Duration::from_secs(60);

/// Why a revocation could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("invalid revocation key template ({0}): {1}")]
    Template(&'static str, String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis_url: {0}")]
    Url(String),
}

/// Writes revocations in the format the gateway reads.
///
/// ```no_run
/// # async fn demo(token: &str) -> Result<(), plugins::revocation::RevocationError> {
/// use std::time::Duration;
/// use plugins::revocation::{RevocationKeys, RevocationWriter};
/// let w = RevocationWriter::new("redis://127.0.0.1:6379", RevocationKeys::default())?;
/// w.revoke_token(token, Duration::ZERO).await?; // TTL = the token's remaining life
/// # Ok(()) }
/// ```
pub struct RevocationWriter {
    target: RedisTarget,
    conn: OnceCell<RedisConn>,
    schema: KeySchema,
}

impl RevocationWriter {
    /// Check the URL (one server, Sentinel or Cluster, as the gateway's `redis_url`)
    /// and templates; the connection is opened on first use.
    pub fn new(redis_url: &str, keys: RevocationKeys) -> Result<Self, RevocationError> {
        let schema = KeySchema::new(&keys).map_err(|(f, m)| RevocationError::Template(f, m))?;
        Ok(Self {
            target: RedisTarget::parse(redis_url).map_err(RevocationError::Url)?,
            conn: OnceCell::new(),
            schema,
        })
    }

    async fn conn(&self) -> Result<RedisConn, RevocationError> {
        let c = self
            .conn
            .get_or_try_init(|| async { self.target.connection(WRITE_TIMEOUT) })
            .await?;
        Ok(c.clone())
    }

    /// The key [`revoke_token`](Self::revoke_token) writes for `raw_token_or_jti`.
    pub fn token_key(&self, raw_token_or_jti: &str) -> String {
        let id = match parse_jwt(raw_token_or_jti) {
            Some(claims) => self
                .schema
                .token_id(claims.jti.as_deref(), raw_token_or_jti)
                .into_owned(),
            None => raw_token_or_jti.to_string(),
        };
        self.schema.token.render(&id)
    }

    /// Revoke one token: `SET <blacklist key> 1 EX <ttl>` + `PUBLISH <channel> <key>`.
    ///
    /// Pass the raw JWT (its `jti`, or without one the SHA-256 of its signed part,
    /// is used as the template says) or a bare `jti`. A zero `ttl` means "until the
    /// gateway refuses the token anyway": its remaining life plus [`LEEWAY_MARGIN`]
    /// (one hour when `exp` is unknown). Returns the key written.
    pub async fn revoke_token(
        &self,
        raw_token_or_jti: &str,
        ttl: Duration,
    ) -> Result<String, RevocationError> {
        let key = self.token_key(raw_token_or_jti);
        let ttl = if ttl.is_zero() {
            parse_jwt(raw_token_or_jti)
                .and_then(|c| c.exp)
                .map(|exp| exp.saturating_sub(crate::clock::unix_secs()) + LEEWAY_MARGIN.as_secs())
                .unwrap_or(3600)
        } else {
            ttl.as_secs().max(1)
        };
        let mut conn = self.conn().await?;
        token_pipe(&self.schema, &key, Some(Duration::from_secs(ttl)))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(key)
    }

    /// Refuse every token of `sub` issued before `before_unix_secs` ("log out
    /// everywhere", account withdrawal): `SET <revoked-before key> <time> [EX <ttl>]`,
    /// then `PUBLISH`. Use a `ttl` of at least the longest token lifetime; zero
    /// keeps the key forever.
    pub async fn revoke_subject(
        &self,
        sub: &str,
        before_unix_secs: u64,
        ttl: Duration,
    ) -> Result<String, RevocationError> {
        let key = self.schema.subject.render(sub);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&key).arg(before_unix_secs);
        if !ttl.is_zero() {
            pipe.arg("EX").arg(ttl.as_secs().max(1));
        }
        pipe.ignore()
            .cmd("PUBLISH")
            .arg(&self.schema.channel)
            .arg(&key)
            .ignore();
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn).await?;
        Ok(key)
    }

    /// Undo a token revocation (`DEL` + `PUBLISH`).
    pub async fn unrevoke_token(&self, raw_token_or_jti: &str) -> Result<(), RevocationError> {
        let key = self.token_key(raw_token_or_jti);
        let mut conn = self.conn().await?;
        redis::pipe()
            .cmd("DEL")
            .arg(&key)
            .ignore()
            .cmd("PUBLISH")
            .arg(&self.schema.channel)
            .arg(&key)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}

/// `SET <key> 1 [PX <ttl>]` + `PUBLISH <channel> <key>`: one token revocation, as
/// every writer (services and the gateway's `revoke: on_success`) makes it.
///
/// In a transaction: a `SET` refused (read-only replica, out of memory) must not be
/// announced, or the mirrors would read the key as gone and drop the revocation.
pub(super) fn token_pipe(schema: &KeySchema, key: &str, ttl: Option<Duration>) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("SET").arg(key).arg(1);
    if let Some(ttl) = ttl {
        pipe.arg("PX").arg(ttl.as_millis().max(1) as u64);
    }
    pipe.ignore()
        .cmd("PUBLISH")
        .arg(&schema.channel)
        .arg(key)
        .ignore();
    pipe
}

struct Unverified {
    jti: Option<String>,
    exp: Option<u64>,
}

/// The `jti` and `exp` of something shaped like a JWT (no signature check: the
/// writer only needs to name the token).
fn parse_jwt(s: &str) -> Option<Unverified> {
    let mut parts = s.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(Unverified {
        jti: v.get("jti").and_then(|j| j.as_str()).map(str::to_string),
        exp: v.get("exp").and_then(|e| e.as_f64()).map(|e| e as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::keys::signed_sha256;

    #[test]
    fn keys_for_tokens_and_jtis() {
        let w = RevocationWriter::new("redis://127.0.0.1:1", RevocationKeys::default()).unwrap();
        assert_eq!(w.token_key("abc"), "blacklist:abc");
        let with_jti = format!(
            "e30.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"jti":"j-1","exp":5}"#)
        );
        assert_eq!(w.token_key(&with_jti), "blacklist:j-1");
        let no_jti = format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(br#"{"sub":"1"}"#));
        assert_eq!(
            w.token_key(&no_jti),
            format!("blacklist:{}", signed_sha256(&no_jti))
        );
        assert!(RevocationWriter::new("nope://", RevocationKeys::default()).is_err());
    }
}
