//! A typical Spring Cloud Gateway + Eureka setup (member, product and order
//! behind `lb://` uris, StripPrefix, a custom auth filter), converted by
//! `gateway import scg` and served by the real binary: the converted services
//! find their instances in a Eureka server (a stand-in answering the Eureka REST
//! API), and each request reaches the service and path SCG would send it to.

use std::process::Command;
use std::time::Duration;

use testkit::eureka::{application, instance, EurekaServer};
use testkit::{client, wait_until_async, Backend, Echo, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// A Eureka stand-in listing each app's one UP instance.
fn eureka(apps: &[(&str, &Backend)]) -> EurekaServer {
    let server = EurekaServer::start();
    for (name, backend) in apps {
        let up = instance(name, backend.port(), "UP", None);
        server.set(name, application(name, vec![up]));
    }
    server
}

#[tokio::test]
async fn a_converted_eureka_setup_routes_like_scg() {
    let (member, product, order) = (
        Backend::start("member"),
        Backend::start("product"),
        Backend::start("order"),
    );
    let eureka = eureka(&[
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
