//! HS256 tokens for the pipeline scenarios, minted locally (no JWT library: the
//! harness must not share code with the verifier it measures).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signed HS256 JWT for subject number `n`, valid for an hour.
pub fn mint(secret: &str, issuer: &str, n: usize, now: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": issuer,
        "sub": format!("user-{n}"),
        "email": format!("user{n}@example.com"),
        "jti": format!("bench-{n}-{now}"),
        "iat": now,
        "exp": now + 3600,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let sig = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(signing_input.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; keep the token well-formed regardless
        Err(_) => String::new(),
    };
    format!("{signing_input}.{sig}")
}

/// `count` distinct tokens (distinct subjects and `jti`s).
pub fn mint_many(secret: &str, issuer: &str, count: usize) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (0..count).map(|n| mint(secret, issuer, n, now)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_well_formed() {
        let t = mint_many("k", "iss", 3);
        assert_eq!(t.len(), 3);
        assert_ne!(t[0], t[1]);
        for tok in &t {
            assert_eq!(tok.split('.').count(), 3);
            let payload = tok.split('.').nth(1).unwrap();
            let claims: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
            assert_eq!(claims["iss"], "iss");
        }
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // deterministic: same input and key give the same token; another key, another signature
        let a = mint("secret", "i", 1, 1000);
        let b = mint("secret", "i", 1, 1000);
        let c = mint("other", "i", 1, 1000);
        assert_eq!(a, b);
        assert_ne!(a.rsplit('.').next(), c.rsplit('.').next());
    }
}
