//! Route rate limits against the real binary: 429 with Retry-After and the JSON
//! error past the budget, separate budgets per key, and a reload that keeps an
//! unchanged limit keeps its state (no fresh budget for everyone).

use std::time::Duration;

use testkit::{client, wait_until_async, Backend, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

fn config(backend: &Backend, version: &str) -> String {
    format!(
        "listeners: [{{address: \"127.0.0.1:$HTTP_PORT\"}}]\n\
         admin: {{address: \"127.0.0.1:$ADMIN_PORT\"}}\n\
         services:\n  echo: {{instances: [\"{}\"]}}\n\
         routes:\n\
         \x20 - id: limited\n\
         \x20   match: {{path: /limited/**}}\n\
         \x20   service: echo\n\
         \x20   rate_limit: {{requests: 3, per: 1m, key: {{header: x-api-key}}}}\n\
         \x20 - id: open\n\
         \x20   match: {{path: /open/**}}\n\
         \x20   service: echo\n\
         \x20   response_headers: {{set: {{x-version: \"{version}\"}}}}\n",
        backend.addr()
    )
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
    let out = testkit::check_config(
        BIN,
        "listeners: [{address: \"127.0.0.1:1\"}]\n\
         services: {echo: {instances: [\"127.0.0.1:2\"]}}\n\
         routes:\n  - {service: echo, rate_limit: {requests: 0}}\n",
    );
    assert!(!out.success, "{out:?}");
    assert!(
        out.stderr
            .contains("routes[0].rate_limit.requests: must be at least 1"),
        "{}",
        out.stderr
    );
}
