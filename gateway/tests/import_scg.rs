//! `gateway import scg` through the real binary: a table of Spring Cloud Gateway
//! configs (YAML and properties) whose output `gateway check` accepts and whose
//! report names every unconverted part with its line; and a converted config
//! serving real backends, each request reaching the service and path SCG would
//! send it to.

use std::path::Path;
use std::process::Command;

use testkit::{check_file, client, Backend, Echo, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

struct Case {
    what: &'static str,
    file: &'static str,
    text: String,
    /// Every note as `(line, subject)`, in order.
    notes: Vec<(usize, &'static str)>,
}

const SHOP_YAML: &str = r#"server:
  port: 8000
spring:
  application:
    name: apigateway-service
  cloud:
    gateway:
      default-filters:
        - AddResponseHeader=X-Gateway, scg
      routes:
        - id: member-service
          uri: lb://MEMBER-SERVICE
          predicates:
            - Path=/member-service/**
          filters:
            - StripPrefix=1
            - AuthorizationHeaderFilter
        - id: product-service
          uri: lb://PRODUCT-SERVICE
          predicates:
            - Path=/product-service/**
            - Method=GET
          filters:
            - RewritePath=/product-service/(?<segment>.*), /$\{segment}
        - id: order-service
          uri: lb://ORDER-SERVICE
          predicates:
            - name: Path
              args:
                patterns: [/order-service/**]
          filters:
            - StripPrefix=1
            - name: AuthorizationHeaderFilter
eureka:
  client:
    service-url:
      defaultZone: http://127.0.0.1:8761/eureka/
"#;

const SHOP_PROPERTIES: &str = r"# the same shop, in application.properties
server.port=8000
eureka.client.serviceUrl.defaultZone=http://127.0.0.1:8761/eureka/
spring.cloud.gateway.routes[0].id=member
spring.cloud.gateway.routes[0].uri=lb://member-service
spring.cloud.gateway.routes[0].predicates[0]=Path=/member/**
spring.cloud.gateway.routes[0].filters[0]=AuthFilter
spring.cloud.gateway.routes[1].id=product-v1
spring.cloud.gateway.routes[1].uri=lb://product-service
spring.cloud.gateway.routes[1].predicates[0]=Path=/product/**
spring.cloud.gateway.routes[1].predicates[1]=Weight=product, 9
spring.cloud.gateway.routes[2].id=product-v2
spring.cloud.gateway.routes[2].uri=lb://product-canary
spring.cloud.gateway.routes[2].predicates[0]=Path=/product/**
spring.cloud.gateway.routes[2].predicates[1]=Weight=product, 1
spring.cloud.gateway.routes[3].id=orders
spring.cloud.gateway.routes[3].uri=lb://order-service
spring.cloud.gateway.routes[3].predicates[0]=Path=/order/**,/orders/**
spring.cloud.gateway.routes[3].predicates[1]=Host=**.shop.example
spring.cloud.gateway.routes[3].predicates[2]=Header=X-Channel, web
spring.cloud.gateway.routes[3].filters[0]=StripPrefix=1
spring.cloud.gateway.routes[3].filters[1]=SetResponseHeader=Cache-Control, \
    no-store
spring.cloud.gateway.routes[3].metadata.response-timeout=2000
";

const TRAFFIC_CONTROL: &str = r#"spring:
  data:
    redis: {host: 127.0.0.1, port: 6380}
  cloud:
    gateway:
      routes:
        - id: order
          uri: http://127.0.0.1:8083
          predicates: [Path=/order/**]
          filters:
            - name: RequestRateLimiter
              args:
                redis-rate-limiter.replenishRate: 10
                redis-rate-limiter.burstCapacity: 20
            - name: CircuitBreaker
              args: {name: orderCB, fallbackUri: "forward:/fallback"}
            - name: Retry
              args: {retries: 2, statuses: BAD_GATEWAY, methods: "GET,POST"}
"#;

const UNSUPPORTED: &str = r#"spring:
  cloud:
    gateway:
      discovery:
        locator:
          enabled: true
      routes:
        - id: misc
          uri: http://10.0.0.5:9000
          predicates:
            - Path=/misc/**
            - Query=green
            - Cookie=chocolate, ch.p
            - After=2017-01-20T17:42:47.789-07:00[America/Denver]
            - Header=X-Request-Id, \d+
          filters:
            - SetStatus=401
            - name: TenantFilter
          metadata:
            owner: team-a
        - id: nowhere
          uri: forward:/local
          predicates: [Path=/local/**]
"#;

const CLEAN_WEBFLUX: &str = r#"spring:
  cloud:
    gateway:
      server:
        webflux:
          httpclient:
            connect-timeout: 1000
            response-timeout: 5s
          routes:
            - id: items
              uri: http://127.0.0.1:8082
              predicates:
                - Path=/item/{id}
              filters:
                - SetPath=/items/{id}
                - RemoveRequestHeader=Cookie
            - id: legacy
              uri: https://legacy.example.com
              predicates: [Path=/legacy/**, "Method=GET,HEAD"]
              filters: [PrefixPath=/v1, "AddRequestHeader=X-From, gateway"]
"#;

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "shop with Eureka, StripPrefix and a custom auth filter (yml)",
            file: "application.yml",
            text: SHOP_YAML.into(),
            notes: vec![
                (17, "route member-service: filter AuthorizationHeaderFilter"),
                (33, "route order-service: filter AuthorizationHeaderFilter"),
            ],
        },
        Case {
            what: "shop with a weight group, hosts and two paths (properties)",
            file: "application.properties",
            text: SHOP_PROPERTIES.into(),
            notes: vec![(7, "route member: filter AuthFilter")],
        },
        Case {
            what: "lb:// without a Eureka server",
            file: "application.yml",
            text: "spring.cloud.gateway.routes:\n  - id: a\n    uri: lb://member\n    predicates: [Path=/a/**]\n".into(),
            notes: vec![(3, "route a: uri lb://member")],
        },
        Case {
            what: "rate limiter, circuit breaker, retry",
            file: "application.yml",
            text: TRAFFIC_CONTROL.into(),
            notes: vec![
                (11, "route order: filter RequestRateLimiter"),
                (15, "route order: filter CircuitBreaker"),
            ],
        },
        Case {
            what: "unsupported predicates, filters and keys",
            file: "application.yml",
            text: UNSUPPORTED.into(),
            notes: vec![
                (6, "spring.cloud.gateway.discovery.locator.enabled"),
                (12, "route misc: predicate Query"),
                (13, "route misc: predicate Cookie"),
                (14, "route misc: predicate After"),
                (15, "route misc: predicate Header"),
                (17, "route misc: filter SetStatus"),
                (18, "route misc: filter TenantFilter"),
                (20, "route misc: metadata owner"),
                (22, "route nowhere: uri forward:/local"),
            ],
        },
        Case {
            what: "a route whose only path pattern cannot convert is left out, not widened",
            file: "application.yml",
            text: "spring.cloud.gateway.routes:\n  - id: odd\n    uri: http://127.0.0.1:9000\n    predicates: [\"Path=/u/{id:[0-9]{3}}\"]\n".into(),
            notes: vec![(2, "route odd: none of its path"), (4, "route odd: predicate Path")],
        },
        Case {
            what: "a profile document is set aside",
            file: "application.yml",
            text: "spring.cloud.gateway.routes:\n  - id: a\n    uri: http://127.0.0.1:9000\n    predicates: [Path=/a/**]\n---\nspring.config.activate.on-profile: prod\nspring.cloud.gateway.routes:\n  - id: b\n    uri: http://127.0.0.1:9001\n".into(),
            notes: vec![(6, "profile prod")],
        },
        Case {
            what: "webflux prefix, SetPath, PrefixPath, http(s) uris: everything converts",
            file: "application.yml",
            text: CLEAN_WEBFLUX.into(),
            notes: vec![],
        },
    ]
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn import(path: &Path) -> Run {
    let out = Command::new(BIN)
        .args(["import", "scg"])
        .arg(path)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `(line, rest)` of each note line on stderr (`  FILE:LINE: subject: why`).
fn notes(stderr: &str, file: &Path) -> Vec<(usize, String)> {
    let prefix = format!("  {}:", file.display());
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| {
            let (line, rest) = l.split_once(": ")?;
            Some((line.parse().ok()?, rest.to_string()))
        })
        .collect()
}

#[test]
fn scg_configs_convert_and_report_what_they_cannot() {
    let mut failures = Vec::new();
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join(case.file);
        std::fs::write(&src, &case.text).unwrap();
        let run = import(&src);
        let got = notes(&run.stderr, &src);
        let notes_ok = got.len() == case.notes.len()
            && got
                .iter()
                .zip(&case.notes)
                .all(|((l, rest), (want_l, subject))| l == want_l && rest.starts_with(subject));
        let want_code = if case.notes.is_empty() { 0 } else { 2 };
        if run.code != Some(want_code) || !notes_ok {
            failures.push(format!(
                "{}: exit {:?} (want {want_code})\n  want notes: {:?}\n  stderr: {}",
                case.what, run.code, case.notes, run.stderr
            ));
            continue;
        }
        let out = dir.path().join("gateway.yaml");
        std::fs::write(&out, &run.stdout).unwrap();
        let check = check_file(BIN, &out);
        if check.stdout.trim() != "ok" {
            failures.push(format!(
                "{}: `gateway check` refused the output: {}\n{}",
                case.what, check.stderr, run.stdout
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_weight_group_becomes_one_split_route() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("application.properties");
    std::fs::write(&src, SHOP_PROPERTIES).unwrap();
    let run = import(&src);
    assert!(
        run.stdout.contains(
            "    targets:\n      - {service: \"product-service\", weight: 9}\n      - {service: \"product-canary\", weight: 1}\n"
        ),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("product-v2"), "{}", run.stdout);
}

#[test]
fn an_unreadable_file_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let run = import(&dir.path().join("application.yml"));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("cannot read"), "{}", run.stderr);
    std::fs::write(dir.path().join("bad.yml"), "a: [b\n").unwrap();
    let run = import(&dir.path().join("bad.yml"));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

/// The shop converted and served: each request reaches the service and path SCG
/// would send it to (StripPrefix, RewritePath, PrefixPath, SetPath, a header
/// condition, default filters, a weight split).
#[tokio::test]
async fn a_converted_config_routes_like_scg() {
    let (member, product, order, canary) = (
        Backend::start("member"),
        Backend::start("product"),
        Backend::start("order"),
        Backend::start("canary"),
    );
    let scg = format!(
        r"server.port=8000
spring.cloud.gateway.default-filters[0]=AddRequestHeader=X-Via, gateway
spring.cloud.gateway.routes[0].id=member
spring.cloud.gateway.routes[0].uri=http://{member}
spring.cloud.gateway.routes[0].predicates[0]=Path=/member-service/**
spring.cloud.gateway.routes[0].filters[0]=StripPrefix=1
spring.cloud.gateway.routes[1].id=product
spring.cloud.gateway.routes[1].uri=http://{product}
spring.cloud.gateway.routes[1].predicates[0]=Path=/product-service/**
spring.cloud.gateway.routes[1].filters[0]=RewritePath=/product-service/(?<segment>.*), /api/$\{{segment}}
spring.cloud.gateway.routes[2].id=item
spring.cloud.gateway.routes[2].uri=http://{product}
spring.cloud.gateway.routes[2].predicates[0]=Path=/item/{{id}}
spring.cloud.gateway.routes[2].filters[0]=SetPath=/items/{{id}}
spring.cloud.gateway.routes[3].id=beta
spring.cloud.gateway.routes[3].uri=http://{canary}
spring.cloud.gateway.routes[3].predicates[0]=Path=/order/**
spring.cloud.gateway.routes[3].predicates[1]=Header=X-Beta, yes
spring.cloud.gateway.routes[4].id=order
spring.cloud.gateway.routes[4].uri=http://{order}
spring.cloud.gateway.routes[4].predicates[0]=Path=/order/**
spring.cloud.gateway.routes[4].filters[0]=StripPrefix=1
spring.cloud.gateway.routes[4].filters[1]=PrefixPath=/v1
spring.cloud.gateway.routes[5].id=w1
spring.cloud.gateway.routes[5].uri=http://{member}
spring.cloud.gateway.routes[5].predicates[0]=Path=/split/**
spring.cloud.gateway.routes[5].predicates[1]=Weight=split, 1
spring.cloud.gateway.routes[6].id=w2
spring.cloud.gateway.routes[6].uri=http://{canary}
spring.cloud.gateway.routes[6].predicates[0]=Path=/split/**
spring.cloud.gateway.routes[6].predicates[1]=Weight=split, 1
",
        member = member.addr(),
        product = product.addr(),
        order = order.addr(),
        canary = canary.addr(),
    );
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("application.properties");
    std::fs::write(&src, scg).unwrap();
    let run = import(&src);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, run.stdout);
    // the test's own free ports instead of the converted 8000 and 9090
    let yaml = run
        .stdout
        .replace("0.0.0.0:8000", "127.0.0.1:$HTTP_PORT")
        .replace("127.0.0.1:9090", "127.0.0.1:$ADMIN_PORT");
    let gw = GatewayProcess::start(BIN, &yaml);

    let c = client();
    let get = |path: &'static str, beta: bool| {
        let mut req = c.get(gw.url(path));
        if beta {
            req = req.header("x-beta", "yes");
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            resp.json::<Echo>().await.unwrap()
        }
    };
    // (request path, with X-Beta, service, path the service sees): SCG's routing
    for (path, beta, backend, upstream) in [
        ("/member-service/login", false, "member", "/login"),
        ("/member-service", false, "member", "/"),
        ("/product-service/42", false, "product", "/api/42"),
        ("/item/5", false, "product", "/items/5"),
        ("/order/7", false, "order", "/v1/7"),
        ("/order/7", true, "canary", "/order/7"),
    ] {
        let echo = get(path, beta).await;
        assert_eq!(
            (echo.backend.as_str(), echo.path.as_str()),
            (backend, upstream),
            "{path}"
        );
        assert_eq!(echo.header("x-via"), Some("gateway"), "{path}");
    }
    let unrouted = c.get(gw.url("/nothing")).send().await.unwrap();
    assert_eq!(unrouted.status(), 404);
    // the weight group: both sides serve /split (50/50 over 64 requests: one side
    // alone has probability 2^-63)
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..64 {
        seen.insert(get("/split/x", false).await.backend);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}
