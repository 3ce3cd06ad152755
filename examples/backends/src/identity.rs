//! Who is calling: the identity the gateway injected (`X-User-Id`, `Authenticated-User`,
//! `X-User-Roles`) after it verified the caller's token, checked against the gateway's
//! HMAC signature (`X-Gateway-Signature`) when a signing secret is configured. The
//! signature is bound to this request: its method, path and query, this service's
//! name and the request id, so a captured header set is good for nothing else.
//!
//! The services never verify JWTs themselves; a request without these headers did not
//! come through a protected gateway route and is refused.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use plugins::auth::identity::{verify_signature, ReceivedRequest, SignatureError};

use crate::error::ApiError;

pub const USER_ID_HEADER: &str = "x-user-id";
pub const EMAIL_HEADER: &str = "authenticated-user";
pub const ROLES_HEADER: &str = "x-user-roles";

/// How long a gateway signature stays valid (clock skew plus queueing).
const SIGNATURE_MAX_AGE: Duration = Duration::from_secs(60);

/// Whether and how to check the gateway's signature.
#[derive(Clone)]
pub struct GatewayTrust {
    /// This service's name in the gateway's `services:` (the signature names it).
    service: &'static str,
    secret: Option<Arc<[u8]>>,
}

impl GatewayTrust {
    /// `service`: this service's name as the gateway knows it (`member`, `order`).
    pub fn new(service: &'static str, secret: Option<&str>) -> Self {
        Self {
            service,
            secret: secret.map(|s| Arc::from(s.as_bytes())),
        }
    }

    pub fn signing_enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// Check the signature header on this request (the gateway's format, verified by
    /// the gateway's own `verify_signature`) and that it covers the identity headers
    /// we read.
    pub fn verify(&self, req: &ReceivedRequest<'_>) -> Result<(), ApiError> {
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        let refused = |code: &'static str| {
            ApiError::unauthorized(code, "requests must come through the gateway")
        };
        match verify_signature(req, self.service, secret, SIGNATURE_MAX_AGE) {
            Ok(signed) => {
                if signed.covers(&[USER_ID_HEADER, EMAIL_HEADER, ROLES_HEADER]) {
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
        // the path as it arrived (a nested router would show a shortened one)
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map_or(&parts.uri, |o| &o.0);
        let req = ReceivedRequest::new(&parts.method, uri, &parts.headers);
        GatewayTrust::from_ref(state).verify(&req)?;
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

    const SERVICE: &str = "order";

    /// Sign like the gateway does (its signer, same headers as the demo config).
    fn gateway_signature(secret: &[u8], h: &HeaderMap, method: &str, pq: &str) -> HeaderValue {
        use axum::http::HeaderName;
        use plugins::auth::identity::{Binding, IdentitySigner, SIGNATURE_HEADER};
        let names = [EMAIL_HEADER, USER_ID_HEADER, ROLES_HEADER]
            .map(HeaderName::from_static)
            .to_vec();
        let signer =
            IdentitySigner::new(HeaderName::from_static(SIGNATURE_HEADER), secret, names).unwrap();
        let identity: Vec<_> = h.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        let binding = Binding {
            method,
            path_and_query: pq,
            service: SERVICE,
            request_id: "req-1",
        };
        signer
            .sign(&identity, &binding, plugins::clock::unix_secs())
            .unwrap()
    }

    fn verify(trust: &GatewayTrust, h: &HeaderMap, method: &str, pq: &str) -> Result<(), ApiError> {
        trust.verify(&ReceivedRequest {
            method,
            path_and_query: pq,
            headers: h,
        })
    }

    #[test]
    fn signature_is_required_only_when_configured() {
        let mut h = identity_headers();
        h.insert("x-request-id", HeaderValue::from_static("req-1"));
        let pq = "/order/orders?limit=5";
        assert!(verify(&GatewayTrust::new(SERVICE, None), &h, "GET", pq).is_ok());
        let trust = GatewayTrust::new(SERVICE, Some("s3cret"));
        assert_eq!(
            verify(&trust, &h, "GET", pq).unwrap_err().code,
            "gateway_signature_missing"
        );
        let mut signed = h.clone();
        let sig = gateway_signature(b"s3cret", &identity_headers(), "GET", pq);
        signed.insert("x-gateway-signature", sig);
        assert!(verify(&trust, &signed, "GET", pq).is_ok());
        // The same headers on another request, or for another service: refused.
        for (method, path) in [
            ("DELETE", pq),
            ("GET", "/order/orders/1"),
            ("GET", "/order/orders"),
        ] {
            assert_eq!(
                verify(&trust, &signed, method, path).unwrap_err().code,
                "gateway_signature_invalid",
                "{method} {path}"
            );
        }
        let member = GatewayTrust::new("member", Some("s3cret"));
        assert!(verify(&member, &signed, "GET", pq).is_err());
        // Change the identity after signing: refused.
        signed.insert(EMAIL_HEADER, HeaderValue::from_static("b@example.com"));
        assert_eq!(
            verify(&trust, &signed, "GET", pq).unwrap_err().code,
            "gateway_signature_invalid"
        );
        // Signed with another key: refused.
        let mut other = h.clone();
        let sig = gateway_signature(b"other", &identity_headers(), "GET", pq);
        other.insert("x-gateway-signature", sig);
        assert!(verify(&trust, &other, "GET", pq).is_err());
    }
}
