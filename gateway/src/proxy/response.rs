//! Response stage (response_filter, on the service's answer): apply a logout's
//! revocation, then the route's response header rules, the plugins' response headers
//! (CORS) and `X-Request-Id`.
//!
//! The answer is edited as plain `http` parts ([`as_parts`]), as the request to the
//! service is (`forward::as_parts`): header names reach an HTTP/1 client as the `http`
//! crate keeps them, lowercase (a dozen standard ones, `Content-Type` and `Date` among
//! them, title-cased by Pingora), the way an HTTP/2 client already reads them, and the
//! way Envoy and HAProxy answer.

use http::response::Parts;
use pingora_core::Result;
use pingora_http::ResponseHeader;

use super::forward::{insert, too_many};
use super::RequestCtx;
use super::X_REQUEST_ID;

/// Headers the gateway adds to every answer besides the route's rules and the
/// plugins' (`X-Request-Id`).
const ADDED_ALWAYS: usize = 1;

/// `revoke: on_success` (a logout): revoked here, on a 2xx, before the answer leaves,
/// so the client's next request is refused; written to Redis for the other gateways.
pub(super) async fn revoke_on_success(resp: &ResponseHeader, ctx: &mut RequestCtx) {
    if resp.status.is_success() {
        if let Some(revocation) = ctx.plugin_out.revoke_on_success.take() {
            revocation.apply().await;
        }
    }
}

/// The route's rules (remove, set, add), then the plugins' headers, then the request id.
pub(super) fn set_headers(resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    let rules = ctx.route.as_ref().map(|route| &route.response_headers);
    let out = &ctx.plugin_out.response_headers;
    let room = ADDED_ALWAYS + out.len() + rules.map_or(0, |r| r.set.len() + r.add.len());
    as_parts(resp, room, |parts| {
        if let Some(rules) = rules {
            rules.apply(&mut parts.headers).map_err(too_many)?;
        }
        for (name, value) in out {
            insert(&mut parts.headers, name.clone(), value.clone())?;
        }
        insert(
            &mut parts.headers,
            X_REQUEST_ID.clone(),
            ctx.request_id.clone(),
        )
    })
}

/// Edit the service's answer as `http` parts, with room for `room` more headers,
/// then hand it back to Pingora.
///
/// Why not through `ResponseHeader`: it keeps each header's spelling in a second map
/// beside the values, both sized exactly for the service's headers, and each
/// `insert_header` parses the name back into a `HeaderName`, copies it into the
/// spelling map and grows both maps: for the one `X-Request-Id`, ~1.7% of the
/// instructions of a plain request (BENCHMARKS.md). What is not kept is the
/// service's spelling of header names, which HTTP leaves without meaning (RFC 9110
/// 5.1). A reason phrase other than the status code's own is kept.
fn as_parts(
    resp: &mut ResponseHeader,
    room: usize,
    edit: impl FnOnce(&mut Parts) -> Result<()>,
) -> Result<()> {
    let reason = own_reason(resp);
    let (empty, ()) = http::Response::new(()).into_parts();
    let mut parts = Parts::from(std::mem::replace(resp, ResponseHeader::from(empty)));
    let edited = match parts.headers.try_reserve(room) {
        Ok(()) => edit(&mut parts),
        Err(e) => Err(too_many(e)),
    };
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        resp.set_reason_phrase(reason.as_deref())?;
    }
    edited
}

/// The service's reason phrase when it is not the status code's standard one.
fn own_reason(resp: &ResponseHeader) -> Option<String> {
    let standard = resp.status.canonical_reason();
    resp.get_reason_phrase()
        .filter(|&reason| Some(reason) != standard)
        .map(str::to_owned)
}
