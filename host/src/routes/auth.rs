//! Public account routes: `POST /v1/login`, `POST /v1/refresh`,
//! `POST /v1/logout` and `GET /v1/auto_login`.

use axum::extract::{FromRequest, Request, State};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::accounts::TokenPair;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, JsonOrForm};

/// Username and password, as JSON or as an HTML form.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginForm {
    username: String,
    password: String,
}

/// A refresh token to rotate or revoke.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RefreshForm {
    refresh_token: String,
}

/// The answer to a logout.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct LoggedOut {
    /// Always `Logged out`.
    #[schema(example = "Logged out")]
    detail: &'static str,
}

/// Log in with a username and password.
///
/// Anyone: exchanges a username and password for tokens; throttled per
/// client address (resolved through the trusted proxies; served without a
/// peer address, every caller shares one budget).
#[utoipa::path(
    post,
    path = "/v1/login",
    tag = "login",
    request_body(content(
        (LoginForm = "application/json"),
        (LoginForm = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Logged in", body = TokenPair),
        (status = 401, description = "Wrong username or password, or the account is not active", body = ErrorBody),
        (status = 429, description = "Too many failed logins from this address or for this account", body = ErrorBody),
    ),
)]
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

/// Rotate a refresh token.
///
/// Anyone holding a refresh token: rotates it (single use).
#[utoipa::path(
    post,
    path = "/v1/refresh",
    tag = "login",
    request_body(content(
        (RefreshForm = "application/json"),
        (RefreshForm = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "A new token pair; the old refresh token is spent", body = TokenPair),
        (status = 401, description = "The refresh token is invalid, expired or already used", body = ErrorBody),
    ),
)]
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

/// Log out (revoke a refresh token's login).
///
/// Anyone holding a refresh token: revokes its login.
#[utoipa::path(
    post,
    path = "/v1/logout",
    tag = "login",
    request_body(content(
        (RefreshForm = "application/json"),
        (RefreshForm = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The login is revoked", body = LoggedOut),
        (status = 401, description = "The refresh token is invalid or expired", body = ErrorBody),
    ),
)]
pub async fn logout(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<LoggedOut>, ApiError> {
    let client = client_of(&req);
    let form: RefreshForm = json_or_form(req).await?;
    state.accounts.logout(&form.refresh_token, client).await?;
    Ok(Json(LoggedOut {
        detail: "Logged out",
    }))
}

/// Superuser tokens without a password (AGENTFLOW_AUTO_LOGIN).
///
/// Anyone, only when AGENTFLOW_AUTO_LOGIN is on: a superuser token.
#[utoipa::path(
    get,
    path = "/v1/auto_login",
    tag = "login",
    responses(
        (status = 200, description = "Tokens for the superuser", body = TokenPair),
        (status = 403, description = "Auto login is off (`AGENTFLOW_AUTO_LOGIN`)", body = ErrorBody),
    ),
)]
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
