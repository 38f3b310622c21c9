//! Forwarding allowed requests to the agent upstream: method, path, query,
//! body and streaming responses intact; identity attached by the host.

use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use serde_json::Value;

use crate::error::ApiError;
use crate::identity::Identity;
use crate::upstream_token::UpstreamIdentity;

/// Largest JSON body the host rewrites (graph requests).
pub const MAX_JSON_BODY: usize = 10 * 1024 * 1024;

/// Headers the host sets for the upstream; client-sent copies are removed.
pub const USER_ID_HEADER: &str = "x-agentflow-user-id";
/// Comma-separated roles.
pub const ROLES_HEADER: &str = "x-agentflow-roles";
/// base64url (no padding) of the identity's JSON (`user_id`, `roles`, `claims`).
pub const IDENTITY_HEADER: &str = "x-agentflow-identity";

/// Connection-level headers that are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers the upstream must not see: the client's credentials
/// (the upstream gets the identity instead) and what the client re-computes.
/// `sec-websocket-protocol`: the AgentFlow server reads `agentflow-bearer, <jwt>`
/// there as a credential even on plain HTTP.
const NOT_FORWARDED: &[&str] =
    &["host", "content-length", "authorization", "x-api-key", "forwarded", "sec-websocket-protocol"];

/// The agent server requests are forwarded to.
#[derive(Clone)]
pub struct Upstream {
    base: String,
    client: reqwest::Client,
    identity: UpstreamIdentity,
}

impl Upstream {
    /// An upstream at `base` (e.g. `http://127.0.0.1:9000`).
    pub fn new(base: String) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("a client without TLS always builds");
        Upstream { base, client, identity: UpstreamIdentity::default() }
    }

    /// The same upstream with the identity channels of `upstream` in agentflow.json.
    pub fn with_identity(mut self, identity: UpstreamIdentity) -> Self {
        self.identity = identity;
        self
    }

    /// The JWKS of the upstream token's public key, when it has one.
    pub fn jwks(&self) -> Option<&Value> {
        self.identity.token.as_ref().and_then(|t| t.jwks())
    }

    /// Forwards `req` for `who`. With `merge_identity` (and `upstream.merge_body`
    /// on), a JSON body gets `config.user` and `config.user_id` set by the server.
    pub async fn forward(
        &self,
        req: Request<Body>,
        who: Option<&Identity>,
        merge_identity: bool,
        client_ip: Option<String>,
    ) -> Result<Response<Body>, ApiError> {
        let (parts, body) = req.into_parts();
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let url = format!("{}{}", self.base, path_and_query);

        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            let n = name.as_str();
            if HOP_BY_HOP.contains(&n) || NOT_FORWARDED.contains(&n) || n.starts_with("x-agentflow-") || n.starts_with("x-forwarded-") {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        connection_named_headers(&parts.headers).for_each(|n| {
            headers.remove(n);
        });
        if let Some(ip) = client_ip.as_deref().and_then(|ip| HeaderValue::from_str(ip).ok()) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), ip);
        }
        if let Some(who) = who {
            if self.identity.headers {
                attach_identity(&mut headers, who);
            }
            if let Some(token) = &self.identity.token {
                headers.insert(header::AUTHORIZATION, token.authorization(who)?);
            }
        }

        let is_json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"));
        let body = match (merge_identity && self.identity.merge_body && is_json, who) {
            (true, Some(who)) => {
                let bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
                    .await
                    .map_err(|_| ApiError::PayloadTooLarge(MAX_JSON_BODY))?;
                reqwest::Body::from(merge_identity_into(&bytes, who)?)
            }
            _ => reqwest::Body::wrap_stream(body.into_data_stream()),
        };

        let upstream = self
            .client
            .request(parts.method, url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "agent upstream request failed");
                ApiError::UpstreamUnavailable
            })?;

        let mut response = Response::builder().status(upstream.status());
        let upstream_headers = upstream.headers().clone();
        if let Some(h) = response.headers_mut() {
            for (name, value) in &upstream_headers {
                if !HOP_BY_HOP.contains(&name.as_str()) {
                    h.append(name.clone(), value.clone());
                }
            }
            connection_named_headers(&upstream_headers).for_each(|n| {
                h.remove(n);
            });
        }
        response
            .body(Body::from_stream(upstream.bytes_stream()))
            .map_err(|e| ApiError::Internal(format!("building the proxied response: {e}")))
    }
}

/// Headers listed in `Connection` are hop-by-hop too.
fn connection_named_headers(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

/// Sets the identity headers; values that are not plain header text are
/// percent-encoded so any user id survives.
fn attach_identity(headers: &mut HeaderMap, who: &Identity) {
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, HEADER_UNSAFE).to_string();
    let pairs = [
        (USER_ID_HEADER, encode(&who.user_id)),
        (ROLES_HEADER, who.roles.iter().map(|r| encode(r)).collect::<Vec<_>>().join(",")),
        (IDENTITY_HEADER, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(who.to_json().to_string())),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

/// Control characters, non-ASCII, `%` and `,` (the roles separator).
const HEADER_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%').add(b',');

/// Puts the identity into `config.user` / `config.user_id` of a JSON body,
/// overwriting whatever the client sent there.
fn merge_identity_into(body: &[u8], who: &Identity) -> Result<Vec<u8>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(body.to_vec());
    }
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(root) = &mut value else {
        return Err(ApiError::BadRequest("request body must be a JSON object".into()));
    };
    let config = root.entry("config").or_insert_with(|| Value::Object(Default::default()));
    if config.is_null() {
        *config = Value::Object(Default::default());
    }
    let Value::Object(config) = config else {
        return Err(ApiError::BadRequest("`config` in the request body must be an object".into()));
    };
    config.insert("user".into(), who.to_json());
    config.insert("user_id".into(), Value::String(who.user_id.clone()));
    serde_json::to_vec(&value).map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alice() -> Identity {
        Identity { user_id: "alice".into(), roles: vec!["user".into()], claims: Default::default() }
    }

    #[test]
    fn merge_overwrites_spoofed_user() {
        let body = br#"{"messages": [], "config": {"thread_id": "t1", "user_id": "mallory", "user": {"user_id": "mallory"}}}"#;
        let out: Value = serde_json::from_slice(&merge_identity_into(body, &alice()).unwrap()).unwrap();
        assert_eq!(out["config"]["user_id"], "alice");
        assert_eq!(out["config"]["user"]["user_id"], "alice");
        assert_eq!(out["config"]["thread_id"], "t1");
    }

    #[test]
    fn merge_creates_config_and_rejects_non_objects() {
        let out: Value = serde_json::from_slice(&merge_identity_into(b"{}", &alice()).unwrap()).unwrap();
        assert_eq!(out, json!({"config": {"user_id": "alice", "user": alice().to_json()}}));
        assert!(matches!(merge_identity_into(b"[1]", &alice()), Err(ApiError::BadRequest(_))));
        assert!(matches!(merge_identity_into(b"{\"config\": 3}", &alice()), Err(ApiError::BadRequest(_))));
        assert!(matches!(merge_identity_into(b"{", &alice()), Err(ApiError::BadRequest(_))));
    }
}
