//! The registry's Redis store (control plane), shared by gateway replicas.
//!
//! Layout under `key_prefix` (default `gateway:registry`):
//! - `{prefix}:services`: a set of service names;
//! - `{prefix}:svc:{service}`: a hash, instance id -> the instance record as JSON
//!   (with its wall-clock expiry, `expires_unix_ms`);
//! - `{prefix}:events`: a pub/sub channel; every write publishes the service name.
//!
//! On a Redis Cluster the prefix is wrapped in a hash tag (`{gateway:registry}:...`),
//! so every key of the registry is in one slot and its scripts and transactions,
//! which touch several of them, stay atomic.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use plugins::redis_link::{RedisConn, RedisTarget};
use redis::AsyncCommands;

use super::{LimitError, Record, RegistryError, RegistryLimits};
use crate::upstream::discovery::unix_ms;

/// Deletes an instance only if the stored copy has expired, so an eviction never
/// removes a record another gateway has just renewed.
const EVICT_IF_EXPIRED: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local ok, rec = pcall(cjson.decode, v)
if (not ok) or (tonumber(rec['expires_unix_ms']) or 0) <= tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"#;

/// Stores a registration unless it is new and would pass a cap. Runs as one
/// script, so two gateways registering at once cannot both take the last slot.
/// Expired records are purged before counting (they would otherwise hold slots
/// until a sweep). Returns 1 (stored), -1 (instances cap), -2 (services cap).
/// Builds other services' keys from the prefix: meant for a single Redis, not a cluster.
const PUT_CAPPED: &str = r#"
local now = tonumber(ARGV[6])
local function purge(key)
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local ok, rec = pcall(cjson.decode, all[i + 1])
    if (not ok) or (tonumber(rec['expires_unix_ms']) or 0) <= now then
      redis.call('HDEL', key, all[i])
    end
  end
  return redis.call('HLEN', key)
end
local renew = false
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  local ok, rec = pcall(cjson.decode, existing)
  renew = ok and (tonumber(rec['expires_unix_ms']) or 0) > now
end
if not renew then
  local n = purge(KEYS[1])
  if n >= tonumber(ARGV[4]) then return -1 end
  if n == 0 then
    local others = redis.call('SCARD', KEYS[2]) - redis.call('SISMEMBER', KEYS[2], ARGV[3])
    if others >= tonumber(ARGV[5]) then
      local live = 0
      for _, s in ipairs(redis.call('SMEMBERS', KEYS[2])) do
        if s ~= ARGV[3] then
          if purge(ARGV[8] .. ':svc:' .. s) > 0 then
            live = live + 1
          else
            redis.call('SREM', KEYS[2], s)
          end
        end
      end
      if live >= tonumber(ARGV[5]) then return -2 end
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[7], ARGV[3])
return 1
"#;

const TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct RedisStore {
    target: RedisTarget,
    conn: tokio::sync::Mutex<Option<RedisConn>>,
    prefix: String,
}

fn store_err(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Store(e.to_string())
}

impl RedisStore {
    pub(super) fn new(url: &str, prefix: &str) -> Result<Self, RegistryError> {
        let target = RedisTarget::parse(url)
            .map_err(|e| RegistryError::Invalid(format!("admin.registry.redis_url: {e}")))?;
        let prefix = if target.is_cluster() {
            format!("{{{prefix}}}")
        } else {
            prefix.to_string()
        };
        Ok(RedisStore {
            target,
            conn: tokio::sync::Mutex::new(None),
            prefix,
        })
    }

    fn services_key(&self) -> String {
        format!("{}:services", self.prefix)
    }
    fn service_key(&self, service: &str) -> String {
        format!("{}:svc:{service}", self.prefix)
    }
    fn channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// A connection (made on first use, so a gateway starts while Redis is down).
    async fn conn(&self) -> Result<RedisConn, RegistryError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.target.connection(TIMEOUT).map_err(store_err)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn run<T, F>(&self, f: impl FnOnce(RedisConn) -> F) -> Result<T, RegistryError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let c = self.conn().await?;
        tokio::time::timeout(TIMEOUT, f(c))
            .await
            .map_err(|_| store_err("Redis did not answer in time"))?
            .map_err(store_err)
    }

    pub(super) async fn put(&self, record: &Record) -> Result<(), RegistryError> {
        let json = serde_json::to_string(record).map_err(store_err)?;
        let (key, set, channel) = (
            self.service_key(&record.service),
            self.services_key(),
            self.channel(),
        );
        let (service, id) = (record.service.clone(), record.id.clone());
        self.run(move |mut c| async move {
            redis::pipe()
                .atomic()
                .hset(&key, &id, &json)
                .ignore()
                .sadd(&set, &service)
                .ignore()
                .publish(&channel, &service)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Store a registration, refusing a new one beyond `limits` (see [`PUT_CAPPED`]).
    pub(super) async fn put_capped(
        &self,
        record: &Record,
        limits: &RegistryLimits,
    ) -> Result<(), RegistryError> {
        let json = serde_json::to_string(record).map_err(store_err)?;
        let (key, set, channel, prefix) = (
            self.service_key(&record.service),
            self.services_key(),
            self.channel(),
            self.prefix.clone(),
        );
        let (service, id, now) = (record.service.clone(), record.id.clone(), unix_ms());
        let (max_instances, max_services) = (limits.max_instances_per_service, limits.max_services);
        let outcome: i64 = self
            .run(move |mut c| async move {
                redis::Script::new(PUT_CAPPED)
                    .key(&key)
                    .key(&set)
                    .arg(&id)
                    .arg(&json)
                    .arg(&service)
                    .arg(max_instances)
                    .arg(max_services)
                    .arg(now)
                    .arg(&channel)
                    .arg(&prefix)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match outcome {
            -1 => Err(LimitError::TooManyInstances {
                service: record.service.clone(),
                max: max_instances,
            }
            .into()),
            -2 => Err(LimitError::TooManyServices { max: max_services }.into()),
            _ => Ok(()),
        }
    }

    pub(super) async fn get(
        &self,
        service: &str,
        id: &str,
    ) -> Result<Option<Record>, RegistryError> {
        let (key, id) = (self.service_key(service), id.to_string());
        let raw: Option<String> = self
            .run(move |mut c| async move { c.hget(&key, &id).await })
            .await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Remove an instance; true when it was there.
    pub(super) async fn delete(&self, service: &str, id: &str) -> Result<bool, RegistryError> {
        let (key, channel, id, service) = (
            self.service_key(service),
            self.channel(),
            id.to_string(),
            service.to_string(),
        );
        let (removed,): (i64,) = self
            .run(move |mut c| async move {
                redis::pipe()
                    .atomic()
                    .hdel(&key, &id)
                    .publish(&channel, &service)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(removed > 0)
    }

    /// Remove an instance whose TTL lapsed (unless it was renewed meanwhile).
    pub(super) async fn evict(&self, record: &Record) -> Result<bool, RegistryError> {
        let key = self.service_key(&record.service);
        let (id, now, channel, service) = (
            record.id.clone(),
            unix_ms(),
            self.channel(),
            record.service.clone(),
        );
        let removed: i64 = self
            .run(move |mut c| async move {
                let n: i64 = redis::Script::new(EVICT_IF_EXPIRED)
                    .key(&key)
                    .arg(&id)
                    .arg(now)
                    .invoke_async(&mut c)
                    .await?;
                if n > 0 {
                    let _: i64 = c.publish(&channel, &service).await?;
                }
                Ok(n)
            })
            .await?;
        Ok(removed > 0)
    }

    /// Every live instance in the store; expired ones are evicted on the way.
    pub(super) async fn load_all(
        &self,
    ) -> Result<BTreeMap<String, BTreeMap<String, Record>>, RegistryError> {
        let set = self.services_key();
        let names: Vec<String> = self
            .run(move |mut c| async move { c.smembers(&set).await })
            .await?;
        let mut pipe = redis::pipe();
        for n in &names {
            pipe.hgetall(self.service_key(n));
        }
        let hashes: Vec<BTreeMap<String, String>> = if names.is_empty() {
            Vec::new()
        } else {
            self.run(move |mut c| async move { pipe.query_async(&mut c).await })
                .await?
        };
        let now = unix_ms();
        let mut out = BTreeMap::new();
        let mut expired = Vec::new();
        for (name, hash) in names.into_iter().zip(hashes) {
            let mut live = BTreeMap::new();
            for (id, raw) in hash {
                match serde_json::from_str::<Record>(&raw) {
                    Ok(r) if r.expires_unix_ms > now => {
                        live.insert(id, r);
                    }
                    Ok(r) => expired.push(r),
                    Err(e) => {
                        tracing::warn!(service = %name, %id, error = %e, "registry: unreadable record in Redis; skipped")
                    }
                }
            }
            if !live.is_empty() {
                out.insert(name, live);
            }
        }
        for r in &expired {
            if let Ok(true) = self.evict(r).await {
                tracing::warn!(service = %r.service, id = %r.id, "registry: TTL lapsed, instance evicted");
            }
        }
        Ok(out)
    }

    /// Forward change notices from other gateways to `wake` (reconnects with backoff).
    pub(super) async fn listen(self: std::sync::Arc<Self>, wake: tokio::sync::mpsc::Sender<()>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let pubsub = async {
                let node = self.target.subscriber(TIMEOUT).await?;
                node.get_async_pubsub().await
            };
            match tokio::time::timeout(TIMEOUT, pubsub).await {
                Ok(Ok(mut pubsub)) => match pubsub.subscribe(self.channel()).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(200);
                        // re-read once: changes may have happened while unsubscribed
                        let _ = wake.try_send(());
                        let mut messages = pubsub.on_message();
                        while messages.next().await.is_some() {
                            let _ = wake.try_send(());
                        }
                        tracing::debug!("registry: change notices from Redis ended; resubscribing");
                    }
                    Err(e) => tracing::debug!(error = %e, "registry: cannot subscribe to Redis"),
                },
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "registry: cannot connect to Redis for change notices")
                }
                Err(_) => {
                    tracing::debug!("registry: connecting to Redis for change notices timed out")
                }
            }
            if wake.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
