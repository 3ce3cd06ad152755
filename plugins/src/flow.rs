//! The plugin contract: a request view in, a [`Flow`] out.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

use crate::auth::identity::IdentitySigner;

/// What a plugin sees of the request.
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub client_ip: Option<IpAddr>,
}

/// The raw value of cookie `name` in a request's `Cookie` headers, if present.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What plugins hand to the rest of the pipeline.
#[derive(Debug, Default)]
pub struct PluginOutput {
    /// Headers to set on the upstream request (e.g. the verified identity), on every
    /// attempt: read, never consumed.
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// Signs `upstream_headers` for each attempt, bound to the request as it is sent
    /// (method, rewritten path, service, request id); set on protected routes when
    /// `auth.identity.signature` is configured.
    pub identity_signer: Option<Arc<IdentitySigner>>,
    /// Headers to set on the response to the client (e.g. CORS), errors included.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// A query parameter to remove before forwarding (a token read from the URL
    /// must not reach the service's logs).
    pub strip_query_param: Option<String>,
    /// A route's `revoke: on_success`: applied by the response stage on a 2xx answer.
    pub revoke_on_success: Option<crate::revocation::PendingRevocation>,
    /// The verified token: for the plugins after `jwt` (a rate limit keyed by a claim)
    /// and for the access log's subject ([`PluginOutput::subject`]).
    pub verified: Option<Arc<crate::auth::verify::VerifiedToken>>,
}

impl PluginOutput {
    /// The authenticated subject (the verified token's `sub`), for the access log.
    pub fn subject(&self) -> Option<&str> {
        self.verified.as_ref().and_then(|v| v.sub.as_deref())
    }
}

/// A refusal: the status, a stable machine code, and a message safe to show a client.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub status: StatusCode,
    /// Stable machine code, e.g. `token_revoked`.
    pub code: &'static str,
    /// Human message; never contains internal causes.
    pub message: Cow<'static, str>,
    /// Extra response headers (e.g. `WWW-Authenticate`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Rejection {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }
}

/// A plugin's answer. `Reject` and `Answer` end the chain; the host writes both with
/// its one responder, adding the request id and the response headers plugins set.
#[derive(Debug)]
pub enum Flow {
    /// Go on to the next plugin, then the upstream.
    Continue,
    /// Answer the client now with this refusal (the JSON error shape).
    Reject(Rejection),
    /// Answer the client now with `status`, `headers` and no body (e.g. a CORS preflight).
    Answer {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
}

/// One stage of a route's request chain.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// Short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Inspect the request; add to `out` what the upstream should see.
    async fn on_request(&self, req: &RequestView<'_>, out: &mut PluginOutput) -> Flow;
}

/// A config problem found while compiling a plugin: the key path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// e.g. `auth.issuers[0].secret`
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigIssue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}
