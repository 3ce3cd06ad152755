//! Verified-token cache: skips signature verification and claim parsing for a
//! token seen recently. Bounded (two generations, the older dropped whole); an
//! entry is never used past the token's `exp` (re-checked on every hit), and
//! revocation is still checked on every request.
//!
//! Keyed by the token itself: a lookup hashes it (foldhash, seeded at random per
//! cache) to find its slot, and a hit is confirmed by comparing the whole token in
//! time that depends on its length only. So no other token can take a cached one's
//! place, whatever the hash does, and a guess learns nothing from how long the
//! comparison took. The key was the token's SHA-256, computed on every request: five
//! SHA-256 blocks for a 300-byte token, ~14k instructions in software (a CPU without
//! SHA extensions), where the hash and the comparison take a few hundred.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use foldhash::quality::RandomState;

use super::verify::VerifiedToken;

/// The key is already a uniform (seeded) hash: used as it is.
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
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A cached token and what its verification found.
struct Entry {
    token: Box<str>,
    verified: Arc<VerifiedToken>,
}

impl Entry {
    /// Whether this entry is for `token`.
    fn is_for(&self, token: &str) -> bool {
        same_bytes(self.token.as_bytes(), token.as_bytes())
    }
}

/// Whether `a` and `b` hold the same bytes, in a time that depends on their length
/// only: every 8-byte word is compared, and the running difference goes through
/// `black_box` so the compiler cannot stop at the first word that differs.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // `chunks_exact(8)` yields 8 bytes at a time: the conversion cannot fail
    let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().unwrap_or_default());
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_rest, b_rest) = (a_words.remainder(), b_words.remainder());
    let mut diff = 0u64;
    for (x, y) in a_words.zip(b_words) {
        diff = std::hint::black_box(diff | (word(x) ^ word(y)));
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        diff |= u64::from(x ^ y);
    }
    diff == 0
}

/// By the token's seeded hash; two tokens with the same hash share a slot (the later
/// one replaces the earlier, which is verified again when it comes back).
type Map = HashMap<u64, Entry, BuildHasherDefault<Prehashed>>;

#[derive(Default)]
struct Gens {
    young: Map,
    old: Map,
}

/// The cache; `S` hashes tokens (tests use one that makes tokens collide).
pub struct TokenCache<S = RandomState> {
    half: usize,
    keys: S,
    gens: Mutex<Gens>,
}

impl TokenCache {
    /// Holds at most `max_entries` tokens.
    pub fn new(max_entries: usize) -> Self {
        Self::with_hasher(max_entries, RandomState::default())
    }
}

impl<S: BuildHasher> TokenCache<S> {
    fn with_hasher(max_entries: usize, keys: S) -> Self {
        Self {
            half: (max_entries / 2).max(1),
            keys,
            gens: Mutex::new(Gens::default()),
        }
    }

    pub fn get(&self, token: &str) -> Option<Arc<VerifiedToken>> {
        let key = self.keys.hash_one(token);
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = g.young.get(&key) {
            return e.is_for(token).then(|| e.verified.clone());
        }
        // a hit in the old generation moves to the young one
        let std::collections::hash_map::Entry::Occupied(slot) = g.old.entry(key) else {
            return None;
        };
        if !slot.get().is_for(token) {
            return None;
        }
        let e = slot.remove();
        let hit = e.verified.clone();
        Self::put(&mut g, self.half, key, e);
        Some(hit)
    }

    pub fn insert(&self, token: &str, verified: Arc<VerifiedToken>) {
        let key = self.keys.hash_one(token);
        let entry = Entry {
            token: token.into(),
            verified,
        };
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        Self::put(&mut g, self.half, key, entry);
    }

    fn put(g: &mut Gens, half: usize, key: u64, e: Entry) {
        if g.young.len() >= half {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(key, e);
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
            c.insert(&i.to_string(), token(i));
            assert!(c.len() <= 4);
        }
        assert!(c.get("99").is_some());
        assert!(c.get("1").is_none());
        let hit = c.get("98").unwrap();
        assert_eq!(hit.issuer, 98);
        assert!(hit.check_time(99.0).is_ok());
        assert!(hit.check_time(100.0).is_err(), "never beyond exp");
    }

    #[test]
    fn same_bytes_is_equality() {
        let a: Vec<u8> = (0..=40u8).collect();
        for len in 0..a.len() {
            let x = &a[..len];
            assert!(same_bytes(x, x));
            assert!(!same_bytes(x, &a[..len + 1]), "a prefix is not the same");
            // a difference in any byte, in a whole word or in the tail
            for at in 0..len {
                let mut y = x.to_vec();
                y[at] ^= 0x80;
                assert!(!same_bytes(x, &y), "len {len}, byte {at}");
            }
        }
    }

    /// A token's slot is its first byte: tokens that start alike collide, and only
    /// the comparison tells them apart.
    #[derive(Default)]
    struct FirstByte(Option<u8>);

    impl Hasher for FirstByte {
        fn finish(&self) -> u64 {
            self.0.map_or(0, u64::from)
        }
        fn write(&mut self, bytes: &[u8]) {
            if self.0.is_none() {
                self.0 = bytes.first().copied();
            }
        }
    }

    #[test]
    fn only_the_very_token_hits_in_either_generation() {
        let a = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLWE";
        let mut last = a.to_string();
        last.pop();
        // in a's slot: one byte off at the end or the middle, a prefix, a longer one
        let mut middle = a.as_bytes().to_vec();
        middle[20] = b'X';
        let near = [
            format!("{last}F"),
            String::from_utf8(middle).unwrap(),
            last.clone(),
            format!("{a}x"),
        ];
        // half = 1: each insert moves the young generation to the old one
        let c = TokenCache::with_hasher(2, BuildHasherDefault::<FirstByte>::default());
        c.insert(a, token(1));
        for other in &near {
            assert!(
                c.get(other).is_none(),
                "{other:?} took {a:?}'s entry (young)"
            );
        }
        c.insert("zz", token(2));
        for other in &near {
            assert!(c.get(other).is_none(), "{other:?} took {a:?}'s entry (old)");
        }
        assert_eq!(
            c.get(a).map(|v| v.issuer),
            Some(1),
            "from the old generation"
        );
        assert_eq!(c.get(a).map(|v| v.issuer), Some(1), "promoted back");
        // a colliding token takes the slot; the one it replaced is verified again
        c.insert(&near[0], token(3));
        assert!(c.get(a).is_none());
        assert_eq!(c.get(&near[0]).map(|v| v.issuer), Some(3));
    }
}
