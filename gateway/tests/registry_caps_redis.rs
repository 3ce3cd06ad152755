//! Registry caps with `store: redis`: two gateway processes sharing one real
//! `redis-server` take registrations at the same time, and the caps still hold for
//! the registry as a whole (they are counted inside Redis, in one script).

use std::time::Duration;

use serde_json::{json, Value};
use testkit::config::{
    ms, GatewayConfigBuilder, RegistryConfig, RegistryLimitsConfig, RegistryStore, ServiceBuilder,
};
use testkit::{GatewayProcess, RedisServer};

const TOKEN: &str = "caps-redis-token-0123456789abcdef";

fn config(redis_url: &str) -> String {
    GatewayConfigBuilder::in_front_of("member", ServiceBuilder::registry())
        .admin_with(|a| {
            a.token = Some(TOKEN.into());
            a.registry = Some(RegistryConfig {
                store: RegistryStore::Redis,
                redis_url: Some(redis_url.into()),
                sync_interval: ms(500),
                limits: RegistryLimitsConfig {
                    max_services: 2,
                    max_instances_per_service: 3,
                    ..RegistryLimitsConfig::default()
                },
                ..RegistryConfig::default()
            });
        })
        .yaml()
}

fn register(admin_url: String, port: u16) -> u16 {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .put(admin_url)
        .bearer_auth(TOKEN)
        .json(&json!({"address": "127.0.0.1", "port": port, "ttl": "60s"}))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn caps_hold_across_gateways_registering_at_once() {
    let redis = RedisServer::start();
    let one = GatewayProcess::start(env!("CARGO_BIN_EXE_gateway"), &config(&redis.url()));
    let two = GatewayProcess::start(env!("CARGO_BIN_EXE_gateway"), &config(&redis.url()));

    // 12 registrations of distinct instances, alternating gateways, all at once
    let handles: Vec<_> = (0..12u16)
        .map(|i| {
            let gw = if i % 2 == 0 { &one } else { &two };
            let url = gw.admin_url(&format!("/registry/services/member/instances/m{i}"));
            std::thread::spawn(move || register(url, 3000 + i))
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        9,
        "{statuses:?}"
    );
    assert_eq!(redis.cmd(&["HLEN", "gateway:registry:svc:member"]), ":3");

    // services: one more fits, the third is refused, whichever gateway is asked
    let url = |gw: &GatewayProcess, svc: &str| {
        gw.admin_url(&format!("/registry/services/{svc}/instances/a"))
    };
    assert_eq!(register(url(&two, "second"), 3100), 201);
    assert_eq!(register(url(&one, "third"), 3101), 409);
    assert_eq!(register(url(&two, "third"), 3101), 409);

    let refused = one.metric(
        "gateway_admin_refusals_total",
        &[("reason", "too_many_instances")],
    ) + two.metric(
        "gateway_admin_refusals_total",
        &[("reason", "too_many_instances")],
    );
    assert_eq!(refused, 9.0);
    let listed: Value = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(one.admin_url("/registry/services"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(listed["services"].get("third").is_none(), "{listed}");
}
