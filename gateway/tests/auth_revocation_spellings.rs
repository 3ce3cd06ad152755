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
use serde_json::{json, Value};
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

fn config(backend: &Backend, redis: &RedisServer, revocation: Value) -> String {
    let mut rev = revocation;
    rev["redis_url"] = json!(redis.url());
    json!({
        "listeners": [{"address": "127.0.0.1:$HTTP_PORT"}],
        "admin": {"address": "127.0.0.1:$ADMIN_PORT"},
        "services": {"echo": {"instances": [backend.addr()]}},
        "auth": {
            "issuers": [{"name": "es", "issuer": "es", "algorithms": ["ES256"], "public_key_file": "es-public.pem"}],
            "revocation": rev,
        },
        "routes": [
            {"id": "logout", "match": {"path": "/logout", "methods": ["POST"]}, "service": "echo",
             "auth": {"jwt": {"revoke": "on_success"}}},
            {"id": "api", "match": {"prefix": "/api/"}, "service": "echo", "auth": {"jwt": {}}},
        ],
    })
    .to_string()
}

async fn status(c: &reqwest::Client, url: &str, token: &str) -> (u16, String) {
    let resp = c.get(url).bearer_auth(token).send().await.unwrap();
    let s = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (s, body["error"].as_str().unwrap_or("").to_string())
}

fn start(backend: &Backend, redis: &RedisServer, revocation: Value) -> GatewayProcess {
    GatewayProcess::start_with_files(
        BIN,
        &config(backend, redis, revocation),
        &[("es-public.pem", ES_PUBLIC)],
    )
}

/// Revoke `token` with the writer the services use, then both spellings are refused.
async fn writer_revocation_binds_the_twin(revocation: Value, keys: RevocationKeys) {
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
    writer_revocation_binds_the_twin(json!({"resync_interval": "60s"}), RevocationKeys::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malleated_es256_twin_of_a_revoked_token_is_refused_in_lookup_mode() {
    writer_revocation_binds_the_twin(json!({"mode": "lookup"}), RevocationKeys::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malleated_twin_is_refused_under_a_spelling_bound_template() {
    let template = "blacklist:{token_sha256}";
    let keys = RevocationKeys {
        blacklist_key: template.into(),
        ..RevocationKeys::default()
    };
    writer_revocation_binds_the_twin(
        json!({"blacklist_key": template, "resync_interval": "60s"}),
        keys.clone(),
    )
    .await;
    writer_revocation_binds_the_twin(json!({"blacklist_key": template, "mode": "lookup"}), keys)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_one_spelling_refuses_the_other() {
    let redis = RedisServer::start();
    let backend = Backend::start("echo");
    let gw = start(&backend, &redis, json!({"resync_interval": "60s"}));
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
