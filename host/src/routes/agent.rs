//! The AgentFlow API: which route is which resource and action, and the
//! handler that authorizes and forwards them.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::Method;

use super::{AppState, Caller};
use crate::error::ApiError;
use crate::plugins::Access;

/// Maps a request to the resource/action table in DESIGN.md; `None` for
/// anything not in it (answered 404, never forwarded).
pub fn classify(method: &Method, path: &str) -> Option<Access> {
    let segments: Vec<&str> = path.strip_prefix("/v1/")?.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    let access = |resource, action, id: Option<&str>| {
        Some(Access { resource, action, resource_id: id.map(str::to_owned) })
    };
    let m = method.as_str();
    match (m, segments.as_slice()) {
        ("POST", ["graph", "invoke"]) => access("graph", "invoke", None),
        ("POST", ["graph", "stream"]) => access("graph", "stream", None),
        ("GET", ["graph"]) => access("graph", "read", None),
        ("POST", ["graph", "stop"]) => access("graph", "stop", None),
        ("POST", ["graph", "setup"]) => access("graph", "setup", None),

        ("GET", ["threads"]) => access("checkpointer", "read", None),
        ("POST", ["threads"]) => access("checkpointer", "write", None),
        ("GET", ["threads", id]) => access("checkpointer", "read", Some(id)),
        ("DELETE", ["threads", id]) => access("checkpointer", "delete", Some(id)),
        ("GET", ["threads", id, "state"]) => access("checkpointer", "read", Some(id)),
        ("PUT", ["threads", id, "state"]) => access("checkpointer", "write", Some(id)),
        ("DELETE", ["threads", id, "state"]) => access("checkpointer", "delete", Some(id)),
        ("GET", ["threads", id, "messages"]) => access("checkpointer", "read", Some(id)),
        ("POST", ["threads", id, "messages"]) => access("checkpointer", "write", Some(id)),
        ("GET", ["threads", id, "messages", _]) => access("checkpointer", "read", Some(id)),
        ("DELETE", ["threads", id, "messages", _]) => access("checkpointer", "delete", Some(id)),

        ("POST", ["store", "search"]) => access("store", "read", None),
        ("POST", ["store", "memories", "list"]) => access("store", "read", None),
        ("POST", ["store", "memories", "forget"]) => access("store", "delete", None),
        ("POST", ["store", "memories"]) => access("store", "write", None),
        ("GET", ["store", "memories", id]) => access("store", "read", Some(id)),
        ("PUT", ["store", "memories", id]) => access("store", "write", Some(id)),
        ("DELETE", ["store", "memories", id]) => access("store", "delete", Some(id)),
        _ => None,
    }
}

/// Any authenticated caller may reach this; the authorizer decides per
/// resource/action, then the request goes to the agent upstream.
pub async fn forward(State(state): State<AppState>, req: Request<Body>) -> Result<Response<Body>, ApiError> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("authentication did not run".into()))?;
    let access = classify(req.method(), req.uri().path())
        .ok_or_else(|| ApiError::NotFound(format!("no route for {} {}", req.method(), req.uri().path())))?;
    state.gate.authorize(&caller.identity, &access, caller.plugin_view.as_deref()).await?;
    let upstream = state.upstream.as_ref().ok_or(ApiError::NoUpstream)?;
    let who = (!state.gate.is_open()).then_some(&caller.identity);
    let merge = access.resource == "graph";
    upstream.forward(req, who, merge, caller.client_ip.clone()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(m: &str, p: &str) -> Option<(&'static str, &'static str, Option<String>)> {
        classify(&Method::from_bytes(m.as_bytes()).unwrap(), p).map(|a| (a.resource, a.action, a.resource_id))
    }

    #[test]
    fn follows_the_agentflow_table() {
        assert_eq!(c("POST", "/v1/graph/invoke"), Some(("graph", "invoke", None)));
        assert_eq!(c("POST", "/v1/graph/stream"), Some(("graph", "stream", None)));
        assert_eq!(c("GET", "/v1/graph"), Some(("graph", "read", None)));
        assert_eq!(c("GET", "/v1/threads/t1/state"), Some(("checkpointer", "read", Some("t1".into()))));
        assert_eq!(c("PUT", "/v1/threads/t1/state"), Some(("checkpointer", "write", Some("t1".into()))));
        assert_eq!(c("DELETE", "/v1/threads/t1/messages/m9"), Some(("checkpointer", "delete", Some("t1".into()))));
        assert_eq!(c("POST", "/v1/store/memories/list"), Some(("store", "read", None)));
        assert_eq!(c("POST", "/v1/store/memories/forget"), Some(("store", "delete", None)));
        assert_eq!(c("PUT", "/v1/store/memories/m1"), Some(("store", "write", Some("m1".into()))));
    }

    #[test]
    fn anything_else_is_unrouted() {
        for (m, p) in [
            ("GET", "/v1/graph/invoke"),
            ("POST", "/v1/graph/other"),
            ("GET", "/v1/threads//state"),
            ("PATCH", "/v1/threads/t1"),
            ("GET", "/v1/admin"),
            ("GET", "/v2/graph"),
            ("POST", "/v1/graph/invoke/"),
        ] {
            assert_eq!(c(m, p), None, "{m} {p}");
        }
    }
}
