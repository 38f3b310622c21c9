//! The validated agent request: built once from the request line, then
//! handed to the authorizer (its access) and to the proxy (its path), so
//! what is authorized is what is forwarded.
//!
//! [`AgentRequest::parse`] is the only way to build one: the path goes
//! through the one canonicalization step ([`CanonicalPath`]), the route table
//! ([`classify`]) runs on the decoded segments, and the resource id handed to
//! authorizers is the decoded id the canonical path spells.
//!
//! Routes whose id lives in the JSON body (invoke, stream, stop, fix,
//! AG-UI) are read once by [`AgentRequest::with_body`]: buffered (at most
//! [`MAX_JSON_BODY`]), the thread id taken out, and those same bytes are
//! what the proxy forwards.

mod body_ids;
mod path;
mod table;

use axum::body::{Body, Bytes};
use http::header::{self, HeaderMap};
use http::{Method, Uri};
use sync_wrapper::SyncWrapper;

pub use path::{CanonicalPath, PathError};
pub use table::{BodyId, IdSource, ROUTES, Route, classify};

use crate::error::ApiError;
use crate::plugins::Access;

/// Largest body the host reads (routes whose id lives in the body): the
/// AgentFlow server's own `MAX_REQUEST_SIZE`.
pub const MAX_JSON_BODY: usize = 10 * 1024 * 1024;

/// The body that goes to the agent.
#[derive(Debug)]
pub enum AgentBody {
    /// Read and inspected by the host (ids taken from it); forwarded as is
    /// (or with identity merged in).
    Inspected(Bytes),
    /// Not looked at: streamed through. Wrapped so the request is `Sync`:
    /// checks borrow an `&AgentRequest` across awaits in `Send` futures.
    Streamed(SyncWrapper<Body>),
}

impl AgentBody {
    /// A body streamed through unread.
    pub fn streamed(body: Body) -> AgentBody {
        AgentBody::Streamed(SyncWrapper::new(body))
    }
}

/// A request for the agent API that passed canonicalization and the route
/// table. Fields are private: the proxy can only forward what was parsed.
#[derive(Debug)]
pub struct AgentRequest {
    method: Method,
    path: CanonicalPath,
    query: Option<String>,
    route: &'static Route,
    access: Access,
    body: AgentBody,
}

impl AgentRequest {
    /// Canonicalizes and classifies a request line. A malformed path or query
    /// is 400, a well-formed path outside the route table 404. The body is
    /// empty until [`AgentRequest::with_body`].
    pub fn parse(method: &Method, uri: &Uri) -> Result<AgentRequest, ApiError> {
        let path =
            CanonicalPath::parse(uri.path()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let query = uri.query().map(check_query).transpose()?;
        let (route, access) = classify(method, &path)
            .ok_or_else(|| ApiError::NotFound(format!("no route for {method} {path}")))?;
        let body = AgentBody::streamed(Body::empty());
        Ok(AgentRequest {
            method: method.clone(),
            path,
            query,
            route,
            access,
            body,
        })
    }

    /// Attaches the client's body. On routes whose id lives in the body it is
    /// read here, once: refused when content-encoded (400) or larger than
    /// [`MAX_JSON_BODY`] (413), its thread id becomes the access's resource
    /// id (a malformed or ambiguous id is 400), and the bytes read are the
    /// ones forwarded. Other bodies stream through unread.
    pub async fn with_body(
        mut self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<AgentRequest, ApiError> {
        let IdSource::Body(kind) = self.route.id else {
            self.body = AgentBody::streamed(body);
            return Ok(self);
        };
        // A compressed body cannot be read here, so it could hide anything.
        let encoded = headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
            v.to_str()
                .map_or(true, |v| !v.trim().eq_ignore_ascii_case("identity"))
        });
        if encoded {
            return Err(ApiError::BadRequest(
                "graph request bodies must not be content-encoded".into(),
            ));
        }
        let bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(MAX_JSON_BODY))?;
        self.access.resource_id =
            body_ids::thread_id(kind, &bytes).map_err(ApiError::BadRequest)?;
        self.body = AgentBody::Inspected(bytes);
        Ok(self)
    }

    /// The route table row this request matched.
    pub fn route(&self) -> &'static Route {
        self.route
    }

    /// Takes the body to forward (leaving an empty one).
    pub fn take_body(&mut self) -> AgentBody {
        std::mem::replace(&mut self.body, AgentBody::streamed(Body::empty()))
    }

    /// Replaces the body to forward with bytes the host wrote (tenancy
    /// widens memory listings).
    pub fn replace_body(&mut self, bytes: Bytes) {
        self.body = AgentBody::Inspected(bytes);
    }

    /// The HTTP method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The canonical path: what was classified and what is forwarded.
    pub fn path(&self) -> &CanonicalPath {
        &self.path
    }

    /// The query string as the client sent it (without `?`).
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The resource, action and decoded resource id the authorizer decides on.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Whether this is a WebSocket route (proxied only as an upgrade).
    pub fn is_websocket(&self) -> bool {
        self.route.websocket
    }

    /// Whether the body carries identity (`config.user`, `config.user_id`)
    /// that the host must set: the graph routes with a JSON body (invoke,
    /// stream, stop, fix, AG-UI), the ones whose id lives in the body.
    pub fn carries_identity_in_body(&self) -> bool {
        matches!(self.route.id, IdSource::Body(_))
    }
}

/// The query is forwarded as sent; control characters (which the HTTP
/// parser already refuses) are refused here too so the type guarantees it.
fn check_query(query: &str) -> Result<String, ApiError> {
    if query.bytes().any(|b| b.is_ascii_control()) {
        return Err(ApiError::BadRequest(
            "the query string has a control character".into(),
        ));
    }
    Ok(query.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: &str, uri: &str) -> Result<AgentRequest, ApiError> {
        AgentRequest::parse(
            &Method::from_bytes(method.as_bytes()).unwrap(),
            &uri.parse().unwrap(),
        )
    }

    #[test]
    fn one_parse_gives_path_query_and_access() {
        let r = parse("GET", "/v1/threads/t-%61lice/state?as_of=3&q=%2e%2e").unwrap();
        assert_eq!(r.path().as_str(), "/v1/threads/t-alice/state");
        assert_eq!(
            r.query(),
            Some("as_of=3&q=%2e%2e"),
            "the query is left as sent"
        );
        assert_eq!(r.access().resource_id.as_deref(), Some("t-alice"));
        assert!(!r.carries_identity_in_body());
        assert!(
            parse("POST", "/v1/graph/invoke")
                .unwrap()
                .carries_identity_in_body()
        );
        assert!(parse("GET", "/v1/graph/ws?token=x").unwrap().is_websocket());
        assert!(parse("GET", "/v1/graph/%6Cive").unwrap().is_websocket());
        assert!(!parse("GET", "/v1/graph").unwrap().is_websocket());
        assert!(
            !parse("GET", "/v1/graph")
                .unwrap()
                .carries_identity_in_body()
        );
    }

    fn with_body(
        uri: &str,
        headers: &[(&str, &str)],
        body: &'static str,
    ) -> Result<AgentRequest, ApiError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(parse("POST", uri)?.with_body(&h, Body::from(body)))
    }

    #[test]
    fn body_ids_become_the_resource_id_and_the_bytes_are_kept() {
        let mut r = with_body(
            "/v1/graph/invoke",
            &[],
            r#"{"config": {"thread_id": " t1 "}}"#,
        )
        .unwrap();
        assert_eq!(r.access().resource_id.as_deref(), Some("t1"));
        let AgentBody::Inspected(bytes) = r.take_body() else {
            panic!("graph bodies are read")
        };
        assert_eq!(&bytes[..], br#"{"config": {"thread_id": " t1 "}}"#);
        let r = with_body("/v1/graph/stop", &[], r#"{"thread_id": "t2"}"#).unwrap();
        assert_eq!(r.access().resource_id.as_deref(), Some("t2"));
        let mut r = with_body(
            "/v1/store/memories/m1",
            &[],
            r#"{"config": {"thread_id": "x"}}"#,
        )
        .unwrap();
        assert_eq!(
            r.access().resource_id.as_deref(),
            Some("m1"),
            "path routes keep the path id"
        );
        assert!(matches!(r.take_body(), AgentBody::Streamed(_)));
    }

    #[test]
    fn bad_graph_bodies_are_refused() {
        let mismatch = r#"{"thread_id": "a", "config": {"thread_id": "b"}}"#;
        assert!(matches!(
            with_body("/v1/graph/stream", &[], mismatch),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            with_body("/v1/graph/fix", &[], r#"{"thread_id": 1}"#),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            with_body("/v1/graph/invoke", &[("content-encoding", "gzip")], "{}"),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn malformed_is_400_and_unrouted_is_404() {
        assert!(matches!(
            parse("GET", "/v1/threads/%2e%2e/state"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse("GET", "/v1/threads/x/..%2f..%2fgraph"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse("GET", "/v1/admin"),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(parse("GET", "/"), Err(ApiError::NotFound(_))));
    }
}
