//! Request stage helpers: the path policy and route selection on the request's config snapshot,
//! host and request-id handling, the route's plugin chain, the balancer's hash key.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::X_REQUEST_ID;
use crate::routing::path_policy::{self, PathRefusal};
use crate::routing::Route;
use crate::runtime::RuntimeConfig;
use crate::upstream::{hash_bytes, HashKey};

/// What routing decided for a request whose path the policy accepted.
pub(super) struct Routed {
    pub route: Option<Arc<Route>>,
    /// The path to forward when the route's `strip_prefix`/`rewrite` changed it.
    pub upstream_path: Option<String>,
}

/// Check the path (see `routing::path_policy`), pick the route for its decoded form
/// from the snapshot this request holds, and derive the path to forward. The one
/// place a path is judged: routing, rewriting and forwarding all follow from here.
pub(super) fn route_request(
    config: &RuntimeConfig,
    req: &RequestHeader,
) -> Result<Routed, PathRefusal> {
    // the Uri holds a lossy copy of a non-UTF-8 target; the wire would get the bytes
    if !req.raw_path_is_utf8() {
        return Err(PathRefusal::NotUtf8);
    }
    let raw = req.uri.path();
    let decoded = path_policy::check(raw)?;
    let host = request_host(req);
    let route = config
        .routes
        .select(&req.method, &host, &decoded, &req.headers)
        .cloned();
    let upstream_path = match &route {
        Some(r) => r.rewrite.apply(raw, &decoded)?,
        None => None,
    };
    Ok(Routed {
        route,
        upstream_path,
    })
}

/// Host without port, lowercase (allocates only when the client used uppercase).
fn request_host(req: &RequestHeader) -> Cow<'_, str> {
    let raw = req
        .uri
        .host()
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let host = match raw.rfind(':') {
        // keep IPv6 literals like [::1] intact
        Some(i) if !raw[i..].contains(']') => &raw[..i],
        _ => raw,
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Propagate a sane client request id or make one.
pub(super) fn request_id(req: &RequestHeader) -> HeaderValue {
    if let Some(v) = req.headers.get(&X_REQUEST_ID) {
        let ok =
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if ok {
            return v.clone();
        }
    }
    // a v4 UUID from the thread-local RNG: `Uuid::new_v4` asks the kernel
    // (getrandom) on every call, a syscall per request
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = id.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

pub(super) async fn run_plugins(
    route: &Route,
    session: &Session,
    client_ip: Option<IpAddr>,
    out: &mut plugins::PluginOutput,
) -> plugins::Flow {
    if route.plugins.is_empty() {
        return plugins::Flow::Continue;
    }
    let req = session.req_header();
    let view = plugins::RequestView {
        method: &req.method,
        uri: &req.uri,
        headers: &req.headers,
        client_ip,
    };
    for plugin in &route.plugins {
        let flow = plugin.on_request(&view, out).await;
        if !matches!(flow, plugins::Flow::Continue) {
            return flow;
        }
    }
    plugins::Flow::Continue
}

/// The balancer's key for this request. A header the gateway sets itself (the
/// verified identity, e.g. `X-User-Id`) is read from what it will send, not from
/// the client (whose copy was removed before routing).
pub(super) fn hash_key(
    route: &Route,
    session: &Session,
    client_ip: Option<IpAddr>,
    out: &plugins::PluginOutput,
) -> Option<u64> {
    let req = session.req_header();
    match route.service.spec.balance.hash_key()? {
        // an identity header the auth plugin set wins over whatever the client sent
        HashKey::Header(name) => out
            .upstream_headers
            .iter()
            .find(|(h, _)| h == name)
            .map(|(_, v)| v)
            .or_else(|| req.headers.get(name))
            .map(|v| hash_bytes(v.as_bytes())),
        HashKey::Cookie(name) => {
            plugins::cookie(&req.headers, name).map(|v| hash_bytes(v.as_bytes()))
        }
        HashKey::ClientIp => client_ip.map(|ip| match ip {
            IpAddr::V4(ip) => hash_bytes(&ip.octets()),
            IpAddr::V6(ip) => hash_bytes(&ip.octets()),
        }),
    }
}
