//! Admin routes of the built-in registry and the discovery view (control plane):
//!
//! - `PUT    /registry/services/{service}/instances/{id}` `{address, port, metadata, ttl}`:
//!   register, or renew with a full body (201 when new, 200 when renewed);
//! - `PUT    /registry/services/{service}/instances/{id}/heartbeat`: renew (404 when unknown);
//! - `DELETE /registry/services/{service}/instances/{id}`: deregister;
//! - `GET    /registry/services[/{service}]`: live instances;
//! - `GET    /discovery`: per service, its source, last refresh, last error, its circuit
//!   breaker (state, window counts, probes), instances (health, ejection, back-off level).
//!
//! With `admin.token` set, the writes need `Authorization: Bearer <token>` (and the
//! reads too with `admin.protect_reads`); see `admin::access`. Registrations are
//! held to `admin.registry.limits` of the running config (so a reload changes them).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::json;

use super::access::{self, Access};
use crate::runtime::Shared;
use crate::upstream::discovery::apply_registry_now;
use crate::upstream::discovery::registry::{self, LimitError, RegisterRequest, RegistryError};
use crate::upstream::monotonic_ms;

/// The registry and discovery routes, to merge into the admin router.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/registry/services", get(list_all))
        .route("/registry/services/{service}", get(list_one))
        .route(
            "/registry/services/{service}/instances/{id}",
            put(register).delete(deregister),
        )
        .route(
            "/registry/services/{service}/instances/{id}/heartbeat",
            put(heartbeat),
        )
        .route("/discovery", get(discovery_view))
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    access::refuse(status, code, message)
}

fn from_registry(e: RegistryError) -> Response {
    match e {
        RegistryError::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid_registration", m),
        e @ RegistryError::NotFound { .. } => error(StatusCode::NOT_FOUND, "not_registered", e),
        RegistryError::Limit(l) => {
            let status = match l {
                LimitError::TooManyServices { .. } | LimitError::TooManyInstances { .. } => {
                    StatusCode::CONFLICT
                }
                LimitError::MetadataTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                LimitError::AddressNotAllowed { .. } => StatusCode::FORBIDDEN,
            };
            tracing::warn!(reason = l.code(), "registry: registration refused: {l}");
            error(status, l.code(), l)
        }
        RegistryError::Store(m) => {
            tracing::warn!(error = %m, "registry write failed: the store is unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "registry_unavailable",
                "the registry store is unavailable; retry later",
            )
        }
    }
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    access::check(shared, headers, Access::Write)
}

async fn register(
    State(shared): State<Arc<Shared>>,
    Path((service, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = authorize(&shared, &headers) {
        return r;
    }
    let req: RegisterRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_registration",
                format!("expected JSON {{\"address\", \"port\", \"metadata\", \"ttl\"}}: {e}"),
            )
        }
    };
    let cfg = shared.current();
    let result = registry::global()
        .register_with(&service, &id, req, &cfg.admin.registry_limits)
        .await;
    if result.is_ok() {
        apply_registry_now(shared.current().services.values(), &service);
    }
    match result {
        Ok((record, true)) => (StatusCode::CREATED, Json(record)).into_response(),
        Ok((record, false)) => (StatusCode::OK, Json(record)).into_response(),
        Err(e) => from_registry(e),
    }
}

async fn heartbeat(
    State(shared): State<Arc<Shared>>,
    Path((service, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = authorize(&shared, &headers) {
        return r;
    }
    match registry::global().heartbeat(&service, &id).await {
        Ok(record) => Json(record).into_response(),
        Err(e) => from_registry(e),
    }
}

async fn deregister(
    State(shared): State<Arc<Shared>>,
    Path((service, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = authorize(&shared, &headers) {
        return r;
    }
    let result = registry::global().deregister(&service, &id).await;
    if result.is_ok() {
        apply_registry_now(shared.current().services.values(), &service);
    }
    match result {
        Ok(true) => {
            Json(json!({"deregistered": true, "service": service, "id": id})).into_response()
        }
        Ok(false) => from_registry(RegistryError::NotFound { service, id }),
        Err(e) => from_registry(e),
    }
}

async fn list_all(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = access::check(&shared, &headers, Access::Read) {
        return r;
    }
    let r = registry::global();
    Json(json!({
        "store": r.store_kind(),
        "store_error": r.store_error(),
        "services": r.services(),
    }))
    .into_response()
}

async fn list_one(
    State(shared): State<Arc<Shared>>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = access::check(&shared, &headers, Access::Read) {
        return r;
    }
    let r = registry::global();
    Json(json!({
        "service": service,
        "instances": r.instances(&service),
    }))
    .into_response()
}

async fn discovery_view(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = access::check(&shared, &headers, Access::Read) {
        return r;
    }
    let cfg = shared.current();
    let now = monotonic_ms();
    let services: serde_json::Map<String, serde_json::Value> = cfg
        .services
        .iter()
        .map(|(name, s)| {
            let mut status = s.discovery.status();
            if status.source.is_empty() {
                status.source = s.spec.discovery.kind();
            }
            let instances: Vec<_> = s
                .instances()
                .instances
                .iter()
                .map(|i| {
                    json!({
                        "id": &*i.id,
                        "weight": i.weight,
                        "available": i.is_available(now),
                        "healthy": i.is_healthy(),
                        "ejected": i.is_ejected(now),
                        "ejection_level": i.ejection_level(),
                        "in_flight": i.inflight(),
                    })
                })
                .collect();
            let breaker = s.circuit_breaker.as_ref().map(|b| b.status(now));
            (
                name.clone(),
                json!({"discovery": status, "circuit_breaker": breaker, "instances": instances}),
            )
        })
        .collect();
    Json(json!({"config_version": cfg.version, "services": services})).into_response()
}
