//! The request pipeline end to end against the real binary: route precedence,
//! JSON 404, path rewrites, header rules, X-Forwarded-*, X-Request-Id, metrics.
//!
//! Every route stamps `x-route: <id>` on the upstream request, so the echo
//! backend tells which route a request took.

use testkit::config::{GatewayConfigBuilder, LogFormat, RouteBuilder, ServiceBuilder};
use testkit::{client, Backend, Echo, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// A route to the echo service that tags requests with its id.
fn route(id: &str) -> RouteBuilder {
    RouteBuilder::to("echo")
        .id(id)
        .set_request_header("x-route", id)
}

fn precedence_config(backend: &Backend) -> String {
    // listed in an order that differs from precedence on purpose
    GatewayConfigBuilder::new()
        .admin()
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .route(route("catch-all"))
        .route(route("regex-items").regex("/items/[0-9]+"))
        .route(route("prefix-api").prefix("/api/"))
        .route(route("glob-users").path("/api/users/**"))
        .route(route("prefix-admin").prefix("/api/users/admin"))
        .route(route("exact-me").path("/api/users/me"))
        .route(route("glob-star").path("/shop/*/cart"))
        .route(route("host-none").prefix("/h/"))
        .route(route("host-wild").prefix("/h/").host("*.example.com"))
        .route(route("host-exact").prefix("/h/").host("api.example.com"))
        .route(route("method-any").prefix("/m/"))
        .route(route("method-post").prefix("/m/").methods(&["POST", "put"]))
        .route(route("hdr-none").prefix("/hd/"))
        .route(route("hdr-value").prefix("/hd/").header("x-ver", "2"))
        .route(route("hdr-present").prefix("/hd/").header("x-beta", "*"))
        .yaml()
}

async fn route_of(req: reqwest::RequestBuilder) -> String {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let echo: Echo = resp.json().await.unwrap();
    echo.header("x-route").unwrap_or("<none>").to_string()
}

#[tokio::test]
async fn route_precedence_follows_the_documented_order() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &precedence_config(&backend));
    let c = client();
    let get = |path: &str| c.get(gw.url(path));

    // path kinds: exact > prefix/glob (longest literal) > regex > catch-all
    for (path, want) in [
        ("/api/users/me", "exact-me"),
        ("/api/users/me/x", "glob-users"),
        ("/api/users/7", "glob-users"),
        ("/api/users", "glob-users"),
        ("/api/users/admin/x", "prefix-admin"),
        ("/api/other", "prefix-api"),
        ("/items/42", "regex-items"),
        ("/items/42/x", "catch-all"),
        ("/items/abc", "catch-all"),
        ("/shop/1/cart", "glob-star"),
        // (`/shop//cart` is refused before routing: see edge_paths.rs)
        ("/shop/1/cart/2", "catch-all"),
        ("/", "catch-all"),
    ] {
        assert_eq!(route_of(get(path)).await, want, "path {path}");
    }

    // host: exact > wildcard > none; the port and case do not matter
    for (host, want) in [
        ("api.example.com", "host-exact"),
        ("API.Example.com:8080", "host-exact"),
        ("www.example.com", "host-wild"),
        ("a.b.example.com", "host-wild"),
        ("example.com", "host-none"),
        ("other.org", "host-none"),
    ] {
        assert_eq!(
            route_of(get("/h/x").header("host", host)).await,
            want,
            "host {host}"
        );
    }

    // methods: a route with a method condition wins over one without
    assert_eq!(route_of(c.post(gw.url("/m/x"))).await, "method-post");
    assert_eq!(route_of(c.put(gw.url("/m/x"))).await, "method-post");
    assert_eq!(route_of(get("/m/x")).await, "method-any");
    assert_eq!(route_of(c.delete(gw.url("/m/x"))).await, "method-any");

    // headers: value and presence conditions; ties go to file order
    assert_eq!(
        route_of(get("/hd/x").header("x-ver", "2")).await,
        "hdr-value"
    );
    assert_eq!(
        route_of(get("/hd/x").header("x-ver", "3")).await,
        "hdr-none"
    );
    assert_eq!(
        route_of(get("/hd/x").header("x-beta", "")).await,
        "hdr-present"
    );
    assert_eq!(
        route_of(get("/hd/x").header("x-beta", "1").header("x-ver", "2")).await,
        "hdr-value"
    );
    assert_eq!(route_of(get("/hd/x")).await, "hdr-none");
}

#[tokio::test]
async fn no_route_is_a_json_404_with_the_request_id() {
    let backend = Backend::start("echo");
    let yaml = GatewayConfigBuilder::new()
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .route(RouteBuilder::to("echo").prefix("/api/").methods(&["GET"]))
        .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    for req in [
        c.get(gw.url("/nothing")),
        c.post(gw.url("/api/x")),
        c.get(gw.url("/api")),
    ] {
        let resp = req.header("x-request-id", "req-404").send().await.unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.headers()["x-request-id"], "req-404");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "route_not_found");
        assert_eq!(body["request_id"], "req-404");
        assert!(body["message"].as_str().unwrap().contains("no route"));
    }
    assert_eq!(backend.requests(), 0);
    assert_eq!(c.get(gw.url("/api/x")).send().await.unwrap().status(), 200);
}

fn rewrite_builder(backend: &Backend) -> GatewayConfigBuilder {
    GatewayConfigBuilder::new()
        .admin()
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .route(
            RouteBuilder::to("lb://echo")
                .id("strip")
                .prefix("/svc/strip/")
                .strip_prefix("/svc/strip"),
        )
        .route(
            RouteBuilder::to("echo")
                .id("rewrite")
                .regex("/old/[0-9]+/.*")
                .rewrite("^/old/([0-9]+)/(.*)$", "/new/${2}/by-id/$1"),
        )
        .route(
            RouteBuilder::to("echo")
                .id("headers")
                .prefix("/hdrs/")
                .request_headers(|h| {
                    h.set.insert("x-set".into(), "one".into());
                    h.add.insert("x-add".into(), "extra".into());
                    h.remove.push("x-drop".into());
                })
                .response_headers(|h| {
                    h.set.insert("x-resp-set".into(), "s".into());
                    h.add.insert("cache-control".into(), "no-store".into());
                    h.remove.push("x-backend".into());
                }),
        )
        .route(RouteBuilder::to("echo").id("plain"))
}

fn rewrite_config(backend: &Backend) -> String {
    rewrite_builder(backend).yaml()
}

#[tokio::test]
async fn strip_prefix_and_regex_rewrite_keep_the_query() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &rewrite_config(&backend));
    let c = client();

    let e: Echo = c
        .get(gw.url("/svc/strip/a/b?q=1&r=two"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e.path, "/a/b");
    assert_eq!(e.query, "q=1&r=two");

    let e: Echo = c
        .get(gw.url("/svc/strip/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e.path, "/");

    let e: Echo = c
        .get(gw.url("/old/42/x/y?keep=yes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e.path, "/new/x/y/by-id/42");
    assert_eq!(e.query, "keep=yes");

    let e: Echo = c
        .get(gw.url("/untouched/p?z=9"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e.path, "/untouched/p");
    assert_eq!(e.query, "z=9");
}

#[tokio::test]
async fn header_rules_apply_to_request_and_response() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &rewrite_config(&backend));
    let resp = client()
        .get(gw.url("/hdrs/x"))
        .header("x-set", "from-client")
        .header("x-add", "from-client")
        .header("x-drop", "secret")
        .header("x-other", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["x-resp-set"], "s");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h.get("x-backend").is_none(), "removed response header");
    let e: Echo = resp.json().await.unwrap();
    assert_eq!(e.header_all("x-set"), vec!["one"]);
    assert_eq!(e.header_all("x-add"), vec!["from-client", "extra"]);
    assert!(e.header("x-drop").is_none());
    assert_eq!(e.header("x-other"), Some("kept"));

    // a route without rules passes the backend's headers through
    let resp = client().get(gw.url("/plain")).send().await.unwrap();
    assert_eq!(resp.headers()["x-backend"], "echo");
}

#[tokio::test]
async fn forwarded_headers_are_the_gateways_own() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &rewrite_config(&backend));
    let c = client();

    let e: Echo = c
        .get(gw.url("/p"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(e.header("x-forwarded-proto"), Some("http"));
    assert_eq!(e.header("x-forwarded-host"), Some(gw.addr().as_str()));
    // the Host header reaches the backend as the client sent it
    assert_eq!(e.header("host"), Some(gw.addr().as_str()));

    let e: Echo = c
        .get(gw.url("/p"))
        .header("x-forwarded-for", "203.0.113.9, 198.51.100.2")
        .header("x-forwarded-host", "shop.example.com")
        .header("host", "inner.example.com")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // the client is not a trusted proxy (`server.trusted_proxies`): its chain and
    // host are replaced by what the gateway saw (tests/edge_headers.rs has the rest)
    assert_eq!(e.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(e.header("x-forwarded-host"), Some("inner.example.com"));
    assert_eq!(e.header("x-forwarded-proto"), Some("http"));
}

#[tokio::test]
async fn request_id_is_propagated_or_generated() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &rewrite_config(&backend));
    let c = client();

    let resp = c
        .get(gw.url("/p"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let e: Echo = resp.json().await.unwrap();
    assert_eq!(e.header_all("x-request-id"), vec!["abc-123"]);
    // in any spelling
    let resp = c
        .get(gw.url("/p"))
        .header("X-REQUEST-ID", "def-456")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "def-456");

    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let resp = c.get(gw.url("/p")).send().await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let e: Echo = resp.json().await.unwrap();
        assert_eq!(e.header("x-request-id"), Some(id.as_str()));
        assert_eq!(id.len(), 36, "a UUID: {id}");
        assert!(seen.insert(id), "ids are unique");
    }

    // an unusable client id (too long) is replaced
    let long = "x".repeat(300);
    let resp = c
        .get(gw.url("/p"))
        .header("x-request-id", long.as_str())
        .send()
        .await
        .unwrap();
    assert_ne!(resp.headers()["x-request-id"], long.as_str());

    // the access log names the request id, route and service
    assert!(gw.wait_for_log("abc-123", std::time::Duration::from_secs(5)));
    let log = gw.log();
    let line = log.lines().find(|l| l.contains("abc-123")).unwrap();
    assert!(line.contains("plain") && line.contains("echo"), "{line}");
}

#[tokio::test]
async fn metrics_are_present_and_count() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &rewrite_config(&backend));
    let c = client();
    let before = gw.metric(
        "gateway_requests_total",
        &[("route", "plain"), ("service", "echo"), ("status", "2xx")],
    );
    for _ in 0..5 {
        c.get(gw.url("/p")).send().await.unwrap();
    }
    c.get(gw.url("/p?status=503")).send().await.unwrap();
    c.get(gw.url("/p?status=404")).send().await.unwrap();

    let text = gw.metrics();
    for name in [
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_upstream_duration_seconds_bucket",
        "gateway_requests_in_flight",
        "gateway_retries_total",
        "gateway_upstream_healthy",
        "gateway_config_reloads_total",
        "gateway_config_info",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    let m = |labels: &[(&str, &str)]| gw.metric("gateway_requests_total", labels);
    assert_eq!(
        m(&[("route", "plain"), ("status", "2xx")]) - before,
        5.0,
        "2xx counted"
    );
    assert_eq!(m(&[("route", "plain"), ("status", "5xx")]), 1.0);
    assert_eq!(m(&[("route", "plain"), ("status", "4xx")]), 1.0);
    assert_eq!(
        gw.metric(
            "gateway_request_duration_seconds_count",
            &[("route", "plain")]
        ),
        7.0
    );
    assert_eq!(
        gw.metric(
            "gateway_upstream_healthy",
            &[("service", "echo"), ("instance", &backend.addr())]
        ),
        1.0
    );
    // the loaded version is the one the admin config view reports
    let view: serde_json::Value = c
        .get(gw.admin_url("/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let version = view["version"].as_str().unwrap();
    assert_eq!(
        gw.metric("gateway_config_info", &[("version", version)]),
        1.0
    );
    assert_eq!(
        c.get(gw.admin_url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gw.admin_url("/ready")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn json_logs_have_one_access_line_per_request() {
    let backend = Backend::start("echo");
    let yaml = rewrite_builder(&backend)
        .server(|s| s.log.format = LogFormat::Json)
        .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    let c = client();
    for k in 0..3 {
        c.get(gw.url("/strip-me"))
            .header("x-request-id", format!("json-{k}"))
            .send()
            .await
            .unwrap();
    }
    assert!(gw.wait_for_log("json-2", std::time::Duration::from_secs(5)));
    let lines: Vec<serde_json::Value> = gw
        .log()
        .lines()
        .filter(|l| l.contains("json-"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "one line per request: {lines:?}");
    for (k, line) in lines.iter().enumerate() {
        assert_eq!(line["request_id"], format!("json-{k}"));
        assert_eq!(line["route"], "plain");
        assert_eq!(line["service"], "echo");
        assert_eq!(line["status"], 200);
        assert_eq!(line["instance"], backend.addr());
        assert_eq!(line["path"], "/strip-me");
        assert!(line["latency_ms"].as_f64().is_some(), "{line}");
    }
}

#[tokio::test]
async fn dot_segments_are_refused_before_routing() {
    let backend = Backend::start("echo");
    let yaml = GatewayConfigBuilder::new()
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .route(RouteBuilder::to("echo").path("/public/**"))
        .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    // raw requests: an HTTP client library would resolve the dots itself
    for path in [
        "/public/../admin/users",
        "/public/./x",
        "/public/%2e%2e/admin",
        "/public/.%2E/admin",
    ] {
        let (status, body) = testkit::http_get(&gw.addr(), path).unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("invalid_path"), "{path}: {body}");
    }
    assert_eq!(backend.requests(), 0);
    let (status, _) = testkit::http_get(&gw.addr(), "/public/.well-known/a..b").unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn admin_config_view_shows_routes_and_services_without_secrets() {
    let backend = Backend::start("echo");
    let yaml = rewrite_builder(&backend)
        .admin_with(|a| a.token = Some("demo-admin-token-not-secret".into()))
        .yaml();
    let gw = GatewayProcess::start(BIN, &yaml);
    let text = client()
        .get(gw.admin_url("/config"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("demo-admin-token"), "{text}");
    let view: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(view["version"].as_str().unwrap().len(), 12);
    let instance = &view["services"]["echo"]["instances"][0];
    assert_eq!(instance["id"], backend.addr());
    assert_eq!(instance["healthy"], true);
    // routes are listed in the order they are tried
    let ids: Vec<&str> = view["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["strip", "headers", "rewrite", "plain"]);
    assert_eq!(view["routes"][0]["service"], "echo");
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &rewrite_config(&backend));
    // a fresh client connection per request: only the gateway can reuse upstream ones
    for _ in 0..20 {
        let (status, _) = testkit::http_get(&gw.addr(), "/pooled").unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(backend.requests(), 20);
    assert!(
        backend.connections() <= 2,
        "20 sequential requests opened {} upstream connections",
        backend.connections()
    );
}

/// Both scheduler choices of `server.threads: 2` serve concurrent clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_serve_with_and_without_work_stealing() {
    let backend = Backend::start("echo");
    for stealing in [true, false] {
        let yaml =
            GatewayConfigBuilder::in_front_of("echo", ServiceBuilder::instances([backend.addr()]))
                .server(move |s| {
                    s.threads = 2;
                    s.work_stealing = stealing;
                })
                .yaml();
        let gw = GatewayProcess::start(BIN, &yaml);
        let c = client();
        let answers = futures::future::join_all((0..64).map(|k| {
            let req = c.get(gw.url(&format!("/w/{k}"))).send();
            async move { req.await.map(|r| r.status().as_u16()).unwrap_or(0) }
        }))
        .await;
        assert!(
            answers.iter().all(|s| *s == 200),
            "work_stealing {stealing}: {answers:?}\n{}",
            gw.log()
        );
    }
}
