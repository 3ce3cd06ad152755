//! Request stage helpers: route selection on the request's config snapshot,
//! host and request-id handling, the route's plugin chain, the balancer's hash key.

use std::borrow::Cow;
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
        client_ip: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip()),
    };
    for plugin in &route.plugins {
        let flow = plugin.on_request(&view, out).await;
        if !matches!(flow, plugins::Flow::Continue) {
            return flow;
        }
    }
    plugins::Flow::Continue
}

pub(super) fn hash_key(route: &Route, session: &Session) -> Option<u64> {
    let req = session.req_header();
    match route.service.hash_on.as_ref()? {
        HashOn::Header(name) => req
            .headers
            .get(name.as_str())
            .map(|v| balancer::hash_bytes(v.as_bytes())),
        HashOn::Cookie(name) => {
            plugins::cookie(&req.headers, name).map(|v| balancer::hash_bytes(v.as_bytes()))
        }
        HashOn::ClientIp => session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| match a.ip() {
                std::net::IpAddr::V4(ip) => balancer::hash_bytes(&ip.octets()),
                std::net::IpAddr::V6(ip) => balancer::hash_bytes(&ip.octets()),
            }),
    }
}
