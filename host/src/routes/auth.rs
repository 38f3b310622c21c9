//! Public account routes: `POST /v1/login`, `POST /v1/refresh`,
//! `POST /v1/logout` and `GET /v1/auto_login`.

use axum::extract::{FromRequest, Request, State};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::AppState;
use crate::accounts::TokenPair;
use crate::error::ApiError;
use crate::extract::{Json, JsonOrForm};

/// Username and password, as JSON or as an HTML form.
#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
}

/// A refresh token to rotate or revoke.
#[derive(Deserialize)]
pub struct RefreshForm {
    refresh_token: String,
}

/// Anyone: exchanges a username and password for tokens; throttled per
/// client address (resolved through the trusted proxies; served without a
/// peer address, every caller shares one budget).
pub async fn login(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<TokenPair>, ApiError> {
    let client = client_of(&req);
    let form: LoginForm = json_or_form(req).await?;
    Ok(Json(
        state
            .accounts
            .login(&form.username, &form.password, client)
            .await?,
    ))
}

/// Anyone holding a refresh token: rotates it (single use).
pub async fn refresh(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<TokenPair>, ApiError> {
    let client = client_of(&req);
    let form: RefreshForm = json_or_form(req).await?;
    Ok(Json(
        state.accounts.refresh(&form.refresh_token, client).await?,
    ))
}

/// Anyone holding a refresh token: revokes its login.
pub async fn logout(State(state): State<AppState>, req: Request) -> Result<Json<Value>, ApiError> {
    let client = client_of(&req);
    let form: RefreshForm = json_or_form(req).await?;
    state.accounts.logout(&form.refresh_token, client).await?;
    Ok(Json(json!({"detail": "Logged out"})))
}

/// Anyone, only when AGENTFLOW_AUTO_LOGIN is on: a superuser token.
pub async fn auto_login(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<TokenPair>, ApiError> {
    Ok(Json(state.accounts.auto_login(client_of(&req)).await?))
}

/// The client's address, resolved through the trusted proxies (served
/// without a peer address, none).
fn client_of(req: &Request) -> Option<std::net::IpAddr> {
    crate::client_addr::of(req)
}

/// Parses the body as JSON or `application/x-www-form-urlencoded`
/// (refusals: see [`crate::extract`]).
async fn json_or_form<T: DeserializeOwned + 'static>(req: Request) -> Result<T, ApiError> {
    let JsonOrForm(v) = JsonOrForm::<T>::from_request(req, &()).await?;
    Ok(v)
}
