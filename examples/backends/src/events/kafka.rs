//! The Kafka event log (cargo feature `kafka`, librdkafka built from source): topics
//! with several partitions, records keyed by order id (one order's events land on one
//! partition, in order), one consumer group per consuming service, offsets stored
//! only after a record was handled or dead-lettered, then committed (at-least-once).
//! Every record carries `event-id` and `event-type` headers; a dead letter also says
//! where it came from and why in `dlt-*` headers, so the standard Kafka CLI can show
//! the cause without decoding the body.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::{Envelope, EventError, EventLog, Record, Subscription};

/// How long `poll` waits for a record before returning an empty batch.
const POLL: Duration = Duration::from_secs(1);

/// How long the group coordinator waits for a silent consumer before it moves the
/// consumer's partitions to another instance.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka event log.
pub struct KafkaLog {
    brokers: String,
    producer: FutureProducer,
    session_timeout: Duration,
}

fn kafka_err(e: impl std::fmt::Display) -> EventError {
    EventError::Kafka(e.to_string())
}

impl KafkaLog {
    /// A producer for `brokers` (`host:port,host:port`); connects lazily.
    pub fn connect(brokers: &str) -> Result<Self, EventError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // Wait for all in-sync replicas; retries must not reorder one key's
            // records, so at most one request in flight per connection.
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "1")
            .set("message.timeout.ms", "10000")
            .create()
            .map_err(kafka_err)?;
        Ok(Self {
            brokers: brokers.to_string(),
            producer,
            session_timeout: SESSION_TIMEOUT,
        })
    }

    /// Use `timeout` as the consumers' `session.timeout.ms` (default 10 s): shorter
    /// means a dead instance's partitions move sooner, at the price of more spurious
    /// rebalances on a slow network. The broker bounds it (`group.min.session.timeout.ms`).
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Create `topics` with `partitions` each (existing topics are left alone).
    pub async fn create_topics(&self, topics: &[&str], partitions: i32) -> Result<(), EventError> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .map_err(kafka_err)?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&new, &opts).await.map_err(kafka_err)? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(kafka_err(format!("create {topic}: {code}"))),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn publish(&self, topic: &str, event: &Envelope) -> Result<(), EventError> {
        let body = event.to_json();
        let record = FutureRecord::to(topic)
            .key(&event.key)
            .payload(&body)
            .headers(headers(event));
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(e, _)| kafka_err(e))
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Box<dyn Subscription>, EventError> {
        let c: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("client.id", consumer)
            // A new group reads the topic from the start. ack() stores the offset and
            // the client commits stored offsets every second and on close.
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(kafka_err)?;
        c.subscribe(&[topic]).map_err(kafka_err)?;
        Ok(Box::new(KafkaSubscription {
            consumer: c,
            topic: topic.to_string(),
        }))
    }
}

/// Header names of a dead letter (the body has the same facts, and the original event).
pub mod dlt_headers {
    pub const SOURCE_TOPIC: &str = "dlt-source-topic";
    pub const POSITION: &str = "dlt-position";
    pub const GROUP: &str = "dlt-group";
    pub const ATTEMPTS: &str = "dlt-attempts";
    pub const ERROR: &str = "dlt-error";
    /// The id of the dead-lettered event, when it could be parsed.
    pub const EVENT_ID: &str = "dlt-event-id";
}

/// `event-id` and `event-type` on every record; the `dlt-*` headers on a dead letter,
/// taken from its payload (see `consume::dead_letter`).
fn headers(event: &Envelope) -> OwnedHeaders {
    let mut h = OwnedHeaders::new()
        .insert(Header {
            key: "event-id",
            value: Some(event.id.as_str()),
        })
        .insert(Header {
            key: "event-type",
            value: Some(event.kind.as_str()),
        });
    if event.kind != super::consume::DEAD_LETTER {
        return h;
    }
    let p = &event.payload;
    let fields = [
        (dlt_headers::SOURCE_TOPIC, &p["sourceTopic"]),
        (dlt_headers::POSITION, &p["position"]),
        (dlt_headers::GROUP, &p["group"]),
        (dlt_headers::ATTEMPTS, &p["attempts"]),
        (dlt_headers::ERROR, &p["error"]),
        (dlt_headers::EVENT_ID, &p["event"]["id"]),
    ];
    for (key, value) in fields {
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        h = h.insert(Header {
            key,
            value: Some(text.as_str()),
        });
    }
    h
}

struct KafkaSubscription {
    consumer: StreamConsumer,
    topic: String,
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn poll(&mut self) -> Result<Vec<Record>, EventError> {
        let msg = match tokio::time::timeout(POLL, self.consumer.recv()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(Err(e)) => return Err(kafka_err(e)),
            Ok(Ok(m)) => m,
        };
        Ok(vec![Record {
            topic: msg.topic().to_string(),
            position: format!("{}/{}", msg.partition(), msg.offset()),
            key: msg
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            body: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        }])
    }

    async fn ack(&mut self, record: &Record) -> Result<(), EventError> {
        let (partition, offset) = record
            .position
            .split_once('/')
            .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)))
            .ok_or_else(|| kafka_err(format!("bad position {:?}", record.position)))?;
        // librdkafka stores offset + 1 (the next to read). The next record is handled
        // only after this one, so this never skips an unhandled record.
        self.consumer
            .store_offset(&self.topic, partition, offset)
            .map_err(kafka_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;
    use serde_json::json;

    fn pairs(h: &OwnedHeaders) -> Vec<(String, String)> {
        h.iter()
            .map(|h| {
                let v = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                (h.key.to_string(), v)
            })
            .collect()
    }

    #[test]
    fn dead_letters_say_where_why_and_how_often_in_headers() {
        let letter = Envelope::raw(
            super::super::consume::DEAD_LETTER,
            "o-1",
            json!({"sourceTopic": "order-events", "position": "2/41", "group": "product",
                   "attempts": 3, "error": "boom", "event": {"id": "e-1"}}),
        );
        let h = pairs(&headers(&letter));
        assert!(h.contains(&("event-type".into(), "dead-letter".into())));
        assert!(h.contains(&(dlt_headers::SOURCE_TOPIC.into(), "order-events".into())));
        assert!(h.contains(&(dlt_headers::POSITION.into(), "2/41".into())));
        assert!(h.contains(&(dlt_headers::GROUP.into(), "product".into())));
        assert!(h.contains(&(dlt_headers::ATTEMPTS.into(), "3".into())));
        assert!(h.contains(&(dlt_headers::ERROR.into(), "boom".into())));
        assert!(h.contains(&(dlt_headers::EVENT_ID.into(), "e-1".into())));
    }

    #[test]
    fn other_events_carry_only_their_id_and_type() {
        let ev = Envelope::raw("order-created", "o-1", json!({"event": {"id": "x"}}));
        let h = pairs(&headers(&ev));
        assert_eq!(
            h,
            vec![
                ("event-id".to_string(), ev.id.clone()),
                ("event-type".to_string(), "order-created".to_string()),
            ]
        );
    }
}
