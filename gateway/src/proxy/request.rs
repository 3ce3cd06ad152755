//! Request stages (early_request_filter, request_filter): client header hygiene, the
//! request id, the path policy and route selection on the request's config snapshot,
//! what is refused before the plugins run, the route's plugin chain, the balancer's
//! hash key.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::body_limit;
use super::ids;
use super::refusal::Refusal;
use super::respond::LocalResponse;
use super::{RequestCtx, X_REQUEST_ID};
use crate::edge::Seen;
use crate::observe::METRICS;
use crate::routing::path_policy::{self, PathRefusal};
use crate::routing::{Route, Sticky};
use crate::runtime::RuntimeConfig;
use crate::upstream::{hash_bytes, HashKey, Service};

/// Client header hygiene (see `crate::edge`): note who the client is, remove what it
/// may not tell a service, and keep a refused header name for request_filter to answer.
/// Notes which of the headers later stages read the client sent (`ctx.sent`).
pub(super) fn sanitize(session: &mut Session, ctx: &mut RequestCtx) {
    let edge = &ctx.config.edge;
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    ctx.trusted_peer = peer.is_some_and(|ip| edge.trusts(ip));
    ctx.client_ip = edge.client_ip(peer, &session.req_header().headers);
    ctx.sent = match edge.sanitize(session.req_header_mut(), ctx.trusted_peer) {
        Ok(sent) => sent,
        Err(bad) => {
            ctx.refused = Some(Refusal::InvalidHeader(bad.name));
            Seen::ANY
        }
    };
}

/// Judge the path and select the route ([`route_request`]); a path the policy refuses
/// is kept for request_filter to answer, unless a header was refused first.
pub(super) fn select_route(session: &Session, ctx: &mut RequestCtx) {
    match route_request(&ctx.config, session.req_header()) {
        Ok(routed) => {
            ctx.route = routed.route;
            ctx.upstream_path = routed.upstream_path;
        }
        Err(why) if ctx.refused.is_none() => {
            why.count();
            tracing::debug!(reason = why.reason(), path = %session.req_header().uri, "path refused");
            ctx.refused = Some(Refusal::InvalidPath(why));
        }
        Err(_) => {}
    }
}

/// The route of a request nothing has refused yet, or why it is refused before its
/// plugins run: the header or path policy, no route, a declared body over the limit.
pub(super) fn admit(session: &mut Session, ctx: &mut RequestCtx) -> Result<Arc<Route>, Refusal> {
    if let Some(refusal) = ctx.refused.take() {
        ctx.route = None;
        return Err(refusal);
    }
    let Some(route) = ctx.route.clone() else {
        METRICS.no_route.inc();
        return Err(Refusal::NoRoute);
    };
    ctx.body_limit = route.max_body_size;
    let declared = ctx.sent.may_have(Seen::CONTENT_LENGTH);
    if body_limit::declared_over(session.req_header(), declared, ctx.body_limit) {
        // refused before anything is read or forwarded; the unread body ends the connection
        session.as_mut().set_keepalive(None);
        return Err(Refusal::BodyTooLarge {
            limit: ctx.body_limit,
        });
    }
    Ok(route)
}

/// What routing decided for a request whose path the policy accepted.
struct Routed {
    pub route: Option<Arc<Route>>,
    /// The path to forward when the route's `strip_prefix`/`rewrite` changed it.
    pub upstream_path: Option<String>,
}

/// Check the path (see `routing::path_policy`), pick the route for its decoded form
/// from the snapshot this request holds, and derive the path to forward. The one
/// place a path is judged: routing, rewriting and forwarding all follow from here.
fn route_request(config: &RuntimeConfig, req: &RequestHeader) -> Result<Routed, PathRefusal> {
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
pub(super) fn request_id(req: &RequestHeader, seen: Seen) -> HeaderValue {
    let client = if seen.may_have(Seen::REQUEST_ID) {
        req.headers.get(&X_REQUEST_ID)
    } else {
        None
    };
    if let Some(v) = client {
        let ok =
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if ok {
            return v.clone();
        }
    }
    // a v4 UUID from the per-thread id generator (`ids`): `Uuid::new_v4` asks the
    // kernel (getrandom) on every call, a syscall per request
    let id = uuid::Builder::from_random_bytes(ids::random()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut buf);
    // the id goes to the service on every attempt and back in the answer: held in
    // one allocation its clones share (a value made from a slice is a copy whose
    // first clone allocates again to become shared)
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Run the route's plugin chain in its order (cors, rate limit, auth, a claim-keyed
/// rate limit); the first plugin that answers ends it, with the answer to write.
pub(super) async fn run_plugins(
    route: &Route,
    session: &Session,
    client_ip: Option<IpAddr>,
    out: &mut plugins::PluginOutput,
) -> Result<(), LocalResponse> {
    if route.plugins.is_empty() {
        return Ok(());
    }
    let req = session.req_header();
    let view = plugins::RequestView {
        method: &req.method,
        uri: &req.uri,
        headers: &req.headers,
        client_ip,
    };
    for plugin in &route.plugins {
        match plugin.on_request(&view, out).await {
            plugins::Flow::Continue => {}
            plugins::Flow::Reject(rejection) => return Err(rejection.into()),
            plugins::Flow::Answer { status, headers } => {
                return Err(LocalResponse::empty(status, headers))
            }
        }
    }
    Ok(())
}

/// The route's target service for this request (see `routing::split`): by the
/// sticky cookie or header when the route has one and the request carries it,
/// else weighted random. Runs after the plugins, so a sticky identity header
/// (`X-User-Id`) is the verified one.
pub(super) fn pick_target(route: &Route, session: &Session, out: &plugins::PluginOutput) -> usize {
    let req = session.req_header();
    let value = match route.split.sticky() {
        None => None,
        Some(Sticky::Header(name)) => sent_header(out, &req.headers, name).map(|v| v.as_bytes()),
        Some(Sticky::Cookie(name)) => plugins::cookie(&req.headers, name).map(str::as_bytes),
    };
    route.split.pick(value)
}

/// A header as the service will see it: an identity header the auth plugin set
/// wins over whatever the client sent (whose copy was removed before routing).
fn sent_header<'a>(
    out: &'a plugins::PluginOutput,
    headers: &'a http::HeaderMap,
    name: &http::HeaderName,
) -> Option<&'a HeaderValue> {
    out.upstream_headers
        .iter()
        .find(|(h, _)| h == name)
        .map(|(_, v)| v)
        .or_else(|| headers.get(name))
}

/// The balancer's key for this request on the chosen `service`. A header the gateway
/// sets itself (the verified identity, e.g. `X-User-Id`) is read from what it will
/// send, not from the client.
pub(super) fn hash_key(
    service: &Service,
    session: &Session,
    client_ip: Option<IpAddr>,
    out: &plugins::PluginOutput,
) -> Option<u64> {
    let req = session.req_header();
    match service.spec.balance.hash_key()? {
        HashKey::Header(name) => {
            sent_header(out, &req.headers, name).map(|v| hash_bytes(v.as_bytes()))
        }
        HashKey::Cookie(name) => {
            plugins::cookie(&req.headers, name).map(|v| hash_bytes(v.as_bytes()))
        }
        HashKey::ClientIp => client_ip.map(|ip| match ip {
            IpAddr::V4(ip) => hash_bytes(&ip.octets()),
            IpAddr::V6(ip) => hash_bytes(&ip.octets()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::request_host;
    use pingora_http::RequestHeader;

    fn host_of(target: &str, host: Option<&str>) -> String {
        let mut req = RequestHeader::build("GET", b"/", None).expect("a request");
        req.set_uri(target.parse().expect("a target"));
        if let Some(h) = host {
            req.insert_header("Host", h).expect("a header");
        }
        request_host(&req).into_owned()
    }

    #[test]
    fn the_host_loses_its_port_and_case_and_keeps_an_ipv6_literal() {
        for (host, want) in [
            ("api.example.com", "api.example.com"),
            ("api.example.com:8080", "api.example.com"),
            ("API.Example.COM:443", "api.example.com"),
            ("[::1]", "[::1]"),
            ("[::1]:8080", "[::1]"),
            ("[2001:db8::7]:80", "[2001:db8::7]"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("", ""),
        ] {
            assert_eq!(host_of("/", Some(host)), want, "Host: {host}");
        }
        assert_eq!(host_of("/", None), "");
        // absolute-form: the target's authority wins over the header
        assert_eq!(
            host_of("http://Shop.Example:81/a", Some("other")),
            "shop.example"
        );
    }
}
