//! The registry's background work (control plane): TTL eviction, the Redis
//! sync loop, and the discovery source of `type: registry` services.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{global, Record, Registry};
use crate::upstream::discovery::{unix_ms, DiscoveryError, Refresh};

/// Evict instances whose TTL lapsed (every 250 ms).
pub(super) async fn sweep(registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if registry.store_error().is_some() {
            // the store is unreadable: keep what we know rather than evict on stale data
            continue;
        }
        let now = unix_ms();
        let expired: Vec<Record> = registry.with_entries(|e| {
            let mut out = Vec::new();
            for m in e.values_mut() {
                m.retain(|_, r| {
                    let keep = r.live(now);
                    if !keep {
                        out.push(r.clone());
                    }
                    keep
                });
            }
            e.retain(|_, m| !m.is_empty());
            out
        });
        if expired.is_empty() {
            continue;
        }
        for r in &expired {
            tracing::warn!(service = %r.service, id = %r.id, address = %r.resolved, "registry: TTL lapsed, instance evicted");
            if let Some(store) = &registry.store {
                if let Err(e) = store.evict(r).await {
                    tracing::debug!(error = %e, "registry: evicting from the store failed; the next sync retries");
                }
            }
        }
        registry.notify();
    }
}

/// With Redis: re-read the whole registry every `sync_interval` or on a change notice.
pub(super) async fn sync(registry: Arc<Registry>, mut wake: tokio::sync::mpsc::Receiver<()>) {
    let Some(store) = registry.store.clone() else {
        return;
    };
    let interval = registry
        .settings
        .sync_interval
        .max(Duration::from_millis(100));
    loop {
        match store.load_all().await {
            Ok(all) => {
                let was_failing = registry
                    .store_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if was_failing.is_some() {
                    tracing::info!("registry: the Redis store answers again");
                }
                let changed = registry.with_entries(|e| {
                    let changed = *e != all;
                    *e = all;
                    changed
                });
                if changed || was_failing.is_some() {
                    registry.notify();
                }
            }
            Err(e) => {
                let first = registry
                    .store_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace(e.to_string())
                    .is_none();
                if first {
                    tracing::warn!(error = %e, "registry: cannot read the Redis store; keeping the last known instances");
                    registry.notify();
                }
            }
        }
        let _ = tokio::time::timeout(interval, wake.recv()).await;
    }
}

/// Discovery source for `discovery: {type: registry}`.
pub struct RegistrySource {
    name: String,
    registry: Arc<Registry>,
    changes: watch::Receiver<u64>,
}

impl RegistrySource {
    pub fn new(name: &str) -> Self {
        let registry = global();
        let mut changes = registry.subscribe();
        changes.mark_unchanged();
        RegistrySource {
            name: name.to_string(),
            registry,
            changes,
        }
    }

    pub fn target(&self) -> String {
        self.name.clone()
    }

    pub fn refresh(&mut self) -> Result<Refresh, DiscoveryError> {
        self.changes.mark_unchanged();
        let endpoints = self.registry.endpoints(&self.name)?;
        Ok(Refresh {
            endpoints,
            next: Duration::from_secs(3600),
        })
    }

    /// Wait for a change of the registry, at most `max`; true when one came.
    pub async fn wait(&mut self, max: Duration) -> bool {
        matches!(
            tokio::time::timeout(max, self.changes.changed()).await,
            Ok(Ok(()))
        )
    }
}
