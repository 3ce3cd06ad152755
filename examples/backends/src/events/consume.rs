//! The consumer loop every saga participant runs: read a batch, hand each event to the
//! service's handler (idempotent by event id through the inbox table), retry a failure
//! with exponential backoff, and after `max_attempts` failures publish the message to
//! the dead-letter topic and move on. A record is acknowledged only once it has been
//! applied, recognised as a duplicate, or dead-lettered: delivery is at least once.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Transaction};
use thiserror::Error;
use tokio::sync::Notify;

use super::{dead_letter_topic, Envelope, EventLog, Record};

/// The `type` of a dead-letter envelope.
pub const DEAD_LETTER: &str = "dead-letter";

/// What a handler did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// State changed (and maybe events were queued in the outbox).
    Applied,
    /// The event id was already in the inbox: nothing changed.
    Duplicate,
}

/// Why a handler could not apply an event (retried, then dead-lettered).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl From<rusqlite::Error> for HandlerError {
    fn from(e: rusqlite::Error) -> Self {
        HandlerError(format!("sqlite: {e}"))
    }
}

impl From<super::EventError> for HandlerError {
    fn from(e: super::EventError) -> Self {
        HandlerError(e.to_string())
    }
}

/// A service's reaction to the events of one topic. Runs on the blocking pool.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, event: &Envelope) -> Result<Handled, HandlerError>;
}

/// Whether `event_id` was processed already (call inside the handler's transaction).
pub fn inbox_seen(tx: &Transaction<'_>, event_id: &str) -> rusqlite::Result<bool> {
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM inbox WHERE event_id = ?1",
        params![event_id],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// Record `event` as processed, in the same transaction as its effects.
pub fn inbox_mark(tx: &Transaction<'_>, event: &Envelope, topic: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO inbox (event_id, topic, processed_at) VALUES (?1, ?2, ?3)",
        params![event.id, topic, crate::db::now_unix()],
    )?;
    Ok(())
}

/// Where to consume from and how hard to try.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub topic: String,
    pub group: String,
    pub consumer: String,
    /// Failures before the message goes to the dead-letter topic (>= 1).
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl ConsumerOptions {
    /// Delay before retry number `attempt` (1-based).
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Consume `opts.topic` forever (abort the task to stop). `outbox` is woken after an
/// event was applied, so the events it queued are published promptly.
pub async fn run_consumer(
    log: Arc<dyn EventLog>,
    opts: ConsumerOptions,
    handler: Arc<dyn Handler>,
    outbox: Arc<Notify>,
) {
    let mut wait = Duration::from_millis(200);
    loop {
        let mut sub = match log
            .subscribe(&opts.topic, &opts.group, &opts.consumer)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(topic = %opts.topic, error = %e, "cannot subscribe, retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        wait = Duration::from_millis(200);
        tracing::info!(topic = %opts.topic, group = %opts.group, "consuming");
        loop {
            let batch = match sub.poll().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(topic = %opts.topic, error = %e, "poll failed, resubscribing");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            };
            for record in batch {
                if process(&*log, &opts, &handler, &record).await {
                    outbox.notify_one();
                }
                if let Err(e) = sub.ack(&record).await {
                    // Not acknowledged: it comes back and the inbox dedupes it.
                    tracing::warn!(topic = %opts.topic, error = %e, "ack failed");
                }
            }
        }
    }
}

/// Apply one record with retries; dead-letter it when every attempt failed.
/// Returns whether state changed. Only returns once the record may be acknowledged.
async fn process(
    log: &dyn EventLog,
    opts: &ConsumerOptions,
    handler: &Arc<dyn Handler>,
    record: &Record,
) -> bool {
    let mut last_error = String::new();
    for attempt in 1..=opts.max_attempts.max(1) {
        match apply(handler, record).await {
            Ok(Handled::Applied) => return true,
            Ok(Handled::Duplicate) => {
                tracing::info!(topic = %opts.topic, position = %record.position, "duplicate event ignored");
                return false;
            }
            Err(e) => {
                tracing::warn!(topic = %opts.topic, position = %record.position, attempt, error = %e, "event failed");
                last_error = e.0;
                if attempt < opts.max_attempts {
                    tokio::time::sleep(opts.backoff_for(attempt)).await;
                }
            }
        }
    }
    let letter = dead_letter(opts, record, &last_error);
    let dlt = dead_letter_topic(&opts.topic);
    let mut wait = opts.backoff;
    // The record is acknowledged only after its dead letter is safely written.
    while let Err(e) = log.publish(&dlt, &letter).await {
        tracing::warn!(topic = %dlt, error = %e, "cannot write dead letter, retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(opts.max_backoff);
    }
    tracing::error!(topic = %opts.topic, position = %record.position, dead_letter_topic = %dlt, error = %last_error, "event dead-lettered");
    false
}

async fn apply(handler: &Arc<dyn Handler>, record: &Record) -> Result<Handled, HandlerError> {
    let event = Envelope::from_json(&record.body)?;
    let handler = Arc::clone(handler);
    tokio::task::spawn_blocking(move || handler.handle(&event))
        .await
        .map_err(|e| HandlerError(format!("handler task failed: {e}")))?
}

/// The dead letter: the original message (parsed when possible) and why it failed.
fn dead_letter(opts: &ConsumerOptions, record: &Record, error: &str) -> Envelope {
    let original = serde_json::from_slice::<serde_json::Value>(&record.body).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&record.body).into())
    });
    Envelope::raw(
        DEAD_LETTER,
        &record.key,
        serde_json::json!({
            "sourceTopic": opts.topic,
            "position": record.position,
            "group": opts.group,
            "attempts": opts.max_attempts,
            "error": error,
            "event": original,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let opts = ConsumerOptions {
            topic: "t".into(),
            group: "g".into(),
            consumer: "c".into(),
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        assert_eq!(opts.backoff_for(1), Duration::from_millis(100));
        assert_eq!(opts.backoff_for(2), Duration::from_millis(200));
        assert_eq!(opts.backoff_for(3), Duration::from_millis(350));
        assert_eq!(opts.backoff_for(60), Duration::from_millis(350));
    }

    #[test]
    fn dead_letter_keeps_the_original_and_the_cause() {
        let opts = ConsumerOptions {
            topic: "order-events".into(),
            group: "product".into(),
            consumer: "c".into(),
            max_attempts: 3,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        };
        let record = Record {
            topic: "order-events".into(),
            position: "1-0".into(),
            key: "o-9".into(),
            body: b"{not json".to_vec(),
        };
        let letter = dead_letter(&opts, &record, "boom");
        assert_eq!(letter.kind, "dead-letter");
        assert_eq!(letter.key, "o-9");
        assert_eq!(letter.payload["attempts"], 3);
        assert_eq!(letter.payload["error"], "boom");
        assert_eq!(letter.payload["event"], "{not json");
    }
}
