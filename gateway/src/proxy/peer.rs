//! Upstream stage (upstream_peer and the hooks that see an attempt end): admit the
//! attempt through the service's circuit breaker, pick the instance where the retry
//! policy says, describe it to the engine as an `HttpPeer`, and feed passive health
//! and the breaker with how the attempt went (once per attempt).

use std::sync::Arc;

use pingora_core::upstreams::peer::HttpPeer;

use super::refusal::Refusal;
use super::RequestCtx;
use crate::observe::METRICS;
use crate::routing::Route;
use crate::upstream::{monotonic_ms, Instance, PickInput, Service};

/// Let the attempt through the service's circuit breaker (if it has one), before any
/// instance is picked: an open breaker answers `circuit_open` without touching one.
pub(super) fn admit(service: &Service, ctx: &mut RequestCtx) -> Result<(), Refusal> {
    let Some(breaker) = &service.circuit_breaker else {
        return Ok(());
    };
    match breaker.admit(monotonic_ms()) {
        Ok(call) => {
            ctx.call = Some(call);
            Ok(())
        }
        Err(retry_after) => Err(Refusal::CircuitOpen {
            service: service.name.clone(),
            retry_after,
        }),
    }
}

/// The instance for the next attempt: the chosen target service's balancer pick (a
/// retry stays within that service), leaving out what the route's retry policy says
/// (an instance this request already tried, if it can). When no instance is
/// available (all ejected or failing their checks), panic mode: the same choice
/// among all of them, since refusing helps no one and one may be back.
pub(super) fn pick(
    route: &Route,
    service: &Service,
    key: Option<u64>,
    tried: &[Arc<str>],
) -> Option<Arc<Instance>> {
    let now_ms = monotonic_ms();
    let exclusions = route.retry.exclusions(tried);
    let choose = |panic| {
        exclusions.iter().find_map(|exclude| {
            service.pick(&PickInput {
                key,
                exclude,
                now_ms,
                panic,
            })
        })
    };
    choose(false).or_else(|| {
        let instance = choose(true)?;
        service.count_panic();
        Some(instance)
    })
}

/// The engine's view of `instance` of `service` for one attempt on `route`: address,
/// TLS, timeouts (the route's, else the service's), HTTP version.
pub(super) fn http_peer(route: &Route, service: &Service, instance: &Instance) -> HttpPeer {
    let opts = &service.spec.peer;
    let mut peer = HttpPeer::new(instance.addr, opts.tls, opts.sni.clone());
    peer.options.connection_timeout = Some(route.connect_timeout.unwrap_or(opts.connect_timeout));
    peer.options.read_timeout = Some(route.read_timeout.unwrap_or(opts.read_timeout));
    peer.options.write_timeout = Some(opts.write_timeout);
    peer.options.idle_timeout = Some(opts.idle_timeout);
    if opts.http2 {
        // TLS: offer h2 then http/1.1 by ALPN; plaintext: h2c with prior knowledge
        let min = if opts.tls { 1 } else { 2 };
        peer.options.set_http_version(2, min);
        peer.options.max_h2_streams = 100;
    }
    peer
}

/// An answered attempt. Passive health: a 502-504 counts as a failure of the
/// instance, anything else as a success. The breaker: any 5xx is a failure.
pub(super) fn report_status(ctx: &mut RequestCtx, status: u16) {
    if let Some(call) = ctx.call.take() {
        call.finish(status >= 500);
    }
    if matches!(status, 502..=504) {
        eject_on_failure(ctx);
    } else if let (Some(_), Some(g)) = (&ctx.route, &ctx.inflight) {
        g.instance().report_success();
    }
}

/// A failed attempt (connect error, reset, timeout): a failure for the breaker and
/// against the instance it went to.
pub(super) fn report_failure(ctx: &mut RequestCtx) {
    if let Some(call) = ctx.call.take() {
        call.finish(true);
    }
    eject_on_failure(ctx);
}

/// Passive health: count a failed attempt against its instance; enough in a row
/// eject it (for `ejection_time`, doubled for each repeat up to `max_ejection_time`).
fn eject_on_failure(ctx: &RequestCtx) {
    let (Some(route), Some(g)) = (ctx.route.as_ref(), ctx.inflight.as_ref()) else {
        return;
    };
    let service = &route.target(ctx.target).service;
    let p = &service.spec.passive_health;
    if let Some(time) = g.instance().report_failure(p, monotonic_ms()) {
        METRICS.ejections.with_label_values(&[&service.name]).inc();
        tracing::warn!(service = %service.name, instance = %g.instance().id, ejection_time = ?time, "instance ejected after consecutive failures");
    }
}
