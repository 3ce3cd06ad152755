//! Client header hygiene against the real binary: identity headers in every spelling
//! a backend could fold into the same name, method/URL override headers, forwarded
//! headers from untrusted and trusted peers (and the client address derived from
//! them), route conditions and balancer keys that only see vouched-for headers.
//!
//! Configs are JSON (a subset of YAML) built with `serde_json::json!`.

use std::collections::BTreeSet;
use std::time::Duration;

use plugins::auth::mint::{mint_token, MintOptions};
use serde_json::{json, Value};
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

/// A config with an echo service (`instances`), the dev issuer and identity headers;
/// `server` and `routes` from the caller.
fn config(instances: &[&Backend], server: Value, routes: Value, lb: Value) -> String {
    json!({
        "server": server,
        "listeners": [{"address": "127.0.0.1:$HTTP_PORT"}],
        "admin": {"address": "127.0.0.1:$ADMIN_PORT"},
        "services": {"echo": {
            "instances": instances.iter().map(|b| b.addr()).collect::<Vec<_>>(),
            "load_balancer": lb,
        }},
        "auth": {
            "issuers": [{"name": "dev", "issuer": "dev", "algorithms": ["HS256"], "secret": SECRET}],
            "identity": {
                "headers": {"Authenticated-User": "{email}", "X-User-Id": "{sub}"},
                "signature": {"secret": "edge-signature-secret-0123456789"},
            },
        },
        "routes": routes,
    })
    .to_string()
}

fn plain_routes() -> Value {
    json!([
        {"id": "public", "match": {"prefix": "/pub/"}, "service": "echo"},
        {"id": "api", "match": {"prefix": "/api/"}, "service": "echo", "auth": {"jwt": {}}},
    ])
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
    for policy in ["drop", "allow", "reject"] {
        let gw = GatewayProcess::start(
            BIN,
            &config(
                &[&b],
                json!({"headers_with_underscores": policy}),
                plain_routes(),
                json!({}),
            ),
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
    for policy in ["drop", "allow", "reject"] {
        let gw = GatewayProcess::start(
            BIN,
            &config(
                &[&b],
                json!({"headers_with_underscores": policy}),
                plain_routes(),
                json!({}),
            ),
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
    let gw = GatewayProcess::start(BIN, &config(&[&b], json!({}), plain_routes(), json!({})));
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
    let gw = GatewayProcess::start(BIN, &config(&[&b], json!({}), plain_routes(), json!({})));
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
    let routes = json!([{
        "id": "public", "match": {"prefix": "/pub/"}, "service": "echo",
        "rate_limit": {"requests": 1, "per": "1m", "burst": 1, "key": "client_ip"},
    }]);
    let trusted = GatewayProcess::start(
        BIN,
        &config(
            &[&b],
            json!({"trusted_proxies": ["127.0.0.0/8", "10.0.0.0/8"]}),
            routes.clone(),
            json!({}),
        ),
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
    let untrusted = GatewayProcess::start(BIN, &config(&[&b], json!({}), routes, json!({})));
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
    let check = |yaml: String| {
        check_config(
            BIN,
            &yaml
                .replace("$HTTP_PORT", "18080")
                .replace("$ADMIN_PORT", "19090"),
        )
    };
    let routes =
        |headers: Value| json!([{"match": {"prefix": "/", "headers": headers}, "service": "echo"}]);
    let cases = [
        (
            json!({"Authenticated-User": "admin@example.com"}),
            "routes[0].match.headers.Authenticated-User: this condition can never hold: identity and method/URL override headers are removed from every client request before routing",
        ),
        (
            json!({"X-Forwarded-Host": "*"}),
            "routes[0].match.headers.X-Forwarded-Host: this condition can never hold: forwarded headers are removed from clients that are not in `server.trusted_proxies`, and none is listed",
        ),
        (
            json!({"X_Tenant": "*"}),
            "routes[0].match.headers.X_Tenant: this condition can never hold: headers with `_` are dropped or refused (`server.headers_with_underscores`)",
        ),
    ];
    for (headers, want) in cases {
        let out = check(config(&[&b], json!({}), routes(headers), json!({})));
        assert!(!out.success, "{want}");
        assert!(
            out.stdout.contains(want) || out.stderr.contains(want),
            "{want}\n{}{}",
            out.stdout,
            out.stderr
        );
    }
    let bad = check(config(
        &[&b],
        json!({"trusted_proxies": ["10.0.0.0/8", "10.0.0.0/33", "proxy.internal"]}),
        plain_routes(),
        json!({}),
    ));
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
    let ok = check(config(
        &[&b],
        json!({"trusted_proxies": ["10.0.0.0/8"]}),
        routes(json!({"X-Forwarded-Proto": "https"})),
        json!({}),
    ));
    assert!(ok.success, "{}{}", ok.stdout, ok.stderr);
}

#[tokio::test]
async fn consistent_hashing_on_an_identity_header_uses_the_verified_identity() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let gw = GatewayProcess::start(
        BIN,
        &config(
            &[&a, &b],
            json!({}),
            plain_routes(),
            json!({"algorithm": "consistent_hash", "hash_on": {"header": "X-User-Id"}}),
        ),
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
