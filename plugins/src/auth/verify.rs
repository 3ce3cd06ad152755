//! JWT verification: pick the issuer by `iss`, check the algorithm against its
//! allow-list, verify the signature with a key of the matching family, then
//! check `exp`, `nbf`, `iat`, `aud` and the required claims.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::error::AuthError;
use super::keys::KeySource;

/// Longest token accepted (bytes).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// One trusted issuer, compiled.
pub struct Issuer {
    pub name: String,
    /// Expected `iss`; `None` matches tokens without `iss`.
    pub iss: Option<String>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
    /// Tolerated clock skew, seconds.
    pub leeway: f64,
    pub require_exp: bool,
    pub required_claims: Vec<String>,
}

/// A token whose signature and time claims were checked.
#[derive(Debug)]
pub struct VerifiedToken {
    /// Index of the issuer in the runtime's list.
    pub issuer: usize,
    pub claims: Map<String, Value>,
    pub sub: Option<String>,
    pub jti: Option<String>,
    pub iat: Option<f64>,
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
    /// Leeway of the issuer (seconds), for re-checks on cache hits.
    pub leeway: f64,
    /// Identity headers rendered from the claims.
    pub identity: Vec<(HeaderName, HeaderValue)>,
    /// The issuer's key generation when verified (a cache hit from an older one is redone).
    pub key_generation: u64,
}

impl VerifiedToken {
    /// Re-check the time window (a cached token must never outlive `exp`).
    pub fn check_time(&self, now: f64) -> Result<(), AuthError> {
        if let Some(exp) = self.exp {
            if now >= exp + self.leeway {
                return Err(AuthError::TokenExpired);
            }
        }
        if let Some(nbf) = self.nbf {
            if nbf > now + self.leeway {
                return Err(AuthError::TokenNotYetValid);
            }
        }
        Ok(())
    }
}

/// Verify `token` against the issuers whose indexes are in `allowed`.
pub async fn verify(
    issuers: &[Issuer],
    allowed: &[usize],
    token: &str,
    now: f64,
) -> Result<VerifiedToken, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TokenMalformed);
    }
    let (message, signature) = token.rsplit_once('.').ok_or(AuthError::TokenMalformed)?;
    let (_, payload_b64) = message.split_once('.').ok_or(AuthError::TokenMalformed)?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::TokenMalformed)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| AuthError::TokenMalformed)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| AuthError::TokenMalformed)?;

    let iss = match claims.get("iss") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(AuthError::TokenMalformed),
    };
    let idx = allowed
        .iter()
        .copied()
        .find(|&i| issuers.get(i).is_some_and(|is| is.iss.as_deref() == iss))
        .ok_or(AuthError::IssuerUnknown)?;
    let issuer = &issuers[idx];

    let alg = header.alg;
    if !issuer.algorithms.contains(&alg) {
        return Err(AuthError::AlgorithmNotAllowed);
    }
    let key_generation = issuer.keys.generation();
    let key = issuer.keys.key_for(header.kid.as_deref(), alg).await?;
    if !key.accepts(alg) {
        return Err(AuthError::AlgorithmNotAllowed);
    }
    match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.key, alg) {
        Ok(true) => {}
        _ => return Err(AuthError::SignatureInvalid),
    }

    let exp = numeric(&claims, "exp")?;
    let nbf = numeric(&claims, "nbf")?;
    let iat = numeric(&claims, "iat")?;
    let leeway = issuer.leeway;
    if issuer.require_exp && exp.is_none() {
        return Err(AuthError::ClaimMissing);
    }
    if let Some(iat) = iat {
        if iat > now + leeway {
            return Err(AuthError::TokenNotYetValid);
        }
    }
    if !issuer.audiences.is_empty() && !audience_matches(&claims, &issuer.audiences) {
        return Err(AuthError::AudienceInvalid);
    }
    for name in &issuer.required_claims {
        if matches!(claims.get(name), None | Some(Value::Null)) {
            return Err(AuthError::ClaimMissing);
        }
    }
    let sub = string_claim(&claims, "sub")?;
    let jti = string_claim(&claims, "jti")?;
    let token = VerifiedToken {
        issuer: idx,
        sub,
        jti,
        iat,
        exp,
        nbf,
        leeway,
        claims,
        identity: Vec::new(),
        key_generation,
    };
    token.check_time(now)?;
    Ok(token)
}

fn numeric(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(AuthError::TokenMalformed),
        Some(_) => Err(AuthError::TokenMalformed),
    }
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // a numeric sub is common enough (database ids): keep its text
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(AuthError::TokenMalformed),
    }
}

fn audience_matches(claims: &Map<String, Value>, accepted: &[String]) -> bool {
    match claims.get("aud") {
        Some(Value::String(a)) => accepted.iter().any(|x| x == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| accepted.iter().any(|x| x == a)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jsonwebtoken::{encode, DecodingKey, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::auth::key::KeyEntry;

    const NOW: f64 = 1_700_000_000.0;

    fn hs_issuer(secret: &[u8]) -> Issuer {
        Issuer {
            name: "hs".into(),
            iss: Some("demo".into()),
            audiences: vec!["gateway".into()],
            algorithms: vec![Algorithm::HS256],
            keys: KeySource::Static(Arc::new(KeyEntry {
                key: DecodingKey::from_secret(secret),
                alg: None,
            })),
            leeway: 30.0,
            require_exp: true,
            required_claims: vec!["sub".into()],
        }
    }

    fn sign(claims: Value, alg: Algorithm, secret: &[u8]) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn good() -> Value {
        json!({"iss":"demo","aud":"gateway","sub":"42","jti":"j1","iat":NOW-10.0,"exp":NOW+600.0})
    }

    async fn check(token: &str) -> Result<VerifiedToken, AuthError> {
        verify(&[hs_issuer(b"secret")], &[0], token, NOW).await
    }

    #[tokio::test]
    async fn accepts_a_good_token() {
        let t = check(&sign(good(), Algorithm::HS256, b"secret"))
            .await
            .unwrap();
        assert_eq!(t.sub.as_deref(), Some("42"));
        assert_eq!(t.jti.as_deref(), Some("j1"));
    }

    #[tokio::test]
    async fn refuses_each_bad_case_with_its_code() {
        let mut c = good();
        c["exp"] = json!(NOW - 100.0);
        assert_eq!(
            check(&sign(c, Algorithm::HS256, b"secret")).await.err(),
            Some(AuthError::TokenExpired)
        );
        let mut c = good();
        c["exp"] = json!(NOW - 10.0); // within leeway
        assert!(check(&sign(c, Algorithm::HS256, b"secret")).await.is_ok());
        let mut c = good();
        c["nbf"] = json!(NOW + 100.0);
        assert_eq!(
            check(&sign(c, Algorithm::HS256, b"secret")).await.err(),
            Some(AuthError::TokenNotYetValid)
        );
        let mut c = good();
        c["iat"] = json!(NOW + 100.0);
        assert_eq!(
            check(&sign(c, Algorithm::HS256, b"secret")).await.err(),
            Some(AuthError::TokenNotYetValid)
        );
        let mut c = good();
        c["aud"] = json!(["other"]);
        assert_eq!(
            check(&sign(c, Algorithm::HS256, b"secret")).await.err(),
            Some(AuthError::AudienceInvalid)
        );
        let mut c = good();
        c["aud"] = json!(["other", "gateway"]);
        assert!(check(&sign(c, Algorithm::HS256, b"secret")).await.is_ok());
        let mut c = good();
        c["iss"] = json!("evil");
        assert_eq!(
            check(&sign(c, Algorithm::HS256, b"secret")).await.err(),
            Some(AuthError::IssuerUnknown)
        );
        let mut c = good();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            check(&sign(c, Algorithm::HS256, b"secret")).await.err(),
            Some(AuthError::ClaimMissing)
        );
        let mut c = good();
        c.as_object_mut().unwrap().remove("sub");
        assert_eq!(
            check(&sign(c, Algorithm::HS256, b"secret")).await.err(),
            Some(AuthError::ClaimMissing)
        );
        assert_eq!(
            check(&sign(good(), Algorithm::HS256, b"wrong")).await.err(),
            Some(AuthError::SignatureInvalid)
        );
        assert_eq!(
            check(&sign(good(), Algorithm::HS384, b"secret"))
                .await
                .err(),
            Some(AuthError::AlgorithmNotAllowed)
        );
        assert_eq!(check("abc").await.err(), Some(AuthError::TokenMalformed));
        assert_eq!(check("a.b.c").await.err(), Some(AuthError::TokenMalformed));
    }

    #[tokio::test]
    async fn alg_none_and_tampering_are_refused() {
        let t = sign(good(), Algorithm::HS256, b"secret");
        let mut parts: Vec<&str> = t.split('.').collect();
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        parts[0] = &none;
        assert!(check(&format!("{}.{}.", parts[0], parts[1])).await.is_err());
        let mut c = good();
        c["sub"] = json!("admin");
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        let parts: Vec<&str> = t.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(
            check(&tampered).await.err(),
            Some(AuthError::SignatureInvalid)
        );
    }

    #[tokio::test]
    async fn issuer_is_chosen_by_iss_and_route_allow_list() {
        let mut other = hs_issuer(b"other-secret");
        other.iss = Some("other".into());
        let issuers = [hs_issuer(b"secret"), other];
        let mut c = good();
        c["iss"] = json!("other");
        let t = sign(c, Algorithm::HS256, b"other-secret");
        assert_eq!(verify(&issuers, &[0, 1], &t, NOW).await.unwrap().issuer, 1);
        assert_eq!(
            verify(&issuers, &[0], &t, NOW).await.err(),
            Some(AuthError::IssuerUnknown)
        );
    }
}
