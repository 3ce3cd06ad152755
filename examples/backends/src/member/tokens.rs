//! Access tokens (RS256 JWTs with a `kid`, short-lived), the JWKS that publishes their
//! public key, and opaque refresh tokens (kept in Redis by `sessions`).

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

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
    /// The session (refresh-token family) this token was issued in: logout ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
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

    /// Sign a fresh access token for this user in session `sid`, issued at or after
    /// `iat_floor` (after "log out everywhere" in this very second, a new token must
    /// not fall under the cut-off).
    pub fn issue(
        &self,
        sub: &str,
        email: &str,
        roles: &[String],
        sid: &str,
        iat_floor: i64,
    ) -> Result<(String, AccessClaims), String> {
        let now = now_unix().max(iat_floor);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: sub.to_string(),
            email: email.to_string(),
            roles: roles.to_vec(),
            jti: uuid::Uuid::new_v4().to_string(),
            sid: Some(sid.to_string()),
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
            .issue("u-1", "a@b.io", &["user".to_string()], "s-1", 0)
            .unwrap();
        assert_eq!(claims.sid.as_deref(), Some("s-1"));
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
    }

    #[test]
    fn iat_never_falls_under_the_floor() {
        let issuer = TokenIssuer::from_pem(&demo_pem(), &settings()).unwrap();
        let floor = now_unix() + 1;
        let (_, c) = issuer.issue("u", "a@b.io", &[], "s", floor).unwrap();
        assert_eq!(c.iat, floor);
    }
}
