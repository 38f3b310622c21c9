//! API keys: `POST/GET /v1/api-keys`, `DELETE /v1/api-keys/{id}`.

use axum::extract::State;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::account::Account;
use super::client::ClientIp;
use crate::audit::Entry;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path};
use crate::store::{ApiKey, AuditKind, NewApiKey, Store, unix_now};

/// A key as listings show it: masked.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    /// The key's id (not the key).
    id: String,
    /// Its label.
    name: String,
    /// `prefix…last4`.
    masked: String,
    /// Creation time, unix seconds.
    created_at: u64,
    /// Last use, unix seconds; `null` if never used.
    last_used_at: Option<u64>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        ApiKeyView {
            masked: format!("{}…{}", k.prefix, k.last4),
            id: k.id,
            name: k.name,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// A key to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for people (at most 100 characters).
    #[serde(default)]
    #[schema(max_length = 100)]
    name: String,
}

/// A new key: the only time `key` is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    view: ApiKeyView,
    /// The key itself, for the `x-api-key` header.
    key: String,
}

/// Create an API key.
///
/// Any account: creates a key for themselves.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    operation_id = "create_api_key",
    tag = "api keys",
    request_body = CreateKey,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The key, shown this once", body = CreatedKey),
        (status = 400, description = "The name is longer than 100 characters", body = ErrorBody),
        (status = 403, description = "The caller is not an agentflow account", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Account(me): Account,
    ClientIp(client): ClientIp,
    Json(body): Json<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    if body.name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "name must be at most 100 characters".into(),
        ));
    }
    let (new, key) = NewApiKey::generate(&me.id, &body.name);
    let stored = state.accounts.store.create_api_key(new, unix_now()).await?;
    let entry = Entry::new(AuditKind::ApiKeyCreated)
        .actor(me.username)
        .subject(stored.name.clone())
        .client(client)
        .detail("key_id", stored.id.clone());
    state.accounts.record(entry).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            view: stored.into(),
            key,
        }),
    ))
}

/// List the caller's API keys.
///
/// Any account: their keys, masked.
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    operation_id = "list_api_keys",
    tag = "api keys",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The caller's keys", body = Vec<ApiKeyView>),
        (status = 403, description = "The caller is not an agentflow account", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Account(me): Account,
) -> Result<Json<Vec<ApiKeyView>>, ApiError> {
    let keys = state.accounts.store.list_api_keys(&me.id).await?;
    Ok(Json(keys.into_iter().map(Into::into).collect()))
}

/// Revoke an API key.
///
/// The key's owner or a superuser: revokes it.
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    operation_id = "revoke_api_key",
    tag = "api keys",
    params(("id" = String, Path, description = "The key's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "The key is revoked"),
        (status = 403, description = "The caller is not an agentflow account", body = ErrorBody),
        (status = 404, description = "No such key, or another user's key", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    Account(me): Account,
    ClientIp(client): ClientIp,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let key = state.accounts.store.get_api_key(&id).await?;
    if key.user_id != me.id && !me.is_superuser {
        // Same answer as a missing key: other users' key ids are not confirmed.
        return Err(ApiError::NotFound("not found".into()));
    }
    state.accounts.store.delete_api_key(&id).await?;
    let mut entry = Entry::new(AuditKind::ApiKeyRevoked)
        .actor(me.username)
        .subject(key.name)
        .client(client)
        .detail("key_id", key.id);
    if key.user_id != me.id {
        entry = entry.detail("owner_id", key.user_id);
    }
    state.accounts.record(entry).await;
    Ok(StatusCode::NO_CONTENT)
}
