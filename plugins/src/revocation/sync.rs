//! The mirror's sync task (background, control-plane runtime): subscribe to the
//! revocation channel (and optionally keyspace notifications), resync with SCAN
//! on connect and periodically, ping to notice dead links, and reconnect with
//! backoff. While disconnected the mirror reports itself unsynced.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use redis::aio::ConnectionLike;
use redis::{RedisError, Value};

use super::keys::KeySchema;
use super::mirror::{Mirror, Record};
use crate::auth::metrics::METRICS;
use crate::clock::unix_ms;
use crate::redis_link::{self, RedisConn, RedisTarget};

/// What the sync task needs.
pub struct SyncSettings {
    /// Where Redis is: commands follow the primary (Sentinel) or the slots
    /// (Cluster); each session subscribes on the node the target names then.
    pub target: RedisTarget,
    pub schema: KeySchema,
    pub keyspace_notifications: bool,
    pub resync_interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("the subscription stream ended")]
    StreamEnded,
}

const PING_EVERY: Duration = Duration::from_secs(1);
/// At most one attempt a second while Redis is away: a failover is over in seconds,
/// and protected routes wait for the mirror (one connection attempt a second per
/// gateway costs Redis nothing).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Messages applied per batch (one pipelined round trip).
const BATCH: usize = 256;

/// Run forever: connect, sync, follow; on any failure mark unsynced and retry.
pub async fn run(mirror: Arc<Mirror>, s: Arc<SyncSettings>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let started = Instant::now();
        let err = session(&mirror, &s).await;
        mirror.set_synced(false);
        METRICS.redis_errors.with_label_values(&["mirror"]).inc();
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(50);
        }
        tracing::warn!(error = %err, retry_in = ?backoff, "revocation mirror lost Redis; protected routes apply on_redis_error until it is back");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn within<T>(
    t: Duration,
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, SyncError> {
    match tokio::time::timeout(t, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(SyncError::Timeout(what)),
    }
}

async fn session(mirror: &Mirror, s: &SyncSettings) -> SyncError {
    match session_inner(mirror, s).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn session_inner(
    mirror: &Mirror,
    s: &SyncSettings,
) -> Result<std::convert::Infallible, SyncError> {
    // a new session asks again where the primary is (a Sentinel failover) and
    // reads through a fresh handle
    let mut conn = s.target.connection(s.timeout)?;
    let node = within(s.timeout * 4, "connect", s.target.subscriber(s.timeout)).await?;
    let pubsub = within(s.timeout * 4, "subscribe", node.get_async_pubsub()).await?;
    let (mut sink, mut stream) = pubsub.split();
    within(
        s.timeout * 4,
        "subscribe",
        sink.subscribe(&s.schema.channel),
    )
    .await?;
    if s.keyspace_notifications {
        for p in [s.schema.token.pattern(), s.schema.subject.pattern()] {
            within(
                s.timeout * 4,
                "psubscribe",
                sink.psubscribe(format!("__keyspace@*__:{p}")),
            )
            .await?;
        }
    }
    // subscribed first, then read everything: nothing written in between is missed
    resync(mirror, s, &mut conn).await?;
    mirror.set_synced(true);
    tracing::info!(
        tokens = mirror.len().0,
        subjects = mirror.len().1,
        "revocation mirror synced"
    );

    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_resync = tokio::time::Instant::now() + s.resync_interval;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(first) = msg else { return Err(SyncError::StreamEnded) };
                let mut keys = Vec::with_capacity(8);
                let mut full = false;
                collect(&first, &mut keys, &mut full);
                while keys.len() < BATCH {
                    match stream.next().now_or_never() {
                        Some(Some(m)) => collect(&m, &mut keys, &mut full),
                        Some(None) => return Err(SyncError::StreamEnded),
                        None => break,
                    }
                }
                if !keys.is_empty() {
                    let records = read_keys(s, &mut conn, &keys).await?;
                    mirror.apply(records);
                }
                if full {
                    resync(mirror, s, &mut conn).await?;
                    next_resync = tokio::time::Instant::now() + s.resync_interval;
                }
            }
            _ = ping.tick() => {
                within(s.timeout * 4, "ping", sink.ping::<Value>()).await?;
            }
            _ = tokio::time::sleep_until(next_resync) => {
                resync(mirror, s, &mut conn).await?;
                next_resync = tokio::time::Instant::now() + s.resync_interval;
            }
        }
    }
}

/// The key a message is about; a message naming no revocation key asks for a full resync.
fn collect(msg: &redis::Msg, keys: &mut Vec<String>, full: &mut bool) {
    let channel = msg.get_channel_name();
    let key = if let Some(rest) = channel.strip_prefix("__keyspace@") {
        // __keyspace@<db>__:<key>
        rest.split_once("__:").map(|(_, k)| k.to_string())
    } else {
        msg.get_payload::<String>().ok()
    };
    match key {
        Some(k) if !k.is_empty() => keys.push(k),
        _ => *full = true,
    }
}

/// Read the current state of `keys` in one pipelined round trip.
async fn read_keys(
    s: &SyncSettings,
    conn: &mut RedisConn,
    keys: &[String],
) -> Result<Vec<Record>, SyncError> {
    let mut pipe = redis::pipe();
    let mut wanted = Vec::with_capacity(keys.len());
    for k in keys {
        if let Some(id) = s.schema.token.extract(k) {
            pipe.cmd("PTTL").arg(k);
            wanted.push((true, id.to_string()));
        } else if let Some(sub) = s.schema.subject.extract(k) {
            pipe.cmd("PTTL").arg(k).cmd("GET").arg(k);
            wanted.push((false, sub.to_string()));
        } else {
            tracing::debug!(key = %k, "revocation message names an unknown key; ignored");
        }
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<Value> = within(s.timeout * 4, "read", pipe.query_async(conn)).await?;
    Ok(to_records(wanted, values, unix_ms()))
}

fn to_records(wanted: Vec<(bool, String)>, values: Vec<Value>, now: u64) -> Vec<Record> {
    let mut it = values.into_iter();
    let mut out = Vec::with_capacity(wanted.len());
    for (is_token, id) in wanted {
        let ttl = it
            .next()
            .and_then(|v| redis::from_redis_value::<i64>(v).ok())
            .unwrap_or(-2);
        let expires_ms = (ttl >= 0).then(|| now + ttl as u64);
        if is_token {
            out.push(if ttl == -2 {
                Record::TokenGone { id }
            } else {
                Record::Token { id, expires_ms }
            });
        } else {
            let value = it
                .next()
                .and_then(|v| redis::from_redis_value::<Option<String>>(v).ok())
                .flatten();
            match value.as_deref() {
                None => out.push(Record::SubjectGone { sub: id }),
                Some(_) if ttl == -2 => out.push(Record::SubjectGone { sub: id }),
                Some(v) => match parse_unix(v) {
                    Some(before) => out.push(Record::Subject {
                        sub: id,
                        before,
                        expires_ms,
                    }),
                    None => {
                        tracing::warn!(sub = %id, "revoked-before value is not a unix time; ignored")
                    }
                },
            }
        }
    }
    out
}

/// A unix time in seconds (integer or fractional); milliseconds (13 digits) are accepted too.
pub fn parse_unix(s: &str) -> Option<f64> {
    let v: f64 = s.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    // 1e11 s is year 5138: anything larger is a millisecond timestamp
    Some(if v > 1e11 { v / 1000.0 } else { v })
}

/// Read every revocation key (SCAN on every primary: on one server or the Sentinel
/// primary through the session's own connection, on a Cluster through one connection
/// to each primary) and replace the mirror's state.
async fn resync(mirror: &Mirror, s: &SyncSettings, conn: &mut RedisConn) -> Result<(), SyncError> {
    let start = mirror.begin_resync();
    let mut keys: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    if s.target.is_cluster() {
        let primaries = within(s.timeout * 4, "topology", s.target.primaries(s.timeout)).await?;
        for node in primaries {
            let mut node_conn = redis_link::connect(&node, s.timeout).await?;
            scan(s, &mut node_conn, &mut keys, &mut seen).await?;
        }
    } else {
        scan(s, conn, &mut keys, &mut seen).await?;
    }
    let mut records = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(512) {
        records.extend(read_keys(s, conn, chunk).await?);
    }
    mirror.finish_resync(start, records, unix_ms());
    Ok(())
}

/// Add the revocation keys of the node behind `conn` (SCAN) not `seen` yet to `keys`.
async fn scan(
    s: &SyncSettings,
    conn: &mut impl ConnectionLike,
    keys: &mut Vec<String>,
    seen: &mut HashSet<String>,
) -> Result<(), SyncError> {
    for pattern in [s.schema.token.pattern(), s.schema.subject.pattern()] {
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = within(
                s.timeout * 4,
                "scan",
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(conn),
            )
            .await?;
            keys.extend(batch.into_iter().filter(|k| seen.insert(k.clone())));
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times() {
        assert_eq!(parse_unix("1700000000"), Some(1_700_000_000.0));
        assert_eq!(parse_unix("1700000000.5"), Some(1_700_000_000.5));
        assert_eq!(parse_unix("1700000000500"), Some(1_700_000_000.5));
        assert_eq!(parse_unix("soon"), None);
        assert_eq!(parse_unix("-1"), None);
    }

    #[test]
    fn records_from_replies() {
        let wanted = vec![
            (true, "a".to_string()),
            (true, "b".to_string()),
            (false, "42".to_string()),
        ];
        let values = vec![
            Value::Int(1000),
            Value::Int(-2),
            Value::Int(-1),
            Value::BulkString(b"123".to_vec()),
        ];
        let r = to_records(wanted, values, 5);
        assert_eq!(
            r,
            vec![
                Record::Token {
                    id: "a".into(),
                    expires_ms: Some(1005)
                },
                Record::TokenGone { id: "b".into() },
                Record::Subject {
                    sub: "42".into(),
                    before: 123.0,
                    expires_ms: None
                },
            ]
        );
    }
}
