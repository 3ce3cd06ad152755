//! Response stage (response_filter, on the service's answer): apply a logout's
//! revocation, then the route's response header rules, the plugins' response headers
//! (CORS) and `X-Request-Id`.

use pingora_core::Result;
use pingora_http::ResponseHeader;

use super::RequestCtx;
use super::X_REQUEST_ID_WIRE;

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
    if let Some(route) = ctx.route.as_ref() {
        let rules = &route.response_headers;
        for name in &rules.remove {
            resp.remove_header(name);
        }
        for (name, value) in &rules.set {
            resp.insert_header(name.clone(), value.clone())?;
        }
        for (name, value) in &rules.add {
            resp.append_header(name.clone(), value.clone())?;
        }
    }
    for (name, value) in &ctx.plugin_out.response_headers {
        resp.insert_header(name.clone(), value.clone())?;
    }
    resp.insert_header(X_REQUEST_ID_WIRE, ctx.request_id.clone())?;
    Ok(())
}
