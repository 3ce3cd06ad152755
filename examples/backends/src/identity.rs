//! Who is calling: the identity the gateway injected (`X-User-Id`, `Authenticated-User`,
//! `X-User-Roles`) after it verified the caller's token, checked against the gateway's
//! HMAC signature (`X-Gateway-Signature`) when a signing secret is configured.
//!
//! The services never verify JWTs themselves; a request without these headers did not
//! come through a protected gateway route and is refused.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use plugins::auth::identity::{verify_signature, SignatureError};

use crate::error::ApiError;

pub const USER_ID_HEADER: &str = "x-user-id";
pub const EMAIL_HEADER: &str = "authenticated-user";
pub const ROLES_HEADER: &str = "x-user-roles";

/// How long a gateway signature stays valid (clock skew plus queueing).
const SIGNATURE_MAX_AGE: Duration = Duration::from_secs(60);

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

    /// Check the signature header (the gateway's format, verified by the gateway's
    /// own `verify_signature`) and that it covers the identity headers we read.
    pub fn verify(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        let refused = |code: &'static str| {
            ApiError::unauthorized(code, "requests must come through the gateway")
        };
        match verify_signature(headers, secret, SIGNATURE_MAX_AGE) {
            Ok(signed) => {
                let covered = [USER_ID_HEADER, EMAIL_HEADER, ROLES_HEADER]
                    .iter()
                    .all(|h| signed.headers.iter().any(|(n, _)| n == h));
                if covered {
                    Ok(())
                } else {
                    Err(refused("gateway_signature_invalid"))
                }
            }
            Err(SignatureError::Missing) => Err(refused("gateway_signature_missing")),
            Err(_) => Err(refused("gateway_signature_invalid")),
        }
    }
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

    /// Sign like the gateway does (its renderer, same templates as the demo config).
    fn gateway_signature(secret: &[u8], h: &HeaderMap) -> HeaderValue {
        use plugins::auth::identity::{IdentityRenderer, SIGNATURE_HEADER};
        let r = IdentityRenderer::new(
            &[
                ("Authenticated-User".into(), "{email}".into()),
                ("X-User-Id".into(), "{sub}".into()),
                ("X-User-Roles".into(), "{roles}".into()),
            ],
            Some((
                axum::http::HeaderName::from_static(SIGNATURE_HEADER),
                secret.to_vec(),
            )),
        )
        .unwrap();
        let identity: Vec<_> = h.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        r.sign(&identity, now).unwrap().1
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
        signed.insert("x-gateway-signature", gateway_signature(b"s3cret", &h));
        assert!(trust.verify(&signed).is_ok());
        // Change the identity after signing: refused.
        signed.insert(EMAIL_HEADER, HeaderValue::from_static("b@example.com"));
        assert_eq!(
            trust.verify(&signed).unwrap_err().code,
            "gateway_signature_invalid"
        );
        // Signed with another key: refused.
        let mut other = h.clone();
        other.insert("x-gateway-signature", gateway_signature(b"other", &h));
        assert!(trust.verify(&other).is_err());
    }
}
