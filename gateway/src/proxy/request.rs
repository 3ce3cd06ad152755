//! Request stage helpers: route selection on the request's config snapshot,
//! host and request-id handling, the route's plugin chain, the balancer's hash key.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::X_REQUEST_ID;
use crate::config::file::HashOn;
use crate::routing::Route;
use crate::runtime::RuntimeConfig;
use crate::upstream::balancer;

/// The route for this request, from the snapshot this request holds.
pub(super) fn select_route<'a>(
    config: &'a RuntimeConfig,
    req: &RequestHeader,
) -> Option<&'a Arc<Route>> {
    let host = request_host(req);
    config
        .routes
        .select(&req.method, &host, req.uri.path(), &req.headers)
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
    match route.service.hash_on.as_ref()? {
        HashOn::Header(name) => out
            .upstream_headers
            .iter()
            .find(|(h, _)| h.as_str().eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .or_else(|| req.headers.get(name.as_str()))
            .map(|v| balancer::hash_bytes(v.as_bytes())),
        HashOn::Cookie(name) => {
            plugins::cookie(&req.headers, name).map(|v| balancer::hash_bytes(v.as_bytes()))
        }
        HashOn::ClientIp => client_ip.map(|ip| match ip {
            IpAddr::V4(ip) => balancer::hash_bytes(&ip.octets()),
            IpAddr::V6(ip) => balancer::hash_bytes(&ip.octets()),
        }),
    }
}
