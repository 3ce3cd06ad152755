//! Route plugins against the real binary.
//! Rate limits: 429 with Retry-After and the JSON error past the budget, separate
//! budgets per key, and a reload that keeps an unchanged limit keeps its state.
//! CORS: preflights answered at the edge, headers on responses and on errors.

use std::time::Duration;

use testkit::config::{
    cors_for, rate_limit, secs, CorsConfig, GatewayConfigBuilder, ListenerConfig, RateLimitKey,
    RouteBuilder, ServiceBuilder,
};
use testkit::{client, wait_until_async, Backend, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

fn config(backend: &Backend, version: &str) -> String {
    GatewayConfigBuilder::new()
        .admin()
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .route(
            RouteBuilder::to("echo")
                .id("limited")
                .path("/limited/**")
                .rate_limit(rate_limit(
                    3,
                    secs(60),
                    RateLimitKey::Header("x-api-key".into()),
                )),
        )
        .route(
            RouteBuilder::to("echo")
                .id("open")
                .path("/open/**")
                .response_headers(|h| {
                    h.set.insert("x-version".into(), version.into());
                }),
        )
        .yaml()
}

async fn status(c: &reqwest::Client, url: &str, key: &str) -> reqwest::Response {
    c.get(url).header("x-api-key", key).send().await.unwrap()
}

#[tokio::test]
async fn budget_per_key_with_retry_after_and_state_kept_across_reload() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend, "v1"));
    let c = client();
    let url = gw.url("/limited/x");

    for _ in 0..3 {
        assert_eq!(status(&c, &url, "alice").await.status(), 200);
    }
    let refused = status(&c, &url, "alice").await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));

    // another key has its own budget; other routes are not limited
    assert_eq!(status(&c, &url, "bob").await.status(), 200);
    for _ in 0..10 {
        assert_eq!(status(&c, &gw.url("/open/x"), "alice").await.status(), 200);
    }
    assert_eq!(
        gw.metric("gateway_rate_limited_total", &[("route", "limited")]),
        1.0
    );

    // a reload that changes something else keeps the limiter and its state
    gw.rewrite_config(&config(&backend, "v2"));
    let reloaded = wait_until_async(Duration::from_secs(10), || async {
        let r = status(&c, &gw.url("/open/x"), "carol").await;
        r.headers().get("x-version").is_some_and(|v| v == "v2")
    })
    .await;
    assert!(reloaded, "the new config was not applied");
    // alice is still out of budget after the reload
    assert_eq!(status(&c, &url, "alice").await.status(), 429);
}

#[test]
fn invalid_limits_are_config_errors() {
    let yaml = GatewayConfigBuilder::new()
        .listeners(vec![ListenerConfig::new("127.0.0.1:1")])
        .service("echo", ServiceBuilder::instances(["127.0.0.1:2"]))
        .route(RouteBuilder::to("echo").rate_limit(rate_limit(0, secs(1), RateLimitKey::ClientIp)))
        .yaml();
    let out = testkit::check_config(BIN, &yaml);
    assert!(!out.success, "{out:?}");
    assert!(
        out.stderr
            .contains("routes[0].rate_limit.requests: must be at least 1"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn cors_preflight_and_response_headers() {
    let backend = Backend::start("echo");
    let yaml = GatewayConfigBuilder::new()
        .admin()
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .route(
            RouteBuilder::to("echo")
                .id("app")
                .path("/app/**")
                .cors(CorsConfig {
                    expose_headers: vec!["X-Request-Id".into()],
                    allow_credentials: true,
                    ..cors_for(&["https://app.example.com"])
                })
                .rate_limit(rate_limit(1, secs(60), RateLimitKey::Route)),
        )
        .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    let url = gw.url("/app/items");

    // preflight: answered by the gateway, never reaches the backend, not rate limited
    for _ in 0..3 {
        let r = c
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "PUT")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert!(h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PUT"));
    }
    assert_eq!(backend.requests(), 0, "a preflight reached the backend");

    // a denied origin's preflight
    let r = c
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // the real request carries the CORS headers...
    let r = c
        .get(&url)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(r.headers()["access-control-expose-headers"], "X-Request-Id");
    // ...and so does a refusal, so the browser can read it
    let r = c
        .get(&url)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
}
