//! `GET /v1/plugins`: what every loaded plugin is running, for operators
//! and plugin developers watching hot reloads.

use axum::Json;
use axum::extract::{Extension, State};
use serde_json::{Value, json};

use super::{AppState, Caller};
use crate::error::ApiError;

/// The role allowed to list plugins.
const ADMIN: &str = "admin";

/// Admins only (role `admin`): each plugin's name, slot, path, running
/// component and its sha256, load time, last reload error, and call,
/// denial and failure counts; and, under `config`, the config file and
/// what its last reload did. Secrets and configs are never listed.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    if !caller.identity.roles.iter().any(|r| r == ADMIN) {
        return Err(ApiError::Forbidden(
            "listing plugins needs the \"admin\" role".into(),
        ));
    }
    // The caller's own snapshot: the plugins that authenticated this call.
    let plugins: Vec<_> = caller.setup.gate.plugins().map(|p| p.status()).collect();
    Ok(Json(
        json!({ "plugins": plugins, "config": state.live.status() }),
    ))
}
