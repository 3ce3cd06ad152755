//! Dead letters, redelivery and replay on the Kafka event log, against a real
//! Kafka-protocol broker (`tansu`): the real consumer loop runs product's real stock
//! handler and inbox (SQLite in a temp dir) as consumer group `product` on
//! `order-events`. Built only with `--features kafka`; skipped (with a printed line)
//! when no `tansu` binary is on PATH.
#![cfg(feature = "kafka")]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backends::db::Db;
use backends::events::consume::{Handled, Handler, HandlerError};
use backends::events::kafka::{dlt_headers, KafkaLog};
use backends::events::{
    replay_dead_letters, run_consumer, ConsumerOptions, Envelope, EventLog, OrderCreated,
    SagaEvent, ALL_TOPICS, ORDER_EVENTS,
};
use backends::product::{self, StockHandler};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use support::tansu::Tansu;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long any one thing may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Applied,
    Duplicate,
    Failed,
}

/// Product's stock handler, recording what it did with each event id, and failing (as
/// a bug or an outage of the consumer would) for the order keys in `broken`.
struct Recording {
    inner: StockHandler,
    broken: Mutex<HashSet<String>>,
    seen: Mutex<Vec<(String, Outcome)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handler for Recording {
    fn handle(&self, event: &Envelope) -> Result<Handled, HandlerError> {
        let result = if lock(&self.broken).contains(&event.key) {
            Err(HandlerError(format!(
                "stock service broken for {}",
                event.key
            )))
        } else {
            self.inner.handle(event)
        };
        let outcome = match &result {
            Ok(Handled::Applied) => Outcome::Applied,
            Ok(Handled::Duplicate) => Outcome::Duplicate,
            Err(_) => Outcome::Failed,
        };
        lock(&self.seen).push((event.id.clone(), outcome));
        result
    }
}

impl Recording {
    fn outcomes(&self, id: &str) -> Vec<Outcome> {
        lock(&self.seen)
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, o)| *o)
            .collect()
    }

    fn count(&self, id: &str, outcome: Outcome) -> usize {
        self.outcomes(id).iter().filter(|o| **o == outcome).count()
    }
}

struct Fixture {
    broker: Tansu,
    log: Arc<KafkaLog>,
    db: Db,
    handler: Arc<Recording>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(test: &str) -> Option<Self> {
        let broker = Tansu::start(test)?;
        let log = KafkaLog::connect(&broker.brokers())
            .unwrap()
            .with_session_timeout(Duration::from_secs(6));
        log.create_topics(&ALL_TOPICS, 3).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = product::open(&dir.path().join("product.db")).unwrap();
        let handler = Arc::new(Recording {
            inner: StockHandler { db: db.clone() },
            broken: Mutex::default(),
            seen: Mutex::default(),
        });
        Some(Self {
            broker,
            log: Arc::new(log),
            db,
            handler,
            _dir: dir,
        })
    }

    /// Product's consumer (group `product`) as the service runs it; abort to stop.
    fn consumer(&self, max_attempts: u32) -> JoinHandle<()> {
        let opts = ConsumerOptions {
            topic: ORDER_EVENTS.into(),
            group: "product".into(),
            consumer: "product-test".into(),
            max_attempts,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        };
        let log: Arc<dyn EventLog> = self.log.clone();
        let handler: Arc<dyn Handler> = self.handler.clone();
        tokio::spawn(run_consumer(log, opts, handler, Arc::new(Notify::new())))
    }

    fn stock(&self, product_id: i64) -> i64 {
        self.db
            .with(|c| product::get_product(c, product_id))
            .unwrap()
            .unwrap()
            .stock
    }

    /// Wait until event `id` was handled with `outcome` `n` times.
    async fn wait_outcome(&self, id: &str, outcome: Outcome, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.handler.count(id, outcome) < n {
            assert!(
                Instant::now() < deadline,
                "{id} never {outcome:?} {n}x: {:?}",
                self.handler.outcomes(id)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first `n` dead letters of `order-events.dlt`: (key, headers, body).
    async fn dead_letters(&self, n: usize) -> Vec<(String, HashMap<String, String>, Value)> {
        let inspector: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.broker.brokers())
            .set("group.id", format!("inspect-{}", uuid::Uuid::now_v7()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        inspector.subscribe(&["order-events.dlt"]).unwrap();
        let deadline = Instant::now() + DEADLINE;
        let mut letters = Vec::new();
        while letters.len() < n {
            assert!(Instant::now() < deadline, "only {letters:?}");
            let Ok(msg) = tokio::time::timeout(Duration::from_secs(1), inspector.recv()).await
            else {
                continue;
            };
            let msg = msg.unwrap();
            let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
            let headers = msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                            (h.key.to_string(), v.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let body = serde_json::from_slice(msg.payload().unwrap_or_default()).unwrap();
            letters.push((key, headers, body));
        }
        letters
    }
}

/// Stop a consumer and wait until it closed (committing its offsets): before the broker
/// goes away, or the close would wait for it.
async fn stop(consumer: JoinHandle<()>) {
    consumer.abort();
    let _ = consumer.await;
}

fn order_created(order_id: &str, product_id: i64, quantity: i64) -> Envelope {
    Envelope::new(&SagaEvent::OrderCreated(OrderCreated {
        order_id: order_id.into(),
        user_id: "u-1".into(),
        product_id,
        quantity,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_go_to_the_dead_letter_topic_and_the_consumer_moves_on() {
    let Some(fx) = Fixture::start("poison_events_go_to_the_dead_letter_topic").await else {
        return;
    };
    // An order-created whose payload is not an order, bytes that are not JSON, then a
    // good event: all with one key, so one partition, read in this order.
    let poison = Envelope::raw("order-created", "order-x", json!({"orderId": 7}));
    fx.log.publish(ORDER_EVENTS, &poison).await.unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", fx.broker.brokers())
        .create()
        .unwrap();
    let garbage = FutureRecord::to(ORDER_EVENTS)
        .key("order-x")
        .payload("{not json");
    producer
        .send(garbage, Duration::from_secs(10))
        .await
        .unwrap();
    let good = order_created("order-x", 2, 1);
    fx.log.publish(ORDER_EVENTS, &good).await.unwrap();

    let consumer = fx.consumer(3);
    fx.wait_outcome(&good.id, Outcome::Applied, 1).await;
    assert_eq!(fx.stock(2), 99);
    // Tried three times, then parked (the garbage never reached the handler).
    assert_eq!(fx.handler.outcomes(&poison.id), vec![Outcome::Failed; 3]);

    let letters = fx.dead_letters(2).await;
    let (key, headers, body) = &letters[0];
    assert_eq!(key, "order-x");
    assert_eq!(headers["event-type"], "dead-letter");
    assert_eq!(headers[dlt_headers::SOURCE_TOPIC], ORDER_EVENTS);
    assert_eq!(headers[dlt_headers::GROUP], "product");
    assert_eq!(headers[dlt_headers::ATTEMPTS], "3");
    assert_eq!(headers[dlt_headers::EVENT_ID], poison.id);
    assert!(
        headers[dlt_headers::ERROR].contains("order-created"),
        "{headers:?}"
    );
    assert!(headers[dlt_headers::POSITION].contains('/'), "{headers:?}");
    assert_eq!(body["payload"]["event"]["id"], poison.id.as_str());
    assert_eq!(body["payload"]["attempts"], 3);

    let (key, headers, body) = &letters[1];
    assert_eq!(key, "order-x");
    assert_eq!(headers[dlt_headers::ATTEMPTS], "3");
    assert!(!headers.contains_key(dlt_headers::EVENT_ID), "{headers:?}");
    assert!(
        headers[dlt_headers::ERROR].contains("cannot decode"),
        "{headers:?}"
    );
    assert_eq!(body["payload"]["event"], "{not json");
    stop(consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_applied_once_across_restarts() {
    let Some(fx) = Fixture::start("a_redelivered_event_is_applied_once_across_restarts").await
    else {
        return;
    };
    let first = order_created("order-1", 2, 2);
    fx.log.publish(ORDER_EVENTS, &first).await.unwrap();

    // An instance applies it and dies before its offset is committed.
    let mut sub = fx
        .log
        .subscribe(ORDER_EVENTS, "product", "doomed")
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let record = loop {
        assert!(Instant::now() < deadline, "order-created never arrived");
        if let Some(r) = sub.poll().await.unwrap().into_iter().next() {
            break r;
        }
    };
    let event = Envelope::from_json(&record.body).unwrap();
    assert_eq!(event.id, first.id);
    assert_eq!(fx.handler.handle(&event).unwrap(), Handled::Applied);
    drop(sub);

    // The producer sends it again too (e.g. its outbox relay crashed after the send).
    fx.log.publish(ORDER_EVENTS, &first).await.unwrap();
    let second = order_created("order-1", 2, 1);
    fx.log.publish(ORDER_EVENTS, &second).await.unwrap();

    // The group's next instance gets both copies, and the inbox knows them.
    let consumer = fx.consumer(3);
    fx.wait_outcome(&second.id, Outcome::Applied, 1).await;
    assert_eq!(
        fx.handler.outcomes(&first.id),
        vec![Outcome::Applied, Outcome::Duplicate, Outcome::Duplicate]
    );
    stop(consumer).await;

    // Restart in the same group; one more copy arrives meanwhile.
    fx.log.publish(ORDER_EVENTS, &first).await.unwrap();
    let third = order_created("order-3", 2, 4);
    fx.log.publish(ORDER_EVENTS, &third).await.unwrap();
    let consumer = fx.consumer(3);
    fx.wait_outcome(&third.id, Outcome::Applied, 1).await;
    fx.wait_outcome(&first.id, Outcome::Duplicate, 3).await;

    for e in [&first, &second, &third] {
        assert_eq!(fx.handler.count(&e.id, Outcome::Applied), 1, "{}", e.id);
    }
    // order-1 reserved 2 (its second order-created is a new event for an order
    // that already has a reservation), order-3 reserved 4.
    assert_eq!(fx.stock(2), 100 - 2 - 4);
    stop(consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_dead_letter_topic_applies_a_fixed_event_once() {
    let Some(fx) = Fixture::start("replaying_the_dead_letter_topic").await else {
        return;
    };
    lock(&fx.handler.broken).insert("order-r".into());
    let event = order_created("order-r", 2, 5);
    fx.log.publish(ORDER_EVENTS, &event).await.unwrap();
    let consumer = fx.consumer(2);
    let letters = fx.dead_letters(1).await;
    assert_eq!(letters[0].1[dlt_headers::EVENT_ID], event.id);
    assert_eq!(fx.handler.outcomes(&event.id), vec![Outcome::Failed; 2]);
    assert_eq!(fx.stock(2), 100);

    // Fixed: the replay puts it back on order-events, where the consumer applies it.
    lock(&fx.handler.broken).clear();
    let idle = Duration::from_secs(6);
    let report = replay_dead_letters(&*fx.log, ORDER_EVENTS, "replay", idle)
        .await
        .unwrap();
    assert_eq!(report.replayed, 1, "{report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
    fx.wait_outcome(&event.id, Outcome::Applied, 1).await;
    assert_eq!(fx.stock(2), 95);

    // The same replay group again: nothing left to replay.
    let again = replay_dead_letters(&*fx.log, ORDER_EVENTS, "replay", idle)
        .await
        .unwrap();
    assert_eq!(again.replayed, 0, "{again:?}");

    // A new group replays it once more: the inbox recognises it.
    let twice = replay_dead_letters(&*fx.log, ORDER_EVENTS, "replay-2", idle)
        .await
        .unwrap();
    assert_eq!(twice.replayed, 1, "{twice:?}");
    fx.wait_outcome(&event.id, Outcome::Duplicate, 1).await;
    assert_eq!(fx.handler.count(&event.id, Outcome::Applied), 1);
    assert_eq!(fx.stock(2), 95);
    stop(consumer).await;
}
