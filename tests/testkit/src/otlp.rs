//! An OTLP/HTTP trace receiver (what an OpenTelemetry Collector's `otlphttp` receiver
//! does): `POST /v1/traces` with a protobuf `ExportTraceServiceRequest` on 127.0.0.1,
//! decoded with the OpenTelemetry protocol crate and kept for the test to read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

use crate::serve::Served;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpMode {
    /// 200, spans kept.
    Accept,
    /// This status, spans not kept (a collector refusing or overloaded).
    Refuse(u16),
    /// Never answers (a collector that hangs); spans not kept.
    Hang,
}

/// One span as received.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// Lowercase hex, as in `traceparent`.
    pub trace_id: String,
    pub span_id: String,
    /// Empty when the span has no parent.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind` (2: server).
    pub kind: i32,
    /// Attribute values as text (ints and doubles formatted).
    pub attributes: BTreeMap<String, String>,
    /// OTLP status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// The resource's `service.name`.
    pub service_name: String,
    /// The span's W3C trace state.
    pub trace_state: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Shared {
    mode: Mutex<Option<OtlpMode>>,
    spans: Mutex<Vec<ReceivedSpan>>,
    /// Headers of each export request, in arrival order.
    requests: Mutex<Vec<HeaderMap>>,
}

/// An OTLP/HTTP receiver on 127.0.0.1; stopped on drop.
pub struct OtlpReceiver {
    pub port: u16,
    shared: Arc<Shared>,
    _server: Served,
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn traces(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    shared.requests.lock().unwrap().push(headers);
    let mode = shared.mode.lock().unwrap().unwrap_or(OtlpMode::Accept);
    match mode {
        OtlpMode::Accept => {}
        OtlpMode::Refuse(code) => {
            return StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        }
        OtlpMode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::OK;
        }
    }
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let service_name = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .and_then(|a| a.get("service.name").cloned())
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                out.push(ReceivedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: s.kind,
                    attributes: attributes(&s.attributes),
                    status_code: s.status.as_ref().map_or(0, |st| st.code),
                    service_name: service_name.clone(),
                    trace_state: s.trace_state.clone(),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                });
            }
        }
    }
    shared.spans.lock().unwrap().extend(out);
    StatusCode::OK
}

impl OtlpReceiver {
    pub fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .route("/v1/traces", post(traces))
            .with_state(shared.clone());
        let server = Served::start(router);
        OtlpReceiver {
            port: server.port,
            shared,
            _server: server,
        }
    }

    /// The base URL a config's `endpoint` names (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answer the next export requests this way.
    pub fn set_mode(&self, mode: OtlpMode) {
        *self.shared.mode.lock().unwrap() = Some(mode);
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.spans.lock().unwrap().clone()
    }

    /// The headers of every export request so far (accepted or not).
    pub fn requests(&self) -> Vec<HeaderMap> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Wait until a span of `trace_id` arrived; None after `timeout`.
    pub fn wait_for_trace(&self, trace_id: &str, timeout: Duration) -> Option<ReceivedSpan> {
        let mut found = None;
        crate::wait_until(timeout, || {
            found = self.spans().into_iter().find(|s| s.trace_id == trace_id);
            found.is_some()
        });
        found
    }
}
