//! The local revocation mirror: an in-memory copy of the revocation keys, read on
//! the request path without any Redis round trip, written by the sync task
//! ([`super::sync`]) from pub/sub messages and periodic full resyncs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use super::Verdict;
use crate::auth::metrics::METRICS;

/// The generation of pinned entries: newer than any resync.
const PINNED: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
struct TokenEntry {
    /// Unix ms after which the key is gone from Redis; `None` = no TTL.
    expires_ms: Option<u64>,
    gen: u64,
}

#[derive(Debug, Clone, Copy)]
struct SubjectEntry {
    /// Tokens issued (`iat`) before this unix time are refused.
    before: f64,
    expires_ms: Option<u64>,
    gen: u64,
}

#[derive(Default)]
struct State {
    tokens: HashMap<Box<str>, TokenEntry>,
    subjects: HashMap<Box<str>, SubjectEntry>,
}

/// One revocation read from Redis.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// `blacklist:{id}` exists.
    Token { id: String, expires_ms: Option<u64> },
    /// `revoked-before:{sub}` holds `before`.
    Subject {
        sub: String,
        before: f64,
        expires_ms: Option<u64>,
    },
    /// The token key is gone.
    TokenGone { id: String },
    /// The subject key is gone.
    SubjectGone { sub: String },
}

/// The mirror. Cheap to read concurrently; writes are rare.
#[derive(Default)]
pub struct Mirror {
    state: RwLock<State>,
    synced: AtomicBool,
    gen: AtomicU64,
    /// When the mirror lost Redis (None while in sync, and before the first sync).
    lost_at: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Mirror {
    /// Whether the mirror is connected and current (a full resync done, pub/sub live).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
        METRICS.mirror_synced.set(i64::from(synced));
        let mut lost_at = self.lost_at.lock().unwrap_or_else(|e| e.into_inner());
        match (synced, *lost_at) {
            (true, Some(t)) => {
                METRICS.mirror_out_of_sync.inc_by(t.elapsed().as_secs_f64());
                *lost_at = None;
            }
            (false, None) => *lost_at = Some(std::time::Instant::now()),
            _ => {}
        }
    }

    /// Decide from local state only. An entry found refuses even when not synced.
    pub fn check(
        &self,
        token_id: &str,
        sub: Option<&str>,
        iat: Option<f64>,
        now_ms: u64,
    ) -> Verdict {
        let live = |exp: Option<u64>| exp.is_none_or(|e| e > now_ms);
        {
            let st = self.state.read().unwrap_or_else(|e| e.into_inner());
            if st.tokens.get(token_id).is_some_and(|e| live(e.expires_ms)) {
                return Verdict::Revoked;
            }
            if let Some(e) = sub.and_then(|s| st.subjects.get(s)) {
                // a token without iat cannot prove it was issued after the cut-off
                if live(e.expires_ms) && iat.is_none_or(|iat| iat < e.before) {
                    return Verdict::Revoked;
                }
            }
        }
        if self.is_synced() {
            Verdict::Clear
        } else {
            Verdict::Unknown
        }
    }

    /// Apply notifications (in order).
    pub fn apply(&self, records: Vec<Record>) {
        let gen = self.gen.fetch_add(1, Ordering::AcqRel) + 1;
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        for r in records {
            match r {
                Record::Token { id, expires_ms } => {
                    st.tokens.insert(id.into(), TokenEntry { expires_ms, gen });
                }
                Record::Subject {
                    sub,
                    before,
                    expires_ms,
                } => {
                    st.subjects.insert(
                        sub.into(),
                        SubjectEntry {
                            before,
                            expires_ms,
                            gen,
                        },
                    );
                }
                Record::TokenGone { id } => {
                    st.tokens.remove(id.as_str());
                }
                Record::SubjectGone { sub } => {
                    st.subjects.remove(sub.as_str());
                }
            }
            METRICS.events.inc();
        }
        publish_sizes(&st);
    }

    /// Add a token revoked by this gateway itself (`revoke: on_success`). Pinned: a
    /// resync keeps it even if Redis never got the write; it goes when it expires
    /// or when Redis says the key is gone (an explicit un-revoke).
    pub fn pin(&self, token_id: &str, expires_ms: Option<u64>) {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        st.tokens.insert(
            token_id.into(),
            TokenEntry {
                expires_ms,
                gen: PINNED,
            },
        );
        publish_sizes(&st);
    }

    /// Mark the start of a full resync; pass the result to [`finish_resync`](Self::finish_resync).
    pub fn begin_resync(&self) -> u64 {
        self.gen.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Replace the state with a full read, keeping what notifications changed since `start`.
    pub fn finish_resync(&self, start: u64, records: Vec<Record>, now_ms: u64) {
        let mut fresh = State::default();
        for r in records {
            match r {
                Record::Token { id, expires_ms } => {
                    fresh.tokens.insert(
                        id.into(),
                        TokenEntry {
                            expires_ms,
                            gen: start,
                        },
                    );
                }
                Record::Subject {
                    sub,
                    before,
                    expires_ms,
                } => {
                    fresh.subjects.insert(
                        sub.into(),
                        SubjectEntry {
                            before,
                            expires_ms,
                            gen: start,
                        },
                    );
                }
                Record::TokenGone { .. } | Record::SubjectGone { .. } => {}
            }
        }
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        for (k, e) in st.tokens.iter().filter(|(_, e)| e.gen > start) {
            fresh.tokens.insert(k.clone(), *e);
        }
        for (k, e) in st.subjects.iter().filter(|(_, e)| e.gen > start) {
            fresh.subjects.insert(k.clone(), *e);
        }
        let live = |exp: Option<u64>| exp.is_none_or(|e| e > now_ms);
        fresh.tokens.retain(|_, e| live(e.expires_ms));
        fresh.subjects.retain(|_, e| live(e.expires_ms));
        *st = fresh;
        publish_sizes(&st);
    }

    /// (tokens, subjects) held.
    pub fn len(&self) -> (usize, usize) {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        (st.tokens.len(), st.subjects.len())
    }
}

fn publish_sizes(st: &State) {
    METRICS
        .mirror_size
        .with_label_values(&["token"])
        .set(st.tokens.len() as i64);
    METRICS
        .mirror_size
        .with_label_values(&["subject"])
        .set(st.subjects.len() as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(id: &str) -> Record {
        Record::Token {
            id: id.into(),
            expires_ms: None,
        }
    }

    #[test]
    fn check_and_sync_state() {
        let m = Mirror::default();
        assert_eq!(m.check("a", None, None, 0), Verdict::Unknown);
        m.apply(vec![tok("a")]);
        assert_eq!(
            m.check("a", None, None, 0),
            Verdict::Revoked,
            "known revocations refuse even unsynced"
        );
        m.set_synced(true);
        assert_eq!(m.check("b", None, None, 0), Verdict::Clear);
        m.apply(vec![Record::Subject {
            sub: "42".into(),
            before: 100.0,
            expires_ms: None,
        }]);
        assert_eq!(m.check("b", Some("42"), Some(99.0), 0), Verdict::Revoked);
        assert_eq!(m.check("b", Some("42"), Some(100.0), 0), Verdict::Clear);
        assert_eq!(m.check("b", Some("42"), None, 0), Verdict::Revoked);
        m.apply(vec![Record::TokenGone { id: "a".into() }]);
        assert_eq!(m.check("a", None, None, 0), Verdict::Clear);
    }

    #[test]
    fn expired_entries_do_not_count() {
        let m = Mirror::default();
        m.set_synced(true);
        m.apply(vec![Record::Token {
            id: "a".into(),
            expires_ms: Some(1000),
        }]);
        assert_eq!(m.check("a", None, None, 999), Verdict::Revoked);
        assert_eq!(m.check("a", None, None, 1000), Verdict::Clear);
    }

    #[test]
    fn resync_keeps_notifications_that_raced_it() {
        let m = Mirror::default();
        m.apply(vec![tok("old"), tok("stale")]);
        let start = m.begin_resync();
        m.apply(vec![tok("raced")]); // arrived while the SCAN ran
        m.finish_resync(start, vec![tok("old"), tok("scanned")], 0);
        m.set_synced(true);
        assert_eq!(m.check("old", None, None, 0), Verdict::Revoked);
        assert_eq!(m.check("scanned", None, None, 0), Verdict::Revoked);
        assert_eq!(m.check("raced", None, None, 0), Verdict::Revoked);
        assert_eq!(
            m.check("stale", None, None, 0),
            Verdict::Clear,
            "gone from Redis"
        );
        assert_eq!(m.len(), (3, 0));
    }

    #[test]
    fn pinned_entries_survive_resyncs_until_they_expire_or_are_deleted() {
        let m = Mirror::default();
        m.set_synced(true);
        m.pin("mine", Some(5_000));
        let start = m.begin_resync();
        m.finish_resync(start, vec![], 1_000); // Redis never got the write
        assert_eq!(m.check("mine", None, None, 1_000), Verdict::Revoked);
        let start = m.begin_resync();
        m.finish_resync(start, vec![], 5_000);
        assert_eq!(m.len(), (0, 0), "expired");
        m.pin("undone", None);
        m.apply(vec![Record::TokenGone {
            id: "undone".into(),
        }]);
        assert_eq!(m.check("undone", None, None, 0), Verdict::Clear);
    }
}
