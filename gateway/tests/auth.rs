//! Edge authentication end to end against the real binary: every accepted and
//! refused token case, token sources, claim rules, identity headers (spoofed
//! copies stripped on public and protected routes) and their HMAC signature.

use std::collections::BTreeMap;
use std::time::Duration;

use plugins::auth::identity::{verify_signature, ReceivedRequest};
use plugins::auth::mint::{mint_token, MintKey, MintOptions};
use serde_json::{json, Value};
use testkit::config::{
    hs256_issuer, require, secs, AuthConfig, GatewayConfigBuilder, IdentityConfig, IssuerConfig,
    JwtRouteConfig, RevocationConfig, RouteBuilder, ServiceBuilder, SignatureConfig, TokenConfig,
};
use testkit::{check_config, client, Backend, Echo, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const SECRET: &str = testkit::config::TEST_SECRET;
const SIG_SECRET: &str = "signature-secret-0123456789abcdef";

fn key_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn demo_key(name: &str) -> String {
    format!("{}/../config/demo-keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn opts(alg: &str, key: MintKey) -> MintOptions {
    MintOptions {
        alg: alg.into(),
        key,
        sub: "42".into(),
        email: Some("ada@example.com".into()),
        roles: vec!["USER".into()],
        ttl: Duration::from_secs(600),
        iss: Some("dev".into()),
        aud: Some("gateway".into()),
        kid: None,
        jti: true,
        extra: Default::default(),
    }
}

/// An HS256 dev token; `f` adjusts the options (claims in `extra` override).
fn hs(f: impl FnOnce(&mut MintOptions)) -> String {
    let mut o = opts("HS256", MintKey::Secret(SECRET.into()));
    f(&mut o);
    mint_token(&o).unwrap()
}

fn set(o: &mut MintOptions, claim: &str, v: Value) {
    o.extra.insert(claim.into(), v);
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn config(backend: &Backend) -> String {
    let issuer = |name: &str, iss: &str, alg: &str| IssuerConfig {
        issuer: Some(iss.into()),
        ..IssuerConfig::new(name, vec![alg.into()])
    };
    let auth = AuthConfig {
        issuers: vec![
            IssuerConfig {
                audiences: vec!["gateway".into()],
                required_claims: vec!["sub".into()],
                ..hs256_issuer(SECRET)
            },
            IssuerConfig {
                audiences: vec!["gateway".into()],
                public_key_file: Some(demo_key("member-public.pem")),
                ..issuer("member", "demo-member", "RS256")
            },
            IssuerConfig {
                public_key_file: Some(key_path("ed-public.pem")),
                leeway: secs(5),
                ..issuer("ed", "ed", "EdDSA")
            },
        ],
        token: TokenConfig {
            cookie: Some("access_token".into()),
            ..TokenConfig::default()
        },
        identity: IdentityConfig {
            headers: BTreeMap::from([
                ("Authenticated-User".into(), "{email}".into()),
                ("X-User-Id".into(), "{sub}".into()),
                ("X-User-Roles".into(), "{roles}".into()),
            ]),
            strip: vec!["X-Internal-Secret".into()],
            signature: Some(SignatureConfig::with_secret(SIG_SECRET)),
        },
        ..AuthConfig::default()
    };
    let route = |id: &str| RouteBuilder::to("echo").id(id).prefix(&format!("/{id}/"));
    GatewayConfigBuilder::new()
        .admin()
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .auth(auth)
        .route(route("public"))
        .route(route("admin").jwt(require("roles", &["ADMIN", "OPS"])))
        .route(route("member").jwt(JwtRouteConfig {
            issuers: vec!["member".into()],
            ..JwtRouteConfig::default()
        }))
        .route(route("q").id("query").jwt(JwtRouteConfig {
            allow_query_token: true,
            ..JwtRouteConfig::default()
        }))
        .route(route("api").protected())
        .yaml()
}

struct Answer {
    status: u16,
    code: String,
    www: Option<String>,
    echo: Option<Echo>,
}

async fn call(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = resp.json().await.unwrap();
    if status == 200 {
        return Answer {
            status,
            code: String::new(),
            www,
            echo: Some(serde_json::from_value(body).unwrap()),
        };
    }
    assert!(body["request_id"].is_string(), "{body}");
    Answer {
        status,
        code: body["error"].as_str().unwrap_or("").to_string(),
        www,
        echo: None,
    }
}

#[tokio::test]
async fn every_token_case_is_accepted_or_refused_with_its_code() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend));
    let c = client();
    let bearer = |path: &str, t: &str| c.get(gw.url(path)).bearer_auth(t);

    let a = call(c.get(gw.url("/api/x"))).await;
    assert_eq!((a.status, a.code.as_str()), (401, "token_missing"));
    assert_eq!(a.www.as_deref(), Some("Bearer realm=\"gateway\""));

    let ok = hs(|_| {});
    let a = call(bearer("/api/x", &ok)).await;
    assert_eq!(a.status, 200);

    let rsa_pem = std::fs::read(demo_key("member-private.pem")).unwrap();
    let rsa_pub = std::fs::read(demo_key("member-public.pem")).unwrap();
    let ed_pem = std::fs::read(key_path("ed-private.pem")).unwrap();
    let member = |f: &dyn Fn(&mut MintOptions)| {
        let mut o = opts("RS256", MintKey::PrivateKeyPem(rsa_pem.clone()));
        o.iss = Some("demo-member".into());
        f(&mut o);
        mint_token(&o).unwrap()
    };
    let mut ed = opts("EdDSA", MintKey::PrivateKeyPem(ed_pem));
    ed.iss = Some("ed".into());
    ed.aud = None;
    let ed = mint_token(&ed).unwrap();
    // RS256 public key used as an HMAC secret: the classic key-confusion forgery
    let confused = {
        let mut o = opts("HS256", MintKey::Secret(rsa_pub));
        o.iss = Some("demo-member".into());
        mint_token(&o).unwrap()
    };
    let none = {
        let parts: Vec<&str> = ok.split('.').collect();
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1])
    };
    let t = now();

    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/member/x", member(&|_| {}), 200, ""),
        ("/api/x", member(&|_| {}), 200, ""),
        ("/api/x", ed.clone(), 200, ""),
        ("/member/x", ok.clone(), 401, "issuer_unknown"),
        ("/api/x", "not-a-jwt".into(), 401, "token_malformed"),
        ("/api/x", none, 401, "token_malformed"),
        (
            "/api/x",
            hs(|o| set(o, "exp", json!(t - 120))),
            401,
            "token_expired",
        ),
        ("/api/x", hs(|o| set(o, "exp", json!(t - 5))), 200, ""),
        (
            "/api/x",
            hs(|o| set(o, "nbf", json!(t + 120))),
            401,
            "token_not_yet_valid",
        ),
        (
            "/api/x",
            hs(|o| set(o, "iat", json!(t + 120))),
            401,
            "token_not_yet_valid",
        ),
        (
            "/api/x",
            hs(|o| set(o, "exp", Value::Null)),
            401,
            "claim_missing",
        ),
        (
            "/api/x",
            hs(|o| set(o, "sub", Value::Null)),
            401,
            "claim_missing",
        ),
        (
            "/api/x",
            hs(|o| o.aud = Some("elsewhere".into())),
            401,
            "audience_invalid",
        ),
        (
            "/api/x",
            hs(|o| o.iss = Some("stranger".into())),
            401,
            "issuer_unknown",
        ),
        (
            "/api/x",
            hs(|o| o.key = MintKey::Secret(b"wrong-secret-wrong-secret-wrong".to_vec())),
            401,
            "signature_invalid",
        ),
        (
            "/api/x",
            hs(|o| o.alg = "HS384".into()),
            401,
            "algorithm_not_allowed",
        ),
        ("/member/x", confused, 401, "algorithm_not_allowed"),
        ("/admin/x", ok.clone(), 403, "insufficient_claims"),
        (
            "/admin/x",
            hs(|o| o.roles = vec!["USER".into(), "OPS".into()]),
            200,
            "",
        ),
    ];
    for (path, token, status, code) in cases {
        let a = call(bearer(path, &token)).await;
        assert_eq!(
            (a.status, a.code.as_str()),
            (status, code),
            "{path} {token}"
        );
        if status == 401 {
            let www = a.www.clone().unwrap();
            assert!(www.contains("error=\"invalid_token\""), "{www}");
        }
        if status == 403 {
            assert!(a.www.unwrap().contains("insufficient_scope"));
        }
    }

    // a tampered payload keeps the signature of another
    let parts: Vec<&str> = ok.split('.').collect();
    let admin = hs(|o| o.roles = vec!["ADMIN".into()]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        admin.split('.').nth(1).unwrap(),
        parts[2]
    );
    let a = call(bearer("/admin/x", &forged)).await;
    assert_eq!((a.status, a.code.as_str()), (401, "signature_invalid"));

    assert!(
        gw.metric(
            "gateway_auth_failures_total",
            &[("reason", "token_expired")]
        ) >= 1.0
    );
    assert!(
        gw.metric(
            "gateway_auth_failures_total",
            &[("reason", "insufficient_claims")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn token_sources_cookie_and_query_opt_in() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend));
    let c = client();
    let t = hs(|_| {});
    let a = call(
        c.get(gw.url("/api/x"))
            .header("cookie", format!("theme=dark; access_token={t}")),
    )
    .await;
    assert_eq!(a.status, 200);
    let a = call(c.get(gw.url(&format!("/api/x?access_token={t}")))).await;
    assert_eq!(
        (a.status, a.code.as_str()),
        (401, "token_missing"),
        "query needs the route's opt-in"
    );
    let a = call(c.get(gw.url(&format!("/q/x?a=1&access_token={t}&b=2")))).await;
    assert_eq!(a.status, 200);
    // the token read from the URL never reaches the service; other parameters do
    assert_eq!(a.echo.unwrap().query, "a=1&b=2");
    let a = call(c.get(gw.url(&format!("/q/x?access_token={t}")))).await;
    assert_eq!(a.echo.unwrap().query, "");
    let a = call(
        c.get(gw.url("/api/x"))
            .header("authorization", format!("Basic {t}")),
    )
    .await;
    assert_eq!(a.code, "token_missing");
}

#[tokio::test]
async fn the_token_cache_and_refusals_are_counted() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend));
    let c = client();
    let count = |result: &str| gw.metric("gateway_auth_cache_total", &[("result", result)]);
    assert_eq!((count("miss"), count("hit")), (0.0, 0.0));
    let (first, second) = (hs(|_| {}), hs(|o| o.sub = "43".into()));
    for t in [&first, &first, &first, &second, &first] {
        assert_eq!(
            call(c.get(gw.url("/api/x")).bearer_auth(t)).await.status,
            200
        );
    }
    // a token is verified once, then served from the cache
    assert_eq!((count("miss"), count("hit")), (2.0, 3.0));
    // refusals by reason; every reason's series is there from zero
    let refused = |reason: &str| gw.metric("gateway_auth_failures_total", &[("reason", reason)]);
    assert_eq!(refused("token_missing"), 0.0);
    assert_eq!(call(c.get(gw.url("/api/x"))).await.status, 401);
    let expired = hs(|o| set(o, "exp", json!(now() - 3600)));
    for _ in 0..2 {
        assert_eq!(
            call(c.get(gw.url("/api/x")).bearer_auth(&expired))
                .await
                .status,
            401
        );
    }
    assert_eq!(refused("token_missing"), 1.0);
    assert_eq!(refused("token_expired"), 2.0);
    assert_eq!(refused("signature_invalid"), 0.0);
    let metrics = gw.metrics();
    for e in plugins::auth::error::AuthError::ALL {
        let series = format!("gateway_auth_failures_total{{reason=\"{}\"}}", e.code());
        assert!(metrics.contains(&series), "{series} missing");
    }
}

#[tokio::test]
async fn identity_headers_are_injected_signed_and_never_spoofed() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend));
    let c = client();
    let spoof = |req: reqwest::RequestBuilder| {
        req.header("Authenticated-User", "mallory@evil.test")
            .header("X-User-Id", "0")
            .header("x-user-roles", "ADMIN")
            .header("X-Gateway-Signature", "t=1,h=x-user-id,v1=00")
            .header("X-Internal-Secret", "1")
    };

    // public route: every identity header is removed, none injected
    let e = call(spoof(c.get(gw.url("/public/x")))).await.echo.unwrap();
    for h in [
        "authenticated-user",
        "x-user-id",
        "x-user-roles",
        "x-gateway-signature",
        "x-internal-secret",
    ] {
        assert!(
            e.header(h).is_none(),
            "{h} leaked to a public route: {:?}",
            e.headers
        );
    }

    // protected route: only the verified values arrive
    let t = hs(|o| o.roles = vec!["USER".into(), "OPS".into()]);
    let e = call(spoof(c.get(gw.url("/api/x")).bearer_auth(&t)))
        .await
        .echo
        .unwrap();
    assert_eq!(e.header_all("authenticated-user"), vec!["ada@example.com"]);
    assert_eq!(e.header_all("x-user-id"), vec!["42"]);
    assert_eq!(e.header_all("x-user-roles"), vec!["USER,OPS"]);
    assert!(e.header("x-internal-secret").is_none());
    assert_eq!(e.header_all("x-gateway-signature").len(), 1);

    // the service-side helper accepts the gateway's signature for this request, and
    // only with the secret
    let mut headers = http::HeaderMap::new();
    for (k, vs) in &e.headers {
        for v in vs {
            headers.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
    }
    let max = Duration::from_secs(60);
    fn req(headers: &http::HeaderMap) -> ReceivedRequest<'_> {
        ReceivedRequest {
            method: "GET",
            path_and_query: "/api/x",
            headers,
        }
    }
    let id = verify_signature(&req(&headers), "echo", SIG_SECRET.as_bytes(), max).unwrap();
    assert_eq!(id.get("authenticated-user"), Some("ada@example.com"));
    assert_eq!(id.get("X-User-Roles"), Some("USER,OPS"));
    assert!(verify_signature(
        &req(&headers),
        "echo",
        b"another-secret-another-secret",
        max
    )
    .is_err());
    headers.insert("x-user-id", http::HeaderValue::from_static("1"));
    assert!(verify_signature(&req(&headers), "echo", SIG_SECRET.as_bytes(), max).is_err());

    // the access log names the verified subject, and none on a public route
    let tagged = |id: &str, req: reqwest::RequestBuilder| req.header("x-request-id", id);
    call(tagged(
        "subject-log-1",
        c.get(gw.url("/api/x")).bearer_auth(&t),
    ))
    .await;
    call(tagged("subject-log-2", spoof(c.get(gw.url("/public/x"))))).await;
    assert!(gw.wait_for_log("subject-log-2", Duration::from_secs(5)));
    let log = gw.log();
    let line = |id: &str| log.lines().find(|l| l.contains(id)).unwrap_or_default();
    let names = |id: &str, subject: &str| {
        let l = line(id);
        l.contains(&format!("subject=\"{subject}\"")) || l.contains(&format!("subject={subject} "))
    };
    assert!(names("subject-log-1", "42"), "{}", line("subject-log-1"));
    assert!(names("subject-log-2", "-"), "{}", line("subject-log-2"));
}

#[test]
fn config_mistakes_are_reported_with_their_key_path() {
    let issuer = |algorithms: &[&str], f: fn(&mut IssuerConfig)| {
        let mut issuer = IssuerConfig {
            issuer: Some("a".into()),
            ..IssuerConfig::new("a", algorithms.iter().map(|a| a.to_string()).collect())
        };
        f(&mut issuer);
        issuer
    };
    let secret = |i: &mut IssuerConfig| i.secret = Some("s".into());
    let cases = [
        (issuer(&["none"], secret), "auth.issuers[0].algorithms[0]"),
        (
            issuer(&["HS256", "RS256"], secret),
            "auth.issuers[0].algorithms",
        ),
        (issuer(&["RS256"], secret), "auth.issuers[0].secret"),
        (issuer(&["HS256"], |_| {}), "set exactly one key source"),
        (
            issuer(&["HS256"], |i| {
                i.secret = Some("s".into());
                i.jwks_url = Some("http://x".into());
            }),
            "set exactly one key source",
        ),
        (
            issuer(&["RS256"], |i| {
                i.public_key_file = Some("/nonexistent.pem".into())
            }),
            "auth.issuers[0].public_key_file",
        ),
        (
            issuer(&["HS256"], |i| {
                i.secret_env = Some("GATEWAY_TEST_UNSET_VAR".into())
            }),
            "auth.issuers[0].secret_env",
        ),
    ];
    let config = |auth: AuthConfig, route: JwtRouteConfig| {
        GatewayConfigBuilder::new()
            .listeners(Vec::new())
            .service("s", ServiceBuilder::instances(["127.0.0.1:1"]))
            .auth(auth)
            .route(RouteBuilder::to("s").prefix("/").jwt(route))
            .yaml()
    };
    let only_b = JwtRouteConfig {
        issuers: vec!["b".into()],
        ..JwtRouteConfig::default()
    };
    for (issuer, needle) in cases {
        let auth = AuthConfig {
            issuers: vec![issuer.clone()],
            ..AuthConfig::default()
        };
        let out = check_config(BIN, &config(auth, JwtRouteConfig::default()));
        assert!(!out.success, "{issuer:?} passed");
        assert!(out.stderr.contains(needle), "{issuer:?}: {}", out.stderr);
    }
    let a = IssuerConfig {
        secret: Some("s".into()),
        ..IssuerConfig::new("a", vec!["HS256".into()])
    };
    let auth = AuthConfig {
        issuers: vec![a.clone()],
        revocation: Some(RevocationConfig {
            blacklist_key: "nothing".into(),
            ..RevocationConfig::new("http://x")
        }),
        identity: IdentityConfig {
            headers: BTreeMap::from([("X-Id".into(), "{sub".into())]),
            ..IdentityConfig::default()
        },
        ..AuthConfig::default()
    };
    let out = check_config(BIN, &config(auth, only_b.clone()));
    for needle in [
        "auth.revocation.redis_url",
        "auth.revocation.blacklist_key",
        "auth.identity.headers.X-Id",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    let auth = AuthConfig {
        issuers: vec![a],
        ..AuthConfig::default()
    };
    let out = check_config(BIN, &config(auth, only_b));
    assert!(
        out.stderr
            .contains("routes[0].auth.jwt.issuers[0]: unknown issuer \"b\" (known: a)"),
        "{}",
        out.stderr
    );
}

/// The config lines of the delimited auth block of config/reference.yaml.
fn reference_block() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/reference.yaml"
    ))
    .unwrap();
    let start = text.find("# === auth:").expect("auth section begins");
    let end = text[start..]
        .find("# === auth ===")
        .expect("auth section ends");
    text[start..start + end]
        .lines()
        .filter(|l| l.starts_with("# ") && !l.starts_with("# ==="))
        .map(|l| &l[2..])
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_reference_auth_section_compiles() {
    let block = reference_block();
    assert!(block.contains("revocation:") && block.contains("jwks_url:"));
    let yaml = format!(
        "listeners: [{{address: \"127.0.0.1:18080\"}}]\n\
         services: {{order: {{instances: [\"127.0.0.1:1\"]}}}}\n{block}\n"
    );
    let out = check_config(BIN, &yaml);
    assert!(out.success, "{yaml}\n{}{}", out.stdout, out.stderr);
}
