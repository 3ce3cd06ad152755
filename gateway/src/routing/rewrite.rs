//! Request/response rewriting a route applies: path rewrite and header rules.

use http::header::MaxSizeReached;
use http::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;

use super::path_policy::{self, PathRefusal};

/// How the upstream path is derived from the client's.
#[derive(Debug, Default)]
pub enum PathRewrite {
    #[default]
    Keep,
    /// Remove these leading segments (`/member`, no trailing `/`; the result always
    /// starts with '/'). Applies only at a segment boundary: `/member` is stripped
    /// from `/member` and `/member/x`, never from `/memberx`.
    StripPrefix(String),
    /// Regex replace over the decoded path (`$1`, `${name}`); the result is
    /// percent-encoded for the wire.
    Regex(Regex, String),
}

impl PathRewrite {
    /// The path to forward, or `None` when the client's goes unchanged. `raw` is the
    /// path as received, `decoded` what the path policy made of it (the path the
    /// router matched). The result passes the path policy again, or the request is
    /// refused with its reason.
    pub fn apply(&self, raw: &str, decoded: &str) -> Result<Option<String>, PathRefusal> {
        let out = match self {
            PathRewrite::Keep => return Ok(None),
            PathRewrite::StripPrefix(prefix) => {
                let at_boundary = decoded
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
                if !at_boundary {
                    return Ok(None);
                }
                // segments of raw and decoded correspond one to one (no `%2F` got
                // through), so dropping as many raw segments keeps the rest's bytes
                let n = prefix.bytes().filter(|&b| b == b'/').count();
                let rest = raw
                    .match_indices('/')
                    .nth(n)
                    .map_or("/", |(i, _)| &raw[i..]);
                rest.to_string()
            }
            PathRewrite::Regex(re, with) => {
                if !re.is_match(decoded) {
                    return Ok(None);
                }
                let out = re.replace(decoded, with.as_str());
                let out = if out.starts_with('/') {
                    out
                } else {
                    format!("/{out}").into()
                };
                path_policy::encode(&out)
            }
        };
        path_policy::check(&out)?;
        Ok(Some(out))
    }
}

/// Check a `rewrite.replacement` at compile time: its literal text must not make a
/// dot segment, an empty segment or a character the path policy refuses, and must
/// not hold escapes (it is written decoded, like route paths). A capture can still
/// produce a refused path (checked per request); this catches what always would.
pub fn check_replacement(with: &str) -> Result<(), String> {
    if with.contains('%') {
        return Err(format!(
            "{with:?} has a `%`: write the decoded path (the result is percent-encoded for the wire)"
        ));
    }
    let body = with.strip_prefix('/').unwrap_or(with);
    let segments: Vec<&str> = body.split('/').collect();
    for (k, seg) in segments.iter().enumerate() {
        // a segment of dots and captures only (`..`, `.$1`, `${x}.`) can become `..`
        let literal = strip_captures(seg);
        let has_capture = literal.len() != seg.len();
        if !literal.is_empty()
            && literal.bytes().all(|b| b == b'.')
            && (has_capture || literal.len() <= 2)
        {
            return Err(format!(
                "{with:?}: segment {seg:?} can produce a `.` or `..` segment; a service would resolve it to another path"
            ));
        }
        if seg.is_empty() && k + 1 < segments.len() {
            return Err(format!("{with:?} has an empty segment (`//`)"));
        }
        if let Some(c) = literal
            .chars()
            .find(|&c| c == ';' || c == '\\' || c.is_control())
        {
            return Err(format!(
                "{with:?} has {c:?}, which the path policy refuses (400 invalid_path)"
            ));
        }
    }
    Ok(())
}

/// `seg` without `$1`, `$name` and `${name}` references (`$$` is a literal `$`).
fn strip_captures(seg: &str) -> String {
    let mut out = String::new();
    let mut chars = seg.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('{') => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
            }
            _ => {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    chars.next();
                }
            }
        }
    }
    out
}

/// Header set/add/remove, applied in that order: remove, set, add.
#[derive(Debug, Default)]
pub struct HeaderRules {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Apply to a header map: the upstream request's (`proxy::forward`). Fails
    /// only when the map would pass `http`'s size limit, where `insert` panics.
    pub fn apply(&self, headers: &mut HeaderMap) -> Result<(), MaxSizeReached> {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.try_insert(name.clone(), value.clone())?;
        }
        for (name, value) in &self.add {
            headers.try_append(name.clone(), value.clone())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_at_segment_boundaries_keeps_the_raw_rest() {
        let r = PathRewrite::StripPrefix("/member".into());
        let apply = |raw: &str| {
            let decoded = path_policy::check(raw).unwrap();
            r.apply(raw, &decoded).unwrap()
        };
        assert_eq!(apply("/member/login").as_deref(), Some("/login"));
        assert_eq!(apply("/member").as_deref(), Some("/"));
        assert_eq!(apply("/member/").as_deref(), Some("/"));
        assert_eq!(apply("/m%65mber/a%40b").as_deref(), Some("/a%40b"));
        assert_eq!(apply("/memberx/login"), None);
        assert_eq!(apply("/other"), None);
        let two = PathRewrite::StripPrefix("/api/v1".into());
        assert_eq!(
            two.apply("/api/v1/x/y", "/api/v1/x/y").unwrap().as_deref(),
            Some("/x/y")
        );
    }

    #[test]
    fn regex_rewrite_with_captures() {
        let r = PathRewrite::Regex(
            Regex::new("^/v1/(?P<rest>.*)$").unwrap(),
            "/api/${rest}".into(),
        );
        assert_eq!(
            r.apply("/v1/users/7", "/v1/users/7").unwrap().as_deref(),
            Some("/api/users/7")
        );
        assert_eq!(r.apply("/v2/users", "/v2/users").unwrap(), None);
        // decoded for the regex, encoded again for the wire
        assert_eq!(
            r.apply("/v1/a%20b", "/v1/a b").unwrap().as_deref(),
            Some("/api/a%20b")
        );
    }

    #[test]
    fn a_rewrite_that_makes_a_refused_path_is_refused() {
        let r = PathRewrite::Regex(Regex::new("^/x(.*)y$").unwrap(), "/a/$1".into());
        // `/x..y` is a fine path; its rewrite `/a/..` is not
        assert_eq!(r.apply("/x..y", "/x..y"), Err(PathRefusal::DotSegment));
        let r = PathRewrite::Regex(Regex::new("^/v1(.*)$").unwrap(), "/api/$1".into());
        assert_eq!(r.apply("/v1/x", "/v1/x"), Err(PathRefusal::EmptySegment));
    }

    #[test]
    fn replacements_that_always_make_a_refused_path_are_config_errors() {
        for ok in [
            "/api/$1",
            "/api/${rest}",
            "$1",
            "/v2/a.b/$x",
            "/.well-known/$1",
            "/a/",
        ] {
            assert!(check_replacement(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/a/../$1",
            "/a/./$1",
            "/a/.$1",
            "/a/${x}./b",
            "/a//$1",
            "/a;b/$1",
            "/a%20/$1",
            "/a\\b",
        ] {
            assert!(check_replacement(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_rules_order() {
        let rules = HeaderRules {
            remove: vec![HeaderName::from_static("x-drop")],
            set: vec![(
                HeaderName::from_static("x-set"),
                HeaderValue::from_static("1"),
            )],
            add: vec![(
                HeaderName::from_static("x-set"),
                HeaderValue::from_static("2"),
            )],
        };
        let mut h = HeaderMap::new();
        h.insert("x-drop", HeaderValue::from_static("a"));
        h.insert("x-set", HeaderValue::from_static("old"));
        rules.apply(&mut h).unwrap();
        assert!(!h.contains_key("x-drop"));
        let v: Vec<_> = h.get_all("x-set").iter().collect();
        assert_eq!(v, vec!["1", "2"]);
    }
}
