//! The load generator's pacing (`loadtest --rate`) against the real benchmark
//! backend: a paced run sends on its schedule and never more, an unpaced one as
//! fast as answers come. Checks counts the schedule allows, not speed.

use std::net::SocketAddr;
use std::time::Duration;

use benches::loadgen::{self, LoadSpec};
use http::{HeaderValue, Method};

/// The fixed-response backend on a free port, on a thread of its own.
fn backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the backend");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            benches::backend::serve(listener).await;
        });
    });
    addr
}

fn spec(addr: SocketAddr, connections: usize, rate: Option<f64>) -> LoadSpec {
    LoadSpec {
        addr,
        host: HeaderValue::from_static("bench.local"),
        method: Method::GET,
        paths: loadgen::paths(&["/small".to_string()]).expect("a path"),
        body: None,
        tokens: None,
        connections,
        duration: Duration::from_secs(1),
        cpu: None,
        tls: None,
        new_connection_per_request: false,
        rate,
    }
}

#[test]
fn a_paced_run_sends_no_more_than_its_schedule() {
    let addr = backend();
    // 4 connections sharing 200 requests/s: each is due every 20 ms for 1 s
    let paced = loadgen::run(&spec(addr, 4, Some(200.0)), &|| 0.0).expect("a paced run");
    assert_eq!(paced.errors, 0);
    assert!(
        paced.requests <= 200,
        "{} requests: more than the schedule allows",
        paced.requests
    );
    // a connection that falls behind catches up, so a loaded machine still gets
    // most of them
    assert!(
        paced.requests >= 50,
        "{} requests: the schedule starved",
        paced.requests
    );

    // without a rate: back to back, well past the paced run's count
    let free = loadgen::run(&spec(addr, 4, None), &|| 0.0).expect("an unpaced run");
    assert_eq!(free.errors, 0);
    assert!(
        free.requests > paced.requests,
        "unpaced {} vs paced {}",
        free.requests,
        paced.requests
    );
}

#[test]
fn a_rate_too_small_to_schedule_sends_nothing_and_does_not_fail() {
    let addr = backend();
    let r = loadgen::run(&spec(addr, 2, Some(1e-300)), &|| 0.0).expect("a run");
    assert_eq!((r.requests, r.errors), (0, 0));
}
