//! Spellings of one token: every re-encoding of a token's signature that still
//! verifies must map to the same revocation id, and every other re-encoding must
//! be refused. Signed with the real libraries (jsonwebtoken's RustCrypto backend)
//! and verified by the gateway's own `verify`.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header};
use p256::elliptic_curve::ff::PrimeField;
use plugins::auth::key::KeyEntry;
use plugins::auth::keys::{key_from_pem, KeySource};
use plugins::auth::verify::{verify, Issuer};
use plugins::auth::AuthError;
use plugins::revocation::{ecdsa_twin, signed_sha256, KeySchema, RevocationKeys};
use serde_json::json;

const ES_PRIVATE: &[u8] = include_bytes!("../../gateway/tests/keys/es-a-private.pem");
const ES_PUBLIC: &[u8] = include_bytes!("../../gateway/tests/keys/es-a-public.pem");
const ED_PRIVATE: &[u8] = include_bytes!("../../gateway/tests/keys/ed-private.pem");
const ED_PUBLIC: &[u8] = include_bytes!("../../gateway/tests/keys/ed-public.pem");
const NOW: f64 = 1_700_000_000.0;

fn issuer(alg: Algorithm, key: DecodingKey) -> Issuer {
    Issuer {
        name: "t".into(),
        iss: Some("t".into()),
        audiences: vec![],
        algorithms: vec![alg],
        keys: KeySource::Static(Arc::new(KeyEntry { key, alg: None })),
        leeway: 0.0,
        require_exp: true,
        required_claims: vec![],
    }
}

fn claims(n: u32) -> serde_json::Value {
    json!({"iss": "t", "sub": format!("u{n}"), "iat": NOW - 10.0, "exp": NOW + 600.0})
}

fn es256(n: u32) -> String {
    let key = EncodingKey::from_ec_pem(ES_PRIVATE).unwrap();
    encode(&Header::new(Algorithm::ES256), &claims(n), &key).unwrap()
}

async fn check(iss: &Issuer, token: &str) -> Result<(), AuthError> {
    verify(std::slice::from_ref(iss), &[0], token, NOW)
        .await
        .map(|_| ())
}

/// `(r, n - s)`, built here with p256 directly (not with the code under test).
fn malleate_es256(token: &str) -> String {
    let (message, sig) = token.rsplit_once('.').unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
    let (r, s) = sig.split_scalars();
    let neg: p256::Scalar = -*s;
    let twin = p256::ecdsa::Signature::from_scalars(r.to_repr(), neg.to_repr()).unwrap();
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(twin.to_bytes()))
}

fn es_issuer() -> Issuer {
    issuer(
        Algorithm::ES256,
        key_from_pem(ES_PUBLIC, AlgorithmFamily::Ec).unwrap(),
    )
}

#[tokio::test]
async fn an_es256_twin_verifies_and_maps_to_the_same_revocation_id() {
    let iss = es_issuer();
    let token = es256(1);
    let twin = malleate_es256(&token);
    assert_ne!(twin, token);
    check(&iss, &token).await.unwrap();
    check(&iss, &twin)
        .await
        .expect("the n - s twin verifies: ECDSA is malleable, the id must not be");
    assert_eq!(ecdsa_twin(&token).as_deref(), Some(twin.as_str()));

    let default = KeySchema::new(&RevocationKeys::default()).unwrap();
    assert_eq!(
        default.token_id(None, &token),
        default.token_id(None, &twin)
    );
    assert_eq!(default.token_id(None, &token), signed_sha256(&twin));
    // spelling-bound templates: each spelling is checked under the other's id too
    for template in ["blacklist:{token_sha256}", "jwt:{token}:revoked"] {
        let s = KeySchema::new(&RevocationKeys {
            blacklist_key: template.into(),
            ..RevocationKeys::default()
        })
        .unwrap();
        let written = s.token_id(None, &token).into_owned();
        let checked: Vec<String> = s
            .token_ids(None, &twin)
            .iter()
            .map(str::to_string)
            .collect();
        assert!(checked.contains(&written), "{template}: {checked:?}");
    }
}

#[tokio::test]
async fn refusing_high_s_would_refuse_valid_tokens_of_common_signers() {
    // jsonwebtoken (like OpenSSL, Go and Java) does not normalise s: about half of
    // its ES256 signatures are high-S. So the gateway does not refuse them; it
    // names revocations by the signed part instead.
    let high = (0..16)
        .map(es256)
        .filter(|t| {
            let sig = URL_SAFE_NO_PAD
                .decode(t.rsplit_once('.').unwrap().1)
                .unwrap();
            p256::ecdsa::Signature::from_slice(&sig)
                .unwrap()
                .normalize_s()
                .is_some()
        })
        .count();
    assert!(
        (1..16).contains(&high),
        "{high} of 16 deterministic signatures are high-S"
    );
}

/// Other spellings of the signature segment: padding and non-zero trailing bits.
fn respellings(token: &str) -> Vec<String> {
    let (message, sig) = token.rsplit_once('.').unwrap();
    let mut out = Vec::new();
    let pad = "=".repeat((4 - sig.len() % 4) % 4);
    if !pad.is_empty() {
        out.push(format!("{message}.{sig}{pad}"));
        out.push(format!("{message}.{sig}%3D"));
    }
    // the last character carries unused low bits: set one of them
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = sig.as_bytes()[sig.len() - 1];
    let pos = alphabet.iter().position(|c| *c == last).unwrap();
    let unused_bits = (sig.len() * 6) % 8;
    if unused_bits > 0 {
        let flipped = alphabet[pos ^ 1] as char;
        out.push(format!("{message}.{}{flipped}", &sig[..sig.len() - 1]));
    }
    // the standard (non-url) alphabet, where it differs
    let std = sig.replace('-', "+").replace('_', "/");
    if std != sig {
        out.push(format!("{message}.{std}"));
    }
    out
}

#[tokio::test]
async fn other_base64_spellings_of_the_signature_are_refused() {
    let es = es_issuer();
    let hs = issuer(Algorithm::HS256, DecodingKey::from_secret(b"secret"));
    let hs_token = encode(
        &Header::new(Algorithm::HS256),
        &claims(1),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    let mut tried = 0;
    for (iss, token) in [(&es, es256(2)), (&hs, hs_token)] {
        check(iss, &token).await.unwrap();
        for spelling in respellings(&token) {
            tried += 1;
            assert!(
                check(iss, &spelling).await.is_err(),
                "accepted a second spelling: {spelling}"
            );
        }
    }
    assert!(tried >= 4, "{tried}");
}

#[tokio::test]
async fn an_ed25519_signature_with_s_plus_l_is_refused() {
    // L, the order of the Ed25519 group, little-endian
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let iss = issuer(
        Algorithm::EdDSA,
        key_from_pem(ED_PUBLIC, AlgorithmFamily::Ed).unwrap(),
    );
    let key = EncodingKey::from_ed_pem(ED_PRIVATE).unwrap();
    let token = encode(&Header::new(Algorithm::EdDSA), &claims(3), &key).unwrap();
    check(&iss, &token).await.unwrap();
    let (message, sig) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let mut carry = 0u16;
    for (i, l) in L.iter().enumerate() {
        let v = u16::from(sig[32 + i]) + u16::from(*l) + carry;
        sig[32 + i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0);
    let twin = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(
        check(&iss, &twin).await.err(),
        Some(AuthError::SignatureInvalid)
    );
}
