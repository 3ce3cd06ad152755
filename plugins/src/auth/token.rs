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
            let v = v.trim();
            let token = match v.split_once(' ') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
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
}
