//! Identity headers (request_filter stage): render claim templates into the headers
//! a service trusts. Their signature, bound to each upstream request, is in
//! [`super::signature`]; its items are re-exported here, where services find
//! [`verify_signature`].

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

pub use super::signature::{
    canonical_string, verify_signature, verify_signature_at, Binding, Identity, IdentitySigner,
    ReceivedRequest, SignatureError, MAX_CLOCK_SKEW, REQUEST_ID_HEADER, SIGNATURE_HEADER,
};

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

/// Renders identity headers from claims; holds the signer when signing is configured.
#[derive(Debug, Clone)]
pub struct IdentityRenderer {
    templates: Vec<HeaderTemplate>,
    signer: Option<Arc<IdentitySigner>>,
}

impl IdentityRenderer {
    /// `headers`: header name -> template; `signature`: the signature header and
    /// HMAC key. Errors are `(header, message)`.
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
        let names = templates.iter().map(|t| t.name.clone()).collect();
        let signer = match signature {
            None => None,
            Some((header, secret)) => match IdentitySigner::new(header, &secret, names) {
                Some(s) => Some(Arc::new(s)),
                None => {
                    errors.push(("signature".into(), "HMAC refused the key".into()));
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok(Self { templates, signer })
        } else {
            Err(errors)
        }
    }

    /// Every header this renderer can set (to strip from client requests).
    pub fn header_names(&self) -> Vec<HeaderName> {
        let mut v: Vec<HeaderName> = self.templates.iter().map(|t| t.name.clone()).collect();
        if let Some(s) = &self.signer {
            v.push(s.header().clone());
        }
        v
    }

    /// The signer, when `identity.signature` is configured: the upstream request is
    /// signed per attempt, once its method, path and service are final.
    pub fn signer(&self) -> Option<&Arc<IdentitySigner>> {
        self.signer.as_ref()
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
    fn the_signer_covers_every_template_and_its_header_is_stripped() {
        assert!(renderer(None).signer().is_none());
        let r = renderer(Some(b"k"));
        let names: Vec<String> = r.header_names().iter().map(|h| h.to_string()).collect();
        assert!(names.contains(&SIGNATURE_HEADER.to_string()), "{names:?}");
        let b = Binding {
            method: "GET",
            path_and_query: "/x",
            service: "s",
            request_id: "r",
        };
        let v = r
            .signer()
            .unwrap()
            .sign(&r.render(&claims()), &b, 1)
            .unwrap();
        let v = v.to_str().unwrap();
        assert!(
            v.starts_with("t=1,h=authenticated-user;x-realm;x-user-id;x-user-roles,v2="),
            "{v}"
        );
    }
}
