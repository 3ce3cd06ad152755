//! Identity headers: render claim templates into the headers a service trusts,
//! sign them with HMAC-SHA256 (optional), and verify that signature on the
//! service side ([`verify_signature`]).
//!
//! Signature header: `t=<unix secs>,h=<name>;<name>...,v1=<hex HMAC-SHA256>` over
//! `"v1\n<t>\n"` followed by `"<name>:<value>\n"` for each signed header, names in
//! lowercase and sorted, an absent header signed as an empty value.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The default signature header name.
pub const SIGNATURE_HEADER: &str = "x-gateway-signature";

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Claim(String),
}

/// One `Header: "template {claim}"` entry.
#[derive(Debug, Clone)]
struct HeaderTemplate {
    name: HeaderName,
    parts: Vec<Part>,
}

/// Parse `"{email}"`, `"{sub}@{iss}"`, `"user {realm_access.roles}"`.
fn parse_template(t: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Lit(rest[..open].to_string()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in {t:?}"))?;
        let name = after[..close].trim();
        if name.is_empty() || name.contains('{') {
            return Err(format!("empty or nested placeholder in {t:?}"));
        }
        parts.push(Part::Claim(name.to_string()));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("stray }} in {t:?}"));
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.to_string()));
    }
    Ok(parts)
}

/// A claim by name, or by a dotted path into nested objects (`realm_access.roles`).
pub fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn push_value(out: &mut String, v: &Value) -> bool {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if matches!(item, Value::Array(_) | Value::Object(_)) || !push_value(out, item) {
                    return false;
                }
            }
        }
        Value::Null | Value::Object(_) => return false,
    }
    true
}

/// Renders identity headers from claims, and signs them.
#[derive(Debug, Clone)]
pub struct IdentityRenderer {
    templates: Vec<HeaderTemplate>,
    signature: Option<(HeaderName, Vec<u8>)>,
}

impl IdentityRenderer {
    /// `headers`: header name -> template. Errors are `(header, message)`.
    pub fn new(
        headers: &[(String, String)],
        signature: Option<(HeaderName, Vec<u8>)>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut templates = Vec::new();
        for (name, t) in headers {
            let hn = match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => h,
                Err(_) => {
                    errors.push((name.clone(), format!("{name:?} is not a valid header name")));
                    continue;
                }
            };
            match parse_template(t) {
                Ok(parts) => templates.push(HeaderTemplate { name: hn, parts }),
                Err(e) => errors.push((name.clone(), e)),
            }
        }
        templates.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        if errors.is_empty() {
            Ok(Self {
                templates,
                signature,
            })
        } else {
            Err(errors)
        }
    }

    /// Every header this renderer can set (to strip from client requests).
    pub fn header_names(&self) -> Vec<HeaderName> {
        let mut v: Vec<HeaderName> = self.templates.iter().map(|t| t.name.clone()).collect();
        if let Some((h, _)) = &self.signature {
            v.push(h.clone());
        }
        v
    }

    /// The identity headers for these claims; a header whose claims are missing (or
    /// whose value would not be a valid header value) is left out.
    pub fn render(&self, claims: &Map<String, Value>) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(self.templates.len());
        'next: for t in &self.templates {
            let mut s = String::new();
            for p in &t.parts {
                match p {
                    Part::Lit(l) => s.push_str(l),
                    Part::Claim(c) => match claim(claims, c) {
                        Some(v) if push_value(&mut s, v) => {}
                        _ => continue 'next,
                    },
                }
            }
            if let Ok(v) = HeaderValue::from_bytes(s.as_bytes()) {
                out.push((t.name.clone(), v));
            }
        }
        out
    }

    /// The signature header over `identity` at `now` (unix seconds), if configured.
    pub fn sign(
        &self,
        identity: &[(HeaderName, HeaderValue)],
        now: u64,
    ) -> Option<(HeaderName, HeaderValue)> {
        let (header, secret) = self.signature.as_ref()?;
        let names: Vec<&str> = self.templates.iter().map(|t| t.name.as_str()).collect();
        let value_of = |n: &str| {
            identity
                .iter()
                .find(|(h, _)| h.as_str() == n)
                .map(|(_, v)| v.as_bytes())
                .unwrap_or(b"")
        };
        let mac = compute(secret, now, &names, value_of)?;
        let v = format!("t={now},h={},v1={}", names.join(";"), hex::encode(mac));
        HeaderValue::from_str(&v).ok().map(|v| (header.clone(), v))
    }
}

fn compute<'a>(
    secret: &[u8],
    t: u64,
    names: &[&str],
    value_of: impl Fn(&str) -> &'a [u8],
) -> Option<Vec<u8>> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(b"v1\n");
    mac.update(t.to_string().as_bytes());
    mac.update(b"\n");
    for n in names {
        mac.update(n.as_bytes());
        mac.update(b":");
        mac.update(value_of(n));
        mac.update(b"\n");
    }
    Some(mac.finalize().into_bytes().to_vec())
}

/// The verified identity a service reads after [`verify_signature`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// When the gateway signed (unix seconds).
    pub signed_at: u64,
    /// The signed headers (lowercase name, value); absent headers have empty values.
    pub headers: Vec<(String, String)>,
}

impl Identity {
    /// A signed header's value (case-insensitive name); `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no identity signature header")]
    Missing,
    #[error("the identity signature header is malformed")]
    Malformed,
    #[error("the identity signature is too old or from the future")]
    Expired,
    #[error("the identity signature does not match")]
    Mismatch,
}

/// Verify the gateway's identity signature (header `X-Gateway-Signature`) with the
/// shared `secret`, refusing signatures older (or newer) than `max_age`.
pub fn verify_signature(
    headers: &HeaderMap,
    secret: &[u8],
    max_age: Duration,
) -> Result<Identity, SignatureError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    verify_signature_at(headers, SIGNATURE_HEADER, secret, max_age, now)
}

/// [`verify_signature`] with an explicit header name and clock.
pub fn verify_signature_at(
    headers: &HeaderMap,
    header: &str,
    secret: &[u8],
    max_age: Duration,
    now: u64,
) -> Result<Identity, SignatureError> {
    let raw = headers
        .get(header)
        .ok_or(SignatureError::Missing)?
        .to_str()
        .map_err(|_| SignatureError::Malformed)?;
    let (mut t, mut h, mut v1) = (None, None, None);
    for field in raw.split(',') {
        match field.trim().split_once('=') {
            Some(("t", x)) => t = x.parse::<u64>().ok(),
            Some(("h", x)) => h = Some(x),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => return Err(SignatureError::Malformed),
        }
    }
    let (Some(t), Some(h), Some(v1)) = (t, h, v1) else {
        return Err(SignatureError::Malformed);
    };
    if now.abs_diff(t) > max_age.as_secs() {
        return Err(SignatureError::Expired);
    }
    let names: Vec<&str> = h.split(';').filter(|n| !n.is_empty()).collect();
    let value_of = |n: &str| headers.get(n).map(|v| v.as_bytes()).unwrap_or(b"");
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(b"v1\n");
    mac.update(t.to_string().as_bytes());
    mac.update(b"\n");
    for n in &names {
        mac.update(n.as_bytes());
        mac.update(b":");
        mac.update(value_of(n));
        mac.update(b"\n");
    }
    mac.verify_slice(&v1)
        .map_err(|_| SignatureError::Mismatch)?;
    let headers = names
        .iter()
        .map(|n| {
            let v = headers
                .get(*n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (n.to_ascii_lowercase(), v)
        })
        .collect();
    Ok(Identity {
        signed_at: t,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn renderer(secret: Option<&[u8]>) -> IdentityRenderer {
        IdentityRenderer::new(
            &[
                ("Authenticated-User".into(), "{email}".into()),
                ("X-User-Id".into(), "{sub}".into()),
                ("X-User-Roles".into(), "{roles}".into()),
                ("X-Realm".into(), "realm {realm_access.roles}".into()),
            ],
            secret.map(|s| (HeaderName::from_static(SIGNATURE_HEADER), s.to_vec())),
        )
        .unwrap()
    }

    fn claims() -> Map<String, Value> {
        json!({"sub": 42, "email": "a@example.com", "roles": ["USER", "ADMIN"],
               "realm_access": {"roles": ["x"]}})
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn renders_claims_arrays_and_paths() {
        let h = renderer(None).render(&claims());
        let get = |n: &str| {
            h.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("authenticated-user").as_deref(), Some("a@example.com"));
        assert_eq!(get("x-user-id").as_deref(), Some("42"));
        assert_eq!(get("x-user-roles").as_deref(), Some("USER,ADMIN"));
        assert_eq!(get("x-realm").as_deref(), Some("realm x"));
        let mut c = claims();
        c.remove("email");
        c.insert("sub".into(), json!("evil\r\nX-Injected: 1"));
        let h = renderer(None).render(&c);
        assert!(h
            .iter()
            .all(|(k, _)| k != "authenticated-user" && k != "x-user-id"));
    }

    #[test]
    fn bad_templates_are_refused() {
        for t in ["{email", "{}", "a}b", "{a{b}}"] {
            assert!(parse_template(t).is_err(), "{t}");
        }
        assert!(IdentityRenderer::new(&[("bad name".into(), "{sub}".into())], None).is_err());
    }

    #[test]
    fn signature_round_trip_and_tampering() {
        let r = renderer(Some(b"k"));
        let ids = r.render(&claims());
        let (name, sig) = r.sign(&ids, 1000).unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in &ids {
            headers.insert(k.clone(), v.clone());
        }
        headers.insert(name.clone(), sig);
        let max = Duration::from_secs(60);
        let id = verify_signature_at(&headers, SIGNATURE_HEADER, b"k", max, 1010).unwrap();
        assert_eq!(id.get("Authenticated-User"), Some("a@example.com"));
        assert_eq!(id.signed_at, 1000);
        assert_eq!(
            verify_signature_at(&headers, SIGNATURE_HEADER, b"other", max, 1010),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature_at(&headers, SIGNATURE_HEADER, b"k", max, 2000),
            Err(SignatureError::Expired)
        );
        headers.insert("x-user-id", HeaderValue::from_static("1"));
        assert_eq!(
            verify_signature_at(&headers, SIGNATURE_HEADER, b"k", max, 1010),
            Err(SignatureError::Mismatch)
        );
        headers.remove(SIGNATURE_HEADER);
        assert_eq!(
            verify_signature_at(&headers, SIGNATURE_HEADER, b"k", max, 1010),
            Err(SignatureError::Missing)
        );
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_static("garbage"));
        assert_eq!(
            verify_signature_at(&headers, SIGNATURE_HEADER, b"k", max, 1010),
            Err(SignatureError::Malformed)
        );
    }
}
