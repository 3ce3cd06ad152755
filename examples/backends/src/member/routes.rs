//! The member HTTP API: signup, login, refresh, logout, me, withdraw, and the JWKS.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

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
    #[serde(default)]
    refresh_token: Option<String>,
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

/// Issue an access token and a fresh refresh token for `user`.
async fn token_pair(s: &MemberState, user: &User) -> Result<serde_json::Value, ApiError> {
    let (access, _) = s
        .tokens
        .issue(&user.id, &user.email, &user.roles)
        .map_err(ApiError::internal)?;
    let refresh = tokens::new_refresh_token();
    let mut redis = s.redis.clone();
    tokens::store_refresh(&mut redis, &refresh, &user.id, s.refresh_ttl)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(json!({
        "accessToken": access,
        "refreshToken": refresh,
        "tokenType": "Bearer",
        "expiresIn": s.tokens.access_ttl.as_secs(),
    }))
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
    Ok(Json(token_pair(&s, &user).await?))
}

async fn refresh(
    State(s): State<MemberState>,
    JsonBody(body): JsonBody<Refresh>,
) -> Result<impl IntoResponse, ApiError> {
    let invalid = || {
        ApiError::unauthorized(
            "invalid_refresh_token",
            "the refresh token is unknown, expired or already used",
        )
    };
    let mut redis = s.redis.clone();
    let sub = tokens::take_refresh(&mut redis, &body.refresh_token)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(invalid)?;
    let user = s.db.call(move |c| Ok(store::by_id(c, &sub)?)).await?;
    let user = user.ok_or_else(invalid)?;
    Ok(Json(token_pair(&s, &user).await?))
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
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let (token, claims) = bearer_claims(&s, &headers, &who)?;
    let body: Logout = if body.is_empty() {
        Logout::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let remaining = Duration::from_secs((claims.exp - now_unix()).max(1) as u64);
    revoke::revoke_token(&s.revocations, &token, remaining)
        .await
        .map_err(ApiError::unavailable)?;
    let mut redis = s.redis.clone();
    let dropped = match &body.refresh_token {
        Some(t) => tokens::drop_refresh(&mut redis, t, &who.user_id).await,
        None => tokens::drop_all_refresh(&mut redis, &who.user_id).await,
    };
    dropped.map_err(ApiError::unavailable)?;
    tracing::info!(sub = %who.user_id, jti = %claims.jti, "logged out");
    Ok(StatusCode::NO_CONTENT)
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
    // Tokens issued before the cut-off are refused; +1 s covers one issued this second
    // (nothing can be issued after: the account is gone).
    let cut_off = now_unix() + 1;
    // Revoke first: if Redis is down the account stays, and the caller can retry.
    let keep = s.tokens.access_ttl + Duration::from_secs(300);
    revoke::revoke_subject(&s.revocations, &who.user_id, cut_off, keep)
        .await
        .map_err(ApiError::unavailable)?;
    let mut redis = s.redis.clone();
    tokens::drop_all_refresh(&mut redis, &who.user_id)
        .await
        .map_err(ApiError::unavailable)?;
    let id = who.user_id.clone();
    let removed = s.db.call(move |c| Ok(store::delete(c, &id)?)).await?;
    if !removed {
        return Err(ApiError::not_found("no such member"));
    }
    tracing::info!(sub = %who.user_id, "member withdrawn; every token revoked");
    Ok(StatusCode::NO_CONTENT)
}
