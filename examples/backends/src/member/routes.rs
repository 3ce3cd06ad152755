//! The member HTTP API: signup, login, refresh, logout, me, withdraw, and the JWKS.
//!
//! Sessions follow the OAuth 2.0 Security BCP (see `sessions`): a refresh rotates the
//! refresh token; a rotated token presented again ends its whole session and revokes
//! the session's access tokens; logout ends the caller's session, and with `?all=true`
//! (or `{"all": true}`) every session of the user (`revoked-before:{sub}`).

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::sessions::{self, AccessRef, Rotation};
use super::store::{self, User};
use super::tokens::{self, AccessClaims};
use super::{revoke, MemberState};
use crate::db::now_unix;
use crate::error::{ApiError, JsonBody};
use crate::identity::Identity;

/// The member routes (the gateway forwards `/member/**` unchanged).
pub fn router(state: MemberState) -> Router {
    Router::new()
        .route("/member/signup", post(signup))
        .route("/member/login", post(login))
        .route("/member/refresh", post(refresh))
        .route("/member/logout", post(logout))
        .route("/member/me", get(me).delete(withdraw))
        .route("/member/.well-known/jwks.json", get(jwks))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
}

#[derive(Deserialize)]
struct Signup {
    email: String,
    password: String,
    name: String,
}

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Refresh {
    refresh_token: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Logout {
    /// Also end the session of this refresh token (for tokens issued without `sid`).
    #[serde(default)]
    refresh_token: Option<String>,
    /// End every session of the user, not only this one.
    #[serde(default)]
    all: bool,
}

async fn jwks(State(s): State<MemberState>) -> impl IntoResponse {
    (
        [("cache-control", "public, max-age=300")],
        Json(s.tokens.jwks().clone()),
    )
}

async fn signup(
    State(s): State<MemberState>,
    JsonBody(body): JsonBody<Signup>,
) -> Result<impl IntoResponse, ApiError> {
    let email = store::normalise_email(&body.email)
        .ok_or_else(|| ApiError::bad_request("email is not a valid address"))?;
    if body.password.chars().count() < 8 || body.password.len() > 1024 {
        return Err(ApiError::bad_request(
            "password must be 8 to 1024 characters",
        ));
    }
    let name = body.name.trim().to_string();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::bad_request("name must be 1 to 200 characters"));
    }
    let password = body.password;
    let hash = tokio::task::spawn_blocking(move || store::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        email,
        name,
        roles: vec!["user".to_string()],
        created_at: now_unix(),
    };
    let row = user.clone();
    let inserted =
        s.db.call(move |c| Ok(store::insert(c, &row, &hash)?))
            .await?;
    match inserted {
        Some(()) => Ok((StatusCode::CREATED, Json(user))),
        None => Err(ApiError::conflict(
            "email_taken",
            "an account with this email exists",
        )),
    }
}

fn refresh_refused() -> ApiError {
    ApiError::unauthorized(
        "invalid_refresh_token",
        "the refresh token is unknown, expired or already used",
    )
}

/// A signed access token for `user` in session `sid`, and its pair body.
async fn issue(s: &MemberState, user: &User, sid: &str) -> Result<(String, AccessRef), ApiError> {
    let mut redis = s.redis.clone();
    let floor = sessions::issue_floor(&mut redis, &user.id)
        .await
        .map_err(ApiError::unavailable)?;
    let (access, claims) = s
        .tokens
        .issue(&user.id, &user.email, &user.roles, sid, floor)
        .map_err(ApiError::internal)?;
    let r = AccessRef {
        jti: claims.jti,
        exp: claims.exp,
    };
    Ok((access, r))
}

fn pair_body(s: &MemberState, access: String, refresh: String) -> serde_json::Value {
    json!({
        "accessToken": access,
        "refreshToken": refresh,
        "tokenType": "Bearer",
        "expiresIn": s.tokens.access_ttl.as_secs(),
    })
}

/// Start a new session (a new refresh-token family) for `user`.
async fn new_session(s: &MemberState, user: &User) -> Result<serde_json::Value, ApiError> {
    let sid = uuid::Uuid::new_v4().to_string();
    let (access, r) = issue(s, user, &sid).await?;
    let refresh = tokens::new_refresh_token();
    let mut redis = s.redis.clone();
    sessions::start(&mut redis, &user.id, &sid, &refresh, &r, s.refresh_ttl)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(pair_body(s, access, refresh))
}

/// Revoke the given access tokens of a session that ended early.
async fn revoke_access(s: &MemberState, access: &[AccessRef]) -> Result<(), ApiError> {
    let now = now_unix();
    for a in access.iter().filter(|a| a.exp > now) {
        let remaining = Duration::from_secs((a.exp - now) as u64);
        revoke::revoke_token(&s.revocations, &a.jti, remaining)
            .await
            .map_err(ApiError::unavailable)?;
    }
    Ok(())
}

async fn login(
    State(s): State<MemberState>,
    JsonBody(body): JsonBody<Login>,
) -> Result<impl IntoResponse, ApiError> {
    let invalid = || ApiError::unauthorized("invalid_credentials", "wrong email or password");
    let email = store::normalise_email(&body.email).ok_or_else(invalid)?;
    let found = s.db.call(move |c| Ok(store::by_email(c, &email)?)).await?;
    let Some((user, hash)) = found else {
        return Err(invalid());
    };
    let password = body.password;
    let ok = tokio::task::spawn_blocking(move || store::verify_password(&password, &hash))
        .await
        .map_err(ApiError::internal)?;
    if !ok {
        return Err(invalid());
    }
    Ok(Json(new_session(&s, &user).await?))
}

async fn refresh(
    State(s): State<MemberState>,
    JsonBody(body): JsonBody<Refresh>,
) -> Result<impl IntoResponse, ApiError> {
    let mut redis = s.redis.clone();
    let (sid, sub) = sessions::peek(&mut redis, &body.refresh_token)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(refresh_refused)?;
    let id = sub.clone();
    let user = s.db.call(move |c| Ok(store::by_id(c, &id)?)).await?;
    let user = user.ok_or_else(refresh_refused)?;
    // Sign first, then rotate atomically: the pair is only handed out if this token
    // was the session's current one at the moment of the swap.
    let (access, r) = issue(&s, &user, &sid).await?;
    let next = tokens::new_refresh_token();
    let rotation = sessions::rotate(
        &mut redis,
        &sub,
        &sid,
        &body.refresh_token,
        &next,
        &r,
        s.refresh_ttl,
        now_unix(),
    )
    .await
    .map_err(ApiError::unavailable)?;
    match rotation {
        Rotation::Rotated => Ok(Json(pair_body(&s, access, next))),
        Rotation::Unknown => Err(refresh_refused()),
        Rotation::Reused { sub, access } => {
            // Someone holds a copy of a rotated token: the thief or the victim, we
            // cannot tell, so the whole session ends for both.
            tracing::warn!(%sub, session = %sid, "refresh token reused: session ended");
            revoke_access(&s, &access).await?;
            Err(refresh_refused())
        }
    }
}

/// The caller's own access token, verified (it must be one of ours, for this user).
fn bearer_claims(
    s: &MemberState,
    headers: &HeaderMap,
    who: &Identity,
) -> Result<(String, AccessClaims), ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| ApiError::bad_request("logout needs the access token in Authorization"))?;
    let claims = s
        .tokens
        .verify(token.trim())
        .map_err(|_| ApiError::unauthorized("invalid_token", "not a valid access token"))?;
    if claims.sub != who.user_id {
        return Err(ApiError::unauthorized(
            "invalid_token",
            "the token does not belong to the caller",
        ));
    }
    Ok((token.trim().to_string(), claims))
}

async fn logout(
    State(s): State<MemberState>,
    who: Identity,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let (token, claims) = bearer_claims(&s, &headers, &who)?;
    let body: Logout = if body.is_empty() {
        Logout::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let all = body.all || query_flag(query.as_deref(), "all")?;
    let remaining = Duration::from_secs((claims.exp - now_unix()).max(1) as u64);
    revoke::revoke_token(&s.revocations, &token, remaining)
        .await
        .map_err(ApiError::unavailable)?;
    let mut redis = s.redis.clone();
    if all {
        end_every_session(&s, &who.user_id).await?;
        tracing::info!(sub = %who.user_id, "logged out everywhere");
        return Ok(StatusCode::NO_CONTENT);
    }
    // This session: the token's own, and the refresh token's if one was sent.
    let mut sids: Vec<String> = claims.sid.iter().cloned().collect();
    if let Some(t) = &body.refresh_token {
        let found = sessions::peek(&mut redis, t)
            .await
            .map_err(ApiError::unavailable)?;
        if let Some((sid, sub)) = found {
            if sub == who.user_id && !sids.contains(&sid) {
                sids.push(sid);
            }
        }
    }
    for sid in &sids {
        let access = sessions::end(&mut redis, &who.user_id, sid)
            .await
            .map_err(ApiError::unavailable)?;
        revoke_access(&s, &access).await?;
    }
    tracing::info!(sub = %who.user_id, jti = %claims.jti, "logged out");
    Ok(StatusCode::NO_CONTENT)
}

/// `?all=true` (or `1`); absent is false; anything else is a bad request.
fn query_flag(query: Option<&str>, name: &str) -> Result<bool, ApiError> {
    let Some(q) = query else { return Ok(false) };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        if k == name {
            return match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "{name} must be true or false"
                ))),
            };
        }
    }
    Ok(false)
}

/// Refuse every token of `sub` issued up to now (`revoked-before:{sub}`) and end every
/// session. Tokens issued before the cut-off are refused; +1 s covers one issued this
/// second (new ones are issued at or after the cut-off, see `sessions`).
async fn end_every_session(s: &MemberState, sub: &str) -> Result<(), ApiError> {
    let cut_off = now_unix() + 1;
    let keep = s.tokens.access_ttl + Duration::from_secs(300);
    // Revoke first: if Redis is down nothing changed, and the caller can retry.
    revoke::revoke_subject(&s.revocations, sub, cut_off, keep)
        .await
        .map_err(ApiError::unavailable)?;
    let mut redis = s.redis.clone();
    sessions::end_all(&mut redis, sub, cut_off, keep)
        .await
        .map_err(ApiError::unavailable)
}

async fn me(State(s): State<MemberState>, who: Identity) -> Result<impl IntoResponse, ApiError> {
    let id = who.user_id.clone();
    let user = s.db.call(move |c| Ok(store::by_id(c, &id)?)).await?;
    user.map(Json)
        .ok_or_else(|| ApiError::not_found("no such member (withdrawn?)"))
}

async fn withdraw(
    State(s): State<MemberState>,
    who: Identity,
) -> Result<impl IntoResponse, ApiError> {
    // Sessions end first: if Redis is down the account stays, and the caller can retry.
    end_every_session(&s, &who.user_id).await?;
    let id = who.user_id.clone();
    let removed = s.db.call(move |c| Ok(store::delete(c, &id)?)).await?;
    if !removed {
        return Err(ApiError::not_found("no such member"));
    }
    tracing::info!(sub = %who.user_id, "member withdrawn; every token revoked");
    Ok(StatusCode::NO_CONTENT)
}
