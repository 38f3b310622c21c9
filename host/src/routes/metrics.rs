//! `GET /metrics` on the main port: the Prometheus text format, for the
//! `AGENTFLOW_METRICS_TOKEN` bearer token or a superuser's credentials
//! (login token or API key). `agentflow run --metrics-port` serves the same
//! text without credentials on a loopback listener of its own.

use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use http::header;
use subtle::ConstantTimeEq;

use super::AppState;
use super::account::Superuser;
use crate::error::{ApiError, ErrorBody};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics.
///
/// The metrics token, or else a superuser.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "Neither the `AGENTFLOW_METRICS_TOKEN` bearer token nor valid credentials", body = ErrorBody),
        (status = 403, description = "The caller is not a superuser", body = ErrorBody),
    ),
)]
pub async fn metrics(
    State(state): State<AppState>,
    mut req: Request,
) -> Result<Response, ApiError> {
    if !bearer_is(req.headers(), state.gateway.metrics_token.as_deref()) {
        let caller = super::identify(&state, state.live.current(), &mut req, None).await?;
        let (mut parts, _) = req.into_parts();
        parts.extensions.insert(caller);
        Superuser::from_request_parts(&mut parts, &state).await?;
    }
    Ok(render())
}

/// The current metrics as a response.
pub fn render() -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        crate::metrics::global().render(),
    )
        .into_response()
}

/// Whether `Authorization: Bearer <token>` carries `token` (compared in
/// constant time); never with no token configured.
fn bearer_is(headers: &http::HeaderMap, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return false;
    };
    let Some(sent) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Bearer "))
    else {
        return false;
    };
    sent.trim().as_bytes().ct_eq(token.as_bytes()).into()
}
