//! W3C Trace Context end to end against the real binary: the service sees a
//! `traceparent` that continues the client's trace (or a new one), invalid client
//! parents are replaced, `tracestate` passes with a valid parent, the access log
//! names the trace, and `server.tracing.propagate: false` leaves the headers alone.

use std::time::Duration;

use testkit::config::{GatewayConfigBuilder, RouteBuilder, ServiceBuilder};
use testkit::{client, Backend, Echo, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn config(backend: &Backend, propagate: bool) -> String {
    GatewayConfigBuilder::new()
        .server(move |s| s.tracing.propagate = propagate)
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .route(RouteBuilder::to("echo").id("traced").prefix("/"))
        .yaml()
}

async fn echo(req: reqwest::RequestBuilder) -> Echo {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// The fields of a `traceparent` the service got, checked to be valid version 00.
fn parsed(e: &Echo) -> (String, String, String) {
    let all = e.header_all("traceparent");
    assert_eq!(all.len(), 1, "exactly one traceparent: {all:?}");
    let tp = all[0];
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert_eq!(parts[0], "00", "{tp}");
    assert!(hex(parts[1], 32) && parts[1] != "0".repeat(32), "{tp}");
    assert!(hex(parts[2], 16) && parts[2] != "0".repeat(16), "{tp}");
    assert!(hex(parts[3], 2), "{tp}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test]
async fn the_service_continues_the_clients_trace() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend, true));
    let c = client();

    let e = echo(
        c.get(gw.url("/a"))
            .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
            .header("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    )
    .await;
    let (trace, parent, flags) = parsed(&e);
    assert_eq!(trace, TRACE, "the same trace");
    assert_ne!(parent, PARENT, "the gateway's span is the service's parent");
    assert_eq!(flags, "01", "the client's sampling decision is kept");
    assert_eq!(
        e.header_all("tracestate"),
        vec!["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"]
    );
    assert!(
        gw.wait_for_log(TRACE, Duration::from_secs(5)),
        "the access log names the trace: {}",
        gw.log()
    );

    // an unsampled parent stays unsampled
    let e = echo(
        c.get(gw.url("/a"))
            .header("traceparent", format!("00-{TRACE}-{PARENT}-00")),
    )
    .await;
    assert_eq!(parsed(&e).2, "00");
}

#[tokio::test]
async fn a_request_without_a_valid_parent_starts_a_trace() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend, true));
    let c = client();

    let (first, _, flags) = parsed(&echo(c.get(gw.url("/a"))).await);
    assert_eq!(flags, "00", "nothing records the gateway's span");
    let (second, _, _) = parsed(&echo(c.get(gw.url("/a"))).await);
    assert_ne!(first, second, "a new trace per request");
    assert!(
        gw.wait_for_log(&first, Duration::from_secs(5)),
        "{}",
        gw.log()
    );

    for bad in [
        format!("00-{TRACE}-{PARENT}-1"),                   // wrong length
        format!("00-{TRACE}-{PARENT}-01-extra"),            // version 00 has four fields
        format!("00-{}-{PARENT}-01", "0".repeat(32)),       // all-zero trace id
        format!("00-{TRACE}-{}-01", "0".repeat(16)),        // all-zero parent id
        format!("ff-{TRACE}-{PARENT}-01"),                  // the invalid version
        format!("xy-{TRACE}-{PARENT}-01"),                  // not a version
        format!("00-{}-{PARENT}-01", TRACE.to_uppercase()), // uppercase hex
    ] {
        let e = echo(
            c.get(gw.url("/a"))
                .header("traceparent", bad.as_str())
                .header("tracestate", "congo=t61rcWkgMzE"),
        )
        .await;
        let (trace, parent, _) = parsed(&e);
        assert_ne!(trace, TRACE, "{bad} is replaced");
        assert_ne!(parent, PARENT, "{bad} is replaced");
        assert!(
            e.header_all("tracestate").is_empty(),
            "tracestate goes with an invalid parent: {bad}"
        );
    }

    // a tracestate with no traceparent at all names no trace either
    let e = echo(
        c.get(gw.url("/a"))
            .header("TraceState", "congo=t61rcWkgMzE"),
    )
    .await;
    assert!(
        e.header_all("tracestate").is_empty(),
        "{:?}",
        e.header_all("tracestate")
    );
}

#[tokio::test]
async fn with_propagation_off_the_headers_pass_untouched() {
    let backend = Backend::start("echo");
    let gw = GatewayProcess::start(BIN, &config(&backend, false));
    let c = client();

    let bad = format!("00-{}-{PARENT}-01", "0".repeat(32));
    let e = echo(
        c.get(gw.url("/a"))
            .header("traceparent", bad.as_str())
            .header("tracestate", "a=1"),
    )
    .await;
    assert_eq!(e.header_all("traceparent"), vec![bad.as_str()]);
    assert_eq!(e.header_all("tracestate"), vec!["a=1"]);
    let e = echo(c.get(gw.url("/a"))).await;
    assert!(e.header_all("traceparent").is_empty());
    assert!(gw.wait_for_log("trace_id", Duration::from_secs(5)));
    let log = gw.log();
    assert!(
        log.contains("trace_id=\"-\"") || log.contains("trace_id=-"),
        "{log}"
    );
}
