//! The request pipeline: `impl ProxyHttp for Gateway`, one hook per stage, in the
//! order the engine calls them. Each hook is a few lines that call its stage in a
//! submodule; `RequestCtx` carries what one stage hands to the next.
//!
//! early_request_filter    -> request::sanitize (client header hygiene: crate::edge;
//!                            notes which headers later stages read, `ctx.sent`),
//!                            request::request_id, trace::TraceContext::start (W3C
//!                            Trace Context), request::select_route (path policy,
//!                            route on this request's config snapshot),
//!                            forward::shed_wire_form (the client's request as plain
//!                            values from here on, copied so for each attempt)
//! request_filter          -> request::admit (what was refused early, no route, a declared
//!                            body over the limit), request::run_plugins (the route's chain:
//!                            cors, rate limit, auth; built by
//!                            config::compile::route::plugin_chain), request::pick_target
//!                            (the route's target service: routing::split), request::hash_key,
//!                            retry buffering when the route's retry policy wants it
//! upstream_peer           -> a retry counted in the route's metrics, peer::admit (the
//!                            service's circuit breaker), peer::pick (the balancer, where
//!                            the retry policy says; panic mode), peer::http_peer
//! fail_to_connect         -> peer::report_failure (passive health, breaker), retry::ask; if final,
//!                            Refusal::connect_failed (upstream_unreachable or _timeout)
//! upstream_request_filter -> on the request as `http` parts (forward::as_parts):
//!                            forward::rewrite_path, forward::apply_request_rules (header
//!                            rules, then identity headers), forward::forwarded_headers,
//!                            X-Request-Id, traceparent, forward::sign_identity; once per attempt,
//!                            retries included
//! request_body_filter     -> body_limit (a streamed body is cut at the route's limit)
//! upstream_response_filter-> peer::report_status (passive health, breaker), retry::ask (a status
//!                            in the route's `retries.on_status`)
//! response_filter         -> response (revocation on success for a logout, header rules,
//!                            plugin headers, X-Request-Id)
//! error_while_proxy       -> retry::failure_of, peer::report_failure (passive health, breaker),
//!                            retry::ask; a read or write timeout is upstream_timeout
//! fail_to_proxy           -> Refusal::for_error, respond::respond (`Connection: close`)
//! logging                 -> finish::record (route metrics + access log)
//!
//! Whether and where a failed attempt is retried is decided in one place, the route's
//! `RetryPolicy` (`retry`). Every answer the gateway writes itself (a `refusal::Refusal`,
//! a plugin's rejection, a CORS preflight answer) is a `respond::LocalResponse` written
//! by the one responder, `respond::respond`.

mod body_limit;
mod finish;
mod forward;
mod ids;
mod peer;
mod refusal;
mod request;
mod respond;
mod response;
mod retry;
mod trace;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use smallvec::SmallVec;

use crate::edge::Seen;
use crate::routing::Route;
use crate::runtime::{RuntimeConfig, Shared};
use crate::upstream::circuit_breaker::Call;
use crate::upstream::InflightGuard;
use finish::InFlight;
use forward::{
    apply_request_rules, as_parts, forwarded_headers, insert, rewrite_path, sign_identity,
};
use refusal::{fail, Refusal};
use request::{hash_key, run_plugins};
use respond::{respond, LocalResponse};
use retry::Failure;

/// The request id header: taken from the client when well-formed, else generated;
/// sent to the service and echoed in every answer.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The gateway's proxy logic; all state is behind [`Shared`].
pub struct Gateway {
    pub shared: Arc<Shared>,
}

/// Per-request state: typed and small.
pub struct RequestCtx {
    config: Arc<RuntimeConfig>,
    route: Option<Arc<Route>>,
    request_id: HeaderValue,
    /// The request's place in its trace (`server.tracing.propagate`; None when off).
    trace: Option<trace::TraceContext>,
    /// The client: the peer, or from a trusted proxy the first untrusted forwarded hop.
    client_ip: Option<IpAddr>,
    /// Whether the peer is one of `server.trusted_proxies`.
    trusted_peer: bool,
    /// Which of the client headers later stages read the client sent, as the header
    /// hygiene pass noted them (`edge::Seen`).
    sent: Seen,
    /// Refused by the header or path policy before routing (answered in request_filter).
    refused: Option<Refusal>,
    /// The path to forward when the route rewrites it (checked by the path policy).
    upstream_path: Option<String>,
    plugin_out: plugins::PluginOutput,
    /// The instance of each attempt so far, in order (its length is the attempt count);
    /// the first two held inline, so a request that is not retried allocates nothing here.
    tried: SmallVec<[Arc<str>; 2]>,
    inflight: Option<InflightGuard>,
    /// The current attempt as the service's circuit breaker admitted it, until its
    /// outcome is reported (once per attempt).
    call: Option<Call>,
    hash_key: Option<u64>,
    /// The route's target service this request goes to (`Route::target`), chosen
    /// once after the plugins ran and kept for every attempt.
    target: usize,
    /// The route's request body limit in bytes (0: none) and the bytes seen so far.
    body_limit: u64,
    body_seen: u64,
    /// Why proxying failed, when the gateway knows better than the engine's error
    /// (answered in fail_to_proxy).
    failure: Option<Refusal>,
    /// Status the gateway answered itself.
    local_status: Option<u16>,
    started: Instant,
    upstream_started: Option<Instant>,
    _in_flight: InFlight,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// No engine modules. Pingora's default adds its response compression module,
    /// disabled (level 0), which every request still builds (a boxed context in a
    /// fresh list) and calls through on its headers and each body chunk. The gateway
    /// does not compress: the services' encodings pass through untouched.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            config: self.shared.current(),
            route: None,
            request_id: HeaderValue::from_static(""),
            trace: None,
            client_ip: None,
            trusted_peer: false,
            sent: Seen::ANY,
            refused: None,
            upstream_path: None,
            plugin_out: plugins::PluginOutput::default(),
            tried: SmallVec::new(),
            inflight: None,
            call: None,
            hash_key: None,
            target: 0,
            body_limit: 0,
            body_seen: 0,
            failure: None,
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
        // what the client may not tell a service goes before anything reads the headers
        request::sanitize(session, ctx);
        ctx.request_id = request::request_id(session.req_header(), ctx.sent);
        if ctx.config.trace_propagation {
            ctx.trace = Some(trace::TraceContext::start(
                session.req_header(),
                ctx.sent,
                ctx.config.span_export.as_deref(),
            ));
        }
        request::select_route(session, ctx);
        forward::shed_wire_form(session.req_header_mut());
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let route = match request::admit(session, ctx) {
            Ok(route) => route,
            Err(refusal) => {
                respond(session, ctx, refusal.into()).await;
                return Ok(true);
            }
        };
        if let Err(answer) = run_plugins(&route, session, ctx.client_ip, &mut ctx.plugin_out).await
        {
            respond(session, ctx, answer).await;
            return Ok(true);
        }
        ctx.target = request::pick_target(&route, session, &ctx.plugin_out);
        ctx.hash_key = hash_key(
            &route.target(ctx.target).service,
            session,
            ctx.client_ip,
            &ctx.plugin_out,
        );
        if route.retry.buffers_body(&session.req_header().method) {
            session.as_mut().enable_retry_buffering();
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Err(fail(ctx, Refusal::Internal));
        };
        let target = route.target(ctx.target);
        if !ctx.tried.is_empty() {
            target.metrics.retried();
        }
        if let Err(refusal) = peer::admit(&target.service, ctx) {
            return Err(fail(ctx, refusal));
        }
        let Some(instance) = peer::pick(&route, &target.service, ctx.hash_key, &ctx.tried) else {
            let service = target.service.name.clone();
            return Err(fail(ctx, Refusal::NoInstance { service }));
        };
        ctx.tried.push(instance.id.clone());
        ctx.inflight = Some(instance.begin());
        ctx.upstream_started.get_or_insert_with(Instant::now);
        Ok(Box::new(peer::http_peer(
            &route,
            &target.service,
            &instance,
        )))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        peer::report_failure(ctx);
        let retry = retry::ask(ctx, session, Failure::Connect).retries();
        e.set_retry(retry);
        if !retry {
            ctx.failure.get_or_insert(Refusal::connect_failed(&e));
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
        as_parts(req, route, out, |req| {
            rewrite_path(
                ctx.upstream_path.as_deref(),
                req,
                out.strip_query_param.as_deref(),
            )?;
            apply_request_rules(route, &mut req.headers, out)?;
            forwarded_headers(session, req, ctx.trusted_peer)?;
            insert(
                &mut req.headers,
                X_REQUEST_ID.clone(),
                ctx.request_id.clone(),
            )?;
            if let Some(trace) = &ctx.trace {
                trace.write(&mut req.headers)?;
            }
            let service = &route.target(ctx.target).service.name;
            sign_identity(service, req, out, &ctx.request_id)
        })
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
            let limit = ctx.body_limit;
            return Err(fail(ctx, Refusal::BodyTooLarge { limit }));
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        peer::report_status(ctx, status);
        if retry::ask(ctx, session, Failure::Status(status)).retries() {
            return Err(retry::status_error(status));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response::revoke_on_success(resp, ctx).await;
        response::set_headers(resp, ctx)
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
        let failure = retry::failure_of(&e, client_reused);
        // counts against the instance (a status was counted in upstream_response_filter)
        if matches!(failure, Failure::Exchange { .. }) && e.esource() == &ErrorSource::Upstream {
            peer::report_failure(ctx);
        }
        e.set_retry(retry::ask(ctx, session, failure).retries());
        if matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        ) {
            ctx.failure.get_or_insert(Refusal::UpstreamTimeout);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (status, refusal) = Refusal::for_error(ctx.failure.take(), e);
        if status != 0 && session.response_written().is_none() {
            // the connection is not reused after this answer: say so (`Connection: close`),
            // or a keep-alive client sends its next request into a closed socket
            session.as_mut().set_keepalive(None);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            respond(
                session,
                ctx,
                LocalResponse::from(refusal).with_status(status),
            )
            .await;
        }
        ctx.local_status = Some(status);
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        finish::record(session, e, ctx);
        ctx.inflight = None;
    }
}
