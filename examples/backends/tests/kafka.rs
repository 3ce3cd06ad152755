//! The Kafka event log against a real Kafka-protocol broker (`tansu`, in memory, on a
//! free loopback port): key order and committed offsets, then the whole saga through
//! the gateway with `EVENT_LOG=kafka`. Built only with `--features kafka`; skipped
//! (with a printed line) when no `tansu` binary is on PATH.
#![cfg(feature = "kafka")]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use backends::events::kafka::KafkaLog;
use backends::events::{Envelope, EventLog, ALL_TOPICS};
use serde_json::json;
use support::tansu::Tansu;
use support::{Options, Stack};

async fn kafka_log(broker: &Tansu) -> KafkaLog {
    let log = KafkaLog::connect(&broker.brokers()).unwrap();
    log.create_topics(&ALL_TOPICS, 3).await.unwrap();
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_log_keeps_each_keys_order_and_commits_offsets() {
    let Some(broker) = Tansu::start("kafka_log_keeps_each_keys_order_and_commits_offsets") else {
        return;
    };
    let log = kafka_log(&broker).await;
    for seq in 0..10 {
        for key in ["order-a", "order-b", "order-c"] {
            let e = Envelope::raw("test", key, json!({"seq": seq}));
            log.publish("order-events", &e).await.unwrap();
        }
    }

    let mut sub = log.subscribe("order-events", "g1", "c1").await.unwrap();
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.values().map(Vec::len).sum::<usize>() < 30 {
        assert!(Instant::now() < deadline, "only got {seen:?}");
        for r in sub.poll().await.unwrap() {
            let e = Envelope::from_json(&r.body).unwrap();
            assert_eq!(r.key, e.key);
            seen.entry(e.key)
                .or_default()
                .push(e.payload["seq"].as_i64().unwrap());
            sub.ack(&r).await.unwrap();
        }
    }
    for (key, seqs) in &seen {
        assert_eq!(seqs, &(0..10).collect::<Vec<_>>(), "{key} out of order");
    }
    drop(sub); // closing commits the stored offsets

    // The same group again: only what was published since.
    let fresh = Envelope::raw("test", "order-a", json!({"seq": 10}));
    log.publish("order-events", &fresh).await.unwrap();
    let mut sub = log.subscribe("order-events", "g1", "c1").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the new record never arrived");
        if let Some(r) = sub.poll().await.unwrap().into_iter().next() {
            let e = Envelope::from_json(&r.body).unwrap();
            assert_eq!(e.id, fresh.id, "an acknowledged record came back");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_runs_over_kafka() {
    let Some(broker) = Tansu::start("saga_runs_over_kafka") else {
        return;
    };
    drop(kafka_log(&broker).await);
    let stack = Stack::start_with(Options {
        env: vec![
            ("EVENT_LOG".into(), "kafka".into()),
            ("KAFKA_BROKERS".into(), broker.brokers()),
        ],
        ..Options::default()
    });
    let grace = stack.user("grace@example.com").await;
    stack.wait_auth_ready(&grace.access).await;
    let start = stack.stock(1).await;

    let (_, order) = stack
        .post(
            "/order/orders",
            &grace.access,
            json!({"productId": 1, "quantity": 3}),
        )
        .await;
    let id = order["id"].as_str().unwrap().to_string();
    assert_eq!(
        stack.settled_order(&grace.access, &id).await["status"],
        "CONFIRMED"
    );
    stack.wait_stock(1, start - 3).await;

    let (_, big) = stack
        .post(
            "/order/orders",
            &grace.access,
            json!({"productId": 1, "quantity": 999}),
        )
        .await;
    let big = stack
        .settled_order(&grace.access, big["id"].as_str().unwrap())
        .await;
    assert_eq!(big["status"], "REJECTED");

    let (status, _) = stack
        .post(
            &format!("/order/orders/{id}/cancel"),
            &grace.access,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    stack.wait_stock(1, start).await;
}
