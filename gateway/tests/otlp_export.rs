//! OTLP span export against the real binary and an in-test OTLP/HTTP receiver: the
//! exported span is the parent the service saw, sampling follows the client's flag
//! and `sample_ratio`, a refusing or hanging collector costs spans (counted), never
//! requests, a reload moves the export, and bad settings are refused by key.

use std::time::Duration;

use testkit::config::{Dur, GatewayConfigBuilder, OtlpConfig, RouteBuilder, ServiceBuilder};
use testkit::{check_config, client, Backend, Echo, GatewayProcess, OtlpMode, OtlpReceiver};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

const PARENT: &str = "00f067aa0ba902b7";

fn otlp(endpoint: String, ratio: f64) -> OtlpConfig {
    OtlpConfig {
        endpoint,
        sample_ratio: ratio,
        service_name: "edge-gateway".into(),
        headers: [("x-api-key".to_string(), "demo-collector-key".to_string())].into(),
        timeout: Dur::from_millis(500),
        queue_size: 64,
        batch_size: 16,
        export_interval: Dur::from_millis(50),
    }
}

fn config(backend: &Backend, export: Option<OtlpConfig>) -> String {
    GatewayConfigBuilder::new()
        .admin()
        .server(move |s| s.tracing.otlp = export)
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        // nothing listens on port 1: connection refused, a 502 from the gateway
        .service(
            "down",
            ServiceBuilder::instances(["127.0.0.1:1".to_string()]),
        )
        .route(RouteBuilder::to("down").id("down").prefix("/down/"))
        .route(RouteBuilder::to("echo").id("traced").prefix("/"))
        .yaml()
}

/// `gateway check` on a config from [`config`] (its ports filled in).
fn check(yaml: &str) -> testkit::CheckOutput {
    let yaml = yaml
        .replace("$HTTP_PORT", "18080")
        .replace("$ADMIN_PORT", "19090");
    check_config(BIN, &yaml)
}

/// A trace id of 32 hex digits, different per `k`.
fn trace_id(k: u32) -> String {
    format!("4bf92f3577b34da6a3ce929d{k:08x}")
}

async fn echo(req: reqwest::RequestBuilder) -> Echo {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// The (trace id, span id, flags) of the `traceparent` the service got.
fn sent(e: &Echo) -> (String, String, String) {
    let tp = e.header("traceparent").expect("a traceparent");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test]
async fn the_exported_span_is_the_services_parent() {
    let backend = Backend::start("echo");
    let collector = OtlpReceiver::start();
    let gw = GatewayProcess::start(BIN, &config(&backend, Some(otlp(collector.url(), 1.0))));
    let c = client();

    // a sampled client parent: one server span, child of the client's, parent of the service's
    let trace = trace_id(1);
    let e = echo(
        c.get(gw.url("/orders/7?x=1"))
            .header("traceparent", format!("00-{trace}-{PARENT}-01"))
            .header("tracestate", "congo=t61rcWkgMzE"),
    )
    .await;
    let (seen_trace, seen_parent, flags) = sent(&e);
    assert_eq!(
        (seen_trace.as_str(), flags.as_str()),
        (trace.as_str(), "01")
    );
    let span = collector
        .wait_for_trace(&trace, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no span exported; gateway log:\n{}", gw.log()));
    assert_eq!(
        span.span_id, seen_parent,
        "the service's parent is the exported span"
    );
    assert_eq!(
        span.parent_span_id, PARENT,
        "the client's span is its parent"
    );
    assert_eq!(span.kind, 2, "a server span");
    assert_eq!(span.name, "GET traced");
    assert_eq!(span.service_name, "edge-gateway");
    assert_eq!(span.trace_state, "congo=t61rcWkgMzE");
    assert_eq!(span.attr("http.request.method"), Some("GET"));
    assert_eq!(span.attr("url.path"), Some("/orders/7"));
    assert_eq!(span.attr("http.response.status_code"), Some("200"));
    assert_eq!(span.attr("gateway.route"), Some("traced"));
    assert_eq!(span.attr("gateway.service"), Some("echo"));
    assert_eq!(
        span.attr("gateway.upstream.instance"),
        Some(backend.addr().as_str())
    );
    assert_eq!(span.attr("gateway.attempts"), Some("1"));
    assert_eq!(span.attr("client.address"), Some("127.0.0.1"));
    let upstream_ms: f64 = span
        .attr("gateway.upstream.duration_ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(upstream_ms >= 0.0 && span.end_unix_nano >= span.start_unix_nano);
    assert_eq!(
        span.attr("gateway.request_id"),
        e.header("x-request-id"),
        "the request id the service saw"
    );
    assert_eq!(span.status_code, 0, "a 200 is not an error");
    // the collector's own header went with the export
    assert!(collector.requests().iter().all(|h| h
        .get("x-api-key")
        .is_some_and(|v| v == "demo-collector-key")
        && h.get("content-type")
            .is_some_and(|v| v == "application/x-protobuf")));

    // an unsampled client parent: nothing recorded, the service is told so
    let unsampled = trace_id(2);
    let e = echo(
        c.get(gw.url("/a"))
            .header("traceparent", format!("00-{unsampled}-{PARENT}-00")),
    )
    .await;
    assert_eq!(sent(&e).2, "00");

    // a trace the gateway starts: sampled at ratio 1.0, and the service is told so
    let e = echo(c.get(gw.url("/b"))).await;
    let (started, span_id, flags) = sent(&e);
    assert_eq!(flags, "01", "sample_ratio 1.0 records every new trace");
    let span = collector
        .wait_for_trace(&started, Duration::from_secs(10))
        .expect("the started trace's span");
    assert_eq!(span.span_id, span_id);
    assert_eq!(span.parent_span_id, "", "a root span");

    // a request the gateway answers itself is a span too, an error when it is a 5xx
    let trace = trace_id(3);
    let resp = c
        .get(gw.url("/down/x"))
        .header("traceparent", format!("00-{trace}-{PARENT}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let span = collector
        .wait_for_trace(&trace, Duration::from_secs(10))
        .expect("a span for a request no instance answered");
    assert_eq!(span.name, "GET down");
    assert_eq!(span.attr("http.response.status_code"), Some("502"));
    assert_eq!(span.status_code, 2, "a 5xx is an error");
    assert!(span.attr("error.type").is_some(), "{:?}", span.attributes);
    assert_eq!(span.attr("gateway.service"), Some("down"));

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        collector.spans().iter().all(|s| s.trace_id != unsampled),
        "an unsampled trace is not exported"
    );
    assert_eq!(
        gw.metric("gateway_trace_spans_dropped_total", &[]),
        0.0,
        "{}",
        gw.metrics()
    );
    assert!(gw.metric("gateway_trace_spans_exported_total", &[]) >= 3.0);
}

#[tokio::test]
async fn ratio_zero_records_only_what_clients_sampled() {
    let backend = Backend::start("echo");
    let collector = OtlpReceiver::start();
    let gw = GatewayProcess::start(BIN, &config(&backend, Some(otlp(collector.url(), 0.0))));
    let c = client();
    for _ in 0..20 {
        let e = echo(c.get(gw.url("/new"))).await;
        assert_eq!(sent(&e).2, "00", "no new trace is sampled at ratio 0");
    }
    let trace = trace_id(9);
    echo(
        c.get(gw.url("/client"))
            .header("traceparent", format!("00-{trace}-{PARENT}-01")),
    )
    .await;
    collector
        .wait_for_trace(&trace, Duration::from_secs(10))
        .expect("the client's sampled trace is recorded whatever the ratio");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(collector.spans().len(), 1, "{:?}", collector.spans());
}

/// A ratio between 0 and 1 samples about that share of new traces, and the flag the
/// service gets says which.
#[tokio::test]
async fn a_ratio_samples_about_its_share() {
    let backend = Backend::start("echo");
    let collector = OtlpReceiver::start();
    let gw = GatewayProcess::start(BIN, &config(&backend, Some(otlp(collector.url(), 0.25))));
    let c = client();
    let mut sampled = Vec::new();
    for _ in 0..400 {
        let (trace, _, flags) = sent(&echo(c.get(gw.url("/r"))).await);
        if flags == "01" {
            sampled.push(trace);
        }
    }
    // 400 draws at p = 0.25: 100 expected, sd ~8.7; 55..145 is beyond 5 sd
    assert!(
        (55..=145).contains(&sampled.len()),
        "{} of 400 sampled at 0.25",
        sampled.len()
    );
    assert!(testkit::wait_until(Duration::from_secs(10), || {
        collector.spans().len() >= sampled.len()
    }));
    let mut exported: Vec<String> = collector.spans().into_iter().map(|s| s.trace_id).collect();
    exported.sort();
    sampled.sort();
    assert_eq!(
        exported, sampled,
        "exactly the traces the services were told are sampled"
    );
}

/// A collector that refuses or hangs costs spans, counted by reason; requests are
/// answered as usual, and export resumes when it is back.
#[tokio::test]
async fn a_failing_collector_costs_spans_not_requests() {
    let backend = Backend::start("echo");
    let collector = OtlpReceiver::start();
    let gw = GatewayProcess::start(BIN, &config(&backend, Some(otlp(collector.url(), 1.0))));
    let c = client();

    collector.set_mode(OtlpMode::Refuse(503));
    for _ in 0..10 {
        echo(c.get(gw.url("/refused"))).await;
    }
    assert!(
        testkit::wait_until(Duration::from_secs(10), || {
            gw.metric(
                "gateway_trace_spans_dropped_total",
                &[("reason", "export_failed")],
            ) >= 10.0
        }),
        "{}",
        gw.metrics()
    );

    // hanging: each export waits for its timeout (500ms) while the queue (64) fills
    collector.set_mode(OtlpMode::Hang);
    let started = std::time::Instant::now();
    for _ in 0..300 {
        echo(c.get(gw.url("/hang"))).await;
    }
    let took = started.elapsed();
    assert!(
        testkit::wait_until(Duration::from_secs(10), || {
            gw.metric(
                "gateway_trace_spans_dropped_total",
                &[("reason", "queue_full")],
            ) > 0.0
        }),
        "300 spans into a queue of 64 behind a hanging collector: some are dropped\n{}",
        gw.metrics()
    );
    assert!(
        took < Duration::from_secs(20),
        "requests did not wait for the collector ({took:?} for 300)"
    );

    collector.set_mode(OtlpMode::Accept);
    let trace = trace_id(5);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    // the queue may still hold spans of the hanging period: keep sending until ours is in
    loop {
        echo(
            c.get(gw.url("/back"))
                .header("traceparent", format!("00-{trace}-{PARENT}-01")),
        )
        .await;
        if collector
            .wait_for_trace(&trace, Duration::from_secs(1))
            .is_some()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "export did not resume\n{}",
            gw.metrics()
        );
    }
}

/// A reload that adds, moves or removes the export applies to the next requests.
#[tokio::test]
async fn reload_moves_the_export() {
    let backend = Backend::start("echo");
    let first = OtlpReceiver::start();
    let second = OtlpReceiver::start();
    let gw = GatewayProcess::start(BIN, &config(&backend, None));
    let c = client();
    let send = |k: u32| {
        let c = c.clone();
        let url = gw.url("/r");
        async move {
            let trace = trace_id(k);
            echo(
                c.get(url)
                    .header("traceparent", format!("00-{trace}-{PARENT}-01")),
            )
            .await;
            trace
        }
    };
    // off: no span anywhere
    let t0 = send(100).await;

    gw.rewrite_config(&config(&backend, Some(otlp(first.url(), 1.0))));
    assert!(
        gw.wait_for_log("config reloaded", Duration::from_secs(10)),
        "{}",
        gw.log()
    );
    let t1 = send(101).await;
    assert!(first.wait_for_trace(&t1, Duration::from_secs(10)).is_some());

    gw.rewrite_config(&config(&backend, Some(otlp(second.url(), 1.0))));
    assert!(testkit::wait_until(Duration::from_secs(10), || {
        gw.metric("gateway_config_reloads_total", &[("result", "success")]) >= 2.0
    }));
    let t2 = send(102).await;
    assert!(second
        .wait_for_trace(&t2, Duration::from_secs(10))
        .is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(first.spans().iter().all(|s| s.trace_id != t2));
    assert!(first
        .spans()
        .iter()
        .chain(second.spans().iter())
        .all(|s| s.trace_id != t0));
}

/// Spans still queued when the gateway stops are sent before it exits (here the
/// export interval is far longer than the test).
#[tokio::test]
async fn spans_queued_at_shutdown_are_sent() {
    let backend = Backend::start("echo");
    let collector = OtlpReceiver::start();
    let mut gw = GatewayProcess::start(
        BIN,
        &config(
            &backend,
            Some(OtlpConfig {
                export_interval: Dur::from_secs(600),
                ..otlp(collector.url(), 1.0)
            }),
        ),
    );
    let trace = trace_id(42);
    echo(
        client()
            .get(gw.url("/last"))
            .header("traceparent", format!("00-{trace}-{PARENT}-01")),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        collector.spans().is_empty(),
        "nothing sent before the interval"
    );
    gw.signal(testkit::libc::SIGTERM);
    assert!(
        gw.wait_exit(Duration::from_secs(30)).is_some(),
        "the gateway did not stop\n{}",
        gw.log()
    );
    assert!(
        collector.spans().iter().any(|s| s.trace_id == trace),
        "the queued span was sent at shutdown\n{}",
        gw.log()
    );
}

#[test]
fn bad_otlp_settings_are_refused_by_key() {
    let backend = Backend::start("echo");
    let cases: Vec<(OtlpConfig, &str)> = vec![
        (
            OtlpConfig {
                endpoint: "otel-collector:4318".into(),
                ..otlp(String::new(), 1.0)
            },
            "server.tracing.otlp.endpoint",
        ),
        (
            otlp("grpc://127.0.0.1:4317".into(), 1.0),
            "server.tracing.otlp.endpoint",
        ),
        (
            otlp("http://127.0.0.1:4318".into(), 1.5),
            "server.tracing.otlp.sample_ratio",
        ),
        (
            otlp("http://127.0.0.1:4318".into(), -0.1),
            "server.tracing.otlp.sample_ratio",
        ),
        (
            OtlpConfig {
                queue_size: 0,
                ..otlp("http://127.0.0.1:4318".into(), 1.0)
            },
            "server.tracing.otlp.queue_size",
        ),
        (
            OtlpConfig {
                batch_size: 65,
                ..otlp("http://127.0.0.1:4318".into(), 1.0)
            },
            "server.tracing.otlp.batch_size",
        ),
        (
            OtlpConfig {
                timeout: Dur::from_secs(0),
                ..otlp("http://127.0.0.1:4318".into(), 1.0)
            },
            "server.tracing.otlp.timeout",
        ),
        (
            OtlpConfig {
                headers: [("bad header".to_string(), "v".to_string())].into(),
                ..otlp("http://127.0.0.1:4318".into(), 1.0)
            },
            "server.tracing.otlp.headers.bad header",
        ),
        (
            OtlpConfig {
                service_name: " ".into(),
                ..otlp("http://127.0.0.1:4318".into(), 1.0)
            },
            "server.tracing.otlp.service_name",
        ),
    ];
    for (bad, key) in cases {
        let out = check(&config(&backend, Some(bad.clone())));
        assert_eq!(out.code, Some(1), "{bad:?} was accepted");
        assert!(
            out.stderr
                .lines()
                .any(|l| l.trim_start().trim_start_matches("- ").starts_with(key)),
            "{key}: {}",
            out.stderr
        );
    }
    // export without propagation has no span to export
    let yaml = GatewayConfigBuilder::new()
        .server(|s| {
            s.tracing.propagate = false;
            s.tracing.otlp = Some(otlp("http://127.0.0.1:4318".into(), 1.0));
        })
        .service("echo", ServiceBuilder::instances([backend.addr()]))
        .route(RouteBuilder::to("echo").prefix("/"))
        .yaml();
    let out = check(&yaml);
    assert!(
        out.stderr.lines().any(|l| l
            .trim_start()
            .trim_start_matches("- ")
            .starts_with("server.tracing.otlp: needs `propagate: true`")),
        "{}",
        out.stderr
    );
    // and a good one passes
    let out = check(&config(
        &backend,
        Some(otlp("http://127.0.0.1:4318".into(), 0.1)),
    ));
    assert!(out.success, "{}", out.stderr);
}
