//! User administration: `/v1/users/whoami` and `/v1/users[/{id}]`.

use axum::extract::State;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::account::{Account, Superuser};
use super::client::ClientIp;
use crate::accounts::{validate_password, validate_username};
use crate::audit::Entry;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::passwords;
use crate::store::{AuditKind, NewUser, Store, StoreError, User, UserUpdate, unix_now};

/// A user as the API shows it (never the password hash).
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// Random 32-hex-digit id.
    id: String,
    /// The login name.
    username: String,
    /// Whether the user may log in.
    is_active: bool,
    /// Whether the user administers users and reads the audit trail.
    is_superuser: bool,
    /// Creation time, unix seconds.
    created_at: u64,
    /// Last change, unix seconds.
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

/// The caller's account.
///
/// Any account: their own record.
#[utoipa::path(
    get,
    path = "/v1/users/whoami",
    operation_id = "my_account",
    tag = "users",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The caller's account", body = UserView),
        (status = 403, description = "The caller is not an agentflow account (an external JWT or a plugin's identity)", body = ErrorBody),
    ),
)]
pub async fn whoami(Account(me): Account) -> Json<UserView> {
    Json(me.into())
}

/// `offset` / `limit` of a listing, and an optional search.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Only usernames containing this, ignoring case.
    #[serde(default)]
    q: Option<String>,
    /// How many users to skip.
    #[serde(default)]
    offset: u64,
    /// How many users to return (1 to 500; outside that, clamped).
    #[serde(default = "default_limit")]
    #[param(default = 50)]
    limit: u64,
}

fn default_limit() -> u64 {
    50
}

/// A page of users.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserPage {
    /// This page's users.
    items: Vec<UserView>,
    /// How many users match in all.
    total: u64,
    /// How many were skipped.
    offset: u64,
    /// The page size used.
    limit: u64,
}

/// List users.
///
/// Superusers: every user (or those whose name contains `q`, ignoring
/// case), paginated (`limit` at most 500).
#[utoipa::path(
    get,
    path = "/v1/users",
    operation_id = "list_users",
    tag = "users",
    params(Paging),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 403, description = "The caller is not a superuser", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    _: Superuser,
    Query(p): Query<Paging>,
) -> Result<Json<UserPage>, ApiError> {
    let offset = crate::extract::int64_param("offset", p.offset)?;
    let limit = crate::extract::int64_param("limit", p.limit)?.clamp(1, 500);
    let page = match p.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        None => state.accounts.store.list_users(offset, limit).await?,
        Some(q) => search(&state, q, offset, limit).await?,
    };
    Ok(Json(UserPage {
        items: page.items.into_iter().map(Into::into).collect(),
        total: page.total,
        offset,
        limit,
    }))
}

/// Users whose name contains `q` (ignoring case), paged: a scan of every
/// user, which is fine for an operator's search.
async fn search(
    state: &AppState,
    q: &str,
    offset: u64,
    limit: u64,
) -> Result<crate::store::Page<User>, ApiError> {
    let q = q.to_lowercase();
    let all = state.accounts.store.list_users(0, u64::MAX).await?;
    let matching: Vec<User> = all
        .items
        .into_iter()
        .filter(|u| u.username.to_lowercase().contains(&q))
        .collect();
    let total = matching.len() as u64;
    let items = matching
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect();
    Ok(crate::store::Page { items, total })
}

/// A user to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 3-64 ASCII letters, digits, `.`, `_`, `-` or `@`.
    #[schema(min_length = 3, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")]
    username: String,
    /// 8-1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    /// Defaults to `AGENTFLOW_NEW_USER_IS_ACTIVE`.
    is_active: Option<bool>,
    /// Defaults to `false`.
    #[serde(default)]
    is_superuser: bool,
}

/// Create a user.
///
/// Superusers: creates a user; `is_active` defaults to AGENTFLOW_NEW_USER_IS_ACTIVE.
#[utoipa::path(
    post,
    path = "/v1/users",
    operation_id = "create_user",
    tag = "users",
    request_body = CreateUser,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The user was created", body = UserView),
        (status = 400, description = "The username or password does not meet the rules", body = ErrorBody),
        (status = 403, description = "The caller is not a superuser", body = ErrorBody),
        (status = 409, description = "The username is taken", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Superuser(me): Superuser,
    ClientIp(client): ClientIp,
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
    let entry = Entry::new(AuditKind::UserCreated)
        .actor(me.username)
        .subject(user.username.clone())
        .client(client)
        .detail("is_active", user.is_active)
        .detail("is_superuser", user.is_superuser);
    state.accounts.record(entry).await;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Changes to a user.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    /// A new password, 8-1024 characters (the user themselves, or a superuser).
    #[schema(min_length = 8, max_length = 1024)]
    password: Option<String>,
    /// Superusers only; deactivating ends the user's sessions.
    is_active: Option<bool>,
    /// Superusers only.
    is_superuser: Option<bool>,
}

/// Change a user.
///
/// Users change their own password; superusers change anyone's password
/// and `is_active` / `is_superuser`.
#[utoipa::path(
    patch,
    path = "/v1/users/{id}",
    operation_id = "update_user",
    tag = "users",
    params(("id" = String, Path, description = "The user's id")),
    request_body = PatchUser,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The user as changed", body = UserView),
        (status = 400, description = "The password does not meet the rules, or a superuser tried to deactivate or demote themselves", body = ErrorBody),
        (status = 403, description = "Only a superuser may change this", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    Account(me): Account,
    ClientIp(client): ClientIp,
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
    // Field names only: a new password is recorded as "password changed".
    let changed: Vec<&str> = [
        ("password", body.password.is_some()),
        ("is_active", body.is_active.is_some()),
        ("is_superuser", body.is_superuser.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
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
    let mut entry = Entry::new(AuditKind::UserChanged)
        .actor(me.username)
        .subject(user.username.clone())
        .client(client)
        .detail("changed", changed);
    if let Some(active) = body.is_active {
        entry = entry.detail("is_active", active);
    }
    if let Some(superuser) = body.is_superuser {
        entry = entry.detail("is_superuser", superuser);
    }
    state.accounts.record(entry).await;
    Ok(Json(user.into()))
}

/// Delete a user.
///
/// Superusers: deletes a user (not themselves) with their keys, logins and variables.
#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    operation_id = "delete_user",
    tag = "users",
    params(("id" = String, Path, description = "The user's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "The user is deleted"),
        (status = 400, description = "A superuser cannot delete themselves", body = ErrorBody),
        (status = 403, description = "The caller is not a superuser", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    Superuser(me): Superuser,
    ClientIp(client): ClientIp,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if me.id == id {
        return Err(ApiError::BadRequest(
            "a superuser cannot delete themselves".into(),
        ));
    }
    let user = state.accounts.store.get_user(&id).await?;
    state.accounts.store.delete_user(&id).await?;
    let entry = Entry::new(AuditKind::UserDeleted)
        .actor(me.username)
        .subject(user.username)
        .client(client)
        .detail("user_id", user.id);
    state.accounts.record(entry).await;
    Ok(StatusCode::NO_CONTENT)
}
