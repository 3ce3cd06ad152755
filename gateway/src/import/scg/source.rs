//! Read a Spring Boot config file into flat properties with source line numbers,
//! the way Spring binds them: `application.yml` is flattened
//! (`spring.cloud.gateway.routes[0].predicates[0]`), `application.properties` is
//! read as written (`\` continuations, `#`/`!` comments, `=`/`:` separators).
//! Keys are compared in Spring's relaxed form (lowercase, no `-`), so
//! `key-resolver` and `keyResolver` are one key.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// One property: its key as written, its value and the line it came from.
#[derive(Debug, Clone)]
pub struct Prop {
    pub key: String,
    /// `key` in relaxed form, for lookups.
    pub canonical: String,
    pub value: String,
    pub line: usize,
    /// Set when the importer used (or reported) this property.
    pub used: Cell<bool>,
}

/// Every property of a file, in file order.
#[derive(Debug, Default)]
pub struct Props {
    pub props: Vec<Prop>,
}

/// Spring's relaxed form of a key: lowercase, `-` and `_` removed, `[name]` map
/// subscripts written as `.name` (numeric `[N]` indices kept).
pub fn canonical(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '[' {
            let inner: String = chars.by_ref().take_while(|&c| c != ']').collect();
            if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) {
                out.push('[');
                out.push_str(&inner);
                out.push(']');
            } else {
                out.push('.');
                out.push_str(&canonical(&inner));
            }
        } else if c != '-' && c != '_' {
            out.extend(c.to_lowercase());
        }
    }
    out
}

impl Props {
    fn push(&mut self, key: String, value: String, line: usize) {
        self.props.push(Prop {
            canonical: canonical(&key),
            key,
            value,
            line,
            used: Cell::new(false),
        });
    }

    /// The value of `key` (relaxed form), marking it used.
    pub fn get(&self, key: &str) -> Option<&Prop> {
        let key = canonical(key);
        let p = self.props.iter().rev().find(|p| p.canonical == key)?;
        p.used.set(true);
        Some(p)
    }

    /// Properties under `prefix.` or `prefix[`, in file order (not marked used).
    pub fn under<'a>(&'a self, prefix: &str) -> impl Iterator<Item = &'a Prop> + 'a {
        let prefix = canonical(prefix);
        self.props.iter().filter(move |p| {
            p.canonical
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
                || p.canonical == prefix
        })
    }

    /// The list indices used under `prefix` (`prefix[N]...`), ascending.
    pub fn indices(&self, prefix: &str) -> Vec<usize> {
        let canon = canonical(prefix);
        let mut out: Vec<usize> = self
            .props
            .iter()
            .filter_map(|p| {
                let rest = p
                    .canonical
                    .strip_prefix(canon.as_str())?
                    .strip_prefix('[')?;
                rest.split(']').next()?.parse().ok()
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The first line of anything under `prefix`.
    pub fn line_of(&self, prefix: &str) -> usize {
        self.under(prefix).map(|p| p.line).min().unwrap_or(0)
    }
}

/// Parse `application.properties` text.
pub fn parse_properties(text: &str) -> Props {
    let mut props = Props::default();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let first = line.trim_start();
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        // a line ending in an odd number of `\` continues on the next one
        let mut logical = String::new();
        let mut current = first.to_string();
        loop {
            let trailing = current.len() - current.trim_end_matches('\\').len();
            if trailing % 2 == 1 {
                logical.push_str(&current[..current.len() - 1]);
                match lines.next() {
                    Some((_, next)) => current = next.trim_start().to_string(),
                    None => break,
                }
            } else {
                logical.push_str(&current);
                break;
            }
        }
        let (key, value) = split_property(&logical);
        props.push(unescape(&key), unescape(value.trim_start()), i + 1);
    }
    props
}

/// Split at the first unescaped `=`, `:` or whitespace.
fn split_property(line: &str) -> (String, &str) {
    let mut key = String::new();
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            key.push('\\');
            key.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' => return (key, &line[i + 1..]),
            c if c.is_whitespace() => {
                let rest = line[i..].trim_start();
                let rest = rest
                    .strip_prefix('=')
                    .or_else(|| rest.strip_prefix(':'))
                    .unwrap_or(rest);
                return (key, rest);
            }
            c => key.push(c),
        }
    }
    (key, "")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => out.push_str(&hex),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Parse `application.yml` text into flat properties. Documents bound to a
/// profile (`spring.config.activate.on-profile`, `spring.profiles`) are left out
/// and returned as `(line, profile)`, for the report.
pub fn parse_yaml(text: &str) -> Result<(Props, Vec<(usize, String)>), String> {
    let docs: Vec<Spanned<Node>> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    let mut props = Props::default();
    let mut skipped = Vec::new();
    for doc in docs {
        let mut one = Props::default();
        flatten("", &doc.value, doc.referenced.line() as usize, &mut one);
        let profile = one.props.iter().find(|p| {
            p.canonical == "spring.config.activate.onprofile" || p.canonical == "spring.profiles"
        });
        match profile {
            Some(p) => skipped.push((p.line, p.value.clone())),
            None => props.props.extend(one.props),
        }
    }
    Ok((props, skipped))
}

/// A YAML node whose children carry their lines.
enum Node {
    Scalar(String),
    Null,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

fn flatten(prefix: &str, node: &Node, line: usize, props: &mut Props) {
    match node {
        Node::Scalar(s) => props.push(prefix.to_string(), s.clone(), line),
        Node::Null => props.push(prefix.to_string(), String::new(), line),
        Node::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let at = item.referenced.line() as usize;
                flatten(&format!("{prefix}[{i}]"), &item.value, at, props);
            }
        }
        Node::Map(entries) => {
            for (k, v) in entries {
                let key = if prefix.is_empty() {
                    k.value.clone()
                } else {
                    format!("{prefix}.{}", k.value)
                };
                // a scalar is reported at its key's line (a block scalar starts below it)
                let at = match v.value {
                    Node::Scalar(_) | Node::Null => k.referenced.line(),
                    _ => v.referenced.line(),
                };
                flatten(&key, &v.value, at as usize, props);
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Scalar(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Spanned<KeyText>>()? {
            let v = map.next_value::<Spanned<Node>>()?;
            let key = Spanned::new(k.value.0, k.referenced, k.defined);
            entries.push((key, v));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key as text (Spring keys may be numbers or booleans in YAML).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Node::deserialize(d)? {
            Node::Scalar(s) => Ok(KeyText(s)),
            Node::Null => Ok(KeyText(String::new())),
            _ => Err(de::Error::custom("a mapping key must be a scalar")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(props: &Props) -> Vec<(String, String, usize)> {
        props
            .props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone(), p.line))
            .collect()
    }

    #[test]
    fn yaml_is_flattened_with_lines() {
        let text = "spring:\n  cloud:\n    gateway:\n      routes:\n        - id: a\n          uri: lb://a\n          predicates:\n            - Path=/a/**\n            - name: Host\n              args:\n                pattern: x.org\n";
        let (props, _) = parse_yaml(text).unwrap();
        let prefix = "spring.cloud.gateway.routes[0]";
        assert_eq!(
            pairs(&props),
            vec![
                (format!("{prefix}.id"), "a".into(), 5),
                (format!("{prefix}.uri"), "lb://a".into(), 6),
                (format!("{prefix}.predicates[0]"), "Path=/a/**".into(), 8),
                (format!("{prefix}.predicates[1].name"), "Host".into(), 9),
                (
                    format!("{prefix}.predicates[1].args.pattern"),
                    "x.org".into(),
                    11
                ),
            ]
        );
        assert_eq!(props.indices("spring.cloud.gateway.routes"), vec![0]);
    }

    #[test]
    fn profile_documents_are_set_aside() {
        let text = "a: 1\n---\nspring.config.activate.on-profile: prod\na: 2\n---\nb: 3\n";
        let (props, skipped) = parse_yaml(text).unwrap();
        assert_eq!(
            pairs(&props),
            vec![("a".into(), "1".into(), 1), ("b".into(), "3".into(), 6)]
        );
        assert_eq!(skipped, vec![(3, "prod".to_string())]);
    }

    #[test]
    fn properties_handle_comments_continuations_and_separators() {
        let text = "# c\n! c\na.b-c = 1\nx.y: two \\\n   words\nz\\=k=v\nspring.cloud.gateway.routes[1].filters[0]=StripPrefix=1\n";
        let props = parse_properties(text);
        assert_eq!(
            pairs(&props),
            vec![
                ("a.b-c".into(), "1".into(), 3),
                ("x.y".into(), "two words".into(), 4),
                ("z=k".into(), "v".into(), 6),
                (
                    "spring.cloud.gateway.routes[1].filters[0]".into(),
                    "StripPrefix=1".into(),
                    7
                ),
            ]
        );
        assert_eq!(props.get("a.bC").map(|p| p.value.as_str()), Some("1"));
        assert_eq!(props.indices("spring.cloud.gateway.routes"), vec![1]);
    }

    #[test]
    fn relaxed_keys() {
        assert_eq!(canonical("a.key-resolver"), "a.keyresolver");
        assert_eq!(canonical("args[regexp]"), "args.regexp");
        assert_eq!(canonical("routes[2].ID"), "routes[2].id");
    }
}
