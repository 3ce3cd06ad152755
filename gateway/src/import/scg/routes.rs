//! Read Spring Cloud Gateway's route definitions out of the flat properties:
//! `spring.cloud.gateway.routes[N]` (or the newer
//! `spring.cloud.gateway.server.webflux.routes[N]`) with `id`, `uri`, `order`,
//! `metadata`, and predicates and filters in both spellings: the shortcut
//! `Path=/a/**,/b/**` and the expanded `{name: Path, args: {patterns: ...}}`.

use super::source::{canonical, Props};

/// Where the gateway's keys live: the classic prefix, or the one Spring Cloud
/// Gateway 4.1+ uses.
pub const PREFIXES: [&str; 2] = [
    "spring.cloud.gateway.server.webflux",
    "spring.cloud.gateway",
];

/// A predicate or filter: its name, its arguments, the line it was written on.
#[derive(Debug, Clone)]
pub struct Item {
    pub name: String,
    /// Named arguments (relaxed keys), or `_0`, `_1`, ... for a shortcut's values.
    pub args: Vec<(String, String)>,
    pub line: usize,
}

impl Item {
    /// The first argument found under any of `names` (relaxed), else positional `pos`.
    pub fn arg(&self, names: &[&str], pos: Option<usize>) -> Option<&str> {
        for n in names {
            let n = canonical(n);
            if let Some((_, v)) = self.args.iter().find(|(k, _)| *k == n) {
                return Some(v);
            }
        }
        let key = format!("_{}", pos?);
        self.args
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value: the positional ones in order, or the named ones whose key
    /// starts with one of `names` (`patterns[0]`, `patterns[1]`, `pattern`).
    pub fn values(&self, names: &[&str]) -> Vec<&str> {
        let positional: Vec<&str> = self
            .args
            .iter()
            .filter(|(k, _)| k.starts_with('_'))
            .map(|(_, v)| v.as_str())
            .collect();
        if !positional.is_empty() {
            return positional;
        }
        self.args
            .iter()
            .filter(|(k, _)| names.iter().any(|n| k.starts_with(&canonical(n))))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One `routes[N]` entry.
#[derive(Debug, Clone)]
pub struct ScgRoute {
    pub id: String,
    pub line: usize,
    pub uri: Option<(String, usize)>,
    pub order: i64,
    pub predicates: Vec<Item>,
    pub filters: Vec<Item>,
    /// `metadata` entries: key (relaxed), value, line.
    pub metadata: Vec<(String, String, usize)>,
    /// Keys of the entry the importer does not know: key, line.
    pub unknown: Vec<(String, usize)>,
}

/// The prefix this file uses for the gateway (the first with routes or default filters).
pub fn gateway_prefix(props: &Props) -> &'static str {
    PREFIXES
        .iter()
        .find(|p| props.under(p).next().is_some())
        .copied()
        .unwrap_or(PREFIXES[1])
}

/// Every route, in index order; all their properties are marked used.
pub fn read_routes(props: &Props, prefix: &str) -> Vec<ScgRoute> {
    let base = format!("{prefix}.routes");
    props
        .indices(&base)
        .into_iter()
        .map(|n| read_route(props, &format!("{base}[{n}]"), n))
        .collect()
}

/// `default-filters[N]`, applied to every route before its own filters.
pub fn read_default_filters(props: &Props, prefix: &str) -> Vec<Item> {
    read_items(props, &format!("{prefix}.default-filters"))
}

fn read_route(props: &Props, at: &str, n: usize) -> ScgRoute {
    let canon = canonical(at);
    let mut route = ScgRoute {
        id: format!("route-{n}"),
        line: props.line_of(at),
        uri: None,
        order: 0,
        predicates: read_items(props, &format!("{at}.predicates")),
        filters: read_items(props, &format!("{at}.filters")),
        metadata: Vec::new(),
        unknown: Vec::new(),
    };
    for p in props.under(at) {
        p.used.set(true);
        let Some(rest) = p.canonical.strip_prefix(canon.as_str()) else {
            continue;
        };
        let rest = rest.trim_start_matches('.');
        match rest {
            "id" => route.id = p.value.clone(),
            "uri" => route.uri = Some((p.value.trim().to_string(), p.line)),
            "order" => route.order = p.value.trim().parse().unwrap_or(0),
            _ if rest.starts_with("predicates") || rest.starts_with("filters") => {}
            _ => match rest.strip_prefix("metadata.") {
                Some(key) => route
                    .metadata
                    .push((key.to_string(), p.value.clone(), p.line)),
                None => route.unknown.push((p.key.clone(), p.line)),
            },
        }
    }
    route
}

/// A list of predicates or filters under `base` (`base[N]` shortcut strings or
/// `base[N].name` / `base[N].args...`).
fn read_items(props: &Props, base: &str) -> Vec<Item> {
    props
        .indices(base)
        .into_iter()
        .filter_map(|n| {
            let at = canonical(&format!("{base}[{n}]"));
            let entries: Vec<_> = props.under(&at).collect();
            entries.iter().for_each(|p| p.used.set(true));
            let line = entries.iter().map(|p| p.line).min()?;
            if let Some(short) = entries.iter().find(|p| p.canonical == at) {
                return Some(shortcut(&short.value, line));
            }
            let name = entries
                .iter()
                .find(|p| p.canonical == format!("{at}.name"))
                .map(|p| p.value.trim().to_string())
                .unwrap_or_default();
            let args = entries
                .iter()
                .filter_map(|p| {
                    let key = p.canonical.strip_prefix(&format!("{at}.args"))?;
                    Some((key.trim_start_matches('.').to_string(), p.value.clone()))
                })
                .collect();
            Some(Item { name, args, line })
        })
        .collect()
}

/// `Name=a, b` (Spring splits the arguments at commas and trims them).
fn shortcut(text: &str, line: usize) -> Item {
    let (name, rest) = text.split_once('=').unwrap_or((text, ""));
    let args = if rest.trim().is_empty() {
        Vec::new()
    } else {
        rest.split(',')
            .enumerate()
            .map(|(i, v)| (format!("_{i}"), v.trim().to_string()))
            .collect()
    };
    Item {
        name: name.trim().to_string(),
        args,
        line,
    }
}

#[cfg(test)]
mod tests {
    use super::super::source::{parse_properties, parse_yaml};
    use super::*;

    #[test]
    fn both_spellings_read_alike() {
        let yaml = "spring:\n  cloud:\n    gateway:\n      routes:\n        - id: m\n          uri: lb://member\n          order: 2\n          predicates:\n            - name: Path\n              args:\n                patterns: [/a/**, /b/**]\n          filters:\n            - StripPrefix=1\n          metadata:\n            response-timeout: 200\n";
        let (props, _) = parse_yaml(yaml).unwrap();
        let routes = read_routes(&props, gateway_prefix(&props));
        let r = &routes[0];
        assert_eq!((r.id.as_str(), r.order), ("m", 2));
        assert_eq!(r.predicates[0].name, "Path");
        assert_eq!(
            r.predicates[0].values(&["patterns", "pattern"]),
            ["/a/**", "/b/**"]
        );
        assert_eq!(r.predicates[0].line, 9); // where the item starts
        assert_eq!(r.filters[0].arg(&["parts"], Some(0)), Some("1"));
        assert_eq!(
            r.metadata,
            vec![("responsetimeout".into(), "200".into(), 15)]
        );

        let props = parse_properties(
            "spring.cloud.gateway.server.webflux.routes[0].id=m\nspring.cloud.gateway.server.webflux.routes[0].predicates[0]=Path=/a/**, /b/**\n",
        );
        let routes = read_routes(&props, gateway_prefix(&props));
        assert_eq!(
            routes[0].predicates[0].values(&["patterns"]),
            ["/a/**", "/b/**"]
        );
        assert_eq!(routes[0].predicates[0].line, 2);
    }
}
