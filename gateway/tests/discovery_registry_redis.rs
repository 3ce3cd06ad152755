//! The registry with `store: redis`: two gateway processes share one registry in
//! a real `redis-server`; a registration, a DELETE or a TTL eviction at one is
//! seen by the other, and a Redis outage keeps the last known instances.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::config::{GatewayConfigBuilder, REGISTRY_TOKEN};
use testkit::{wait_until, Backend, GatewayProcess, RedisServer};

const T: Duration = Duration::from_secs(10);

fn config(redis_url: &str) -> String {
    GatewayConfigBuilder::shared_registry(redis_url).yaml()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn register(gw: &GatewayProcess, id: &str, b: &Backend, ttl: &str) -> u16 {
    client()
        .put(gw.admin_url(&format!("/registry/services/member/instances/{id}")))
        .bearer_auth(REGISTRY_TOKEN)
        .json(&json!({"address": "127.0.0.1", "port": b.port(), "metadata": {"weight": 2}, "ttl": ttl}))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn delete(gw: &GatewayProcess, id: &str) -> u16 {
    client()
        .delete(gw.admin_url(&format!("/registry/services/member/instances/{id}")))
        .bearer_auth(REGISTRY_TOKEN)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn ids(gw: &GatewayProcess) -> Vec<String> {
    let v: Value = client()
        .get(gw.admin_url("/discovery"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut out: Vec<String> = v["services"]["member"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn who(gw: &GatewayProcess) -> Option<String> {
    let r = client().get(gw.url("/x")).send().ok()?;
    (r.status() == 200).then_some(())?;
    let v: Value = r.json().ok()?;
    v["backend"].as_str().map(str::to_string)
}

#[test]
fn two_gateways_share_one_registry_in_redis() {
    let mut redis = RedisServer::start();
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let one = GatewayProcess::start(env!("CARGO_BIN_EXE_gateway"), &config(&redis.url()));
    let two = GatewayProcess::start(env!("CARGO_BIN_EXE_gateway"), &config(&redis.url()));
    let id_a = format!("127.0.0.1:{}", a.port());
    let id_b = format!("127.0.0.1:{}", b.port());

    // registered at one gateway, routed by both (pub/sub makes it prompt)
    assert_eq!(register(&one, "a", &a, "30s"), 201);
    assert!(
        wait_until(T, || who(&two).as_deref() == Some("a")),
        "{}",
        two.log()
    );
    assert_eq!(who(&one).as_deref(), Some("a"));
    let listed: Value = client()
        .get(two.admin_url("/registry/services"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["store"], "redis");
    assert_eq!(listed["services"]["member"][0]["metadata"]["weight"], 2);

    // renewing at the other gateway works: the record lives in Redis
    assert_eq!(register(&two, "a", &a, "30s"), 200);

    // b with a short TTL at gateway two; its eviction is seen by both
    assert_eq!(register(&two, "b", &b, "1s"), 201);
    let both = {
        let mut v = vec![id_a.clone(), id_b.clone()];
        v.sort();
        v
    };
    assert!(wait_until(T, || ids(&one) == both), "{}", one.log());
    assert!(wait_until(T, || ids(&one) == [id_a.clone()]
        && ids(&two) == [id_a.clone()]));

    // DELETE at gateway two removes it at gateway one
    assert_eq!(delete(&two, "a"), 200);
    assert!(wait_until(T, || ids(&one).is_empty()));
    assert_eq!(client().get(one.url("/x")).send().unwrap().status(), 503);

    // Redis goes down: writes are refused, the last known set keeps serving
    assert_eq!(register(&one, "b", &b, "30s"), 201);
    assert!(wait_until(T, || who(&two).as_deref() == Some("b")));
    redis.stop();
    assert_eq!(register(&one, "a", &a, "30s"), 503);
    assert!(wait_until(T, || two.metric(
        "gateway_discovery_errors_total",
        &[("service", "member"), ("source", "registry")]
    ) >= 1.0));
    assert_eq!(who(&two).as_deref(), Some("b"));
    assert_eq!(ids(&one), [id_b]);

    // Redis is back (empty: nothing persisted): instances register again
    redis.restart();
    assert!(wait_until(T, || register(&one, "a", &a, "30s") == 201));
    assert!(
        wait_until(T, || ids(&two) == [id_a.clone()]),
        "{}",
        two.log()
    );
}
