//! Rate limits across gateways: two real `gateway` processes on one real
//! `redis-server` share a `scope: cluster` budget per key (a header, a JWT `sub`);
//! Redis stopped and started again under each `on_redis_error` policy; the
//! `RateLimit-*` headers on both scopes; a claim key on a local limit; the GCRA
//! script itself against its Rust model.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugins::auth::mint::{mint_token, MintOptions};
use testkit::config::{
    jwt_auth, rate_limit, secs, GatewayConfigBuilder, OnRedisError, RateLimitConfig, RateLimitKey,
    RateLimitScope, RouteBuilder, ServiceBuilder,
};
use testkit::{client, wait_until_async, Backend, GatewayProcess, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const SECRET: &str = testkit::config::TEST_SECRET;

fn token(sub: &str) -> String {
    mint_token(&MintOptions::hs256(SECRET, sub)).unwrap()
}

fn cluster(requests: u32, per: Duration, burst: u32, key: RateLimitKey) -> RateLimitConfig {
    RateLimitConfig {
        scope: RateLimitScope::Cluster,
        burst: Some(burst),
        ..rate_limit(requests, testkit::config::Dur(per), key)
    }
}

fn header(r: &reqwest::Response, name: &str) -> Option<u64> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Requests per second of the hammered budget, and its burst.
const RATE: u32 = 100;
const BURST: u32 = 10;

fn shared_config(backend: &Backend, redis: &RedisServer) -> String {
    GatewayConfigBuilder::new()
        .admin()
        .rate_limits(&redis.url())
        .auth(jwt_auth(SECRET))
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .route(
            RouteBuilder::to("echo")
                .id("shared")
                .prefix("/shared/")
                // deny: a call that times out on a busy machine must not admit from
                // the local fallback, which the bound below does not cover
                .rate_limit(RateLimitConfig {
                    on_redis_error: Some(OnRedisError::Deny),
                    ..cluster(
                        RATE,
                        Duration::from_secs(1),
                        BURST,
                        RateLimitKey::Header("x-api-key".into()),
                    )
                }),
        )
        .route(
            RouteBuilder::to("echo")
                .id("me")
                .prefix("/me/")
                .protected()
                .rate_limit(cluster(
                    3,
                    Duration::from_secs(60),
                    3,
                    RateLimitKey::Claim("sub".into()),
                )),
        )
        .yaml()
}

/// `calls` of the script's command in `INFO commandstats` (EVALSHA, EVAL on a miss).
fn script_calls(redis: &RedisServer) -> u64 {
    let info = redis.cmd(&["INFO", "commandstats"]);
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|v| v.split(',').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_one_budget_per_key() {
    let redis = RedisServer::start();
    let backend = Backend::start("echo");
    let yaml = shared_config(&backend, &redis);
    let a = GatewayProcess::start(BIN, &yaml);
    let b = GatewayProcess::start(BIN, &yaml);
    let urls = Arc::new([a.url("/shared/x"), b.url("/shared/x")]);
    let c = client();

    // 8 workers, half on each gateway, one key, for about 2 s
    let admitted = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let refused = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let calls_before = script_calls(&redis);
    let started = Instant::now();
    let until = started + Duration::from_secs(2);
    let mut workers = Vec::new();
    for w in 0..8usize {
        let (c, urls, admitted, refused, unavailable) = (
            c.clone(),
            urls.clone(),
            admitted.clone(),
            refused.clone(),
            unavailable.clone(),
        );
        workers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let r = c
                    .get(&urls[w % 2])
                    .header("x-api-key", "k1")
                    .send()
                    .await
                    .unwrap();
                if r.status() == 503 {
                    // Redis slower than rate_limits.timeout: the deny policy
                    unavailable.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                assert_eq!(header(&r, "ratelimit-limit"), Some(u64::from(BURST)));
                let remaining = header(&r, "ratelimit-remaining").unwrap();
                assert!(remaining <= u64::from(BURST), "remaining {remaining}");
                assert!(header(&r, "ratelimit-reset").is_some());
                match r.status().as_u16() {
                    200 => {
                        admitted[w % 2].fetch_add(1, Ordering::Relaxed);
                    }
                    429 => {
                        assert_eq!(remaining, 0);
                        assert!(header(&r, "retry-after").is_some_and(|s| s >= 1));
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    s => panic!("unexpected status {s}"),
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (on_a, on_b) = (
        admitted[0].load(Ordering::Relaxed),
        admitted[1].load(Ordering::Relaxed),
    );
    let refused = refused.load(Ordering::Relaxed);
    let unavailable = unavailable.load(Ordering::Relaxed);
    let total = on_a + on_b;
    // the documented bound: burst + N·(t + lease TTL), plus one for rounding
    let bound = f64::from(BURST) + f64::from(RATE) * (elapsed + 0.05) + 1.0;
    let calls = script_calls(&redis) - calls_before;
    eprintln!(
        "admitted {total} (a {on_a}, b {on_b}), refused {refused}, unavailable {unavailable} in {elapsed:.2}s; bound {bound:.0}; {calls} Redis calls for {} requests",
        total + refused + unavailable
    );
    assert!(
        (total as f64) <= bound,
        "{total} admitted in {elapsed:.2}s > {bound:.0}"
    );
    assert!(total >= u64::from(BURST), "not even the burst was admitted");
    assert!(refused > 0, "the load never reached the limit");
    assert!(
        on_a > 0 && on_b > 0,
        "both gateways admit from the one budget"
    );
    // refusals are remembered until the next token is due: most requests make no call
    assert!(
        calls < total + refused + unavailable,
        "{calls} Redis calls for {} requests",
        total + refused + unavailable
    );
    // the budget's key: the documented prefix, one hash tag, an expiry
    let keys = redis.cmd(&["KEYS", "gateway:rl:*"]);
    assert!(keys.contains("gateway:rl:{shared:"), "{keys}");
    let key = keys
        .lines()
        .find(|l| l.starts_with("gateway:rl:"))
        .unwrap()
        .to_string();
    let ttl: i64 = redis
        .cmd(&["PTTL", &key])
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 2_000, "idle expiry {ttl} ms");
}

#[tokio::test]
async fn each_user_has_a_budget_across_gateways() {
    let redis = RedisServer::start();
    let backend = Backend::start("echo");
    let yaml = shared_config(&backend, &redis);
    let a = GatewayProcess::start(BIN, &yaml);
    let b = GatewayProcess::start(BIN, &yaml);
    let c = client();
    let get = |url: String, token: String| {
        let c = c.clone();
        async move { c.get(url).bearer_auth(token).send().await.unwrap() }
    };
    // alice: two tokens, one budget of 3 across both gateways
    let (alice1, alice2, bob) = (token("alice"), token("alice"), token("bob"));
    for (k, (gw, t)) in [(&a, &alice1), (&b, &alice2), (&a, &alice2)]
        .into_iter()
        .enumerate()
    {
        let r = get(gw.url("/me/x"), t.clone()).await;
        assert_eq!(r.status(), 200, "request {k}");
        assert_eq!(header(&r, "ratelimit-limit"), Some(3));
    }
    let r = get(b.url("/me/x"), alice1.clone()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "ratelimit-remaining"), Some(0));
    assert!(header(&r, "retry-after").is_some_and(|s| (1..=60).contains(&s)));
    // bob's budget is his own
    let r = get(b.url("/me/x"), bob.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "ratelimit-remaining"), Some(2));
    // a request without a valid token is refused by auth, before any budget
    let r = c.get(a.url("/me/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("ratelimit-limit").is_none());
}

fn outage_config(backend: &Backend, redis: &RedisServer) -> String {
    let route = |id: &str, policy: OnRedisError| {
        RouteBuilder::to("echo")
            .id(id)
            .prefix(&format!("/{id}/"))
            .rate_limit(RateLimitConfig {
                on_redis_error: Some(policy),
                ..cluster(2, Duration::from_secs(60), 2, RateLimitKey::Route)
            })
    };
    GatewayConfigBuilder::new()
        .admin()
        .rate_limits(&redis.url())
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .route(route("allow", OnRedisError::Allow))
        .route(route("deny", OnRedisError::Deny))
        .route(route("local", OnRedisError::Local))
        .yaml()
}

#[tokio::test]
async fn redis_down_applies_each_policy_and_recovery_needs_no_restart() {
    let mut redis = RedisServer::start();
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &outage_config(&backend, &redis));
    let c = client();
    let status = |path: &str| {
        let (c, url) = (c.clone(), gw.url(path));
        async move { c.get(url).send().await.unwrap() }
    };

    // Redis up: the cluster budget (2) applies; one of it spent here
    let r = status("/local/x").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "ratelimit-remaining"), Some(1));

    redis.stop();
    // allow: admitted, without budget headers
    for _ in 0..5 {
        let r = status("/allow/x").await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("ratelimit-remaining").is_none());
    }
    // deny: 503 with a clear code
    let r = status("/deny/x").await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after"), Some(1));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limit_unavailable");
    // local: this process's own budget with the same quota (fresh: 2, then 429),
    // while the cluster one had 1 left
    for _ in 0..2 {
        let r = status("/local/x").await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-limit"), Some(2));
    }
    assert_eq!(status("/local/x").await.status(), 429);
    for policy in ["allow", "deny", "local"] {
        assert!(
            gw.metric(
                "gateway_rate_limit_redis_errors_total",
                &[("route", policy), ("policy", policy)]
            ) >= 1.0,
            "{policy}: {}",
            gw.metrics()
        );
    }

    // Redis back (empty): the cluster budget applies again, no gateway restart
    redis.restart();
    let back = wait_until_async(Duration::from_secs(10), || async {
        status("/deny/x").await.status() == 200
    })
    .await;
    assert!(back, "the deny route never recovered");
    assert_eq!(status("/deny/x").await.status(), 200);
    assert_eq!(status("/deny/x").await.status(), 429);
    // the local route's fallback budget is spent, the fresh cluster one is not
    let r = status("/local/x").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "ratelimit-remaining"), Some(1));
    assert!(redis.cmd(&["KEYS", "gateway:rl:*"]).contains("{local:"));
}

#[tokio::test]
async fn local_limits_key_by_claim_and_send_the_headers() {
    let backend = Backend::start("echo");
    let yaml = GatewayConfigBuilder::new()
        .admin()
        .auth(jwt_auth(SECRET))
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .route(
            RouteBuilder::to("echo")
                .id("me")
                .prefix("/me/")
                .protected()
                .rate_limit(rate_limit(2, secs(60), RateLimitKey::Claim("sub".into()))),
        )
        .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    let (alice, bob) = (token("alice"), token("bob"));
    let get = |t: &str| c.get(gw.url("/me/x")).bearer_auth(t).send();
    for want in [1, 0] {
        let r = get(&alice).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-limit"), Some(2));
        assert_eq!(header(&r, "ratelimit-remaining"), Some(want));
        let reset = header(&r, "ratelimit-reset").unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
    }
    let r = get(&alice).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(header(&r, "retry-after").is_some_and(|s| (1..=30).contains(&s)));
    assert!(header(&r, "ratelimit-reset").is_some_and(|s| s >= 30));
    let r = get(&bob).await.unwrap();
    assert_eq!(r.status(), 200, "another user, another budget");
}

#[tokio::test]
async fn the_script_follows_the_model() {
    use plugins::rate_limit::{Gcra, SCRIPT};
    let redis = RedisServer::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let script = redis::Script::new(SCRIPT);
    // 1 per second, burst 5: a refill slow enough that the test's own time hardly counts
    let g = Gcra::new(1, Duration::from_secs(1), 5);
    let take = |want: u64| {
        let mut call = script.key("gateway:rl:{model:1}");
        call.arg(g.interval_us).arg(g.burst).arg(want);
        let mut conn = conn.clone();
        async move {
            call.invoke_async::<(u64, u64, u64, u64)>(&mut conn)
                .await
                .unwrap()
        }
    };
    let model = g.take(None, 0, 3);
    let (granted, remaining, reset_us, retry_us) = take(3).await;
    assert_eq!(
        (granted, remaining, retry_us),
        (model.granted, model.remaining, 0)
    );
    assert!(reset_us <= model.reset_us && reset_us > model.reset_us - 500_000);
    let (granted, remaining, _, _) = take(3).await;
    assert_eq!((granted, remaining), (2, 0), "only the rest of the burst");
    let (granted, _, reset_us, retry_us) = take(1).await;
    assert_eq!(granted, 0);
    assert!(
        retry_us > 500_000 && retry_us <= 1_000_000,
        "retry {retry_us}"
    );
    assert!(
        reset_us > 4_500_000 && reset_us <= 5_000_000,
        "reset {reset_us}"
    );
    // the TAT is stored as whole microseconds (no exponent), expiring with the refill
    let tat = redis.cmd(&["GET", "gateway:rl:{model:1}"]);
    let digits = tat.lines().last().unwrap();
    assert!(
        digits.len() >= 16 && digits.bytes().all(|b| b.is_ascii_digit()),
        "{tat}"
    );
    let ttl: i64 = redis
        .cmd(&["PTTL", "gateway:rl:{model:1}"])
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!((5_000..=6_000).contains(&ttl), "pttl {ttl}");
}
