//! Property tests: the parsers that see client input (tokens, the identity
//! signature header, the token lookup) never panic and never accept garbage.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use jsonwebtoken::{Algorithm, DecodingKey};
use plugins::auth::identity::{verify_signature_at, ReceivedRequest};
use plugins::auth::key::KeyEntry;
use plugins::auth::keys::KeySource;
use plugins::auth::token::TokenSource;
use plugins::auth::verify::{verify, Issuer};
use proptest::prelude::*;

fn issuer() -> Issuer {
    Issuer {
        name: "dev".into(),
        iss: None,
        audiences: vec![],
        algorithms: vec![Algorithm::HS256],
        keys: KeySource::Static(Arc::new(KeyEntry {
            key: DecodingKey::from_secret(b"secret"),
            alg: None,
        })),
        leeway: 0.0,
        require_exp: false,
        required_claims: vec![],
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #[test]
    fn arbitrary_tokens_are_refused_without_panic(s in ".{0,300}") {
        prop_assert!(block_on(verify(&[issuer()], &[0], &s, 0.0)).is_err());
    }

    #[test]
    fn jwt_shaped_garbage_is_refused(h in any::<Vec<u8>>(), p in any::<Vec<u8>>(), sig in "[A-Za-z0-9_-]{0,90}") {
        let t = format!("{}.{}.{sig}", URL_SAFE_NO_PAD.encode(h), URL_SAFE_NO_PAD.encode(p));
        prop_assert!(block_on(verify(&[issuer()], &[0], &t, 0.0)).is_err());
    }

    #[test]
    fn signature_headers_never_panic(v in "[ -~]{0,200}", pq in "[ -~]{0,40}") {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert("x-gateway-signature", v);
        }
        h.insert("x-request-id", HeaderValue::from_static("r"));
        let req = ReceivedRequest { method: "GET", path_and_query: &pq, headers: &h };
        prop_assert!(verify_signature_at(&req, "s", "x-gateway-signature", b"k", Duration::from_secs(60), 0).is_err());
    }

    #[test]
    fn token_lookup_never_panics(auth in "[ -~]{0,100}", cookie in "[ -~]{0,100}", q in "[a-z=&]{0,50}") {
        let src = TokenSource {
            header: http::header::AUTHORIZATION,
            cookie: Some("access_token".into()),
            query: "access_token".into(),
        };
        let mut h = HeaderMap::new();
        for (name, v) in [("authorization", &auth), ("cookie", &cookie)] {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        let uri: Uri = format!("/x?{q}").parse().unwrap_or_else(|_| Uri::from_static("/"));
        if let Some(t) = src.find(&h, &uri, true) {
            prop_assert!(!t.is_empty());
        }
    }
}
