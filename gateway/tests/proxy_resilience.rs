//! A service's circuit breaker through the real binary: it opens on failures (5xx,
//! a closed port) and on slow calls, refuses without touching the backends,
//! half-opens and closes again or reopens on a failed probe; retries stop at an open
//! breaker; a reload keeps an unchanged breaker's state. (Recovery of instances:
//! proxy_recovery.rs.)

use std::time::Duration;

use testkit::config::{
    ms, secs, CircuitBreakerConfig, Dur, GatewayConfigBuilder, RetryConfig, RouteBuilder,
    ServiceBuilder,
};
use testkit::{client, free_port, wait_until, wait_until_async, Backend, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const T: Duration = Duration::from_secs(10);

fn start(service: ServiceBuilder, route: RouteBuilder) -> GatewayProcess {
    let yaml = GatewayConfigBuilder::new()
        .admin()
        .service("s", service)
        .route(route)
        .yaml();
    GatewayProcess::start(BIN, &yaml)
}

/// Opens when half of at least `minimum_calls` fail; two probes when half-open.
fn breaker(minimum_calls: u32, open_for: Dur) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_ratio: 0.5,
        minimum_calls,
        open_for,
        half_open_calls: 2,
        window: secs(30),
        ..CircuitBreakerConfig::default()
    }
}

/// Status, `error` code of a JSON error (empty otherwise) and `Retry-After`.
async fn get(gw: &GatewayProcess) -> (u16, String, Option<u64>) {
    let resp = client().get(gw.url("/x")).send().await.unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let code = body["error"].as_str().unwrap_or_default().to_string();
    (status, code, retry_after)
}

fn state(gw: &GatewayProcess) -> f64 {
    gw.metric("gateway_circuit_state", &[("service", "s")])
}

fn transitions(gw: &GatewayProcess, to: &str) -> f64 {
    gw.metric(
        "gateway_circuit_transitions_total",
        &[("service", "s"), ("to", to)],
    )
}

fn discovery(gw: &GatewayProcess) -> serde_json::Value {
    let (_, body) = testkit::http_get(&gw.admin_addr(), "/discovery").unwrap();
    serde_json::from_str(&body).unwrap()
}

/// While open: every answer is the gateway's 503 with a `Retry-After` of at most
/// `open_for`, and no request reaches `backend`.
async fn assert_open(gw: &GatewayProcess, backend: &Backend, open_for_secs: u64) {
    let before = backend.requests();
    for _ in 0..10 {
        let (status, code, retry_after) = get(gw).await;
        assert_eq!((status, code.as_str()), (503, "circuit_open"));
        let wait = retry_after.expect("Retry-After");
        assert!((1..=open_for_secs).contains(&wait), "Retry-After {wait}");
    }
    assert_eq!(backend.requests(), before, "an open breaker sent a request");
}

/// After `open_for` the first requests are the probes; both succeed -> closed.
async fn assert_recovers(gw: &GatewayProcess) {
    let back = wait_until_async(T, || async { get(gw).await.0 == 200 }).await;
    assert!(back, "a probe went through after open_for");
    assert_eq!(get(gw).await.0, 200, "the second probe");
    assert_eq!(state(gw), 0.0, "closed after every probe succeeded");
    assert_eq!(transitions(gw, "half_open"), 1.0);
    assert_eq!(transitions(gw, "closed"), 1.0);
    for _ in 0..5 {
        assert_eq!(get(gw).await.0, 200);
    }
}

#[tokio::test]
async fn failing_instances_open_the_breaker_then_it_half_opens_and_closes() {
    let a = Backend::start("a");
    a.set_status(Some(500));
    let gw = start(
        ServiceBuilder::instances([a.addr()]).circuit_breaker(breaker(4, secs(2))),
        RouteBuilder::to("s").retries(0),
    );
    assert_eq!(state(&gw), 0.0);
    for _ in 0..4 {
        assert_eq!(get(&gw).await.0, 500, "the instance's own answer");
    }
    assert_eq!(state(&gw), 1.0);
    assert_eq!(transitions(&gw, "open"), 1.0);
    let view = &discovery(&gw)["services"]["s"]["circuit_breaker"];
    assert_eq!(view["state"], "open", "{view}");
    assert_eq!(view["window_failures"], 4, "{view}");
    assert!(view["open_remaining_ms"].as_u64().unwrap() > 0, "{view}");
    assert_eq!(a.requests(), 4);
    assert_open(&gw, &a, 2).await;

    a.set_status(None);
    assert_recovers(&gw).await;
    assert_eq!(
        discovery(&gw)["services"]["s"]["circuit_breaker"]["state"],
        "closed"
    );
}

#[tokio::test]
async fn a_closed_port_opens_the_breaker_and_an_instance_there_closes_it() {
    let port = free_port();
    let gw = start(
        ServiceBuilder::instances([format!("127.0.0.1:{port}")])
            .circuit_breaker(breaker(4, secs(2))),
        RouteBuilder::to("s").retries(0),
    );
    for _ in 0..4 {
        let (status, code, _) = get(&gw).await;
        assert_eq!((status, code.as_str()), (502, "upstream_unreachable"));
    }
    assert_eq!(transitions(&gw, "open"), 1.0);
    // the instance is back at once, but the breaker holds it off for open_for
    let a = Backend::start_on("a", port);
    assert_open(&gw, &a, 2).await;
    assert_recovers(&gw).await;
}

#[tokio::test]
async fn a_failed_probe_opens_the_breaker_again() {
    let a = Backend::start("a");
    a.set_status(Some(503));
    let gw = start(
        ServiceBuilder::instances([a.addr()])
            .no_passive_health()
            .circuit_breaker(breaker(2, ms(500))),
        RouteBuilder::to("s").retries(0),
    );
    for _ in 0..2 {
        assert_eq!(get(&gw).await.0, 503);
    }
    assert_eq!(transitions(&gw, "open"), 1.0);
    // still failing: the probe fails and the breaker opens again
    let probed = wait_until_async(T, || async {
        get(&gw).await.1 != "circuit_open" && transitions(&gw, "open") == 2.0
    })
    .await;
    assert!(probed, "{}", gw.metrics());
    assert_eq!(transitions(&gw, "half_open"), 1.0);
    assert_eq!(state(&gw), 1.0);
}

#[tokio::test]
async fn slow_calls_open_the_breaker() {
    let a = Backend::start("a");
    a.set_delay(Duration::from_millis(300));
    let gw = start(
        ServiceBuilder::instances([a.addr()]).circuit_breaker(CircuitBreakerConfig {
            slow_call_ratio: 0.5,
            slow_call_duration: ms(100),
            ..breaker(3, secs(5))
        }),
        RouteBuilder::to("s").retries(0),
    );
    for _ in 0..3 {
        assert_eq!(get(&gw).await.0, 200, "slow, not failed");
    }
    assert_eq!(transitions(&gw, "open"), 1.0);
    assert_open(&gw, &a, 5).await;
}

#[tokio::test]
async fn timeouts_count_as_failures() {
    let a = Backend::start("a");
    a.set_delay(Duration::from_secs(2));
    let gw = start(
        ServiceBuilder::instances([a.addr()]).circuit_breaker(breaker(2, secs(5))),
        RouteBuilder::to("s").read_timeout(ms(200)).retries(0),
    );
    for _ in 0..2 {
        let (status, code, _) = get(&gw).await;
        assert_eq!((status, code.as_str()), (504, "upstream_timeout"));
    }
    assert_eq!(transitions(&gw, "open"), 1.0);
    assert_eq!(get(&gw).await.1, "circuit_open");
}

#[tokio::test]
async fn retries_do_not_go_into_an_open_breaker() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    a.set_status(Some(503));
    b.set_status(Some(503));
    let gw = start(
        ServiceBuilder::instances([a.addr(), b.addr()])
            .no_passive_health()
            .circuit_breaker(breaker(2, secs(30))),
        RouteBuilder::to("s").id("r").retry(RetryConfig {
            attempts: 4,
            on_status: vec![503],
            non_idempotent: false,
        }),
    );
    // attempt 1 fails, its retry fails and opens the breaker: no third attempt
    let (status, code, _) = get(&gw).await;
    assert_eq!((status, code.as_str()), (503, ""), "the instance's own 503");
    assert_eq!(
        a.requests() + b.requests(),
        2,
        "one retry, then the breaker"
    );
    assert_eq!(gw.metric("gateway_retries_total", &[("route", "r")]), 1.0);
    assert_eq!(transitions(&gw, "open"), 1.0);
    assert_eq!(get(&gw).await.1, "circuit_open");
    assert_eq!(a.requests() + b.requests(), 2);
}

/// Breaker state belongs to the service: a reload that keeps the service's spec
/// keeps its breaker open; one that changes the breaker starts a closed one.
#[tokio::test]
async fn a_reload_keeps_the_state_of_an_unchanged_breaker() {
    let a = Backend::start("a");
    a.set_status(Some(500));
    let config = |cb: CircuitBreakerConfig, extra_route: bool| {
        let mut c = GatewayConfigBuilder::new()
            .admin()
            .service(
                "s",
                ServiceBuilder::instances([a.addr()]).circuit_breaker(cb),
            )
            .route(RouteBuilder::to("s").retries(0));
        if extra_route {
            c = c.route(RouteBuilder::to("s").id("other").prefix("/other"));
        }
        c.yaml()
    };
    let gw = GatewayProcess::start(BIN, &config(breaker(2, secs(60)), false));
    let reloads = |n: usize| wait_until(T, || gw.log_count("config reloaded") == n);
    for _ in 0..2 {
        assert_eq!(get(&gw).await.0, 500);
    }
    assert_eq!(state(&gw), 1.0);

    gw.rewrite_config(&config(breaker(2, secs(60)), true));
    assert!(reloads(1), "{}", gw.log());
    assert_eq!(
        get(&gw).await.1,
        "circuit_open",
        "still open after the reload"
    );
    assert_eq!(state(&gw), 1.0);

    gw.rewrite_config(&config(breaker(3, secs(60)), true));
    assert!(reloads(2), "{}", gw.log());
    assert_eq!(state(&gw), 0.0, "a changed breaker starts closed");
    assert_eq!(get(&gw).await.0, 500);
    assert_eq!(transitions(&gw, "open"), 1.0);
}
