//! The shipped Grafana dashboard and Prometheus alert rules, proved against a real
//! Prometheus scraping the real gateway: the gateway runs with auth (JWT from a
//! secret and from a JWKS endpoint, revocation mirrored from a real `redis-server`),
//! health-checked services, a circuit breaker, retries, a rate limit and a capped
//! listener; the test drives traffic that makes every metric family move (successes,
//! 5xx, 401s, a revoked token, a dead service, refusals, a Redis outage), waits for
//! Prometheus to scrape it, then checks that
//! - every panel query of `deploy/grafana/gateway.json` parses and returns data,
//! - every alert expression of `deploy/prometheus/alerts.yml` parses, the rule groups
//!   load healthy, `promtool check rules` accepts the file, and the alerts for the
//!   staged failures go pending while the others stay quiet,
//! - every alert links a runbook section that exists in `docs/operations.md`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use plugins::auth::mint::{mint_token, public_jwk, MintKey, MintOptions};
use plugins::revocation::{RevocationKeys, RevocationWriter};
use serde_json::{json, Value};
use testkit::config::{
    hs256_issuer, ms, rate_limit, revocation, secs, AuthConfig, CircuitBreakerConfig,
    GatewayConfigBuilder, HealthCheckConfig, IssuerConfig, ListenerConfig, RateLimitConfig,
    RateLimitKey, RevocationConfig, RouteBuilder, ServiceBuilder, TEST_SECRET,
};
use testkit::{client, free_port, wait_until_async, Backend, GatewayProcess, PrometheusServer};

#[path = "observability/checks.rs"]
mod checks;

use checks::{api, check_alert_rules, check_dashboard, check_promtool, scrapes};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
/// The job name the test's Prometheus scrapes the gateway as.
const JOB: &str = "gateway";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn hs256_token(sub: &str) -> String {
    mint(
        MintKey::Secret(TEST_SECRET.into()),
        "HS256",
        "dev",
        None,
        sub,
    )
}

fn mint(key: MintKey, alg: &str, iss: &str, kid: Option<&str>, sub: &str) -> String {
    mint_token(&MintOptions {
        alg: alg.into(),
        key,
        iss: Some(iss.into()),
        kid: kid.map(str::to_string),
        ..MintOptions::hs256("", sub)
    })
    .expect("mint a test token")
}

fn es256_key() -> MintKey {
    let path = repo_file("gateway/tests/keys/es-a-private.pem");
    MintKey::PrivateKeyPem(std::fs::read(path).expect("read the ES256 test key"))
}

/// A JWKS endpoint publishing the public half of [`es256_key`] as `kid: key-a`.
async fn serve_jwks() -> String {
    let jwk = public_jwk(&es256_key(), "ES256", "key-a").expect("public JWK");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keys = json!({ "keys": [jwk] });
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let keys = keys.clone();
            async move { Json(keys) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwks.json")
}

/// Everything the dashboard shows, configured once.
fn config(
    backends: [&Backend; 3],
    dead: [u16; 2],
    capped_port: u16,
    redis_url: &str,
    jwks_url: String,
) -> String {
    let [a, b, c] = backends;
    let checked = HealthCheckConfig {
        interval: ms(200),
        healthy_threshold: 1,
        unhealthy_threshold: 1,
        ..HealthCheckConfig::default()
    };
    let breaker = CircuitBreakerConfig {
        minimum_calls: 4,
        failure_ratio: 0.5,
        open_for: secs(30),
        ..CircuitBreakerConfig::default()
    };
    let idp = IssuerConfig {
        issuer: Some("idp".into()),
        jwks_url: Some(jwks_url),
        ..IssuerConfig::new("idp", vec!["ES256".into()])
    };
    GatewayConfigBuilder::new()
        .admin()
        // a second listener that holds one connection: the next one is refused
        .listener(ListenerConfig {
            max_connections: 1,
            ..ListenerConfig::new(format!("127.0.0.1:{capped_port}"))
        })
        .server(|s| s.client_header_timeout = secs(1))
        .auth(AuthConfig {
            issuers: vec![hs256_issuer(TEST_SECRET), idp],
            revocation: Some(RevocationConfig {
                resync_interval: secs(1),
                ..revocation(redis_url)
            }),
            ..AuthConfig::default()
        })
        .service(
            "echo",
            ServiceBuilder::instances([a.addr(), b.addr()])
                .health_check(checked.clone())
                .circuit_breaker(CircuitBreakerConfig::default()),
        )
        // one live instance and one dead port: retries, then an ejection; 500s open the breaker
        .service(
            "flaky",
            ServiceBuilder::instances([c.addr(), format!("127.0.0.1:{}", dead[0])])
                .passive_health(1, secs(60))
                .circuit_breaker(breaker),
        )
        // nothing listens: no healthy instance, requests go to panic mode
        .service(
            "down",
            ServiceBuilder::instances([format!("127.0.0.1:{}", dead[1])]).health_check(checked),
        )
        .route(RouteBuilder::to("echo").id("public").prefix("/public/"))
        .route(
            RouteBuilder::to("echo")
                .id("api")
                .prefix("/api/")
                .protected(),
        )
        .route(
            RouteBuilder::to("echo")
                .id("limited")
                .prefix("/limited/")
                .rate_limit(RateLimitConfig {
                    burst: Some(1),
                    ..rate_limit(1, secs(60), RateLimitKey::Route)
                }),
        )
        .route(
            RouteBuilder::to("flaky")
                .id("flaky")
                .prefix("/flaky/")
                .retries(1),
        )
        .route(RouteBuilder::to("down").id("down").prefix("/down/"))
        .yaml()
}

async fn status(c: &reqwest::Client, url: &str, token: Option<&str>) -> u16 {
    let mut req = c.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Wait until the gateway's own `/metrics` shows `name{labels}` at `min` or more.
async fn wait_metric(gw: &GatewayProcess, name: &str, labels: &[(&str, &str)], min: f64) {
    let reached = wait_until_async(Duration::from_secs(10), || async {
        gw.metric(name, labels) >= min
    })
    .await;
    assert!(
        reached,
        "{name}{labels:?} never reached {min}:\n{}",
        gw.metrics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_work_against_a_real_prometheus() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("deploy/grafana/gateway.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let rules_path = repo_file("deploy/prometheus/alerts.yml");
    let rules: Value = serde_saphyr::from_str(&std::fs::read_to_string(&rules_path).unwrap())
        .expect("the alert rules are YAML");

    let mut redis = testkit::RedisServer::start();
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let capped_port = free_port();
    let yaml = config(
        [&a, &b, &c],
        [free_port(), free_port()],
        capped_port,
        &redis.url(),
        serve_jwks().await,
    );
    let gw = GatewayProcess::start(BIN, &yaml);
    let prom = PrometheusServer::start(
        JOB,
        &[gw.admin_addr()],
        "/metrics",
        std::slice::from_ref(&rules_path),
    );
    let http = client();
    // the target is up and scraped before the traffic, so every counter is seen
    // moving (a rate needs a sample from before the increase)
    let up = wait_until_async(Duration::from_secs(10), || async {
        let targets = api(&http, &prom, "/api/v1/targets").await;
        let up = targets["data"]["activeTargets"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["health"] == "up"));
        up && scrapes(&http, &prom).await >= 2.0
    })
    .await;
    assert!(up, "the gateway target is not up:\n{}", prom.log());

    // successes, on a public and a protected route, with both issuers
    let token = hs256_token("u1");
    for _ in 0..10 {
        assert_eq!(status(&http, &gw.url("/public/x"), None).await, 200);
        assert_eq!(
            status(&http, &gw.url("/api/x"), Some(token.as_str())).await,
            200
        );
    }
    let es256 = mint(es256_key(), "ES256", "idp", Some("key-a"), "u2");
    assert_eq!(
        status(&http, &gw.url("/api/x"), Some(es256.as_str())).await,
        200
    );
    // refusals: no token, a bad signature, a revoked token
    assert_eq!(status(&http, &gw.url("/api/x"), None).await, 401);
    let forged = format!("{token}x");
    assert_eq!(
        status(&http, &gw.url("/api/x"), Some(forged.as_str())).await,
        401
    );
    let revoked = hs256_token("u3");
    let writer = RevocationWriter::new(&redis.url(), RevocationKeys::default()).unwrap();
    writer.revoke_token(&revoked, Duration::ZERO).await.unwrap();
    let refused = wait_until_async(Duration::from_secs(10), || async {
        status(&http, &gw.url("/api/x"), Some(revoked.as_str())).await == 401
    })
    .await;
    assert!(refused, "the revoked token was never refused");
    // rate limit: one request a minute on the route
    for _ in 0..3 {
        status(&http, &gw.url("/limited/x"), None).await;
    }
    wait_metric(
        &gw,
        "gateway_rate_limited_total",
        &[("route", "limited")],
        1.0,
    )
    .await;
    // the flaky service: connect errors (retried, then ejected), then 500s until the breaker opens
    for _ in 0..4 {
        status(&http, &gw.url("/flaky/x"), None).await;
    }
    for _ in 0..10 {
        status(&http, &gw.url("/flaky/x?status=500"), None).await;
    }
    wait_metric(
        &gw,
        "gateway_circuit_transitions_total",
        &[("to", "open")],
        1.0,
    )
    .await;
    wait_metric(&gw, "gateway_upstream_ejections_total", &[], 1.0).await;
    // the dead service: no healthy instance, the request goes to panic mode
    wait_metric(&gw, "gateway_upstream_healthy", &[("service", "echo")], 2.0).await;
    let down = wait_until_async(Duration::from_secs(10), || async {
        gw.metric("gateway_upstream_healthy", &[("service", "down")]) == 0.0
    })
    .await;
    assert!(
        down,
        "the dead service still counts as healthy:\n{}",
        gw.metrics()
    );
    assert!(status(&http, &gw.url("/down/x"), None).await >= 500);
    wait_metric(
        &gw,
        "gateway_upstream_panic_total",
        &[("service", "down")],
        1.0,
    )
    .await;
    // the capped listener: two connections that never finish their header; one holds
    // the only slot (and times out after a second), the other is refused
    let partial = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", capped_port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        s
    };
    let held = [partial(), partial()];
    wait_metric(&gw, "gateway_connections_refused_total", &[], 1.0).await;
    wait_metric(&gw, "gateway_client_header_timeouts_total", &[], 1.0).await;
    drop(held);
    // a Redis outage: mirror errors, then protected requests decided by the deny policy
    redis.stop();
    wait_metric(&gw, "gateway_redis_errors_total", &[], 1.0).await;
    let decided = wait_until_async(Duration::from_secs(10), || async {
        status(&http, &gw.url("/api/x"), Some(token.as_str())).await == 503
    })
    .await;
    assert!(decided, "no 503 while Redis is down:\n{}", gw.metrics());
    wait_metric(
        &gw,
        "gateway_revocation_unavailable_total",
        &[("policy", "deny")],
        1.0,
    )
    .await;

    // a few scrapes of everything above
    let after_traffic = scrapes(&http, &prom).await;
    let scraped = wait_until_async(Duration::from_secs(10), || async {
        scrapes(&http, &prom).await >= after_traffic + 3.0
    })
    .await;
    assert!(scraped, "Prometheus stopped scraping:\n{}", prom.log());

    check_dashboard(&http, &prom, &dashboard).await;
    check_alert_rules(&http, &prom, &rules).await;
    check_promtool(&rules_path);
}
