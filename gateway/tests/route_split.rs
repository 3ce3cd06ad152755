//! Weighted route targets through the real binary: a 90/10 split lands within its
//! binomial spread, sticky cookies and headers keep a client on one side, a reload
//! changing the weights takes effect, a retry stays within the chosen target, and
//! metrics and the admin view name the chosen service; a sticky identity header is
//! the verified one, not the client's copy.

use std::collections::HashMap;
use std::time::Duration;

use plugins::auth::mint::{mint_token, MintOptions};
use testkit::config::{
    identity_headers, jwt_auth, AuthConfig, GatewayConfigBuilder, IdentityConfig, RouteBuilder,
    ServiceBuilder, StickyConfig, TEST_SECRET,
};
use testkit::{free_port, tally, wait_until, Backend, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const RELOAD: Duration = Duration::from_secs(10);

/// Services `stable` (backend a) and `canary` (backend b), `/x` split between them.
fn config(a: &Backend, b: &Backend, split: RouteBuilder) -> GatewayConfigBuilder {
    GatewayConfigBuilder::new()
        .admin()
        .service("stable", ServiceBuilder::instances([a.addr()]))
        .service("canary", ServiceBuilder::instances([b.addr()]))
        .route(split.id("split").path("/x"))
}

/// Six binomial standard deviations around `n * p`: a correct split falls outside
/// with probability below 10^-8, a wrong one (e.g. 80/20 for 90/10) far outside.
fn binomial_bounds(n: usize, p: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - 6.0 * sd, mean + 6.0 * sd)
}

#[tokio::test]
async fn a_90_10_split_lands_within_its_binomial_spread() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let route = RouteBuilder::split(&[("stable", 90), ("canary", 10)]);
    let gw = GatewayProcess::start(BIN, &config(&a, &b, route).yaml());
    let n = 2000;
    let t = tally(&gw, "/x", n, |_, r| r).await;
    let canary = t.get("b").copied().unwrap_or(0);
    let (lo, hi) = binomial_bounds(n, 0.1); // 200 expected, [120, 280]
    assert!((lo..=hi).contains(&(canary as f64)), "{t:?}");
    assert_eq!(t.get("a").copied().unwrap_or(0) + canary, n);
    // the metrics name the chosen service, per target
    let counted = |service: &str| {
        gw.metric(
            "gateway_requests_total",
            &[("route", "split"), ("service", service), ("status", "2xx")],
        )
    };
    assert_eq!(counted("canary"), canary as f64);
    assert_eq!(counted("stable"), (n - canary) as f64);
    // the admin view shows the split
    let (status, body) = testkit::http_get(&gw.admin_addr(), "/config").unwrap();
    assert_eq!(status, 200);
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    let route = &view["routes"][0];
    assert_eq!(
        route["targets"][0],
        serde_json::json!({"service": "stable", "weight": 90})
    );
    assert_eq!(
        route["targets"][1],
        serde_json::json!({"service": "canary", "weight": 10})
    );
    assert!(route["service"].is_null(), "{route}");
}

#[tokio::test]
async fn sticky_values_stay_on_one_side_and_spread_over_both() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    for (sticky, decorate) in [
        (
            StickyConfig::Cookie("canary".into()),
            (|v: &str, r: reqwest::RequestBuilder| r.header("cookie", format!("x=1; canary={v}")))
                as fn(&str, reqwest::RequestBuilder) -> reqwest::RequestBuilder,
        ),
        (StickyConfig::Header("X-User-Id".into()), |v, r| {
            r.header("x-user-id", v)
        }),
    ] {
        let route = RouteBuilder::split(&[("stable", 50), ("canary", 50)]).sticky(sticky.clone());
        let gw = GatewayProcess::start(BIN, &config(&a, &b, route).yaml());
        let mut sides = HashMap::new();
        // 40 values at 50/50: all on one side has probability 2^-39
        for k in 0..40 {
            let value = format!("user-{k}");
            let t = tally(&gw, "/x", 10, |_, r| decorate(&value, r)).await;
            assert_eq!(t.len(), 1, "{sticky:?}: {value} went to both sides: {t:?}");
            let side = t.into_keys().next().unwrap_or_default();
            *sides.entry(side).or_insert(0) += 1;
        }
        assert_eq!(
            sides.len(),
            2,
            "{sticky:?}: every value on one side: {sides:?}"
        );
    }
}

#[tokio::test]
async fn a_reload_changing_the_weights_applies_to_new_requests() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let gw = GatewayProcess::start(
        BIN,
        &config(
            &a,
            &b,
            RouteBuilder::split(&[("stable", 99), ("canary", 1)]),
        )
        .yaml(),
    );
    let n = 400;
    let before = tally(&gw, "/x", n, |_, r| r).await;
    let (lo, _) = binomial_bounds(n, 0.99);
    assert!(
        before.get("a").copied().unwrap_or(0) as f64 >= lo,
        "{before:?}"
    );

    let reloaded = gw.metric("gateway_config_reloads_total", &[("result", "success")]);
    gw.rewrite_config(
        &config(
            &a,
            &b,
            RouteBuilder::split(&[("stable", 1), ("canary", 99)]),
        )
        .yaml(),
    );
    assert!(wait_until(RELOAD, || gw.metric(
        "gateway_config_reloads_total",
        &[("result", "success")]
    ) > reloaded));
    let after = tally(&gw, "/x", n, |_, r| r).await;
    assert!(
        after.get("b").copied().unwrap_or(0) as f64 >= lo,
        "{after:?}"
    );
}

/// The canary has a dead instance: a request that chose the canary and met it is
/// retried on the canary's other instance, never on the stable service.
#[tokio::test]
async fn a_retry_stays_within_the_chosen_target() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dead = format!("127.0.0.1:{}", free_port());
    let route = RouteBuilder::split(&[("stable", 50), ("canary", 50)])
        .sticky(StickyConfig::Header("X-User-Id".into()));
    let yaml = GatewayConfigBuilder::new()
        .admin()
        .service("stable", ServiceBuilder::instances([a.addr()]))
        .service("canary", ServiceBuilder::instances([dead, b.addr()]))
        .route(route.id("split").path("/x"))
        .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    // a user the hash puts on the canary (half of them are)
    let mut canary_user = None;
    for k in 0..64 {
        let user = format!("user-{k}");
        let t = tally(&gw, "/x", 1, |_, r| r.header("x-user-id", &user)).await;
        if t.contains_key("b") {
            canary_user = Some(user);
            break;
        }
    }
    let user = canary_user.expect("one of 64 users lands on the canary");
    let stable_before = a.requests();
    // round robin over [dead, b]: every other first attempt meets the dead instance
    let t = tally(&gw, "/x", 20, |_, r| r.header("x-user-id", &user)).await;
    assert_eq!(t.get("b"), Some(&20), "{t:?}");
    assert_eq!(
        a.requests(),
        stable_before,
        "a retry left the chosen target"
    );
    assert!(
        gw.metric("gateway_retries_total", &[("route", "split")]) >= 1.0,
        "the dead instance was never tried"
    );
}

/// A dev token for `sub`.
fn token(sub: &str) -> String {
    mint_token(&MintOptions {
        email: Some(format!("{sub}@example.com")),
        ..MintOptions::hs256(TEST_SECRET, sub)
    })
    .unwrap()
}

/// `sticky: {header: X-User-Id}` on a protected route reads the identity header the
/// gateway sets from the token: a client's spoofed copy (removed before routing)
/// moves no one.
#[tokio::test]
async fn a_sticky_identity_header_is_the_verified_one() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let route = RouteBuilder::split(&[("stable", 50), ("canary", 50)])
        .sticky(StickyConfig::Header("X-User-Id".into()))
        .protected();
    let yaml = config(&a, &b, route)
        .auth(AuthConfig {
            identity: IdentityConfig {
                headers: identity_headers(),
                ..IdentityConfig::default()
            },
            ..jwt_auth(TEST_SECRET)
        })
        .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    let mut sides = HashMap::new();
    // 24 users at 50/50: all on one side has probability 2^-23
    for k in 0..24 {
        let bearer = format!("Bearer {}", token(&format!("user-{k}")));
        let t = tally(&gw, "/x", 6, |n, r| {
            r.header("authorization", &bearer)
                .header("x-user-id", format!("spoofed-{n}"))
        })
        .await;
        assert_eq!(t.len(), 1, "user-{k} went to both sides: {t:?}");
        let side = t.into_keys().next().unwrap_or_default();
        *sides.entry(side).or_insert(0) += 1;
    }
    assert_eq!(sides.len(), 2, "every user on one side: {sides:?}");
}
