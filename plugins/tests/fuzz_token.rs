//! Fuzz harness for the token front end (stable toolchain, proptest): the JWT
//! header/payload base64url decoding, the claim extraction and the signature check
//! in `auth::verify`, and the token lookup in `auth::token`.
//!
//! Asserts, for every generated input: no panic, no pending future with a static key
//! (the request path never waits here), and never `Ok` for a token whose signature is
//! not the key's HMAC over its `header.payload`, or whose claims break the issuer's
//! policy. `FUZZ_CASES` sets the case count per property (default 2000; see
//! docs/fuzzing.md for long runs).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use plugins::auth::key::KeyEntry;
use plugins::auth::keys::KeySource;
use plugins::auth::token::TokenSource;
use plugins::auth::verify::{verify, Issuer, VerifiedToken};
use plugins::auth::AuthError;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{json, Map, Value};

const KEY: &[u8] = b"fuzz-key-0123456789abcdef0123456789";
const OTHER_KEY: &[u8] = b"another-key-0123456789abcdef012345";
const NOW: f64 = 1_700_000_000.0;
const LEEWAY: f64 = 30.0;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn config() -> Config {
    Config {
        cases: cases(),
        // A shrunk failure is saved next to this file and replayed first on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

fn issuer() -> Issuer {
    Issuer {
        name: "fuzz".into(),
        iss: Some("demo".into()),
        audiences: vec!["gateway".into()],
        algorithms: vec![Algorithm::HS256],
        keys: KeySource::Static(Arc::new(KeyEntry {
            key: DecodingKey::from_secret(KEY),
            alg: None,
        })),
        leeway: LEEWAY,
        require_exp: true,
        required_claims: vec!["sub".into()],
    }
}

/// Poll once: with a static key `verify` must complete without waiting.
fn run(token: &str) -> Result<VerifiedToken, AuthError> {
    let issuers = [issuer()];
    let fut = verify(&issuers, &[0], token, NOW);
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("verify waited with a static key: {token:?}"),
    }
}

/// The oracle: is `token` really signed by `KEY` with HS256, and do its claims meet
/// the issuer's policy? Written independently of the verifier.
fn deserves_acceptance(token: &str) -> Result<(), String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts[..] else {
        return Err(format!("{} segments", parts.len()));
    };
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    if header["alg"] != "HS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let message = format!("{h}.{p}");
    let expected = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(KEY),
        Algorithm::HS256,
    )
    .map_err(|e| e.to_string())?;
    let got = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| format!("signature: {e}"))?;
    if URL_SAFE_NO_PAD.decode(expected).ok() != Some(got) {
        return Err("signature is not the key's".into());
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    if claims.get("iss") != Some(&json!("demo")) {
        return Err("iss".into());
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == "gateway",
        Some(Value::Array(a)) => a.iter().any(|v| v == "gateway"),
        _ => false,
    };
    if !aud_ok {
        return Err("aud".into());
    }
    let exp = claims.get("exp").and_then(Value::as_f64).ok_or("exp")?;
    if NOW >= exp + LEEWAY {
        return Err("expired".into());
    }
    if matches!(claims.get("sub"), None | Some(Value::Null)) {
        return Err("sub".into());
    }
    Ok(())
}

fn check(token: &str) -> Result<(), TestCaseError> {
    if let Ok(v) = run(token) {
        if let Err(why) = deserves_acceptance(token) {
            return Err(TestCaseError::fail(format!(
                "accepted a token it must refuse ({why}): {token:?} -> {v:?}"
            )));
        }
        // Claim extraction agrees with the payload: a string as is, a number as its
        // text (numeric database ids are kept, by design), nothing else.
        for (name, got) in [("sub", &v.sub), ("jti", &v.jti)] {
            let want = match v.claims.get(name) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            prop_assert_eq!(got, &want, "{} extracted wrongly from {:?}", name, token);
        }
    }
    Ok(())
}

/// Arbitrary JSON, a few levels deep, with awkward numbers and strings.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just(NOW + 600.0),
            Just(NOW - 600.0),
            Just(NOW),
            Just(1e300),
            Just(-0.0)
        ]
        .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![Just("demo"), Just("gateway"), Just(""), Just("\u{0}")].prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Claims near the valid set: each standard claim valid, absent or arbitrary.
fn claims() -> impl Strategy<Value = Map<String, Value>> {
    let claim = |good: Value| {
        prop_oneof![
            3 => Just(Some(good)),
            1 => Just(None),
            1 => json_value().prop_map(Some),
        ]
    };
    (
        claim(json!("demo")),
        claim(json!("gateway")),
        claim(json!("user-1")),
        claim(json!(NOW + 600.0)),
        claim(json!(NOW - 10.0)),
        claim(json!(NOW - 10.0)),
        claim(json!("jti-1")),
        prop::collection::btree_map("[a-z]{1,5}", json_value(), 0..3),
    )
        .prop_map(|(iss, aud, sub, exp, nbf, iat, jti, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in [
                ("iss", iss),
                ("aud", aud),
                ("sub", sub),
                ("exp", exp),
                ("nbf", nbf),
                ("iat", iat),
                ("jti", jti),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            m
        })
}

fn header() -> impl Strategy<Value = Value> {
    let alg = prop_oneof![
        6 => Just(json!("HS256")),
        1 => Just(json!("HS384")),
        1 => Just(json!("none")),
        1 => Just(json!("RS256")),
        1 => Just(json!("hs256")),
        1 => json_value(),
    ];
    (
        alg,
        prop::option::of(json_value()),
        prop::option::of(".{0,8}"),
    )
        .prop_map(|(alg, extra, kid)| {
            let mut h = json!({"alg": alg, "typ": "JWT"});
            if let Some(e) = extra {
                h["x"] = e;
            }
            if let Some(k) = kid {
                h["kid"] = json!(k);
            }
            h
        })
}

/// How a near-valid token is bent after signing.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    /// Replace one byte (index modulo length) with another printable byte.
    Byte(usize, u8),
    Truncate(usize),
    /// Append to one segment (e.g. `=` padding, whitespace, `.`).
    Append(usize, String),
    SwapSegments,
    DropSignature,
    ExtraSegment,
    /// Standard base64 (`+/=`) instead of base64url.
    StandardAlphabet,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => Just(Mutation::None),
        4 => (any::<usize>(), 0x20u8..0x7f).prop_map(|(i, b)| Mutation::Byte(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (0usize..3, prop_oneof![Just("=".to_string()), Just("==".to_string()), Just(" ".to_string()), Just(".".to_string()), "[A-Za-z0-9_-]{1,3}"]).prop_map(|(i, s)| Mutation::Append(i, s)),
        1 => Just(Mutation::SwapSegments),
        1 => Just(Mutation::DropSignature),
        1 => Just(Mutation::ExtraSegment),
        1 => Just(Mutation::StandardAlphabet),
    ]
}

fn build(header: &Value, claims: &Map<String, Value>, key: &[u8], m: &Mutation) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string());
    let message = format!("{h}.{p}");
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(key),
        Algorithm::HS256,
    )
    .unwrap_or_default();
    let token = format!("{message}.{sig}");
    match m {
        Mutation::None => token,
        Mutation::Byte(i, b) => {
            let mut bytes = token.into_bytes();
            let i = i % bytes.len();
            bytes[i] = *b;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Mutation::Truncate(i) => token[..i % (token.len() + 1)].to_string(),
        Mutation::Append(i, s) => {
            let mut parts: Vec<String> = token.split('.').map(String::from).collect();
            parts[i % 3].push_str(s);
            parts.join(".")
        }
        Mutation::SwapSegments => format!("{p}.{h}.{sig}"),
        Mutation::DropSignature => format!("{message}."),
        Mutation::ExtraSegment => format!("{token}.{sig}"),
        Mutation::StandardAlphabet => {
            let std_sig = URL_SAFE_NO_PAD
                .decode(&sig)
                .map(|b| STANDARD.encode(b))
                .unwrap_or(sig);
            format!("{message}.{std_sig}")
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary text: refused, no panic.
    #[test]
    fn arbitrary_text_is_refused(s in ".{0,400}") {
        prop_assert!(run(&s).is_err());
    }

    /// Arbitrary bytes in JWT shape (three base64url segments of anything).
    #[test]
    fn jwt_shaped_bytes_are_refused(h in prop::collection::vec(any::<u8>(), 0..120), p in prop::collection::vec(any::<u8>(), 0..200), sig in prop::collection::vec(any::<u8>(), 0..48)) {
        let t = format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(h), URL_SAFE_NO_PAD.encode(p), URL_SAFE_NO_PAD.encode(sig));
        check(&t)?;
    }

    /// Structured near-valid tokens: well-formed headers and claims, signed with the
    /// key or another one, then bent. Accepted only when the oracle agrees.
    #[test]
    fn near_valid_tokens_are_accepted_only_when_signed_and_valid(
        header in header(),
        claims in claims(),
        right_key in prop::bool::weighted(0.8),
        m in mutation(),
    ) {
        let key = if right_key { KEY } else { OTHER_KEY };
        check(&build(&header, &claims, key, &m))?;
    }

    /// The token lookup: any Authorization, cookie and query; the token found is a
    /// trimmed piece of the input, and lookup never panics.
    #[test]
    fn token_lookup_never_panics(auth in "[ -~]{0,120}", cookie in "[ -~]{0,120}", query in "[ -~]{0,80}", allow in any::<bool>()) {
        let src = TokenSource {
            header: HeaderName::from_static("authorization"),
            cookie: Some("session".into()),
            query: "access_token".into(),
        };
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&auth) {
            h.insert("authorization", v);
        }
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.insert("cookie", v);
        }
        let uri: Uri = format!("/x?{}", query.replace(['#', ' ', '"', '<', '>', '\\', '^', '`', '{', '|', '}'], ""))
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/"));
        if let Some(t) = src.find(&h, &uri, allow) {
            prop_assert!(!t.is_empty());
            prop_assert!(auth.contains(t) || cookie.contains(t) || uri.to_string().contains(t));
        }
    }
}

/// The happy path still works under this harness's issuer (guards the oracle itself).
#[test]
fn a_good_token_is_accepted() {
    let claims = json!({"iss":"demo","aud":"gateway","sub":"u","exp":NOW+600.0,"iat":NOW-1.0});
    let Value::Object(claims) = claims else {
        unreachable!()
    };
    let t = build(
        &json!({"alg":"HS256","typ":"JWT"}),
        &claims,
        KEY,
        &Mutation::None,
    );
    assert!(run(&t).is_ok());
    assert!(deserves_acceptance(&t).is_ok());
    let t = build(
        &json!({"alg":"HS256","typ":"JWT"}),
        &claims,
        OTHER_KEY,
        &Mutation::None,
    );
    assert_eq!(run(&t).err(), Some(AuthError::SignatureInvalid));
}
