//! Other spellings of one signed token that verify as well, for the blacklist
//! templates that name a spelling (`{token_sha256}`, `{token}`) rather than what
//! the issuer signed.
//!
//! An ECDSA signature `(r, s)` verifies exactly when `(r, n - s)` does, so every
//! ES256/ES384 token has a twin that any holder can compute without the key. The
//! signature segment has no other spelling the verifier accepts: base64url with
//! `=` padding or non-zero trailing bits is refused (tested in `verify.rs`), and
//! RSA, RSA-PSS and Ed25519 signatures are unique for a given key and message (an
//! Ed25519 `S + L` is refused). So the spellings of a token are the token itself
//! and, for ES256/ES384, its twin.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::elliptic_curve::ff::PrimeField;

/// The other spelling of an ES256/ES384 token (`s` replaced by `n - s`), or `None`
/// for any other token.
pub fn ecdsa_twin(raw_token: &str) -> Option<String> {
    let (message, sig_b64) = raw_token.rsplit_once('.')?;
    let (header_b64, _) = message.split_once('.')?;
    let header = URL_SAFE_NO_PAD.decode(header_b64).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let sig = URL_SAFE_NO_PAD.decode(sig_b64).ok()?;
    let twin = match header.get("alg")?.as_str()? {
        "ES256" => twin_p256(&sig)?,
        "ES384" => twin_p384(&sig)?,
        _ => return None,
    };
    Some(format!("{message}.{}", URL_SAFE_NO_PAD.encode(twin)))
}

fn twin_p256(sig: &[u8]) -> Option<Vec<u8>> {
    let sig = p256::ecdsa::Signature::from_slice(sig).ok()?;
    let (r, s) = sig.split_scalars();
    let neg: p256::Scalar = -*s;
    let twin = p256::ecdsa::Signature::from_scalars(r.to_repr(), neg.to_repr()).ok()?;
    Some(twin.to_vec())
}

fn twin_p384(sig: &[u8]) -> Option<Vec<u8>> {
    let sig = p384::ecdsa::Signature::from_slice(sig).ok()?;
    let (r, s) = sig.split_scalars();
    let neg: p384::Scalar = -*s;
    let twin = p384::ecdsa::Signature::from_scalars(r.to_repr(), neg.to_repr()).ok()?;
    Some(twin.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_are_involutive_and_only_for_ecdsa() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256"}"#);
        let mut sig = [0u8; 64];
        sig[31] = 7; // r = 7
        sig[63] = 5; // s = 5
        let t = format!("{h}.e30.{}", URL_SAFE_NO_PAD.encode(sig));
        let twin = ecdsa_twin(&t).unwrap();
        assert_ne!(twin, t);
        assert_eq!(ecdsa_twin(&twin).unwrap(), t);
        let hs = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        assert_eq!(
            ecdsa_twin(&format!("{hs}.e30.{}", URL_SAFE_NO_PAD.encode(sig))),
            None
        );
        assert_eq!(ecdsa_twin("abc"), None);
        assert_eq!(ecdsa_twin(&format!("{h}.e30.AAAA")), None, "wrong length");
    }
}
