//! Upstream request rewriting (upstream_request_filter, once per attempt): path
//! rewrite and query stripping, header rules, identity headers and their signature,
//! `X-Forwarded-*`.
//!
//! Pingora hands every attempt (retries included) a fresh copy of the client's
//! request, so everything here reads the request context and never consumes it:
//! a retry must carry exactly what the first attempt carried.

use std::borrow::Cow;

use http::{HeaderName, HeaderValue};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use plugins::auth::identity::Binding;

use crate::routing::Route;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
// the spellings written (see `super::X_REQUEST_ID_WIRE`)
const X_FORWARDED_FOR_WIRE: &str = "X-Forwarded-For";
const X_FORWARDED_PROTO_WIRE: &str = "X-Forwarded-Proto";
const X_FORWARDED_HOST_WIRE: &str = "X-Forwarded-Host";

/// Forward `new_path` (the route's rewrite, already checked by the path policy when
/// the route was selected) and drop `strip_param` from the query (a token read from
/// the URL); untouched URIs are not rebuilt.
pub(super) fn rewrite_path(
    new_path: Option<&str>,
    req: &mut RequestHeader,
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
    req.set_uri(uri);
    Ok(())
}

fn has_param(query: &str, name: &str) -> bool {
    query
        .split('&')
        .any(|kv| kv.split('=').next() == Some(name))
}

pub(super) fn apply_request_rules(
    route: &Route,
    req: &mut RequestHeader,
    out: &plugins::PluginOutput,
) -> Result<()> {
    let rules = &route.request_headers;
    for name in &rules.remove {
        req.remove_header(name);
    }
    for (name, value) in &rules.set {
        req.insert_header(name.clone(), value.clone())?;
    }
    for (name, value) in &rules.add {
        req.append_header(name.clone(), value.clone())?;
    }
    // verified identity last, so no rule can overwrite it; copied, not moved: a
    // retry needs it as much as the first attempt
    for (name, value) in &out.upstream_headers {
        req.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// Sign the identity for this attempt, bound to the request as it leaves: its
/// method, path and query (after every rewrite), the service and the request id.
/// Call last. A request that cannot be signed is not sent (fail closed).
pub(super) fn sign_identity(
    route: &Route,
    req: &mut RequestHeader,
    out: &plugins::PluginOutput,
    request_id: &HeaderValue,
) -> Result<()> {
    let Some(signer) = &out.identity_signer else {
        return Ok(());
    };
    let binding = Binding {
        method: req.method.as_str(),
        path_and_query: req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        service: &route.service.name,
        request_id: request_id.to_str().unwrap_or(""),
    };
    let now = plugins::clock::unix_secs();
    let Some(value) = signer.sign(&out.upstream_headers, &binding, now) else {
        return Err(Error::explain(
            ErrorType::InternalError,
            "the identity signature cannot cover this request (a field spans lines)",
        ));
    };
    req.insert_header(signer.header().clone(), value)?;
    Ok(())
}

/// Every value of a header as one comma-separated list: a client or proxy may
/// split `X-Forwarded-For` over several lines. Borrowed when there is one line.
fn header_list<'a>(headers: &'a http::HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
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

/// `X-Forwarded-For/-Proto/-Host`. The client's own copies are already gone unless
/// the peer is a trusted proxy (see `crate::edge`); a trusted proxy's are extended
/// (`-For`) or kept (`-Proto`, `-Host`).
pub(super) fn forwarded_headers(
    session: &Session,
    req: &mut RequestHeader,
    trusted_peer: bool,
) -> Result<()> {
    if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
        let value = {
            let prev = header_list(&req.headers, &X_FORWARDED_FOR);
            forwarded_for(prev.as_deref(), addr.ip())
        };
        if let Some(value) = value {
            req.insert_header(X_FORWARDED_FOR_WIRE, value)?;
        }
    }
    if !(trusted_peer && req.headers.contains_key(&X_FORWARDED_PROTO)) {
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        req.insert_header(X_FORWARDED_PROTO_WIRE, if tls { "https" } else { "http" })?;
    }
    if !req.headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = req.headers.get(http::header::HOST).cloned() {
            req.insert_header(X_FORWARDED_HOST_WIRE, host)?;
        } else if let Some(host) = req.uri.authority().map(|a| a.to_string()) {
            req.insert_header(X_FORWARDED_HOST_WIRE, host)?;
        }
    }
    Ok(())
}

/// `X-Forwarded-For` with `ip` appended, formatted on the stack (one copy into
/// the header value instead of two heap strings per request).
fn forwarded_for(prev: Option<&str>, ip: std::net::IpAddr) -> Option<HeaderValue> {
    use std::io::Write;
    let prev = prev.filter(|p| !p.is_empty());
    let mut buf = [0u8; 256];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let written = match prev {
        Some(p) => write!(cur, "{p}, {ip}"),
        None => write!(cur, "{ip}"),
    };
    if written.is_ok() {
        let n = usize::try_from(cur.position()).unwrap_or(0);
        return HeaderValue::from_bytes(&buf[..n]).ok();
    }
    // a chain longer than the buffer
    let value = match prev {
        Some(p) => format!("{p}, {ip}"),
        None => ip.to_string(),
    };
    HeaderValue::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::forwarded_for;

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
        // longer than the stack buffer: still complete
        let long = vec!["198.51.100.1"; 40].join(", ");
        let got = forwarded_for(Some(&long), ip).unwrap();
        assert_eq!(got.to_str().unwrap(), format!("{long}, 10.0.0.7"));
    }
}
