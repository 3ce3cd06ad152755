//! Logging stage (the last hook, once per request): the request's status and latency
//! in its route's metrics, the gateway's span when the trace is sampled and spans are
//! exported, the access-log line, and the in-flight gauge.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use pingora_core::Error;
use pingora_proxy::Session;

use super::trace::TraceContext;
use super::RequestCtx;
use crate::observe::{self, METRICS};
use crate::otlp::SpanExport;

/// Record the finished request: the status the client got (the service's, or the
/// gateway's own answer; 0 when none was written), in the route's metrics and, when
/// `server.log.access_log` is on, the access log.
pub(super) fn record(session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .or(ctx.local_status)
        .unwrap_or(0);
    // one clock read for both spans
    let now = Instant::now();
    let total = now.saturating_duration_since(ctx.started);
    let upstream: Option<Duration> = ctx
        .upstream_started
        .map(|s| now.saturating_duration_since(s));
    let route = ctx.route.as_deref();
    let target = route.map(|r| r.target(ctx.target));
    if let Some(t) = target {
        t.metrics.record(status, total, upstream);
    }
    if let (Some(export), Some(trace)) = (&ctx.config.span_export, &ctx.trace) {
        if trace.sampled {
            export.record(span(
                session, e, ctx, trace, export, status, total, upstream,
            ));
        }
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
        subject: ctx.plugin_out.subject(),
        error: error.as_deref(),
    });
}

/// The gateway's span of a sampled request: a server span from the first byte to the
/// end, child of the client's span (when it sent one), attributes after the
/// OpenTelemetry HTTP conventions plus the gateway's own (`gateway.*`).
#[allow(clippy::too_many_arguments)]
fn span(
    session: &Session,
    e: Option<&Error>,
    ctx: &RequestCtx,
    trace: &TraceContext,
    export: &SpanExport,
    status: u16,
    total: Duration,
    upstream: Option<Duration>,
) -> SpanData {
    let end = SystemTime::now();
    let req = session.req_header();
    let method = req.method.as_str();
    let route = ctx.route.as_deref();
    let target = route.map(|r| r.target(ctx.target));
    let mut attributes = Vec::with_capacity(12);
    attributes.push(KeyValue::new("http.request.method", method.to_string()));
    attributes.push(KeyValue::new("url.path", req.uri.path().to_string()));
    if status != 0 {
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }
    if let Some(ip) = ctx.client_ip {
        attributes.push(KeyValue::new("client.address", ip.to_string()));
    }
    if let Some(r) = route {
        attributes.push(KeyValue::new("gateway.route", r.id.clone()));
    }
    if let Some(t) = target {
        attributes.push(KeyValue::new("gateway.service", t.service.name.clone()));
    }
    if let Some(g) = &ctx.inflight {
        attributes.push(KeyValue::new(
            "gateway.upstream.instance",
            g.instance().id.clone(),
        ));
    }
    if !ctx.tried.is_empty() {
        attributes.push(KeyValue::new("gateway.attempts", ctx.tried.len() as i64));
    }
    if let Some(u) = upstream {
        attributes.push(KeyValue::new(
            "gateway.upstream.duration_ms",
            u.as_secs_f64() * 1000.0,
        ));
    }
    if let Ok(id) = ctx.request_id.to_str() {
        attributes.push(KeyValue::new("gateway.request_id", id.to_string()));
    }
    // server spans: 5xx (or no answer) is an error, 4xx is the client's (semconv)
    let failed = status >= 500 || (status == 0 && e.is_some());
    if failed {
        let kind: Value = match e {
            Some(e) => e.etype().as_str().into(),
            None => status.to_string().into(),
        };
        attributes.push(KeyValue::new("error.type", kind));
    }
    let trace_state = trace
        .tracestate
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(trace.trace_id),
            SpanId::from_bytes(trace.span_id),
            TraceFlags::SAMPLED,
            false,
            trace_state,
        ),
        parent_span_id: trace.parent_id.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: trace.parent_id.is_some(),
        span_kind: SpanKind::Server,
        name: match route {
            Some(r) => Cow::Owned(format!("{method} {}", r.id)),
            None => Cow::Owned(method.to_string()),
        },
        start_time: end.checked_sub(total).unwrap_or(end),
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if failed {
            Status::error(match e {
                Some(e) => e.to_string(),
                None => format!("answered {status}"),
            })
        } else {
            Status::Unset
        },
        instrumentation_scope: export.scope().clone(),
    }
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
