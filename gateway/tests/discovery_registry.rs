//! The built-in registry on the admin port, against the real gateway binary:
//! register, heartbeat, TTL eviction, DELETE, the admin token, reloads, and
//! instances joining and leaving while a client keeps sending requests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::config::{
    AdminConfig, Algorithm, DiscoveryConfig, GatewayConfigBuilder, RegistryDiscoveryConfig,
    RouteBuilder, ServiceBuilder, ADMIN_ADDRESS,
};
use testkit::{wait_until, Backend, GatewayProcess};

/// How long a log line may trail the state a test waited for (the log is written
/// beside a metric or a state change, not before it).
const LOG_WAIT: Duration = Duration::from_secs(5);

const T: Duration = Duration::from_secs(10);

/// `member` and `shop` (registered as `product-service`) from the registry.
fn config_builder(member: ServiceBuilder) -> GatewayConfigBuilder {
    GatewayConfigBuilder::new()
        .admin()
        .service("member", member)
        .service(
            "shop",
            ServiceBuilder::discovery(DiscoveryConfig::Registry(RegistryDiscoveryConfig {
                name: Some("product-service".into()),
            })),
        )
        .route(RouteBuilder::to("shop").prefix("/shop"))
        .route(RouteBuilder::to("member").prefix("/"))
}

fn config() -> String {
    config_builder(ServiceBuilder::registry()).yaml()
}

fn blocking() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn put(gw: &GatewayProcess, service: &str, id: &str, body: Value, token: Option<&str>) -> u16 {
    let mut req = blocking()
        .put(gw.admin_url(&format!("/registry/services/{service}/instances/{id}")))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().unwrap().status().as_u16()
}

fn register(gw: &GatewayProcess, service: &str, id: &str, b: &Backend, ttl: &str) -> u16 {
    put(
        gw,
        service,
        id,
        json!({"address": "127.0.0.1", "port": b.port(), "metadata": {"version": "1"}, "ttl": ttl}),
        None,
    )
}

fn delete(gw: &GatewayProcess, service: &str, id: &str) -> u16 {
    blocking()
        .delete(gw.admin_url(&format!("/registry/services/{service}/instances/{id}")))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn heartbeat(gw: &GatewayProcess, service: &str, id: &str) -> u16 {
    blocking()
        .put(gw.admin_url(&format!(
            "/registry/services/{service}/instances/{id}/heartbeat"
        )))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn get_json(url: String) -> Value {
    blocking().get(url).send().unwrap().json().unwrap()
}

/// Which backend answered `path` (None for a non-200 answer).
fn who(gw: &GatewayProcess, path: &str) -> Option<String> {
    let resp = blocking().get(gw.url(path)).send().ok()?;
    if resp.status() != 200 {
        return None;
    }
    let v: Value = resp.json().ok()?;
    v["backend"].as_str().map(str::to_string)
}

fn instances(gw: &GatewayProcess, service: &str) -> usize {
    get_json(gw.admin_url("/discovery"))["services"][service]["instances"]
        .as_array()
        .map_or(0, Vec::len)
}

/// Behind a load balancer of replicas, `ready_requires_instances: false`: an empty
/// service is listed, but the gateway stays ready (every replica shares it).
#[test]
fn ready_can_leave_empty_services_to_the_alerts() {
    let mut admin = AdminConfig::new(ADMIN_ADDRESS);
    admin.ready_requires_instances = false;
    let yaml = config_builder(ServiceBuilder::registry())
        .admin_config(admin)
        .yaml();
    let gw = GatewayProcess::start(env!("CARGO_BIN_EXE_gateway"), &yaml);
    let ready = blocking().get(gw.admin_url("/ready")).send().unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().unwrap();
    let empty: Vec<&str> = ready["services_without_instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(empty, ["member", "shop"], "{ready}");
    // the empty service itself still answers 503
    assert_eq!(blocking().get(gw.url("/x")).send().unwrap().status(), 503);
}

#[test]
fn register_heartbeat_expire_and_delete() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let gw = GatewayProcess::start(env!("CARGO_BIN_EXE_gateway"), &config());

    // empty at start: the JSON 503 and /ready says which service
    let resp = blocking().get(gw.url("/x")).send().unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.text().unwrap().contains("\"error\""));
    let ready = blocking().get(gw.admin_url("/ready")).send().unwrap();
    assert_eq!(ready.status(), 503);

    assert_eq!(register(&gw, "member", "a-1", &a, "30s"), 201);
    assert_eq!(
        register(&gw, "member", "a-1", &a, "30s"),
        200,
        "a second PUT renews"
    );
    // a registration takes traffic as soon as its PUT has answered
    assert_eq!(who(&gw, "/x").as_deref(), Some("a"), "{}", gw.log());

    // b with a short TTL, kept alive by heartbeats for longer than its TTL
    assert_eq!(register(&gw, "member", "b-1", &b, "1s"), 201);
    assert!(wait_until(T, || instances(&gw, "member") == 2));
    for _ in 0..6 {
        assert_eq!(heartbeat(&gw, "member", "b-1"), 200);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(instances(&gw, "member"), 2, "heartbeats keep b registered");
    let listed = get_json(gw.admin_url("/registry/services/member"));
    assert_eq!(listed["instances"].as_array().unwrap().len(), 2, "{listed}");
    let all = get_json(gw.admin_url("/registry/services"));
    assert_eq!(all["store"], "memory");
    assert_eq!(all["services"]["member"][0]["metadata"]["version"], "1");

    // heartbeats stop: b is evicted once its TTL lapses
    assert!(
        wait_until(T, || instances(&gw, "member") == 1),
        "{}",
        gw.log()
    );
    assert!(gw.wait_for_log("TTL lapsed", LOG_WAIT), "{}", gw.log());
    let b_series = format!("instance=\"127.0.0.1:{}\"", b.port());
    assert!(
        !gw.metrics().contains(&b_series),
        "a removed instance's health series goes too"
    );
    assert!(gw
        .metrics()
        .contains(&format!("instance=\"127.0.0.1:{}\"", a.port())));
    assert_eq!(
        heartbeat(&gw, "member", "b-1"),
        404,
        "an evicted instance must register again"
    );
    for _ in 0..10 {
        assert_eq!(who(&gw, "/x").as_deref(), Some("a"));
    }

    // DELETE deregisters at once
    assert_eq!(delete(&gw, "member", "a-1"), 200);
    assert_eq!(blocking().get(gw.url("/x")).send().unwrap().status(), 503);
    assert_eq!(instances(&gw, "member"), 0);
    assert_eq!(delete(&gw, "member", "a-1"), 404);

    // a registry name other than the service name
    assert_eq!(register(&gw, "product-service", "p-1", &b, "30s"), 201);
    assert!(wait_until(T, || who(&gw, "/shop/list").as_deref() == Some("b")));
    let d = get_json(gw.admin_url("/discovery"));
    assert_eq!(d["services"]["shop"]["discovery"]["source"], "registry");
    assert_eq!(
        d["services"]["shop"]["discovery"]["target"],
        "product-service"
    );
    assert!(gw.metric("gateway_discovery_instances", &[("service", "shop")]) == 1.0);

    // bad registrations are refused with a reason
    let bad = put(&gw, "member", "x", json!({"address": "127.0.0.1"}), None);
    assert_eq!(bad, 400);
    let bad = put(
        &gw,
        "member",
        "x",
        json!({"address": "127.0.0.1", "port": 80, "ttl": "soon"}),
        None,
    );
    assert_eq!(bad, 400);
}

#[test]
fn the_admin_token_protects_writes() {
    let a = Backend::start("a");
    let gw = GatewayProcess::start(
        env!("CARGO_BIN_EXE_gateway"),
        &config_builder(ServiceBuilder::registry())
            .admin_with(|a| a.token = Some("demo-admin-token".into()))
            .yaml(),
    );
    let body = json!({"address": "127.0.0.1", "port": a.port()});
    assert_eq!(put(&gw, "member", "a", body.clone(), None), 401);
    assert_eq!(put(&gw, "member", "a", body.clone(), Some("wrong")), 403);
    assert_eq!(delete(&gw, "member", "a"), 401);
    assert_eq!(instances(&gw, "member"), 0);
    assert_eq!(put(&gw, "member", "a", body, Some("demo-admin-token")), 201);
    assert!(wait_until(T, || who(&gw, "/x").as_deref() == Some("a")));
    // reads stay open
    let listed = get_json(gw.admin_url("/registry/services/member"));
    assert_eq!(listed["instances"].as_array().unwrap().len(), 1);
}

#[test]
fn reloads_keep_or_rebuild_the_service_without_losing_instances() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let gw = GatewayProcess::start(env!("CARGO_BIN_EXE_gateway"), &config());
    assert_eq!(register(&gw, "member", "a", &a, "30s"), 201);
    assert!(wait_until(T, || who(&gw, "/x").as_deref() == Some("a")));
    let refreshes = || {
        get_json(gw.admin_url("/discovery"))["services"]["member"]["discovery"]["refreshes"]
            .as_u64()
            .unwrap()
    };

    // a reload that keeps the service keeps its one loop
    let with_other = |member: ServiceBuilder| {
        config_builder(member).route(RouteBuilder::to("member").prefix("/other"))
    };
    let yaml = with_other(ServiceBuilder::registry()).yaml();
    // the loop's first refresh and the one for `a` are done before the reload
    assert!(wait_until(T, || refreshes() >= 2));
    gw.rewrite_config(&yaml);
    assert!(gw.wait_for_log("config reloaded", T), "{}", gw.log());
    let before = refreshes();
    assert_eq!(register(&gw, "member", "b", &b, "30s"), 201);
    assert_eq!(instances(&gw, "member"), 2);
    assert!(wait_until(T, || refreshes() > before));
    // a second loop would refresh on the same change: give it time to show up
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        refreshes(),
        before + 1,
        "one change, one refresh: no duplicate loop"
    );

    // a reload that changes the service rebuilds it with the instances it had
    let yaml = with_other(ServiceBuilder::registry().algorithm(Algorithm::LeastConnections)).yaml();
    gw.rewrite_config(&yaml);
    assert!(
        wait_until(T, || gw.log_count("config reloaded") == 2),
        "{}",
        gw.log()
    );
    assert_eq!(instances(&gw, "member"), 2);
    assert!(who(&gw, "/x").is_some());
    assert_eq!(delete(&gw, "member", "a"), 200);
    assert!(wait_until(T, || instances(&gw, "member") == 1));
    for _ in 0..5 {
        assert_eq!(who(&gw, "/x").as_deref(), Some("b"));
    }
}

#[test]
fn instances_join_and_leave_under_traffic_without_a_failed_request() {
    let a = Backend::start("a");
    let gw = GatewayProcess::start(env!("CARGO_BIN_EXE_gateway"), &config());
    assert_eq!(register(&gw, "member", "a", &a, "30s"), 201);
    assert!(wait_until(T, || who(&gw, "/x").as_deref() == Some("a")));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let url = gw.url("/load");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
            std::thread::spawn(move || {
                let c = blocking();
                // bounded: at most 20 000 requests or until told to stop
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match c.get(&url).send() {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            eprintln!("failed: {}", r.status());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();

    // b and c join, then a leaves gracefully: deregister, drain, stop
    let b = Backend::start("b");
    let c = Backend::start("c");
    assert_eq!(register(&gw, "member", "b", &b, "30s"), 201);
    assert_eq!(register(&gw, "member", "c", &c, "30s"), 201);
    assert!(
        wait_until(T, || b.requests() > 20 && c.requests() > 20),
        "new instances take traffic"
    );
    assert_eq!(delete(&gw, "member", "a"), 200);
    assert!(wait_until(T, || instances(&gw, "member") == 2));
    // a grace period for requests that picked `a` just before the swap, then drain
    std::thread::sleep(Duration::from_millis(200));
    assert!(wait_until(T, || a.in_flight() == 0));
    let a_served = a.requests();
    drop(a);
    // b leaves the same way while c keeps serving
    let d = Backend::start("d");
    assert_eq!(register(&gw, "member", "d", &d, "30s"), 201);
    assert!(wait_until(T, || d.requests() > 20));
    assert_eq!(delete(&gw, "member", "b"), 200);
    assert!(wait_until(T, || instances(&gw, "member") == 2));
    std::thread::sleep(Duration::from_millis(200));
    assert!(wait_until(T, || b.in_flight() == 0));
    drop(b);
    let c_before = c.requests();
    assert!(wait_until(T, || c.requests() > c_before + 50));

    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("requests: {ok} ok, {failed} failed; a served {a_served}");
    assert!(ok > 200, "the client kept sending ({ok})");
    assert_eq!(failed, 0, "no request may fail while instances come and go");
}
