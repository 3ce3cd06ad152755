//! `revoke: on_success` (response stage): when the service behind a route with
//! this option answers 2xx, the gateway revokes the token the request presented.
//! First in its own state, before the response leaves (the client's next request
//! to this gateway is refused, whatever pub/sub is doing), then in Redis: `SET`
//! the blacklist key with the token's remaining acceptance time and `PUBLISH` it on
//! the channel every other gateway follows. The write is awaited on the request's
//! task (no thread blocks), bounded by `auth.revocation.timeout`; a failure is
//! logged and counted, and the client's answer is the service's either way.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{writer, Backend, Revocation, Verdict};
use crate::auth::metrics::METRICS;
use crate::clock::unix_ms;

/// A revocation to make once the service has answered 2xx.
pub struct PendingRevocation {
    revocation: Arc<Revocation>,
    /// The token's blacklist id (as [`super::KeySchema::token_id`] names it).
    id: String,
    /// Unix ms after which the gateway refuses the token anyway (`exp` + leeway);
    /// `None` for a token without `exp`.
    until_ms: Option<u64>,
}

impl fmt::Debug for PendingRevocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingRevocation")
            .field("id", &self.id)
            .field("until_ms", &self.until_ms)
            .finish()
    }
}

impl Revocation {
    /// What to revoke if the service says yes: `raw_token` (with its `jti`), which
    /// the gateway accepts until `accepted_until` (unix seconds: `exp` + leeway).
    pub fn pending(
        self: &Arc<Self>,
        raw_token: &str,
        jti: Option<&str>,
        accepted_until: Option<f64>,
    ) -> PendingRevocation {
        PendingRevocation {
            revocation: self.clone(),
            id: self.schema.token_id(jti, raw_token).into_owned(),
            until_ms: accepted_until.map(|s| (s.max(0.0) * 1000.0).ceil() as u64),
        }
    }
}

impl PendingRevocation {
    /// The Redis key this revocation writes.
    pub fn key(&self) -> String {
        self.revocation.schema.token.render(&self.id)
    }

    /// Revoke: here at once, then in Redis (awaited). Never fails the request.
    pub async fn apply(self) {
        let rev = &self.revocation;
        match &rev.backend {
            // pinned: kept across resyncs, so a lost Redis write cannot undo it here
            Backend::Mirror { mirror, .. } => mirror.pin(&self.id, self.until_ms),
            Backend::Lookup(l) => l.remember(&self.id, Verdict::Revoked),
        }
        let key = self.key();
        let ttl = self
            .until_ms
            .map(|u| Duration::from_millis(u.saturating_sub(unix_ms()).max(1000)));
        let pipe = writer::token_pipe(&rev.schema, &key, ttl);
        let mut conn = rev.writes.clone();
        let timeout = rev.config.timeout.get();
        let error = match tokio::time::timeout(timeout, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {timeout:?}")),
        };
        match error {
            None => METRICS.revocation_writes.with_label_values(&["ok"]).inc(),
            Some(e) => {
                METRICS
                    .revocation_writes
                    .with_label_values(&["error"])
                    .inc();
                METRICS.redis_errors.with_label_values(&["revoke"]).inc();
                tracing::warn!(key = %key, error = %e, "revoke on_success: the Redis write failed; this gateway refuses the token, other gateways do not know");
            }
        }
    }
}
