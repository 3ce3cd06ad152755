//! JWKS key source: the key set fetched from a URL, refreshed in the background,
//! refetched (rate-limited, single flight) when a token names an unknown `kid`.
//! A failed fetch keeps the last good set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::Digest;

use super::error::AuthError;
use super::key::KeyEntry;
use super::metrics::METRICS;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// A parsed key set.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<KeyEntry>>,
    all: Vec<Arc<KeyEntry>>,
}

impl KeySet {
    /// Parse a JWKS document; keys that cannot be used are skipped (and counted in the result).
    pub fn parse(body: &[u8]) -> Result<(KeySet, usize), String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc =
            serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut set = KeySet::default();
        let mut skipped = 0;
        for v in doc.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(v) else {
                skipped += 1;
                continue;
            };
            if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
                skipped += 1;
                continue;
            }
            let alg = match jwk.common.key_algorithm.map(Algorithm::try_from) {
                None => None,
                Some(Ok(a)) => Some(a),
                Some(Err(_)) => {
                    skipped += 1;
                    continue;
                }
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                skipped += 1;
                continue;
            };
            let entry = Arc::new(KeyEntry { key, alg });
            if let Some(kid) = jwk.common.key_id.clone() {
                set.by_kid.insert(kid, entry.clone());
            }
            set.all.push(entry);
        }
        Ok((set, skipped))
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<KeyEntry>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).filter(|k| k.accepts(alg)).cloned(),
            None => {
                // no kid: usable only when exactly one key fits
                let mut fits = self.all.iter().filter(|k| k.accepts(alg));
                match (fits.next(), fits.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// Settings of one JWKS source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSettings {
    pub issuer: String,
    pub url: String,
    pub refresh: Duration,
    pub min_refetch: Duration,
    pub timeout: Duration,
}

/// A JWKS URL's cached key set.
pub struct Jwks {
    settings: JwksSettings,
    client: reqwest::Client,
    keys: ArcSwap<KeySet>,
    loaded: AtomicBool,
    /// Bumped whenever the fetched document changes (invalidates cached verifications).
    generation: AtomicU64,
    body_hash: Mutex<[u8; 32]>,
    last_attempt: Mutex<Option<Instant>>,
    refetch: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub fn new(settings: JwksSettings) -> Result<Arc<Self>, String> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent("gateway-jwks")
            .build()
            .map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?;
        // both results from zero, so alerts see the first failed fetch
        for result in ["ok", "error"] {
            METRICS
                .jwks_fetches
                .with_label_values(&[&settings.issuer, result]);
        }
        Ok(Arc::new(Self {
            settings,
            client,
            keys: ArcSwap::from_pointee(KeySet::default()),
            loaded: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            body_hash: Mutex::new([0; 32]),
            last_attempt: Mutex::new(None),
            refetch: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn settings(&self) -> &JwksSettings {
        &self.settings
    }

    /// Whether a key set has been fetched at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Changes whenever the key set's content changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The key for `kid`/`alg`; an unknown `kid` triggers one rate-limited refetch.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<KeyEntry>, AuthError> {
        if let Some(k) = self.keys.load().find(kid, alg) {
            return Ok(k);
        }
        if self.may_refetch() {
            let _single = self.refetch.lock().await;
            // someone else may have fetched while we waited
            if let Some(k) = self.keys.load().find(kid, alg) {
                return Ok(k);
            }
            if self.may_refetch() {
                let _ = self.fetch().await;
                if let Some(k) = self.keys.load().find(kid, alg) {
                    return Ok(k);
                }
            }
        }
        if self.is_loaded() {
            Err(AuthError::KeyUnknown)
        } else {
            Err(AuthError::KeysUnavailable)
        }
    }

    fn may_refetch(&self) -> bool {
        let last = *self.last_attempt.lock().unwrap_or_else(|e| e.into_inner());
        last.is_none_or(|t| t.elapsed() >= self.settings.min_refetch)
    }

    /// Fetch and swap in the key set; on failure the last good set stays.
    pub async fn fetch(&self) -> Result<usize, String> {
        *self.last_attempt.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let result = self.fetch_inner().await;
        let label = match &result {
            Ok(_) => "ok",
            Err(_) => "error",
        };
        METRICS
            .jwks_fetches
            .with_label_values(&[&self.settings.issuer, label])
            .inc();
        match result {
            Ok((set, skipped, hash)) => {
                let n = set.len();
                {
                    let mut prev = self.body_hash.lock().unwrap_or_else(|e| e.into_inner());
                    if *prev != hash {
                        *prev = hash;
                        self.generation.fetch_add(1, Ordering::AcqRel);
                    }
                }
                if skipped > 0 {
                    tracing::warn!(issuer = %self.settings.issuer, skipped, "JWKS keys skipped (unsupported or not for signing)");
                }
                self.keys.store(Arc::new(set));
                self.loaded.store(true, Ordering::Release);
                tracing::debug!(issuer = %self.settings.issuer, keys = n, "JWKS loaded");
                Ok(n)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.settings.issuer, url = %self.settings.url, error = %e, "JWKS fetch failed; keeping the last good key set");
                Err(e)
            }
        }
    }

    async fn fetch_inner(&self) -> Result<(KeySet, usize, [u8; 32]), String> {
        let resp = self
            .client
            .get(&self.settings.url)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_JWKS_BYTES as u64)
        {
            return Err("document too large".into());
        }
        let body = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("document too large".into());
        }
        let (set, skipped) = KeySet::parse(&body)?;
        if set.is_empty() {
            return Err("the key set holds no usable key".into());
        }
        let hash: [u8; 32] = sha2::Sha256::digest(&body).into();
        Ok((set, skipped, hash))
    }

    /// Background refresh: fetch now, then every `refresh` (sooner while failing).
    pub async fn run(self: Arc<Self>) {
        let mut retry = Duration::from_millis(500);
        loop {
            let wait = {
                let _single = self.refetch.lock().await;
                match self.fetch().await {
                    Ok(_) => {
                        retry = Duration::from_millis(500);
                        self.settings.refresh
                    }
                    Err(_) => {
                        let w = retry.min(self.settings.refresh);
                        retry = (retry * 2).min(Duration::from_secs(30));
                        w
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"keys":[
        {"kty":"oct","kid":"h1","alg":"HS256","k":"c2VjcmV0"},
        {"kty":"oct","kid":"enc","use":"enc","k":"c2VjcmV0"},
        {"kty":"XYZ","kid":"weird"}
    ]}"#;

    #[test]
    fn parse_skips_unusable_keys() {
        let (set, skipped) = KeySet::parse(DOC.as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(skipped, 2);
        assert!(set.find(Some("h1"), Algorithm::HS256).is_some());
        assert!(
            set.find(Some("h1"), Algorithm::HS384).is_none(),
            "pinned alg"
        );
        assert!(set.find(Some("h1"), Algorithm::RS256).is_none(), "family");
        assert!(
            set.find(None, Algorithm::HS256).is_some(),
            "single fitting key"
        );
        assert!(set.find(Some("nope"), Algorithm::HS256).is_none());
        assert!(KeySet::parse(b"{}").is_err());
    }

    #[tokio::test]
    async fn unreachable_url_means_keys_unavailable_and_refetch_is_rate_limited() {
        let j = Jwks::new(JwksSettings {
            issuer: "t".into(),
            url: "http://127.0.0.1:1/jwks.json".into(),
            refresh: Duration::from_secs(60),
            min_refetch: Duration::from_secs(60),
            timeout: Duration::from_millis(200),
        })
        .unwrap();
        assert_eq!(
            j.key_for(Some("k"), Algorithm::RS256).await.err(),
            Some(AuthError::KeysUnavailable)
        );
        let before = *j.last_attempt.lock().unwrap();
        assert!(before.is_some());
        // within min_refetch: no second attempt
        let _ = j.key_for(Some("k"), Algorithm::RS256).await;
        assert_eq!(*j.last_attempt.lock().unwrap(), before);
    }
}
