//! Who is calling: the identity the gateway injected (`X-User-Id`, `Authenticated-User`,
//! `X-User-Roles`) after it verified the caller's token, checked against the gateway's
//! HMAC signature (`X-Gateway-Signature`) when a signing secret is configured.
//!
//! The services never verify JWTs themselves; a request without these headers did not
//! come through a protected gateway route and is refused.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::ApiError;

pub const USER_ID_HEADER: &str = "x-user-id";
pub const EMAIL_HEADER: &str = "authenticated-user";
pub const ROLES_HEADER: &str = "x-user-roles";
pub const SIGNATURE_HEADER: &str = "x-gateway-signature";

/// Whether and how to check the gateway's signature.
#[derive(Clone, Default)]
pub struct GatewayTrust {
    secret: Option<Arc<[u8]>>,
}

impl GatewayTrust {
    pub fn new(secret: Option<&str>) -> Self {
        Self {
            secret: secret.map(|s| Arc::from(s.as_bytes())),
        }
    }

    pub fn signing_enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// Check the signature header against the identity headers of `headers`.
    pub fn verify(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        let given = header(headers, SIGNATURE_HEADER).ok_or_else(|| {
            ApiError::unauthorized(
                "gateway_signature_missing",
                "requests must come through the gateway",
            )
        })?;
        if verify_signature(secret, headers, given) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "gateway_signature_invalid",
                "requests must come through the gateway",
            ))
        }
    }
}

/// The signed string: the identity headers in a fixed order, newline separated.
fn signed_payload(headers: &HeaderMap) -> String {
    [USER_ID_HEADER, EMAIL_HEADER, ROLES_HEADER]
        .iter()
        .map(|h| header(headers, h).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// HMAC-SHA256 of the identity headers, hex, compared in constant time.
fn verify_signature(secret: &[u8], headers: &HeaderMap, given: &str) -> bool {
    let Ok(given) = hex::decode(given.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(signed_payload(headers).as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// Compute the signature the gateway would send (tests and tools).
pub fn sign(secret: &[u8], headers: &HeaderMap) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(signed_payload(headers).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The caller, as the gateway vouched for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The token's `sub`: the user id.
    pub user_id: String,
    pub email: String,
    pub roles: Vec<String>,
}

impl Identity {
    /// Read the identity headers (after the signature was checked).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let user_id = header(headers, USER_ID_HEADER).ok_or_else(|| {
            ApiError::unauthorized("unauthenticated", "no authenticated user on this request")
        })?;
        Ok(Self {
            user_id: user_id.to_string(),
            email: header(headers, EMAIL_HEADER)
                .unwrap_or_default()
                .to_string(),
            roles: header(headers, ROLES_HEADER)
                .map(|r| {
                    r.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

impl<S> FromRequestParts<S> for Identity
where
    GatewayTrust: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        GatewayTrust::from_ref(state).verify(&parts.headers)?;
        Identity::from_headers(&parts.headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn identity_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(USER_ID_HEADER, HeaderValue::from_static("u-1"));
        h.insert(EMAIL_HEADER, HeaderValue::from_static("a@example.com"));
        h.insert(ROLES_HEADER, HeaderValue::from_static("user, admin"));
        h
    }

    #[test]
    fn reads_identity_headers() {
        let id = Identity::from_headers(&identity_headers()).unwrap();
        assert_eq!(id.user_id, "u-1");
        assert_eq!(id.email, "a@example.com");
        assert_eq!(id.roles, vec!["user", "admin"]);
        assert!(Identity::from_headers(&HeaderMap::new()).is_err());
    }

    #[test]
    fn signature_is_required_only_when_configured() {
        let h = identity_headers();
        assert!(GatewayTrust::new(None).verify(&h).is_ok());
        let trust = GatewayTrust::new(Some("s3cret"));
        assert_eq!(
            trust.verify(&h).unwrap_err().code,
            "gateway_signature_missing"
        );
        let mut signed = h.clone();
        let sig = sign(b"s3cret", &h);
        signed.insert(SIGNATURE_HEADER, HeaderValue::from_str(&sig).unwrap());
        assert!(trust.verify(&signed).is_ok());
        // Change the identity after signing: refused.
        signed.insert(EMAIL_HEADER, HeaderValue::from_static("b@example.com"));
        assert_eq!(
            trust.verify(&signed).unwrap_err().code,
            "gateway_signature_invalid"
        );
        // Signed with another key: refused.
        let mut other = h.clone();
        let bad = sign(b"other", &h);
        other.insert(SIGNATURE_HEADER, HeaderValue::from_str(&bad).unwrap());
        assert!(trust.verify(&other).is_err());
    }
}
