//! End to end through the gateway only: the demo stack (real gateway binary, real
//! member/product/order processes, real redis-server) driven the way a client would.

mod support;

use serde_json::json;
use support::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_order_refresh_log_out_and_withdraw() {
    let stack = Stack::start();
    let http = &stack.http;

    // The catalogue is public.
    let r = http
        .get(stack.url("/product/products"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let products: serde_json::Value = r.json().await.unwrap();
    assert_eq!(products.as_array().unwrap().len(), 3);
    let keyboard_stock = stack.stock(1).await;
    let monitor_stock = stack.stock(3).await;

    // Sign up; the same email again is a conflict; a wrong password is refused.
    let alice = stack.user("alice@example.com").await;
    let again = http
        .post(stack.url("/member/signup"))
        .json(&json!({"email": "Alice@Example.com", "password": "whatever123", "name": "A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let (status, body) = stack
        .login("alice@example.com", "wrong password")
        .await
        .unwrap_err();
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_credentials"))
    );

    // A protected route: refused without a token, served with one.
    let r = http.get(stack.url("/member/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    stack.wait_auth_ready(&alice.access).await;
    let (status, me) = stack.get("/member/me", &alice.access).await;
    assert_eq!(status, 200);
    assert_eq!(me["email"], "alice@example.com");
    let alice_id = me["id"].as_str().unwrap().to_string();

    // Spoofed identity headers are replaced by the verified ones.
    let r = http
        .get(stack.url("/member/me"))
        .bearer_auth(&alice.access)
        .header("Authenticated-User", "mallory@example.com")
        .header("X-User-Id", "someone-else")
        .header("X-User-Roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (me["email"].as_str(), me["id"].as_str()),
        (Some("alice@example.com"), Some(alice_id.as_str()))
    );
    let r = http
        .get(stack.url("/order/orders"))
        .header("Authenticated-User", "alice@example.com")
        .header("X-User-Id", alice_id.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "identity headers alone must not authenticate"
    );

    // An order the stock covers is confirmed by the saga.
    let (status, order) = stack
        .post(
            "/order/orders",
            &alice.access,
            json!({"productId": 1, "quantity": 2}),
        )
        .await;
    assert_eq!(status, 202, "{order}");
    assert_eq!(order["status"], "PENDING");
    let order_id = order["id"].as_str().unwrap().to_string();
    let settled = stack.settled_order(&alice.access, &order_id).await;
    assert_eq!(settled["status"], "CONFIRMED", "{settled}");
    stack.wait_stock(1, keyboard_stock - 2).await;

    // More than the stock: rejected, stock untouched.
    let (_, big) = stack
        .post(
            "/order/orders",
            &alice.access,
            json!({"productId": 3, "quantity": monitor_stock + 1}),
        )
        .await;
    let big = stack
        .settled_order(&alice.access, big["id"].as_str().unwrap())
        .await;
    assert_eq!(
        (big["status"].as_str(), big["reason"].as_str()),
        (Some("REJECTED"), Some("insufficient_stock"))
    );
    assert_eq!(stack.stock(3).await, monitor_stock);
    let (status, _) = stack
        .post(
            &format!("/order/orders/{}/cancel", big["id"].as_str().unwrap()),
            &alice.access,
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "a rejected order cannot be cancelled");

    // Cancel the confirmed order: the stock comes back.
    let (status, cancelled) = stack
        .post(
            &format!("/order/orders/{order_id}/cancel"),
            &alice.access,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("CANCELLED"))
    );
    stack.wait_stock(1, keyboard_stock).await;

    // Orders are private: bob sees only his own.
    let bob = stack.user("bob@example.com").await;
    let (status, _) = stack
        .get(&format!("/order/orders/{order_id}"), &bob.access)
        .await;
    assert_eq!(status, 404);
    let (_, bobs) = stack.get("/order/orders", &bob.access).await;
    assert_eq!(bobs.as_array().map(Vec::len), Some(0));
    let (_, alices) = stack.get("/order/orders", &alice.access).await;
    assert_eq!(alices.as_array().map(Vec::len), Some(2));

    // Refresh rotates: the new pair works, the old refresh token is refused.
    let r = http
        .post(stack.url("/member/refresh"))
        .json(&json!({"refreshToken": alice.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rotated = support::Tokens::from_body(&r.json().await.unwrap());
    assert_ne!(rotated.refresh, alice.refresh);
    let reuse = http
        .post(stack.url("/member/refresh"))
        .json(&json!({"refreshToken": alice.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(reuse.status(), 401);
    let body: serde_json::Value = reuse.json().await.unwrap();
    assert_eq!(body["error"], "invalid_refresh_token");
    // That reuse ended the session (OAuth 2.0 Security BCP): the rotated pair is dead too.
    let ended = testkit::wait_until_async(std::time::Duration::from_secs(2), || async {
        stack.get("/member/me", &rotated.access).await.0 == 401
    })
    .await;
    assert!(ended, "a reused refresh token left its session alive");

    // Log out: every access token of that session is refused at once (token_revoked),
    // its refresh token is dead; another session of the same user still works.
    let session = stack
        .login("alice@example.com", "correct horse")
        .await
        .unwrap();
    let elsewhere = stack
        .login("alice@example.com", "correct horse")
        .await
        .unwrap();
    let r = http
        .post(stack.url("/member/logout"))
        .bearer_auth(&session.access)
        .json(&json!({"refreshToken": session.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // the very next request: the gateway revoked it before the 204 left (revoke: on_success)
    let (status, body) = stack.get("/member/me", &session.access).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_revoked")),
        "logged-out token still accepted\n{}",
        stack.logs()
    );
    assert_eq!(stack.get("/member/me", &elsewhere.access).await.0, 200);
    let r = http
        .post(stack.url("/member/refresh"))
        .json(&json!({"refreshToken": session.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "logout deletes the refresh token");

    // Withdraw: every token of alice is refused, and she cannot log in.
    let second = stack
        .login("alice@example.com", "correct horse")
        .await
        .unwrap();
    let r = http
        .delete(stack.url("/member/me"))
        .bearer_auth(&second.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for token in [&elsewhere.access, &second.access] {
        let refused = testkit::wait_until_async(std::time::Duration::from_secs(2), || async {
            let (status, body) = stack.get("/order/orders", token).await;
            status == 401 && body["error"] == "token_revoked"
        })
        .await;
        assert!(
            refused,
            "a withdrawn member's token still works\n{}",
            stack.logs()
        );
    }
    assert_eq!(
        stack
            .login("alice@example.com", "correct horse")
            .await
            .unwrap_err()
            .0,
        401
    );
    let r = http
        .post(stack.url("/member/refresh"))
        .json(&json!({"refreshToken": second.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Bob is unaffected.
    assert_eq!(stack.get("/member/me", &bob.access).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_refuse_calls_that_bypass_the_gateway() {
    let stack = Stack::start();
    let carol = stack.user("carol@example.com").await;
    stack.wait_auth_ready(&carol.access).await;
    let (_, me) = stack.get("/member/me", &carol.access).await;
    let id = me["id"].as_str().unwrap();

    // Straight to the order service with forged identity headers: no signature.
    let r = stack
        .http
        .get(stack.order.url("/order/orders"))
        .header("Authenticated-User", "carol@example.com")
        .header("X-User-Id", id)
        .header("X-User-Roles", "user")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "gateway_signature_missing");

    // A made-up signature is refused too.
    let r = stack
        .http
        .get(stack.member.url("/member/me"))
        .header("X-User-Id", id)
        .header("X-Gateway-Signature", "t=1,h=x-user-id,v1=00")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "gateway_signature_invalid");

    // The JWKS is public, on the member port and through the gateway.
    for url in [
        stack.member.url("/member/.well-known/jwks.json"),
        stack.url("/member/.well-known/jwks.json"),
    ] {
        let r = stack.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let jwks: serde_json::Value = r.json().await.unwrap();
        assert_eq!(jwks["keys"][0]["kid"], "demo-member-1");
        assert_eq!(jwks["keys"][0]["kty"], "RSA");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_of_every_service() {
    let mut stack = Stack::start();
    let dave = stack.user("dave@example.com").await;
    stack.wait_auth_ready(&dave.access).await;
    let before = stack.stock(2).await;
    let (_, order) = stack
        .post(
            "/order/orders",
            &dave.access,
            json!({"productId": 2, "quantity": 5}),
        )
        .await;
    let id = order["id"].as_str().unwrap().to_string();
    assert_eq!(
        stack.settled_order(&dave.access, &id).await["status"],
        "CONFIRMED"
    );

    stack.member.restart();
    // A stopped service deregisters: the gateway has no product instance left.
    stack.product.stop();
    let admin = format!("127.0.0.1:{}", stack.admin_port);
    let gone = testkit::wait_until(
        std::time::Duration::from_secs(10),
        || matches!(testkit::http_get(&admin, "/ready"), Ok((503, body)) if body.contains("product")),
    );
    assert!(
        gone,
        "product still registered after a graceful stop\n{}",
        stack.logs()
    );
    stack.product.start_again();
    stack.order.restart();
    stack.wait_registered();

    // Accounts, orders and stock are all still there.
    let again = stack
        .login("dave@example.com", "correct horse")
        .await
        .expect("login after restart");
    let ok = testkit::wait_until_async(std::time::Duration::from_secs(20), || async {
        stack
            .get(&format!("/order/orders/{id}"), &again.access)
            .await
            .0
            == 200
    })
    .await;
    assert!(
        ok,
        "order service not reachable after restart\n{}",
        stack.logs()
    );
    let (_, kept) = stack
        .get(&format!("/order/orders/{id}"), &again.access)
        .await;
    assert_eq!(kept["status"], "CONFIRMED");
    assert_eq!(stack.stock(2).await, before - 5);
    // A refresh token issued before the restart still works (it lives in Redis).
    let r = stack
        .http
        .post(stack.url("/member/refresh"))
        .json(&json!({"refreshToken": dave.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // And the saga still runs.
    let (_, next) = stack
        .post(
            "/order/orders",
            &again.access,
            json!({"productId": 2, "quantity": 1}),
        )
        .await;
    let next = stack
        .settled_order(&again.access, next["id"].as_str().unwrap())
        .await;
    assert_eq!(next["status"], "CONFIRMED");
}
