//! Upstream health through the real binary: active checks take an instance out
//! and bring it back, passive ejection after consecutive failures, retries that
//! land on another instance, and panic mode when no instance is healthy.

use std::time::Duration;

use testkit::config::{
    ms, secs, GatewayConfigBuilder, HealthCheckConfig, HealthCheckKind, RetryConfig, RouteBuilder,
    ServiceBuilder,
};
use testkit::{client, free_port, wait_until, wait_until_async, Backend, GatewayProcess};

/// How long a log line may trail the state a test waited for (the log is written
/// beside a metric or a state change, not before it).
const LOG_WAIT: Duration = Duration::from_secs(5);

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// Listener and admin, the service `name`, and `routes`.
fn config(name: &str, service: ServiceBuilder, routes: Vec<RouteBuilder>) -> String {
    routes
        .into_iter()
        .fold(
            GatewayConfigBuilder::new().admin().service(name, service),
            GatewayConfigBuilder::route,
        )
        .yaml()
}

fn healthy(gw: &GatewayProcess, b: &str) -> f64 {
    gw.metric(
        "gateway_upstream_healthy",
        &[("service", "s"), ("instance", b)],
    )
}

async fn backend_of(gw: &GatewayProcess, path: &str) -> (u16, String) {
    let resp = client().get(gw.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    let name = resp
        .headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, name)
}

#[tokio::test]
async fn active_check_takes_an_instance_out_and_brings_it_back() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let yaml = config(
        "s",
        ServiceBuilder::instances([a.addr(), b.addr()]).health_check(HealthCheckConfig {
            path: "/health".into(),
            interval: ms(100),
            timeout: ms(500),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            ..HealthCheckConfig::default()
        }),
        vec![RouteBuilder::to("s")],
    );
    let gw = GatewayProcess::start(BIN, &yaml);
    assert!(wait_until(Duration::from_secs(5), || b.health_checks() >= 2));
    assert_eq!(healthy(&gw, &b.addr()), 1.0);

    b.set_healthy(false);
    assert!(
        wait_until(Duration::from_secs(10), || healthy(&gw, &b.addr()) == 0.0),
        "b taken out"
    );
    assert!(
        gw.wait_for_log("failed its health check", LOG_WAIT),
        "{}",
        gw.log()
    );
    b.reset_counts();
    for _ in 0..20 {
        assert_eq!(backend_of(&gw, "/x").await, (200, "a".to_string()));
    }
    assert_eq!(b.requests(), 0);

    b.set_healthy(true);
    assert!(
        wait_until(Duration::from_secs(10), || healthy(&gw, &b.addr()) == 1.0),
        "b back"
    );
    for _ in 0..20 {
        backend_of(&gw, "/x").await;
    }
    assert_eq!(b.requests(), 10, "round robin again");
}

#[tokio::test]
async fn tcp_check_marks_a_closed_port_unhealthy() {
    let a = Backend::start("a");
    let dead = format!("127.0.0.1:{}", free_port());
    let yaml = config(
        "s",
        ServiceBuilder::instances([a.addr(), dead.clone()])
            .health_check(HealthCheckConfig {
                kind: HealthCheckKind::Tcp,
                interval: ms(100),
                timeout: ms(300),
                unhealthy_threshold: 1,
                ..HealthCheckConfig::default()
            })
            .no_passive_health(),
        vec![RouteBuilder::to("s").retries(0)],
    );
    let gw = GatewayProcess::start(BIN, &yaml);
    assert!(wait_until(Duration::from_secs(10), || healthy(&gw, &dead) == 0.0));
    assert_eq!(healthy(&gw, &a.addr()), 1.0);
    for _ in 0..10 {
        assert_eq!(backend_of(&gw, "/x").await, (200, "a".to_string()));
    }
}

#[tokio::test]
async fn passive_ejection_after_consecutive_failures_then_return() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let yaml = config(
        "s",
        ServiceBuilder::instances([a.addr(), b.addr()]).passive_health(2, secs(3)),
        vec![RouteBuilder::to("s")],
    );
    let gw = GatewayProcess::start(BIN, &yaml);
    b.set_status(Some(503));
    // round robin: b answers 503 twice, then is ejected
    let mut failures = 0;
    for _ in 0..4 {
        if backend_of(&gw, "/x").await.0 == 503 {
            failures += 1;
        }
    }
    assert_eq!(failures, 2);
    assert_eq!(
        gw.metric("gateway_upstream_ejections_total", &[("service", "s")]),
        1.0
    );
    b.set_status(None);
    b.reset_counts();
    for _ in 0..10 {
        assert_eq!(backend_of(&gw, "/x").await, (200, "a".to_string()));
    }
    assert_eq!(b.requests(), 0, "ejected instance gets no traffic");
    // after the ejection time it takes traffic again
    let back = wait_until_async(Duration::from_secs(10), || async {
        backend_of(&gw, "/x").await.1 == "b"
    })
    .await;
    assert!(back, "b returns after its ejection time");
}

#[tokio::test]
async fn connect_errors_are_retried_on_another_instance() {
    let a = Backend::start("a");
    let dead = format!("127.0.0.1:{}", free_port());
    let yaml = config(
        "s",
        ServiceBuilder::instances([dead.clone(), a.addr()]).no_passive_health(),
        vec![
            RouteBuilder::to("s").id("get").methods(&["GET"]).retries(1),
            RouteBuilder::to("s")
                .id("post")
                .methods(&["POST"])
                .retries(1),
        ],
    );
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    for _ in 0..10 {
        let resp = c.get(gw.url("/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-backend"], "a");
        // nothing reached the dead instance, so even a POST is safe to retry
        let resp = c.post(gw.url("/x")).body("payload").send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert!(gw.metric("gateway_retries_total", &[("route", "get")]) >= 5.0);
    assert!(gw.metric("gateway_retries_total", &[("route", "post")]) >= 5.0);
}

#[tokio::test]
async fn connect_error_without_retries_is_a_json_502() {
    let dead = format!("127.0.0.1:{}", free_port());
    let yaml = config(
        "s",
        ServiceBuilder::instances([dead.clone()]),
        vec![RouteBuilder::to("s").retries(0)],
    );
    let gw = GatewayProcess::start(BIN, &yaml);
    let resp = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unreachable");
}

#[tokio::test]
async fn retry_on_status_lands_on_another_instance() {
    let (bad, good) = (Backend::start("bad"), Backend::start("good"));
    bad.set_status(Some(503));
    let retry = |non_idempotent| RetryConfig {
        attempts: 2,
        on_status: vec![503],
        non_idempotent,
    };
    let yaml = config(
        "s",
        ServiceBuilder::instances([bad.addr(), good.addr()]).no_passive_health(),
        vec![
            RouteBuilder::to("s")
                .id("idem")
                .prefix("/idem")
                .retry(retry(false)),
            RouteBuilder::to("s")
                .id("any")
                .prefix("/any")
                .retry(retry(true)),
        ],
    );
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    for _ in 0..6 {
        let resp = c.get(gw.url("/idem")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-backend"], "good");
    }
    assert!(
        bad.requests() >= 3,
        "the bad instance was tried first half the time"
    );
    assert!(gw.metric("gateway_retries_total", &[("route", "idem")]) >= 3.0);

    // POST is not retried unless the route allows it
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let resp = c.post(gw.url("/idem")).body("x").send().await.unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        3,
        "{statuses:?}"
    );
    for _ in 0..6 {
        let resp = c.post(gw.url("/any")).body("x").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let e: testkit::Echo = resp.json().await.unwrap();
        assert_eq!(e.backend, "good");
        assert_eq!(e.body_bytes, 1, "the body is replayed on the retry");
    }
}

/// Panic mode: a service whose every instance fails its check is still tried
/// (refusing helps no one, and a check can be wrong), and the metric says so; `/ready`
/// still reports the service. (An empty service's JSON 503: discovery_registry.rs.)
#[tokio::test]
async fn a_service_with_no_healthy_instance_is_tried_anyway_in_panic_mode() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    a.set_healthy(false);
    b.set_healthy(false);
    let yaml = config(
        "orders",
        ServiceBuilder::instances([a.addr(), b.addr()]).health_check(HealthCheckConfig {
            interval: ms(100),
            unhealthy_threshold: 1,
            ..HealthCheckConfig::default()
        }),
        vec![RouteBuilder::to("orders")],
    );
    let gw = GatewayProcess::start(BIN, &yaml);
    let unhealthy = |i: &Backend| {
        gw.metric(
            "gateway_upstream_healthy",
            &[("service", "orders"), ("instance", &i.addr())],
        ) == 0.0
    };
    assert!(wait_until(Duration::from_secs(10), || unhealthy(&a) && unhealthy(&b)));
    a.reset_counts();
    b.reset_counts();
    for _ in 0..10 {
        assert_eq!(backend_of(&gw, "/x").await.0, 200);
    }
    assert_eq!(a.requests() + b.requests(), 10);
    assert_eq!(
        gw.metric("gateway_upstream_panic_total", &[("service", "orders")]),
        10.0
    );
    let ready = client().get(gw.admin_url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["services_without_instances"][0], "orders");
}

#[tokio::test]
async fn a_service_without_instances_is_a_json_503_naming_it() {
    let yaml = config(
        "orders",
        ServiceBuilder::registry(),
        vec![RouteBuilder::to("orders")],
    );
    let gw = GatewayProcess::start(BIN, &yaml);
    let resp = client()
        .get(gw.url("/x"))
        .header("x-request-id", "r-503")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["content-type"], "application/json");
    // the gateway closes this connection, and says so
    assert_eq!(resp.headers()["connection"], "close");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "no_healthy_instance");
    assert_eq!(body["request_id"], "r-503");
    assert!(
        body["message"].as_str().unwrap().contains("\"orders\""),
        "{body}"
    );
}

#[tokio::test]
async fn a_route_read_timeout_is_a_json_504() {
    let slow = Backend::start("slow");
    let yaml = config(
        "s",
        ServiceBuilder::instances([slow.addr()]).read_timeout(secs(30)),
        vec![
            RouteBuilder::to("s")
                .prefix("/quick")
                .read_timeout(ms(300))
                .retries(0),
            RouteBuilder::to("s"),
        ],
    );
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    let resp = c.get(gw.url("/quick?delay_ms=3000")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "upstream_timeout");
    // the other route keeps the service's timeout
    let resp = c.get(gw.url("/other?delay_ms=600")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// Background work follows the config that is serving: a reload that drops a
/// health-checked service stops its checker at once, even while a request still
/// holds the old config, and a config that fails to compile starts nothing.
// multi-threaded: the held request runs while this test blocks in `wait_until`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_stops_the_checkers_of_dropped_services_and_a_rejected_one_starts_none() {
    let (a, slow, d) = (
        Backend::start("a"),
        Backend::start("slow"),
        Backend::start("d"),
    );
    let checked = |b: &Backend| {
        ServiceBuilder::instances([b.addr()]).health_check(HealthCheckConfig {
            path: "/health".into(),
            interval: ms(100),
            timeout: ms(500),
            ..HealthCheckConfig::default()
        })
    };
    let slow_route = || RouteBuilder::to("t").prefix("/slow");
    let first = GatewayConfigBuilder::new()
        .admin()
        .service("s", checked(&a))
        .service("t", ServiceBuilder::instances([slow.addr()]))
        .route(slow_route())
        .route(RouteBuilder::to("s"))
        .yaml();
    let gw = GatewayProcess::start(BIN, &first);
    assert!(wait_until(Duration::from_secs(5), || a.health_checks() >= 2));

    // a request on the old config stays in flight across the reload
    let held = tokio::spawn({
        let url = gw.url("/slow/x?delay_ms=3000");
        async move { client().get(url).send().await.map(|r| r.status().as_u16()) }
    });
    assert!(wait_until(Duration::from_secs(5), || slow.in_flight() == 1));
    let without_s = GatewayConfigBuilder::new()
        .admin()
        .service("t", ServiceBuilder::instances([slow.addr()]))
        .route(slow_route())
        .yaml();
    gw.rewrite_config(&without_s);
    assert!(gw.wait_for_log("config reloaded", Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.reset_counts();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        a.health_checks(),
        0,
        "the dropped service is still checked while the old config is held"
    );
    assert_eq!(
        held.await.unwrap().unwrap(),
        200,
        "the held request finished"
    );

    // rejected: a checked service next to a route to an unknown service
    let broken = GatewayConfigBuilder::new()
        .admin()
        .service("t", ServiceBuilder::instances([slow.addr()]))
        .service("u", checked(&d))
        .route(slow_route())
        .route(RouteBuilder::to("nowhere"))
        .yaml();
    gw.rewrite_config(&broken);
    assert!(gw.wait_for_log("config reload rejected", Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(d.health_checks(), 0, "a rejected config started a checker");
}
