//! Upstream stage (upstream_peer and the hooks that see an attempt end): pick the
//! instance for an attempt where the retry policy says, describe it to the engine as
//! an `HttpPeer`, and feed passive health with how the attempt went.

use std::sync::Arc;

use pingora_core::upstreams::peer::HttpPeer;

use super::RequestCtx;
use crate::observe::METRICS;
use crate::routing::Route;
use crate::upstream::{monotonic_ms, Instance, PickInput, Service};

/// The instance for the next attempt: the chosen target service's balancer pick
/// (a retry stays within that service), leaving out what the route's retry policy
/// says (an instance this request already tried, if it can).
pub(super) fn pick(
    route: &Route,
    service: &Service,
    key: Option<u64>,
    tried: &[Arc<str>],
) -> Option<Arc<Instance>> {
    let now_ms = monotonic_ms();
    route
        .retry
        .exclusions(tried)
        .into_iter()
        .find_map(|exclude| {
            service.pick(&PickInput {
                key,
                exclude,
                now_ms,
            })
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

/// Passive health for an answered attempt: a 502-504 counts as a failure of the
/// instance, anything else as a success.
pub(super) fn report_status(ctx: &RequestCtx, status: u16) {
    if matches!(status, 502..=504) {
        report_failure(ctx);
    } else if let (Some(_), Some(g)) = (&ctx.route, &ctx.inflight) {
        g.instance().report_success();
    }
}

/// Passive health: count a failed attempt against the instance it went to; enough
/// in a row eject it for the service's `ejection_time`.
pub(super) fn report_failure(ctx: &RequestCtx) {
    let (Some(route), Some(g)) = (ctx.route.as_ref(), ctx.inflight.as_ref()) else {
        return;
    };
    let service = &route.target(ctx.target).service;
    let p = &service.spec.passive_health;
    if g.instance()
        .report_failure(p.consecutive_failures, p.ejection_time)
    {
        METRICS.ejections.with_label_values(&[&service.name]).inc();
        tracing::warn!(service = %service.name, instance = %g.instance().id, "instance ejected after consecutive failures");
    }
}
