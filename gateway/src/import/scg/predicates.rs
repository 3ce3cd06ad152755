//! Spring Cloud Gateway predicates -> our `match:` conditions. What our matcher
//! cannot express (query parameters, cookies, time windows, regex header values,
//! remote addresses) is reported with its line, never dropped quietly.

use super::emit::PathCond;
use super::report::Note;
use super::routes::Item;

/// The conditions of one SCG route. Several paths or hosts become several routes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    /// Spring path patterns as written (`/a/{id}/**`).
    pub paths: Vec<String>,
    pub hosts: Vec<String>,
    pub methods: Vec<String>,
    pub headers: Vec<(String, String)>,
    /// `Weight=group,weight`.
    pub weight: Option<(String, u32)>,
    /// A Path or Host predicate none of whose patterns converted: the route would
    /// match far more than in SCG, so it is not converted.
    pub lost: bool,
}

/// Read the predicates; unsupported ones become notes.
pub fn conditions(route_id: &str, items: &[Item], notes: &mut Vec<Note>) -> Conditions {
    let mut c = Conditions::default();
    for item in items {
        let subject = format!("route {route_id}: predicate {}", item.name);
        let mut unsupported = |why: &str| notes.push(Note::new(item.line, &subject, why));
        match item.name.as_str() {
            "Path" => {
                let before = c.paths.len();
                for p in item.values(&["patterns", "pattern", "matchTrailingSlash"]) {
                    match p.trim() {
                        p if p.starts_with('/') => match path_cond(p) {
                            PathCond::Regex(re) if regex::Regex::new(&re).is_err() => {
                                unsupported(&format!("pattern {p:?} has a variable regex that does not translate; the pattern was left out"))
                            }
                            _ => c.paths.push(p.to_string()),
                        },
                        // SCG's trailing flag; true is its default and ours too
                        "true" => {}
                        "false" => unsupported("matchTrailingSlash: false is not converted: `/a/**` also matches `/a/` here"),
                        other => unsupported(&format!("{other:?} is not a path pattern (it must start with '/')")),
                    }
                }
                c.lost |= c.paths.len() == before;
            }
            "Host" => {
                let before = c.hosts.len();
                for h in item.values(&["patterns", "pattern"]) {
                    match host(h) {
                        Some(h) => c.hosts.push(h),
                        None => unsupported(&format!(
                            "host pattern {h:?} has no equivalent (write `api.example.com` or `*.example.com`)"
                        )),
                    }
                }
                c.lost |= c.hosts.len() == before;
            }
            "Method" => c.methods.extend(
                item.values(&["methods"])
                    .into_iter()
                    .map(|m| m.trim().to_ascii_uppercase()),
            ),
            "Header" => {
                let name = item.arg(&["header", "name"], Some(0)).unwrap_or("");
                match item.arg(&["regexp", "regex"], Some(1)).map(header_value) {
                    None => c.headers.push((name.to_string(), "*".into())),
                    Some(Some(v)) => c.headers.push((name.to_string(), v)),
                    Some(None) => unsupported(
                        "a regex header value: routes match a header by exact value or presence (\"*\"); the condition was left out, so the route matches without it",
                    ),
                }
            }
            "Weight" => {
                let group = item.arg(&["group"], Some(0)).unwrap_or("").to_string();
                match item.arg(&["weight"], Some(1)).map(|w| w.trim().parse::<u32>()) {
                    Some(Ok(w)) if w > 0 => c.weight = Some((group, w)),
                    _ => unsupported("weight is not a whole number of at least 1; the route gets no share"),
                }
            }
            "Query" => unsupported(
                "query parameter conditions are not supported by our matcher; the route matches without it",
            ),
            "Cookie" => unsupported(
                "cookie conditions are not supported by our matcher; the route matches without it",
            ),
            "After" | "Before" | "Between" => unsupported(
                "time-window routes are not supported; edit the config (it hot-reloads) when the time comes",
            ),
            "RemoteAddr" | "XForwardedRemoteAddr" => unsupported(
                "client address conditions are not supported by our matcher; restrict access in front of the gateway",
            ),
            other => unsupported(&format!(
                "unknown or custom predicate {other:?}: not converted; the route matches without it"
            )),
        }
    }
    c
}

/// `**.example.org` / `{sub}.example.org` -> `*.example.org`; literal hosts as written.
fn host(pattern: &str) -> Option<String> {
    let p = pattern.trim().to_ascii_lowercase();
    let p = p.split(':').next().unwrap_or(&p).to_string();
    let (first, rest) = p.split_once('.')?;
    let wild = first == "*" || first == "**" || (first.starts_with('{') && first.ends_with('}'));
    if wild && !rest.contains(['*', '{']) {
        return Some(format!("*.{rest}"));
    }
    (!p.contains(['*', '{', '?'])).then_some(p)
}

/// A header regex we can express: a literal (exact value) or "anything" (presence).
fn header_value(regex: &str) -> Option<String> {
    let r = regex.trim();
    if matches!(r, ".*" | ".+" | "^.*$" | "^.+$") {
        return Some("*".into());
    }
    let literal = r.trim_start_matches('^').trim_end_matches('$');
    (!literal.chars().any(|c| "\\.+*?()|[]{}^$".contains(c))).then(|| literal.to_string())
}

/// A Spring path pattern as our condition: a glob when every segment is a
/// literal, `*`, `{var}` or a final `**`; else a regex.
pub fn path_cond(pattern: &str) -> PathCond {
    let segs: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let glob_ok = segs.iter().enumerate().all(|(i, s)| {
        let last = i + 1 == segs.len();
        *s == "*" || (last && *s == "**") || is_var(s) || !s.contains(['*', '{', '}', '?'])
    });
    if glob_ok {
        let out: Vec<&str> = segs
            .iter()
            .map(|s| if is_var(s) { "*" } else { s })
            .collect();
        return PathCond::Path(format!("/{}", out.join("/")));
    }
    PathCond::Regex(path_regex(pattern))
}

/// A whole-segment `{name}` (not `{*rest}`, not `{name:regex}`, which need a regex).
fn is_var(s: &str) -> bool {
    s.starts_with('{')
        && s.ends_with('}')
        && !s.starts_with("{*")
        && !s.contains(':')
        && s.len() > 2
}

/// A regex for a Spring pattern with named groups for `{var}` (for SetPath).
pub fn path_regex(pattern: &str) -> String {
    let segs: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let mut re = String::from("^");
    for (i, s) in segs.iter().enumerate() {
        if *s == "**" && i + 1 == segs.len() {
            re.push_str("(?:/.*)?");
            continue;
        }
        if let Some(name) = s.strip_prefix("{*").and_then(|n| n.strip_suffix('}')) {
            re.push_str(&format!("(?<{name}>/.*)?"));
            continue;
        }
        re.push('/');
        let mut rest = *s;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let (var, tail) = after.split_once('}').unwrap_or((after, ""));
                // `{id:[0-9]+}` keeps its regex
                let (name, pattern) = var.split_once(':').unwrap_or((var, "[^/]+"));
                re.push_str(&format!("(?<{name}>{pattern})"));
                rest = tail;
            } else {
                let c = rest.chars().next().unwrap_or('/');
                match c {
                    '*' => re.push_str("[^/]*"),
                    '?' => re.push_str("[^/]"),
                    c => re.push_str(&regex::escape(&c.to_string())),
                }
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    re.push('$');
    re
}

/// The literal segments a pattern starts with (`/api/v1/{x}/**` -> `["api", "v1"]`).
pub fn literal_prefix(pattern: &str) -> Vec<&str> {
    pattern
        .trim_start_matches('/')
        .split('/')
        .take_while(|s| !s.is_empty() && !s.contains(['*', '{', '?']))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_globs_or_regexes() {
        assert_eq!(path_cond("/a/**"), PathCond::Path("/a/**".into()));
        assert_eq!(path_cond("/a/{id}/b"), PathCond::Path("/a/*/b".into()));
        assert_eq!(
            path_cond("/a/*.html"),
            PathCond::Regex("^/a/[^/]*\\.html$".into())
        );
        assert_eq!(path_regex("/red/{segment}"), "^/red/(?<segment>[^/]+)$");
        assert_eq!(
            path_cond("/u/{id:[0-9]+}"),
            PathCond::Regex("^/u/(?<id>[0-9]+)$".into())
        );
        assert_eq!(literal_prefix("/api/v1/{x}/**"), ["api", "v1"]);
    }

    #[test]
    fn hosts_and_header_values() {
        assert_eq!(host("**.example.org").as_deref(), Some("*.example.org"));
        assert_eq!(host("{sub}.example.org").as_deref(), Some("*.example.org"));
        assert_eq!(
            host("Api.example.org:8080").as_deref(),
            Some("api.example.org")
        );
        assert_eq!(host("a*.example.org"), None);
        assert_eq!(header_value("blue").as_deref(), Some("blue"));
        assert_eq!(header_value(".*").as_deref(), Some("*"));
        assert_eq!(header_value("\\d+"), None);
    }
}
