//! The fixtures themselves: a backend echoes and obeys its switches; redis-server
//! starts, stops and restarts on its port.

use std::time::Duration;

use testkit::{client, free_port, Backend, Echo, RedisServer};

#[tokio::test]
async fn backend_echoes_and_obeys_switches() {
    let b = Backend::start("one");
    let c = client();
    let resp = c
        .post(b.url("/a/b?x=1"))
        .header("x-test", "v")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-backend"], "one");
    let echo: Echo = resp.json().await.unwrap();
    assert_eq!(echo.backend, "one");
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.path, "/a/b");
    assert_eq!(echo.query, "x=1");
    assert_eq!(echo.header("X-Test"), Some("v"));
    assert_eq!(echo.body_bytes, 5);

    b.set_status(Some(503));
    assert_eq!(c.get(b.url("/")).send().await.unwrap().status(), 503);
    b.set_status(None);
    assert_eq!(
        c.get(b.url("/?status=418")).send().await.unwrap().status(),
        418
    );

    let big = c.get(b.url("/?bytes=1000000")).send().await.unwrap();
    assert_eq!(big.bytes().await.unwrap().len(), 1_000_000);

    assert_eq!(c.get(b.url("/health")).send().await.unwrap().status(), 200);
    b.set_healthy(false);
    assert_eq!(c.get(b.url("/health")).send().await.unwrap().status(), 503);
    assert_eq!(b.health_checks(), 2);
    assert_eq!(b.requests(), 4);
}

#[test]
fn stopped_backend_refuses_connections() {
    let b = Backend::start("gone");
    let addr = b.addr();
    drop(b);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn free_ports_differ() {
    let a = free_port();
    let b = free_port();
    assert_ne!(a, b);
}

#[test]
fn redis_starts_stops_and_restarts_on_its_port() {
    let mut r = RedisServer::start();
    assert_ne!(r.port(), 6379);
    assert_eq!(r.cmd(&["SET", "k", "v"]), "+OK");
    assert!(r.cmd(&["GET", "k"]).ends_with("v"));
    r.stop();
    assert!(!r.is_up());
    r.restart();
    assert!(r.is_up());
    assert!(testkit::wait_until(Duration::from_secs(1), || r.is_up()));
    // nothing persisted across the restart
    assert_eq!(r.cmd(&["GET", "k"]), "$-1");
}
