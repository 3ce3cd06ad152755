//! Logging stage (the last hook, once per request): the request's status and latency
//! in its route's metrics, the access-log line, and the in-flight gauge.

use std::time::Duration;

use pingora_core::Error;
use pingora_proxy::Session;

use super::RequestCtx;
use crate::observe::{self, METRICS};

/// Record the finished request: the status the client got (the service's, or the
/// gateway's own answer; 0 when none was written), in the route's metrics and, when
/// `server.log.access_log` is on, the access log.
pub(super) fn record(session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .or(ctx.local_status)
        .unwrap_or(0);
    let total = ctx.started.elapsed();
    let upstream: Option<Duration> = ctx.upstream_started.map(|s| s.elapsed());
    let route = ctx.route.as_deref();
    let target = route.map(|r| r.target(ctx.target));
    if let Some(t) = target {
        t.metrics.record(status, total, upstream);
    }
    if !ctx.config.access_log {
        return;
    }
    let req = session.req_header();
    let client = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let error = e.map(|e| e.to_string());
    let mut trace_buf = [0u8; 32];
    let trace_id = ctx
        .trace
        .as_ref()
        .map_or("-", |t| t.trace_id_hex(&mut trace_buf));
    observe::access_log(&observe::AccessRecord {
        method: req.method.as_str(),
        path: req.uri.path(),
        status,
        route: route.map_or("-", |r| &r.id),
        service: target.map_or("-", |t| &t.service.name),
        instance: ctx.inflight.as_ref().map_or("-", |g| &g.instance().id),
        latency: total,
        request_id: ctx.request_id.to_str().unwrap_or("-"),
        trace_id,
        client: &client,
        subject: ctx.plugin_out.subject.as_deref(),
        error: error.as_deref(),
    });
}

/// Counts a request in `gateway_requests_in_flight` for as long as its context lives.
pub(super) struct InFlight;

impl InFlight {
    pub(super) fn start() -> Self {
        METRICS.in_flight.inc();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
    }
}
