//! The built-in service registry (control plane): instances register, renew and
//! deregister over the admin API (`admin::registry`), and are evicted when their TTL
//! lapses. `discovery: {type: registry}` services read it through
//! [`RegistrySource`], which wakes on every change.
//!
//! State is an in-memory map. With `admin.registry.store: redis` that map is a
//! mirror of Redis: writes go to Redis first, and every gateway re-reads Redis on
//! a change notice (pub/sub) and every `sync_interval`, so replicas share one registry.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

mod limits;
mod tasks;
#[cfg(test)]
mod tests;

mod redis_store;

use super::{clamp_weight, unix_ms, DiscoveryError};
use crate::upstream::Endpoint;
pub use limits::{parse_network, LimitError, RegistryLimits};
use redis_store::RedisStore;
pub use tasks::RegistrySource;

/// Where the registry keeps its state (`admin.registry`), chosen at start.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySettings {
    pub store: StoreSettings,
    /// Prefix of the Redis keys and of the change channel.
    pub key_prefix: String,
    /// TTL of a registration that names none.
    pub default_ttl: Duration,
    /// Longest TTL a registration may ask for.
    pub max_ttl: Duration,
    /// With Redis: how often each gateway re-reads the whole registry.
    pub sync_interval: Duration,
}

/// The registry's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// In this process only (one gateway).
    Memory,
    /// Shared by every replica through Redis.
    Redis { url: String },
}

impl Default for RegistrySettings {
    /// The documented defaults of `admin.registry` (the file's defaults read these).
    fn default() -> Self {
        RegistrySettings {
            store: StoreSettings::Memory,
            key_prefix: "gateway:registry".to_string(),
            default_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            sync_interval: Duration::from_secs(2),
        }
    }
}

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("instance {id:?} of {service:?} is not registered")]
    NotFound { service: String, id: String },
    #[error("registry store unavailable: {0}")]
    Store(String),
    #[error("{0}")]
    Limit(#[from] LimitError),
}

/// One registered instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub service: String,
    pub id: String,
    /// As registered (an IP or a host name).
    pub address: String,
    pub port: u16,
    /// The socket address traffic goes to (`address` resolved at registration).
    pub resolved: SocketAddr,
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    pub ttl_ms: u64,
    pub registered_unix_ms: u64,
    pub renewed_unix_ms: u64,
    pub expires_unix_ms: u64,
}

impl Record {
    /// The weight from `metadata.weight` (a number or a numeric string), default 1.
    pub fn weight(&self) -> u32 {
        let w = match self.metadata.get("weight") {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        clamp_weight(w.unwrap_or(1))
    }

    fn live(&self, now: u64) -> bool {
        self.expires_unix_ms > now
    }
}

/// The body of `PUT /registry/services/{service}/instances/{id}`.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisterRequest {
    pub address: String,
    pub port: u16,
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// `"30s"`-style string or a number of seconds; default `admin.registry.default_ttl`.
    #[serde(default)]
    pub ttl: Option<serde_json::Value>,
}

/// Service and instance names: letters, digits, `-`, `_`, `.`, `:`, at most 128.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

type Entries = BTreeMap<String, BTreeMap<String, Record>>;

/// The registry of one gateway process.
pub struct Registry {
    settings: RegistrySettings,
    entries: Mutex<Entries>,
    changes: watch::Sender<u64>,
    store: Option<Arc<RedisStore>>,
    /// Set while the shared store cannot be read (readers then keep their last set).
    store_error: Mutex<Option<String>>,
}

static GLOBAL: OnceLock<Arc<Registry>> = OnceLock::new();

/// Create the process registry from `admin.registry` and start its background
/// tasks on `rt` (eviction; with Redis also sync and change notices). Call once,
/// before the first config is compiled; later calls keep the first registry.
pub fn install(
    settings: RegistrySettings,
    rt: &tokio::runtime::Handle,
) -> Result<(), RegistryError> {
    if GLOBAL.get().is_some() {
        return Ok(());
    }
    let registry = Registry::new(settings)?;
    if GLOBAL.set(registry.clone()).is_ok() {
        registry.start(rt);
    }
    Ok(())
}

/// The process registry (an in-memory one when [`install`] was not called).
pub fn global() -> Arc<Registry> {
    GLOBAL
        .get_or_init(|| Arc::new(Registry::memory(RegistrySettings::default())))
        .clone()
}

impl Registry {
    fn memory(settings: RegistrySettings) -> Self {
        Registry {
            settings,
            entries: Mutex::new(BTreeMap::new()),
            changes: watch::channel(0).0,
            store: None,
            store_error: Mutex::new(None),
        }
    }

    /// A registry with the given settings (connects to Redis lazily).
    pub fn new(settings: RegistrySettings) -> Result<Arc<Self>, RegistryError> {
        let store = match &settings.store {
            StoreSettings::Memory => None,
            StoreSettings::Redis { url } => {
                Some(Arc::new(RedisStore::new(url, &settings.key_prefix)?))
            }
        };
        let mut r = Registry::memory(settings);
        r.store = store;
        Ok(Arc::new(r))
    }

    /// Start eviction (and, with Redis, the sync loop and change notices) on `rt`.
    pub fn start(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        rt.spawn(tasks::sweep(self.clone()));
        if let Some(store) = &self.store {
            let (wake_tx, wake_rx) = tokio::sync::mpsc::channel::<()>(1);
            rt.spawn(store.clone().listen(wake_tx));
            rt.spawn(tasks::sync(self.clone(), wake_rx));
        }
    }

    /// Wake-ups for readers: the value changes on every change of the registry.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn notify(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn with_entries<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> T {
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Register a new instance or renew an existing one, under the default limits.
    pub async fn register(
        &self,
        service: &str,
        id: &str,
        req: RegisterRequest,
    ) -> Result<(Record, bool), RegistryError> {
        self.register_with(service, id, req, &RegistryLimits::default())
            .await
    }

    /// Register a new instance or renew an existing one; true when it is new.
    /// A new instance that would pass one of `limits` is refused and not stored.
    pub async fn register_with(
        &self,
        service: &str,
        id: &str,
        req: RegisterRequest,
        limits: &RegistryLimits,
    ) -> Result<(Record, bool), RegistryError> {
        check_names(service, id)?;
        let ttl = self.ttl(req.ttl.as_ref())?;
        if req.port == 0 {
            return Err(RegistryError::Invalid("port must be 1..=65535".into()));
        }
        limits::check_metadata(&req.metadata, limits)?;
        let resolved = resolve(&req.address, req.port).await?;
        limits::check_address(resolved.ip(), limits)?;
        let now = unix_ms();
        let previous = match &self.store {
            Some(store) => store.get(service, id).await?,
            None => self.with_entries(|e| e.get(service).and_then(|m| m.get(id)).cloned()),
        };
        let previous = previous.filter(|p| p.live(now));
        let record = Record {
            service: service.to_string(),
            id: id.to_string(),
            address: req.address,
            port: req.port,
            resolved,
            metadata: req.metadata,
            ttl_ms: ttl.as_millis() as u64,
            registered_unix_ms: previous.as_ref().map_or(now, |p| p.registered_unix_ms),
            renewed_unix_ms: now,
            expires_unix_ms: now + ttl.as_millis() as u64,
        };
        if let Some(store) = &self.store {
            // counted inside Redis, so replicas registering at once cannot pass the caps
            store.put_capped(&record, limits).await?;
        }
        let created = previous.is_none();
        let changed = previous
            .as_ref()
            .is_none_or(|p| p.resolved != record.resolved || p.metadata != record.metadata);
        let checked = self.store.is_some();
        self.with_entries(|e| {
            if !checked {
                limits::check_counts(e, service, id, now, limits)?;
            }
            e.entry(service.to_string())
                .or_default()
                .insert(id.to_string(), record.clone());
            Ok::<(), LimitError>(())
        })?;
        if created {
            tracing::info!(service, id, address = %record.resolved, "registry: instance registered");
        }
        if changed {
            self.notify();
        }
        Ok((record, created))
    }

    /// Renew an instance's TTL (its last TTL again).
    pub async fn heartbeat(&self, service: &str, id: &str) -> Result<Record, RegistryError> {
        check_names(service, id)?;
        let now = unix_ms();
        let not_found = || RegistryError::NotFound {
            service: service.to_string(),
            id: id.to_string(),
        };
        let current = match &self.store {
            Some(store) => store.get(service, id).await?,
            None => self.with_entries(|e| e.get(service).and_then(|m| m.get(id)).cloned()),
        };
        let mut record = current.filter(|r| r.live(now)).ok_or_else(not_found)?;
        record.renewed_unix_ms = now;
        record.expires_unix_ms = now + record.ttl_ms;
        if let Some(store) = &self.store {
            store.put(&record).await?;
        }
        self.with_entries(|e| {
            e.entry(service.to_string())
                .or_default()
                .insert(id.to_string(), record.clone())
        });
        Ok(record)
    }

    /// Remove an instance; false when it was not registered.
    pub async fn deregister(&self, service: &str, id: &str) -> Result<bool, RegistryError> {
        check_names(service, id)?;
        let in_store = match &self.store {
            Some(store) => store.delete(service, id).await?,
            None => false,
        };
        let local = self.with_entries(|e| e.get_mut(service).and_then(|m| m.remove(id)).is_some());
        if local || in_store {
            tracing::info!(service, id, "registry: instance deregistered");
            self.notify();
        }
        Ok(local || in_store)
    }

    /// Every live instance, by service.
    pub fn services(&self) -> BTreeMap<String, Vec<Record>> {
        let now = unix_ms();
        self.with_entries(|e| {
            e.iter()
                .map(|(s, m)| {
                    (
                        s.clone(),
                        m.values()
                            .filter(|r| r.live(now))
                            .cloned()
                            .collect::<Vec<_>>(),
                    )
                })
                .filter(|(_, v)| !v.is_empty())
                .collect()
        })
    }

    /// The live instances of one service.
    pub fn instances(&self, service: &str) -> Vec<Record> {
        let now = unix_ms();
        self.with_entries(|e| {
            e.get(service)
                .map(|m| m.values().filter(|r| r.live(now)).cloned().collect())
                .unwrap_or_default()
        })
    }

    /// The endpoints of one service, or an error while the shared store is unreadable.
    pub fn endpoints(&self, service: &str) -> Result<Vec<Endpoint>, DiscoveryError> {
        if let Some(e) = self
            .store_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(DiscoveryError::Registry(e));
        }
        Ok(self
            .instances(service)
            .iter()
            .map(|r| Endpoint {
                addr: r.resolved,
                weight: r.weight(),
            })
            .collect())
    }

    /// `Some(reason)` while the shared store cannot be read.
    pub fn store_error(&self) -> Option<String> {
        self.store_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `memory` or `redis`.
    pub fn store_kind(&self) -> &'static str {
        if self.store.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    fn ttl(&self, v: Option<&serde_json::Value>) -> Result<Duration, RegistryError> {
        let ttl = match v {
            None | Some(serde_json::Value::Null) => self.settings.default_ttl,
            Some(serde_json::Value::Number(n)) => n
                .as_f64()
                .filter(|f| f.is_finite() && *f > 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    RegistryError::Invalid("ttl must be a positive number of seconds".into())
                })?,
            Some(serde_json::Value::String(s)) => humantime::parse_duration(s.trim())
                .map_err(|e| RegistryError::Invalid(format!("ttl {s:?}: {e} (e.g. \"30s\")")))?,
            Some(_) => {
                return Err(RegistryError::Invalid(
                    "ttl is a duration such as \"30s\"".into(),
                ))
            }
        };
        if ttl < Duration::from_secs(1) || ttl > self.settings.max_ttl {
            return Err(RegistryError::Invalid(format!(
                "ttl must be between 1s and {}",
                humantime::format_duration(self.settings.max_ttl)
            )));
        }
        Ok(ttl)
    }
}

fn check_names(service: &str, id: &str) -> Result<(), RegistryError> {
    if !valid_name(service) || !valid_name(id) {
        return Err(RegistryError::Invalid(
            "service and instance ids use letters, digits, '-', '_', '.' and ':' (at most 128)"
                .into(),
        ));
    }
    Ok(())
}

/// An IP address as is; a host name resolved once, at registration.
async fn resolve(address: &str, port: u16) -> Result<SocketAddr, RegistryError> {
    let host = address.trim().trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if host.is_empty() || host.len() > 253 {
        return Err(RegistryError::Invalid(
            "address must be an IP address or a host name".into(),
        ));
    }
    let lookup = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::lookup_host((host, port)),
    )
    .await;
    match lookup {
        Ok(Ok(addrs)) => super::prefer_ipv4(addrs)
            .ok_or_else(|| RegistryError::Invalid(format!("{host:?} resolves to no address"))),
        Ok(Err(e)) => Err(RegistryError::Invalid(format!(
            "cannot resolve {host:?}: {e}"
        ))),
        Err(_) => Err(RegistryError::Invalid(format!(
            "resolving {host:?} timed out"
        ))),
    }
}
