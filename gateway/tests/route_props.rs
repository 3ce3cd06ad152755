//! Property tests for routing: the compiled, indexed route table picks the same
//! route as a naive linear scan over the routes sorted by the documented
//! precedence, and the glob parser/matcher never panics.
//!
//! Documented precedence: path kind (exact, then prefix/glob, then regex, then
//! catch-all); within a kind the longer literal part (text before the first `*`);
//! then exact host, wildcard host, no host; then more method/header conditions;
//! then file order. A prefix matches at segment boundaries (`/a` matches `/a` and
//! `/a/b`, never `/ab`).

use std::cmp::Reverse;

use gateway::config::{self, CompileInput};
use gateway::routing::matcher::Glob;
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use regex::Regex;
use testkit::config::{GatewayConfigBuilder, ListenerConfig, RouteBuilder, ServiceBuilder};

#[derive(Debug, Clone)]
enum PathSpec {
    Any,
    Exact(String),
    Prefix(String),
    Glob(String),
    Regex(&'static str),
}

#[derive(Debug, Clone)]
struct RouteSpec {
    path: PathSpec,
    host: Option<&'static str>,
    method: Option<&'static str>,
    header: Option<&'static str>,
}

const SEGS: [&str; 4] = ["a", "b", "ab", "c"];
const REGEXES: [&str; 5] = ["/a/.*", "/[ab]/c", "/b.*", "/c/[a-c]+/a", ".*"];

fn seg() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&SEGS[..])
}

fn path_text() -> impl Strategy<Value = String> {
    (prop::collection::vec(seg(), 0..4), any::<bool>()).prop_map(|(segs, slash)| {
        let mut p = format!("/{}", segs.join("/"));
        if slash && !segs.is_empty() {
            p.push('/');
        }
        p
    })
}

fn glob_text() -> impl Strategy<Value = String> {
    let part = prop_oneof![3 => seg().prop_map(String::from), 1 => Just("*".to_string())];
    (prop::collection::vec(part, 0..4), any::<bool>()).prop_map(|(parts, rest)| {
        let mut p = format!("/{}", parts.join("/"));
        if rest {
            p = if parts.is_empty() {
                "/**".into()
            } else {
                format!("{p}/**")
            };
        } else if parts.is_empty() {
            p = "/*".into();
        } else if !p.contains('*') {
            p.push_str("/*"); // keep it a glob
        }
        p
    })
}

fn path_spec() -> impl Strategy<Value = PathSpec> {
    prop_oneof![
        1 => Just(PathSpec::Any),
        2 => path_text().prop_map(PathSpec::Exact),
        2 => path_text().prop_map(PathSpec::Prefix),
        3 => glob_text().prop_map(PathSpec::Glob),
        1 => prop::sample::select(&REGEXES[..]).prop_map(PathSpec::Regex),
    ]
}

fn route_spec() -> impl Strategy<Value = RouteSpec> {
    route_with(path_spec())
}

/// Few path shapes, so host, method and header conditions decide most requests.
fn crowded_route_spec() -> impl Strategy<Value = RouteSpec> {
    route_with(prop_oneof![
        Just(PathSpec::Any),
        Just(PathSpec::Prefix("/a/".into())),
        Just(PathSpec::Glob("/a/**".into())),
        Just(PathSpec::Exact("/a/b".into())),
    ])
}

fn route_with(paths: impl Strategy<Value = PathSpec>) -> impl Strategy<Value = RouteSpec> {
    (
        paths,
        prop::option::of(prop::sample::select(vec!["x.com", "a.x.com", "*.x.com"])),
        prop::option::of(prop::sample::select(vec!["GET", "POST"])),
        prop::option::of(prop::sample::select(vec!["1", "*"])),
    )
        .prop_map(|(path, host, method, header)| RouteSpec {
            path,
            host,
            method,
            header,
        })
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    host: &'static str,
    path: String,
    header: Option<&'static str>,
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT"]),
        prop::sample::select(vec!["x.com", "a.x.com", "b.a.x.com", "y.com", ""]),
        path_text(),
        prop::option::of(prop::sample::select(vec!["1", "2"])),
    )
        .prop_map(|(method, host, path, header)| Req {
            method,
            host,
            path,
            header,
        })
}

fn yaml(routes: &[RouteSpec]) -> String {
    let mut config = GatewayConfigBuilder::new()
        .listeners(vec![ListenerConfig::new("127.0.0.1:1")])
        .service("s", ServiceBuilder::instances(["127.0.0.1:2"]));
    for (k, r) in routes.iter().enumerate() {
        let mut route = RouteBuilder::to("s").id(&format!("r{k}"));
        match &r.path {
            PathSpec::Any => {}
            PathSpec::Exact(p) | PathSpec::Glob(p) => route = route.path(p),
            PathSpec::Prefix(p) => route = route.prefix(p),
            PathSpec::Regex(p) => route = route.regex(p),
        }
        if let Some(h) = r.host {
            route = route.host(h);
        }
        if let Some(meth) = r.method {
            route = route.methods(&[meth]);
        }
        if let Some(v) = r.header {
            route = route.header("x-k", v);
        }
        config = config.route(route);
    }
    config.yaml()
}

/// The model: each route's conditions, written the obvious way.
fn naive_matches(r: &RouteSpec, q: &Req) -> bool {
    let path_ok = match &r.path {
        PathSpec::Any => true,
        PathSpec::Exact(p) => q.path == *p,
        // at segment boundaries: `/a` matches `/a` and `/a/..`, not `/ab`
        PathSpec::Prefix(p) if p.ends_with('/') => q.path.starts_with(p.as_str()),
        PathSpec::Prefix(p) => q.path == *p || q.path.starts_with(&format!("{p}/")),
        PathSpec::Glob(g) => glob_regex(g).is_match(&q.path),
        PathSpec::Regex(re) => Regex::new(&format!("^(?:{re})$"))
            .unwrap()
            .is_match(&q.path),
    };
    let host_ok = match r.host {
        None => true,
        Some(h) => match h.strip_prefix("*.") {
            Some(suffix) => {
                q.host.len() > suffix.len() + 1 && q.host.ends_with(&format!(".{suffix}"))
            }
            None => q.host == h,
        },
    };
    let method_ok = r.method.is_none_or(|m| m == q.method);
    let header_ok = match r.header {
        None => true,
        Some("*") => q.header.is_some(),
        Some(v) => q.header == Some(v),
    };
    path_ok && host_ok && method_ok && header_ok
}

/// `/a/*/**` -> `^/a/[^/]+(/.*)?$`: `*` is one non-empty segment, a trailing `**` any rest.
fn glob_regex(g: &str) -> Regex {
    let (body, rest) = match g.strip_suffix("/**") {
        Some(b) => (b, true),
        None => (g, false),
    };
    let mut re = String::from("^");
    for part in body.split('/').skip(1) {
        re.push('/');
        re.push_str(&if part == "*" {
            "[^/]+".to_string()
        } else {
            regex::escape(part)
        });
    }
    if rest {
        re.push_str("(/.*)?");
    }
    re.push('$');
    Regex::new(&re).unwrap()
}

fn precedence(k: usize, r: &RouteSpec) -> (u8, Reverse<usize>, u8, Reverse<usize>, usize) {
    let (kind, literal) = match &r.path {
        PathSpec::Exact(p) => (0, p.len()),
        PathSpec::Prefix(p) => (1, p.len()),
        PathSpec::Glob(g) => (1, g.find('*').unwrap_or(g.len())),
        PathSpec::Regex(_) => (2, 0),
        PathSpec::Any => (3, 0),
    };
    let host = match r.host {
        Some(h) if h.starts_with("*.") => 1,
        Some(_) => 0,
        None => 2,
    };
    let conditions = usize::from(r.method.is_some()) + usize::from(r.header.is_some());
    (kind, Reverse(literal), host, Reverse(conditions), k)
}

fn naive_select(routes: &[RouteSpec], q: &Req) -> Option<String> {
    let mut order: Vec<usize> = (0..routes.len()).collect();
    order.sort_by_key(|&k| precedence(k, &routes[k]));
    order
        .into_iter()
        .find(|&k| naive_matches(&routes[k], q))
        .map(|k| format!("r{k}"))
}

/// The compiled table and the model pick the same route for every request.
fn check_agreement(routes: &[RouteSpec], requests: &[Req]) -> Result<(), TestCaseError> {
    let text = yaml(routes);
    let file = config::parse(&text).map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let compiled = {
        let _g = rt.enter();
        config::compile(CompileInput {
            file,
            version: "t".into(),
            previous: None,
            rt: rt.handle(),
        })
    }
    .map(|c| c.runtime)
    .map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
    for q in requests {
        let mut headers = HeaderMap::new();
        if let Some(v) = q.header {
            headers.insert("x-k", HeaderValue::from_static(v));
        }
        let method = Method::from_bytes(q.method.as_bytes()).unwrap();
        let got = compiled
            .routes
            .select(&method, q.host, &q.path, &headers)
            .map(|r| r.id.to_string());
        let want = naive_select(routes, q);
        prop_assert_eq!(got, want, "request {:?}\nconfig:\n{}", q, text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn table_agrees_with_a_linear_scan(
        routes in prop::collection::vec(route_spec(), 1..12),
        requests in prop::collection::vec(request(), 1..24),
    ) {
        check_agreement(&routes, &requests)?;
    }

    #[test]
    fn conditions_agree_with_a_linear_scan(
        routes in prop::collection::vec(crowded_route_spec(), 1..10),
        requests in prop::collection::vec(request().prop_map(|mut q| {
            q.path = if q.path.len() % 2 == 0 { "/a/b".into() } else { "/a/c".into() };
            q
        }), 1..24),
    ) {
        check_agreement(&routes, &requests)?;
    }
    #[test]
    fn glob_never_panics(pattern in ".{0,40}", path in ".{0,60}") {
        if let Ok(g) = Glob::parse(&pattern) {
            let _ = g.matches(&path);
            let _ = g.literal_prefix_len();
            let _ = g.first_literal();
        }
    }

    #[test]
    fn glob_never_panics_on_path_like_input(
        pattern in "(/(\\*\\*|\\*|[a-c]{0,2})){0,5}",
        path in "(/[a-c*]{0,2}){0,6}/?",
    ) {
        if let Ok(g) = Glob::parse(&pattern) {
            let _ = g.matches(&path);
        }
    }
}
