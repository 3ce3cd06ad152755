//! Every upstream attempt carries the full signed identity, against the real binary:
//! retries after a retryable status, after a connect error, and after a reused pooled
//! connection turned out dead, to HTTP/1.1 and HTTP/2 (h2c) instances alike. Route
//! `request_headers` apply once per attempt; a POST that failed after it was sent is
//! sent again only where the route allows it. The recording upstream keeps what every
//! attempt received, so a test sees the first attempt and the retry side by side.

#[path = "retry_identity/upstream.rs"]
mod upstream;

use std::time::Duration;

use plugins::auth::identity::{verify_signature, ReceivedRequest};
use plugins::auth::mint::{mint_token, MintOptions};
use testkit::config::{
    identity_headers, jwt_auth, AuthConfig, GatewayConfigBuilder, IdentityConfig, RetryConfig,
    RouteBuilder, ServiceBuilder, SignatureConfig,
};
use testkit::{client, free_port, GatewayProcess};
use upstream::{Behaviour, Received, Upstream};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const SECRET: &str = "retry-test-secret-0123456789abcdef0123";
const SIG_SECRET: &str = "retry-signature-secret-0123456789";
const SERVICE: &str = "echo";

fn token(sub: &str) -> String {
    mint_token(&MintOptions {
        email: Some(format!("{sub}@example.com")),
        roles: vec!["USER".into(), "OPS".into()],
        ..MintOptions::hs256(SECRET, sub)
    })
    .unwrap()
}

/// One protected route (`/api/`, with header rules) to service `echo` on `instances`,
/// with `retries`; `http2` makes the hop to the instances h2c.
fn config(instances: &[String], http2: bool, retries: RetryConfig) -> String {
    let mut service = ServiceBuilder::instances(instances.iter().cloned())
        // every failure is retried here; ejection is another test's subject
        .no_passive_health();
    if http2 {
        service = service.http2();
    }
    let mut identity = identity_headers();
    identity.insert("X-User-Roles".into(), "{roles}".into());
    GatewayConfigBuilder::new()
        .admin()
        .service(SERVICE, service)
        .auth(AuthConfig {
            identity: IdentityConfig {
                headers: identity,
                signature: Some(SignatureConfig::with_secret(SIG_SECRET)),
                ..IdentityConfig::default()
            },
            ..jwt_auth(SECRET)
        })
        .route(
            RouteBuilder::to(SERVICE)
                .id("api")
                .prefix("/api/")
                .strip_prefix("/api")
                .protected()
                .retry(retries)
                .request_headers(|h| {
                    h.set.insert("X-Route-Set".into(), "set-once".into());
                    h.add.insert("X-Route-Add".into(), "added-once".into());
                    h.remove.push("X-Client-Noise".into());
                }),
        )
        .yaml()
}

/// `attempts` retries, also after these statuses.
fn retries(attempts: u32, on_status: &[u16]) -> RetryConfig {
    RetryConfig {
        attempts,
        on_status: on_status.to_vec(),
        non_idempotent: false,
    }
}

/// What every attempt for user `sub` must carry: the whole identity set, signed for
/// this very request (method, path as sent upstream, service, request id), and the
/// route's header rules applied exactly once.
fn assert_full_identity(r: &Received, sub: &str) {
    let what = format!("attempt {}#{} {}", r.conn, r.seq, r.path_and_query);
    assert_eq!(
        r.all("authenticated-user"),
        vec![format!("{sub}@example.com")],
        "{what}"
    );
    assert_eq!(r.all("x-user-id"), vec![sub], "{what}");
    assert_eq!(r.all("x-user-roles"), vec!["USER,OPS"], "{what}");
    assert_eq!(r.all("x-gateway-signature").len(), 1, "{what}");
    assert_eq!(r.all("x-request-id").len(), 1, "{what}");
    assert_eq!(r.all("x-route-set"), vec!["set-once"], "{what}");
    assert_eq!(r.all("x-route-add"), vec!["added-once"], "{what}");
    assert!(r.all("x-client-noise").is_empty(), "{what}");
    let req = ReceivedRequest {
        method: &r.method,
        path_and_query: &r.path_and_query,
        headers: &r.header_map,
    };
    let id = verify_signature(
        &req,
        SERVICE,
        SIG_SECRET.as_bytes(),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(id.covers(&["authenticated-user", "x-user-id", "x-user-roles"]));
    assert_eq!(id.get("x-user-id"), Some(sub));
}

/// Every attempt of one request carried the same identity and request id.
fn assert_same_identity(attempts: &[Received]) {
    let key = |r: &Received| {
        (
            r.all("authenticated-user").join("|"),
            r.all("x-user-id").join("|"),
            r.all("x-user-roles").join("|"),
            r.all("x-request-id").join("|"),
        )
    };
    let first = key(&attempts[0]);
    for a in attempts {
        assert_eq!(key(a), first, "attempt {}#{}", a.conn, a.seq);
    }
}

async fn get(c: &reqwest::Client, gw: &GatewayProcess, path: &str, sub: &str) -> u16 {
    let resp = c
        .get(gw.url(path))
        .bearer_auth(token(sub))
        .header("X-Client-Noise", "1")
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

async fn status_retry(http2: bool) {
    let bad = Upstream::start(Behaviour::Answer(503));
    let good = Upstream::start(Behaviour::Answer(200));
    let yaml = config(&[bad.addr(), good.addr()], http2, retries(1, &[503]));
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    for k in 0..6 {
        let sub = format!("u{k}");
        assert_eq!(get(&c, &gw, &format!("/api/items?k={k}"), &sub).await, 200);
        let pq = format!("/items?k={k}");
        let mut attempts = bad.received_for(&pq);
        attempts.extend(good.received_for(&pq));
        assert!(!attempts.is_empty());
        for a in &attempts {
            assert_eq!(a.version, if http2 { "HTTP/2.0" } else { "HTTP/1.1" });
            assert_full_identity(a, &sub);
        }
        assert_same_identity(&attempts);
    }
    // round robin over two instances: half the requests met the 503 first
    assert!(bad.received().len() >= 3, "{:?}", bad.received().len());
    assert!(gw.metric("gateway_retries_total", &[("route", "api")]) >= 3.0);
}

#[tokio::test]
async fn a_status_retry_carries_the_full_signed_identity_over_http1() {
    status_retry(false).await;
}

#[tokio::test]
async fn a_status_retry_carries_the_full_signed_identity_over_h2c() {
    status_retry(true).await;
}

/// A request that met a 503, then an instance refusing connections, then a good one:
/// the attempt after the connect error is as complete as the first.
async fn connect_error_retry(http2: bool) {
    let bad = Upstream::start(Behaviour::Answer(503));
    let good = Upstream::start(Behaviour::Answer(200));
    let dead = format!("127.0.0.1:{}", free_port());
    let yaml = config(&[bad.addr(), dead, good.addr()], http2, retries(2, &[503]));
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    for k in 0..9 {
        let sub = format!("c{k}");
        assert_eq!(get(&c, &gw, &format!("/api/c?k={k}"), &sub).await, 200);
        let pq = format!("/c?k={k}");
        let mut attempts = bad.received_for(&pq);
        attempts.extend(good.received_for(&pq));
        for a in &attempts {
            assert_full_identity(a, &sub);
        }
        assert_same_identity(&attempts);
    }
    // each instance came first for a third of the requests: connect errors and
    // status retries both happened
    assert!(bad.received().len() >= 3);
    assert!(gw.metric("gateway_retries_total", &[("route", "api")]) >= 6.0);
}

#[tokio::test]
async fn a_connect_error_retry_carries_the_full_signed_identity_over_http1() {
    connect_error_retry(false).await;
}

#[tokio::test]
async fn a_connect_error_retry_carries_the_full_signed_identity_over_h2c() {
    connect_error_retry(true).await;
}

/// The instance answers a connection's first request, then resets the connection when
/// the gateway reuses it from its pool; the gateway retries on a new connection.
async fn dead_pooled_connection_retry(http2: bool) {
    let flaky = Upstream::start(Behaviour::ResetReused);
    let yaml = config(&[flaky.addr()], http2, retries(1, &[]));
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    for k in 0..3 {
        let sub = format!("p{k}");
        assert_eq!(get(&c, &gw, &format!("/api/p?k={k}"), &sub).await, 200);
        let attempts = flaky.received_for(&format!("/p?k={k}"));
        for a in &attempts {
            assert_full_identity(a, &sub);
        }
        assert_same_identity(&attempts);
        if k > 0 {
            // sent on the pooled connection (reset), then on a new one
            assert_eq!(attempts.len(), 2, "{attempts:?}");
            assert!(attempts[0].seq > 1 && attempts[1].seq == 1, "{attempts:?}");
        }
    }
}

#[tokio::test]
async fn a_dead_pooled_connection_retry_carries_the_full_signed_identity_over_http1() {
    dead_pooled_connection_retry(false).await;
}

#[tokio::test]
async fn a_dead_pooled_connection_retry_carries_the_full_signed_identity_over_h2c() {
    dead_pooled_connection_retry(true).await;
}

/// A POST that failed after it went out (its pooled connection was reset) may have
/// reached the service, so it is not sent again unless the route says
/// `non_idempotent: true`; a GET in the same spot is retried (above).
#[tokio::test]
async fn a_post_that_failed_after_sending_is_retried_only_when_the_route_allows_it() {
    for non_idempotent in [false, true] {
        let flaky = Upstream::start(Behaviour::ResetReused);
        let policy = RetryConfig {
            non_idempotent,
            ..retries(1, &[])
        };
        let gw = GatewayProcess::start(BIN, &config(&[flaky.addr()], false, policy));
        let c = client();
        let post = |path: &'static str, sub: &'static str| {
            c.post(gw.url(path)).bearer_auth(token(sub)).send()
        };
        // the first request opens the connection the second one is sent on again
        assert_eq!(post("/api/p?k=0", "p0").await.unwrap().status(), 200);
        let resp = post("/api/p?k=1", "p1").await.unwrap();
        let status = resp.status().as_u16();
        let attempts = flaky.received_for("/p?k=1");
        assert!(
            attempts[0].seq > 1,
            "sent on the pooled connection: {attempts:?}"
        );
        for a in &attempts {
            assert_full_identity(a, "p1");
        }
        if non_idempotent {
            assert_eq!(status, 200, "{attempts:?}");
            assert_eq!(attempts.len(), 2, "{attempts:?}");
            assert_same_identity(&attempts);
        } else {
            assert_eq!(status, 502, "{attempts:?}");
            assert_eq!(attempts.len(), 1, "{attempts:?}");
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "upstream_unreachable");
        }
    }
}

/// The signature covers the path as the service receives it (after `strip_prefix`),
/// not as the client sent it, and is refused for any other method, path or service.
#[tokio::test]
async fn the_signature_binds_the_request_as_sent_upstream() {
    let up = Upstream::start(Behaviour::Answer(200));
    let yaml = config(&[up.addr()], false, retries(0, &[]));
    let gw = GatewayProcess::start(BIN, &yaml);
    assert_eq!(
        get(&client(), &gw, "/api/orders/7?expand=items", "42").await,
        200
    );
    let r = up.received_for("/orders/7?expand=items");
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_full_identity(r, "42");
    let check = |method: &str, pq: &str, service: &str| {
        let req = ReceivedRequest {
            method,
            path_and_query: pq,
            headers: &r.header_map,
        };
        verify_signature(
            &req,
            service,
            SIG_SECRET.as_bytes(),
            Duration::from_secs(60),
        )
    };
    assert!(check("GET", "/orders/7?expand=items", SERVICE).is_ok());
    for (method, pq, service) in [
        ("GET", "/api/orders/7?expand=items", SERVICE),
        ("DELETE", "/orders/7?expand=items", SERVICE),
        ("GET", "/orders/8?expand=items", SERVICE),
        ("GET", "/orders/7", SERVICE),
        ("GET", "/orders/7?expand=items", "member"),
    ] {
        assert!(
            check(method, pq, service).is_err(),
            "{method} {pq} for {service} verified"
        );
    }
}
