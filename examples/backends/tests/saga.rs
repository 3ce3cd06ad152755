//! The saga under duplicates and poison messages, on the default event log (Redis
//! Streams): a replayed event changes nothing, and a message that keeps failing is
//! retried, then parked on the dead-letter stream while the saga goes on.

mod support;

use std::time::Duration;

use redis::streams::StreamRangeReply;
use redis::AsyncCommands;
use serde_json::{json, Value};
use support::{Options, Stack};

/// Entries of a stream: (id, key, envelope JSON).
async fn entries(stack: &Stack, stream: &str) -> Vec<(String, String, Value)> {
    let mut conn = stack.redis().await;
    let reply: StreamRangeReply = conn.xrange_all(stream).await.unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            let key: String = e.get("key").unwrap_or_default();
            let event: String = e.get("event").unwrap_or_default();
            let json = serde_json::from_str(&event).unwrap_or(Value::String(event));
            (e.id.clone(), key, json)
        })
        .collect()
}

/// Wait until consumer group `group` has read and acknowledged `stream` up to `id`.
async fn wait_consumed(stack: &Stack, stream: &str, group: &str, id: &str) {
    let done = testkit::wait_until_async(Duration::from_secs(20), || async {
        let mut conn = stack.redis().await;
        let info: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(stream).await.unwrap();
        info.groups
            .iter()
            .any(|g| g.name == group && g.last_delivered_id == id && g.pending == 0)
    })
    .await;
    assert!(
        done,
        "{group} never consumed {stream} up to {id}\n{}",
        stack.logs()
    );
}

/// Append a raw entry as a publisher would; its stream id.
async fn append(stack: &Stack, stream: &str, key: &str, event: &str) -> String {
    let mut conn = stack.redis().await;
    conn.xadd(stream, "*", &[("key", key), ("event", event)])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_events_change_nothing() {
    let stack = Stack::start();
    let erin = stack.user("erin@example.com").await;
    stack.wait_auth_ready(&erin.access).await;
    let start = stack.stock(2).await;
    let (_, order) = stack
        .post(
            "/order/orders",
            &erin.access,
            json!({"productId": 2, "quantity": 4}),
        )
        .await;
    let id = order["id"].as_str().unwrap().to_string();
    assert_eq!(
        stack.settled_order(&erin.access, &id).await["status"],
        "CONFIRMED"
    );
    stack.wait_stock(2, start - 4).await;

    // The order's events are keyed by its id.
    let created = entries(&stack, "order-events").await;
    let (_, key, envelope) = created
        .iter()
        .find(|(_, _, e)| e["key"] == id.as_str() && e["type"] == "order-created")
        .expect("order-created on order-events")
        .clone();
    assert_eq!(key, id);
    assert_eq!(envelope["version"], 1);
    assert_eq!(envelope["payload"]["quantity"], 4);

    // Deliver order-created again: no second reservation, no second answer.
    let replay = append(&stack, "order-events", &key, &envelope.to_string()).await;
    wait_consumed(&stack, "order-events", "product", &replay).await;
    assert_eq!(stack.stock(2).await, start - 4);
    let answers = entries(&stack, "stock-events").await;
    let for_order: Vec<_> = answers.iter().filter(|(_, k, _)| *k == id).collect();
    assert_eq!(
        for_order.len(),
        1,
        "product answered a duplicate: {for_order:?}"
    );

    // Deliver stock-reserved again: the order stays as it is.
    let (_, _, reserved) = for_order[0].clone();
    let replay = append(&stack, "stock-events", &id, &reserved.to_string()).await;
    wait_consumed(&stack, "stock-events", "order", &replay).await;
    let (_, now) = stack
        .get(&format!("/order/orders/{id}"), &erin.access)
        .await;
    assert_eq!(now["status"], "CONFIRMED");

    // Cancel, then deliver order-cancelled twice more: stock is released once.
    let (status, _) = stack
        .post(
            &format!("/order/orders/{id}/cancel"),
            &erin.access,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    stack.wait_stock(2, start).await;
    let cancelled = entries(&stack, "order-events")
        .await
        .into_iter()
        .find(|(_, _, e)| e["key"] == id.as_str() && e["type"] == "order-cancelled")
        .expect("order-cancelled on order-events");
    append(&stack, "order-events", &id, &cancelled.2.to_string()).await;
    let last = append(&stack, "order-events", &id, &cancelled.2.to_string()).await;
    wait_consumed(&stack, "order-events", "product", &last).await;
    assert_eq!(stack.stock(2).await, start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_stream() {
    let stack = Stack::start_with(Options {
        max_attempts: 3,
        ..Options::default()
    });
    let frank = stack.user("frank@example.com").await;
    stack.wait_auth_ready(&frank.access).await;

    // An order-created whose payload is not an order, and bytes that are not JSON.
    let bad = json!({
        "id": "poison-1", "type": "order-created", "key": "order-x",
        "time": "2026-01-01T00:00:00Z", "version": 1, "payload": {"orderId": 7}
    });
    append(&stack, "order-events", "order-x", &bad.to_string()).await;
    let garbage = append(&stack, "order-events", "order-y", "{not json").await;
    wait_consumed(&stack, "order-events", "product", &garbage).await;

    let letters = entries(&stack, "order-events.dlt").await;
    assert_eq!(letters.len(), 2, "{letters:?}\n{}", stack.logs());
    let (_, key, first) = &letters[0];
    assert_eq!(key, "order-x");
    assert_eq!(first["type"], "dead-letter");
    assert_eq!(first["payload"]["sourceTopic"], "order-events");
    assert_eq!(first["payload"]["group"], "product");
    assert_eq!(first["payload"]["attempts"], 3);
    assert_eq!(first["payload"]["event"]["id"], "poison-1");
    assert!(first["payload"]["error"]
        .as_str()
        .unwrap()
        .contains("order-created"));
    assert_eq!(letters[1].2["payload"]["event"], "{not json");
    // Each was tried three times before it was parked.
    let tries = stack.product.log().matches("event failed").count();
    assert_eq!(tries, 6, "{}", stack.product.log());

    // The saga goes on behind them.
    let (_, order) = stack
        .post(
            "/order/orders",
            &frank.access,
            json!({"productId": 1, "quantity": 1}),
        )
        .await;
    let settled = stack
        .settled_order(&frank.access, order["id"].as_str().unwrap())
        .await;
    assert_eq!(settled["status"], "CONFIRMED");
}
