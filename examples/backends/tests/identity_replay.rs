//! A signed identity header set captured between the gateway and a service (a
//! sniffed internal hop, a service's request log) is good for that one request only.
//! The real sample services refuse it on another method, another path or query,
//! another service, and a signature dated in the future.
//!
//! The capture: a second gateway with the stack's signing secret forwards to an echo
//! backend standing in for the services, so the test sees exactly what a service
//! would receive, then replays it straight to the real member and order processes.

mod support;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http;
use plugins::auth::identity::{Binding, IdentitySigner, SIGNATURE_HEADER};
use plugins::auth::mint::{mint_token, MintOptions};
use serde_json::json;
use support::{gateway_bin, Stack, SIGNING_SECRET};
use testkit::{Backend, Echo, GatewayProcess};

const DEV_SECRET: &str = "replay-test-dev-issuer-0123456789abcdef";

/// A gateway signing like the stack's: `/order/` to service `order`, `/member/` to
/// `member`, and `/as-order/...` to service `order` with the prefix stripped (a
/// member path signed for the order service). Every service is the echo backend.
fn capture_gateway(echo: &Backend) -> GatewayProcess {
    let yaml = json!({
        "listeners": [{"address": "127.0.0.1:$HTTP_PORT"}],
        "admin": {"address": "127.0.0.1:$ADMIN_PORT"},
        "services": {
            "order": {"instances": [echo.addr()]},
            "member": {"instances": [echo.addr()]},
        },
        "auth": {
            "issuers": [{"name": "dev", "issuer": "dev", "algorithms": ["HS256"], "secret": DEV_SECRET}],
            "identity": {
                "headers": {
                    "Authenticated-User": "{email}",
                    "X-User-Id": "{sub}",
                    "X-User-Roles": "{roles}",
                },
                "signature": {"secret": SIGNING_SECRET},
            },
        },
        "routes": [
            {"match": {"prefix": "/as-order/"}, "service": "order", "strip_prefix": "/as-order", "auth": {"jwt": {}}},
            {"match": {"prefix": "/order/"}, "service": "order", "auth": {"jwt": {}}},
            {"match": {"prefix": "/member/"}, "service": "member", "auth": {"jwt": {}}},
        ],
    });
    GatewayProcess::start(gateway_bin(), &yaml.to_string())
}

fn dev_token(sub: &str, email: &str) -> String {
    mint_token(&MintOptions {
        email: Some(email.into()),
        roles: vec!["user".into()],
        ..MintOptions::hs256(DEV_SECRET, sub)
    })
    .expect("mint a dev token")
}

/// The headers a service received, minus the ones that describe the hop.
fn captured(e: &Echo) -> BTreeMap<String, Vec<String>> {
    let mut h = e.headers.clone();
    for hop in ["host", "content-length", "connection", "transfer-encoding"] {
        h.remove(hop);
    }
    h
}

async fn replay(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    headers: &BTreeMap<String, Vec<String>>,
) -> (u16, serde_json::Value) {
    let post = method == reqwest::Method::POST;
    let mut req = http.request(method, url);
    for (name, values) in headers {
        for v in values {
            req = req.header(name, v);
        }
    }
    if post {
        // a well-formed order: only the signature can make it fail
        req = req.json(&json!({"productId": 1, "quantity": 1}));
    }
    let r = req.send().await.expect("replay");
    (
        r.status().as_u16(),
        r.json().await.unwrap_or(serde_json::Value::Null),
    )
}

fn refused(got: &(u16, serde_json::Value), what: &str) {
    assert_eq!(got.0, 401, "{what}: {}", got.1);
    assert_eq!(got.1["error"], "gateway_signature_invalid", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_signed_identity_is_refused_on_any_other_request() {
    let stack = Stack::start();
    let carol = stack.user("carol@example.com").await;
    stack.wait_auth_ready(&carol.access).await;
    let (_, me) = stack.get("/member/me", &carol.access).await;
    let id = me["id"].as_str().expect("member id").to_string();

    let echo = Backend::start("capture");
    let gw = capture_gateway(&echo);
    let token = dev_token(&id, "carol@example.com");
    let capture = |path: &'static str| {
        let http = stack.http.clone();
        let url = gw.url(path);
        let token = token.clone();
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let e: Echo = r.json().await.unwrap();
            captured(&e)
        }
    };
    let orders = capture("/order/orders").await;
    let http = &stack.http;
    let get = reqwest::Method::GET;

    // The very request it was made for still passes, within the signature's max age
    // (the window a service closes with its own request-id log, if it needs to).
    let exact = replay(
        http,
        get.clone(),
        &stack.order.url("/order/orders"),
        &orders,
    )
    .await;
    assert_eq!(exact.0, 200, "{}", exact.1);

    // Another method, another path, another query on the same service: refused.
    let other_method = replay(
        http,
        reqwest::Method::POST,
        &stack.order.url("/order/orders"),
        &orders,
    )
    .await;
    refused(&other_method, "POST with a GET's signature");
    let other_path = replay(
        http,
        get.clone(),
        &stack.order.url("/order/orders/1"),
        &orders,
    )
    .await;
    refused(&other_path, "another path");
    let other_query = replay(
        http,
        get.clone(),
        &stack.order.url("/order/orders?limit=1"),
        &orders,
    )
    .await;
    refused(&other_query, "another query");

    // The same method and path, signed for the order service, sent to the member
    // service: refused; signed for member, accepted.
    let for_order = capture("/as-order/member/me").await;
    let other_service = replay(
        http,
        get.clone(),
        &stack.member.url("/member/me"),
        &for_order,
    )
    .await;
    refused(&other_service, "signed for order, sent to member");
    let for_member = capture("/member/me").await;
    let right_service = replay(
        http,
        get.clone(),
        &stack.member.url("/member/me"),
        &for_member,
    )
    .await;
    assert_eq!(right_service.0, 200, "{}", right_service.1);
    assert_eq!(right_service.1["id"], id.as_str());

    // A genuine signature dated an hour ahead (made to outlive its max age): refused.
    let future = future_signature(&orders, "/order/orders", 3600);
    let ahead = replay(http, get, &stack.order.url("/order/orders"), &future).await;
    refused(&ahead, "a signature from the future");
}

/// `headers` re-signed for GET `path` on `order`, `ahead` seconds in the future.
fn future_signature(
    headers: &BTreeMap<String, Vec<String>>,
    path: &str,
    ahead: u64,
) -> BTreeMap<String, Vec<String>> {
    let names = ["authenticated-user", "x-user-id", "x-user-roles"];
    let identity: Vec<_> = names
        .iter()
        .filter_map(|n| {
            let v = headers.get(*n)?.first()?;
            Some((
                http::HeaderName::from_static(n),
                http::HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect();
    let signer = IdentitySigner::new(
        http::HeaderName::from_static(SIGNATURE_HEADER),
        SIGNING_SECRET.as_bytes(),
        names.map(http::HeaderName::from_static).to_vec(),
    )
    .expect("signer");
    let request_id = headers["x-request-id"][0].clone();
    let binding = Binding {
        method: "GET",
        path_and_query: path,
        service: "order",
        request_id: &request_id,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let sig = signer.sign(&identity, &binding, now + ahead).expect("sign");
    let mut out = headers.clone();
    out.insert(
        SIGNATURE_HEADER.to_string(),
        vec![sig.to_str().expect("ascii").to_string()],
    );
    out
}
