//! Access tokens (RS256 JWTs with a `kid`, short-lived), the JWKS that publishes their
//! public key, and opaque refresh tokens kept in Redis and rotated on every use.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{MemberSettings, StartError};
use crate::db::now_unix;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    pub email: String,
    pub roles: Vec<String>,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
}

/// Signs access tokens and knows their public key.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    issuer: String,
    audience: String,
    pub access_ttl: Duration,
    jwks: JwkSet,
}

impl TokenIssuer {
    /// Load the private key named by the settings and derive the JWKS from it.
    pub fn from_settings(s: &MemberSettings) -> Result<Self, StartError> {
        let key_err = |message: String| StartError::Key {
            path: s.private_key.display().to_string(),
            message,
        };
        let pem = std::fs::read(&s.private_key).map_err(|e| {
            key_err(format!(
                "{e} (set JWT_PRIVATE_KEY to an RSA private key PEM)"
            ))
        })?;
        Self::from_pem(&pem, s).map_err(key_err)
    }

    pub fn from_pem(pem: &[u8], s: &MemberSettings) -> Result<Self, String> {
        let encoding =
            EncodingKey::from_rsa_pem(pem).map_err(|e| format!("not an RSA private key: {e}"))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .map_err(|e| format!("cannot derive the public key: {e}"))?;
        jwk.common.key_id = Some(s.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
        Ok(Self {
            encoding,
            decoding,
            kid: s.kid.clone(),
            issuer: s.issuer.clone(),
            audience: s.audience.clone(),
            access_ttl: s.access_ttl,
            jwks: JwkSet { keys: vec![jwk] },
        })
    }

    /// The public keys as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Sign a fresh access token for this user.
    pub fn issue(
        &self,
        sub: &str,
        email: &str,
        roles: &[String],
    ) -> Result<(String, AccessClaims), String> {
        let now = now_unix();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: sub.to_string(),
            email: email.to_string(),
            roles: roles.to_vec(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| e.to_string())?;
        Ok((token, claims))
    }

    /// Verify one of our own access tokens (logout needs its `jti` and `exp`).
    pub fn verify(&self, token: &str) -> Result<AccessClaims, String> {
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.leeway = 30;
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }
}

/// A new opaque refresh token: 32 random bytes, base64url.
pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Refresh tokens are stored by hash, so a Redis dump does not leak usable tokens.
fn refresh_key(token: &str) -> String {
    format!("refresh:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

fn user_refresh_set(sub: &str) -> String {
    format!("refresh-tokens:{sub}")
}

/// Store a refresh token for `sub` with its TTL.
pub async fn store_refresh(
    redis: &mut redis::aio::ConnectionManager,
    token: &str,
    sub: &str,
    ttl: Duration,
) -> redis::RedisResult<()> {
    let key = refresh_key(token);
    let secs = ttl.as_secs().max(1);
    redis::pipe()
        .atomic()
        .set_ex(&key, sub, secs)
        .ignore()
        .sadd(user_refresh_set(sub), &key)
        .ignore()
        .expire(user_refresh_set(sub), secs as i64)
        .ignore()
        .query_async::<()>(redis)
        .await
}

/// Use up a refresh token: its subject if it was valid. A token works once only
/// (`GETDEL`), so a replayed old token finds nothing.
pub async fn take_refresh(
    redis: &mut redis::aio::ConnectionManager,
    token: &str,
) -> redis::RedisResult<Option<String>> {
    let key = refresh_key(token);
    let sub: Option<String> = redis::cmd("GETDEL").arg(&key).query_async(redis).await?;
    if let Some(sub) = &sub {
        let _: i64 = redis.srem(user_refresh_set(sub), &key).await?;
    }
    Ok(sub)
}

/// Delete one refresh token of `sub` (only if it belongs to `sub`).
pub async fn drop_refresh(
    redis: &mut redis::aio::ConnectionManager,
    token: &str,
    sub: &str,
) -> redis::RedisResult<()> {
    let key = refresh_key(token);
    let owner: Option<String> = redis.get(&key).await?;
    if owner.as_deref() == Some(sub) {
        let _: i64 = redis.del(&key).await?;
        let _: i64 = redis.srem(user_refresh_set(sub), &key).await?;
    }
    Ok(())
}

/// Delete every refresh token of `sub`.
pub async fn drop_all_refresh(
    redis: &mut redis::aio::ConnectionManager,
    sub: &str,
) -> redis::RedisResult<()> {
    let keys: Vec<String> = redis.smembers(user_refresh_set(sub)).await?;
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.del(k).ignore();
    }
    pipe.del(user_refresh_set(sub)).ignore();
    pipe.query_async::<()>(redis).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MemberSettings {
        MemberSettings {
            private_key: "unused".into(),
            kid: "k1".into(),
            issuer: "demo-member".into(),
            audience: "gateway".into(),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(60),
        }
    }

    fn demo_pem() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/demo-keys/member-private.pem"
        );
        std::fs::read(path).unwrap()
    }

    #[test]
    fn issues_tokens_the_jwks_verifies() {
        let issuer = TokenIssuer::from_pem(&demo_pem(), &settings()).unwrap();
        let (token, claims) = issuer
            .issue("u-1", "a@b.io", &["user".to_string()])
            .unwrap();
        assert_eq!(claims.exp - claims.iat, 900);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("k1"));
        assert_eq!(header.alg, Algorithm::RS256);
        let back = issuer.verify(&token).unwrap();
        assert_eq!(back, claims);
        // The published JWKS alone verifies the token.
        let jwk = &issuer.jwks().keys[0];
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["gateway"]);
        assert!(jsonwebtoken::decode::<AccessClaims>(&token, &key, &v).is_ok());
        assert!(issuer.verify(&format!("{token}x")).is_err());
    }

    #[test]
    fn refresh_tokens_are_long_and_distinct() {
        let a = new_refresh_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, new_refresh_token());
        assert_ne!(refresh_key(&a), refresh_key(&new_refresh_token()));
    }
}
