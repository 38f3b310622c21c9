//! Encrypted variables (Langflow's global variables), per user:
//! `POST/GET /v1/variables`, `PATCH/DELETE /v1/variables/{id}`.

use axum::extract::State;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::account::Account;
use super::client::ClientIp;
use crate::audit::Entry;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path};
use crate::store::{
    AuditKind, NewVariable, Store, StoreError, User, Variable, VariableKind, unix_now,
};

/// Longest variable value accepted.
const MAX_VALUE: usize = 64 * 1024;

/// A variable as the API shows it: credential values are never returned.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VariableView {
    /// Random 32-hex-digit id.
    id: String,
    /// Its name.
    name: String,
    /// `generic` or `credential`.
    #[serde(rename = "type")]
    kind: VariableKind,
    /// The plaintext for generic variables; `null` for credentials.
    value: Option<String>,
    /// Creation time, unix seconds.
    created_at: u64,
    /// Last change, unix seconds.
    updated_at: u64,
}

fn view(state: &AppState, v: Variable) -> Result<VariableView, ApiError> {
    let value = match v.kind {
        VariableKind::Credential => None,
        VariableKind::Generic => {
            let bytes = state
                .accounts
                .secrets
                .decrypt(&v.value_encrypted)
                .map_err(|e| {
                    ApiError::Internal(format!("variable {} cannot be decrypted: {e}", v.id))
                })?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    Ok(VariableView {
        id: v.id,
        name: v.name,
        kind: v.kind,
        value,
        created_at: v.created_at,
        updated_at: v.updated_at,
    })
}

/// A variable to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVariable {
    /// 1-128 characters, not all blank, unique among the caller's variables.
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    name: String,
    /// At most 64 KiB; encrypted at rest.
    value: String,
    /// `generic` (default) or `credential` (never shown again).
    #[serde(rename = "type", default = "generic")]
    kind: VariableKind,
}

fn generic() -> VariableKind {
    VariableKind::Generic
}

fn check(name: Option<&str>, value: Option<&str>) -> Result<(), ApiError> {
    if name.is_some_and(|n| n.trim().is_empty() || n.chars().count() > 128) {
        return Err(ApiError::BadRequest("name must be 1-128 characters".into()));
    }
    if value.is_some_and(|v| v.len() > MAX_VALUE) {
        return Err(ApiError::BadRequest(format!(
            "value must be at most {MAX_VALUE} bytes"
        )));
    }
    Ok(())
}

/// Store a variable.
///
/// Any account: stores an encrypted variable.
#[utoipa::path(
    post,
    path = "/v1/variables",
    operation_id = "create_variable",
    tag = "variables",
    request_body = CreateVariable,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The variable was stored", body = VariableView),
        (status = 400, description = "The name is not 1-128 characters or the value is over 64 KiB", body = ErrorBody),
        (status = 403, description = "The caller is not an agentflow account", body = ErrorBody),
        (status = 409, description = "The caller has a variable with this name", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Account(me): Account,
    ClientIp(client): ClientIp,
    Json(body): Json<CreateVariable>,
) -> Result<(StatusCode, Json<VariableView>), ApiError> {
    check(Some(&body.name), Some(&body.value))?;
    let new = NewVariable {
        user_id: me.id.clone(),
        name: body.name,
        kind: body.kind,
        value_encrypted: state.accounts.secrets.encrypt(body.value.as_bytes()),
    };
    let stored = state
        .accounts
        .store
        .create_variable(new, unix_now())
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                ApiError::Conflict("a variable with this name exists".into())
            }
            other => other.into(),
        })?;
    let entry = variable_event(AuditKind::VariableCreated, &me, &stored, client);
    state.accounts.record(entry).await;
    Ok((StatusCode::CREATED, Json(view(&state, stored)?)))
}

/// List the caller's variables.
///
/// Any account: their variables.
#[utoipa::path(
    get,
    path = "/v1/variables",
    operation_id = "list_variables",
    tag = "variables",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The caller's variables", body = Vec<VariableView>),
        (status = 403, description = "The caller is not an agentflow account", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Account(me): Account,
) -> Result<Json<Vec<VariableView>>, ApiError> {
    let vars = state.accounts.store.list_variables(&me.id).await?;
    Ok(Json(
        vars.into_iter()
            .map(|v| view(&state, v))
            .collect::<Result<_, _>>()?,
    ))
}

/// Changes to a variable.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchVariable {
    /// A new value (at most 64 KiB).
    value: Option<String>,
    /// A new type.
    #[serde(rename = "type")]
    kind: Option<VariableKind>,
}

/// Change a variable.
///
/// The owner: changes the value and/or type. Turning a credential into a
/// generic variable needs a new `value` in the same request: generic values
/// are shown, credential values never are.
#[utoipa::path(
    patch,
    path = "/v1/variables/{id}",
    operation_id = "update_variable",
    tag = "variables",
    params(("id" = String, Path, description = "The variable's id")),
    request_body = PatchVariable,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The variable as changed", body = VariableView),
        (status = 400, description = "The value is over 64 KiB, or a credential would turn generic without a new value", body = ErrorBody),
        (status = 403, description = "The caller is not an agentflow account", body = ErrorBody),
        (status = 404, description = "No such variable, or another user's", body = ErrorBody),
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    Account(me): Account,
    ClientIp(client): ClientIp,
    Path(id): Path<String>,
    Json(body): Json<PatchVariable>,
) -> Result<Json<VariableView>, ApiError> {
    let current = owned(&state, &me, &id).await?;
    check(None, body.value.as_deref())?;
    let kind = body.kind.unwrap_or(current.kind);
    reveals_credential(current.kind, kind, body.value.is_some())?;
    let encrypted = match &body.value {
        Some(v) => state.accounts.secrets.encrypt(v.as_bytes()),
        None => current.value_encrypted,
    };
    let updated = state
        .accounts
        .store
        .update_variable(&id, kind, encrypted, unix_now())
        .await?;
    let changed: Vec<&str> = [
        ("value", body.value.is_some()),
        ("type", body.kind.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    let entry = variable_event(AuditKind::VariableChanged, &me, &updated, client)
        .detail("changed", changed);
    state.accounts.record(entry).await;
    Ok(Json(view(&state, updated)?))
}

/// Refuses a change that would show a stored credential: credential to
/// generic without a new value.
fn reveals_credential(
    from: VariableKind,
    to: VariableKind,
    new_value: bool,
) -> Result<(), ApiError> {
    if from == VariableKind::Credential && to == VariableKind::Generic && !new_value {
        return Err(ApiError::BadRequest(
            "`value`: changing a credential to generic needs a new value in the same request (stored credentials are never revealed)".into(),
        ));
    }
    Ok(())
}

/// Delete a variable.
///
/// The owner: deletes it.
#[utoipa::path(
    delete,
    path = "/v1/variables/{id}",
    operation_id = "delete_variable",
    tag = "variables",
    params(("id" = String, Path, description = "The variable's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "The variable is deleted"),
        (status = 403, description = "The caller is not an agentflow account", body = ErrorBody),
        (status = 404, description = "No such variable, or another user's", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    Account(me): Account,
    ClientIp(client): ClientIp,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let gone = owned(&state, &me, &id).await?;
    state.accounts.store.delete_variable(&id).await?;
    let entry = variable_event(AuditKind::VariableDeleted, &me, &gone, client);
    state.accounts.record(entry).await;
    Ok(StatusCode::NO_CONTENT)
}

/// An audit entry naming the variable and its type, never its value.
fn variable_event(kind: AuditKind, me: &User, v: &Variable, client: Option<String>) -> Entry {
    Entry::new(kind)
        .actor(me.username.clone())
        .subject(v.name.clone())
        .client(client)
        .detail("variable_id", v.id.clone())
        .detail("type", serde_json::to_value(v.kind).unwrap_or_default())
}

/// The variable if `me` owns it; 404 otherwise.
async fn owned(state: &AppState, me: &User, id: &str) -> Result<Variable, ApiError> {
    let v = state.accounts.store.get_variable(id).await?;
    if v.user_id != me.id {
        return Err(ApiError::NotFound("not found".into()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use VariableKind::{Credential, Generic};

    #[test]
    fn a_credential_turns_generic_only_with_a_new_value() {
        assert!(reveals_credential(Credential, Generic, false).is_err());
        assert!(reveals_credential(Credential, Generic, true).is_ok());
        assert!(reveals_credential(Credential, Credential, false).is_ok());
        assert!(reveals_credential(Generic, Credential, false).is_ok());
        assert!(reveals_credential(Generic, Generic, false).is_ok());
    }
}
