//! Lookup mode: ask Redis on every request (one pipelined round trip: `EXISTS`
//! the token's key, `GET` the subject's cut-off), bounded by a timeout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::Value;

use super::keys::{KeySchema, TokenIds};
use super::sync::parse_unix;
use super::Verdict;
use crate::auth::metrics::METRICS;
use crate::redis_link::{RedisConn, RedisTarget};

/// Answers reused for `ttl` (bounded: cleared when full).
struct AnswerCache {
    ttl: Duration,
    map: Mutex<HashMap<String, (Instant, Verdict)>>,
}

const CACHE_MAX: usize = 50_000;

/// A Redis connection used per request.
pub struct Lookup {
    conn: RedisConn,
    schema: KeySchema,
    timeout: Duration,
    cache: Option<AnswerCache>,
}

impl Lookup {
    /// Connects lazily (on the first request) and reconnects with backoff by itself.
    /// Call within a tokio runtime context.
    pub fn new(
        target: RedisTarget,
        schema: KeySchema,
        timeout: Duration,
        cache_ttl: Duration,
    ) -> Result<Self, redis::RedisError> {
        let conn = target.connection(timeout)?;
        let cache = (!cache_ttl.is_zero()).then(|| AnswerCache {
            ttl: cache_ttl,
            map: Mutex::new(HashMap::new()),
        });
        Ok(Self {
            conn,
            schema,
            timeout,
            cache,
        })
    }

    /// Check one token, reusing a recent answer when `lookup_cache` allows.
    pub async fn check(&self, ids: &TokenIds<'_>, sub: Option<&str>, iat: Option<f64>) -> Verdict {
        let token_id = ids.first.as_ref();
        let Some(cache) = &self.cache else {
            return self.ask(ids, sub, iat).await;
        };
        {
            let map = cache.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, v)) = map.get(token_id) {
                if at.elapsed() < cache.ttl {
                    return *v;
                }
            }
        }
        let v = self.ask(ids, sub, iat).await;
        if v != Verdict::Unknown {
            self.remember(token_id, v);
        }
        v
    }

    /// Record an answer in the cache (a revocation made here must not be hidden
    /// by a `Clear` cached a moment before).
    pub fn remember(&self, token_id: &str, v: Verdict) {
        let Some(cache) = &self.cache else { return };
        let mut map = cache.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(token_id.to_string(), (Instant::now(), v));
    }

    async fn ask(&self, ids: &TokenIds<'_>, sub: Option<&str>, iat: Option<f64>) -> Verdict {
        let mut pipe = redis::pipe();
        // EXISTS of several keys counts those present: any spelling revoked refuses
        let exists = pipe.cmd("EXISTS");
        for id in ids.iter() {
            exists.arg(self.schema.token.render(id));
        }
        if let Some(sub) = sub {
            pipe.cmd("GET").arg(self.schema.subject.render(sub));
        }
        let mut conn = self.conn.clone();
        let reply =
            tokio::time::timeout(self.timeout, pipe.query_async::<Vec<Value>>(&mut conn)).await;
        let values = match reply {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                METRICS.redis_errors.with_label_values(&["lookup"]).inc();
                tracing::debug!(error = %e, "revocation lookup failed");
                return Verdict::Unknown;
            }
            Err(_) => {
                METRICS.redis_errors.with_label_values(&["lookup"]).inc();
                return Verdict::Unknown;
            }
        };
        let mut it = values.into_iter();
        let exists = it
            .next()
            .and_then(|v| redis::from_redis_value::<i64>(v).ok())
            .unwrap_or(0);
        if exists > 0 {
            return Verdict::Revoked;
        }
        let before = it
            .next()
            .and_then(|v| redis::from_redis_value::<Option<String>>(v).ok())
            .flatten()
            .and_then(|s| parse_unix(&s));
        match before {
            Some(b) if iat.is_none_or(|iat| iat < b) => Verdict::Revoked,
            _ => Verdict::Clear,
        }
    }
}
