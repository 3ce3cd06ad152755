//! Verified-token cache: skips signature verification and claim parsing for a
//! token seen recently. Bounded (two generations, the older dropped whole),
//! keyed by the token's SHA-256; an entry is never used past the token's `exp`
//! (re-checked on every hit), and revocation is still checked on every request.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::verify::VerifiedToken;

/// A token's cache key.
pub type TokenHash = [u8; 32];

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The key is already a uniform hash: use its first 8 bytes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 |= u64::from(*b) << (i * 8);
        }
    }
}

type Map = HashMap<TokenHash, Arc<VerifiedToken>, BuildHasherDefault<Prehashed>>;

#[derive(Default)]
struct Gens {
    young: Map,
    old: Map,
}

/// The cache.
pub struct TokenCache {
    half: usize,
    gens: Mutex<Gens>,
}

impl TokenCache {
    /// Holds at most `max_entries` tokens.
    pub fn new(max_entries: usize) -> Self {
        Self {
            half: (max_entries / 2).max(1),
            gens: Mutex::new(Gens::default()),
        }
    }

    pub fn get(&self, key: &TokenHash) -> Option<Arc<VerifiedToken>> {
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = g.young.get(key) {
            return Some(v.clone());
        }
        let v = g.old.remove(key)?;
        Self::put(&mut g, self.half, *key, v.clone());
        Some(v)
    }

    pub fn insert(&self, key: TokenHash, v: Arc<VerifiedToken>) {
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        Self::put(&mut g, self.half, key, v);
    }

    fn put(g: &mut Gens, half: usize, key: TokenHash, v: Arc<VerifiedToken>) {
        if g.young.len() >= half {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(key, v);
    }

    pub fn len(&self) -> usize {
        let g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        g.young.len() + g.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(i: u32) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken {
            issuer: i as usize,
            claims: Default::default(),
            sub: None,
            jti: None,
            iat: None,
            exp: Some(100.0),
            nbf: None,
            leeway: 0.0,
            identity: Vec::new(),
            key_generation: 0,
        })
    }

    #[test]
    fn bounded_and_promotes() {
        let c = TokenCache::new(4);
        for i in 0..100 {
            c.insert(hash_token(&i.to_string()), token(i));
            assert!(c.len() <= 4);
        }
        assert!(c.get(&hash_token("99")).is_some());
        assert!(c.get(&hash_token("1")).is_none());
        let hit = c.get(&hash_token("98")).unwrap();
        assert_eq!(hit.issuer, 98);
        assert!(hit.check_time(99.0).is_ok());
        assert!(hit.check_time(100.0).is_err(), "never beyond exp");
    }
}
