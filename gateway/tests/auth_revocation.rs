//! Token revocation end to end: the real binary, a real `redis-server` on a free
//! port, and the library writer the services use. Revocation by jti, by token hash
//! and by revoked-before; how fast a revocation bites while traffic flows; Redis
//! stopped mid-traffic under `deny` and `allow`, then restarted; lookup mode.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugins::auth::mint::{mint_token, MintOptions};
use plugins::revocation::{signed_sha256, RevocationKeys, RevocationWriter};
use serde_json::{json, Value};
use testkit::config::{
    jwt_auth, ms, revocation, secs, AuthConfig, GatewayConfigBuilder, JwtRouteConfig,
    RedisErrorPolicy, RevocationConfig, RevocationMode, RouteBuilder, ServiceBuilder,
};
use testkit::{client, wait_until_async, Backend, GatewayProcess, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const SECRET: &str = testkit::config::TEST_SECRET;

fn token(sub: &str, jti: bool, extra: &[(&str, Value)]) -> String {
    mint_token(&MintOptions {
        jti,
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..MintOptions::hs256(SECRET, sub)
    })
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The dev issuer with `revocation`, and a `deny` and an `allow` route.
fn config_builder(backend: &Backend, revocation: RevocationConfig) -> GatewayConfigBuilder {
    GatewayConfigBuilder::new()
        .admin()
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .auth(AuthConfig {
            revocation: Some(revocation),
            ..jwt_auth(SECRET)
        })
        .route(
            RouteBuilder::to("echo")
                .id("deny")
                .prefix("/deny/")
                .protected(),
        )
        .route(
            RouteBuilder::to("echo")
                .id("allow")
                .prefix("/allow/")
                .jwt(JwtRouteConfig {
                    on_redis_error: Some(RedisErrorPolicy::Allow),
                    ..JwtRouteConfig::default()
                }),
        )
}

/// Revocation in `redis`, resynced every second.
fn revocation_in(redis: &RedisServer, mode: RevocationMode) -> RevocationConfig {
    RevocationConfig {
        mode,
        resync_interval: secs(1),
        ..revocation(&redis.url())
    }
}

fn config(backend: &Backend, redis: &RedisServer, mode: RevocationMode) -> String {
    config_builder(backend, revocation_in(redis, mode)).yaml()
}

/// Status and error code of one GET with `token`.
async fn get(c: &reqwest::Client, url: &str, token: &str) -> (u16, String) {
    let resp = c.get(url).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["error"].as_str().unwrap_or("").to_string())
}

async fn wait_for(c: &reqwest::Client, url: &str, token: &str, want: (u16, &str)) -> bool {
    wait_until_async(Duration::from_secs(10), || async {
        let (s, code) = get(c, url, token).await;
        (s, code.as_str()) == want
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_by_jti_token_hash_and_revoked_before() {
    let redis = RedisServer::start();
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend, &redis, RevocationMode::Mirror));
    let c = client();
    let url = gw.url("/deny/x");
    let w = RevocationWriter::new(&redis.url(), RevocationKeys::default()).unwrap();

    let by_jti = token("u1", true, &[]);
    assert!(
        wait_for(&c, &url, &by_jti, (200, "")).await,
        "mirror never synced"
    );
    let key = w.revoke_token(&by_jti, Duration::ZERO).await.unwrap();
    assert!(key.starts_with("blacklist:"), "{key}");
    assert!(wait_for(&c, &url, &by_jti, (401, "token_revoked")).await);
    // the TTL is the token's remaining life, plus a margin over the gateway's leeway
    let ttl: i64 = redis
        .cmd(&["TTL", &key])
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!((560..=660).contains(&ttl), "ttl {ttl}");

    // no jti: the key is the SHA-256 of the signed part (header.payload)
    let no_jti = token("u2", false, &[]);
    assert_eq!(get(&c, &url, &no_jti).await.0, 200);
    let key = w
        .revoke_token(&no_jti, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(key, format!("blacklist:{}", signed_sha256(&no_jti)));
    assert!(wait_for(&c, &url, &no_jti, (401, "token_revoked")).await);

    // revoked-before: older tokens of the subject refused, newer ones pass
    let old = token("u3", true, &[("iat", json!(now() - 60))]);
    let other_subject = token("u4", true, &[("iat", json!(now() - 60))]);
    assert_eq!(get(&c, &url, &old).await.0, 200);
    w.revoke_subject("u3", now() - 1, Duration::from_secs(900))
        .await
        .unwrap();
    assert!(wait_for(&c, &url, &old, (401, "token_revoked")).await);
    let newer = token("u3", true, &[("iat", json!(now() + 1))]);
    assert_eq!(get(&c, &url, &newer).await.0, 200);
    assert_eq!(get(&c, &url, &other_subject).await.0, 200);

    // written without a PUBLISH: picked up by the periodic resync (SCAN)
    let quiet = token("u5", true, &[("jti", json!("quiet-jti"))]);
    assert_eq!(get(&c, &url, &quiet).await.0, 200);
    redis.cmd(&["SET", "blacklist:quiet-jti", "1", "EX", "60"]);
    assert!(wait_for(&c, &url, &quiet, (401, "token_revoked")).await);

    // un-revoking works too
    w.unrevoke_token(&by_jti).await.unwrap();
    assert!(wait_for(&c, &url, &by_jti, (200, "")).await);

    assert!(gw.metric("gateway_revoked_tokens_rejected_total", &[]) >= 4.0);
    assert!(gw.metric("gateway_revocation_mirror_size", &[("kind", "token")]) >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_while_a_client_keeps_sending() {
    let redis = RedisServer::start();
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend, &redis, RevocationMode::Mirror));
    let c = client();
    let url = gw.url("/deny/x");
    let w = RevocationWriter::new(&redis.url(), RevocationKeys::default()).unwrap();
    assert!(wait_for(&c, &url, &token("warm", true, &[]), (200, "")).await);

    let mut delays = Vec::new();
    for i in 0..10 {
        let t = token(&format!("user-{i}"), true, &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let refused_at = Arc::new(AtomicU64::new(0));
        let origin = Instant::now();
        let sender = {
            let (c, url, t, stop, refused_at) = (
                c.clone(),
                url.clone(),
                t.clone(),
                stop.clone(),
                refused_at.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (s, code) = get(&c, &url, &t).await;
                    if s == 401 {
                        assert_eq!(code, "token_revoked");
                        refused_at.store(origin.elapsed().as_micros() as u64, Ordering::SeqCst);
                        return;
                    }
                    assert_eq!(s, 200);
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        let written = origin.elapsed();
        w.revoke_token(&t, Duration::ZERO).await.unwrap();
        let done = tokio::time::timeout(Duration::from_secs(5), sender).await;
        stop.store(true, Ordering::Relaxed);
        assert!(done.is_ok(), "revocation {i} not enforced within 5 s");
        let refused = Duration::from_micros(refused_at.load(Ordering::SeqCst));
        delays.push(refused.saturating_sub(written));
    }
    delays.sort();
    eprintln!(
        "revocation enforced while traffic flows: median {:?}, max {:?} (write start -> first 401, {} runs)",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );
}

async fn outage(mode: RevocationMode) {
    let mut redis = RedisServer::start();
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend, &redis, mode));
    let c = client();
    let (deny, allow) = (gw.url("/deny/x"), gw.url("/allow/x"));
    let t = token("u1", true, &[]);
    assert!(wait_for(&c, &deny, &t, (200, "")).await);

    // traffic keeps flowing through the outage: every answer is 200 or a clean 503
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (c, deny, allow, t, stop) = (
            c.clone(),
            deny.clone(),
            allow.clone(),
            t.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (s, code) = get(&c, &deny, &t).await;
                assert!(
                    s == 200 || (s == 503 && code == "revocation_unavailable"),
                    "{s} {code}"
                );
                assert_eq!(
                    get(&c, &allow, &t).await.0,
                    200,
                    "allow must pass while Redis is down"
                );
                n += 1;
            }
            n
        })
    };
    redis.stop();
    assert!(
        wait_for(&c, &deny, &t, (503, "revocation_unavailable")).await,
        "{mode:?}: deny did not refuse"
    );
    assert_eq!(get(&c, &allow, &t).await.0, 200);
    assert!(
        gw.metric(
            "gateway_revocation_unavailable_total",
            &[("policy", "deny")]
        ) >= 1.0
    );
    assert!(
        gw.metric(
            "gateway_revocation_unavailable_total",
            &[("policy", "allow")]
        ) >= 1.0
    );
    assert!(gw.metric("gateway_redis_errors_total", &[]) >= 1.0);

    redis.restart();
    assert!(
        wait_for(&c, &deny, &t, (200, "")).await,
        "{mode:?}: no recovery after Redis came back"
    );
    stop.store(true, Ordering::Relaxed);
    let sent = traffic.await.unwrap();
    assert!(sent > 0);

    // after the restart, revocations are enforced again (resubscribed / reconnected)
    let w = RevocationWriter::new(&redis.url(), RevocationKeys::default()).unwrap();
    w.revoke_token(&t, Duration::ZERO).await.unwrap();
    assert!(wait_for(&c, &deny, &t, (401, "token_revoked")).await);
    assert!(wait_for(&c, &allow, &t, (401, "token_revoked")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_mirror_mode_deny_allow_and_recovery() {
    outage(RevocationMode::Mirror).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_lookup_mode_deny_allow_and_recovery() {
    outage(RevocationMode::Lookup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_mode_sees_a_revocation_on_the_next_request() {
    let redis = RedisServer::start();
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend, &redis, RevocationMode::Lookup));
    let c = client();
    let url = gw.url("/deny/x");
    let t = token("u1", false, &[]);
    assert!(wait_for(&c, &url, &t, (200, "")).await);
    // written with plain commands, no PUBLISH: lookup mode asks Redis every time
    redis.cmd(&[
        "SET",
        &format!("blacklist:{}", signed_sha256(&t)),
        "1",
        "EX",
        "60",
    ]);
    assert_eq!(get(&c, &url, &t).await, (401, "token_revoked".to_string()));
    let old = token("u2", true, &[("iat", json!(now() - 60))]);
    assert_eq!(get(&c, &url, &old).await.0, 200);
    redis.cmd(&["SET", "revoked-before:u2", &now().to_string()]);
    assert_eq!(
        get(&c, &url, &old).await,
        (401, "token_revoked".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_the_same_auth_section_keeps_the_mirror_connected() {
    let redis = RedisServer::start();
    let backend = Backend::start("echo");
    let builder = config_builder(&backend, revocation_in(&redis, RevocationMode::Mirror));
    let gw = GatewayProcess::start(BIN, &builder.yaml());
    let c = client();
    let t = token("u1", true, &[]);
    assert!(wait_for(&c, &gw.url("/deny/x"), &t, (200, "")).await);
    let w = RevocationWriter::new(&redis.url(), RevocationKeys::default()).unwrap();
    w.revoke_token(&t, Duration::ZERO).await.unwrap();
    assert!(wait_for(&c, &gw.url("/deny/x"), &t, (401, "token_revoked")).await);

    // a new route, same auth section: no reconnect, the mirror's content carries over
    let more = builder
        .route(
            RouteBuilder::to("echo")
                .id("extra")
                .prefix("/extra/")
                .protected(),
        )
        .yaml();
    gw.rewrite_config(&more);
    assert!(wait_for(&c, &gw.url("/extra/x"), &t, (401, "token_revoked")).await);
    assert_eq!(gw.log_count("revocation mirror synced"), 1, "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_notifications_apply_a_plain_set_at_once() {
    let redis = RedisServer::start();
    assert_eq!(
        redis.cmd(&["CONFIG", "SET", "notify-keyspace-events", "K$gx"]),
        "+OK"
    );
    let backend = Backend::start("echo");
    // a long resync period: only the keyspace event can apply the revocation in time
    let yaml = config_builder(
        &backend,
        RevocationConfig {
            resync_interval: secs(3600),
            keyspace_notifications: true,
            ..revocation_in(&redis, RevocationMode::Mirror)
        },
    )
    .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    let url = gw.url("/deny/x");
    let t = token("u1", true, &[("jti", json!("plain-set"))]);
    assert!(wait_for(&c, &url, &t, (200, "")).await);
    redis.cmd(&["SET", "blacklist:plain-set", "1", "EX", "60"]);
    assert!(wait_for(&c, &url, &t, (401, "token_revoked")).await);
    redis.cmd(&["DEL", "blacklist:plain-set"]);
    assert!(wait_for(&c, &url, &t, (200, "")).await);
}

fn exists_calls(redis: &RedisServer) -> u64 {
    let info = redis.cmd(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_exists:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_cache_reuses_answers_for_its_ttl() {
    let redis = RedisServer::start();
    let backend = Backend::start("echo");
    let yaml = config_builder(
        &backend,
        RevocationConfig {
            lookup_cache: ms(500),
            ..revocation_in(&redis, RevocationMode::Lookup)
        },
    )
    .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    let url = gw.url("/deny/x");
    let t = token("u1", true, &[]);
    assert!(wait_for(&c, &url, &t, (200, "")).await);
    let before = exists_calls(&redis);
    assert!(before >= 1, "the warm-up request asked Redis");
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(get(&c, &url, &t).await.0, 200);
    }
    let asked = exists_calls(&redis) - before;
    let bound = started.elapsed().as_millis() as u64 / 500 + 1;
    assert!(
        asked <= bound,
        "{asked} lookups for 20 requests (bound {bound})"
    );
    // a revocation bites once the cached answer is older than lookup_cache
    let w = RevocationWriter::new(&redis.url(), RevocationKeys::default()).unwrap();
    w.revoke_token(&t, Duration::ZERO).await.unwrap();
    assert!(wait_for(&c, &url, &t, (401, "token_revoked")).await);
}
