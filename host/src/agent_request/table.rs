//! The route table: which agent route is which resource and action, and
//! where its resource id is. Matched on decoded segments of a canonical path.

use http::Method;

use super::CanonicalPath;
use crate::plugins::Access;

/// Maps a request to the resource/action table in the README; `None` for
/// anything not in it (answered 404, never forwarded).
pub fn classify(method: &Method, path: &CanonicalPath) -> Option<Access> {
    let segments: Vec<&str> = path.segments().iter().map(String::as_str).collect();
    let ["v1", rest @ ..] = segments.as_slice() else { return None };
    let access =
        |resource, action, id: Option<&str>| Some(Access { resource, action, resource_id: id.map(str::to_owned) });
    match (method.as_str(), rest) {
        ("POST", ["graph", "invoke"]) => access("graph", "invoke", None),
        ("POST", ["graph", "stream"]) => access("graph", "stream", None),
        ("GET", ["graph"]) => access("graph", "read", None),
        ("POST", ["graph", "stop"]) => access("graph", "stop", None),
        ("POST", ["graph", "setup"]) => access("graph", "setup", None),
        // WebSocket routes (see `is_websocket`): the thread id is in each frame.
        ("GET", ["graph", "ws"]) => access("graph", "stream", None),
        ("GET", ["graph", "live"]) => access("graph", "stream", None),

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

/// Whether a routed request is one of the agent's WebSocket routes, served
/// only through an upgrade.
pub fn is_websocket(method: &Method, path: &CanonicalPath) -> bool {
    let segments: Vec<&str> = path.segments().iter().map(String::as_str).collect();
    method == Method::GET && matches!(segments.as_slice(), ["v1", "graph", "ws" | "live"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(m: &str, p: &str) -> Option<(&'static str, &'static str, Option<String>)> {
        let path = CanonicalPath::parse(p).ok()?;
        classify(&Method::from_bytes(m.as_bytes()).unwrap(), &path).map(|a| (a.resource, a.action, a.resource_id))
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
    fn resource_ids_are_decoded() {
        assert_eq!(c("GET", "/v1/threads/t-%61lice"), c("GET", "/v1/threads/t-alice"));
        assert_eq!(c("GET", "/v1/threads/a%20b/state"), Some(("checkpointer", "read", Some("a b".into()))));
        assert_eq!(c("POST", "/v1/graph/%69nvoke"), Some(("graph", "invoke", None)), "route names too");
    }

    #[test]
    fn anything_else_is_unrouted() {
        for (m, p) in [
            ("GET", "/v1/graph/invoke"),
            ("POST", "/v1/graph/other"),
            ("PATCH", "/v1/threads/t1"),
            ("GET", "/v1/admin"),
            ("GET", "/v2/graph"),
            ("GET", "/"),
            ("GET", "/v1"),
        ] {
            assert_eq!(c(m, p), None, "{m} {p}");
        }
    }
}
