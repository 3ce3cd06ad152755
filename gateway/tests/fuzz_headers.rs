//! Fuzz harness for the header rules (stable toolchain, proptest): the client header
//! hygiene of `gateway::edge` followed by a route's `request_headers` rules
//! (compiled from config like any route) and the identity headers, in the order
//! the proxy applies them.
//!
//! For arbitrary header names (identity twins in any case and `_`/`.`/`-` spelling,
//! forwarded and override headers, random token characters) and arbitrary values:
//! never panics, and what would reach a service carries no identity header or twin
//! other than the gateway's own, with the gateway's value; no override header; no
//! forwarded header from an untrusted peer; and no `_` name unless allowed.
//!
//! `FUZZ_CASES` sets the case count per property (default 2000; docs/fuzzing.md).

use std::sync::OnceLock;

use gateway::config::{self, CompileInput};
use gateway::edge::{EdgePolicy, UnderscoreHeaders};
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use testkit::config::{
    identity_headers, jwt_auth, AuthConfig, GatewayConfigBuilder, IdentityConfig, ListenerConfig,
    RouteBuilder, ServiceBuilder, SignatureConfig,
};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

const IDENTITY: &[&str] = &[
    "authenticated-user",
    "x-user-id",
    "x-user-roles",
    "x-gateway-signature",
];
const OVERRIDE: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
];
const FORWARDED: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "true-client-ip",
];

/// The name a CGI-style server would see (written here, independent of the gateway's).
fn folded(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// A spelling of `base`: random case, each `-` as `-`, `_` or `.`.
fn spelling(base: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec((any::<bool>(), 0u8..3), base.len()).prop_map(move |choices| {
        base.chars()
            .zip(choices)
            .map(|(c, (upper, sep))| match c {
                '-' => ['-', '_', '.'][sep as usize],
                c if upper => c.to_ascii_uppercase(),
                c => c,
            })
            .collect()
    })
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(IDENTITY).prop_flat_map(spelling),
        1 => prop::sample::select(OVERRIDE).prop_flat_map(spelling),
        1 => prop::sample::select(FORWARDED).prop_flat_map(spelling),
        2 => "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,24}",
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,40}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn underscores() -> impl Strategy<Value = UnderscoreHeaders> {
    prop_oneof![
        Just(UnderscoreHeaders::Drop),
        Just(UnderscoreHeaders::Reject),
        Just(UnderscoreHeaders::Allow),
    ]
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// One service `a`, the dev issuer with `identity`, and `route`.
fn fuzz_config(route: RouteBuilder, identity: IdentityConfig) -> GatewayConfigBuilder {
    GatewayConfigBuilder::new()
        .listeners(vec![ListenerConfig::new("127.0.0.1:18080")])
        .service("a", ServiceBuilder::instances(["127.0.0.1:18081"]))
        .auth(AuthConfig {
            identity,
            ..jwt_auth("fuzz-secret-0123456789abcdef0123")
        })
        .route(route)
}

/// Three identity headers and their signature.
fn full_identity() -> IdentityConfig {
    let mut headers = identity_headers();
    headers.insert("X-User-Roles".into(), "{roles}".into());
    IdentityConfig {
        headers,
        signature: Some(SignatureConfig::with_secret(
            "fuzz-signature-secret-0123456789",
        )),
        ..IdentityConfig::default()
    }
}

/// A route whose `request_headers` are `set`/`add`/`remove` of arbitrary names and
/// values, compiled like any config; `None` when the compiler refuses it (then every
/// error names its key path).
fn route_rules(
    set: &[(String, String)],
    add: &[(String, String)],
    remove: &[String],
) -> Result<Option<gateway::runtime::RuntimeConfig>, TestCaseError> {
    let route = RouteBuilder::to("a")
        .id("r")
        .prefix("/")
        .request_headers(|h| {
            h.set = set.iter().cloned().collect();
            h.add = add.iter().cloned().collect();
            h.remove = remove.to_vec();
        });
    // JSON (a subset of YAML): arbitrary names and values need no YAML quoting rules
    let text = serde_json::to_string(&fuzz_config(route, full_identity()).build())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let file = match config::parse(&text) {
        Ok(f) => f,
        Err(errors) => {
            for e in &errors {
                prop_assert!(!e.path.is_empty(), "{e:?}");
            }
            return Ok(None);
        }
    };
    let _guard = runtime().enter();
    match config::compile(CompileInput {
        file,
        version: "fuzz".into(),
        previous: None,
        rt: runtime().handle(),
    }) {
        Ok(c) => Ok(Some(c.runtime)),
        Err(errors) => {
            for e in &errors {
                prop_assert!(
                    e.path.starts_with("routes[0].request_headers"),
                    "error not at the rule's key path: {e:?}"
                );
            }
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        // A shrunk failure is saved next to this file and replayed first on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    })]

    /// Client headers -> edge hygiene -> route rules -> identity: what a service sees.
    #[test]
    fn no_identity_twin_reaches_a_service(
        client in prop::collection::vec((header_name(), header_value()), 0..12),
        set in prop::collection::vec((header_name(), "[ -~]{0,12}"), 0..3),
        add in prop::collection::vec((header_name(), "[ -~]{0,12}"), 0..3),
        remove in prop::collection::vec(header_name(), 0..3),
        trusted_peer in any::<bool>(),
        policy in underscores(),
    ) {
        let identity: Vec<HeaderName> =
            IDENTITY.iter().map(|h| HeaderName::from_static(h)).collect();
        let edge = EdgePolicy::new(&identity, Vec::new(), policy);
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        for (name, value) in &client {
            let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) else {
                continue;
            };
            let _ = req.append_header(n, v);
        }
        if edge.sanitize(&mut req, trusted_peer).is_err() {
            // Refused (400 invalid_header): only possible under `reject` with a `_` name.
            prop_assert_eq!(policy, UnderscoreHeaders::Reject);
            prop_assert!(client.iter().any(|(n, _)| n.contains('_')));
            return Ok(());
        }
        for name in req.headers.keys() {
            let f = folded(name.as_str());
            prop_assert!(!IDENTITY.contains(&f.as_str()), "identity header {name} survived the edge");
            prop_assert!(!OVERRIDE.contains(&f.as_str()), "override header {name} survived the edge");
            prop_assert!(trusted_peer || !FORWARDED.contains(&f.as_str()), "forwarded header {name} from an untrusted peer");
            prop_assert!(policy == UnderscoreHeaders::Allow || !name.as_str().contains('_'), "{name} with `_` under {policy:?}");
        }

        let Some(compiled) = route_rules(&set, &add, &remove)? else {
            return Ok(());
        };
        let mut upstream = req.headers.clone();
        for route in compiled.routes.routes() {
            route.request_headers.apply(&mut upstream).expect("within the map's limit");
        }
        // The proxy sets the verified identity last (`forward.rs`).
        let ours = HeaderValue::from_static("gateway-value");
        for h in &identity {
            upstream.insert(h.clone(), ours.clone());
        }
        for name in upstream.keys() {
            let f = folded(name.as_str());
            if IDENTITY.contains(&f.as_str()) {
                prop_assert_eq!(name.as_str(), f.as_str(), "an identity twin reaches the service");
                let values: Vec<&HeaderValue> = upstream.get_all(name).iter().collect();
                prop_assert_eq!(values, vec![&ours]);
            }
        }
    }
}

/// Found by the harness above: a route rule could set an identity twin
/// (`request_headers.set: {authenticated_user: ...}`), which reached the service next
/// to the verified `Authenticated-User`. `gateway check` now refuses it, with the path.
#[test]
fn regression_a_route_rule_cannot_set_an_identity_twin() {
    for (section, name) in [
        ("set", "authenticated_user"),
        ("add", "X.User.Id"),
        ("set", "X-User-Roles"),
        ("add", "x-gateway-signature"),
    ] {
        let route = RouteBuilder::to("a")
            .id("pub")
            .prefix("/pub/")
            .request_headers(|h| {
                let rule = (name.to_string(), "admin@example.com".to_string());
                match section {
                    "set" => h.set.extend([rule]),
                    _ => h.add.extend([rule]),
                }
            });
        let yaml = fuzz_config(route, full_identity()).yaml();
        let out = testkit::check_config(env!("CARGO_BIN_EXE_gateway"), &yaml);
        assert!(!out.success, "{section} {name}: accepted\n{}", out.stdout);
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(
            text.contains(&format!("routes[0].request_headers.{section}.{name}"))
                && text.contains("only the gateway sets identity headers"),
            "{text}"
        );
    }
    // Removing one stays allowed.
    let route = RouteBuilder::to("a")
        .id("pub")
        .prefix("/pub/")
        .request_headers(|h| h.remove.push("X_User_Id".into()));
    let identity = IdentityConfig {
        headers: [("X-User-Id".to_string(), "{sub}".to_string())].into(),
        ..IdentityConfig::default()
    };
    let yaml = fuzz_config(route, identity).yaml();
    let out = testkit::check_config(env!("CARGO_BIN_EXE_gateway"), &yaml);
    assert!(out.success, "{}{}", out.stdout, out.stderr);
}
