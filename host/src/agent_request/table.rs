//! The route table: which agent route is which resource and action, and
//! where its resource id is. Kept as data ([`ROUTES`]), one row per route the
//! AgentFlow API server (`10xscale-agentflow-cli` 0.6.1) serves, with the
//! `RequirePermission(resource, action)` its router declares; a newer server
//! version is a change to this table. Matched on the decoded segments of a
//! canonical path, first matching row wins.

use http::Method;

use super::CanonicalPath;
use crate::plugins::Access;

/// Where a route's resource id (the thread or memory it acts on) lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// The route names no single resource (lists, creates, bulk).
    None,
    /// The path segment matched by the placeholder `{name}` (decoded, not
    /// stripped: the server uses path ids as they are).
    Path(&'static str),
    /// The JSON body: see [`BodyId`].
    Body(BodyId),
}

/// Which body field carries the thread id (see `body_ids`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyId {
    /// invoke / stream: `config.thread_id`, or the root `thread_id`; optional
    /// (the server makes a thread), both given and different is refused.
    RunThread,
    /// stop / fix: the root `thread_id`, a required non-blank string;
    /// `config.thread_id`, if given, must be the same.
    RequiredThread,
    /// AG-UI: `threadId`.
    AgUiThread,
}

/// One route of the agent API.
#[derive(Debug)]
pub struct Route {
    /// The HTTP method (`GET` for WebSocket upgrades).
    pub method: &'static str,
    /// The path, `{name}` matching any one segment.
    pub pattern: &'static str,
    /// The resource of the server's `RequirePermission`.
    pub resource: &'static str,
    /// Its action.
    pub action: &'static str,
    /// Where the resource id is.
    pub id: IdSource,
    /// A WebSocket endpoint (the upgrade request is what is authorized).
    pub websocket: bool,
}

const fn row(
    method: &'static str,
    pattern: &'static str,
    resource: &'static str,
    action: &'static str,
    id: IdSource,
) -> Route {
    Route {
        method,
        pattern,
        resource,
        action,
        id,
        websocket: false,
    }
}

const fn ws(pattern: &'static str) -> Route {
    Route {
        method: "GET",
        pattern,
        resource: "graph",
        action: "stream",
        id: IdSource::None,
        websocket: true,
    }
}

use IdSource::{Body, None as NoId, Path};

const THREAD: IdSource = Path("thread_id");
const MEMORY: IdSource = Path("memory_id");
const FILE: IdSource = Path("file_id");

/// Every route the gateway forwards. Not served by AgentFlow 0.6.1 and so
/// not here: `POST /v1/threads`, `POST /v1/graph/setup`,
/// `GET /v1/store/memories/{id}` (get-one is a POST). `/ping` is the
/// gateway's own; the dev-only `/v1/evals/*` and `/docs` pages are not
/// forwarded.
pub static ROUTES: &[Route] = &[
    // graph
    row(
        "POST",
        "/v1/graph/invoke",
        "graph",
        "invoke",
        Body(BodyId::RunThread),
    ),
    row(
        "POST",
        "/v1/graph/stream",
        "graph",
        "stream",
        Body(BodyId::RunThread),
    ),
    row("GET", "/v1/graph", "graph", "read", NoId),
    row("GET", "/v1/graph:StateSchema", "graph", "read", NoId),
    row("GET", "/v1/graph/tools", "graph", "read", NoId),
    row(
        "POST",
        "/v1/graph/stop",
        "graph",
        "stop",
        Body(BodyId::RequiredThread),
    ),
    row(
        "POST",
        "/v1/graph/fix",
        "graph",
        "fix",
        Body(BodyId::RequiredThread),
    ),
    // The issue calls this "checkpointer read"; the 0.6.1 router declares
    // `RequirePermission("graph", "read")`, and the table follows the server.
    row(
        "GET",
        "/v1/observability/{thread_id}",
        "graph",
        "read",
        THREAD,
    ),
    // Ids of WebSocket runs live in each frame, not in the upgrade request.
    ws("/v1/graph/ws"),
    ws("/v1/graph/live"),
    // checkpointer
    row("GET", "/v1/threads", "checkpointer", "read", NoId),
    row(
        "GET",
        "/v1/threads/{thread_id}",
        "checkpointer",
        "read",
        THREAD,
    ),
    row(
        "DELETE",
        "/v1/threads/{thread_id}",
        "checkpointer",
        "delete",
        THREAD,
    ),
    row(
        "GET",
        "/v1/threads/{thread_id}/state",
        "checkpointer",
        "read",
        THREAD,
    ),
    row(
        "PUT",
        "/v1/threads/{thread_id}/state",
        "checkpointer",
        "write",
        THREAD,
    ),
    row(
        "DELETE",
        "/v1/threads/{thread_id}/state",
        "checkpointer",
        "delete",
        THREAD,
    ),
    row(
        "GET",
        "/v1/threads/{thread_id}/messages",
        "checkpointer",
        "read",
        THREAD,
    ),
    row(
        "POST",
        "/v1/threads/{thread_id}/messages",
        "checkpointer",
        "write",
        THREAD,
    ),
    row(
        "GET",
        "/v1/threads/{thread_id}/messages/{message_id}",
        "checkpointer",
        "read",
        THREAD,
    ),
    row(
        "DELETE",
        "/v1/threads/{thread_id}/messages/{message_id}",
        "checkpointer",
        "delete",
        THREAD,
    ),
    // store: `list` and `forget` before `{memory_id}`, as the server registers them.
    row("POST", "/v1/store/memories", "store", "write", NoId),
    row("POST", "/v1/store/search", "store", "read", NoId),
    row("POST", "/v1/store/memories/list", "store", "read", NoId),
    row("POST", "/v1/store/memories/forget", "store", "delete", NoId),
    row(
        "POST",
        "/v1/store/memories/{memory_id}",
        "store",
        "read",
        MEMORY,
    ),
    row(
        "PUT",
        "/v1/store/memories/{memory_id}",
        "store",
        "write",
        MEMORY,
    ),
    row(
        "DELETE",
        "/v1/store/memories/{memory_id}",
        "store",
        "delete",
        MEMORY,
    ),
    // files: the server checks the owner itself; the id is given anyway.
    row("POST", "/v1/files/upload", "files", "upload", NoId),
    row("GET", "/v1/files/{file_id}", "files", "read", FILE),
    row("GET", "/v1/files/{file_id}/info", "files", "read", FILE),
    row("GET", "/v1/files/{file_id}/url", "files", "read", FILE),
    // config
    row("GET", "/v1/config/multimodal", "config", "read", NoId),
    // AG-UI (served only when the agent enables it)
    row(
        "POST",
        "/v1/ag-ui",
        "graph",
        "stream",
        Body(BodyId::AgUiThread),
    ),
];

impl Route {
    /// The path id when this row matches `method` and `segments`:
    /// `Some(None)` for a match without a path id, `None` for no match.
    fn matches<'s>(&self, method: &Method, segments: &'s [String]) -> Option<Option<&'s str>> {
        if method.as_str() != self.method {
            return None;
        }
        let mut parts = self.pattern.trim_start_matches('/').split('/');
        let mut id = None;
        for segment in segments {
            let part = parts.next()?;
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => {
                    if matches!(self.id, Path(n) if n == name) {
                        id = Some(segment.as_str());
                    }
                }
                None if part == segment => {}
                None => return None,
            }
        }
        parts.next().is_none().then_some(id)
    }
}

/// The row for a request and the access it asks for (with the path id, if
/// the row has one); `None` for anything not in the table (answered 404,
/// never forwarded). Body ids are added later, when the body is read.
pub fn classify(method: &Method, path: &CanonicalPath) -> Option<(&'static Route, Access)> {
    ROUTES.iter().find_map(|route| {
        let id = route.matches(method, path.segments())?;
        Some((
            route,
            Access {
                resource: route.resource,
                action: route.action,
                resource_id: id.map(str::to_owned),
                owner: None,
                tenant: None,
            },
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(m: &str, p: &str) -> Option<(&'static str, &'static str, Option<String>)> {
        let path = CanonicalPath::parse(p).ok()?;
        classify(&Method::from_bytes(m.as_bytes()).unwrap(), &path)
            .map(|(_, a)| (a.resource, a.action, a.resource_id))
    }

    fn id(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn follows_the_agentflow_table() {
        assert_eq!(
            c("POST", "/v1/graph/invoke"),
            Some(("graph", "invoke", None))
        );
        assert_eq!(
            c("POST", "/v1/graph/stream"),
            Some(("graph", "stream", None))
        );
        assert_eq!(c("GET", "/v1/graph"), Some(("graph", "read", None)));
        assert_eq!(
            c("GET", "/v1/graph:StateSchema"),
            Some(("graph", "read", None))
        );
        assert_eq!(
            c("GET", "/v1/graph%3AStateSchema"),
            Some(("graph", "read", None)),
            "an encoded colon too"
        );
        assert_eq!(c("GET", "/v1/graph/tools"), Some(("graph", "read", None)));
        assert_eq!(c("POST", "/v1/graph/fix"), Some(("graph", "fix", None)));
        assert_eq!(
            c("GET", "/v1/observability/t1"),
            Some(("graph", "read", id("t1")))
        );
        assert_eq!(c("GET", "/v1/graph/ws"), Some(("graph", "stream", None)));
        assert_eq!(
            c("GET", "/v1/threads/t1/state"),
            Some(("checkpointer", "read", id("t1")))
        );
        assert_eq!(
            c("PUT", "/v1/threads/t1/state"),
            Some(("checkpointer", "write", id("t1")))
        );
        assert_eq!(
            c("DELETE", "/v1/threads/t1/messages/m9"),
            Some(("checkpointer", "delete", id("t1")))
        );
        assert_eq!(
            c("POST", "/v1/store/memories/list"),
            Some(("store", "read", None))
        );
        assert_eq!(
            c("POST", "/v1/store/memories/forget"),
            Some(("store", "delete", None))
        );
        assert_eq!(
            c("POST", "/v1/store/memories/m1"),
            Some(("store", "read", id("m1")))
        );
        assert_eq!(
            c("PUT", "/v1/store/memories/m1"),
            Some(("store", "write", id("m1")))
        );
        assert_eq!(
            c("POST", "/v1/files/upload"),
            Some(("files", "upload", None))
        );
        assert_eq!(
            c("GET", "/v1/files/f1/url"),
            Some(("files", "read", id("f1")))
        );
        assert_eq!(
            c("GET", "/v1/config/multimodal"),
            Some(("config", "read", None))
        );
        assert_eq!(c("POST", "/v1/ag-ui"), Some(("graph", "stream", None)));
    }

    #[test]
    fn websocket_rows_are_marked() {
        let path = CanonicalPath::parse("/v1/graph/live").unwrap();
        assert!(classify(&Method::GET, &path).unwrap().0.websocket);
        let path = CanonicalPath::parse("/v1/graph/tools").unwrap();
        assert!(!classify(&Method::GET, &path).unwrap().0.websocket);
    }

    #[test]
    fn resource_ids_are_decoded() {
        assert_eq!(
            c("GET", "/v1/threads/t-%61lice"),
            c("GET", "/v1/threads/t-alice")
        );
        assert_eq!(
            c("GET", "/v1/threads/a%20b/state"),
            Some(("checkpointer", "read", id("a b")))
        );
        assert_eq!(
            c("GET", "/v1/threads/%20t%20"),
            Some(("checkpointer", "read", id(" t "))),
            "path ids are not stripped"
        );
        assert_eq!(
            c("POST", "/v1/graph/%69nvoke"),
            Some(("graph", "invoke", None)),
            "route names too"
        );
    }

    #[test]
    fn what_the_server_does_not_serve_is_unrouted() {
        for (m, p) in [
            ("POST", "/v1/threads"),
            ("POST", "/v1/graph/setup"),
            ("GET", "/v1/store/memories/m1"),
            ("GET", "/v1/graph/invoke"),
            ("POST", "/v1/graph/other"),
            ("PATCH", "/v1/threads/t1"),
            ("GET", "/v1/threads/t1/messages/m1/extra"),
            ("GET", "/v1/admin"),
            ("GET", "/v2/graph"),
            ("GET", "/"),
            ("GET", "/v1"),
        ] {
            assert_eq!(c(m, p), None, "{m} {p}");
        }
    }

    #[test]
    fn every_row_is_reachable_and_placeholders_name_the_id() {
        for route in ROUTES {
            let concrete: String = route
                .pattern
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let path = CanonicalPath::parse(&concrete).unwrap();
            let (hit, _) =
                classify(&Method::from_bytes(route.method.as_bytes()).unwrap(), &path).unwrap();
            assert!(
                std::ptr::eq(hit, route),
                "{} {} is shadowed by {}",
                route.method,
                route.pattern,
                hit.pattern
            );
            if let Path(name) = route.id {
                assert!(
                    route.pattern.contains(&format!("{{{name}}}")),
                    "{}",
                    route.pattern
                );
            }
        }
    }
}
