//! User administration: `/v1/users/whoami` and `/v1/users[/{id}]`.

use axum::extract::State;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::account::{Account, Superuser};
use crate::accounts::{validate_password, validate_username};
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::passwords;
use crate::store::{NewUser, Store, StoreError, User, UserUpdate, unix_now};

/// A user as the API shows it (never the password hash).
#[derive(Serialize)]
pub struct UserView {
    id: String,
    username: String,
    is_active: bool,
    is_superuser: bool,
    created_at: u64,
    updated_at: u64,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            username: u.username,
            is_active: u.is_active,
            is_superuser: u.is_superuser,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// Any account: their own record.
pub async fn whoami(Account(me): Account) -> Json<UserView> {
    Json(me.into())
}

/// `offset` / `limit` of a listing.
#[derive(Deserialize)]
pub struct Paging {
    #[serde(default)]
    offset: u64,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    50
}

/// A page of users.
#[derive(Serialize)]
pub struct UserPage {
    items: Vec<UserView>,
    total: u64,
    offset: u64,
    limit: u64,
}

/// Superusers: every user, paginated (`limit` at most 500).
pub async fn list(
    State(state): State<AppState>,
    _: Superuser,
    Query(p): Query<Paging>,
) -> Result<Json<UserPage>, ApiError> {
    let limit = p.limit.clamp(1, 500);
    let page = state.accounts.store.list_users(p.offset, limit).await?;
    Ok(Json(UserPage {
        items: page.items.into_iter().map(Into::into).collect(),
        total: page.total,
        offset: p.offset,
        limit,
    }))
}

/// A user to create.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    username: String,
    password: String,
    is_active: Option<bool>,
    #[serde(default)]
    is_superuser: bool,
}

/// Superusers: creates a user; `is_active` defaults to AGENTFLOW_NEW_USER_IS_ACTIVE.
pub async fn create(
    State(state): State<AppState>,
    _: Superuser,
    Json(body): Json<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    validate_username(&body.username)?;
    validate_password(&body.password)?;
    let password_hash = passwords::hash_password_async(body.password)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let new = NewUser {
        username: body.username,
        password_hash,
        is_active: body
            .is_active
            .unwrap_or(state.accounts.settings.new_user_is_active),
        is_superuser: body.is_superuser,
    };
    let user = state
        .accounts
        .store
        .create_user(new, unix_now())
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::Conflict("username is already taken".into()),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Changes to a user.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    password: Option<String>,
    is_active: Option<bool>,
    is_superuser: Option<bool>,
}

/// Users change their own password; superusers change anyone's password
/// and `is_active` / `is_superuser`.
pub async fn update(
    State(state): State<AppState>,
    Account(me): Account,
    Path(id): Path<String>,
    Json(body): Json<PatchUser>,
) -> Result<Json<UserView>, ApiError> {
    let is_self = me.id == id;
    if !me.is_superuser && (!is_self || body.is_active.is_some() || body.is_superuser.is_some()) {
        return Err(ApiError::Forbidden(
            "only a superuser may change this".into(),
        ));
    }
    if is_self && (body.is_active == Some(false) || body.is_superuser == Some(false)) {
        return Err(ApiError::BadRequest(
            "a superuser cannot deactivate or demote themselves".into(),
        ));
    }
    let password_hash = match body.password {
        Some(p) => {
            validate_password(&p)?;
            Some(
                passwords::hash_password_async(p)
                    .await
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
            )
        }
        None => None,
    };
    let update = UserUpdate {
        username: None,
        password_hash,
        is_active: body.is_active,
        is_superuser: body.is_superuser,
    };
    let user = state
        .accounts
        .store
        .update_user(&id, update, unix_now())
        .await?;
    if !user.is_active {
        state.accounts.store.revoke_user_families(&user.id).await?;
    }
    Ok(Json(user.into()))
}

/// Superusers: deletes a user (not themselves) with their keys, logins and variables.
pub async fn delete(
    State(state): State<AppState>,
    Superuser(me): Superuser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if me.id == id {
        return Err(ApiError::BadRequest(
            "a superuser cannot delete themselves".into(),
        ));
    }
    state.accounts.store.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
