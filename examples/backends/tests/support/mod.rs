//! The whole demo stack for end-to-end tests: a real redis-server, the three sample
//! services as processes on free ports (their data in a temp dir), and the real
//! gateway binary in front, configured like `config/gateway.yaml`.

#![allow(dead_code)]

mod service;
pub mod tansu;

pub use service::Service;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use testkit::{free_port, http_get, wait_until, GatewayProcess, RedisServer};

pub const SIGNING_SECRET: &str = "test-signing-secret";

/// `target/<profile>/gateway`, next to this test's own `deps/` directory.
pub fn gateway_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("gateway");
    assert!(
        bin.exists(),
        "the gateway binary is missing at {}: run `cargo build -p gateway` first",
        bin.display()
    );
    bin
}

/// Redis, member, product, order and the gateway.
pub struct Stack {
    pub gateway: GatewayProcess,
    pub admin_port: u16,
    pub member: Service,
    pub product: Service,
    pub order: Service,
    pub redis: RedisServer,
    pub data: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// Tuning for one stack.
pub struct Options {
    /// Failures before a saga event is dead-lettered.
    pub max_attempts: u32,
    /// More environment for the three services (e.g. `EVENT_LOG=kafka`).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            env: Vec::new(),
        }
    }
}

impl Stack {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Self {
        let redis = RedisServer::start();
        let data = tempfile::tempdir().expect("data dir");
        let key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/demo-keys/member-private.pem"
        );
        // The services register with the gateway's registry: they start first and
        // keep retrying until the gateway is up.
        let admin_port = free_port();
        let mut common = vec![
            (
                "GATEWAY_ADMIN_URL".to_string(),
                format!("http://127.0.0.1:{admin_port}"),
            ),
            ("REGISTRY_TTL".to_string(), "3s".to_string()),
            ("DATA_DIR".to_string(), data.path().display().to_string()),
            ("REDIS_URL".to_string(), redis.url()),
            (
                "GATEWAY_SIGNING_SECRET".to_string(),
                SIGNING_SECRET.to_string(),
            ),
            (
                "EVENT_MAX_ATTEMPTS".to_string(),
                opts.max_attempts.to_string(),
            ),
            ("EVENT_RETRY_BACKOFF".to_string(), "20ms".to_string()),
        ];
        common.extend(opts.env);
        let mut member_env = common.clone();
        member_env.push(("JWT_PRIVATE_KEY".to_string(), key.to_string()));
        let member = Service::start(
            "member",
            env!("CARGO_BIN_EXE_member"),
            member_env,
            data.path(),
        );
        let product = Service::start(
            "product",
            env!("CARGO_BIN_EXE_product"),
            common.clone(),
            data.path(),
        );
        let order = Service::start("order", env!("CARGO_BIN_EXE_order"), common, data.path());
        let yaml = gateway_yaml(&redis.url(), admin_port, member.port);
        let gateway = GatewayProcess::start(gateway_bin(), &yaml);

        let stack = Self {
            gateway,
            admin_port,
            member,
            product,
            order,
            redis,
            data,
            http: testkit::client(),
        };
        stack.wait_registered();
        stack
    }

    /// Wait until every service has a live instance in the gateway's registry.
    pub fn wait_registered(&self) {
        let admin = format!("127.0.0.1:{}", self.admin_port);
        let registered = wait_until(Duration::from_secs(20), || {
            matches!(http_get(&admin, "/ready"), Ok((200, _)))
        });
        assert!(
            registered,
            "the services never all registered with the gateway: {:?}\n{}",
            http_get(&admin, "/registry/services"),
            self.logs()
        );
    }

    pub fn url(&self, path: &str) -> String {
        self.gateway.url(path)
    }

    /// Everything logged so far, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- gateway\n{}\n--- member\n{}\n--- product\n{}\n--- order\n{}",
            self.gateway.log(),
            self.member.log(),
            self.product.log(),
            self.order.log()
        )
    }

    /// Sign up and log in a new user: its access and refresh tokens.
    pub async fn user(&self, email: &str) -> Tokens {
        let r = self
            .http
            .post(self.url("/member/signup"))
            .json(&json!({"email": email, "password": "correct horse", "name": "Test User"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            201,
            "signup: {}",
            r.text().await.unwrap_or_default()
        );
        self.login(email, "correct horse")
            .await
            .expect("login after signup")
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<Tokens, (u16, Value)> {
        let r = self
            .http
            .post(self.url("/member/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status != 200 {
            return Err((status, body));
        }
        Ok(Tokens::from_body(&body))
    }

    /// GET through the gateway with a bearer token: (status, JSON body).
    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// POST JSON through the gateway with a bearer token: (status, JSON body).
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Wait until the gateway accepts `token` on a protected route (JWKS fetched,
    /// revocation mirror synced).
    pub async fn wait_auth_ready(&self, token: &str) {
        let ok = testkit::wait_until_async(Duration::from_secs(20), || async {
            self.get("/member/me", token).await.0 == 200
        })
        .await;
        assert!(
            ok,
            "protected route never accepted a fresh token\n{}",
            self.logs()
        );
    }

    /// Poll an order until it leaves PENDING; its final JSON.
    pub async fn settled_order(&self, token: &str, id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let path = format!("/order/orders/{id}");
        loop {
            let (status, body) = self.get(&path, token).await;
            if status == 200 && body["status"] != "PENDING" {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "order {id} still {status} {body} after 20 s\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Current stock of a product (public route).
    pub async fn stock(&self, product: i64) -> i64 {
        let r = self
            .http
            .get(self.url(&format!("/product/products/{product}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        body["stock"].as_i64().expect("stock is a number")
    }

    /// Wait until `product`'s stock is `want`.
    pub async fn wait_stock(&self, product: i64, want: i64) {
        let ok = testkit::wait_until_async(Duration::from_secs(20), || async {
            self.stock(product).await == want
        })
        .await;
        assert!(
            ok,
            "stock of {product} never became {want} (is {})\n{}",
            self.stock(product).await,
            self.logs()
        );
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    pub fn from_body(body: &Value) -> Self {
        Self {
            access: body["accessToken"]
                .as_str()
                .expect("accessToken")
                .to_string(),
            refresh: body["refreshToken"]
                .as_str()
                .expect("refreshToken")
                .to_string(),
        }
    }
}

/// The demo config (`config/gateway.yaml`) with this stack's ports.
fn gateway_yaml(redis_url: &str, admin: u16, member: u16) -> String {
    format!(
        r#"
listeners: [{{address: "127.0.0.1:$HTTP_PORT"}}]
admin: {{address: "127.0.0.1:{admin}"}}
auth:
  issuers:
    - name: member
      issuer: demo-member
      audiences: [gateway]
      algorithms: [RS256]
      jwks_url: http://127.0.0.1:{member}/member/.well-known/jwks.json
      required_claims: [sub, jti]
  revocation:
    redis_url: {redis_url}
  identity:
    headers:
      Authenticated-User: "{{email}}"
      X-User-Id: "{{sub}}"
      X-User-Roles: "{{roles}}"
    signature:
      secret: {SIGNING_SECRET}
services:
  member: {{discovery: {{type: registry}}}}
  product: {{discovery: {{type: registry}}}}
  order: {{discovery: {{type: registry}}}}
routes:
  - id: member-signup
    match: {{path: /member/signup, methods: [POST]}}
    service: member
  - id: member-login
    match: {{path: /member/login, methods: [POST]}}
    service: member
  - id: member-refresh
    match: {{path: /member/refresh, methods: [POST]}}
    service: member
  - id: member-jwks
    match: {{path: /member/.well-known/jwks.json, methods: [GET]}}
    service: member
  - id: member-logout
    match: {{path: /member/logout, methods: [POST]}}
    service: member
    auth: {{jwt: {{revoke: on_success}}}}
  - id: member
    match: {{path: /member/**}}
    service: member
    auth: {{jwt: {{}}}}
  - id: product
    match: {{path: /product/**, methods: [GET]}}
    service: product
  - id: order
    match: {{path: /order/**}}
    service: order
    auth: {{jwt: {{}}}}
"#
    )
}
