//! API keys: `POST/GET /v1/api-keys`, `DELETE /v1/api-keys/{id}`.

use axum::extract::State;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::account::Account;
use super::client::ClientIp;
use crate::audit::Entry;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::store::{ApiKey, AuditKind, NewApiKey, Store, unix_now};

/// A key as listings show it: masked.
#[derive(Serialize)]
pub struct ApiKeyView {
    id: String,
    name: String,
    /// `prefix…last4`.
    masked: String,
    created_at: u64,
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[serde(default)]
    name: String,
}

/// A new key: the only time `key` is shown.
#[derive(Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    view: ApiKeyView,
    key: String,
}

/// Any account: creates a key for themselves.
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

/// Any account: their keys, masked.
pub async fn list(
    State(state): State<AppState>,
    Account(me): Account,
) -> Result<Json<Vec<ApiKeyView>>, ApiError> {
    let keys = state.accounts.store.list_api_keys(&me.id).await?;
    Ok(Json(keys.into_iter().map(Into::into).collect()))
}

/// The key's owner or a superuser: revokes it.
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
