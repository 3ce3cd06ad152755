//! Token revocation backed by Redis: a token is refused when its blacklist key
//! exists or its subject's revoked-before time is later than its `iat`.
//!
//! Reading: [`Revocation`] (mirror mode: local copy, no Redis on the request
//! path; lookup mode: one round trip per request). Writing: [`RevocationWriter`]
//! in the services, or the gateway itself after a route's `revoke: on_success`
//! ([`PendingRevocation`]).

mod keys;
mod lookup;
mod mirror;
mod on_success;
mod spelling;
mod sync;
mod writer;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use keys::{signed_sha256, token_sha256, KeySchema, RevocationKeys, TokenIds, TokenVar};
pub use mirror::{Mirror, Record};
pub use on_success::PendingRevocation;
pub use spelling::ecdsa_twin;
pub use writer::{RevocationError, RevocationWriter, LEEWAY_MARGIN};

use crate::auth::config::{RedisErrorPolicy, RevocationConfig, RevocationMode};
use crate::redis_link::{RedisConn, RedisTarget};
use crate::ConfigIssue;

/// The answer of a revocation check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not revoked.
    Clear,
    /// Revoked (blacklisted, or issued before the subject's cut-off).
    Revoked,
    /// Redis state unknown (down, or not synced yet): the route's policy decides.
    Unknown,
}

/// Aborts a background task when the owner is dropped (e.g. replaced by a reload).
pub(crate) struct TaskGuard(tokio::task::AbortHandle);

impl TaskGuard {
    pub(crate) fn new(h: tokio::task::JoinHandle<()>) -> Self {
        TaskGuard(h.abort_handle())
    }

    /// End the task now (it also ends when the guard is dropped).
    pub(crate) fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Backend {
    Mirror {
        mirror: Arc<Mirror>,
        settings: Arc<sync::SyncSettings>,
        /// The sync task, once activated.
        task: OnceLock<TaskGuard>,
    },
    Lookup(Box<lookup::Lookup>),
}

/// Compiled revocation state shared by every protected route.
pub struct Revocation {
    config: RevocationConfig,
    schema: KeySchema,
    backend: Backend,
    /// Writes of `revoke: on_success` (connects on first use, reconnects by itself).
    writes: RedisConn,
}

impl Revocation {
    /// Build from config; reuses `previous` (connection, mirror) when the section is unchanged.
    pub fn compile(
        cfg: &RevocationConfig,
        previous: Option<&Arc<Revocation>>,
        rt: &tokio::runtime::Handle,
        path: &str,
    ) -> Result<Arc<Revocation>, Vec<ConfigIssue>> {
        if let Some(p) = previous.filter(|p| p.config == *cfg) {
            return Ok(p.clone());
        }
        let mut issues = Vec::new();
        let keys = RevocationKeys {
            blacklist_key: cfg.blacklist_key.clone(),
            revoked_before_key: cfg.revoked_before_key.clone(),
            channel: cfg.channel.clone(),
        };
        let schema = KeySchema::new(&keys)
            .map_err(|(field, m)| issues.push(ConfigIssue::new(format!("{path}.{field}"), m)))
            .ok();
        let client = match RedisTarget::parse(&cfg.redis_url) {
            Ok(t) => Some(t),
            Err(e) => {
                issues.push(ConfigIssue::new(format!("{path}.redis_url"), e));
                None
            }
        };
        if cfg.keyspace_notifications && client.as_ref().is_some_and(RedisTarget::is_cluster) {
            issues.push(ConfigIssue::new(
                format!("{path}.keyspace_notifications"),
                "not on a Redis Cluster: keyspace events stay on the node that holds the key; \
                 revocations written by RevocationWriter (or any writer that PUBLISHes on the \
                 channel) reach every gateway without them",
            ));
        }
        if cfg.timeout.get().is_zero() {
            issues.push(ConfigIssue::new(
                format!("{path}.timeout"),
                "must be more than 0s",
            ));
        }
        if cfg.resync_interval.get() < Duration::from_secs(1) {
            issues.push(ConfigIssue::new(
                format!("{path}.resync_interval"),
                "must be at least 1s (it is a full SCAN of the revocation keys)",
            ));
        }
        let (Some(schema), Some(client), true) = (schema, client, issues.is_empty()) else {
            return Err(issues);
        };
        let _enter = rt.enter();
        let writes = match client.connection(cfg.timeout.get()) {
            Ok(c) => c,
            Err(e) => {
                return Err(vec![ConfigIssue::new(
                    format!("{path}.redis_url"),
                    format!("cannot set up the Redis connection: {}", e.category()),
                )])
            }
        };
        let backend = match cfg.mode {
            RevocationMode::Mirror => {
                let mirror = Arc::new(Mirror::default());
                let settings = Arc::new(sync::SyncSettings {
                    target: client,
                    schema: schema.clone(),
                    keyspace_notifications: cfg.keyspace_notifications,
                    resync_interval: cfg.resync_interval.get(),
                    timeout: cfg.timeout.get(),
                });
                Backend::Mirror {
                    mirror,
                    settings,
                    task: OnceLock::new(),
                }
            }
            RevocationMode::Lookup => {
                match lookup::Lookup::new(
                    client,
                    schema.clone(),
                    cfg.timeout.get(),
                    cfg.lookup_cache.get(),
                ) {
                    Ok(l) => Backend::Lookup(Box::new(l)),
                    Err(e) => {
                        return Err(vec![ConfigIssue::new(
                            format!("{path}.redis_url"),
                            format!("cannot set up the Redis connection: {}", e.category()),
                        )])
                    }
                }
            }
        };
        Ok(Arc::new(Revocation {
            config: cfg.clone(),
            schema,
            backend,
            writes,
        }))
    }

    /// Start the mirror's sync task (once; a reused section keeps its task). The
    /// task ends when the last config holding this revocation state is dropped.
    pub fn activate(&self, rt: &tokio::runtime::Handle) {
        if let Backend::Mirror {
            mirror,
            settings,
            task,
        } = &self.backend
        {
            task.get_or_init(|| {
                TaskGuard::new(rt.spawn(sync::run(mirror.clone(), settings.clone())))
            });
        }
    }

    /// The default policy when Redis cannot answer.
    pub fn on_redis_error(&self) -> RedisErrorPolicy {
        self.config.on_redis_error
    }

    pub fn schema(&self) -> &KeySchema {
        &self.schema
    }

    /// Whether revocation state is known right now (mirror synced; lookup always says yes).
    pub fn is_ready(&self) -> bool {
        match &self.backend {
            Backend::Mirror { mirror, .. } => mirror.is_synced(),
            Backend::Lookup(_) => true,
        }
    }

    /// Check one token.
    pub async fn check(
        &self,
        raw_token: &str,
        jti: Option<&str>,
        sub: Option<&str>,
        iat: Option<f64>,
    ) -> Verdict {
        let ids = self.schema.token_ids(jti, raw_token);
        match &self.backend {
            Backend::Mirror { mirror, .. } => {
                let now = crate::clock::unix_ms();
                match ids.twin.as_deref() {
                    Some(t) if mirror.check(t, None, None, now) == Verdict::Revoked => {
                        Verdict::Revoked
                    }
                    _ => mirror.check(&ids.first, sub, iat, now),
                }
            }
            Backend::Lookup(l) => l.check(&ids, sub, iat).await,
        }
    }
}
