//! JWKS key source end to end: a local JWKS server (axum) rotates its keys; the
//! gateway picks up a new `kid` at once, refuses a retired one, keeps the last
//! good key set when the JWKS endpoint fails, and rate-limits refetches.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use plugins::auth::mint::{mint_token, public_jwk, MintKey, MintOptions};
use serde_json::{json, Value};
use testkit::config::{
    ms, secs, AuthConfig, GatewayConfigBuilder, IssuerConfig, RouteBuilder, ServiceBuilder,
};
use testkit::{client, wait_until_async, Backend, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

#[derive(Default)]
struct Jwks {
    keys: Mutex<Vec<Value>>,
    failing: AtomicBool,
    fetches: AtomicU64,
}

async fn serve(State(s): State<Arc<Jwks>>) -> Response {
    s.fetches.fetch_add(1, Ordering::SeqCst);
    if s.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let keys = s.keys.lock().unwrap().clone();
    Json(json!({ "keys": keys })).into_response()
}

fn pem(name: &str) -> MintKey {
    let path = format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    MintKey::PrivateKeyPem(std::fs::read(path).unwrap())
}

fn token(key: &str, kid: &str) -> String {
    mint_token(&MintOptions {
        alg: "ES256".into(),
        key: pem(key),
        sub: "42".into(),
        email: Some("ada@example.com".into()),
        roles: vec![],
        ttl: Duration::from_secs(600),
        iss: Some("idp".into()),
        aud: None,
        kid: Some(kid.into()),
        jti: true,
        extra: Default::default(),
    })
    .unwrap()
}

async fn status(c: &reqwest::Client, url: &str, t: &str) -> (u16, String) {
    let r = c.get(url).bearer_auth(t).send().await.unwrap();
    let s = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (s, body["error"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_rotation_unknown_kid_refetch_and_last_good_set() {
    let state = Arc::new(Jwks::default());
    let jwk_a = public_jwk(&pem("es-a-private.pem"), "ES256", "key-a").unwrap();
    let jwk_b = public_jwk(&pem("es-b-private.pem"), "ES256", "key-b").unwrap();
    *state.keys.lock().unwrap() = vec![jwk_a];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/.well-known/jwks.json", get(serve))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let backend = Backend::start("echo");
    let idp = IssuerConfig {
        issuer: Some("idp".into()),
        jwks_url: Some(format!("http://{jwks_addr}/.well-known/jwks.json")),
        jwks_refresh: secs(3600),
        jwks_min_refetch: ms(500),
        ..IssuerConfig::new("idp", vec!["ES256".into()])
    };
    let yaml = GatewayConfigBuilder::new()
        .admin()
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .auth(AuthConfig {
            issuers: vec![idp],
            ..AuthConfig::default()
        })
        .route(RouteBuilder::to("echo").prefix("/").protected())
        .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    let url = gw.url("/x");
    let (a, b) = (
        token("es-a-private.pem", "key-a"),
        token("es-b-private.pem", "key-b"),
    );

    let loaded = wait_until_async(Duration::from_secs(10), || async {
        status(&c, &url, &a).await.0 == 200
    })
    .await;
    assert!(loaded, "key A never accepted");

    // rotation: the IdP now publishes B only; a token with kid B triggers a refetch
    *state.keys.lock().unwrap() = vec![jwk_b];
    let rotated = wait_until_async(Duration::from_secs(10), || async {
        status(&c, &url, &b).await.0 == 200
    })
    .await;
    assert!(rotated, "new kid never accepted");
    // the retired key is gone from the set
    let retired = wait_until_async(Duration::from_secs(10), || async {
        status(&c, &url, &a).await == (401, "key_unknown".to_string())
    })
    .await;
    assert!(retired, "retired kid still accepted");

    // the JWKS endpoint fails: the last good set keeps serving
    state.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        status(&c, &url, &token("es-a-private.pem", "unknown"))
            .await
            .0,
        401
    );
    assert_eq!(
        status(&c, &url, &b).await.0,
        200,
        "last good key set dropped"
    );

    // a burst of unknown kids does not turn into a burst of fetches
    let unknown: Vec<String> = (0..30)
        .map(|i| token("es-a-private.pem", &format!("nope-{i}")))
        .collect();
    let before = state.fetches.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    for t in &unknown {
        assert_eq!(status(&c, &url, t).await, (401, "key_unknown".to_string()));
    }
    let during = state.fetches.load(Ordering::SeqCst) - before;
    // at most one refetch per jwks_min_refetch (500ms), plus one in flight
    let bound = started.elapsed().as_millis() as u64 / 500 + 2;
    assert!(
        during <= bound,
        "{during} JWKS fetches for 30 unknown kids (bound {bound})"
    );
    assert!(gw.metric("gateway_jwks_fetches_total", &[("result", "error")]) >= 1.0);
}
