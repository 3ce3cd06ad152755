//! The transactional outbox: a service writes its state change and the events it
//! causes in one SQLite transaction; a relay task publishes queued events in order and
//! deletes them once the log has them (at least once; consumers dedupe by event id).

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Transaction};
use tokio::sync::Notify;

use super::{Envelope, EventLog, SagaEvent};
use crate::db::{Db, DbError};

/// Queue `event` for publishing, inside the caller's transaction.
pub fn enqueue(tx: &Transaction<'_>, event: &SagaEvent) -> rusqlite::Result<Envelope> {
    let envelope = Envelope::new(event);
    tx.execute(
        "INSERT INTO outbox (topic, key, body) VALUES (?1, ?2, ?3)",
        params![event.topic(), envelope.key, envelope.to_json()],
    )?;
    Ok(envelope)
}

/// Publish queued events forever: on `wake`, and every half second as a safety net.
pub async fn run_relay(db: Db, log: Arc<dyn EventLog>, wake: Arc<Notify>) {
    loop {
        match drain(&db, &*log).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(published = n, "outbox drained"),
            Err(e) => tracing::warn!(error = %e, "outbox relay: will retry"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Publish everything queued, oldest first. Stops at the first failure (order matters).
pub async fn drain(db: &Db, log: &dyn EventLog) -> Result<usize, String> {
    let mut published = 0;
    loop {
        let rows: Vec<(i64, String, String)> = db
            .call(|c| {
                let mut stmt =
                    c.prepare("SELECT seq, topic, body FROM outbox ORDER BY seq LIMIT 100")?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .map_err(|e: DbError| e.to_string())?;
        if rows.is_empty() {
            return Ok(published);
        }
        for (seq, topic, body) in rows {
            match Envelope::from_json(body.as_bytes()) {
                Ok(envelope) => log
                    .publish(&topic, &envelope)
                    .await
                    .map_err(|e| e.to_string())?,
                Err(e) => tracing::error!(seq, error = %e, "dropping unreadable outbox row"),
            }
            db.call(move |c| Ok(c.execute("DELETE FROM outbox WHERE seq = ?1", params![seq])?))
                .await
                .map_err(|e| e.to_string())?;
            published += 1;
        }
    }
}
