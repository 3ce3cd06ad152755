//! Upstream request rewriting (upstream_request_filter, once per attempt): path
//! rewrite and query stripping, header rules, identity headers and their signature,
//! `X-Forwarded-*`.
//!
//! Pingora hands every attempt (retries included) a fresh copy of the client's
//! request, so everything here reads the request context and never consumes it:
//! a retry must carry exactly what the first attempt carried.
//!
//! The copy is edited as plain `http` parts ([`as_parts`]): header names go on the
//! wire as the `http` crate keeps them, lowercase (a dozen standard ones, `Host`
//! and `Content-Type` among them, title-cased by Pingora), the way an HTTP/2 client's
//! request already reaches the services, and the way Envoy and HAProxy forward.

use std::borrow::Cow;

use http::header::Entry;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use plugins::auth::identity::Binding;

use crate::routing::Route;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers the gateway may add to every request besides the route's rules and the
/// identity: `X-Forwarded-For/-Proto/-Host`, `X-Request-Id`, `traceparent`,
/// `tracestate`, the identity signature.
const ADDED_ALWAYS: usize = 7;

/// Edit the request for the service as `http` parts, with room for the headers
/// the gateway adds to it on `route`, then hand it back to Pingora.
///
/// Why not through `RequestHeader`: it keeps each header's spelling in a second map
/// beside the values, both sized exactly for the client's headers, and each
/// `insert_header` parses the name back into a `HeaderName` (an allocation for a
/// name outside `http`'s table), copies it into the spelling map and grows both
/// maps, again per doubling: 20 allocations and 8% of the instructions of a plain
/// request (BENCHMARKS.md). As parts, the added names are interned statics and the
/// one map grows once. What is not kept is the client's spelling of header names,
/// which HTTP leaves without meaning (RFC 9110 5.1). A non-origin-form target
/// (absolute-form) goes out in origin-form, as the route saw it.
pub(super) fn as_parts(
    req: &mut RequestHeader,
    route: &Route,
    out: &plugins::PluginOutput,
    edit: impl FnOnce(&mut Parts) -> Result<()>,
) -> Result<()> {
    let rules = &route.request_headers;
    let room = ADDED_ALWAYS + rules.set.len() + rules.add.len() + out.upstream_headers.len();
    through_parts(req, |parts| match parts.headers.try_reserve(room) {
        Ok(()) => edit(parts),
        Err(e) => Err(too_many(e)),
    })
}

/// Drop what only [`as_parts`] would drop, once, from the client's request as the
/// engine keeps it: the client's spelling of header names (a second map beside the
/// values) and the raw bytes of a non-origin-form target. The engine copies that
/// request for every attempt, spelling map included, only for [`as_parts`] to free
/// the copy's; without it, each attempt copies the values alone. Call after routing
/// (it reads the raw target). The request reads the same for every later stage:
/// names, values, method and URI are untouched.
pub(super) fn shed_wire_form(req: &mut RequestHeader) {
    through_parts(req, |_| ());
}

/// Take `req` apart into plain `http` parts for `edit`, then put it back (the name
/// spellings and the raw target are not kept; HTTP/2's end-of-stream flag is).
fn through_parts<R>(req: &mut RequestHeader, edit: impl FnOnce(&mut Parts) -> R) -> R {
    let end_stream = req.send_end_stream();
    let (empty, ()) = http::Request::new(()).into_parts();
    let mut parts = Parts::from(std::mem::replace(req, RequestHeader::from(empty)));
    let edited = edit(&mut parts);
    *req = RequestHeader::from(parts);
    if end_stream == Some(false) {
        req.set_send_end_stream(false);
    }
    edited
}

/// Forward `new_path` (the route's rewrite, already checked by the path policy when
/// the route was selected) and drop `strip_param` from the query (a token read from
/// the URL); untouched URIs are not rebuilt.
pub(super) fn rewrite_path(
    new_path: Option<&str>,
    req: &mut Parts,
    strip_param: Option<&str>,
) -> Result<()> {
    let query = req.uri.query();
    let strip = strip_param.filter(|p| query.is_some_and(|q| has_param(q, p)));
    if new_path.is_none() && strip.is_none() {
        return Ok(());
    }
    let path = new_path.unwrap_or(req.uri.path());
    let query: Option<std::borrow::Cow<'_, str>> = match (query, strip) {
        (Some(q), Some(p)) => {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|kv| kv.split('=').next() != Some(p))
                .collect();
            (!kept.is_empty()).then(|| kept.join("&").into())
        }
        (q, _) => q.map(Into::into),
    };
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let uri = http::Uri::builder()
        .path_and_query(pq)
        .build()
        .map_err(|e| {
            Error::because(
                ErrorType::InternalError,
                "path rewrite produced an invalid URI",
                e,
            )
        })?;
    req.uri = uri;
    Ok(())
}

fn has_param(query: &str, name: &str) -> bool {
    query
        .split('&')
        .any(|kv| kv.split('=').next() == Some(name))
}

pub(super) fn apply_request_rules(
    route: &Route,
    headers: &mut HeaderMap,
    out: &plugins::PluginOutput,
) -> Result<()> {
    route.request_headers.apply(headers).map_err(too_many)?;
    // verified identity last, so no rule can overwrite it; copied, not moved: a
    // retry needs it as much as the first attempt
    for (name, value) in &out.upstream_headers {
        insert(headers, name.clone(), value.clone())?;
    }
    Ok(())
}

/// Set a header, replacing every value it had. `http`'s own `insert` panics past
/// its map's size limit; this is the fallible one.
pub(super) fn insert(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) -> Result<()> {
    headers.try_insert(name, value).map_err(too_many)?;
    Ok(())
}

/// A header map past `http`'s size limit (`MaxSizeReached`, or `try_entry`'s
/// `InvalidHeaderName`, which it returns for the same reason on a valid name).
pub(super) fn too_many(e: impl std::error::Error + Send + Sync + 'static) -> Box<Error> {
    Error::because(ErrorType::InvalidHTTPHeader, "too many headers", e)
}

/// Sign the identity for this attempt, bound to the request as it leaves: its
/// method, path and query (after every rewrite), the service and the request id.
/// Call last. A request that cannot be signed is not sent (fail closed).
pub(super) fn sign_identity(
    service: &str,
    req: &mut Parts,
    out: &plugins::PluginOutput,
    request_id: &HeaderValue,
) -> Result<()> {
    let Some(signer) = &out.identity_signer else {
        return Ok(());
    };
    let binding = Binding {
        method: req.method.as_str(),
        path_and_query: req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        service,
        request_id: request_id.to_str().unwrap_or(""),
    };
    let now = plugins::clock::unix_secs();
    let Some(value) = signer.sign(&out.upstream_headers, &binding, now) else {
        return Err(Error::explain(
            ErrorType::InternalError,
            "the identity signature cannot cover this request (a field spans lines)",
        ));
    };
    insert(&mut req.headers, signer.header().clone(), value)
}

/// Every value of a header as one comma-separated list: a client or proxy may
/// split `X-Forwarded-For` over several lines. Borrowed when there is one line.
fn header_list<'a>(values: http::header::ValueIter<'a, HeaderValue>) -> Option<Cow<'a, str>> {
    let mut values = values.filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut all = format!("{first}, {second}");
    for v in values {
        all.push_str(", ");
        all.push_str(v);
    }
    Some(Cow::Owned(all))
}

/// The slot of `name` in `headers`: one lookup for a read and a write.
fn entry<'a>(headers: &'a mut HeaderMap, name: &HeaderName) -> Result<Entry<'a, HeaderValue>> {
    headers.try_entry(name).map_err(too_many)
}

/// `X-Forwarded-For/-Proto/-Host`. The client's own copies are already gone unless
/// the peer is a trusted proxy (see `crate::edge`); a trusted proxy's are extended
/// (`-For`) or kept (`-Proto`, `-Host`). Each name is looked up once.
pub(super) fn forwarded_headers(
    session: &Session,
    req: &mut Parts,
    trusted_peer: bool,
) -> Result<()> {
    let headers = &mut req.headers;
    if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
        match entry(headers, &X_FORWARDED_FOR)? {
            Entry::Occupied(mut e) => {
                let value = forwarded_for(header_list(e.iter()).as_deref(), addr.ip());
                if let Some(value) = value {
                    e.insert(value);
                }
            }
            Entry::Vacant(e) => {
                if let Some(value) = forwarded_for(None, addr.ip()) {
                    e.try_insert(value).map_err(too_many)?;
                }
            }
        }
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    match entry(headers, &X_FORWARDED_PROTO)? {
        Entry::Occupied(_) if trusted_peer => {}
        Entry::Occupied(mut e) => {
            e.insert(proto);
        }
        Entry::Vacant(e) => {
            e.try_insert(proto).map_err(too_many)?;
        }
    }
    // an HTTP/2 client names the host in `:authority`
    let host = match headers.get(http::header::HOST) {
        Some(host) => Some(host.clone()),
        None => req
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    if let (Some(host), Entry::Vacant(e)) = (host, entry(headers, &X_FORWARDED_HOST)?) {
        e.try_insert(host).map_err(too_many)?;
    }
    Ok(())
}

/// `X-Forwarded-For` with `ip` appended, in one allocation: the address is written
/// on the stack first, so the value's buffer is exactly as long as the value (a
/// `Bytes` made from a `Vec` with room to spare allocates a second time).
fn forwarded_for(prev: Option<&str>, ip: std::net::IpAddr) -> Option<HeaderValue> {
    let mut buf = [0u8; IP_TEXT_MAX];
    let ip = ip_text(ip, &mut buf);
    match prev.filter(|p| !p.is_empty()) {
        None => HeaderValue::from_bytes(ip).ok(),
        Some(p) => {
            let mut value = Vec::with_capacity(p.len() + 2 + ip.len());
            value.extend_from_slice(p.as_bytes());
            value.extend_from_slice(b", ");
            value.extend_from_slice(ip);
            HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
        }
    }
}

/// Room for any address text: the longest IPv6 form (six groups and a dotted quad,
/// 45 bytes) is longer than anything `Display` writes (eight groups, 39 bytes).
const IP_TEXT_MAX: usize = 45;

/// `ip` as text, written into `buf`. IPv4 by hand: through `Display`, the
/// formatting machinery cost more than the rest of the header.
fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; IP_TEXT_MAX]) -> &[u8] {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            &buf[..n]
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write;
            let mut rest = &mut buf[..];
            // at most IP_TEXT_MAX bytes: the write cannot run out of room
            let _ = write!(rest, "{v6}");
            let n = IP_TEXT_MAX - rest.len();
            &buf[..n]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{forwarded_for, ip_text, IP_TEXT_MAX};

    #[test]
    fn forwarded_for_appends_the_client_to_the_chain() {
        let ip = "10.0.0.7".parse().unwrap();
        assert_eq!(forwarded_for(None, ip).unwrap(), "10.0.0.7");
        assert_eq!(forwarded_for(Some(""), ip).unwrap(), "10.0.0.7");
        assert_eq!(
            forwarded_for(Some("203.0.113.1"), ip).unwrap(),
            "203.0.113.1, 10.0.0.7"
        );
        let v6 = "2001:db8::1".parse().unwrap();
        assert_eq!(forwarded_for(None, v6).unwrap(), "2001:db8::1");
        // a long chain: complete
        let long = vec!["198.51.100.1"; 40].join(", ");
        let got = forwarded_for(Some(&long), ip).unwrap();
        assert_eq!(got.to_str().unwrap(), format!("{long}, 10.0.0.7"));
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut v4: Vec<std::net::IpAddr> =
            ["0.0.0.0", "255.255.255.255", "10.0.100.9", "1.20.3.199"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
        // every octet value in every position
        v4.extend(
            (0..=255u8)
                .map(|o| std::net::IpAddr::from(std::net::Ipv4Addr::new(o, 255 - o, o / 2, o / 3))),
        );
        let v6 = [
            "::1",
            "::ffff:192.0.2.1",
            "2001:db8:0:0:1:0:0:1",
            "fe80::1",
            // eight full groups: the longest text `Display` writes (39 bytes)
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "1111:2222:3333:4444:5555:6666:7777:8888",
        ];
        for ip in v4.into_iter().chain(v6.iter().map(|s| s.parse().unwrap())) {
            let mut buf = [0u8; IP_TEXT_MAX];
            let text = ip_text(ip, &mut buf);
            assert_eq!(std::str::from_utf8(text).unwrap(), ip.to_string());
        }
    }
}
