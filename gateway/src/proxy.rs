//! The request pipeline: `impl ProxyHttp for Gateway`, one hook per stage, in
//! request order. Each hook is a few lines that call one stage.
//!
//! early_request_filter    -> client header hygiene (edge), path policy, route selection
//! request_filter          -> answer what was refused early, run the route's plugin chain
//!                            (cors, rate limit, auth: see config::compile::route::plugin_chain)
//! upstream_peer           -> upstream::pick (balancer over healthy instances)
//! upstream_request_filter -> rewrite path, route + identity headers, X-Forwarded-*
//! upstream_response_filter-> passive health, retry on configured statuses
//! response_filter         -> revoke on success (logout), response headers, X-Request-Id
//! logging                 -> observe::record (metrics + access log)

mod body_limit;
mod forward;
mod request;
mod respond;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::observe::{self, METRICS};
use crate::routing::path_policy::PathRefusal;
use crate::routing::Route;
use crate::runtime::{RuntimeConfig, Shared};
use crate::upstream::{monotonic_ms, InflightGuard, PickInput};
use forward::{apply_request_rules, forwarded_headers, rewrite_path, sign_identity};
use request::{hash_key, request_id, route_request, run_plugins};
use respond::{respond_empty, respond_json};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The gateway's proxy logic; all state is behind [`Shared`].
pub struct Gateway {
    pub shared: Arc<Shared>,
}

/// Why the gateway itself answered. Each kind knows its status, code and message
/// ([`Refusal::rejection`]); plugins answer with a [`plugins::Rejection`] already, and
/// both are written by the one responder, `respond::respond_json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// A header name the header policy refuses (`server.headers_with_underscores: reject`).
    InvalidHeader,
    /// A path a backend could resolve to another route than the one matched.
    InvalidPath(PathRefusal),
    NoRoute,
    BodyTooLarge,
    NoInstance,
    UpstreamUnreachable,
    UpstreamTimeout,
    Internal,
}

impl Refusal {
    fn code(self) -> &'static str {
        match self {
            Refusal::InvalidHeader => "invalid_header",
            Refusal::InvalidPath(_) => "invalid_path",
            Refusal::NoRoute => "route_not_found",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::NoInstance => "no_healthy_instance",
            Refusal::UpstreamUnreachable => "upstream_unreachable",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::Internal => "internal_error",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Refusal::InvalidHeader | Refusal::InvalidPath(_) => StatusCode::BAD_REQUEST,
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::NoInstance => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer for this refusal; the message may name what the request carried.
    fn rejection(self, ctx: &RequestCtx) -> plugins::Rejection {
        let message: Cow<'static, str> = match self {
            Refusal::InvalidHeader => {
                let name = ctx.invalid_header.as_deref().unwrap_or("?");
                format!("header {name:?}: names with `_` are not accepted; use `-`").into()
            }
            Refusal::InvalidPath(why) => why.message().into(),
            Refusal::NoRoute => "no route matches this request".into(),
            Refusal::BodyTooLarge => {
                format!("the request body is over {} bytes", ctx.body_limit).into()
            }
            Refusal::NoInstance => {
                let svc = ctx.route.as_ref().map_or("?", |r| &r.service.name);
                format!("service {svc:?} has no healthy instance").into()
            }
            Refusal::UpstreamTimeout => "the service did not answer in time".into(),
            Refusal::UpstreamUnreachable => "the service could not be reached".into(),
            Refusal::Internal => "the gateway failed to handle this request".into(),
        };
        plugins::Rejection::new(self.status(), self.code(), message)
    }
}

/// Per-request state: typed and small.
pub struct RequestCtx {
    config: Arc<RuntimeConfig>,
    route: Option<Arc<Route>>,
    request_id: HeaderValue,
    /// The client: the peer, or from a trusted proxy the first untrusted forwarded hop.
    client_ip: Option<IpAddr>,
    /// Whether the peer is one of `server.trusted_proxies`.
    trusted_peer: bool,
    /// A client header the header policy refuses (answered in request_filter).
    invalid_header: Option<String>,
    /// Why the path policy refused the path (answered in request_filter).
    invalid_path: Option<PathRefusal>,
    /// The path to forward when the route rewrites it (checked by the path policy).
    upstream_path: Option<String>,
    plugin_out: plugins::PluginOutput,
    /// Instances already tried by this request (a retry goes elsewhere).
    tried: Vec<Arc<str>>,
    inflight: Option<InflightGuard>,
    hash_key: Option<u64>,
    attempts: u32,
    /// Set when a response status asked for a retry.
    status_retry: bool,
    /// The route's request body limit in bytes (0: none) and the bytes seen so far.
    body_limit: u64,
    body_seen: u64,
    refusal: Option<Refusal>,
    /// Status the gateway answered itself (rejections).
    local_status: Option<u16>,
    started: Instant,
    upstream_started: Option<Instant>,
    _in_flight: InFlight,
}

/// Counts a request in `gateway_requests_in_flight` for as long as its context lives.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        METRICS.in_flight.inc();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            config: self.shared.current(),
            route: None,
            request_id: HeaderValue::from_static(""),
            client_ip: None,
            trusted_peer: false,
            invalid_header: None,
            invalid_path: None,
            upstream_path: None,
            plugin_out: plugins::PluginOutput::default(),
            tried: Vec::new(),
            inflight: None,
            hash_key: None,
            attempts: 0,
            status_retry: false,
            body_limit: 0,
            body_seen: 0,
            refusal: None,
            local_status: None,
            started: Instant::now(),
            upstream_started: None,
            _in_flight: InFlight::start(),
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.started = Instant::now();
        // what the client may not tell a service goes before anything reads the headers
        let edge = &ctx.config.edge;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.trusted_peer = peer.is_some_and(|ip| edge.trusts(ip));
        ctx.client_ip = edge.client_ip(peer, &session.req_header().headers);
        if let Err(bad) = edge.sanitize(session.req_header_mut(), ctx.trusted_peer) {
            ctx.invalid_header = Some(bad.name);
        }
        ctx.request_id = request_id(session.req_header());
        match route_request(&ctx.config, session.req_header()) {
            Ok(routed) => {
                ctx.route = routed.route;
                ctx.upstream_path = routed.upstream_path;
            }
            Err(refusal) => ctx.invalid_path = Some(refusal),
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if ctx.invalid_header.is_some() {
            ctx.route = None;
            answer(session, ctx, Refusal::InvalidHeader).await;
            return Ok(true);
        }
        // a path a backend could resolve to another route than the one matched
        if let Some(why) = ctx.invalid_path {
            why.count();
            tracing::debug!(reason = why.reason(), path = %session.req_header().uri, "path refused");
            answer(session, ctx, Refusal::InvalidPath(why)).await;
            return Ok(true);
        }
        let Some(route) = ctx.route.clone() else {
            METRICS.no_route.inc();
            answer(session, ctx, Refusal::NoRoute).await;
            return Ok(true);
        };
        ctx.body_limit = route.max_body_size;
        if body_limit::declared_over(session.req_header(), ctx.body_limit) {
            // refused before anything is read or forwarded; the unread body ends the connection
            session.as_mut().set_keepalive(None);
            answer(session, ctx, Refusal::BodyTooLarge).await;
            return Ok(true);
        }
        match run_plugins(&route, session, ctx.client_ip, &mut ctx.plugin_out).await {
            plugins::Flow::Continue => {}
            plugins::Flow::Reject(rej) => {
                respond_json(session, ctx, rej).await;
                return Ok(true);
            }
            plugins::Flow::Answer { status, headers } => {
                respond_empty(session, ctx, status, &headers).await;
                return Ok(true);
            }
        }
        ctx.hash_key = hash_key(&route, session, ctx.client_ip, &ctx.plugin_out);
        if !route.retry.on_status.is_empty() && route.retry.allows(&session.req_header().method) {
            session.as_mut().enable_retry_buffering();
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let chunk = body.as_ref().map_or(0, |b| b.len());
        if body_limit::streamed_over(&mut ctx.body_seen, chunk, ctx.body_limit) {
            // nothing past the limit is forwarded: the chunk is dropped and the attempt ends
            *body = None;
            return Err(refuse(ctx, Refusal::BodyTooLarge, 413));
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Err(refuse(ctx, Refusal::Internal, 500));
        };
        if ctx.attempts > 0 {
            route.metrics.retried();
        }
        ctx.attempts += 1;
        let service = &route.service;
        let now = monotonic_ms();
        let pick = |exclude: &[Arc<str>]| {
            service.pick(&PickInput {
                key: ctx.hash_key,
                exclude,
                now_ms: now,
            })
        };
        // prefer an instance this request has not tried; fall back to any available one
        let Some(instance) = pick(&ctx.tried).or_else(|| pick(&[])) else {
            return Err(refuse(ctx, Refusal::NoInstance, 503));
        };
        ctx.tried.push(instance.id.clone());
        ctx.inflight = Some(instance.begin());
        ctx.upstream_started.get_or_insert_with(Instant::now);
        let opts = &service.spec.peer;
        let mut peer = HttpPeer::new(instance.addr, opts.tls, opts.sni.clone());
        peer.options.connection_timeout = Some(route.connect_timeout);
        peer.options.read_timeout = Some(route.read_timeout);
        peer.options.write_timeout = Some(opts.write_timeout);
        peer.options.idle_timeout = Some(opts.idle_timeout);
        if opts.http2 {
            // TLS: offer h2 then http/1.1 by ALPN; plaintext: h2c with prior knowledge
            let min = if opts.tls { 1 } else { 2 };
            peer.options.set_http_version(2, min);
            peer.options.max_h2_streams = 100;
        }
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        report_failure(ctx);
        // nothing reached the instance, so any method may go elsewhere
        let retry = ctx
            .route
            .as_ref()
            .is_some_and(|r| ctx.attempts <= r.retry.attempts);
        e.set_retry(retry);
        if !retry {
            ctx.refusal
                .get_or_insert(if matches!(e.etype(), ErrorType::ConnectTimedout) {
                    Refusal::UpstreamTimeout
                } else {
                    Refusal::UpstreamUnreachable
                });
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if ctx.refusal == Some(Refusal::BodyTooLarge) {
            e.set_retry(false);
            return e;
        }
        if std::mem::take(&mut ctx.status_retry) {
            // upstream_response_filter already decided this attempt is retried
            e.set_retry(true);
            return e;
        }
        if e.esource() == &pingora_core::ErrorSource::Upstream {
            report_failure(ctx);
        }
        let method_ok = ctx.route.as_ref().is_some_and(|r| {
            r.retry.allows(&session.req_header().method) && ctx.attempts <= r.retry.attempts
        });
        if !method_ok || session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        if matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        ) {
            ctx.refusal.get_or_insert(Refusal::UpstreamTimeout);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route.as_ref() else {
            return Ok(());
        };
        // `req` is a fresh copy of the client's request on every attempt: read ctx,
        // never consume it, or a retry goes out without what the first attempt had
        let out = &ctx.plugin_out;
        rewrite_path(
            ctx.upstream_path.as_deref(),
            req,
            out.strip_query_param.as_deref(),
        )?;
        apply_request_rules(route, req, out)?;
        forwarded_headers(session, req, ctx.trusted_peer)?;
        req.insert_header(X_REQUEST_ID.clone(), ctx.request_id.clone())?;
        sign_identity(route, req, out, &ctx.request_id)?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        if matches!(status, 502..=504) {
            report_failure(ctx);
        } else if let Some(g) = &ctx.inflight {
            g.instance().report_success();
        }
        let wants_retry = route.retry.on_status.contains(&status)
            && route.retry.allows(&session.req_header().method)
            && ctx.attempts <= route.retry.attempts
            && !session.as_ref().retry_buffer_truncated();
        if wants_retry {
            ctx.status_retry = true;
            let mut e =
                Error::explain(ErrorType::HTTPStatus(status), "retrying on upstream status");
            e.set_retry(true);
            return Err(e);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // `revoke: on_success` (a logout): revoked here before the answer leaves, so the
        // client's next request is refused; written to Redis for the other gateways
        if resp.status.is_success() {
            if let Some(revocation) = ctx.plugin_out.revoke_on_success.take() {
                revocation.apply().await;
            }
        }
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
        resp.insert_header(X_REQUEST_ID.clone(), ctx.request_id.clone())?;
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (status, refusal) = match (ctx.refusal, e.etype()) {
            (Some(r), ErrorType::HTTPStatus(code)) => (*code, r),
            (Some(Refusal::UpstreamTimeout), _) => (504, Refusal::UpstreamTimeout),
            (Some(r), _) => (502, r),
            (None, ErrorType::HTTPStatus(code)) => (*code, Refusal::UpstreamUnreachable),
            (None, _) => match e.esource() {
                pingora_core::ErrorSource::Downstream => (0, Refusal::Internal),
                pingora_core::ErrorSource::Upstream => (502, Refusal::UpstreamUnreachable),
                _ => (500, Refusal::Internal),
            },
        };
        if status != 0 && session.response_written().is_none() {
            // the connection is not reused after this answer: say so (`Connection: close`),
            // or a keep-alive client sends its next request into a closed socket
            session.as_mut().set_keepalive(None);
            let mut rejection = refusal.rejection(ctx);
            // the status Pingora's error carries (a timeout, a status to pass on) wins
            rejection.status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            respond_json(session, ctx, rejection).await;
        }
        ctx.local_status = Some(status);
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.local_status)
            .unwrap_or(0);
        let total = ctx.started.elapsed();
        let upstream = ctx.upstream_started.map(|s| s.elapsed());
        record(session, e, ctx, status, total, upstream);
        ctx.inflight = None;
    }
}

/// Passive health: count a failed attempt against the instance it went to.
fn report_failure(ctx: &RequestCtx) {
    let (Some(route), Some(g)) = (ctx.route.as_ref(), ctx.inflight.as_ref()) else {
        return;
    };
    let p = &route.service.spec.passive_health;
    if g.instance()
        .report_failure(p.consecutive_failures, p.ejection_time)
    {
        METRICS
            .ejections
            .with_label_values(&[&route.service.name])
            .inc();
        tracing::warn!(service = %route.service.name, instance = %g.instance().id, "instance ejected after consecutive failures");
    }
}

/// Answer a refusal found in `request_filter` (before any upstream work).
async fn answer(session: &mut Session, ctx: &mut RequestCtx, refusal: Refusal) {
    let rejection = refusal.rejection(ctx);
    respond_json(session, ctx, rejection).await;
}

fn refuse(ctx: &mut RequestCtx, refusal: Refusal, status: u16) -> Box<Error> {
    ctx.refusal = Some(refusal);
    Error::explain(ErrorType::HTTPStatus(status), refusal.code())
}

fn record(
    session: &Session,
    e: Option<&Error>,
    ctx: &RequestCtx,
    status: u16,
    total: Duration,
    upstream: Option<Duration>,
) {
    let route = ctx.route.as_deref();
    if let Some(r) = route {
        r.metrics.record(status, total, upstream);
    }
    if !ctx.config.access_log {
        return;
    }
    let req = session.req_header();
    let client = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let error = e.map(|e| e.to_string());
    observe::access_log(&observe::AccessRecord {
        method: req.method.as_str(),
        path: req.uri.path(),
        status,
        route: route.map_or("-", |r| &r.id),
        service: route.map_or("-", |r| &r.service.name),
        instance: ctx.inflight.as_ref().map_or("-", |g| &g.instance().id),
        latency: total,
        request_id: ctx.request_id.to_str().unwrap_or("-"),
        client: &client,
        subject: ctx.plugin_out.subject.as_deref(),
        error: error.as_deref(),
    });
}
