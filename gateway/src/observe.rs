//! Logging stage: Prometheus metrics and the access log, recorded once per request.
//!
//! Metric handles for a route are resolved when the config is compiled
//! ([`RouteMetrics`]), so the request path does no label lookups.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    Encoder, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    TextEncoder,
};

/// Every metric the gateway core exports (plugins register their own).
pub struct Metrics {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub in_flight: IntGauge,
    pub retries: IntCounterVec,
    pub upstream_healthy: IntGaugeVec,
    pub ejections: IntCounterVec,
    pub upstream_panics: IntCounterVec,
    pub circuit_state: IntGaugeVec,
    pub circuit_transitions: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_info: IntGaugeVec,
    pub no_route: IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn build() -> Result<Metrics, prometheus::Error> {
    Ok(Metrics {
        requests: register_int_counter_vec!(
            "gateway_requests_total",
            "Requests answered, by route, service and status class",
            &["route", "service", "status"]
        )?,
        request_duration: register_histogram_vec!(
            "gateway_request_duration_seconds",
            "Time from request start to the end of the response, by route",
            &["route"],
            LATENCY_BUCKETS.to_vec()
        )?,
        upstream_duration: register_histogram_vec!(
            "gateway_upstream_duration_seconds",
            "Time from upstream selection to the end of the response, by service",
            &["service"],
            LATENCY_BUCKETS.to_vec()
        )?,
        in_flight: register_int_gauge!(
            "gateway_requests_in_flight",
            "Requests being served right now"
        )?,
        retries: register_int_counter_vec!(
            "gateway_retries_total",
            "Upstream attempts retried on another instance, by route",
            &["route"]
        )?,
        upstream_healthy: register_int_gauge_vec!(
            "gateway_upstream_healthy",
            "1 when the instance passes its active health check",
            &["service", "instance"]
        )?,
        ejections: register_int_counter_vec!(
            "gateway_upstream_ejections_total",
            "Instances passively ejected after consecutive failures",
            &["service"]
        )?,
        upstream_panics: register_int_counter_vec!(
            "gateway_upstream_panic_total",
            "Attempts sent to an unavailable instance because none was available (panic mode)",
            &["service"]
        )?,
        circuit_state: register_int_gauge_vec!(
            "gateway_circuit_state",
            "Circuit breaker state of a service: 0 closed, 1 open, 2 half-open",
            &["service"]
        )?,
        circuit_transitions: register_int_counter_vec!(
            "gateway_circuit_transitions_total",
            "Circuit breaker transitions, by service and the state entered (open, half_open, closed)",
            &["service", "to"]
        )?,
        config_reloads: register_int_counter_vec!(
            "gateway_config_reloads_total",
            "Config reload attempts by result (success, failure)",
            &["result"]
        )?,
        config_info: register_int_gauge_vec!(
            "gateway_config_info",
            "The loaded config version (hash of the file), always 1",
            &["version"]
        )?,
        no_route: prometheus::register_int_counter!(
            "gateway_no_route_total",
            "Requests that matched no route (404)"
        )?,
    })
}

/// The process-wide metrics (registered once in the default registry).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    // registration only fails on a duplicate name, which is a programming error
    let m = build().expect("gateway metrics are registered once");
    // export both reload results from zero, so alerts see them before the first reload
    for result in ["success", "failure"] {
        m.config_reloads.with_label_values(&[result]);
    }
    m
});

/// Render every registered metric in the Prometheus text format.
pub fn render() -> String {
    let mut buf = Vec::new();
    let families = prometheus::gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Pre-resolved metric handles for one route.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    /// Indexed by status class 1..=5; slot 0 is for anything else (e.g. 0: no response).
    by_class: [IntCounter; 6],
    duration: Histogram,
    upstream: Histogram,
    retries: IntCounter,
}

impl RouteMetrics {
    pub fn new(route: &str, service: &str) -> Self {
        let m = &*METRICS;
        let class = |c: &str| m.requests.with_label_values(&[route, service, c]);
        Self {
            by_class: [
                class("other"),
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: m.request_duration.with_label_values(&[route]),
            upstream: m.upstream_duration.with_label_values(&[service]),
            retries: m.retries.with_label_values(&[route]),
        }
    }

    pub fn record(&self, status: u16, total: Duration, upstream: Option<Duration>) {
        let class = (status / 100) as usize;
        let slot = if (1..=5).contains(&class) { class } else { 0 };
        self.by_class[slot].inc();
        self.duration.observe(total.as_secs_f64());
        if let Some(u) = upstream {
            self.upstream.observe(u.as_secs_f64());
        }
    }

    pub fn retried(&self) {
        self.retries.inc();
    }
}

/// Mark `version` as the loaded config in `gateway_config_info`.
pub fn set_config_version(previous: Option<&str>, version: &str) {
    if let Some(p) = previous {
        let _ = METRICS.config_info.remove_label_values(&[p]);
    }
    METRICS.config_info.with_label_values(&[version]).set(1);
}

/// One access-log line (target `access`).
pub struct AccessRecord<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub route: &'a str,
    pub service: &'a str,
    pub instance: &'a str,
    pub latency: Duration,
    pub request_id: &'a str,
    /// The W3C trace id (32 hex), `-` when trace propagation is off.
    pub trace_id: &'a str,
    pub client: &'a str,
    pub subject: Option<&'a str>,
    pub error: Option<&'a str>,
}

pub fn access_log(r: &AccessRecord<'_>) {
    tracing::info!(
        target: "access",
        method = r.method,
        path = r.path,
        status = r.status,
        route = r.route,
        service = r.service,
        instance = r.instance,
        latency_ms = (r.latency.as_secs_f64() * 1000.0),
        request_id = r.request_id,
        trace_id = r.trace_id,
        client = r.client,
        subject = r.subject.unwrap_or("-"),
        error = r.error.unwrap_or("-"),
    );
}
