//! A typical Spring Cloud Gateway + Eureka setup (member, product and order
//! behind `lb://` uris, StripPrefix, a custom auth filter), converted by
//! `gateway import scg` and served by the real binary: the converted services
//! find their instances in a Eureka server (a stand-in answering the Eureka REST
//! API), and each request reaches the service and path SCG would send it to.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use testkit::{client, wait_until_async, Backend, Echo, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// `GET /eureka/apps/{APP}` with each app's one UP instance.
struct Eureka {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn app(
    State(apps): State<Arc<HashMap<String, Value>>>,
    Path(name): Path<String>,
) -> Response {
    match apps.get(&name) {
        Some(body) => axum::Json(body.clone()).into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

impl Eureka {
    fn start(apps: &[(&str, &Backend)]) -> Self {
        let apps: HashMap<String, Value> = apps
            .iter()
            .map(|(name, b)| {
                let instance = json!({
                    "instanceId": format!("localhost:{}:{}", name.to_lowercase(), b.port()),
                    "hostName": "localhost",
                    "app": name,
                    "ipAddr": "127.0.0.1",
                    "status": "UP",
                    "port": {"$": b.port(), "@enabled": "true"},
                    "metadata": {},
                });
                let body = json!({"application": {"name": name, "instance": [instance]}});
                (name.to_string(), body)
            })
            .collect();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = Router::new()
            .route("/eureka/apps/{app}", get(app))
            .with_state(Arc::new(apps));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = axum::serve(listener, router) => {}
                    _ = stopped => {}
                }
            });
        });
        Eureka {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Eureka {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test]
async fn a_converted_eureka_setup_routes_like_scg() {
    let (member, product, order) = (
        Backend::start("member"),
        Backend::start("product"),
        Backend::start("order"),
    );
    let eureka = Eureka::start(&[
        ("MEMBER-SERVICE", &member),
        ("PRODUCT-SERVICE", &product),
        ("ORDER-SERVICE", &order),
    ]);
    let scg = format!(
        r#"server:
  port: 8000
spring:
  application:
    name: apigateway-service
  cloud:
    gateway:
      routes:
        - id: member-service
          uri: lb://MEMBER-SERVICE
          predicates:
            - Path=/member-service/**
          filters:
            - RemoveRequestHeader=Cookie
            - RewritePath=/member-service/(?<segment>.*), /$\{{segment}}
        - id: product-service
          uri: lb://PRODUCT-SERVICE
          predicates:
            - Path=/product-service/**
          filters:
            - StripPrefix=1
        - id: order-service
          uri: lb://ORDER-SERVICE
          predicates:
            - Path=/order-service/**
          filters:
            - StripPrefix=1
            - AuthorizationHeaderFilter
eureka:
  client:
    registry-fetch-interval-seconds: 1
    service-url:
      defaultZone: http://127.0.0.1:{port}/eureka/
"#,
        port = eureka.port
    );
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("application.yml");
    std::fs::write(&src, scg).unwrap();
    let out = Command::new(BIN)
        .args(["import", "scg"])
        .arg(&src)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // the custom auth filter is reported, with its line
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(":28: route order-service: filter AuthorizationHeaderFilter"),
        "{stderr}"
    );
    let yaml = stdout
        .replace("0.0.0.0:8000", "127.0.0.1:$HTTP_PORT")
        .replace("127.0.0.1:9090", "127.0.0.1:$ADMIN_PORT");
    let gw = GatewayProcess::start(BIN, &yaml);

    let c = client();
    let echo = |path: &'static str| {
        let req = c.get(gw.url(path)).header("cookie", "session=1");
        async move {
            let resp = req.send().await.ok()?;
            (resp.status() == 200).then_some(())?;
            resp.json::<Echo>().await.ok()
        }
    };
    // discovery fills the services in the background: wait for the first answers
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            echo("/order-service/orders").await.is_some()
        })
        .await,
        "{}",
        gw.log()
    );
    for (path, backend, upstream) in [
        ("/member-service/login", "member", "/login"),
        ("/product-service/products/3", "product", "/products/3"),
        ("/order-service/orders", "order", "/orders"),
    ] {
        let e = echo(path)
            .await
            .unwrap_or_else(|| panic!("{path}: no answer"));
        assert_eq!(
            (e.backend.as_str(), e.path.as_str()),
            (backend, upstream),
            "{path}"
        );
        // RemoveRequestHeader=Cookie on the member route only
        assert_eq!(e.header("cookie").is_none(), backend == "member", "{path}");
    }
}
