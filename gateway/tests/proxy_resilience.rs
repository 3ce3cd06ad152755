//! A service's circuit breaker and recovery through the real binary: the breaker
//! opens on failures (5xx, a closed port) and on slow calls, refuses without touching
//! the backends, half-opens and closes again; retries stop at an open breaker; a
//! passing health check ends a passive ejection; panic mode tries a service whose
//! instances are all out; an instance restarted under load takes traffic again at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::config::{
    ms, secs, CircuitBreakerConfig, Dur, GatewayConfigBuilder, HealthCheckConfig, RetryConfig,
    RouteBuilder, ServiceBuilder,
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

#[tokio::test]
async fn a_passing_health_check_ends_a_passive_ejection() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let gw = start(
        ServiceBuilder::instances([a.addr(), b.addr()])
            .passive_health(2, secs(60))
            .health_check(HealthCheckConfig {
                interval: ms(100),
                ..HealthCheckConfig::default()
            }),
        RouteBuilder::to("s").retries(0),
    );
    b.set_status(Some(503));
    let ejected = wait_until_async(T, || async {
        get(&gw).await;
        gw.metric("gateway_upstream_ejections_total", &[("service", "s")]) == 1.0
    })
    .await;
    assert!(ejected);
    // b answers again (and its /health always did): the next check ends the 60 s ejection
    b.set_status(None);
    b.reset_counts();
    let back = wait_until_async(Duration::from_secs(5), || async {
        get(&gw).await;
        b.requests() > 0
    })
    .await;
    assert!(back, "b sat out its ejection although its checks pass");
    assert!(gw.log().contains("passive ejection ended"));
}

#[tokio::test]
async fn panic_mode_tries_a_service_whose_instances_are_all_ejected() {
    let a = Backend::start("a");
    a.set_status(Some(503));
    let gw = start(
        ServiceBuilder::instances([a.addr()]).passive_health(1, secs(60)),
        RouteBuilder::to("s").retries(0),
    );
    assert_eq!(get(&gw).await.0, 503);
    assert_eq!(
        gw.metric("gateway_upstream_ejections_total", &[("service", "s")]),
        1.0
    );
    a.set_status(None);
    for _ in 0..3 {
        assert_eq!(get(&gw).await.0, 200, "tried although ejected");
    }
    assert_eq!(
        gw.metric("gateway_upstream_panic_total", &[("service", "s")]),
        3.0
    );
    let inst = &discovery(&gw)["services"]["s"]["instances"][0];
    assert_eq!(inst["ejected"], true, "{inst}");
}

/// The measured case: one instance, killed and restarted on its port while
/// requests keep coming. It takes traffic again as soon as it accepts connections
/// (panic mode, and the next passing check ends its ejection); the test prints how
/// long that took and only bounds it generously.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarted_under_load_is_routed_to_again_at_once() {
    let a = Backend::start("a");
    let port = a.port();
    let gw = start(
        ServiceBuilder::instances([a.addr()]).health_check(HealthCheckConfig {
            interval: ms(100),
            timeout: ms(500),
            unhealthy_threshold: 1,
            ..HealthCheckConfig::default()
        }),
        RouteBuilder::to("s").retries(0),
    );
    let log: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (log, stop, url) = (log.clone(), stop.clone(), gw.url("/x"));
        async move {
            let c = client();
            while !stop.load(Ordering::SeqCst) {
                let status = match c.get(&url).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                log.lock().unwrap().push((Instant::now(), status));
            }
        }
    });
    assert!(wait_until(T, || a.requests() >= 20));
    drop(a);
    let out = wait_until(T, || {
        gw.metric("gateway_upstream_ejections_total", &[("service", "s")]) >= 1.0
            && gw.metric("gateway_upstream_healthy", &[("service", "s")]) == 0.0
    });
    assert!(out, "the killed instance is ejected and unhealthy");
    let a = Backend::start_on("a", port);
    let back_at = Instant::now();
    let served = wait_until(T, || a.requests() >= 50);
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert!(served, "the restarted instance got no traffic");
    let log = log.lock().unwrap();
    let after: Vec<_> = log.iter().filter(|(t, _)| *t >= back_at).collect();
    let first_ok = after
        .iter()
        .find(|(_, s)| *s == 200)
        .map(|(t, _)| t.duration_since(back_at))
        .expect("a 200 after the restart");
    let last_error = after
        .iter()
        .filter(|(_, s)| *s != 200)
        .map(|(t, _)| t.duration_since(back_at))
        .max()
        .unwrap_or_default();
    let failed_during_outage = log.iter().filter(|(_, s)| *s != 200).count();
    println!(
        "restart under load: first 200 {first_ok:?} after the instance was back, last error {last_error:?} after, {failed_during_outage} failed requests in all"
    );
    assert!(
        first_ok < Duration::from_secs(3),
        "first 200 only {first_ok:?} after the instance was back"
    );
    assert!(
        last_error < Duration::from_secs(3),
        "errors until {last_error:?} after the instance was back"
    );
    assert!(
        gw.metric("gateway_upstream_panic_total", &[("service", "s")]) >= 1.0,
        "the outage was served in panic mode"
    );
}
