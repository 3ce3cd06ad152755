//! Hot reload and shutdown of the real binary: a changed route under live
//! traffic (no request fails), rejected configs keep the old one serving,
//! SIGHUP, ConfigMap-style symlink swaps, health state kept across a reload,
//! and a graceful SIGTERM that finishes the request in flight.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testkit::config::{
    ms, secs, GatewayConfigBuilder, HealthCheckConfig, ListenerConfig, RouteBuilder,
    ServiceBuilder, HTTPS_ADDRESS,
};
use testkit::{client, libc, wait_until, wait_until_async, Backend, GatewayProcess};

/// How long a log line may trail the state a test waited for (the log is written
/// beside a metric or a state change, not before it).
const LOG_WAIT: Duration = Duration::from_secs(5);

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const RELOAD: Duration = Duration::from_secs(10);

/// `/api/**` goes to `target`; both services exist in every version.
fn config_builder(v1: &Backend, v2: &Backend, api: RouteBuilder) -> GatewayConfigBuilder {
    GatewayConfigBuilder::new()
        .admin()
        .service("v1", ServiceBuilder::instances([v1.addr()]))
        .service("v2", ServiceBuilder::instances([v2.addr()]))
        .route(api.id("api").path("/api/**"))
}

fn config(v1: &Backend, v2: &Backend, target: &str) -> String {
    config_builder(v1, v2, RouteBuilder::to(target)).yaml()
}

async fn served_by(gw: &GatewayProcess, path: &str) -> String {
    let resp = client().get(gw.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["x-backend"].to_str().unwrap().to_string()
}

fn reloads(gw: &GatewayProcess, result: &str) -> f64 {
    gw.metric("gateway_config_reloads_total", &[("result", result)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_route_under_traffic_fails_no_request() {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let gw = GatewayProcess::start(BIN, &config(&v1, &v2, "v1"));
    let stop = Arc::new(AtomicBool::new(false));
    let url = gw.url("/api/items");
    let traffic = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = client();
            let (mut ok, mut failed, mut seen_v2) = (0u32, Vec::new(), 0u32);
            // bounded: stops when told or after 20,000 requests
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok += 1;
                        if r.headers()["x-backend"] == "v2" {
                            seen_v2 += 1;
                        }
                    }
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed, seen_v2)
        })
    };
    assert!(wait_until(RELOAD, || v1.requests() > 20));
    gw.rewrite_config(&config(&v1, &v2, "v2"));
    assert!(wait_until(RELOAD, || v2.requests() > 20), "switched to v2");
    // and back, written in place this time
    gw.rewrite_config_in_place(&config(&v1, &v2, "v1"));
    let v1_before = v1.requests();
    assert!(wait_until(RELOAD, || v1.requests() > v1_before + 20));
    stop.store(true, Ordering::SeqCst);
    let (ok, failed, seen_v2) = traffic.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 60 && seen_v2 > 0, "ok {ok}, v2 {seen_v2}");
    assert_eq!(reloads(&gw, "success"), 2.0);
    assert_eq!(reloads(&gw, "failure"), 0.0);
    assert!(gw.wait_for_log("config reloaded", LOG_WAIT), "{}", gw.log());
}

#[tokio::test]
async fn invalid_config_is_rejected_and_the_old_one_keeps_serving() {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let gw = GatewayProcess::start(BIN, &config(&v1, &v2, "v1"));
    let version = |gw: &GatewayProcess| gw.log_count("config reloaded");

    // a semantic error: unknown service
    gw.rewrite_config(&config(&v1, &v2, "prodcut"));
    assert!(wait_until(RELOAD, || reloads(&gw, "failure") == 1.0));
    let named = "routes[0].service: unknown service \"prodcut\" (known: v1, v2)";
    assert!(gw.wait_for_log(named, LOG_WAIT), "{}", gw.log());
    assert!(
        gw.wait_for_log("the previous config keeps serving", LOG_WAIT),
        "{}",
        gw.log()
    );
    assert_eq!(served_by(&gw, "/api/x").await, "v1");

    // a syntax error, then an unknown key
    gw.rewrite_config("routes: [ {service: v2\n");
    assert!(wait_until(RELOAD, || reloads(&gw, "failure") == 2.0));
    gw.rewrite_config(&config(&v1, &v2, "v2").replace("routes:", "rotues:"));
    assert!(wait_until(RELOAD, || reloads(&gw, "failure") == 3.0));
    assert!(
        gw.wait_for_log("rotues", LOG_WAIT),
        "the unknown key is named"
    );
    assert_eq!(served_by(&gw, "/api/x").await, "v1");
    assert_eq!(version(&gw), 0);

    // a good config is taken again
    gw.rewrite_config(&config(&v1, &v2, "v2"));
    assert!(wait_until(RELOAD, || reloads(&gw, "success") == 1.0));
    assert_eq!(served_by(&gw, "/api/x").await, "v2");
}

#[tokio::test]
async fn sighup_reloads_a_file_the_watch_does_not_see() {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let gw = GatewayProcess::start(BIN, &config(&v1, &v2, "v1"));
    // point gateway.yaml at a file in a subdirectory the (non-recursive) watch ignores
    let real = gw.dir().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("cfg.yaml"), gw.fill(&config(&v1, &v2, "v1"))).unwrap();
    swap_symlink(&gw.config_path(), Path::new("real/cfg.yaml"));
    // let the watch see that swap (same text: nothing to reload) before changing the target
    std::thread::sleep(Duration::from_millis(600));
    std::fs::write(real.join("cfg.yaml"), gw.fill(&config(&v1, &v2, "v2"))).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        reloads(&gw, "success"),
        0.0,
        "the watch cannot see this file"
    );
    assert_eq!(served_by(&gw, "/api/x").await, "v1");

    gw.signal(libc::SIGHUP);
    assert!(gw.wait_for_log("SIGHUP: reloading the config", RELOAD));
    assert!(wait_until(RELOAD, || reloads(&gw, "success") == 1.0));
    assert_eq!(served_by(&gw, "/api/x").await, "v2");
}

#[tokio::test]
async fn configmap_style_symlink_swap_is_seen() {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let gw = GatewayProcess::start(BIN, &config(&v1, &v2, "v1"));
    let dir = gw.dir();
    // the layout Kubernetes mounts: gateway.yaml -> ..data/gateway.yaml, ..data -> ..v1
    for (ts, target) in [("..v1", "v1"), ("..v2", "v2")] {
        std::fs::create_dir(dir.join(ts)).unwrap();
        let text = gw.fill(&config(&v1, &v2, target));
        std::fs::write(dir.join(ts).join("gateway.yaml"), text).unwrap();
    }
    swap_symlink(&dir.join("..data"), Path::new("..v1"));
    swap_symlink(&gw.config_path(), Path::new("..data/gateway.yaml"));
    assert_eq!(served_by(&gw, "/api/x").await, "v1");
    // the update: one atomic rename of ..data
    swap_symlink(&dir.join("..data"), Path::new("..v2"));
    assert!(wait_until(RELOAD, || reloads(&gw, "success") == 1.0));
    assert_eq!(served_by(&gw, "/api/x").await, "v2");
}

/// Atomically make `link` a symlink to `target` (create + rename over).
fn swap_symlink(link: &Path, target: &Path) {
    let name = link.file_name().unwrap().to_string_lossy();
    let tmp = link.with_file_name(format!(".tmp-{name}"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", tmp.display(), target.display()));
    std::fs::rename(&tmp, link)
        .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), link.display()));
}

#[tokio::test]
async fn unchanged_services_keep_their_health_state_across_a_reload() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let base = GatewayConfigBuilder::new()
        .admin()
        .service(
            "s",
            ServiceBuilder::instances([a.addr(), b.addr()]).health_check(HealthCheckConfig {
                interval: ms(200),
                healthy_threshold: 3,
                unhealthy_threshold: 1,
                ..HealthCheckConfig::default()
            }),
        )
        .route(RouteBuilder::to("s"));
    let gw = GatewayProcess::start(BIN, &base.yaml());
    let healthy = |gw: &GatewayProcess| {
        gw.metric(
            "gateway_upstream_healthy",
            &[("service", "s"), ("instance", &b.addr())],
        )
    };
    b.set_healthy(false);
    assert!(wait_until(RELOAD, || healthy(&gw) == 0.0));
    gw.rewrite_config(&base.route(RouteBuilder::to("s").path("/new")).yaml());
    assert!(wait_until(RELOAD, || reloads(&gw, "success") == 1.0));
    // right after the reload b is still out (a rebuilt service would start healthy)
    b.reset_counts();
    for _ in 0..10 {
        let resp = client().get(gw.url("/new")).send().await.unwrap();
        assert_eq!(resp.headers()["x-backend"], "a");
    }
    assert_eq!(b.requests(), 0);
}

#[tokio::test]
async fn restart_only_changes_are_named_in_the_log() {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let gw = GatewayProcess::start(BIN, &config(&v1, &v2, "v1"));
    let moved = config_builder(&v1, &v2, RouteBuilder::to("v2"))
        .listener(ListenerConfig::new(HTTPS_ADDRESS))
        .yaml();
    gw.rewrite_config(&moved);
    assert!(gw.wait_for_log("take effect after a restart", RELOAD));
    // the rest of the change applies
    assert!(wait_until(RELOAD, || reloads(&gw, "success") == 1.0));
    assert_eq!(served_by(&gw, "/api/x").await, "v2");
}

#[tokio::test]
async fn sigterm_drains_the_request_in_flight() {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    v1.set_delay(Duration::from_secs(4));
    let mut gw = GatewayProcess::start(BIN, &config(&v1, &v2, "v1"));
    let slow = tokio::spawn(client().get(gw.url("/api/slow")).send());
    assert!(
        wait_until_async(RELOAD, || async { v1.in_flight() == 1 }).await,
        "request reached the backend"
    );
    gw.signal(libc::SIGTERM);
    // the listener closes at once, while the slow request is still being served
    let addr = gw.addr();
    assert!(wait_until(Duration::from_secs(2), || {
        std::net::TcpStream::connect(&addr).is_err()
    }));
    assert_eq!(v1.in_flight(), 1);
    let resp = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(resp.status(), 200);
    let echo: testkit::Echo = resp.json().await.unwrap();
    assert_eq!(echo.path, "/api/slow");
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .expect("gateway exits");
    assert!(status.success(), "{status}");
    assert!(
        gw.wait_for_log("SIGTERM: draining", LOG_WAIT),
        "{}",
        gw.log()
    );
    // the drained request's access-log line was written out before the exit
    assert!(gw.log().contains("/api/slow"), "{}", gw.log());
    assert!(std::net::TcpStream::connect(gw.addr()).is_err());
}

#[tokio::test]
async fn a_request_in_flight_finishes_under_the_config_it_started_with() {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    // the api route also stamps which config it came from
    let tagged = |target: &str, tag: &str| {
        config_builder(
            &v1,
            &v2,
            RouteBuilder::to(target).set_request_header("x-config", tag),
        )
        .yaml()
    };
    let gw = GatewayProcess::start(BIN, &tagged("v1", "first"));
    let slow = tokio::spawn(client().get(gw.url("/api/slow?delay_ms=1500")).send());
    assert!(wait_until_async(RELOAD, || async { v1.in_flight() == 1 }).await);
    gw.rewrite_config(&tagged("v2", "second"));
    assert!(wait_until(RELOAD, || reloads(&gw, "success") == 1.0));
    let resp = client().get(gw.url("/api/new")).send().await.unwrap();
    let e: testkit::Echo = resp.json().await.unwrap();
    assert_eq!(
        (e.backend.as_str(), e.header("x-config")),
        ("v2", Some("second"))
    );

    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let e: testkit::Echo = resp.json().await.unwrap();
    assert_eq!(
        (e.backend.as_str(), e.header("x-config")),
        ("v1", Some("first"))
    );
}

/// A signal that comes while the gateway starts is handled, not left to its default
/// action (ending the process on the spot): sent as soon as the admin listener is up,
/// before the proxy listeners and the shutdown watch exist, SIGTERM still drains and
/// ends the process cleanly, and a SIGHUP before it does not end it at all.
#[test]
fn signals_during_start_are_handled() {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let yaml = config_builder(&v1, &v2, RouteBuilder::to("v1"))
        .server(|s| {
            s.grace_period = secs(0);
            s.shutdown_timeout = secs(2);
        })
        .yaml();
    for signals in [&[libc::SIGTERM][..], &[libc::SIGHUP, libc::SIGTERM]] {
        let mut gw = GatewayProcess::launch(BIN, &yaml);
        assert!(gw.wait_for_log("admin listener up", RELOAD), "{}", gw.log());
        for &sig in signals {
            gw.signal(sig);
        }
        let status = gw.wait_exit(RELOAD).expect("gateway exits");
        assert!(
            status.success(),
            "{status} after {signals:?}:\n{}",
            gw.log()
        );
        assert!(gw.log().contains("SIGTERM: draining"), "{}", gw.log());
    }
}

#[tokio::test]
async fn the_grace_period_keeps_accepting_after_sigterm() {
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let yaml = config_builder(&v1, &v2, RouteBuilder::to("v1"))
        .server(|s| {
            s.grace_period = secs(3);
            s.shutdown_timeout = secs(5);
        })
        .yaml();
    let mut gw = GatewayProcess::start(BIN, &yaml);
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_for_log("still accepting during the grace period", RELOAD));
    // new connections are still served
    let resp = testkit::client()
        .get(gw.url("/api/during-grace"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .expect("gateway exits");
    assert!(status.success(), "{status}");
}
