//! Eureka discovery against local HTTP servers answering the Eureka REST API
//! (`GET /eureka/apps/{APP}`, JSON as a Spring Cloud Netflix Eureka server
//! sends it): UP/DOWN/OUT_OF_SERVICE, metadata weights, the single-instance
//! object form, failover between servers, and the last set kept when all fail.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::config::{ms, EurekaDiscoveryConfig, GatewayConfigBuilder, ServiceBuilder};
use testkit::eureka::{application, instance, EurekaServer};
use testkit::{http_get, wait_until, Backend, GatewayProcess};

/// How long a log line may trail the state a test waited for (the log is written
/// beside a metric or a state change, not before it).
const LOG_WAIT: Duration = Duration::from_secs(5);

const T: Duration = Duration::from_secs(10);

fn gateway(servers: &[&EurekaServer]) -> GatewayProcess {
    let eureka = EurekaDiscoveryConfig {
        app: Some("member-service".into()),
        interval: ms(200),
        timeout: ms(500),
        ..EurekaDiscoveryConfig::new(servers.iter().map(|s| s.url()).collect())
    };
    let config = GatewayConfigBuilder::in_front_of("member", ServiceBuilder::eureka(eureka));
    GatewayProcess::start(env!("CARGO_BIN_EXE_gateway"), &config.yaml())
}

/// `[(id, weight)]` of the service's current instances, sorted.
fn instances(gw: &GatewayProcess) -> Vec<(String, u64)> {
    let (_, body) = http_get(&gw.admin_addr(), "/discovery").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut out: Vec<(String, u64)> = v["services"]["member"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn id(b: &Backend) -> String {
    format!("127.0.0.1:{}", b.port())
}

fn backend_name(gw: &GatewayProcess) -> Option<String> {
    let (status, body) = http_get(&gw.addr(), "/x").ok()?;
    (status == 200).then_some(())?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["backend"].as_str().map(str::to_string)
}

#[test]
fn only_up_instances_take_traffic_with_their_metadata_weights() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let eureka = EurekaServer::start();
    eureka.set(
        "MEMBER-SERVICE",
        application(
            "MEMBER-SERVICE",
            vec![
                instance("MEMBER-SERVICE", a.port(), "UP", Some("3")),
                instance("MEMBER-SERVICE", b.port(), "DOWN", None),
                instance("MEMBER-SERVICE", c.port(), "OUT_OF_SERVICE", None),
            ],
        ),
    );
    let gw = gateway(&[&eureka]);
    assert!(
        wait_until(T, || instances(&gw) == [(id(&a), 3)]),
        "{}",
        gw.log()
    );
    for _ in 0..10 {
        assert_eq!(backend_name(&gw).as_deref(), Some("a"));
    }

    // b comes UP: it takes traffic within a refresh
    eureka.set(
        "MEMBER-SERVICE",
        application(
            "MEMBER-SERVICE",
            vec![
                instance("MEMBER-SERVICE", a.port(), "UP", Some("3")),
                instance("MEMBER-SERVICE", b.port(), "UP", None),
                instance("MEMBER-SERVICE", c.port(), "OUT_OF_SERVICE", None),
            ],
        ),
    );
    let mut want = vec![(id(&a), 3), (id(&b), 1)];
    want.sort();
    assert!(wait_until(T, || instances(&gw) == want));
    assert!(wait_until(T, || backend_name(&gw).as_deref() == Some("b")));

    // one instance left: Eureka sends `instance` as an object, not a list
    eureka.set(
        "MEMBER-SERVICE",
        json!({"application": {"name": "MEMBER-SERVICE",
            "instance": instance("MEMBER-SERVICE", c.port(), "UP", Some("2"))}}),
    );
    assert!(wait_until(T, || instances(&gw) == [(id(&c), 2)]));
    assert_eq!(backend_name(&gw).as_deref(), Some("c"));
    let (_, body) = http_get(&gw.admin_addr(), "/discovery").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["services"]["member"]["discovery"]["source"], "eureka");
    assert_eq!(
        v["services"]["member"]["discovery"]["target"],
        "MEMBER-SERVICE"
    );
}

#[test]
fn fails_over_between_servers_and_keeps_the_last_set_when_all_fail() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let first = EurekaServer::start();
    let second = EurekaServer::start();
    let both = application(
        "MEMBER-SERVICE",
        vec![
            instance("MEMBER-SERVICE", a.port(), "UP", None),
            instance("MEMBER-SERVICE", b.port(), "UP", None),
        ],
    );
    first.set("MEMBER-SERVICE", both.clone());
    second.set(
        "MEMBER-SERVICE",
        application(
            "MEMBER-SERVICE",
            vec![instance("MEMBER-SERVICE", a.port(), "UP", None)],
        ),
    );
    let gw = gateway(&[&first, &second]);
    assert!(wait_until(T, || instances(&gw).len() == 2), "{}", gw.log());
    assert_eq!(second.hits(), 0, "the first server answers while it is up");

    // the first server goes away: the second one is asked
    drop(first);
    assert!(
        wait_until(T, || instances(&gw) == [(id(&a), 1)]),
        "{}",
        gw.log()
    );
    assert!(gw.wait_for_log("failed over", LOG_WAIT), "{}", gw.log());
    assert_eq!(
        gw.metric("gateway_discovery_errors_total", &[("service", "member")]),
        0.0,
        "a failover is not a failed refresh"
    );

    // every server is down: the last known set stays, the error is counted and shown
    drop(second);
    assert!(wait_until(T, || gw.metric(
        "gateway_discovery_errors_total",
        &[("service", "member"), ("source", "eureka")]
    ) >= 2.0));
    assert_eq!(instances(&gw), [(id(&a), 1)]);
    for _ in 0..5 {
        assert_eq!(backend_name(&gw).as_deref(), Some("a"));
    }
    let (_, body) = http_get(&gw.admin_addr(), "/discovery").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let status = &v["services"]["member"]["discovery"];
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("no server answered"),
        "{status}"
    );
    assert!(status["consecutive_errors"].as_u64().unwrap() >= 2);
    assert!(
        gw.metric(
            "gateway_discovery_last_refresh_timestamp_seconds",
            &[("service", "member")]
        ) > 1.0e9
    );
}

#[test]
fn an_unknown_app_is_an_empty_service() {
    let eureka = EurekaServer::start();
    let gw = gateway(&[&eureka]);
    let refreshed = || {
        let (_, body) = http_get(&gw.admin_addr(), "/discovery").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["services"]["member"]["discovery"]["last_success_unix_ms"].is_u64()
    };
    assert!(wait_until(T, refreshed), "{}", gw.log());
    assert!(eureka.hits() >= 1);
    let (status, body) = http_get(&gw.addr(), "/x").unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        gw.metric("gateway_discovery_errors_total", &[("service", "member")]),
        0.0
    );
}
