//! `GET /v1/plugins`: what every loaded plugin is running, for operators
//! and plugin developers watching hot reloads.

use axum::Json;
use axum::extract::{Extension, State};

use super::{AppState, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::plugins::PluginStatus;

/// The role allowed to list plugins.
const ADMIN: &str = "admin";

/// The loaded plugins.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PluginList {
    /// Authenticators in chain order, then the authorizer.
    plugins: Vec<PluginStatus>,
    /// The config file and what its last reload did.
    #[schema(value_type = Object)]
    config: serde_json::Value,
}

/// What the loaded plugins are running.
///
/// Admins only (role `admin`): each plugin's name, slot, path, running
/// component and its sha256, load time, last reload error, and call,
/// denial and failure counts; and, under `config`, the config file and
/// what its last reload did. Secrets and configs are never listed.
#[utoipa::path(
    get,
    path = "/v1/plugins",
    operation_id = "list_plugins",
    tag = "plugins",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "What every loaded plugin is running", body = PluginList),
        (status = 403, description = "The caller does not have the `admin` role", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<PluginList>, ApiError> {
    if !caller.identity.roles.iter().any(|r| r == ADMIN) {
        return Err(ApiError::Forbidden(
            "listing plugins needs the \"admin\" role".into(),
        ));
    }
    // The caller's own snapshot: the plugins that authenticated this call.
    let plugins: Vec<_> = caller.setup.gate.plugins().map(|p| p.status()).collect();
    let config = serde_json::to_value(state.live.status()).unwrap_or_default();
    Ok(Json(PluginList { plugins, config }))
}
