//! Find the token in a request: the configured header (`Bearer <token>`), then
//! the cookie if configured, then the query string only where a route opts in.

use http::{HeaderMap, HeaderName, Uri};

/// Where tokens are looked for, compiled.
#[derive(Debug, Clone)]
pub struct TokenSource {
    pub header: HeaderName,
    pub cookie: Option<String>,
    pub query: String,
}

impl TokenSource {
    /// The raw token, if the request carries one.
    pub fn find<'a>(
        &self,
        headers: &'a HeaderMap,
        uri: &'a Uri,
        allow_query: bool,
    ) -> Option<&'a str> {
        if let Some(v) = headers.get(&self.header).and_then(|v| v.to_str().ok()) {
            // a header value is visible ASCII and tabs here, so ASCII whitespace is
            // all `trim` would find; by bytes, a ~300-byte token is not walked as
            // chars twice
            let v = v.trim_ascii();
            let space = v.bytes().position(|b| b == b' ');
            let token = match space.map(|at| (&v[..at], &v[at + 1..])) {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim_ascii(),
                // a non-Bearer scheme on Authorization is not ours
                Some(_) => "",
                None if self.header == http::header::AUTHORIZATION => "",
                None => v,
            };
            if !token.is_empty() {
                return Some(token);
            }
        }
        if let Some(name) = &self.cookie {
            let found = crate::cookie(headers, name)
                .map(|v| v.trim_matches('"'))
                .filter(|v| !v.is_empty());
            if found.is_some() {
                return found;
            }
        }
        if allow_query {
            return uri
                .query()?
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == self.query)
                .map(|(_, v)| v)
                .filter(|v| !v.is_empty());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> TokenSource {
        TokenSource {
            header: http::header::AUTHORIZATION,
            cookie: Some("access_token".into()),
            query: "access_token".into(),
        }
    }

    #[test]
    fn header_cookie_query_in_order() {
        let uri: Uri = "/x?access_token=q".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(
            src().find(&h, &uri, false),
            None,
            "query needs the route's opt-in"
        );
        assert_eq!(src().find(&h, &uri, true), Some("q"));
        h.insert("cookie", "a=1; access_token=c".parse().unwrap());
        assert_eq!(src().find(&h, &uri, true), Some("c"));
        h.insert("authorization", "bearer  h ".parse().unwrap());
        assert_eq!(src().find(&h, &uri, true), Some("h"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(src().find(&h, &uri, false), Some("c"));
        let mut s = src();
        s.header = HeaderName::from_static("x-token");
        let mut h = HeaderMap::new();
        h.insert("x-token", "raw".parse().unwrap());
        assert_eq!(s.find(&h, &uri, false), Some("raw"));
    }

    #[test]
    fn the_bearer_scheme_in_any_case_around_any_blanks() {
        let uri: Uri = "/x".parse().unwrap();
        let found = |value: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(
                "authorization",
                http::HeaderValue::from_bytes(value).unwrap(),
            );
            src().find(&h, &uri, false).map(str::to_owned)
        };
        let t = Some("eyJ.a.b".to_owned());
        assert_eq!(found(b"Bearer eyJ.a.b"), t);
        assert_eq!(found(b"BEARER eyJ.a.b"), t);
        assert_eq!(found(b"\t bearer \t eyJ.a.b \t"), t);
        // the scheme ends at a space only, as RFC 9110's `auth-scheme SP token68`
        assert_eq!(found(b"Bearer\teyJ.a.b"), None);
        assert_eq!(found(b"Bearer"), None);
        assert_eq!(found(b"Bearer   "), None);
        assert_eq!(found(b"Bearerx eyJ.a.b"), None);
        assert_eq!(found(b"Basic eyJ.a.b"), None);
        // not visible ASCII: not a header this reads
        assert_eq!(found(b"Bearer eyJ\xe9.a.b"), None);
    }
}
