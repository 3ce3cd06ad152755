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

use std::sync::LazyLock;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus::{register_int_counter_vec, IntCounterVec};
use serde_json::json;

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
    let admin = &cfg.admin;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
