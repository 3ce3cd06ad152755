//! Circuit breaker and ejection back-off settings through `gateway check`: a
//! breaker with every key compiles, and each bad value is refused with its key path
//! and the message a user will see (all of them in one run).

use testkit::check_config;
use testkit::config::{
    ms, secs, CircuitBreakerConfig, GatewayConfigBuilder, ListenerConfig, PassiveHealthConfig,
    RouteBuilder, ServiceBuilder,
};

/// A listener on a fixed port (`check` binds nothing), service `s` and a route to it.
fn with_service(service: ServiceBuilder) -> String {
    GatewayConfigBuilder::new()
        .listeners(vec![ListenerConfig::new("127.0.0.1:18080")])
        .service("s", service)
        .route(RouteBuilder::to("s").prefix("/"))
        .yaml()
}

fn s() -> ServiceBuilder {
    ServiceBuilder::instances(["127.0.0.1:9001"])
}

fn breaker(f: fn(&mut CircuitBreakerConfig)) -> ServiceBuilder {
    let mut cb = CircuitBreakerConfig::default();
    f(&mut cb);
    s().circuit_breaker(cb)
}

fn check(yaml: &str) -> (bool, String) {
    let out = check_config(env!("CARGO_BIN_EXE_gateway"), yaml);
    (out.success, format!("{}{}", out.stdout, out.stderr))
}

#[test]
fn a_breaker_and_a_back_off_cap_compile() {
    let yaml = with_service(
        breaker(|cb| {
            cb.slow_call_ratio = 0.8;
            cb.slow_call_duration = ms(500);
            cb.minimum_calls = 1;
            cb.half_open_calls = 1;
        })
        .with(|svc| {
            svc.passive_health = PassiveHealthConfig {
                consecutive_failures: 3,
                ejection_time: secs(5),
                max_ejection_time: secs(5),
            }
        }),
    );
    let (ok, out) = check(&yaml);
    assert!(ok, "{yaml}\n{out}");
    // the defaults, from an empty section
    let yaml = with_service(s()).replace("circuit_breaker: null", "circuit_breaker: {}");
    let (ok, out) = check(&yaml);
    assert!(ok && yaml.contains("circuit_breaker: {}"), "{yaml}\n{out}");
}

#[test]
fn bad_breaker_and_back_off_settings_name_the_key() {
    const P: &str = "services.s.circuit_breaker";
    let ratio = "must be a share of calls above 0 and at most 1 (e.g. 0.5)";
    let cases: Vec<(ServiceBuilder, String)> = vec![
        (
            breaker(|cb| cb.failure_ratio = 1.5),
            format!("{P}.failure_ratio: {ratio}"),
        ),
        (
            breaker(|cb| cb.failure_ratio = 0.0),
            format!("{P}.failure_ratio: {ratio}"),
        ),
        (
            breaker(|cb| cb.slow_call_ratio = -0.1),
            format!("{P}.slow_call_ratio: {ratio}"),
        ),
        (
            breaker(|cb| cb.window = ms(0)),
            format!("{P}.window: must be above zero"),
        ),
        (
            breaker(|cb| cb.open_for = ms(0)),
            format!("{P}.open_for: must be above zero"),
        ),
        (
            breaker(|cb| cb.slow_call_duration = ms(0)),
            format!("{P}.slow_call_duration: must be above zero"),
        ),
        (
            breaker(|cb| cb.minimum_calls = 0),
            format!("{P}.minimum_calls: must be at least 1 (no decision on an empty window)"),
        ),
        (
            breaker(|cb| cb.half_open_calls = 0),
            format!(
                "{P}.half_open_calls: must be at least 1 (a probe decides whether the service is back)"
            ),
        ),
        (
            s().with(|svc| {
                svc.passive_health.ejection_time = secs(30);
                svc.passive_health.max_ejection_time = secs(10);
            }),
            "services.s.passive_health.max_ejection_time: must be at least ejection_time (30s): it caps the doubling of repeat ejections".to_string(),
        ),
    ];
    for (service, want) in cases {
        let yaml = with_service(service);
        let (ok, out) = check(&yaml);
        assert!(!ok, "{yaml} should be refused");
        assert!(out.contains(&want), "for {yaml}\nwant: {want}\ngot: {out}");
    }

    // every error at once, each with its path
    let yaml = with_service(breaker(|cb| {
        cb.failure_ratio = 2.0;
        cb.slow_call_ratio = f64::NAN;
        cb.window = ms(0);
        cb.minimum_calls = 0;
    }));
    let (ok, out) = check(&yaml);
    assert!(!ok);
    for key in [
        "failure_ratio",
        "slow_call_ratio",
        "window",
        "minimum_calls",
    ] {
        assert!(out.contains(&format!("{P}.{key}: ")), "{key} in\n{out}");
    }
    // a misspelt key: the text is the input here
    let yaml = with_service(s()).replace(
        "circuit_breaker: null",
        "circuit_breaker: {failure_rate: 0.5}",
    );
    let (ok, out) = check(&yaml);
    assert!(!ok && out.contains("failure_rate"), "{yaml}\n{out}");
}
