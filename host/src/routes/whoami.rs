//! `GET /v1/whoami`: the caller's identity as the server sees it.

use axum::Json;
use axum::extract::Extension;
use serde_json::Value;

use super::Caller;

/// The caller's identity.
///
/// Any authenticated caller: returns `user_id`, `roles` and `claims`.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "identity",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The caller as the gateway sees them, whatever method proved it", body = crate::identity::Identity)),
)]
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<Value> {
    Json(caller.identity.to_json())
}
