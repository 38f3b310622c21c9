//! The one error type the HTTP layer answers with, and its mapping to
//! status codes and JSON bodies: `{"detail": ..., "code": ...}` plus the
//! AgentFlow error envelope (see [`envelope`]).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::plugins::{PluginError, Refusal};
use crate::store::StoreError;

/// Every way a request can be refused or fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credentials were presented (401).
    #[error("{0}")]
    NotAuthenticated(String),
    /// Credentials were presented and are not acceptable (401, with
    /// `error="invalid_token"` when `invalid_token`).
    #[error("{detail}")]
    InvalidCredentials {
        /// Reason shown to the client.
        detail: String,
        /// Whether a bearer token was the credential.
        invalid_token: bool,
    },
    /// Authenticated but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// Too many attempts (429 with `Retry-After`).
    #[error("{detail}")]
    TooManyRequests {
        /// Reason shown to the client.
        detail: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// No such route (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The resource already exists (409).
    #[error("{0}")]
    Conflict(String),
    /// A feature is not available in this setup (503).
    #[error("{0}")]
    Unavailable(String),
    /// The account database cannot be reached now (503); details go to the
    /// log only.
    #[error("the account database is unavailable; try again shortly")]
    StoreUnavailable(String),
    /// An identity provider's signing keys cannot be fetched, so its tokens
    /// can be neither accepted nor refused (503).
    #[error("{0}")]
    KeysUnavailable(String),
    /// The body is too large (413).
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body's media type is not one the route reads (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body parsed but does not have the expected shape (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The route exists but not for this method (405; the router adds `Allow`).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The client did not send the request body in time (408).
    #[error("the request body was not received in time")]
    RequestTimeout,
    /// A plugin failed; the request fails closed (503).
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// No `agent` upstream is configured (503).
    #[error("no agent upstream is configured: set \"agent\" in agentflow.json")]
    NoUpstream,
    /// The upstream could not be reached (502).
    #[error("the agent upstream is unreachable")]
    UpstreamUnavailable,
    /// Something failed inside the server (500); details go to the log only.
    #[error("internal server error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotAuthenticated(_) | ApiError::InvalidCredentials { .. } => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Plugin(_)
            | ApiError::NoUpstream
            | ApiError::Unavailable(_)
            | ApiError::StoreUnavailable(_)
            | ApiError::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotAuthenticated(_) => "not_authenticated",
            ApiError::InvalidCredentials {
                invalid_token: true,
                ..
            } => "invalid_token",
            ApiError::InvalidCredentials { .. } => "invalid_credentials",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::KeysUnavailable(_) => "jwks_unavailable",
            ApiError::Plugin(_) => "plugin_failed",
            ApiError::NoUpstream => "no_upstream",
            ApiError::UpstreamUnavailable => "upstream_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The text shown to the client: plugin failures name neither the
    /// plugin nor the cause (both are in the log).
    fn detail(&self) -> String {
        match self {
            ApiError::Plugin(PluginError::Call { .. }) => {
                "an auth plugin failed; the request was refused".into()
            }
            ApiError::Plugin(_) => "auth plugin unavailable".into(),
            other => other.to_string(),
        }
    }
}

/// A plugin's refusal as the answer the client gets; its status then comes
/// from [`ApiError::status`] like every other refusal's.
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::RateLimited {
                retry_after_s,
                detail,
            } => ApiError::TooManyRequests {
                detail,
                retry_after: retry_after_s.into(),
            },
            Refusal::Unauthenticated(detail) => ApiError::InvalidCredentials {
                detail,
                invalid_token: false,
            },
            Refusal::Forbidden(detail) => ApiError::Forbidden(detail),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::Unavailable(why) => ApiError::StoreUnavailable(why),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The refusal body in both shapes: agentflow's own `detail` / `code`, and
/// the AgentFlow server's envelope (`error.code`, `error.message`,
/// `metadata.request_id`, `metadata.timestamp`), which its clients read.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people (never a submitted value).
    #[schema(example = "superuser only")]
    pub detail: String,
    /// A stable machine-readable code (`not_authenticated`, `forbidden`,
    /// `not_found`, `unprocessable`, ...).
    #[schema(example = "forbidden")]
    pub code: String,
    /// The AgentFlow server's error object.
    pub error: ErrorInfo,
    /// The AgentFlow server's response metadata.
    pub metadata: ErrorMetadata,
}

/// `error` in the AgentFlow envelope.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorInfo {
    /// The code, upper case (`FORBIDDEN`).
    pub code: String,
    /// Same text as `detail`.
    pub message: String,
    /// Always empty: refusals never list submitted values.
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<serde_json::Value>,
}

/// `metadata` in the AgentFlow envelope.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorMetadata {
    /// The request's `x-request-id`.
    pub request_id: String,
    /// When the refusal was made (RFC 3339, milliseconds).
    pub timestamp: String,
    /// Same text as `detail`.
    pub message: String,
}

/// The refusal body (see [`ErrorBody`]) as JSON.
pub fn envelope(code: &str, detail: &str) -> serde_json::Value {
    let request_id = crate::request_id::current().unwrap_or_default();
    let timestamp = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let body = ErrorBody {
        detail: detail.to_owned(),
        code: code.to_owned(),
        error: ErrorInfo {
            code: code.to_ascii_uppercase(),
            message: detail.to_owned(),
            details: Vec::new(),
        },
        metadata: ErrorMetadata {
            request_id,
            timestamp,
            message: detail.to_owned(),
        },
    };
    serde_json::to_value(body).unwrap_or_default()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Plugin(e) => {
                tracing::error!(error = %e, "plugin failure, request refused (503)")
            }
            ApiError::Internal(e) => tracing::error!(error = %e, "internal error"),
            ApiError::StoreUnavailable(e) => {
                tracing::warn!(error = %e, "account database unavailable, request refused (503)")
            }
            _ => {}
        }
        let body = envelope(self.code(), &self.detail());
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::NotAuthenticated(_)
            | ApiError::InvalidCredentials {
                invalid_token: false,
                ..
            } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::InvalidCredentials {
                invalid_token: true,
                detail,
            } => {
                // RFC 6750 §3: the description is a quoted-string; keep it to
                // safe characters.
                let safe: String = detail
                    .chars()
                    .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
                    .collect();
                let value = format!("Bearer error=\"invalid_token\", error_description=\"{safe}\"");
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin's refusal answers with the status `Refusal::status` reports
    /// (the same mapping), and the headers its status calls for.
    #[test]
    fn refusals_answer_with_their_status_and_headers() {
        let cases = [
            (
                Refusal::Unauthenticated("no".into()),
                401,
                "invalid_credentials",
            ),
            (Refusal::Forbidden("no".into()), 403, "forbidden"),
            (
                Refusal::RateLimited {
                    retry_after_s: 7,
                    detail: "slow down".into(),
                },
                429,
                "too_many_requests",
            ),
        ];
        for (refusal, status, code) in cases {
            assert_eq!(refusal.status(), status);
            let error = ApiError::from(refusal);
            assert_eq!(error.code(), code);
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            let headers = response.headers();
            match status {
                401 => assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer"),
                429 => assert_eq!(headers[header::RETRY_AFTER], "7"),
                _ => assert!(!headers.contains_key(header::WWW_AUTHENTICATE)),
            }
        }
    }
}
