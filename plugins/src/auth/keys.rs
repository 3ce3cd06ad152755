//! Key sources of an issuer: an inline or environment HMAC secret, a PEM public
//! key file, or a JWKS URL (see [`super::jwks`]). Keys are typed by algorithm
//! family, so an HMAC secret can never verify an RS256 token and vice versa.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::error::AuthError;
use super::jwks::Jwks;
use super::key::KeyEntry;

/// Where an issuer's keys come from.
pub enum KeySource {
    Static(Arc<KeyEntry>),
    Jwks(Arc<Jwks>),
}

impl KeySource {
    /// Changes when the keys change (cached verifications made before are redone).
    pub fn generation(&self) -> u64 {
        match self {
            KeySource::Static(_) => 0,
            KeySource::Jwks(j) => j.generation(),
        }
    }

    /// The key for a token's header `kid` and `alg`.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<KeyEntry>, AuthError> {
        match self {
            KeySource::Static(k) if k.accepts(alg) => Ok(k.clone()),
            KeySource::Static(_) => Err(AuthError::AlgorithmNotAllowed),
            KeySource::Jwks(j) => j.key_for(kid, alg).await,
        }
    }
}

/// Parse an algorithm name from the config; `none` and unknown names are refused.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    name.parse::<Algorithm>().map_err(|_| {
        format!(
            "unknown algorithm {name:?} (use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA; \"none\" is never accepted)"
        )
    })
}

pub fn family_name(f: AlgorithmFamily) -> &'static str {
    match f {
        AlgorithmFamily::Hmac => "HMAC (HS*)",
        AlgorithmFamily::Rsa => "RSA (RS*/PS*)",
        AlgorithmFamily::Ec => "EC (ES*)",
        AlgorithmFamily::Ed => "EdDSA",
    }
}

/// Load a PEM public key for `family`.
pub fn key_from_pem(pem: &[u8], family: AlgorithmFamily) -> Result<DecodingKey, String> {
    let r = match family {
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
        AlgorithmFamily::Hmac => {
            return Err("an HMAC algorithm takes `secret` or `secret_env`, not a public key".into())
        }
    };
    r.map_err(|e| format!("not a {} public key in PEM form: {e}", family_name(family)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_refused_and_families_do_not_mix() {
        assert!(parse_algorithm("none").is_err());
        assert!(parse_algorithm("HS256").is_ok());
        let hmac = KeyEntry {
            key: DecodingKey::from_secret(b"s"),
            alg: None,
        };
        assert!(hmac.accepts(Algorithm::HS512));
        assert!(!hmac.accepts(Algorithm::RS256));
        let pinned = KeyEntry {
            key: DecodingKey::from_secret(b"s"),
            alg: Some(Algorithm::HS256),
        };
        assert!(!pinned.accepts(Algorithm::HS384));
        assert!(key_from_pem(b"junk", AlgorithmFamily::Rsa).is_err());
        assert!(key_from_pem(b"junk", AlgorithmFamily::Hmac).is_err());
    }
}
