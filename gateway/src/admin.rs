//! Admin listener: `/metrics`, `/health`, `/ready`, `/config` (a view of the
//! running config without secrets), and the registry and discovery routes
//! ([`registry`]). Runs on the control-plane runtime, never on the proxy's
//! workers. Who may call what: [`access`].

pub mod access;
pub mod registry;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::runtime::Shared;
use crate::upstream::monotonic_ms;

/// The admin API's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/config", get(config_view))
        .merge(registry::router())
        .with_state(shared)
}

/// Serve the admin API on `addr` until `shutdown` resolves.
pub async fn serve(
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin listener up");
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::observe::render(),
    )
        .into_response()
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the proxy listeners accept, auth state is known (revocations synced,
/// every JWKS loaded) and, unless `admin.ready_requires_instances` is off, every
/// service has an available instance (listed either way).
async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let cfg = shared.current();
    let now = monotonic_ms();
    let empty: Vec<&str> = cfg
        .services
        .values()
        .filter(|s| !s.instances().instances.iter().any(|i| i.is_available(now)))
        .map(|s| &*s.name)
        .collect();
    let mut closed = Vec::new();
    for l in &shared.startup.listeners {
        if !accepts(l.address).await {
            closed.push(l.address.to_string());
        }
    }
    // revocation state known and every JWKS loaded
    let auth_ready = cfg.auth.is_ready();
    let instances_ok = empty.is_empty() || !cfg.admin.ready_requires_instances;
    let ready = instances_ok && closed.is_empty() && auth_ready;
    let body = json!({
        "ready": ready,
        "auth_ready": auth_ready,
        "config_version": cfg.version,
        "services_without_instances": empty,
        "listeners_not_accepting": closed,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Whether a proxy listener accepts connections yet (the admin API comes up first).
async fn accepts(mut addr: std::net::SocketAddr) -> bool {
    if addr.ip().is_unspecified() {
        let local: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        addr.set_ip(local);
    }
    let connect = tokio::net::TcpStream::connect(addr);
    matches!(
        tokio::time::timeout(std::time::Duration::from_millis(500), connect).await,
        Ok(Ok(_))
    )
}

async fn config_view(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = access::check(&shared, &headers, access::Access::Read) {
        return refusal;
    }
    let cfg = shared.current();
    let now = monotonic_ms();
    let loaded = cfg
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let services: serde_json::Map<String, serde_json::Value> = cfg
        .services
        .iter()
        .map(|(name, s)| {
            let instances: Vec<_> = s
                .instances()
                .instances
                .iter()
                .map(|i| {
                    json!({
                        "id": &*i.id,
                        "weight": i.weight,
                        "healthy": i.is_healthy(),
                        "ejected": i.is_ejected(now),
                        "in_flight": i.inflight(),
                        "requests": i.requests(),
                    })
                })
                .collect();
            let v = json!({
                "load_balancer": s.spec.balance,
                "health_check": s.spec.health_check,
                "passive_health": s.spec.passive_health,
                "circuit_breaker": s.spec.circuit_breaker,
                "discovery": s.spec.discovery.kind(),
                "instances": instances,
            });
            (name.clone(), v)
        })
        .collect();
    let routes: Vec<_> = cfg
        .routes
        .routes()
        .iter()
        .map(|r| {
            json!({
                "id": &*r.id,
                "match": r.summary.get("match"),
                "service": (r.split.targets().len() == 1).then(|| &*r.target(0).service.name),
                "targets": r.split.targets().iter().map(|t| json!({"service": &*t.service.name, "weight": t.weight})).collect::<Vec<_>>(),
                "sticky": r.split.sticky().map(|s| match s {
                    crate::routing::Sticky::Cookie(c) => json!({"cookie": c}),
                    crate::routing::Sticky::Header(h) => json!({"header": h.as_str()}),
                }),
                "auth": r.summary.get("auth"),
                "plugins": r.plugins.iter().map(|p| p.name()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({
        "version": cfg.version,
        "loaded_at_unix": loaded,
        "listeners": shared.startup.listeners.iter().map(|l| json!({"address": l.address.to_string(), "tls": l.tls.is_some()})).collect::<Vec<_>>(),
        "services": services,
        "routes": routes,
    }))
    .into_response()
}
