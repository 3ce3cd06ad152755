//! The path policy against the real binary and a backend that records the path it
//! received: every form a common backend (Tomcat/Spring, Go, Node, nginx, Python)
//! could resolve to another path than the router matched is refused with 400
//! `invalid_path` before any backend sees it; legitimate forms pass byte for byte;
//! the router matches the decoded path; `prefix:` matches at segment boundaries;
//! a rewrite's output is checked again.
//!
//! Requests are written on a raw socket: HTTP client libraries resolve `..`, `\`
//! and other forms before sending, which is exactly what an attacker does not do.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;
use testkit::config::{
    jwt_auth, GatewayConfigBuilder, ListenerConfig, RouteBuilder, ServiceBuilder,
};
use testkit::{check_config, Backend, Echo, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const SECRET: &str = "edge-test-secret-0123456789abcdef0123";

/// Each route tags what it forwards with `X-Route`, so a test sees which one served.
fn route(id: &str, prefix: &str) -> RouteBuilder {
    RouteBuilder::to("echo")
        .id(id)
        .prefix(prefix)
        .set_request_header("X-Route", id)
}

fn config(backend: &Backend) -> String {
    GatewayConfigBuilder::new()
        .admin()
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .auth(jwt_auth(SECRET))
        .route(route("admin", "/admin").protected())
        .route(route("member", "/member").strip_prefix("/member"))
        .route(route("pub", "/pub"))
        .route(route("files", "/files/"))
        .route(route("v1", "/v1").rewrite("^/v1/(.*)$", "/api/$1"))
        .route(route("dots", "/dots").rewrite("^/dots/([^/]*)-([^/]*)$", "/d/$1$2"))
        .route(route("rest", "/"))
        .yaml()
}

struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn echo(&self) -> Echo {
        assert_eq!(self.status, 200, "{}", self.body);
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// Send `GET <target>` exactly as given, on a fresh connection.
fn raw_get(gw: &GatewayProcess, target: &[u8]) -> Answer {
    let mut s = std::net::TcpStream::connect(gw.addr()).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n");
    s.write_all(&req).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer for {:?}: {text:?}", lossy(target)));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Answer { status, body }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Forms that reached a backend before the path policy (each routed to the public
/// `pub` or `rest` route and forwarded as sent), with the reason they are refused.
const ATTACKS: &[(&[u8], &str)] = &[
    // Tomcat/Jetty strip `;params`, then resolve `..`: `/pub/..;/admin` is `/admin`
    (b"/pub/..;/admin", "path_parameter"),
    (b"/pub/..;x=1/admin", "path_parameter"),
    (b"/pub/%2e%2e;/admin", "path_parameter"),
    (b"/pub/%2E%2E%3B/admin", "path_parameter"),
    (b"/pub/.%2e;/admin", "path_parameter"),
    (b"/pub/a%3b/admin", "path_parameter"),
    (b"/pub;jsessionid=1/x", "path_parameter"),
    // encoded separators: a decoding backend sees more segments than the router did
    (b"/pub/..%2fadmin", "encoded_slash"),
    (b"/pub/..%2Fadmin", "encoded_slash"),
    (b"/pub/%2e%2e%2fadmin", "encoded_slash"),
    (b"/pub/..%5cadmin", "encoded_slash"),
    (b"/pub/..%5Cadmin", "encoded_slash"),
    // Tomcat/IIS split on `\`, Node's WHATWG URL turns it into `/`
    (b"/pub/..\\admin", "backslash"),
    (b"/pub\\..\\admin", "backslash"),
    // a second decode turns these into `..`
    (b"/pub/%252e%252e/admin", "double_encoding"),
    (b"/pub/%252E%252E%252Fadmin", "double_encoding"),
    (b"/pub/%25%32%65%25%32%65/admin", "double_encoding"),
    // NUL and line breaks end or split paths in C, Go and log pipelines
    (b"/pub/%00/admin", "control_character"),
    (b"/pub/a%0d%0aX-Injected:1", "control_character"),
    (b"/pub/a%09b", "control_character"),
    (b"/pub/a%7f", "control_character"),
    // overlong UTF-8 `.` (old Tomcat, IIS), invalid bytes raw or encoded
    (b"/pub/%c0%ae%c0%ae/admin", "not_utf8"),
    (b"/pub/%ff", "not_utf8"),
    // what a decoder may read in more than one way
    (b"/pub/%", "bad_escape"),
    (b"/pub/%2", "bad_escape"),
    (b"/pub/%zz", "bad_escape"),
    // Tomcat, nginx and Go merge `//`: `//admin` is `/admin` there
    (b"//admin/x", "empty_segment"),
    (b"/pub//admin", "empty_segment"),
    // absolute-form targets get the same policy
    (b"http://edge.test/pub/..;/admin", "path_parameter"),
];

/// Dot segments were refused before too; every spelling still is.
const DOT_FORMS: &[&[u8]] = &[
    b"/pub/../admin",
    b"/pub/./x",
    b"/pub/%2e%2e/admin",
    b"/pub/%2E%2E/admin",
    b"/pub/.%2e/admin",
    b"/pub/%2e./admin",
    b"/pub/%2e/x",
    b"/pub/..",
];

#[test]
fn attack_forms_are_refused_with_400_invalid_path_before_any_backend() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend));
    let dots = DOT_FORMS.iter().map(|t| (*t, "dot_segment"));
    for (target, reason) in ATTACKS.iter().copied().chain(dots) {
        let before = gw.metric("gateway_invalid_path_total", &[("reason", reason)]);
        let answer = raw_get(&gw, target);
        assert_eq!(answer.status, 400, "{:?}: {}", lossy(target), answer.body);
        let body = answer.json();
        assert_eq!(body["error"], "invalid_path", "{:?}", lossy(target));
        assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
        let after = gw.metric("gateway_invalid_path_total", &[("reason", reason)]);
        assert_eq!(
            after,
            before + 1.0,
            "{:?} counted as {reason}",
            lossy(target)
        );
    }
    // raw bytes that are not UTF-8 never get this far: the HTTP parser answers 400
    let answer = raw_get(&gw, b"/pub/\xff\xfe");
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(backend.requests(), 0, "a refused path reached the backend");
}

#[test]
fn legitimate_forms_pass_byte_for_byte() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend));
    for (target, path, query) in [
        ("/files/a%20b", "/files/a%20b", ""),
        ("/files/%40me", "/files/%40me", ""),
        (
            "/files/caf%C3%A9/na%C3%AFve",
            "/files/caf%C3%A9/na%C3%AFve",
            "",
        ),
        ("/files/~user/a:b", "/files/~user/a:b", ""),
        ("/files/dir/", "/files/dir/", ""),
        (
            "/files/a..b/.well-known/...",
            "/files/a..b/.well-known/...",
            "",
        ),
        ("/files/100%25", "/files/100%25", ""),
        (
            "/files/x?q=../..%2f%2e%2e;&r=%252e",
            "/files/x",
            "q=../..%2f%2e%2e;&r=%252e",
        ),
        ("/files/x?next=/a//b\\c", "/files/x", "next=/a//b\\c"),
    ] {
        let e = raw_get(&gw, target.as_bytes()).echo();
        assert_eq!(e.path, path, "{target}");
        assert_eq!(e.query, query, "{target}");
        assert_eq!(e.header("x-route"), Some("files"), "{target}");
    }
}

#[test]
fn the_router_matches_the_decoded_path() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend));
    // `/%61dmin` is `/admin` to every decoding backend: it must meet the admin route's
    // auth, not slip through the public catch-all
    for target in ["/%61dmin/users", "/adm%69n/users", "/%61%64%6D%69%6E"] {
        let a = raw_get(&gw, target.as_bytes());
        assert_eq!(a.status, 401, "{target}: {}", a.body);
    }
    // the strip is done on segments, and the rest goes as sent
    let e = raw_get(&gw, b"/m%65mber/a%40b").echo();
    assert_eq!(e.header("x-route"), Some("member"));
    assert_eq!(e.path, "/a%40b");
    assert_eq!(backend.requests(), 1);
}

#[test]
fn prefix_matches_at_segment_boundaries() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend));
    // before: `/memberadmin` matched `prefix: /member` and was forwarded as `/admin`
    let e = raw_get(&gw, b"/memberadmin/x").echo();
    assert_eq!(e.header("x-route"), Some("rest"));
    assert_eq!(e.path, "/memberadmin/x");
    for (target, path) in [
        ("/member", "/"),
        ("/member/", "/"),
        ("/member/login", "/login"),
    ] {
        let e = raw_get(&gw, target.as_bytes()).echo();
        assert_eq!(e.header("x-route"), Some("member"), "{target}");
        assert_eq!(e.path, path, "{target}");
    }
    let a = raw_get(&gw, b"/adminx");
    assert_eq!(a.echo().header("x-route"), Some("rest"));
}

#[test]
fn a_rewrite_is_applied_to_the_decoded_path_and_checked_again() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend));
    let e = raw_get(&gw, b"/v1/a%20b/%C3%A9?x=1").echo();
    assert_eq!(e.path, "/api/a%20b/%C3%A9");
    assert_eq!(e.query, "x=1");
    // `/dots/.-.` is a fine path; its rewrite `/d/..` is not
    let a = raw_get(&gw, b"/dots/.-.");
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.json()["error"], "invalid_path");
    let e = raw_get(&gw, b"/dots/a-b").echo();
    assert_eq!(e.path, "/d/ab");
    assert_eq!(backend.requests(), 2);
}

#[test]
fn config_paths_that_could_never_match_or_rewrite_to_dot_segments_are_errors() {
    let to_s = || RouteBuilder::to("s");
    for (route, want) in [
        (
            to_s().prefix("/a/../b"),
            "routes[0].match.prefix: \"/a/../b\": the path has a `.` or `..` segment",
        ),
        (
            to_s().path("/a%20b"),
            "routes[0].match.path: \"/a%20b\" has a `%`: write the decoded path",
        ),
        (
            to_s().path("/a//b"),
            "routes[0].match.path: \"/a//b\": the path has an empty segment",
        ),
        (
            to_s().strip_prefix("/a;b"),
            "routes[0].strip_prefix: \"/a;b\": the path has a `;`",
        ),
        (
            to_s().rewrite("^/(.*)$", "/x/../$1"),
            "routes[0].rewrite.replacement: \"/x/../$1\": segment \"..\" can produce a `.` or `..` segment",
        ),
        (
            to_s().rewrite("^/(.*)$", "/x/.$1"),
            "routes[0].rewrite.replacement: \"/x/.$1\": segment \".$1\" can produce",
        ),
    ] {
        let yaml = GatewayConfigBuilder::new()
            .listeners(vec![ListenerConfig::new("127.0.0.1:1")])
            .service("s", ServiceBuilder::instances(["127.0.0.1:2"]))
            .route(route)
            .yaml();
        let out = check_config(BIN, &yaml);
        assert!(!out.success, "{yaml} was accepted");
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(text.contains(want), "{yaml}: want {want:?} in\n{text}");
    }
}

#[tokio::test]
async fn http2_requests_get_the_same_policy() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend));
    let c = testkit::h2c_client();
    // the URL parser keeps these as they are (only `.`/`..` segments are resolved)
    for path in ["/pub/..;/admin", "/pub/..%2fadmin", "/pub/%252e%252e/admin"] {
        let resp = c.get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 400, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_path", "{path}");
    }
    let resp = c.get(gw.url("/files/a%20b")).send().await.unwrap();
    let e: Echo = resp.json().await.unwrap();
    assert_eq!(e.path, "/files/a%20b");
    assert_eq!(backend.requests(), 1);
}
