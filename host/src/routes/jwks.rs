//! `GET /.well-known/jwks.json` (public): the public half of the key the
//! gateway signs upstream tokens with, so an agent can verify them without
//! sharing a secret. 404 when the token is off or uses an HMAC secret.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header;

use super::AppState;
use crate::error::{ApiError, ErrorBody};

/// Upstream token signing keys (JWKS).
///
/// The JWKS document, cacheable for five minutes.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "identity",
    responses(
        (status = 200, description = "The JSON Web Key Set (RFC 7517) with the public key upstream tokens are signed with",
            body = Object, content_type = "application/json",
            headers(("cache-control" = String, description = "`public, max-age=300`"))),
        (status = 404, description = "`upstream.token` is off or signs with an HMAC secret", body = ErrorBody),
    ),
)]
pub async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let setup = state.live.current();
    let keys = setup
        .upstream
        .as_ref()
        .and_then(|u| u.jwks())
        .ok_or_else(|| ApiError::NotFound("no public keys are published here".into()))?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(keys.clone()),
    )
        .into_response())
}
