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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::StatusCode;

    async fn ask(front: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let r = front.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn loading_answers_until_the_router_is_set_then_the_router_does() {
        let ready = Arc::new(OnceLock::new());
        let front = front(ready.clone());
        let (status, body) = ask(&front, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "loading");
        assert_eq!(ask(&front, "/ping").await.0, StatusCode::OK);
        let (status, body) = ask(&front, "/v1/threads").await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "never forwarded while loading"
        );
        assert!(
            body["detail"].as_str().unwrap().contains("starting"),
            "{body}"
        );

        let router = Router::new().route("/ready", axum::routing::get(|| async { "up" }));
        ready.set(router).unwrap();
        let req = Request::builder()
            .uri("/ready")
            .body(Body::empty())
            .unwrap();
        let r = front.clone().oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
