//! OTLP export of the gateway's span (`server.tracing.otlp`, docs/tracing.md).
//!
//! A request whose trace is sampled ends with one server span (the one whose id the
//! service saw in its `traceparent`): route, service, instance, status, upstream time.
//! The logging stage hands it to a bounded queue without waiting ([`SpanExport::record`]);
//! one task on the control-plane runtime sends the queue to the collector in batches
//! with the OpenTelemetry OTLP/HTTP exporter. A full queue drops the new span, and a
//! failed export drops its batch; both are counted
//! (`gateway_trace_spans_dropped_total{reason}`), so a slow or absent collector never
//! holds a request up.
//!
//! Sampling is parent-based: a client's `traceparent` decides by its sampled flag;
//! a trace the gateway starts is sampled with `sample_ratio`, by its trace id (the
//! OpenTelemetry `TraceIdRatioBased` rule, so every replica decides alike).
//!
//! The export is kept across reloads while its section is unchanged; a changed one
//! starts a new queue and task, and the old task sends what it holds and ends when
//! the last request of the old config is done.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use prometheus::{register_int_counter, register_int_counter_vec, IntCounter, IntCounterVec};
use tokio::sync::{mpsc, oneshot};

use crate::config::file::OtlpConfig;
use crate::config::ConfigError;

struct ExportMetrics {
    exported: IntCounter,
    dropped: IntCounterVec,
}

static METRICS: LazyLock<Option<ExportMetrics>> = LazyLock::new(|| {
    let m = ExportMetrics {
        exported: register_int_counter!(
            "gateway_trace_spans_exported_total",
            "Spans the OTLP collector accepted"
        )
        .ok()?,
        dropped: register_int_counter_vec!(
            "gateway_trace_spans_dropped_total",
            "Spans not exported: queue_full (the export queue was full), export_failed (the collector refused or did not answer)",
            &["reason"]
        )
        .ok()?,
    };
    for reason in ["queue_full", "export_failed"] {
        m.dropped.with_label_values(&[reason]);
    }
    Some(m)
});

/// The largest queue and batch accepted (a span is ~1 KiB in the queue).
const MAX_QUEUE: usize = 1 << 20;

/// One `server.tracing.otlp` section, compiled: the queue and, until activated, the
/// exporter that drains it.
pub struct SpanExport {
    config: OtlpConfig,
    /// `sample_ratio` as a bound on the trace id's low 63 bits.
    ratio_bound: u64,
    tx: mpsc::Sender<SpanData>,
    /// Asks the export task to send everything queued now (at shutdown).
    flush: mpsc::Sender<oneshot::Sender<()>>,
    /// Taken by the first [`SpanExport::activate`].
    drain: Mutex<Option<Drain>>,
    scope: InstrumentationScope,
}

/// What the export task owns.
struct Drain {
    rx: mpsc::Receiver<SpanData>,
    flush: mpsc::Receiver<oneshot::Sender<()>>,
    exporter: SpanExporter,
    batch_size: usize,
    interval: Duration,
}

impl SpanExport {
    /// Build from config, or return `previous` when the section is unchanged.
    pub fn compile(
        cfg: &OtlpConfig,
        previous: Option<&Arc<SpanExport>>,
    ) -> Result<Arc<SpanExport>, Vec<ConfigError>> {
        if let Some(p) = previous.filter(|p| p.config == *cfg) {
            return Ok(p.clone());
        }
        let path = "server.tracing.otlp";
        let mut errors = Vec::new();
        let endpoint = match endpoint_url(&cfg.endpoint) {
            Ok(e) => e,
            Err(msg) => {
                errors.push(ConfigError::new(format!("{path}.endpoint"), msg));
                String::new()
            }
        };
        if !(0.0..=1.0).contains(&cfg.sample_ratio) {
            errors.push(ConfigError::new(
                format!("{path}.sample_ratio"),
                format!(
                    "{} is not a share of traces: use 0.0 (none the gateway starts) to 1.0 (all)",
                    cfg.sample_ratio
                ),
            ));
        }
        if cfg.service_name.trim().is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.service_name"),
                "must not be empty (it names the gateway in the trace view)",
            ));
        }
        for name in cfg.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(ConfigError::new(
                    format!("{path}.headers.{name}"),
                    "is not a valid header name",
                ));
            }
        }
        for (name, value) in &cfg.headers {
            if http::HeaderValue::from_str(value).is_err() {
                errors.push(ConfigError::new(
                    format!("{path}.headers.{name}"),
                    "the value has characters a header cannot carry",
                ));
            }
        }
        if cfg.timeout.get().is_zero() {
            errors.push(ConfigError::new(
                format!("{path}.timeout"),
                "must be above 0s (e.g. \"10s\")",
            ));
        }
        if cfg.export_interval.get() < Duration::from_millis(10) {
            errors.push(ConfigError::new(
                format!("{path}.export_interval"),
                "must be at least 10ms (e.g. \"5s\")",
            ));
        }
        if cfg.queue_size == 0 || cfg.queue_size > MAX_QUEUE {
            errors.push(ConfigError::new(
                format!("{path}.queue_size"),
                format!("{} is out of range (1..={MAX_QUEUE})", cfg.queue_size),
            ));
        }
        if cfg.batch_size == 0 || cfg.batch_size > cfg.queue_size {
            errors.push(ConfigError::new(
                format!("{path}.batch_size"),
                format!(
                    "{} is out of range (1..=queue_size, {})",
                    cfg.batch_size, cfg.queue_size
                ),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let built = SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_timeout(cfg.timeout.get())
            .with_headers(cfg.headers.clone().into_iter().collect())
            .build();
        let mut exporter = match built {
            Ok(e) => e,
            Err(e) => {
                return Err(vec![ConfigError::new(
                    format!("{path}.endpoint"),
                    format!("cannot build the OTLP exporter: {e}"),
                )])
            }
        };
        exporter.set_resource(
            &Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        );
        let (tx, rx) = mpsc::channel(cfg.queue_size);
        let (flush, flush_rx) = mpsc::channel(1);
        Ok(Arc::new(SpanExport {
            ratio_bound: ratio_bound(cfg.sample_ratio),
            config: cfg.clone(),
            tx,
            flush,
            drain: Mutex::new(Some(Drain {
                rx,
                flush: flush_rx,
                exporter,
                batch_size: cfg.batch_size,
                interval: cfg.export_interval.get(),
            })),
            scope: InstrumentationScope::builder("gateway")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }))
    }

    /// Start the export task (once; a reused export already runs).
    pub fn activate(&self, rt: &tokio::runtime::Handle) {
        let drain = match self.drain.lock() {
            Ok(mut d) => d.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(drain) = drain {
            rt.spawn(drain.run());
        }
    }

    /// Whether a trace the gateway starts is recorded (`sample_ratio`, by trace id).
    pub fn sample(&self, trace_id: &[u8; 16]) -> bool {
        within(self.ratio_bound, trace_id)
    }

    /// The instrumentation scope of the gateway's spans.
    pub fn scope(&self) -> &InstrumentationScope {
        &self.scope
    }

    /// Send what is queued now, waiting up to `timeout` (at shutdown, after the last
    /// request: spans are otherwise sent every `export_interval`).
    pub async fn flush(&self, timeout: Duration) {
        let (done, sent) = oneshot::channel();
        let asked = async {
            if self.flush.send(done).await.is_ok() {
                let _ = sent.await;
            }
        };
        if tokio::time::timeout(timeout, asked).await.is_err() {
            tracing::warn!("OTLP export: spans still queued at shutdown were not all sent");
        }
    }

    /// Queue a finished span; never waits. A full queue drops it (counted).
    pub fn record(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            if let Some(m) = METRICS.as_ref() {
                m.dropped.with_label_values(&["queue_full"]).inc();
            }
        }
    }
}

impl Drain {
    /// Send the queue in batches of up to `batch_size`, at least every `interval`
    /// and at once when asked to flush, until every sender is gone (the config was
    /// replaced), then send the rest.
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch_size);
        loop {
            let deadline = tokio::time::Instant::now() + self.interval;
            let mut closed = false;
            let mut flushed = None;
            while batch.len() < self.batch_size {
                let room = self.batch_size - batch.len();
                tokio::select! {
                    n = self.rx.recv_many(&mut batch, room) => {
                        if n == 0 {
                            closed = true;
                            break;
                        }
                    }
                    Some(done) = self.flush.recv() => {
                        flushed = Some(done);
                        break;
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            if flushed.is_some() {
                // everything queued now goes, in as many batches as it takes
                while let Ok(span) = self.rx.try_recv() {
                    batch.push(span);
                    if batch.len() >= self.batch_size {
                        self.send(&mut batch).await;
                    }
                }
            }
            self.send(&mut batch).await;
            if let Some(done) = flushed {
                let _ = done.send(());
            }
            if closed {
                tracing::debug!("OTLP export: config replaced, queue drained");
                return;
            }
        }
    }

    /// Export `batch` (when not empty) and leave it empty.
    async fn send(&self, batch: &mut Vec<SpanData>) {
        if !batch.is_empty() {
            let spans = std::mem::replace(batch, Vec::with_capacity(self.batch_size));
            self.export(spans).await;
        }
    }

    async fn export(&self, spans: Vec<SpanData>) {
        let n = spans.len() as u64;
        match self.exporter.export(spans).await {
            Ok(()) => {
                if let Some(m) = METRICS.as_ref() {
                    m.exported.inc_by(n);
                }
            }
            Err(e) => {
                if let Some(m) = METRICS.as_ref() {
                    m.dropped.with_label_values(&["export_failed"]).inc_by(n);
                }
                tracing::warn!(spans = n, error = %e, "OTLP export failed: spans dropped");
            }
        }
    }
}

/// The collector URL to post to: `http(s)://host[:port]/path`; no path means the
/// standard `/v1/traces`.
fn endpoint_url(raw: &str) -> Result<String, String> {
    let example = "e.g. \"http://otel-collector:4318/v1/traces\"";
    let uri: http::Uri = raw
        .parse()
        .map_err(|e| format!("{raw:?} is not a URL ({e}): {example}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "{raw:?} must start with http:// or https://: {example}"
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{raw:?} names no host: {example}"));
    }
    match uri.path() {
        "" | "/" => Ok(format!("{}/v1/traces", raw.trim_end_matches('/'))),
        _ => Ok(raw.to_string()),
    }
}

/// Whether the trace id's low 63 bits are under `bound`.
fn within(bound: u64, trace_id: &[u8; 16]) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

/// `ratio` of the 63-bit range (OpenTelemetry's `TraceIdRatioBased` threshold).
fn ratio_bound(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio <= 0.0 {
        0
    } else {
        (ratio * (1u64 << 63) as f64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint_url("http://c:4318").as_deref(),
            Ok("http://c:4318/v1/traces")
        );
        assert_eq!(
            endpoint_url("http://c:4318/").as_deref(),
            Ok("http://c:4318/v1/traces")
        );
        assert_eq!(
            endpoint_url("https://c/otlp/v1/traces").as_deref(),
            Ok("https://c/otlp/v1/traces")
        );
        assert!(endpoint_url("c:4318").is_err());
        assert!(endpoint_url("grpc://c:4317").is_err());
        assert!(endpoint_url("not a url").is_err());
    }

    #[test]
    fn ratio_sampling_follows_the_trace_id() {
        let id = |low: u64| {
            let mut t = [0u8; 16];
            t[8..].copy_from_slice(&low.to_be_bytes());
            t
        };
        let half = ratio_bound(0.5);
        assert!(within(half, &id(0)));
        assert!(within(half, &id(((1 << 62) - 1) << 1)));
        assert!(!within(half, &id(1 << 63)));
        assert!(!within(ratio_bound(0.0), &id(0)));
        assert!(within(ratio_bound(1.0), &id(u64::MAX)));
        // about the ratio over many ids
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let hits = (0..100_000)
            .filter(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                within(ratio_bound(0.1), &id(rng))
            })
            .count();
        assert!((9_000..11_000).contains(&hits), "{hits} of 100000 at 0.1");
    }
}
