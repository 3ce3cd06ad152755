//! Unit tests of the in-memory registry: registration, renewal, TTL rules, weights.

use serde_json::json;

use super::*;

fn req(port: u16, ttl: serde_json::Value, metadata: serde_json::Value) -> RegisterRequest {
    serde_json::from_value(
        json!({"address": "127.0.0.1", "port": port, "ttl": ttl, "metadata": metadata}),
    )
    .unwrap()
}

fn registry() -> Arc<Registry> {
    Registry::new(RegistrySettings::default()).unwrap()
}

#[tokio::test]
async fn register_renew_heartbeat_and_deregister() {
    let r = registry();
    let mut changes = r.subscribe();
    let (rec, created) = r
        .register("member", "m-1", req(8081, json!("30s"), json!({})))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(rec.resolved, "127.0.0.1:8081".parse().unwrap());
    assert_eq!(rec.ttl_ms, 30_000);
    assert!(changes.has_changed().unwrap());
    changes.mark_unchanged();

    let (again, created) = r
        .register("member", "m-1", req(8081, json!(10), json!({})))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.registered_unix_ms, rec.registered_unix_ms);
    assert_eq!(again.ttl_ms, 10_000);
    assert!(
        !changes.has_changed().unwrap(),
        "a renewal with the same address is no change"
    );

    let beat = r.heartbeat("member", "m-1").await.unwrap();
    assert!(beat.expires_unix_ms >= again.expires_unix_ms);
    assert!(matches!(
        r.heartbeat("member", "nope").await,
        Err(RegistryError::NotFound { .. })
    ));

    assert_eq!(r.endpoints("member").unwrap().len(), 1);
    assert!(r.deregister("member", "m-1").await.unwrap());
    assert!(!r.deregister("member", "m-1").await.unwrap());
    assert!(r.endpoints("member").unwrap().is_empty());
    assert!(r.services().is_empty());
}

#[tokio::test]
async fn ttl_and_names_are_checked() {
    let r = registry();
    for bad in [
        json!("soon"),
        json!(0),
        json!("0s"),
        json!("2h"),
        json!(true),
    ] {
        let e = r
            .register("member", "m", req(1, bad.clone(), json!({})))
            .await;
        assert!(matches!(e, Err(RegistryError::Invalid(_))), "{bad}");
    }
    let e = r
        .register("mem ber", "m", req(1, json!("5s"), json!({})))
        .await;
    assert!(matches!(e, Err(RegistryError::Invalid(_))));
    let e = r
        .register("member", "m", req(0, json!("5s"), json!({})))
        .await;
    assert!(matches!(e, Err(RegistryError::Invalid(_))));
    let (rec, _) = r
        .register("member", "m", req(1, serde_json::Value::Null, json!({})))
        .await
        .unwrap();
    assert_eq!(rec.ttl_ms, 30_000, "default_ttl applies");
}

#[tokio::test]
async fn weights_come_from_metadata() {
    let r = registry();
    r.register("s", "a", req(1, json!("5s"), json!({"weight": 3})))
        .await
        .unwrap();
    r.register("s", "b", req(2, json!("5s"), json!({"weight": "7"})))
        .await
        .unwrap();
    r.register("s", "c", req(3, json!("5s"), json!({"weight": "heavy"})))
        .await
        .unwrap();
    r.register("s", "d", req(4, json!("5s"), json!({"weight": 1_000_000})))
        .await
        .unwrap();
    let weights: Vec<u32> = r.endpoints("s").unwrap().iter().map(|e| e.weight).collect();
    assert_eq!(weights, [3, 7, 1, 10_000]);
}

#[test]
fn lapsed_records_are_not_live() {
    let rec = Record {
        service: "s".into(),
        id: "a".into(),
        address: "127.0.0.1".into(),
        port: 1,
        resolved: "127.0.0.1:1".parse().unwrap(),
        metadata: Default::default(),
        ttl_ms: 1000,
        registered_unix_ms: 0,
        renewed_unix_ms: 0,
        expires_unix_ms: 5,
    };
    assert!(!rec.live(6));
    assert!(rec.live(4));
}

#[test]
fn ipv4_is_preferred_for_host_names() {
    use crate::upstream::discovery::prefer_ipv4;
    let v6: SocketAddr = "[::1]:80".parse().unwrap();
    let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
    assert_eq!(prefer_ipv4([v6, v4].into_iter()), Some(v4));
    assert_eq!(prefer_ipv4([v6].into_iter()), Some(v6));
    assert_eq!(prefer_ipv4(std::iter::empty()), None);
}

#[tokio::test]
async fn host_names_are_resolved_at_registration() {
    let r = registry();
    let mut q = req(8081, json!("5s"), json!({}));
    q.address = "localhost".into();
    let (rec, _) = r.register("s", "h", q).await.unwrap();
    assert!(rec.resolved.ip().is_loopback());
    assert_eq!(rec.resolved.port(), 8081);
    assert_eq!(rec.address, "localhost");
    let mut bad = req(1, json!("5s"), json!({}));
    bad.address = "no-such-host.invalid".into();
    assert!(matches!(
        r.register("s", "x", bad).await,
        Err(RegistryError::Invalid(_))
    ));
}

#[tokio::test]
async fn caps_count_live_instances_only() {
    let r = registry();
    let limits = RegistryLimits {
        max_services: 1,
        max_instances_per_service: 1,
        ..RegistryLimits::default()
    };
    r.register_with("s", "a", req(1, json!("5s"), json!({})), &limits)
        .await
        .unwrap();
    let full = r
        .register_with("s", "b", req(2, json!("5s"), json!({})), &limits)
        .await;
    assert!(matches!(
        full,
        Err(RegistryError::Limit(LimitError::TooManyInstances { .. }))
    ));
    let other = r
        .register_with("t", "a", req(3, json!("5s"), json!({})), &limits)
        .await;
    assert!(matches!(
        other,
        Err(RegistryError::Limit(LimitError::TooManyServices { .. }))
    ));
    // a lapsed record (not yet swept) holds no slot
    r.with_entries(|e| {
        if let Some(rec) = e.get_mut("s").and_then(|m| m.get_mut("a")) {
            rec.expires_unix_ms = 0;
        }
    });
    r.register_with("t", "a", req(3, json!("5s"), json!({})), &limits)
        .await
        .unwrap();
}
