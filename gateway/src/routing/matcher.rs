//! Route conditions: path (exact, prefix, glob, regex), host, methods, headers.
//!
//! Built once at config compile time; matching allocates nothing.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

/// How a route matches the request path.
#[derive(Debug)]
pub enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
    Glob(Glob),
    Regex(Regex),
}

/// A path glob: literal segments, `*` for exactly one segment, and a trailing
/// `**` for any rest (including nothing: `/api/**` matches `/api` too).
#[derive(Debug)]
pub struct Glob {
    segments: Vec<Segment>,
    rest: bool,
}

#[derive(Debug, PartialEq)]
enum Segment {
    Literal(String),
    Star,
}

impl Glob {
    /// Parse a glob; the error says what is wrong.
    pub fn parse(pattern: &str) -> Result<Glob, String> {
        let body = pattern
            .strip_prefix('/')
            .ok_or_else(|| format!("path {pattern:?} must start with '/'"))?;
        let mut parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        let rest = parts.last() == Some(&"**");
        if rest {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        for p in parts {
            match p {
                "*" => segments.push(Segment::Star),
                "**" => return Err(format!("path {pattern:?}: '**' is only allowed as the last segment")),
                p if p.contains('*') => {
                    return Err(format!(
                        "path {pattern:?}: '*' must be a whole segment (use a `regex:` match for partial segments)"
                    ))
                }
                p => segments.push(Segment::Literal(p.to_string())),
            }
        }
        Ok(Glob { segments, rest })
    }

    pub fn matches(&self, path: &str) -> bool {
        let Some(body) = path.strip_prefix('/') else {
            return false;
        };
        // "/" has no segments at all
        let mut parts = body.split('/').skip(usize::from(body.is_empty()));
        for seg in &self.segments {
            match (seg, parts.next()) {
                (Segment::Literal(l), Some(p)) if l == p => {}
                (Segment::Star, Some(p)) if !p.is_empty() => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }

    /// The literal text before the first wildcard (for precedence).
    pub fn literal_prefix_len(&self) -> usize {
        let mut n = 1;
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => n += l.len() + 1,
                Segment::Star => break,
            }
        }
        n
    }

    /// The first segment when it is a literal (for the route index).
    pub fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(l)) => Some(l),
            _ => None,
        }
    }
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => prefix_matches(p, path),
            PathMatch::Glob(g) => g.matches(path),
            PathMatch::Regex(r) => r.is_match(path),
        }
    }

    /// Precedence class: exact, then prefix/glob, then regex, then catch-all.
    pub fn rank(&self) -> u8 {
        match self {
            PathMatch::Exact(_) => 0,
            PathMatch::Prefix(_) | PathMatch::Glob(_) => 1,
            PathMatch::Regex(_) => 2,
            PathMatch::Any => 3,
        }
    }

    /// Length of the literal part, longer wins within a class.
    pub fn literal_len(&self) -> usize {
        match self {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => p.len(),
            PathMatch::Glob(g) => g.literal_prefix_len(),
            PathMatch::Regex(_) | PathMatch::Any => 0,
        }
    }

    /// The first path segment every matching path must have, if fixed.
    pub fn index_key(&self) -> Option<&str> {
        match self {
            PathMatch::Exact(p) => Some(first_segment(p)),
            PathMatch::Glob(g) => g.first_literal(),
            // a prefix matches at segment boundaries, so a non-empty first segment is fixed
            PathMatch::Prefix(p) => {
                let seg = first_segment(p);
                (!seg.is_empty()).then_some(seg)
            }
            PathMatch::Regex(_) | PathMatch::Any => None,
        }
    }
}

/// The first segment of a path (`/api/v1` -> `api`, `/` -> ``).
pub fn first_segment(path: &str) -> &str {
    let body = path.strip_prefix('/').unwrap_or(path);
    match body.find('/') {
        Some(end) => &body[..end],
        None => body,
    }
}

/// A prefix matches at segment boundaries: `/member` matches `/member` and
/// `/member/...`, never `/memberadmin`. A prefix ending in `/` (`/api/`) matches
/// what starts with it, as before.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
    }
}

/// How a route matches the host.
#[derive(Debug)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

impl HostMatch {
    pub fn parse(pattern: &str) -> Result<HostMatch, String> {
        let p = pattern.trim().to_ascii_lowercase();
        if let Some(rest) = p.strip_prefix("*.") {
            if rest.is_empty() || rest.contains('*') {
                return Err(format!(
                    "host {pattern:?}: only a leading '*.' wildcard is supported"
                ));
            }
            return Ok(HostMatch::Suffix(format!(".{rest}")));
        }
        if p.is_empty() || p.contains('*') || p.contains('/') {
            return Err(format!(
                "host {pattern:?} is not a host name (write `api.example.com` or `*.example.com`)"
            ));
        }
        Ok(HostMatch::Exact(p))
    }

    /// `host` must already be lowercase and without port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => host == h,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    pub fn rank(&self) -> u8 {
        match self {
            HostMatch::Exact(_) => 0,
            HostMatch::Suffix(_) => 1,
            HostMatch::Any => 2,
        }
    }
}

/// A header condition: presence, or an exact value.
#[derive(Debug)]
pub struct HeaderCond {
    pub name: HeaderName,
    pub value: Option<HeaderValue>,
}

impl HeaderCond {
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        match &self.value {
            None => headers.contains_key(&self.name),
            Some(v) => headers.get_all(&self.name).iter().any(|h| h == v),
        }
    }
}

/// All conditions of one route.
#[derive(Debug)]
pub struct RouteMatcher {
    pub path: PathMatch,
    pub host: HostMatch,
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderCond>,
}

impl RouteMatcher {
    pub fn matches(&self, method: &Method, host: &str, path: &str, headers: &HeaderMap) -> bool {
        self.path.matches(path)
            && self.host.matches(host)
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|h| h.matches(headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_semantics() {
        let g = Glob::parse("/api/**").unwrap();
        for p in ["/api", "/api/", "/api/x", "/api/x/y"] {
            assert!(g.matches(p), "{p}");
        }
        for p in ["/apix", "/", "/ap", "/other/api"] {
            assert!(!g.matches(p), "{p}");
        }
        let g = Glob::parse("/users/*/orders").unwrap();
        assert!(g.matches("/users/7/orders"));
        assert!(!g.matches("/users//orders"));
        assert!(!g.matches("/users/7/orders/1"));
        assert!(!g.matches("/users/7"));
        let g = Glob::parse("/**").unwrap();
        assert!(g.matches("/"));
        assert!(g.matches("/anything/at/all"));
        assert!(Glob::parse("/a/**/b").is_err());
        assert!(Glob::parse("/a/b*").is_err());
        assert!(Glob::parse("a").is_err());
    }

    #[test]
    fn host_wildcards() {
        let h = HostMatch::parse("*.Example.com").unwrap();
        assert!(h.matches("api.example.com"));
        assert!(h.matches("a.b.example.com"));
        assert!(!h.matches("example.com"));
        assert!(!h.matches("badexample.com"));
        assert!(HostMatch::parse("a*.com").is_err());
    }

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        let p = PathMatch::Prefix("/member".into());
        for ok in ["/member", "/member/", "/member/login"] {
            assert!(p.matches(ok), "{ok}");
        }
        for no in ["/memberadmin", "/members/x", "/mem", "/"] {
            assert!(!p.matches(no), "{no}");
        }
        let p = PathMatch::Prefix("/api/".into());
        assert!(p.matches("/api/x"));
        assert!(p.matches("/api/"));
        assert!(!p.matches("/api"));
        assert!(PathMatch::Prefix("/".into()).matches("/anything"));
    }

    #[test]
    fn index_keys() {
        assert_eq!(PathMatch::Exact("/api/x".into()).index_key(), Some("api"));
        assert_eq!(
            PathMatch::Glob(Glob::parse("/api/**").unwrap()).index_key(),
            Some("api")
        );
        assert_eq!(
            PathMatch::Glob(Glob::parse("/*/x").unwrap()).index_key(),
            None
        );
        assert_eq!(PathMatch::Prefix("/ap".into()).index_key(), Some("ap"));
        assert_eq!(PathMatch::Prefix("/".into()).index_key(), None);
        assert_eq!(PathMatch::Prefix("/api/".into()).index_key(), Some("api"));
        assert_eq!(first_segment("/"), "");
        assert_eq!(first_segment("/api"), "api");
    }
}
