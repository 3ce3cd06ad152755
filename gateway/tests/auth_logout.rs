//! Logout is read-your-writes: a route with `auth: {jwt: {revoke: on_success}}`
//! revokes the token it was called with when the service answers 2xx, here before
//! the answer leaves and in Redis for the other gateways. Real binary, real
//! `redis-server`, a testkit echo service standing in for the member service.

use std::time::Duration;

use plugins::auth::mint::{mint_token, MintOptions};
use serde_json::Value;
use testkit::config::{
    jwt_auth, revocation, secs, GatewayConfigBuilder, JwtRouteConfig, RevocationConfig,
    RevocationMode, RevokeWhen, RouteBuilder, ServiceBuilder,
};
use testkit::{check_config, client, wait_until_async, Backend, GatewayProcess, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const SECRET: &str = "logout-test-secret-0123456789abcdef01";

/// A fresh access token, as a login would hand out.
fn login(sub: &str) -> String {
    mint_token(&MintOptions::hs256(SECRET, sub)).unwrap()
}

fn jti(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["jti"].as_str().unwrap().to_string()
}

fn config(backend: &Backend, redis: Option<&RedisServer>, mode: RevocationMode) -> String {
    let mut auth = jwt_auth(SECRET);
    if let Some(r) = redis {
        // a long resync: only pub/sub (or the gateway's own write) can bring a revocation
        auth.revocation = Some(RevocationConfig {
            mode,
            resync_interval: secs(60),
            ..revocation(&r.url())
        });
    }
    let post = |id: &str, path: &str| {
        RouteBuilder::to("member")
            .id(id)
            .path(path)
            .methods(&["POST"])
    };
    GatewayConfigBuilder::new()
        .admin()
        .service("member", ServiceBuilder::instances([backend.addr()]))
        .auth(auth)
        .route(post("logout", "/member/logout").jwt(JwtRouteConfig {
            revoke: Some(RevokeWhen::OnSuccess),
            ..JwtRouteConfig::default()
        }))
        .route(post("logout-by-service-only", "/member/logout-plain").protected())
        .route(
            RouteBuilder::to("member")
                .id("member")
                .prefix("/member/")
                .protected(),
        )
        .yaml()
}

async fn get(c: &reqwest::Client, url: &str, token: &str) -> (u16, String) {
    let resp = c.get(url).bearer_auth(token).send().await.unwrap();
    let s = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (s, body["error"].as_str().unwrap_or("").to_string())
}

async fn post(c: &reqwest::Client, url: &str, token: &str) -> u16 {
    let resp = c.post(url).bearer_auth(token).send().await.unwrap();
    resp.status().as_u16()
}

async fn ready(c: &reqwest::Client, gw: &GatewayProcess) {
    let probe = login("probe");
    let ok = wait_until_async(Duration::from_secs(10), || async {
        get(c, &gw.url("/member/me"), &probe).await.0 == 200
    })
    .await;
    assert!(ok, "revocation mirror never synced\n{}", gw.log());
}

fn revoked() -> (u16, String) {
    (401, "token_revoked".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_refuses_the_same_token_on_the_very_next_request() {
    let redis = RedisServer::start();
    let member = Backend::start("member");
    let gw = GatewayProcess::start(BIN, &config(&member, Some(&redis), RevocationMode::Mirror));
    let c = client();
    ready(&c, &gw).await;
    let me = gw.url("/member/me");

    // Why the gateway must act itself: a service's write reaches the mirror only
    // through its PUBLISH. Written but not yet announced (the message still in
    // flight), the revocation is invisible here, and the next request passes.
    let t = login("control");
    assert_eq!(post(&c, &gw.url("/member/logout-plain"), &t).await, 200);
    redis.cmd(&["SET", &format!("blacklist:{}", jti(&t)), "1", "EX", "600"]);
    assert_eq!(
        get(&c, &me, &t).await.0,
        200,
        "the mirror alone is not enough"
    );

    // With `revoke: on_success`: login, use, logout, and the very next request is
    // refused, every time.
    let cycles = 200;
    let mut passed = 0;
    let mut last = String::new();
    for i in 0..cycles {
        let t = login(&format!("user-{i}"));
        assert_eq!(get(&c, &me, &t).await.0, 200);
        assert_eq!(post(&c, &gw.url("/member/logout"), &t).await, 200);
        if get(&c, &me, &t).await != revoked() {
            passed += 1;
        }
        last = t;
    }
    assert_eq!(
        passed, 0,
        "{passed} of {cycles} next requests passed after logout"
    );
    // written in Redis for the other gateways: the key of the service's own write
    // (idempotent with it), alive until the gateway refuses the token anyway
    let key = format!("blacklist:{}", jti(&last));
    let ttl: i64 = redis
        .cmd(&["TTL", &key])
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!((590..=630).contains(&ttl), "ttl {ttl} (exp + 30 s leeway)");
    assert_eq!(
        gw.metric("gateway_revocation_writes_total", &[("result", "ok")]),
        cycles as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_holds_here_while_redis_takes_no_writes_and_pubsub_is_paused() {
    let redis = RedisServer::start();
    let member = Backend::start("member");
    let gw = GatewayProcess::start(BIN, &config(&member, Some(&redis), RevocationMode::Mirror));
    let c = client();
    ready(&c, &gw).await;
    let me = gw.url("/member/me");
    // writes and PUBLISH wait (reads, SCAN and PING go on: the mirror stays synced)
    assert_eq!(redis.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]), "+OK");
    for i in 0..5 {
        let t = login(&format!("paused-{i}"));
        assert_eq!(get(&c, &me, &t).await.0, 200);
        assert_eq!(
            post(&c, &gw.url("/member/logout"), &t).await,
            200,
            "the client gets the service's answer, whatever Redis does"
        );
        assert_eq!(get(&c, &me, &t).await, revoked());
    }
    assert_eq!(redis.cmd(&["CLIENT", "UNPAUSE"]), "+OK");
    assert_eq!(
        gw.metric("gateway_revocation_writes_total", &[("result", "error")]),
        5.0
    );
    assert!(gw.metric("gateway_redis_errors_total", &[("op", "revoke")]) >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_failed_logout_revokes_nothing() {
    let redis = RedisServer::start();
    let member = Backend::start("member");
    let gw = GatewayProcess::start(BIN, &config(&member, Some(&redis), RevocationMode::Mirror));
    let c = client();
    ready(&c, &gw).await;
    let me = gw.url("/member/me");
    let t = login("u1");
    for status in [401, 403, 500] {
        member.set_status(Some(status));
        assert_eq!(post(&c, &gw.url("/member/logout"), &t).await, status);
    }
    member.set_status(None);
    assert_eq!(get(&c, &me, &t).await.0, 200);
    assert_eq!(
        redis.cmd(&["EXISTS", &format!("blacklist:{}", jti(&t))]),
        ":0"
    );
    // a GET on the logout path does not match the logout route: no revocation either
    assert_eq!(get(&c, &gw.url("/member/logout"), &t).await.0, 200);
    assert_eq!(get(&c, &me, &t).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_reaches_other_gateways_at_once_in_lookup_mode_and_soon_in_mirror_mode() {
    let redis = RedisServer::start();
    let member = Backend::start("member");
    let a = GatewayProcess::start(BIN, &config(&member, Some(&redis), RevocationMode::Mirror));
    let b_mirror =
        GatewayProcess::start(BIN, &config(&member, Some(&redis), RevocationMode::Mirror));
    let b_lookup =
        GatewayProcess::start(BIN, &config(&member, Some(&redis), RevocationMode::Lookup));
    let c = client();
    for gw in [&a, &b_mirror, &b_lookup] {
        ready(&c, gw).await;
    }
    for i in 0..20 {
        let t = login(&format!("replica-{i}"));
        assert_eq!(post(&c, &a.url("/member/logout"), &t).await, 200);
        // lookup mode asks Redis, which had the write before the logout answer left
        assert_eq!(get(&c, &b_lookup.url("/member/me"), &t).await, revoked());
        // mirror mode learns it through pub/sub (window measured in benches/)
        let seen = wait_until_async(Duration::from_secs(5), || async {
            get(&c, &b_mirror.url("/member/me"), &t).await == revoked()
        })
        .await;
        assert!(seen, "the other mirror never learnt the logout");
    }
}

#[test]
fn revoke_needs_revocation_configured() {
    let member = Backend::start("member");
    let out = check_config(BIN, &config(&member, None, RevocationMode::Mirror));
    assert!(!out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains("routes[0].auth.jwt.revoke"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("auth.revocation"), "{}", out.stderr);
}
