//! Why a request was refused: one enum, each case with a stable machine code, an
//! HTTP status and a client-safe message (RFC 6750 `WWW-Authenticate` for 401/403).

use http::{HeaderName, HeaderValue, StatusCode};

use crate::Rejection;

/// An authentication or authorization failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token in the request")]
    TokenMissing,
    #[error("the token is not a well-formed JWT")]
    TokenMalformed,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token is not valid yet")]
    TokenNotYetValid,
    #[error("the token signature is invalid")]
    SignatureInvalid,
    #[error("the token's signing algorithm is not accepted")]
    AlgorithmNotAllowed,
    #[error("the token's issuer is not accepted here")]
    IssuerUnknown,
    #[error("the token's audience is not accepted")]
    AudienceInvalid,
    #[error("the token lacks a required claim")]
    ClaimMissing,
    #[error("the token's signing key is unknown")]
    KeyUnknown,
    #[error("the token has been revoked")]
    TokenRevoked,
    #[error("the token does not grant access to this resource")]
    InsufficientClaims,
    #[error("token revocation state is unavailable; try again shortly")]
    RevocationUnavailable,
    #[error("token signing keys are unavailable; try again shortly")]
    KeysUnavailable,
}

impl AuthError {
    /// Every case, in declaration order (`ALL[e as usize] == e`).
    pub const ALL: [AuthError; 14] = [
        AuthError::TokenMissing,
        AuthError::TokenMalformed,
        AuthError::TokenExpired,
        AuthError::TokenNotYetValid,
        AuthError::SignatureInvalid,
        AuthError::AlgorithmNotAllowed,
        AuthError::IssuerUnknown,
        AuthError::AudienceInvalid,
        AuthError::ClaimMissing,
        AuthError::KeyUnknown,
        AuthError::TokenRevoked,
        AuthError::InsufficientClaims,
        AuthError::RevocationUnavailable,
        AuthError::KeysUnavailable,
    ];

    /// Stable machine code (JSON `error` field and the metrics `reason` label).
    pub fn code(self) -> &'static str {
        match self {
            AuthError::TokenMissing => "token_missing",
            AuthError::TokenMalformed => "token_malformed",
            AuthError::TokenExpired => "token_expired",
            AuthError::TokenNotYetValid => "token_not_yet_valid",
            AuthError::SignatureInvalid => "signature_invalid",
            AuthError::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthError::IssuerUnknown => "issuer_unknown",
            AuthError::AudienceInvalid => "audience_invalid",
            AuthError::ClaimMissing => "claim_missing",
            AuthError::KeyUnknown => "key_unknown",
            AuthError::TokenRevoked => "token_revoked",
            AuthError::InsufficientClaims => "insufficient_claims",
            AuthError::RevocationUnavailable => "revocation_unavailable",
            AuthError::KeysUnavailable => "keys_unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            AuthError::InsufficientClaims => StatusCode::FORBIDDEN,
            AuthError::RevocationUnavailable | AuthError::KeysUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 section 3), if this status carries one.
    fn www_authenticate(self) -> Option<String> {
        let desc = self.to_string();
        match self {
            // no credentials: no error attribute (RFC 6750 section 3.1)
            AuthError::TokenMissing => Some("Bearer realm=\"gateway\"".into()),
            AuthError::InsufficientClaims => Some(format!(
                "Bearer realm=\"gateway\", error=\"insufficient_scope\", error_description=\"{desc}\""
            )),
            AuthError::RevocationUnavailable | AuthError::KeysUnavailable => None,
            _ => Some(format!(
                "Bearer realm=\"gateway\", error=\"invalid_token\", error_description=\"{desc}\""
            )),
        }
    }

    /// The client answer: status, code, message, `WWW-Authenticate`.
    pub fn rejection(self) -> Rejection {
        let mut r = Rejection::new(self.status(), self.code(), self.to_string());
        if let Some(v) = self
            .www_authenticate()
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            r.headers
                .push((HeaderName::from_static("www-authenticate"), v));
        }
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            r.headers.push((
                HeaderName::from_static("retry-after"),
                HeaderValue::from_static("1"),
            ));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_case_once_in_order() {
        for (i, e) in AuthError::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i, "{e:?}");
            // adding a case without listing it: this match stops compiling
            match e {
                AuthError::TokenMissing
                | AuthError::TokenMalformed
                | AuthError::TokenExpired
                | AuthError::TokenNotYetValid
                | AuthError::SignatureInvalid
                | AuthError::AlgorithmNotAllowed
                | AuthError::IssuerUnknown
                | AuthError::AudienceInvalid
                | AuthError::ClaimMissing
                | AuthError::KeyUnknown
                | AuthError::TokenRevoked
                | AuthError::InsufficientClaims
                | AuthError::RevocationUnavailable
                | AuthError::KeysUnavailable => {}
            }
        }
        let codes: std::collections::HashSet<_> = AuthError::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), AuthError::ALL.len());
    }

    #[test]
    fn rfc6750_headers() {
        let r = AuthError::TokenExpired.rejection();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.code, "token_expired");
        let h = r.headers[0].1.to_str().unwrap();
        assert!(h.starts_with("Bearer "), "{h}");
        assert!(h.contains("error=\"invalid_token\""), "{h}");
        let r = AuthError::TokenMissing.rejection();
        assert!(!r.headers[0].1.to_str().unwrap().contains("error="));
        let r = AuthError::InsufficientClaims.rejection();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = AuthError::RevocationUnavailable.rejection();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers[0].0, "retry-after");
    }
}
