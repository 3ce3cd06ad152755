//! Answers the gateway gives itself: the JSON error shape and empty responses.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{RequestCtx, X_REQUEST_ID};

/// Answer with the project's JSON error shape: the one responder for every
/// refusal the gateway or a plugin makes.
pub(super) async fn respond_json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    rejection: plugins::Rejection,
) {
    let plugins::Rejection {
        status,
        code,
        message,
        headers: extra,
    } = rejection;
    ctx.local_status = Some(status.as_u16());
    let body = serde_json::json!({
        "error": code,
        "message": message,
        "request_id": ctx.request_id.to_str().unwrap_or(""),
    })
    .to_string();
    let body = Bytes::from(body);
    let Ok(mut resp) = ResponseHeader::build(status, Some(4)) else {
        return;
    };
    let mut add = || -> Result<()> {
        resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header(X_REQUEST_ID.clone(), ctx.request_id.clone())?;
        // plugin response headers (CORS) first, so a browser can read the error
        for (name, value) in ctx.plugin_out.response_headers.iter().chain(&extra) {
            resp.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    };
    if add().is_err() {
        return;
    }
    let head = session.req_header().method == http::Method::HEAD;
    if session
        .write_response_header(Box::new(resp), head)
        .await
        .is_ok()
        && !head
    {
        let _ = session.write_response_body(Some(body), true).await;
    }
}

/// Answer with an empty body (e.g. a CORS preflight).
pub(super) async fn respond_empty(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: StatusCode,
    headers: &[(HeaderName, HeaderValue)],
) {
    ctx.local_status = Some(status.as_u16());
    let Ok(mut resp) = ResponseHeader::build(status, Some(headers.len() + 2)) else {
        return;
    };
    let mut add = || -> Result<()> {
        resp.insert_header(X_REQUEST_ID.clone(), ctx.request_id.clone())?;
        for (name, value) in headers {
            resp.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    };
    if add().is_ok() {
        let _ = session.write_response_header(Box::new(resp), true).await;
    }
}
