//! A revoked token cannot come back under another spelling: an ES256 token is
//! revoked (by the library writer the services use, and by a route's
//! `revoke: on_success`), then its `(r, n - s)` twin, which verifies just as well,
//! is presented at the real gateway in mirror and lookup modes, under the default
//! key template and under the spelling-bound `{token_sha256}` one.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::elliptic_curve::ff::PrimeField;
use plugins::auth::mint::{mint_token, MintKey, MintOptions};
use plugins::revocation::{RevocationKeys, RevocationWriter};
use serde_json::Value;
use testkit::config::{
    secs, AuthConfig, GatewayConfigBuilder, IssuerConfig, JwtRouteConfig, RevocationConfig,
    RevocationMode, RevokeWhen, RouteBuilder, ServiceBuilder,
};
use testkit::{client, wait_until_async, Backend, GatewayProcess, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const ES_PRIVATE: &[u8] = include_bytes!("keys/es-a-private.pem");
const ES_PUBLIC: &[u8] = include_bytes!("keys/es-a-public.pem");

/// An ES256 token without `jti` (revoked by its hash, the case a twin could dodge).
fn es256(sub: &str) -> String {
    mint_token(&MintOptions {
        alg: "ES256".into(),
        key: MintKey::PrivateKeyPem(ES_PRIVATE.to_vec()),
        sub: sub.into(),
        email: None,
        roles: vec![],
        ttl: Duration::from_secs(600),
        iss: Some("es".into()),
        aud: None,
        kid: None,
        jti: false,
        extra: Default::default(),
    })
    .unwrap()
}

/// `(r, n - s)`: what any holder can compute from a token, without the key.
fn malleate(token: &str) -> String {
    let (message, sig) = token.rsplit_once('.').unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
    let (r, s) = sig.split_scalars();
    let neg: p256::Scalar = -*s;
    let twin = p256::ecdsa::Signature::from_scalars(r.to_repr(), neg.to_repr()).unwrap();
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(twin.to_bytes()))
}

/// Revocation settings; `config` points them at the test's Redis.
fn settings(f: impl FnOnce(&mut RevocationConfig)) -> RevocationConfig {
    let mut revocation = RevocationConfig::new("redis://set-by-config");
    f(&mut revocation);
    revocation
}

fn config(backend: &Backend, redis: &RedisServer, revocation: RevocationConfig) -> String {
    let es = IssuerConfig {
        issuer: Some("es".into()),
        public_key_file: Some("es-public.pem".into()),
        ..IssuerConfig::new("es", vec!["ES256".into()])
    };
    GatewayConfigBuilder::new()
        .admin()
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .auth(AuthConfig {
            issuers: vec![es],
            revocation: Some(RevocationConfig {
                redis_url: redis.url(),
                ..revocation
            }),
            ..AuthConfig::default()
        })
        .route(
            RouteBuilder::to("echo")
                .id("logout")
                .path("/logout")
                .methods(&["POST"])
                .jwt(JwtRouteConfig {
                    revoke: Some(RevokeWhen::OnSuccess),
                    ..JwtRouteConfig::default()
                }),
        )
        .route(
            RouteBuilder::to("echo")
                .id("api")
                .prefix("/api/")
                .protected(),
        )
        .yaml()
}

async fn status(c: &reqwest::Client, url: &str, token: &str) -> (u16, String) {
    let resp = c.get(url).bearer_auth(token).send().await.unwrap();
    let s = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (s, body["error"].as_str().unwrap_or("").to_string())
}

fn start(backend: &Backend, redis: &RedisServer, revocation: RevocationConfig) -> GatewayProcess {
    GatewayProcess::start_with_files(
        BIN,
        &config(backend, redis, revocation),
        &[("es-public.pem", ES_PUBLIC)],
    )
}

/// Revoke `token` with the writer the services use, then both spellings are refused.
async fn writer_revocation_binds_the_twin(revocation: RevocationConfig, keys: RevocationKeys) {
    let redis = RedisServer::start();
    let backend = Backend::start("echo");
    let gw = start(&backend, &redis, revocation);
    let c = client();
    let url = gw.url("/api/x");
    let token = es256("u1");
    let twin = malleate(&token);
    assert_ne!(token, twin);
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            status(&c, &url, &token).await.0 == 200
        })
        .await,
        "the gateway never accepted the token"
    );
    assert_eq!(
        status(&c, &url, &twin).await.0,
        200,
        "the twin verifies: ECDSA signatures are malleable"
    );

    let w = RevocationWriter::new(&redis.url(), keys).unwrap();
    w.revoke_token(&token, Duration::ZERO).await.unwrap();
    let revoked = (401, "token_revoked".to_string());
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            status(&c, &url, &token).await == revoked
        })
        .await
    );
    assert_eq!(
        status(&c, &url, &twin).await,
        revoked,
        "the malleated twin of a revoked token passed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malleated_es256_twin_of_a_revoked_token_is_refused_in_mirror_mode() {
    writer_revocation_binds_the_twin(
        settings(|r| r.resync_interval = secs(60)),
        RevocationKeys::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malleated_es256_twin_of_a_revoked_token_is_refused_in_lookup_mode() {
    writer_revocation_binds_the_twin(
        settings(|r| r.mode = RevocationMode::Lookup),
        RevocationKeys::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malleated_twin_is_refused_under_a_spelling_bound_template() {
    let template = "blacklist:{token_sha256}";
    let keys = RevocationKeys {
        blacklist_key: template.into(),
        ..RevocationKeys::default()
    };
    writer_revocation_binds_the_twin(
        settings(|r| {
            r.blacklist_key = template.into();
            r.resync_interval = secs(60);
        }),
        keys.clone(),
    )
    .await;
    writer_revocation_binds_the_twin(
        settings(|r| {
            r.blacklist_key = template.into();
            r.mode = RevocationMode::Lookup;
        }),
        keys,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_one_spelling_refuses_the_other() {
    let redis = RedisServer::start();
    let backend = Backend::start("echo");
    let gw = start(&backend, &redis, settings(|r| r.resync_interval = secs(60)));
    let c = client();
    let url = gw.url("/api/x");
    let token = es256("u2");
    let twin = malleate(&token);
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            status(&c, &url, &twin).await.0 == 200
        })
        .await
    );
    // log out with the twin; the original is the one refused next
    let resp = c
        .post(gw.url("/logout"))
        .bearer_auth(&twin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        status(&c, &url, &token).await,
        (401, "token_revoked".to_string())
    );
}
