//! Redis high availability against real topologies on loopback ports: a Sentinel set
//! (one primary, one replica, three sentinels) and a three-primary Redis Cluster
//! (with or without replicas), each shared by two real gateway processes.
//!
//! - Sentinel: the primary is killed under continuous traffic; no revoked token is
//!   admitted at any moment, valid tokens pass again after the promotion, and a
//!   revocation written after the failover reaches both gateways.
//! - Cluster: revocations written through the library writer and by hand through
//!   every node reach both gateways (by the channel, and by the resync that scans
//!   every primary); a cluster rate limit per `sub` holds across both gateways with
//!   keys spread over the slots; the registry works across both gateways.
//! - Cluster with replicas: the primary the mirrors subscribe on is killed under
//!   continuous traffic; no revoked token is admitted, valid tokens pass again after
//!   its replica's promotion, and a revocation written to the failed-over slots
//!   reaches both gateways.
//! - Credentials: on a password-protected Sentinel set (sentinels without a password)
//!   and Cluster, the mirrors, the writer and the cluster rate limit work at two
//!   gateways, with revocations on every primary; a wrong password admits nothing
//!   (503) and counts Redis errors.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugins::auth::mint::{mint_token, MintOptions};
use plugins::revocation::{RevocationKeys, RevocationWriter};
use serde_json::{json, Value};
use testkit::config::{
    jwt_auth, ms, rate_limit, revocation, secs, AuthConfig, GatewayConfigBuilder, RateLimitConfig,
    RateLimitKey, RateLimitScope, RevocationConfig, RouteBuilder, ServiceBuilder, REGISTRY_TOKEN,
};
use testkit::{
    client, wait_until, wait_until_async, Backend, GatewayProcess, RedisClusterSet,
    RedisSentinelSet,
};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const SECRET: &str = testkit::config::TEST_SECRET;

fn token(sub: &str) -> String {
    mint_token(&MintOptions {
        jti: true,
        ..MintOptions::hs256(SECRET, sub)
    })
    .unwrap()
}

/// A protected route under revocation in `redis_url` (mirror, resync every second),
/// and a cluster rate limit of 3 a minute per `sub` on `/limited/`.
fn config(backend: &Backend, redis_url: &str) -> String {
    GatewayConfigBuilder::new()
        .admin()
        .rate_limits(redis_url)
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .auth(AuthConfig {
            revocation: Some(RevocationConfig {
                resync_interval: secs(1),
                timeout: ms(250),
                ..revocation(redis_url)
            }),
            ..jwt_auth(SECRET)
        })
        .route(RouteBuilder::to("echo").id("p").prefix("/p/").protected())
        .route(
            RouteBuilder::to("echo")
                .id("limited")
                .prefix("/limited/")
                .protected()
                .rate_limit(RateLimitConfig {
                    scope: RateLimitScope::Cluster,
                    burst: Some(3),
                    ..rate_limit(
                        3,
                        testkit::config::Dur(Duration::from_secs(60)),
                        RateLimitKey::Claim("sub".into()),
                    )
                }),
        )
        .yaml()
}

async fn status(c: &reqwest::Client, url: &str, token: &str) -> u16 {
    match c.get(url).bearer_auth(token).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Wait until every gateway answers `want` to `token` on `/p/x`.
async fn all_answer(gws: &[&GatewayProcess], token: &str, want: u16, timeout: Duration) -> bool {
    let c = client();
    wait_until_async(timeout, || async {
        for gw in gws {
            if status(&c, &gw.url("/p/x"), token).await != want {
                return false;
            }
        }
        true
    })
    .await
}

/// Revoke with retries: right after a failover the writer's first attempt may meet
/// the old primary's dead connection (the next attempt asks the sentinels again).
async fn revoke(w: &RevocationWriter, t: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match w.revoke_token(t, Duration::ZERO).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("revoke: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("revocation not written within 20 s: {e}"),
        }
    }
}

/// Two gateway replicas in front of `backend`, sharing the Redis at `url`
/// ([`config`]), and the library writer the services use on the same URL.
struct Replicas {
    one: GatewayProcess,
    two: GatewayProcess,
    w: RevocationWriter,
}

impl Replicas {
    fn start(backend: &Backend, url: &str) -> Self {
        let yaml = config(backend, url);
        Replicas {
            one: GatewayProcess::start(BIN, &yaml),
            two: GatewayProcess::start(BIN, &yaml),
            w: RevocationWriter::new(url, RevocationKeys::default()).unwrap(),
        }
    }
}

/// Revoke `t` (admitted until then) and return how long after the write returned both
/// gateways refuse it. Right after a failover the writer's first attempt may meet the
/// old node's dead connection; `revoke` retries.
async fn revocation_delay(gws: &[&GatewayProcess], w: &RevocationWriter, t: &str) -> Duration {
    assert!(all_answer(gws, t, 200, Duration::from_secs(10)).await);
    revoke(w, t).await;
    let written = Instant::now();
    assert!(
        all_answer(gws, t, 401, Duration::from_secs(10)).await,
        "a revocation written after the failover was not applied\n{}",
        gws[0].log()
    );
    written.elapsed()
}

/// Requests with a revoked token, to every URL in turn, until stopped: none may be
/// admitted.
struct RevokedWatch {
    stop: Arc<AtomicBool>,
    admitted: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RevokedWatch {
    fn start<const N: usize>(urls: [String; N], revoked: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let admitted = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let task = {
            let (stop, admitted, sent) = (stop.clone(), admitted.clone(), sent.clone());
            tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    for u in &urls {
                        if status(&c, u, &revoked).await == 200 {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        RevokedWatch {
            stop,
            admitted,
            sent,
            task,
        }
    }

    /// Stop, assert that nothing was admitted, and return how many were sent.
    async fn stop_and_check(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let sent = self.sent.load(Ordering::Relaxed);
        assert_eq!(
            self.admitted.load(Ordering::SeqCst),
            0,
            "a revoked token was admitted (of {sent} requests)"
        );
        assert!(sent > 0);
        sent
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_never_admits_a_revoked_token() {
    let mut set = RedisSentinelSet::start("gwprimary");
    let backend = Backend::start("echo");
    let replicas = Replicas::start(&backend, &set.url());
    let Replicas { one, two, w } = &replicas;
    let gws = [one, two];

    let valid = token("still-signed-in");
    let revoked = token("signed-out");
    assert!(
        all_answer(&gws, &valid, 200, Duration::from_secs(20)).await,
        "the mirrors never synced\n{}",
        one.log()
    );
    revoke(w, &revoked).await;
    assert!(all_answer(&gws, &revoked, 401, Duration::from_secs(10)).await);

    // continuous traffic with the revoked token at both gateways, the whole time
    let watch = RevokedWatch::start([one.url("/p/x"), two.url("/p/x")], revoked.clone());

    let old = set.kill_primary();
    let killed = Instant::now();
    let new = set.wait_failover(old, Duration::from_secs(30));
    let promoted = Instant::now();
    assert_ne!(new, old);
    // valid tokens pass again at both gateways once they resynced with the new primary
    assert!(
        all_answer(&gws, &valid, 200, Duration::from_secs(30)).await,
        "valid tokens not admitted after the failover\n{}",
        one.log()
    );
    let recovered = promoted.elapsed();

    // a revocation written after the failover (to the new primary) reaches both
    let applied = revocation_delay(&gws, w, &token("signed-out-after-failover")).await;

    // the gateways saw the failover: the new primary, one change, time out of sync
    let new_addr = format!("127.0.0.1:{new}");
    for gw in gws {
        assert_eq!(
            gw.metric("gateway_redis_primary", &[("address", &new_addr)]),
            1.0,
            "{}",
            gw.metrics()
        );
        assert!(gw.metric("gateway_redis_failovers_total", &[]) >= 1.0);
        assert!(gw.metric("gateway_revocation_mirror_out_of_sync_seconds_total", &[]) > 0.0);
    }

    let sent = watch.stop_and_check().await;
    eprintln!(
        "failover: promoted {:?} after the kill; valid tokens back {recovered:?} after the \
         promotion; a revocation written after it refused at both gateways {applied:?} after \
         the write; {sent} requests with the revoked token during it, none admitted",
        promoted - killed,
    );
    assert!(one.metric("gateway_redis_errors_total", &[("op", "mirror")]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_revocations_rate_limits_and_registry_span_every_node() {
    let cluster = RedisClusterSet::start();
    let backend = Backend::start("echo");
    let replicas = Replicas::start(&backend, &cluster.url());
    let Replicas { one, two, w } = &replicas;
    let gws = [one, two];
    let c = client();

    let warm = token("warm");
    assert!(
        all_answer(&gws, &warm, 200, Duration::from_secs(20)).await,
        "the mirrors never synced\n{}",
        one.log()
    );

    // the library writer: keys land on their own nodes; PUBLISH reaches every node
    // (token ids are random: take at least 12, and more until every primary has one)
    let mut tokens = Vec::new();
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..200 {
        if tokens.len() >= 12 && owners.len() == 3 {
            break;
        }
        let t = token(&format!("user-{i}"));
        assert_eq!(status(&c, &one.url("/p/x"), &t).await, 200);
        owners.insert(cluster.port_for_key(&w.token_key(&t)));
        revoke(w, &t).await;
        tokens.push(t);
    }
    assert_eq!(owners.len(), 3, "the test keys cover every primary");
    for t in &tokens {
        assert!(all_answer(&gws, t, 401, Duration::from_secs(5)).await);
    }

    // by hand, through each node: SET on the key's owner, PUBLISH on each node in turn
    let ports = cluster.ports();
    let mut delays = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let t = token(&format!("by-hand-{i}"));
        assert_eq!(status(&c, &two.url("/p/x"), &t).await, 200);
        let key = w.token_key(&t);
        let owner = cluster.port_for_key(&key);
        assert!(cluster
            .cmd_on(owner, &["SET", &key, "1", "EX", "600"])
            .starts_with('+'));
        cluster.cmd_on(*port, &["PUBLISH", "gateway:revocations", &key]);
        let published = Instant::now();
        assert!(
            all_answer(&gws, &t, 401, Duration::from_secs(5)).await,
            "published through node {port}"
        );
        delays.push(published.elapsed());
    }
    eprintln!(
        "cluster: a revocation published through each node refused at both gateways after \
         {delays:?}"
    );

    // without a PUBLISH: the periodic resync scans every primary
    for (i, _) in ports.iter().enumerate() {
        let t = token(&format!("quiet-{i}"));
        assert_eq!(status(&c, &one.url("/p/x"), &t).await, 200);
        let key = w.token_key(&t);
        let owner = cluster.port_for_key(&key);
        cluster.cmd_on(owner, &["SET", &key, "1", "EX", "600"]);
        assert!(
            all_answer(&gws, &t, 401, Duration::from_secs(5)).await,
            "a quiet write on node {owner} was not found by the resync"
        );
    }

    // a cluster rate limit per sub: 3 a minute across both gateways, for subs whose
    // budget keys sit on different nodes
    for i in 0..6 {
        let t = token(&format!("limited-{i}"));
        let mut admitted = 0;
        for k in 0..8 {
            let gw = gws[k % 2];
            let s = status(&c, &gw.url("/limited/x"), &t).await;
            assert!(s == 200 || s == 429, "status {s}\n{}", gw.log());
            admitted += u32::from(s == 200);
        }
        assert_eq!(
            admitted, 3,
            "sub limited-{i}: 3 a minute across both gateways"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_primary_failover_keeps_revocations() {
    let mut cluster = RedisClusterSet::start_with_replicas();
    let backend = Backend::start("echo");
    let replicas = Replicas::start(&backend, &cluster.url());
    let Replicas { one, two, w } = &replicas;
    let gws = [one, two];

    let valid = token("still-signed-in");
    assert!(
        all_answer(&gws, &valid, 200, Duration::from_secs(20)).await,
        "the mirrors never synced\n{}",
        one.log()
    );

    // revocations on every primary (two per primary)
    let primaries = cluster.ports();
    let mut revoked: Vec<(String, u16)> = Vec::new();
    for i in 0.. {
        if primaries
            .iter()
            .all(|p| revoked.iter().filter(|(_, o)| o == p).count() >= 2)
        {
            break;
        }
        assert!(i < 200, "no keys on every primary: {revoked:?}");
        let t = token(&format!("signed-out-{i}"));
        let owner = cluster.port_for_key(&w.token_key(&t));
        if revoked.iter().filter(|(_, o)| *o == owner).count() < 2 {
            revoke(w, &t).await;
            revoked.push((t, owner));
        }
    }
    for (t, _) in &revoked {
        assert!(all_answer(&gws, t, 401, Duration::from_secs(10)).await);
    }

    // the primary to kill: the first node of the URL, where the mirrors subscribe
    let victim = primaries[0];
    let watched = revoked
        .iter()
        .find(|(_, o)| *o == victim)
        .map(|(t, _)| t.clone())
        .unwrap();
    // the revocations are on the replicas before their primary dies
    cluster.wait_replicated();

    // continuous traffic with a revoked token whose key is on the victim, at both
    // gateways, the whole time
    let watch = RevokedWatch::start([one.url("/p/x"), two.url("/p/x")], watched.clone());

    cluster.kill_node(victim);
    let killed = Instant::now();
    let new = cluster.wait_promoted(victim, Duration::from_secs(30));
    let promoted = Instant::now();
    assert_ne!(new, victim);
    // valid tokens pass again at both gateways once their mirrors resynced
    assert!(
        all_answer(&gws, &valid, 200, Duration::from_secs(30)).await,
        "valid tokens not admitted after the failover\n{}\n{}",
        one.log(),
        cluster.logs()
    );
    let recovered = promoted.elapsed();

    // a revocation written after the failover, on the failed-over slots (now the
    // promoted replica's), reaches both gateways
    let late = (0..)
        .map(|i| token(&format!("signed-out-after-failover-{i}")))
        .take(200)
        .find(|t| cluster.port_for_key(&w.token_key(t)) == new)
        .expect("a key on the promoted replica");
    let applied = revocation_delay(&gws, w, &late).await;

    // the revocations written before the failover still hold, on every primary
    for (t, _) in &revoked {
        assert!(
            all_answer(&gws, t, 401, Duration::from_secs(5)).await,
            "a revocation written before the failover was lost"
        );
    }

    let sent = watch.stop_and_check().await;
    eprintln!(
        "cluster failover: {victim} -> {new} promoted {:?} after the kill; valid tokens back \
         {recovered:?} after the promotion; a revocation written after it refused at both \
         gateways {applied:?} after the write; {sent} requests with a revoked token during \
         it, none admitted",
        promoted - killed,
    );
    assert!(one.metric("gateway_redis_errors_total", &[("op", "mirror")]) >= 1.0);
}

#[test]
fn the_registry_works_on_a_cluster() {
    let cluster = RedisClusterSet::start();
    let backend = Backend::start("a");
    let one = GatewayProcess::start(
        BIN,
        &GatewayConfigBuilder::shared_registry(&cluster.url()).yaml(),
    );
    let two = GatewayProcess::start(
        BIN,
        &GatewayConfigBuilder::shared_registry(&cluster.url()).yaml(),
    );
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let put = http
        .put(one.admin_url("/registry/services/member/instances/a"))
        .bearer_auth(REGISTRY_TOKEN)
        .json(&json!({"address": "127.0.0.1", "port": backend.port(), "ttl": "30s"}))
        .send()
        .unwrap();
    assert_eq!(put.status(), 201, "{}", one.log());
    assert!(
        wait_until(Duration::from_secs(10), || {
            http.get(two.url("/x"))
                .send()
                .ok()
                .filter(|r| r.status() == 200)
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["backend"] == "a")
        }),
        "registered at one gateway, routed by the other\n{}",
        two.log()
    );
    // the registry's keys share one slot (one hash tag)
    let owner = cluster.port_for_key("{gateway:registry}:services");
    assert_eq!(
        cluster.port_for_key("{gateway:registry}:svc:member"),
        owner,
        "one hash tag"
    );
    assert!(cluster
        .cmd_on(owner, &["EXISTS", "{gateway:registry}:svc:member"])
        .ends_with('1'));
}

/// The data nodes' password in [`credentials_reach_every_data_node`]: reserved URL
/// characters, which must survive the URL's percent-encoding to every node.
const PASSWORD: &str = "p@ss/w:rd%x?#";
/// [`PASSWORD`] as the fixtures put it in a URL.
const PASSWORD_IN_URL: &str = ":p%40ss%2Fw%3Ard%25x%3F%23@";

/// A password-protected topology, for [`credentials_reach_every_data_node`].
enum Protected<'a> {
    Sentinel(&'a RedisSentinelSet),
    Cluster(&'a RedisClusterSet),
}

impl Protected<'_> {
    fn name(&self) -> &'static str {
        match self {
            Protected::Sentinel(_) => "sentinel",
            Protected::Cluster(_) => "cluster",
        }
    }

    fn url(&self) -> String {
        match self {
            Protected::Sentinel(s) => s.url(),
            Protected::Cluster(c) => c.url(),
        }
    }

    /// The data nodes keys are written to: the primary, or every cluster primary.
    fn primaries(&self) -> Vec<u16> {
        match self {
            Protected::Sentinel(s) => vec![s.primary_port()],
            Protected::Cluster(c) => c.ports(),
        }
    }

    fn owner(&self, key: &str) -> u16 {
        match self {
            Protected::Sentinel(s) => s.primary_port(),
            Protected::Cluster(c) => c.port_for_key(key),
        }
    }

    /// A command on a data node, after `AUTH`.
    fn cmd_on(&self, port: u16, args: &[&str]) -> String {
        match self {
            Protected::Sentinel(s) => s.cmd_on(port, args),
            Protected::Cluster(c) => c.cmd_on(port, args),
        }
    }
}

/// Two gateways on a password-protected topology: the mirrors sync (a SCAN on every
/// primary), revocations through the writer and quiet ones written by hand on every
/// primary are refused at both, and a cluster rate limit holds across both.
async fn credentials_work(topology: &Protected<'_>, backend: &Backend) {
    let name = topology.name();
    let url = topology.url();
    assert!(url.contains(PASSWORD_IN_URL), "{url}");
    let started = Instant::now();
    let replicas = Replicas::start(backend, &url);
    let Replicas { one, two, w } = &replicas;
    let gws = [one, two];
    let c = client();

    let valid = token(&format!("{name}-still-signed-in"));
    assert!(
        all_answer(&gws, &valid, 200, Duration::from_secs(20)).await,
        "{name}: the mirrors never synced\n{}",
        one.log()
    );
    let synced = started.elapsed();

    // through the writer, until every primary holds one
    let primaries = topology.primaries();
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..200 {
        if owners.len() == primaries.len() {
            break;
        }
        let t = token(&format!("{name}-signed-out-{i}"));
        let owner = topology.owner(&w.token_key(&t));
        if !owners.insert(owner) {
            continue;
        }
        assert_eq!(status(&c, &one.url("/p/x"), &t).await, 200);
        revoke(w, &t).await;
        assert!(
            all_answer(&gws, &t, 401, Duration::from_secs(10)).await,
            "{name}: a revocation on node {owner} was not applied\n{}",
            one.log()
        );
    }
    assert_eq!(
        owners.len(),
        primaries.len(),
        "{name}: keys on every primary"
    );

    // by hand without a PUBLISH, on every primary: found by the resync's SCAN there
    for &port in &primaries {
        let t = (0..)
            .map(|i| token(&format!("{name}-quiet-{port}-{i}")))
            .take(200)
            .find(|t| topology.owner(&w.token_key(t)) == port)
            .expect("a key on every primary");
        assert_eq!(status(&c, &two.url("/p/x"), &t).await, 200);
        let key = w.token_key(&t);
        assert_eq!(
            topology.cmd_on(port, &["SET", &key, "1", "EX", "600"]),
            "+OK"
        );
        assert!(
            all_answer(&gws, &t, 401, Duration::from_secs(10)).await,
            "{name}: a quiet write on node {port} was not found by the resync\n{}",
            one.log()
        );
    }

    // a cluster rate limit: 3 a minute for one sub across both gateways
    let t = token(&format!("{name}-limited"));
    let mut admitted = 0;
    for k in 0..8 {
        let gw = gws[k % 2];
        let s = status(&c, &gw.url("/limited/x"), &t).await;
        assert!(s == 200 || s == 429, "{name}: status {s}\n{}", gw.log());
        admitted += u32::from(s == 200);
    }
    assert_eq!(admitted, 3, "{name}: 3 a minute across both gateways");

    assert!(all_answer(&gws, &valid, 200, Duration::from_secs(5)).await);
    for gw in gws {
        assert_eq!(
            gw.metric("gateway_redis_errors_total", &[("op", "mirror")]),
            0.0,
            "{name}: no Redis error with the right password\n{}",
            gw.log()
        );
    }
    eprintln!(
        "{name} with a password: mirrors synced {synced:?} after start, all checks done after \
         {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_reach_every_data_node() {
    let started = Instant::now();
    // started side by side (each takes a few seconds to converge)
    let (set, cluster) = std::thread::scope(|s| {
        let set = s.spawn(|| RedisSentinelSet::start_with_password("authprimary", PASSWORD));
        let cluster = RedisClusterSet::start_with_password(PASSWORD);
        let set = set.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (set, cluster)
    });
    eprintln!("protected topologies up in {:?}", started.elapsed());
    let backend = Backend::start("echo");

    credentials_work(&Protected::Sentinel(&set), &backend).await;
    credentials_work(&Protected::Cluster(&cluster), &backend).await;

    // the wrong password: nothing is admitted (on_redis_error: deny), Redis errors counted
    let wrong = set.url().replace(PASSWORD_IN_URL, ":wrong@");
    assert_ne!(wrong, set.url());
    let gw = GatewayProcess::start(BIN, &config(&backend, &wrong));
    let c = client();
    let t = token("wrong-password");
    let errors = || gw.metric("gateway_redis_errors_total", &[("op", "mirror")]);
    let since = Instant::now();
    let (mut answers, mut first, mut last) = (0u32, None, 0.0);
    // every answer a clean 503, for at least a second and until the mirror's error
    // count has grown past the first one seen
    while since.elapsed() < Duration::from_secs(15) {
        let resp = c.get(gw.url("/p/x")).bearer_auth(&t).send().await.unwrap();
        let s = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (s, body["error"].as_str().unwrap_or("")),
            (503, "revocation_unavailable"),
            "with the wrong password\n{}",
            gw.log()
        );
        answers += 1;
        last = errors();
        match first {
            None if last >= 1.0 => first = Some(last),
            Some(f) if last > f && since.elapsed() >= Duration::from_secs(1) => break,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gw.log().contains("AuthenticationFailed"),
        "the data node refused the password\n{}",
        gw.log()
    );
    assert!(
        first.is_some_and(|f| last > f),
        "gateway_redis_errors_total{{op=\"mirror\"}} did not grow ({first:?} -> {last})\n{}",
        gw.log()
    );
    eprintln!(
        "wrong password: {answers} requests, all 503 revocation_unavailable, over {:?}; \
         mirror errors {first:?} -> {last}",
        since.elapsed()
    );
    eprintln!("credentials test took {:?}", started.elapsed());
}
