//! The one responder for answers the gateway writes itself: its own refusals
//! (`refusal::Refusal`), plugins' rejections and a plugin's empty answer (a CORS
//! preflight) all become a [`LocalResponse`], written by [`respond`].

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{RequestCtx, X_REQUEST_ID};

/// An answer the gateway writes itself: a status, headers and, for an error, the
/// project's JSON error body.
#[derive(Debug)]
pub(super) struct LocalResponse {
    status: StatusCode,
    /// `{"error": code, "message": ..., "request_id": ...}`; none for an answer that
    /// is not an error (a CORS preflight).
    error: Option<(&'static str, Cow<'static, str>)>,
    /// Extra headers (e.g. `WWW-Authenticate`, the preflight's `Access-Control-*`).
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl LocalResponse {
    pub(super) fn error(
        status: StatusCode,
        code: &'static str,
        message: Cow<'static, str>,
    ) -> Self {
        Self {
            status,
            error: Some((code, message)),
            headers: Vec::new(),
        }
    }

    /// An answer with no body (a plugin's `Flow::Answer`).
    pub(super) fn empty(status: StatusCode, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        Self {
            status,
            error: None,
            headers,
        }
    }

    /// The same answer with one more header (e.g. `Retry-After`).
    pub(super) fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The same answer with another status.
    pub(super) fn with_status(self, status: StatusCode) -> Self {
        Self { status, ..self }
    }
}

impl From<plugins::Rejection> for LocalResponse {
    fn from(r: plugins::Rejection) -> Self {
        Self {
            status: r.status,
            error: Some((r.code, r.message)),
            headers: r.headers,
        }
    }
}

/// Write `answer`: its status, `X-Request-Id`, the plugins' response headers (CORS,
/// so a browser can read an error), its own headers, and its JSON body if it has one
/// (not for `HEAD`).
pub(super) async fn respond(session: &mut Session, ctx: &mut RequestCtx, answer: LocalResponse) {
    let LocalResponse {
        status,
        error,
        headers,
    } = answer;
    ctx.local_status = Some(status.as_u16());
    let body = error.map(|(code, message)| {
        let json = serde_json::json!({
            "error": code,
            "message": message,
            "request_id": ctx.request_id.to_str().unwrap_or(""),
        });
        Bytes::from(json.to_string())
    });
    let out = &ctx.plugin_out.response_headers;
    // no spelling map: names are written as proxied answers' are (`response::as_parts`)
    let Ok(mut resp) = ResponseHeader::build_no_case(status, Some(3 + out.len() + headers.len()))
    else {
        return;
    };
    let mut add = || -> Result<()> {
        if let Some(body) = &body {
            resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
            resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        }
        resp.insert_header(X_REQUEST_ID.clone(), ctx.request_id.clone())?;
        for (name, value) in out.iter().chain(&headers) {
            resp.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    };
    if add().is_err() {
        return;
    }
    let body = body.filter(|_| session.req_header().method != http::Method::HEAD);
    let header_ends = body.is_none();
    if session
        .write_response_header(Box::new(resp), header_ends)
        .await
        .is_ok()
    {
        if let Some(body) = body {
            let _ = session.write_response_body(Some(body), true).await;
        }
    }
}
