//! Who may use the admin API (control plane).
//!
//! - Writes (registry PUT/DELETE) need `Authorization: Bearer <admin.token>` when a
//!   token is set. Without one they are open, which the config check allows only on
//!   a loopback address or with the explicit `admin.allow_unauthenticated_writes`.
//! - Reads of `/config`, `/registry/...` and `/discovery` need the token too with
//!   `admin.protect_reads`; `/metrics`, `/health` and `/ready` are always open
//!   (scrapers and probes carry no secrets).
//!
//! Every refusal is a JSON error and counts in `gateway_admin_refusals_total{reason}`.

use std::net::SocketAddr;
use std::sync::LazyLock;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus::{register_int_counter_vec, IntCounterVec};
use serde_json::json;

use crate::config::file::AdminConfig;
use crate::config::ConfigError;
use crate::runtime::Shared;

/// Refused admin calls by reason (`unauthorized`, `forbidden`, registry caps, ...).
static REFUSALS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gateway_admin_refusals_total",
        "Admin API calls refused, by reason (missing or wrong token, registry caps)",
        &["reason"]
    )
    .ok()
});

/// What a call does, for the token rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A JSON refusal `{"error": code, "message": ...}`, counted by `code`.
pub fn refuse(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    if let Some(m) = REFUSALS.as_ref() {
        m.with_label_values(&[code]).inc();
    }
    (
        status,
        Json(json!({"error": code, "message": message.to_string()})),
    )
        .into_response()
}

/// `Some(refusal)` unless the call may proceed under the running config.
pub fn check(shared: &Shared, headers: &HeaderMap, access: Access) -> Option<Response> {
    let cfg = shared.current();
    let admin = cfg.file.admin.as_ref()?;
    if access == Access::Read && !admin.protect_reads {
        return None;
    }
    let token = admin.token.as_deref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => None,
        Some(_) => Some(refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "wrong admin token",
        )),
        None => {
            let mut r = refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this admin call needs `Authorization: Bearer <admin token>`",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            Some(r)
        }
    }
}

/// Compare digests, so the time taken says nothing about where the inputs differ
/// (nor about the token's length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    let diff = x
        .iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q));
    std::hint::black_box(diff) == 0
}

/// The exposure rule: registry writes without a token only on a loopback address,
/// unless explicitly allowed (then warned about at every start and reload).
pub fn check_exposure(admin: &AdminConfig, errors: &mut Vec<ConfigError>) {
    if let Some(t) = &admin.token {
        if t.trim().is_empty() {
            errors.push(ConfigError::new(
                "admin.token",
                "is empty; set a long random value (e.g. `openssl rand -hex 32`) or remove the key",
            ));
        }
    }
    if admin.protect_reads && admin.token.is_none() {
        errors.push(ConfigError::new(
            "admin.protect_reads",
            "needs admin.token: reads are protected by the same bearer token",
        ));
    }
    let Ok(addr) = admin.address.parse::<SocketAddr>() else {
        return; // reported with the address check
    };
    if admin.token.is_some() || addr.ip().is_loopback() {
        return;
    }
    if admin.allow_unauthenticated_writes {
        tracing::warn!(
            address = %addr,
            "admin API reachable from other hosts WITHOUT a token: anyone who reaches {addr} can \
             register instances and receive traffic (admin.allow_unauthenticated_writes: true); \
             set admin.token"
        );
        return;
    }
    errors.push(ConfigError::new(
        "admin.token",
        format!(
            "the admin listener {addr} is not a loopback address and has no token, so anyone who \
             reaches it could register instances and receive traffic: set admin.token (clients send \
             `Authorization: Bearer <token>`), or bind admin.address to 127.0.0.1, or accept the \
             risk with admin.allow_unauthenticated_writes: true"
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(address: &str, token: Option<&str>, allow: bool) -> AdminConfig {
        AdminConfig {
            address: address.into(),
            token: token.map(Into::into),
            allow_unauthenticated_writes: allow,
            protect_reads: false,
            registry: None,
        }
    }

    fn errors(a: &AdminConfig) -> Vec<ConfigError> {
        let mut e = Vec::new();
        check_exposure(a, &mut e);
        e
    }

    #[test]
    fn exposure_rule() {
        assert!(errors(&admin("127.0.0.1:9090", None, false)).is_empty());
        assert!(errors(&admin("[::1]:9090", None, false)).is_empty());
        assert!(errors(&admin("0.0.0.0:9090", Some("s3cret-token"), false)).is_empty());
        assert!(errors(&admin("0.0.0.0:9090", None, true)).is_empty());
        let e = errors(&admin("0.0.0.0:9090", None, false));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "admin.token");
        assert!(e[0].message.contains("allow_unauthenticated_writes"));
        assert_eq!(errors(&admin("10.0.0.1:9090", Some(" "), false)).len(), 1);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
