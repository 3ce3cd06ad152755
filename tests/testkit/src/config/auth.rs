//! Shared auth fixtures: the demo HS256 issuer, Redis revocation, identity headers.

use std::collections::BTreeMap;

use super::{AuthConfig, IssuerConfig, RevocationConfig};

/// The HS256 secret tests sign their tokens with unless they need their own.
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// The demo issuer: `name: dev`, `issuer: dev`, HS256 with `secret` (what
/// `MintOptions::hs256` signs as).
pub fn hs256_issuer(secret: &str) -> IssuerConfig {
    IssuerConfig {
        issuer: Some("dev".to_string()),
        secret: Some(secret.to_string()),
        ..IssuerConfig::new("dev", vec!["HS256".to_string()])
    }
}

/// An `auth` section trusting the demo issuer under `secret`.
pub fn jwt_auth(secret: &str) -> AuthConfig {
    AuthConfig {
        issuers: vec![hs256_issuer(secret)],
        ..AuthConfig::default()
    }
}

/// Revocation read from a test Redis (mirror mode, deny when it is down).
pub fn revocation(redis_url: &str) -> RevocationConfig {
    RevocationConfig::new(redis_url)
}

/// The demo identity headers: `Authenticated-User: {email}` and `X-User-Id: {sub}`.
pub fn identity_headers() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("Authenticated-User".to_string(), "{email}".to_string()),
        ("X-User-Id".to_string(), "{sub}".to_string()),
    ])
}
