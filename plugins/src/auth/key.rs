//! One verification key, pinned to an algorithm family (and to one algorithm when
//! its JWK says so). Both key sources, static keys and JWKS, hand these out.

use jsonwebtoken::{Algorithm, DecodingKey};

/// One verification key.
pub struct KeyEntry {
    pub key: DecodingKey,
    /// The algorithm the key is pinned to (a JWK's `alg`), if any.
    pub alg: Option<Algorithm>,
}

impl KeyEntry {
    /// Whether this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.key.family() == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}
