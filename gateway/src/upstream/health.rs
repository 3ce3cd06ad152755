//! Active health checks: one background task per service probes each instance
//! (HTTP GET with an expected status, or a TCP connect) and flips its verdict
//! after `healthy_threshold` / `unhealthy_threshold` consecutive results. A passing
//! check also ends a passive ejection at once: the instance answers again, so it
//! need not sit out the rest of its `ejection_time` (an instance restarted under load).
//!
//! The task holds only a `Weak` to its service: when a reload drops the service,
//! the checker ends on its next tick.

use std::sync::{Arc, Weak};
use std::time::Duration;

use pingora_core::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora_core::{Error, ErrorType};
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;

use super::policy::{ActiveHealth, Probe};
use super::{Instance, Service};
use crate::observe::METRICS;

/// Start the checker for `service` on `rt` unless one already runs for it.
pub fn ensure_checker(service: &Arc<Service>, rt: &tokio::runtime::Handle) {
    publish_health(service);
    let Some(cfg) = service.spec.health_check.clone() else {
        return;
    };
    if !service.claim_checker() {
        return;
    }
    let weak = Arc::downgrade(service);
    service.adopt(rt.spawn(run(weak, cfg)));
}

/// Export every instance's current verdict as `gateway_upstream_healthy`.
pub fn publish_health(service: &Service) {
    for inst in &service.instances().instances {
        set_gauge(&service.name, inst);
    }
}

fn set_gauge(service: &str, inst: &Instance) {
    METRICS
        .upstream_healthy
        .with_label_values(&[service, &inst.id])
        .set(i64::from(inst.is_healthy()));
}

enum Checker {
    Http(Box<HttpHealthCheck>),
    Tcp(Box<TcpHealthCheck>),
}

fn build_checker(cfg: &ActiveHealth, service: &Service) -> Checker {
    let timeout = cfg.timeout;
    let peer = &service.spec.peer;
    match &cfg.probe {
        Probe::Tcp => {
            let mut c = if peer.tls {
                TcpHealthCheck::new_tls(&peer.sni)
            } else {
                TcpHealthCheck::new()
            };
            c.peer_template.options.connection_timeout = Some(timeout);
            Checker::Tcp(c)
        }
        Probe::Http {
            path,
            host,
            expected_status,
        } => {
            let mut c = HttpHealthCheck::new(host, peer.tls);
            if peer.tls && !peer.sni.is_empty() {
                c.peer_template.sni = peer.sni.clone();
            }
            c.peer_template.options.connection_timeout = Some(timeout);
            c.peer_template.options.read_timeout = Some(timeout);
            c.peer_template.options.write_timeout = Some(timeout);
            c.req.set_uri(path.clone());
            let expected = *expected_status;
            c.validator = Some(Box::new(move |resp| {
                if resp.status.as_u16() == expected {
                    Ok(())
                } else {
                    Error::e_explain(
                        ErrorType::CustomCode("unexpected health status", resp.status.as_u16()),
                        "health check",
                    )
                }
            }));
            Checker::Http(Box::new(c))
        }
    }
}

async fn probe(checker: &Checker, inst: &Instance, timeout: Duration) -> bool {
    let backend = Backend {
        addr: PSocketAddr::Inet(inst.addr),
        weight: inst.weight as usize,
        ext: Default::default(),
    };
    let fut = async {
        match checker {
            Checker::Http(c) => c.check(&backend).await,
            Checker::Tcp(c) => c.check(&backend).await,
        }
    };
    matches!(tokio::time::timeout(timeout * 2, fut).await, Ok(Ok(())))
}

async fn run(service: Weak<Service>, cfg: ActiveHealth) {
    let checker = match service.upgrade() {
        Some(s) => build_checker(&cfg, &s),
        None => return,
    };
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(svc) = service.upgrade() else {
            return;
        };
        let set = svc.instances();
        let results = probe_all(&checker, &set.instances, cfg.timeout).await;
        let now = super::monotonic_ms();
        for (inst, ok) in set.instances.iter().zip(results) {
            if ok && inst.end_ejection(now) {
                tracing::info!(service = %svc.name, instance = %inst.id, "instance passed its health check; passive ejection ended");
            }
            if let Some(now_healthy) =
                inst.observe_check(ok, cfg.healthy_threshold, cfg.unhealthy_threshold)
            {
                if now_healthy {
                    tracing::info!(service = %svc.name, instance = %inst.id, "instance is healthy again");
                } else {
                    tracing::warn!(service = %svc.name, instance = %inst.id, "instance failed its health check; taken out");
                }
            }
            set_gauge(&svc.name, inst);
        }
    }
}

/// Probe all instances concurrently, so one dead instance does not delay the others.
async fn probe_all(checker: &Checker, instances: &[Arc<Instance>], timeout: Duration) -> Vec<bool> {
    futures::future::join_all(instances.iter().map(|i| probe(checker, i, timeout))).await
}
