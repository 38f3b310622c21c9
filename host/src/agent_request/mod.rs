//! The validated agent request: built once from the request line, then
//! handed to the authorizer (its access) and to the proxy (its path), so
//! what is authorized is what is forwarded.
//!
//! [`AgentRequest::parse`] is the only way to build one: the path goes
//! through the one canonicalization step ([`CanonicalPath`]), the route table
//! ([`classify`]) runs on the decoded segments, and the resource id handed to
//! authorizers is the decoded id the canonical path spells.

mod path;
mod table;

use http::{Method, Uri};

pub use path::{CanonicalPath, PathError};
pub use table::classify;

use crate::error::ApiError;
use crate::plugins::Access;

/// A request for the agent API that passed canonicalization and the route
/// table. Fields are private: the proxy can only forward what was parsed.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    method: Method,
    path: CanonicalPath,
    query: Option<String>,
    access: Access,
}

impl AgentRequest {
    /// Canonicalizes and classifies a request line. A malformed path or query
    /// is 400, a well-formed path outside the route table 404.
    pub fn parse(method: &Method, uri: &Uri) -> Result<AgentRequest, ApiError> {
        let path = CanonicalPath::parse(uri.path()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let query = uri.query().map(check_query).transpose()?;
        let access =
            classify(method, &path).ok_or_else(|| ApiError::NotFound(format!("no route for {method} {path}")))?;
        Ok(AgentRequest { method: method.clone(), path, query, access })
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
        table::is_websocket(&self.method, &self.path)
    }

    /// Whether the body carries identity (`config.user`, `config.user_id`)
    /// that the host must set: every `graph` route.
    pub fn carries_identity_in_body(&self) -> bool {
        self.access.resource == "graph"
    }
}

/// The query is forwarded as sent; control characters (which the HTTP
/// parser already refuses) are refused here too so the type guarantees it.
fn check_query(query: &str) -> Result<String, ApiError> {
    if query.bytes().any(|b| b.is_ascii_control()) {
        return Err(ApiError::BadRequest("the query string has a control character".into()));
    }
    Ok(query.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: &str, uri: &str) -> Result<AgentRequest, ApiError> {
        AgentRequest::parse(&Method::from_bytes(method.as_bytes()).unwrap(), &uri.parse().unwrap())
    }

    #[test]
    fn one_parse_gives_path_query_and_access() {
        let r = parse("GET", "/v1/threads/t-%61lice/state?as_of=3&q=%2e%2e").unwrap();
        assert_eq!(r.path().as_str(), "/v1/threads/t-alice/state");
        assert_eq!(r.query(), Some("as_of=3&q=%2e%2e"), "the query is left as sent");
        assert_eq!(r.access().resource_id.as_deref(), Some("t-alice"));
        assert!(!r.carries_identity_in_body());
        assert!(parse("POST", "/v1/graph/invoke").unwrap().carries_identity_in_body());
        assert!(parse("GET", "/v1/graph/ws?token=x").unwrap().is_websocket());
        assert!(parse("GET", "/v1/graph/%6Cive").unwrap().is_websocket());
        assert!(!parse("GET", "/v1/graph").unwrap().is_websocket());
    }

    #[test]
    fn malformed_is_400_and_unrouted_is_404() {
        assert!(matches!(parse("GET", "/v1/threads/%2e%2e/state"), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse("GET", "/v1/threads/x/..%2f..%2fgraph"), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse("GET", "/v1/admin"), Err(ApiError::NotFound(_))));
        assert!(matches!(parse("GET", "/"), Err(ApiError::NotFound(_))));
    }
}
