//! What the listener answers while the store and plugins load (the port is
//! bound first): `/ping` 200, `/ready` 503 `loading`, everything else 503.
//! Once the real router is set, every request goes to it.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tower::ServiceExt as _;

use crate::error::ApiError;

/// A router that serves `ready` once it is set, and the loading answers until then.
pub fn front(ready: Arc<OnceLock<Router>>) -> Router {
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let ready = ready.clone();
        async move {
            match ready.get() {
                Some(router) => router.clone().oneshot(req).await,
                None => Ok::<Response, Infallible>(loading(&req)),
            }
        }
    }))
}

fn loading(req: &Request) -> Response {
    match req.uri().path() {
        "/ping" => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        "/ready" => crate::readiness::loading_response(),
        _ => ApiError::Unavailable(
            "the server is starting: the store and plugins are loading".into(),
        )
        .into_response(),
    }
}
