//! Upstream stage: a service's instances (from discovery), the balancer that
//! picks one per attempt, the health state that keeps bad instances out, and the
//! service's circuit breaker.
//!
//! `upstream_peer` asks the breaker ([`Service::circuit_breaker`]) to admit the attempt,
//! then calls [`Service::pick`]; nothing here waits on I/O.

pub mod balancer;
pub mod circuit_breaker;
pub mod discovery;
mod hash;
pub mod health;
pub mod instance;
pub mod policy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub use balancer::{InstanceSet, PickInput};
pub use hash::hash_bytes;
pub use instance::{monotonic_ms, InflightGuard, Instance};
pub use policy::{
    ActiveHealth, Balance, CircuitBreakerSpec, DiscoverySpec, HashKey, PassiveHealth, PeerOptions,
    ServiceSpec,
};

/// A resolved endpoint as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
}

/// A service: its current instance set and how to choose among it.
pub struct Service {
    pub name: Arc<str>,
    /// How it is balanced, checked and reached; a reload with an equal spec keeps this `Arc`.
    pub spec: ServiceSpec,
    /// The circuit breaker (`spec.circuit_breaker`); kept with the service across reloads.
    pub circuit_breaker: Option<Arc<circuit_breaker::CircuitBreaker>>,
    /// `gateway_upstream_panic_total{service}`, resolved once.
    panics: prometheus::IntCounter,
    set: ArcSwap<InstanceSet>,
    cursor: AtomicUsize,
    checker_started: AtomicBool,
    /// Discovery loop bookkeeping (source, last refresh, errors).
    pub discovery: discovery::DiscoveryState,
    /// Background tasks working for this service (health checker, discovery loop).
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Build a service from its spec and initial endpoints, reusing instances of
    /// `previous` that are still present. Starts nothing: see [`crate::activate`].
    pub fn new(
        name: &str,
        spec: ServiceSpec,
        endpoints: &[Endpoint],
        previous: Option<&Service>,
    ) -> Self {
        let svc = Service {
            name: Arc::from(name),
            circuit_breaker: spec
                .circuit_breaker
                .map(|b| Arc::new(circuit_breaker::CircuitBreaker::new(name, b))),
            panics: crate::observe::METRICS
                .upstream_panics
                .with_label_values(&[name]),
            spec,
            set: ArcSwap::from_pointee(InstanceSet::default()),
            cursor: AtomicUsize::new(0),
            checker_started: AtomicBool::new(false),
            discovery: discovery::DiscoveryState::default(),
            tasks: Mutex::new(Vec::new()),
        };
        let old = previous.map(|p| p.instances());
        svc.set.store(Arc::new(merge(endpoints, old.as_deref())));
        svc
    }

    /// The current instance set (a cheap snapshot).
    pub fn instances(&self) -> Arc<InstanceSet> {
        self.set.load_full()
    }

    /// Swap in a new endpoint list from discovery. Instances that stay keep their
    /// state; removed ones finish the requests they hold. Returns true on change.
    pub fn update_endpoints(&self, endpoints: &[Endpoint]) -> bool {
        let current = self.set.load();
        let same = current.len() == endpoints.len()
            && current
                .instances
                .iter()
                .zip(endpoints)
                .all(|(i, e)| i.addr == e.addr && i.weight == e.weight.max(1));
        if same {
            return false;
        }
        let next = merge(endpoints, Some(&current));
        self.set.store(Arc::new(next));
        true
    }

    /// Choose an instance for one attempt of a request.
    pub fn pick(&self, input: &PickInput<'_>) -> Option<Arc<Instance>> {
        let set = self.set.load();
        balancer::pick(&self.spec.balance, &set, &self.cursor, input)
    }

    /// Count a pick in panic mode (no instance was available; one was tried anyway).
    pub fn count_panic(&self) {
        self.panics.inc();
    }

    /// Claim the right to start this service's health checker (once per `Service`).
    pub(crate) fn claim_checker(&self) -> bool {
        !self.checker_started.swap(true, Ordering::AcqRel)
    }

    /// Keep `task` as working for this service, so [`Service::stop`] ends it.
    pub(crate) fn adopt(&self, task: tokio::task::JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task.abort_handle());
    }

    /// End the service's background tasks (a reload dropped it). They would end by
    /// themselves once the last request holding the old config finishes; this is at once.
    pub fn stop(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// New instance set from endpoints, reusing `old` instances with the same address and weight.
fn merge(endpoints: &[Endpoint], old: Option<&InstanceSet>) -> InstanceSet {
    let mut by_addr: HashMap<SocketAddr, &Arc<Instance>> = HashMap::new();
    if let Some(old) = old {
        for i in &old.instances {
            by_addr.insert(i.addr, i);
        }
    }
    let mut seen = std::collections::HashSet::new();
    let instances = endpoints
        .iter()
        .filter(|e| seen.insert(e.addr))
        .map(|e| match by_addr.get(&e.addr) {
            Some(i) if i.weight == e.weight.max(1) => (*i).clone(),
            _ => Arc::new(Instance::new(e.addr, e.weight)),
        })
        .collect();
    InstanceSet::new(instances)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> ServiceSpec {
        ServiceSpec {
            balance: Balance::RoundRobin,
            health_check: None,
            passive_health: PassiveHealth {
                consecutive_failures: 5,
                ejection_time: Duration::from_secs(10),
                max_ejection_time: Duration::from_secs(300),
            },
            circuit_breaker: None,
            peer: PeerOptions {
                tls: false,
                http2: false,
                sni: String::new(),
                connect_timeout: Duration::from_secs(1),
                read_timeout: Duration::from_secs(1),
                write_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
            },
            discovery: DiscoverySpec::Static,
        }
    }

    fn ep(port: u16) -> Endpoint {
        Endpoint {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
        }
    }

    #[test]
    fn update_keeps_surviving_instances() {
        let s = Service::new("a", cfg(), &[ep(1), ep(2)], None);
        let before = s.instances();
        before.instances[0].report_failure(&super::instance::one_strike(60), monotonic_ms());
        assert!(s.update_endpoints(&[ep(1), ep(3)]));
        let after = s.instances();
        assert!(Arc::ptr_eq(&before.instances[0], &after.instances[0]));
        assert!(!after.instances[0].is_available(monotonic_ms()));
        assert_eq!(&*after.instances[1].id, "127.0.0.1:3");
        assert!(!s.update_endpoints(&[ep(1), ep(3)]));
    }

    #[test]
    fn rebuild_reuses_previous_state() {
        let a = Service::new("a", cfg(), &[ep(1)], None);
        let _g = a.instances().instances[0].begin();
        let b = Service::new("a", cfg(), &[ep(1), ep(2)], Some(&a));
        assert_eq!(b.instances().instances[0].inflight(), 1);
    }
}
