//! Request/response rewriting a route applies: path rewrite and header rules.

use http::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;

/// How the upstream path is derived from the client's.
#[derive(Debug, Default)]
pub enum PathRewrite {
    #[default]
    Keep,
    /// Remove this prefix (the result always starts with '/').
    StripPrefix(String),
    /// Regex replace over the path (`$1`, `${name}`).
    Regex(Regex, String),
}

impl PathRewrite {
    /// The new path, or `None` when it is unchanged.
    pub fn apply(&self, path: &str) -> Option<String> {
        match self {
            PathRewrite::Keep => None,
            PathRewrite::StripPrefix(prefix) => {
                let rest = path.strip_prefix(prefix.as_str())?;
                Some(if rest.starts_with('/') {
                    rest.to_string()
                } else {
                    format!("/{rest}")
                })
            }
            PathRewrite::Regex(re, with) => {
                if !re.is_match(path) {
                    return None;
                }
                let out = re.replace(path, with.as_str());
                Some(if out.starts_with('/') {
                    out.into_owned()
                } else {
                    format!("/{out}")
                })
            }
        }
    }
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

    /// Apply to a plain header map (used by tests and non-pingora callers).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let r = PathRewrite::StripPrefix("/member".into());
        assert_eq!(r.apply("/member/login").as_deref(), Some("/login"));
        assert_eq!(r.apply("/member").as_deref(), Some("/"));
        assert_eq!(r.apply("/other"), None);
    }

    #[test]
    fn regex_rewrite_with_captures() {
        let r = PathRewrite::Regex(
            Regex::new("^/v1/(?P<rest>.*)$").unwrap(),
            "/api/${rest}".into(),
        );
        assert_eq!(r.apply("/v1/users/7").as_deref(), Some("/api/users/7"));
        assert_eq!(r.apply("/v2/users"), None);
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
        rules.apply(&mut h);
        assert!(!h.contains_key("x-drop"));
        let v: Vec<_> = h.get_all("x-set").iter().collect();
        assert_eq!(v, vec!["1", "2"]);
    }
}
