//! The saga's event log: the shared, versioned event envelope, the saga's events, and
//! the [`EventLog`] trait with its two implementations (Redis Streams by default, Kafka
//! behind the `kafka` feature).
//!
//! Topics: `order-events` (order-created, order-cancelled; consumed by product) and
//! `stock-events` (stock-reserved, stock-rejected; consumed by order). Every event is
//! keyed by its order id so one order's events stay in order. A message that keeps
//! failing goes to `<topic>.dlt`; [`replay`] puts its events back once the cause is fixed.

pub mod consume;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod outbox;
pub mod redis_streams;
pub mod replay;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use consume::{run_consumer, ConsumerOptions, Handled, HandlerError};
pub use replay::{replay_dead_letters, ReplayReport};

/// order -> product: order-created, order-cancelled.
pub const ORDER_EVENTS: &str = "order-events";
/// product -> order: stock-reserved, stock-rejected.
pub const STOCK_EVENTS: &str = "stock-events";
/// Every topic the saga uses, with its dead-letter topics.
pub const ALL_TOPICS: [&str; 4] = [
    ORDER_EVENTS,
    STOCK_EVENTS,
    "order-events.dlt",
    "stock-events.dlt",
];

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlt")
}

/// The envelope version this code writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// The envelope every event travels in, whatever the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per event; consumers dedupe on it.
    pub id: String,
    /// e.g. `order-created`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Partition key: the order id.
    pub key: String,
    /// RFC 3339 UTC time of the event.
    pub time: String,
    pub version: u32,
    pub payload: serde_json::Value,
}

impl Envelope {
    /// Wrap a saga event in a fresh envelope.
    pub fn new(event: &SagaEvent) -> Self {
        Self::raw(event.kind(), event.order_id(), event.payload())
    }

    /// An envelope with any type and payload (dead letters, tests).
    pub fn raw(kind: &str, key: &str, payload: serde_json::Value) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            kind: kind.to_string(),
            key: key.to_string(),
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            version: ENVELOPE_VERSION,
            payload,
        }
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and a JSON value always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        let env: Envelope =
            serde_json::from_slice(bytes).map_err(|e| EventError::Decode(e.to_string()))?;
        if env.version != ENVELOPE_VERSION {
            return Err(EventError::Decode(format!(
                "unsupported envelope version {} (this service reads {ENVELOPE_VERSION})",
                env.version
            )));
        }
        Ok(env)
    }

    /// The typed saga event inside.
    pub fn saga_event(&self) -> Result<SagaEvent, EventError> {
        let p = self.payload.clone();
        let bad = |e: serde_json::Error| EventError::Decode(format!("{}: {e}", self.kind));
        Ok(match self.kind.as_str() {
            "order-created" => SagaEvent::OrderCreated(serde_json::from_value(p).map_err(bad)?),
            "order-cancelled" => SagaEvent::OrderCancelled(serde_json::from_value(p).map_err(bad)?),
            "stock-reserved" => SagaEvent::StockReserved(serde_json::from_value(p).map_err(bad)?),
            "stock-rejected" => SagaEvent::StockRejected(serde_json::from_value(p).map_err(bad)?),
            other => return Err(EventError::Decode(format!("unknown event type {other:?}"))),
        })
    }
}

/// An order was placed: product should reserve stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    pub order_id: String,
    pub user_id: String,
    pub product_id: i64,
    pub quantity: i64,
}

/// An order was cancelled: product should release what it reserved for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    pub order_id: String,
    pub product_id: i64,
    pub quantity: i64,
}

/// Stock was reserved: the order is confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockReserved {
    pub order_id: String,
    pub product_id: i64,
    pub quantity: i64,
}

/// Stock could not be reserved: the order is rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockRejected {
    pub order_id: String,
    pub product_id: i64,
    /// `insufficient_stock` or `unknown_product`.
    pub reason: String,
}

/// The events of the order saga.
#[derive(Debug, Clone, PartialEq)]
pub enum SagaEvent {
    OrderCreated(OrderCreated),
    OrderCancelled(OrderCancelled),
    StockReserved(StockReserved),
    StockRejected(StockRejected),
}

impl SagaEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            SagaEvent::OrderCreated(_) => "order-created",
            SagaEvent::OrderCancelled(_) => "order-cancelled",
            SagaEvent::StockReserved(_) => "stock-reserved",
            SagaEvent::StockRejected(_) => "stock-rejected",
        }
    }

    /// The topic this event is published on.
    pub fn topic(&self) -> &'static str {
        match self {
            SagaEvent::OrderCreated(_) | SagaEvent::OrderCancelled(_) => ORDER_EVENTS,
            SagaEvent::StockReserved(_) | SagaEvent::StockRejected(_) => STOCK_EVENTS,
        }
    }

    pub fn order_id(&self) -> &str {
        match self {
            SagaEvent::OrderCreated(e) => &e.order_id,
            SagaEvent::OrderCancelled(e) => &e.order_id,
            SagaEvent::StockReserved(e) => &e.order_id,
            SagaEvent::StockRejected(e) => &e.order_id,
        }
    }

    fn payload(&self) -> serde_json::Value {
        let v = match self {
            SagaEvent::OrderCreated(e) => serde_json::to_value(e),
            SagaEvent::OrderCancelled(e) => serde_json::to_value(e),
            SagaEvent::StockReserved(e) => serde_json::to_value(e),
            SagaEvent::StockRejected(e) => serde_json::to_value(e),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Error)]
pub enum EventError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("cannot decode event: {0}")]
    Decode(String),
    #[error("event log not available: {0}")]
    Unavailable(String),
}

/// One message read from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    /// Position in the log (a stream entry id, or `partition/offset`).
    pub position: String,
    pub key: String,
    /// The raw envelope JSON (undecodable bytes are dead-lettered, not dropped).
    pub body: Vec<u8>,
}

/// An append-only, keyed event log with consumer groups.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Append `event` to `topic`, keyed by `event.key`.
    async fn publish(&self, topic: &str, event: &Envelope) -> Result<(), EventError>;

    /// Join consumer group `group` on `topic` as `consumer`. A new group starts at
    /// the beginning of the topic, so events published before a service first
    /// started are not lost.
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Box<dyn Subscription>, EventError>;
}

/// A consumer's view of one topic.
#[async_trait]
pub trait Subscription: Send {
    /// Wait (up to about a second) for records; an empty batch is normal.
    async fn poll(&mut self) -> Result<Vec<Record>, EventError>;

    /// Mark `record` done for this group: it will not be delivered again.
    async fn ack(&mut self, record: &Record) -> Result<(), EventError>;
}

/// Build the event log the settings ask for.
pub async fn connect(
    settings: &crate::config::ServiceSettings,
) -> Result<Arc<dyn EventLog>, EventError> {
    match &settings.event_log {
        crate::config::EventLogKind::Redis => Ok(Arc::new(
            redis_streams::RedisStreams::connect(&settings.redis_url).await?,
        )),
        #[cfg(feature = "kafka")]
        crate::config::EventLogKind::Kafka { brokers } => {
            Ok(Arc::new(kafka::KafkaLog::connect(brokers)?))
        }
        #[cfg(not(feature = "kafka"))]
        crate::config::EventLogKind::Kafka { .. } => Err(EventError::Unavailable(
            "EVENT_LOG=kafka needs the samples built with `--features kafka`".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_keys_by_order() {
        let ev = SagaEvent::OrderCreated(OrderCreated {
            order_id: "o-1".into(),
            user_id: "u-1".into(),
            product_id: 2,
            quantity: 3,
        });
        let env = Envelope::new(&ev);
        assert_eq!(env.key, "o-1");
        assert_eq!(env.kind, "order-created");
        let back = Envelope::from_json(env.to_json().as_bytes()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.saga_event().unwrap(), ev);
        assert_eq!(ev.topic(), ORDER_EVENTS);
    }

    #[test]
    fn bad_events_are_decode_errors() {
        assert!(Envelope::from_json(b"not json").is_err());
        let mut env = Envelope::raw("order-created", "o", serde_json::json!({"x": 1}));
        assert!(env.saga_event().is_err());
        env.version = 2;
        assert!(Envelope::from_json(env.to_json().as_bytes()).is_err());
        let env = Envelope::raw("mystery", "o", serde_json::json!({}));
        assert!(env.saga_event().is_err());
    }
}
