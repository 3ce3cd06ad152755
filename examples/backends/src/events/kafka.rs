//! The Kafka event log (cargo feature `kafka`, librdkafka built from source): topics
//! with several partitions, records keyed by order id (one order's events land on one
//! partition, in order), one consumer group per consuming service, offsets stored
//! only after a record was handled or dead-lettered, then committed (at-least-once).

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::{Envelope, EventError, EventLog, Record, Subscription};

/// How long `poll` waits for a record before returning an empty batch.
const POLL: Duration = Duration::from_secs(1);

/// Kafka event log.
pub struct KafkaLog {
    brokers: String,
    producer: FutureProducer,
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
        })
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
        let record = FutureRecord::to(topic).key(&event.key).payload(&body);
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
            .set("session.timeout.ms", "10000")
            .create()
            .map_err(kafka_err)?;
        c.subscribe(&[topic]).map_err(kafka_err)?;
        Ok(Box::new(KafkaSubscription {
            consumer: c,
            topic: topic.to_string(),
        }))
    }
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
