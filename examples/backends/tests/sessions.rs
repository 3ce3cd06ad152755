//! Member sessions through the real gateway, the real member service and a real
//! Redis (OAuth 2.0 Security BCP): refresh tokens rotate within a family, a reused
//! refresh token ends the whole family, logout ends the caller's session, and
//! `logout?all=true` ends every session of the user (`revoked-before:{sub}`).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{Stack, Tokens};

async fn refresh(stack: &Stack, token: &str) -> (u16, Value) {
    let r = stack
        .http
        .post(stack.url("/member/refresh"))
        .json(&json!({ "refreshToken": token }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn rotated(stack: &Stack, token: &str) -> Tokens {
    let (status, body) = refresh(stack, token).await;
    assert_eq!(status, 200, "refresh: {body}\n{}", stack.logs());
    Tokens::from_body(&body)
}

async fn logout(stack: &Stack, path: &str, access: &str, body: Value) -> u16 {
    stack
        .http
        .post(stack.url(path))
        .bearer_auth(access)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The gateway refuses `token` as revoked (the mirror applies it within ms).
async fn refused(stack: &Stack, token: &str) -> bool {
    testkit::wait_until_async(Duration::from_secs(3), || async {
        let (status, body) = stack.get("/member/me", token).await;
        status == 401 && body["error"] == "token_revoked"
    })
    .await
}

async fn login(stack: &Stack, email: &str) -> Tokens {
    stack.login(email, "correct horse").await.expect("login")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_refresh_token_ends_its_whole_family() {
    let stack = Stack::start();
    let first = stack.user("family@example.com").await;
    stack.wait_auth_ready(&first.access).await;
    let other = login(&stack, "family@example.com").await;

    let second = rotated(&stack, &first.refresh).await;
    let third = rotated(&stack, &second.refresh).await;
    assert_eq!(stack.get("/member/me", &third.access).await.0, 200);

    // The first token again: a thief's copy or the victim's stale one. Refused...
    let (status, body) = refresh(&stack, &first.refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_refresh_token"))
    );
    // ...and the family is over: its newest refresh token is refused too,
    let (status, _) = refresh(&stack, &third.refresh).await;
    assert_eq!(status, 401, "the family's current token survived a reuse");
    // and the access tokens issued in that session are revoked at the gateway.
    for access in [&first.access, &second.access, &third.access] {
        assert!(refused(&stack, access).await, "{}", stack.logs());
    }
    // Another login of the same user is another family: untouched.
    assert_eq!(stack.get("/member/me", &other.access).await.0, 200);
    rotated(&stack, &other.refresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_of_one_token_succeed_at_most_once() {
    let stack = Stack::start();
    let t = stack.user("race@example.com").await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (http, url, token) = (
            stack.http.clone(),
            stack.url("/member/refresh"),
            t.refresh.clone(),
        );
        set.spawn(async move {
            let r = http
                .post(url)
                .json(&json!({ "refreshToken": token }))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        });
    }
    let results: Vec<(u16, Value)> = set.join_all().await;
    let won: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(
        results.iter().all(|(s, _)| *s == 200 || *s == 401),
        "{results:?}"
    );
    // The losers were reuse of a rotated token: the winner's session is over too.
    let winner = Tokens::from_body(won[0]);
    assert_eq!(refresh(&stack, &winner.refresh).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_and_only_that_one() {
    let stack = Stack::start();
    let first = stack.user("logout@example.com").await;
    stack.wait_auth_ready(&first.access).await;
    let elsewhere = login(&stack, "logout@example.com").await;
    let second = rotated(&stack, &first.refresh).await;

    // Log out with the newest access token, no body.
    assert_eq!(
        logout(&stack, "/member/logout", &second.access, json!({})).await,
        204
    );
    // Every access token of the session is refused, not only the one presented,
    for access in [&second.access, &first.access] {
        assert!(refused(&stack, access).await, "{}", stack.logs());
    }
    // and its refresh token is dead.
    assert_eq!(refresh(&stack, &second.refresh).await.0, 401);
    // The other session goes on.
    assert_eq!(stack.get("/member/me", &elsewhere.access).await.0, 200);
    rotated(&stack, &elsewhere.refresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_ends_every_session_of_the_user() {
    let stack = Stack::start();
    let a = stack.user("everywhere@example.com").await;
    stack.wait_auth_ready(&a.access).await;
    let b = login(&stack, "everywhere@example.com").await;
    let c = login(&stack, "everywhere@example.com").await;
    let bystander = stack.user("bystander@example.com").await;

    assert_eq!(
        logout(&stack, "/member/logout?all=true", &a.access, json!({})).await,
        204
    );
    for t in [&a, &b, &c] {
        assert!(refused(&stack, &t.access).await, "{}", stack.logs());
        assert_eq!(refresh(&stack, &t.refresh).await.0, 401);
    }
    // The user can log in again at once (the same second as the cut-off included).
    let again = login(&stack, "everywhere@example.com").await;
    assert_eq!(
        stack.get("/member/me", &again.access).await.0,
        200,
        "a login right after logout-all must work\n{}",
        stack.logs()
    );
    let again2 = rotated(&stack, &again.refresh).await;

    // The body form does the same.
    assert_eq!(
        logout(
            &stack,
            "/member/logout",
            &again2.access,
            json!({"all": true})
        )
        .await,
        204
    );
    assert!(refused(&stack, &again2.access).await);
    // A bad flag value is refused, not guessed.
    let d = login(&stack, "everywhere@example.com").await;
    assert_eq!(
        logout(&stack, "/member/logout?all=maybe", &d.access, json!({})).await,
        400
    );
    // Other users are not affected.
    assert_eq!(stack.get("/member/me", &bystander.access).await.0, 200);
}
