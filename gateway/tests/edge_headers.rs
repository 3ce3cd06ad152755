//! Client header hygiene against the real binary: identity headers in every spelling
//! a backend could fold into the same name, method/URL override headers, forwarded
//! headers from untrusted and trusted peers (and the client address derived from
//! them), route conditions and balancer keys that only see vouched-for headers.
//!

use std::collections::BTreeSet;
use std::time::Duration;

use plugins::auth::mint::{mint_token, MintOptions};
use serde_json::Value;
use testkit::config::{
    identity_headers, jwt_auth, rate_limit, secs, AuthConfig, GatewayConfigBuilder, HashOn,
    IdentityConfig, RateLimitConfig, RateLimitKey, RouteBuilder, ServerConfig, ServiceBuilder,
    SignatureConfig, UnderscoreHeadersConfig,
};
use testkit::{check_config, client, Backend, Echo, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const SECRET: &str = "edge-test-secret-0123456789abcdef0123";

fn token(sub: &str) -> String {
    mint_token(&MintOptions {
        email: Some(format!("{sub}@example.com")),
        roles: vec!["USER".into()],
        ..MintOptions::hs256(SECRET, sub)
    })
    .unwrap()
}

/// A config with the echo service (`service`), the dev issuer and identity headers;
/// `server` settings and routes from the caller.
fn config(service: ServiceBuilder) -> GatewayConfigBuilder {
    GatewayConfigBuilder::new()
        .admin()
        .service("echo", service)
        .auth(AuthConfig {
            identity: IdentityConfig {
                headers: identity_headers(),
                signature: Some(SignatureConfig::with_secret(
                    "edge-signature-secret-0123456789",
                )),
                ..IdentityConfig::default()
            },
            ..jwt_auth(SECRET)
        })
}

fn echo_service(instances: &[&Backend]) -> ServiceBuilder {
    ServiceBuilder::instances(instances.iter().map(|b| b.addr()))
}

/// A public route under `/pub/` and a protected one under `/api/`.
fn plain_routes(config: GatewayConfigBuilder) -> GatewayConfigBuilder {
    config
        .route(RouteBuilder::to("echo").id("public").prefix("/pub/"))
        .route(
            RouteBuilder::to("echo")
                .id("api")
                .prefix("/api/")
                .protected(),
        )
}

fn with_underscores(policy: UnderscoreHeadersConfig) -> impl FnOnce(&mut ServerConfig) {
    move |s| s.headers_with_underscores = policy
}

const POLICIES: [(&str, UnderscoreHeadersConfig); 3] = [
    ("drop", UnderscoreHeadersConfig::Drop),
    ("allow", UnderscoreHeadersConfig::Allow),
    ("reject", UnderscoreHeadersConfig::Reject),
];

fn trusting(proxies: &[&str]) -> impl FnOnce(&mut ServerConfig) {
    let proxies: Vec<String> = proxies.iter().map(|p| p.to_string()).collect();
    move |s| s.trusted_proxies = proxies
}

async fn echo(req: reqwest::RequestBuilder) -> Echo {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Header names the backend received, lowercase.
fn names(e: &Echo) -> BTreeSet<String> {
    e.headers.keys().cloned().collect()
}

/// Every identity spelling a CGI/WSGI/PHP backend folds into `HTTP_AUTHENTICATED_USER`
/// or `HTTP_X_USER_ID`, plus the signature header.
const TWINS: &[&str] = &[
    "Authenticated_User",
    "AUTHENTICATED_USER",
    "authenticated.user",
    "Authenticated-User",
    "X_User_Id",
    "x-user.id",
    "X_USER-ID",
    "X-Gateway-Signature",
    "X_Gateway_Signature",
];

fn folds_to_identity(name: &str) -> bool {
    let f: String = name
        .chars()
        .map(|c| if c == '_' || c == '.' { '-' } else { c })
        .collect::<String>()
        .to_ascii_lowercase();
    ["authenticated-user", "x-user-id", "x-gateway-signature"].contains(&f.as_str())
}

#[tokio::test]
async fn identity_twins_never_reach_a_service_whatever_the_underscore_policy() {
    let b = Backend::start("echo");
    let c = client();
    for (policy, setting) in POLICIES {
        let gw = GatewayProcess::start(
            BIN,
            &plain_routes(config(echo_service(&[&b])).server(with_underscores(setting))).yaml(),
        );
        for path in ["/pub/x", "/api/x"] {
            let mut req = c.get(gw.url(path));
            for name in TWINS {
                req = req.header(*name, "admin@example.com");
            }
            if path == "/api/x" {
                req = req.bearer_auth(token("7"));
            }
            let e = echo(req).await;
            let twins: Vec<_> = names(&e)
                .into_iter()
                .filter(|n| folds_to_identity(n))
                .collect();
            if path == "/pub/x" {
                assert!(twins.is_empty(), "{policy} {path}: {twins:?}");
            } else {
                // only the gateway's own, exact spellings, with the verified values
                assert_eq!(
                    twins,
                    vec!["authenticated-user", "x-gateway-signature", "x-user-id"],
                    "{policy} {path}"
                );
                assert_eq!(e.header_all("authenticated-user"), vec!["7@example.com"]);
                assert_eq!(e.header_all("x-user-id"), vec!["7"]);
            }
        }
    }
}

#[tokio::test]
async fn other_underscore_headers_are_dropped_refused_or_kept_as_configured() {
    let b = Backend::start("echo");
    let c = client();
    let mut seen = Vec::new();
    for (policy, setting) in POLICIES {
        let gw = GatewayProcess::start(
            BIN,
            &plain_routes(config(echo_service(&[&b])).server(with_underscores(setting))).yaml(),
        );
        let resp = c
            .get(gw.url("/pub/x"))
            .header("X_Tenant", "t1")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        seen.push((
            policy,
            status,
            body["error"].as_str().map(String::from),
            body["headers"]["x_tenant"][0].as_str().map(String::from),
        ));
    }
    assert_eq!(
        seen,
        vec![
            ("drop", 200, None, None),
            ("allow", 200, None, Some("t1".into())),
            ("reject", 400, Some("invalid_header".into()), None),
        ]
    );
    assert_eq!(
        b.requests(),
        2,
        "the refused request never reached the service"
    );
}

#[tokio::test]
async fn override_headers_never_reach_a_service() {
    let b = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &plain_routes(config(echo_service(&[&b]))).yaml());
    let e = echo(
        client()
            .get(gw.url("/pub/x"))
            .header("X-HTTP-Method-Override", "DELETE")
            .header("X-HTTP-Method", "DELETE")
            .header("X-Method-Override", "DELETE")
            .header("X-Original-URL", "/admin")
            .header("X-Rewrite-URL", "/admin"),
    )
    .await;
    let leaked: Vec<_> = names(&e)
        .into_iter()
        .filter(|n| n.contains("override") || n.contains("method") || n.contains("url"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    assert_eq!(e.method, "GET");
}

/// Headers a client sends to claim another origin, host or scheme.
fn spoofed(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("X-Forwarded-For", "203.0.113.66")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Port", "443")
        .header("X-Forwarded-Prefix", "/evil")
        .header(
            "Forwarded",
            "for=203.0.113.66;host=evil.example;proto=https",
        )
        .header("X-Real-IP", "203.0.113.66")
        .header("True-Client-IP", "203.0.113.66")
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_client_are_replaced() {
    let b = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &plain_routes(config(echo_service(&[&b]))).yaml());
    let e = echo(spoofed(client().get(gw.url("/pub/x")))).await;
    assert_eq!(e.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(e.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        e.header_all("x-forwarded-host"),
        vec![format!("127.0.0.1:{}", gw.http_port)]
    );
    for gone in [
        "x-forwarded-port",
        "x-forwarded-prefix",
        "forwarded",
        "x-real-ip",
        "true-client-ip",
    ] {
        assert!(e.header(gone).is_none(), "{gone} reached the service");
    }
}

#[tokio::test]
async fn a_trusted_proxy_keeps_its_headers_and_names_the_client() {
    let b = Backend::start("echo");
    let with_route = |config: GatewayConfigBuilder| {
        config.route(
            RouteBuilder::to("echo")
                .id("public")
                .prefix("/pub/")
                .rate_limit(RateLimitConfig {
                    burst: Some(1),
                    ..rate_limit(1, secs(60), RateLimitKey::ClientIp)
                }),
        )
    };
    let trusted = GatewayProcess::start(
        BIN,
        &with_route(config(echo_service(&[&b])).server(trusting(&["127.0.0.0/8", "10.0.0.0/8"])))
            .yaml(),
    );
    let c = client();
    let e = echo(spoofed(c.get(trusted.url("/pub/x")))).await;
    assert_eq!(
        e.header_all("x-forwarded-for"),
        vec!["203.0.113.66, 127.0.0.1"]
    );
    assert_eq!(e.header_all("x-forwarded-proto"), vec!["https"]);
    assert_eq!(e.header_all("x-forwarded-host"), vec!["evil.example"]);
    assert_eq!(e.header_all("x-real-ip"), vec!["203.0.113.66"]);
    // a chain split over several header lines is kept whole
    let e = echo(
        c.get(trusted.url("/pub/y"))
            .header("X-Forwarded-For", "203.0.113.9")
            .header("X-Forwarded-For", "198.51.100.9"),
    )
    .await;
    assert_eq!(
        e.header_all("x-forwarded-for").join(", "),
        "203.0.113.9, 198.51.100.9, 127.0.0.1"
    );

    // the rate limit keys on the client the trusted chain names (a trusted hop in
    // between is skipped): each client has its own budget of one
    let from = |chain: &str| {
        c.get(trusted.url("/pub/x"))
            .header("X-Forwarded-For", chain)
            .send()
    };
    assert_eq!(from("198.51.100.1").await.unwrap().status(), 200);
    assert_eq!(from("198.51.100.1, 10.1.1.1").await.unwrap().status(), 429);
    assert_eq!(from("198.51.100.2").await.unwrap().status(), 200);
    assert_eq!(
        from("198.51.100.1, 198.51.100.3").await.unwrap().status(),
        200,
        "the right-most untrusted hop is the client"
    );
    assert!(
        trusted.wait_for_log("198.51.100.2", Duration::from_secs(5)),
        "the access log names the client, not the proxy"
    );

    // without trusted proxies the same chains are one client: the peer
    let untrusted = GatewayProcess::start(BIN, &with_route(config(echo_service(&[&b]))).yaml());
    let from = |chain: &str| {
        c.get(untrusted.url("/pub/x"))
            .header("X-Forwarded-For", chain)
            .send()
    };
    assert_eq!(from("198.51.100.1").await.unwrap().status(), 200);
    assert_eq!(from("198.51.100.2").await.unwrap().status(), 429);
}

#[test]
fn a_route_condition_on_a_header_removed_before_routing_is_a_config_error() {
    let b = Backend::start("echo");
    // `gateway check` binds nothing: any port numbers do
    let check = |config: GatewayConfigBuilder| {
        check_config(
            BIN,
            &config
                .yaml()
                .replace("$HTTP_PORT", "18080")
                .replace("$ADMIN_PORT", "19090"),
        )
    };
    let route = |name: &str, value: &str| RouteBuilder::to("echo").prefix("/").header(name, value);
    let cases = [
        (
            route("Authenticated-User", "admin@example.com"),
            "routes[0].match.headers.Authenticated-User: this condition can never hold: identity and method/URL override headers are removed from every client request before routing",
        ),
        (
            route("X-Forwarded-Host", "*"),
            "routes[0].match.headers.X-Forwarded-Host: this condition can never hold: forwarded headers are removed from clients that are not in `server.trusted_proxies`, and none is listed",
        ),
        (
            route("X_Tenant", "*"),
            "routes[0].match.headers.X_Tenant: this condition can never hold: headers with `_` are dropped or refused (`server.headers_with_underscores`)",
        ),
    ];
    for (route, want) in cases {
        let out = check(config(echo_service(&[&b])).route(route));
        assert!(!out.success, "{want}");
        assert!(
            out.stdout.contains(want) || out.stderr.contains(want),
            "{want}\n{}{}",
            out.stdout,
            out.stderr
        );
    }
    let bad =
        check(plain_routes(config(echo_service(&[&b])).server(trusting(
            &["10.0.0.0/8", "10.0.0.0/33", "proxy.internal"],
        ))));
    let text = format!("{}{}", bad.stdout, bad.stderr);
    assert!(
        text.contains("server.trusted_proxies[1]: \"10.0.0.0/33\" is not a CIDR or an IP address"),
        "{text}"
    );
    assert!(
        text.contains("server.trusted_proxies[2]: \"proxy.internal\" is not a CIDR"),
        "{text}"
    );
    // with a trusted proxy, a forwarded-header condition is meaningful
    let ok = check(
        config(echo_service(&[&b]))
            .server(trusting(&["10.0.0.0/8"]))
            .route(route("X-Forwarded-Proto", "https")),
    );
    assert!(ok.success, "{}{}", ok.stdout, ok.stderr);
}

#[tokio::test]
async fn consistent_hashing_on_an_identity_header_uses_the_verified_identity() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let gw = GatewayProcess::start(
        BIN,
        &plain_routes(config(
            echo_service(&[&a, &b]).hash_on(HashOn::Header("X-User-Id".into())),
        ))
        .yaml(),
    );
    let c = client();
    let mut per_user = Vec::new();
    // instance ids carry random ports, so where a user lands differs per run: with
    // 32 users, all landing on one of two instances has odds of 2^-31
    for user in (1..=32).map(|u| u.to_string()) {
        let t = token(&user);
        let mut seen = BTreeSet::new();
        for spoof in 0..4 {
            // the client's own X-User-Id is removed before the key is read
            let e = echo(
                c.get(gw.url("/api/x"))
                    .bearer_auth(&t)
                    .header("X-User-Id", format!("spoof-{spoof}")),
            )
            .await;
            seen.insert(e.backend);
        }
        assert_eq!(
            seen.len(),
            1,
            "user {user} moved between instances: {seen:?}"
        );
        per_user.extend(seen);
    }
    let used: BTreeSet<_> = per_user.into_iter().collect();
    assert_eq!(used.len(), 2, "32 users all hashed to one instance");
}
