//! A Eureka server stand-in: `GET /eureka/apps/{APP}` on 127.0.0.1, answering the
//! JSON a Spring Cloud Netflix Eureka server sends (XML, as a real one does by
//! default, unless the client asks for JSON), with whatever payload a test sets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::serve::Served;

#[derive(Default)]
struct Shared {
    /// app name (upper case) -> the JSON body of `GET /eureka/apps/{app}`
    apps: Mutex<std::collections::HashMap<String, Value>>,
    hits: AtomicU64,
}

/// A Eureka server stand-in on 127.0.0.1 serving whatever payload the test sets;
/// stopped on drop.
pub struct EurekaServer {
    pub port: u16,
    shared: Arc<Shared>,
    _server: Served,
}

async fn app(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    shared.hits.fetch_add(1, Ordering::Relaxed);
    let wants_json = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if !wants_json {
        // a real Eureka server answers XML by default
        return (StatusCode::OK, "<application/>").into_response();
    }
    match shared.apps.lock().unwrap().get(&name) {
        Some(body) => axum::Json(body.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

impl EurekaServer {
    pub fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .route("/eureka/apps/{app}", get(app))
            .with_state(shared.clone());
        let server = Served::start(router);
        EurekaServer {
            port: server.port,
            shared,
            _server: server,
        }
    }

    /// The `defaultZone` style URL (`http://127.0.0.1:PORT/eureka/`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/eureka/", self.port)
    }

    /// Answer `GET /eureka/apps/{app}` with `body` from now on.
    pub fn set(&self, app: &str, body: Value) {
        self.shared
            .apps
            .lock()
            .unwrap()
            .insert(app.to_string(), body);
    }

    /// Requests served so far.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }
}

/// One instance as the Eureka REST API shows it (Spring Cloud Netflix).
pub fn instance(app: &str, port: u16, status: &str, weight: Option<&str>) -> Value {
    let mut metadata = json!({"management.port": port.to_string()});
    if let Some(w) = weight {
        metadata["weight"] = json!(w);
    }
    json!({
        "instanceId": format!("localhost:{}:{port}", app.to_lowercase()),
        "hostName": "localhost",
        "app": app,
        "ipAddr": "127.0.0.1",
        "status": status,
        "overriddenStatus": "UNKNOWN",
        "port": {"$": port, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn"
        },
        "leaseInfo": {
            "renewalIntervalInSecs": 30, "durationInSecs": 90,
            "registrationTimestamp": 1700000000000u64, "lastRenewalTimestamp": 1700000000000u64,
            "evictionTimestamp": 0, "serviceUpTimestamp": 1700000000000u64
        },
        "metadata": metadata,
        "homePageUrl": format!("http://localhost:{port}/"),
        "statusPageUrl": format!("http://localhost:{port}/actuator/info"),
        "healthCheckUrl": format!("http://localhost:{port}/actuator/health"),
        "vipAddress": app.to_lowercase(),
        "secureVipAddress": app.to_lowercase(),
        "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": "1700000000000",
        "lastDirtyTimestamp": "1700000000000",
        "actionType": "ADDED"
    })
}

/// The body of `GET /eureka/apps/{app}` listing `instances`.
pub fn application(app: &str, instances: Vec<Value>) -> Value {
    json!({"application": {"name": app, "instance": instances}})
}
