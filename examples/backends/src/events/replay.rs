//! Replaying a dead-letter topic once the cause of the failures is fixed: every dead
//! letter of `<topic>.dlt` whose original event could be parsed is published again to
//! its source topic with its original key and event id, where the consuming service
//! handles it like any other event. Its inbox makes this safe to overdo: an event that
//! was in fact applied already is a duplicate and changes nothing.
//!
//! The replay reads the dead-letter topic as a consumer group of its own and
//! acknowledges each letter once it is republished, so running it again with the same
//! group replays only letters that arrived since; a new group replays them all.

use std::time::{Duration, Instant};

use super::consume::DEAD_LETTER;
use super::{dead_letter_topic, Envelope, EventError, EventLog};

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Events published again to the source topic.
    pub replayed: usize,
    /// Letters whose original could not be replayed (not JSON, an unknown envelope
    /// version, not a dead letter): they stay on the dead-letter topic for a person.
    pub skipped: Vec<String>,
}

/// Replay the dead letters of `topic` (e.g. `order-events`), reading `<topic>.dlt` as
/// consumer group `group`. Stops once no letter arrived for `idle` (the wait for the
/// first one included, which covers joining the group).
pub async fn replay_dead_letters(
    log: &dyn EventLog,
    topic: &str,
    group: &str,
    idle: Duration,
) -> Result<ReplayReport, EventError> {
    let dlt = dead_letter_topic(topic);
    let mut sub = log.subscribe(&dlt, group, group).await?;
    let mut report = ReplayReport::default();
    let mut last = Instant::now();
    while last.elapsed() < idle {
        for record in sub.poll().await? {
            last = Instant::now();
            match original(&record.body, topic) {
                Ok(event) => {
                    // Acknowledged only once republished: a failed publish stops the
                    // replay and the letter is read again next time.
                    log.publish(topic, &event).await?;
                    tracing::info!(topic, id = %event.id, position = %record.position, "dead letter replayed");
                    report.replayed += 1;
                }
                Err(why) => {
                    tracing::warn!(topic = %dlt, position = %record.position, why = %why, "dead letter not replayable");
                    report.skipped.push(format!("{}: {why}", record.position));
                }
            }
            sub.ack(&record).await?;
        }
    }
    Ok(report)
}

/// The original event inside a dead letter of `topic`, or why it cannot be replayed.
fn original(body: &[u8], topic: &str) -> Result<Envelope, String> {
    let letter = Envelope::from_json(body).map_err(|e| e.to_string())?;
    if letter.kind != DEAD_LETTER {
        return Err(format!("a {:?}, not a dead letter", letter.kind));
    }
    if letter.payload["sourceTopic"] != topic {
        return Err(format!(
            "dead letter of {}, not of {topic}",
            letter.payload["sourceTopic"]
        ));
    }
    match &letter.payload["event"] {
        serde_json::Value::Object(_) => {
            Envelope::from_json(letter.payload["event"].to_string().as_bytes())
                .map_err(|e| e.to_string())
        }
        _ => Err("the original message was not an event envelope".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn letter(event: serde_json::Value) -> Vec<u8> {
        Envelope::raw(
            DEAD_LETTER,
            "o-1",
            json!({"sourceTopic": "order-events", "attempts": 3, "error": "boom", "event": event}),
        )
        .to_json()
        .into_bytes()
    }

    #[test]
    fn the_original_keeps_its_id_and_key() {
        let ev = Envelope::raw("order-created", "o-1", json!({"orderId": "o-1"}));
        let back = original(&letter(serde_json::to_value(&ev).unwrap()), "order-events").unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn unreplayable_letters_say_why() {
        assert!(original(&letter(json!("{not json")), "order-events")
            .unwrap_err()
            .contains("not an event envelope"));
        let ev = Envelope::raw("order-created", "o-1", json!({}));
        assert!(
            original(&letter(serde_json::to_value(&ev).unwrap()), "stock-events")
                .unwrap_err()
                .contains("not of stock-events")
        );
        let plain = Envelope::raw("order-created", "o-1", json!({})).to_json();
        assert!(original(plain.as_bytes(), "order-events")
            .unwrap_err()
            .contains("not a dead letter"));
        assert!(original(b"garbage", "order-events").is_err());
    }
}
