//! Mint development tokens (`gateway token ...`): sign a JWT with a shared
//! secret or a private key PEM, with the claims the gateway checks.

use std::time::Duration;

use jsonwebtoken::{AlgorithmFamily, EncodingKey, Header};
use serde_json::{json, Map, Value};

use super::keys::parse_algorithm;

/// The signing key.
pub enum MintKey {
    /// HMAC secret (HS*).
    Secret(Vec<u8>),
    /// Private key in PEM form (RS*, PS*, ES*, EdDSA).
    PrivateKeyPem(Vec<u8>),
}

/// What to put in the token.
pub struct MintOptions {
    /// e.g. `HS256`, `RS256`.
    pub alg: String,
    pub key: MintKey,
    pub sub: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub ttl: Duration,
    pub iss: Option<String>,
    pub aud: Option<String>,
    pub kid: Option<String>,
    /// Add a random `jti` (needed to revoke the token by id).
    pub jti: bool,
    /// More claims.
    pub extra: Map<String, Value>,
}

impl MintOptions {
    /// An HS256 token for `sub` under `secret`, as the demo issuer (`iss: dev`) hands
    /// out: ten minutes, with a `jti`, no other claims. Change fields with `..`.
    pub fn hs256(secret: &str, sub: &str) -> Self {
        MintOptions {
            alg: "HS256".into(),
            key: MintKey::Secret(secret.into()),
            sub: sub.into(),
            email: None,
            roles: Vec::new(),
            ttl: Duration::from_secs(600),
            iss: Some("dev".into()),
            aud: None,
            kid: None,
            jti: true,
            extra: Map::new(),
        }
    }
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("{0}")]
    Algorithm(String),
    #[error("{0}")]
    Key(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// The public half of a signing key as a JWK (`kid`, `alg`, `use: sig`), for a JWKS
/// document (`{"keys": [...]}`) such as the one the member sample serves.
pub fn public_jwk(key: &MintKey, alg: &str, kid: &str) -> Result<Value, MintError> {
    let alg = parse_algorithm(alg).map_err(MintError::Algorithm)?;
    let enc = encoding_key(key, alg)?;
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, alg)
        .map_err(|e| MintError::Key(format!("cannot derive the public key: {e}")))?;
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    serde_json::to_value(&jwk).map_err(|e| MintError::Sign(e.to_string()))
}

fn encoding_key(key: &MintKey, alg: jsonwebtoken::Algorithm) -> Result<EncodingKey, MintError> {
    let name = format!("{alg:?}");
    Ok(match (key, alg.family()) {
        (MintKey::Secret(s), AlgorithmFamily::Hmac) => EncodingKey::from_secret(s),
        (MintKey::Secret(_), _) => {
            return Err(MintError::Key(format!(
                "{name} needs a private key PEM, not a secret"
            )))
        }
        (MintKey::PrivateKeyPem(_), AlgorithmFamily::Hmac) => {
            return Err(MintError::Key(format!(
                "{name} needs a secret, not a private key"
            )))
        }
        (MintKey::PrivateKeyPem(pem), AlgorithmFamily::Rsa) => EncodingKey::from_rsa_pem(pem)
            .map_err(|e| MintError::Key(format!("not an RSA private key PEM: {e}")))?,
        (MintKey::PrivateKeyPem(pem), AlgorithmFamily::Ec) => EncodingKey::from_ec_pem(pem)
            .map_err(|e| MintError::Key(format!("not an EC private key PEM (PKCS#8): {e}")))?,
        (MintKey::PrivateKeyPem(pem), AlgorithmFamily::Ed) => EncodingKey::from_ed_pem(pem)
            .map_err(|e| MintError::Key(format!("not an Ed25519 private key PEM: {e}")))?,
    })
}

/// Sign a token; the claims are `sub`, `iat`, `exp` plus whichever options are set.
pub fn mint_token(o: &MintOptions) -> Result<String, MintError> {
    let alg = parse_algorithm(&o.alg).map_err(MintError::Algorithm)?;
    let key = encoding_key(&o.key, alg)?;
    let now = crate::clock::unix_secs();
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(o.sub));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + o.ttl.as_secs()));
    if let Some(e) = &o.email {
        claims.insert("email".into(), json!(e));
    }
    if !o.roles.is_empty() {
        claims.insert("roles".into(), json!(o.roles));
    }
    if let Some(i) = &o.iss {
        claims.insert("iss".into(), json!(i));
    }
    if let Some(a) = &o.aud {
        claims.insert("aud".into(), json!(a));
    }
    if o.jti {
        claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
    }
    // extra claims win (a test can set `exp` in the past, or `null` to drop it)
    for (k, v) in &o.extra {
        claims.insert(k.clone(), v.clone());
    }
    let mut header = Header::new(alg);
    header.kid.clone_from(&o.kid);
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| MintError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(alg: &str, key: MintKey) -> MintOptions {
        MintOptions {
            alg: alg.into(),
            key,
            sub: "42".into(),
            email: Some("a@example.com".into()),
            roles: vec!["ADMIN".into()],
            ttl: Duration::from_secs(60),
            iss: Some("dev".into()),
            aud: None,
            kid: Some("k1".into()),
            jti: true,
            extra: Map::new(),
        }
    }

    #[test]
    fn mints_and_refuses_mismatched_keys() {
        let t = mint_token(&opts("HS256", MintKey::Secret(b"s".to_vec()))).unwrap();
        let h = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(h.kid.as_deref(), Some("k1"));
        assert!(mint_token(&opts("RS256", MintKey::Secret(b"s".to_vec()))).is_err());
        assert!(mint_token(&opts("HS256", MintKey::PrivateKeyPem(b"x".to_vec()))).is_err());
        assert!(mint_token(&opts("none", MintKey::Secret(b"s".to_vec()))).is_err());
        let mut o = opts("HS256", MintKey::Secret(b"s".to_vec()));
        o.extra.insert("exp".into(), Value::Null);
        let t = mint_token(&o).unwrap();
        assert!(!t.is_empty());
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/demo-keys/member-private.pem"
        ))
        .unwrap();
        let jwk = public_jwk(&MintKey::PrivateKeyPem(pem), "RS256", "k1").unwrap();
        assert_eq!(jwk["kid"], "k1");
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["use"], "sig");
    }
}
