//! The default event log: Redis Streams. One stream per topic (`XADD` with fields
//! `key` and `event`), one consumer group per consuming service (`XREADGROUP`, `XACK`),
//! and pending entries of crashed consumers reclaimed with `XAUTOCLAIM`.
//!
//! A stream is a single ordered log (like a one-partition topic), so one order's
//! events are always seen in the order they were published.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::AsyncConnectionConfig;

use super::{Envelope, EventError, EventLog, Record, Subscription};

/// Entries kept per stream (approximate trim on every append).
const MAX_LEN: usize = 100_000;
/// How long `XREADGROUP` blocks waiting for new entries.
const BLOCK: Duration = Duration::from_millis(1000);
/// An entry pending this long at another consumer is taken over.
const RECLAIM_IDLE: Duration = Duration::from_secs(30);
const BATCH: usize = 32;

/// Redis Streams event log.
pub struct RedisStreams {
    client: redis::Client,
    conn: ConnectionManager,
}

impl RedisStreams {
    /// Connect (retrying in the background if Redis is down).
    pub async fn connect(url: &str) -> Result<Self, EventError> {
        let client = redis::Client::open(url)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let conn = client.get_connection_manager_with_config(cfg).await?;
        Ok(Self { client, conn })
    }
}

#[async_trait]
impl EventLog for RedisStreams {
    async fn publish(&self, topic: &str, event: &Envelope) -> Result<(), EventError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("XADD")
            .arg(topic)
            .arg("MAXLEN")
            .arg("~")
            .arg(MAX_LEN)
            .arg("*")
            .arg("key")
            .arg(&event.key)
            .arg("event")
            .arg(event.to_json())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Box<dyn Subscription>, EventError> {
        // A dedicated connection: XREADGROUP BLOCK would stall a shared one.
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(topic)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Box::new(StreamSubscription {
            conn,
            topic: topic.to_string(),
            group: group.to_string(),
            consumer: consumer.to_string(),
            own_pending_done: false,
            last_reclaim: Instant::now(),
        }))
    }
}

struct StreamSubscription {
    conn: MultiplexedConnection,
    topic: String,
    group: String,
    consumer: String,
    /// After a restart, first re-read what this consumer had read but not acknowledged.
    own_pending_done: bool,
    last_reclaim: Instant,
}

impl StreamSubscription {
    fn record(&self, entry: &StreamId) -> Record {
        let field = |name: &str| -> Vec<u8> {
            match entry.map.get(name) {
                Some(redis::Value::BulkString(b)) => b.clone(),
                Some(redis::Value::SimpleString(s)) => s.clone().into_bytes(),
                _ => Vec::new(),
            }
        };
        Record {
            topic: self.topic.clone(),
            position: entry.id.clone(),
            key: String::from_utf8_lossy(&field("key")).into_owned(),
            body: field("event"),
        }
    }

    async fn read(&mut self, from: &str, block: bool) -> Result<Vec<Record>, EventError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(BATCH);
        if block {
            cmd.arg("BLOCK").arg(BLOCK.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.topic).arg(from);
        let reply: Option<StreamReadReply> = cmd.query_async(&mut self.conn).await?;
        let entries = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
            .unwrap_or_default();
        Ok(entries.iter().map(|e| self.record(e)).collect())
    }

    async fn reclaim(&mut self) -> Result<Vec<Record>, EventError> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.topic)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(RECLAIM_IDLE.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(BATCH)
            .query_async(&mut self.conn)
            .await?;
        Ok(reply.claimed.iter().map(|e| self.record(e)).collect())
    }
}

#[async_trait]
impl Subscription for StreamSubscription {
    async fn poll(&mut self) -> Result<Vec<Record>, EventError> {
        if !self.own_pending_done {
            let pending = self.read("0", false).await?;
            if !pending.is_empty() {
                return Ok(pending);
            }
            self.own_pending_done = true;
        }
        if self.last_reclaim.elapsed() >= RECLAIM_IDLE {
            self.last_reclaim = Instant::now();
            let claimed = self.reclaim().await?;
            if !claimed.is_empty() {
                tracing::info!(topic = %self.topic, count = claimed.len(), "reclaimed pending events");
                return Ok(claimed);
            }
        }
        self.read(">", true).await
    }

    async fn ack(&mut self, record: &Record) -> Result<(), EventError> {
        let _: i64 = redis::cmd("XACK")
            .arg(&self.topic)
            .arg(&self.group)
            .arg(&record.position)
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }
}
