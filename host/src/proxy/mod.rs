//! Forwarding authorized requests to the agent upstream: the canonical
//! path and the query exactly as authorized, filtered headers, identity
//! attached by the host, and streaming responses.

mod body;
mod headers;
mod retry;
mod websocket;

use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use http::Response;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::Body as _;
use reqwest::Url;

pub use crate::agent_request::MAX_JSON_BODY;
pub use headers::HeaderPolicy;
pub use websocket::{ForwardAll, FrameInspector, Verdict, handshake_token, is_upgrade};

use crate::agent_request::{AgentBody, AgentRequest};
use crate::error::ApiError;
use crate::identity::Identity;
use crate::upstream_token::UpstreamIdentity;

/// Headers the host sets for the upstream; client-sent copies are removed.
pub const USER_ID_HEADER: &str = "x-agentflow-user-id";
/// Comma-separated roles.
pub const ROLES_HEADER: &str = "x-agentflow-roles";
/// base64url (no padding) of the identity's JSON (`user_id`, `roles`, `claims`).
pub const IDENTITY_HEADER: &str = "x-agentflow-identity";

/// The agent server requests are forwarded to.
#[derive(Clone)]
pub struct Upstream {
    base: String,
    /// The path of `base` without a trailing `/` (`""` for a bare origin):
    /// every upstream URL's path must be this plus the canonical path.
    base_path: String,
    headers: HeaderPolicy,
    client: reqwest::Client,
    /// How the caller's identity reaches the agent (`upstream` in agentflow.json).
    identity: UpstreamIdentity,
}

impl Upstream {
    /// An upstream at `base` (e.g. `http://127.0.0.1:9000`), with the client
    /// headers `headers` lets through.
    pub fn new(base: String, headers: HeaderPolicy) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("a client without TLS always builds");
        // A base that does not parse (the config check prevents it) makes
        // every forward fail in `url_for`, never a wrong URL.
        let base_path = Url::parse(&base)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Upstream {
            base,
            base_path,
            headers,
            client,
            identity: UpstreamIdentity::default(),
        }
    }

    /// The same upstream with the identity channels of `upstream` in agentflow.json.
    pub fn with_identity(mut self, identity: UpstreamIdentity) -> Self {
        self.identity = identity;
        self
    }

    /// The same upstream, on the same connection pool, stripping what
    /// `headers` says: a config reload that changes the plugins (and so the
    /// credential headers never forwarded) builds this.
    pub fn with_headers(&self, headers: HeaderPolicy) -> Upstream {
        Upstream {
            base: self.base.clone(),
            base_path: self.base_path.clone(),
            headers,
            client: self.client.clone(),
            identity: self.identity.clone(),
        }
    }

    /// The JWKS of the upstream token's public key, when it has one.
    pub fn jwks(&self) -> Option<&serde_json::Value> {
        self.identity.token.as_ref().and_then(|t| t.jwks())
    }

    /// The identity headers and the signed token for `who`, as configured.
    fn attach(&self, headers: &mut HeaderMap, who: &Identity) -> Result<(), ApiError> {
        if self.identity.headers {
            attach_identity(headers, who);
        }
        if let Some(token) = &self.identity.token {
            headers.insert(header::AUTHORIZATION, token.authorization(who)?);
        }
        Ok(())
    }

    /// Forwards `target` (with the body it carries) for `who` with the
    /// client's `client_headers`. On routes that carry identity in the body,
    /// the body is rewritten with `config.user` and `config.user_id` set by
    /// the server. An idempotent request with a body the host holds (or none)
    /// is sent once more when the agent dropped the connection without
    /// answering (see [`retry`]).
    pub async fn forward(
        &self,
        mut target: AgentRequest,
        client_headers: &HeaderMap,
        who: Option<&Identity>,
        client_ip: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let url = self.url_for(&target)?;
        body::check_single_content_type(client_headers)?;

        let mut headers = self.headers.filter(client_headers);
        if let Some(ip) = client_ip.and_then(|ip| HeaderValue::from_str(ip).ok()) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), ip);
        }
        if let Some(who) = who {
            self.attach(&mut headers, who)?;
        }

        let merge = target.carries_identity_in_body() && self.identity.merge_body;
        // `None`: no body at all. Bytes (unlike a stream) can be sent again.
        let body = match (target.take_body(), who) {
            (AgentBody::Inspected(bytes), Some(who)) if merge => {
                match body::with_identity(&bytes, who)? {
                    Some(json) => {
                        // The agent must read it as the JSON the host wrote.
                        headers.insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        Some(reqwest::Body::from(json))
                    }
                    None => Some(reqwest::Body::from(Vec::new())),
                }
            }
            (AgentBody::Inspected(bytes), _) => Some(reqwest::Body::from(bytes)),
            (AgentBody::Streamed(body), _) => {
                let body = body.into_inner();
                (!body.is_end_stream()).then(|| reqwest::Body::wrap_stream(body.into_data_stream()))
            }
        };

        let mut request = self
            .client
            .request(target.method().clone(), url)
            .headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        let request = request
            .build()
            .map_err(|e| ApiError::Internal(format!("building the upstream request: {e}")))?;
        // `try_clone` is `None` for a streamed body: it cannot be replayed.
        let spare = retry::may_resend(request.method())
            .then(|| request.try_clone())
            .flatten();
        let upstream = match (self.client.execute(request).await, spare) {
            (Err(e), Some(spare)) if retry::connection_lost(&e) => {
                tracing::info!(error = %e, "agent connection lost before an answer; sending the request once more");
                self.client.execute(spare).await
            }
            (result, _) => result,
        }
        .map_err(|e| {
            tracing::warn!(error = %e, "agent upstream request failed");
            ApiError::UpstreamUnavailable
        })?;

        let mut response = Response::builder().status(upstream.status());
        if let Some(h) = response.headers_mut() {
            *h = headers::end_to_end(upstream.headers());
        }
        response
            .body(Body::from_stream(upstream.bytes_stream()))
            .map_err(|e| ApiError::Internal(format!("building the proxied response: {e}")))
    }

    /// The upstream URL of `target`, built from the canonical path and the
    /// query without re-normalization: the parsed URL must spell exactly
    /// `base + path` and the query as authorized, or the request is refused.
    fn url_for(&self, target: &AgentRequest) -> Result<Url, ApiError> {
        let path = target.path().as_str();
        let query = target.query();
        let mut raw =
            String::with_capacity(self.base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        raw.push_str(&self.base);
        raw.push_str(path);
        if let Some(q) = query {
            raw.push('?');
            raw.push_str(q);
        }
        let url = Url::parse(&raw)
            .map_err(|e| ApiError::Internal(format!("the agent URL does not parse: {e}")))?;
        if url.path().strip_prefix(self.base_path.as_str()) != Some(path) {
            // Canonical paths round-trip; reaching this is a bug, not a client error.
            return Err(ApiError::Internal(format!(
                "the agent URL would rewrite {path:?} to {:?}",
                url.path()
            )));
        }
        if url.query() != query {
            return Err(ApiError::BadRequest(
                "the query string has characters that must be percent-encoded (e.g. ', \", < or >)"
                    .into(),
            ));
        }
        Ok(url)
    }
}

/// Sets the identity headers; values that are not plain header text are
/// percent-encoded so any user id survives.
pub fn attach_identity(headers: &mut HeaderMap, who: &Identity) {
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, HEADER_UNSAFE).to_string();
    let pairs = [
        (USER_ID_HEADER, encode(&who.user_id)),
        (
            ROLES_HEADER,
            who.roles
                .iter()
                .map(|r| encode(r))
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            IDENTITY_HEADER,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(who.to_json().to_string()),
        ),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

/// Control characters, non-ASCII, `%` and `,` (the roles separator).
const HEADER_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%').add(b',');

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn url(base: &str, method: &str, uri: &str) -> Result<String, ApiError> {
        let up = Upstream::new(base.into(), HeaderPolicy::default());
        let target = AgentRequest::parse(
            &Method::from_bytes(method.as_bytes()).unwrap(),
            &uri.parse().unwrap(),
        )?;
        up.url_for(&target).map(|u| u.to_string())
    }

    #[test]
    fn upstream_url_is_base_plus_canonical_path_and_query() {
        let b = "http://127.0.0.1:9000";
        assert_eq!(
            url(b, "GET", "/v1/threads/t-%61lice/state?x=%2e%2e&y").unwrap(),
            format!("{b}/v1/threads/t-alice/state?x=%2e%2e&y")
        );
        assert_eq!(
            url(b, "GET", "/v1/threads/a%20b%3F%23c").unwrap(),
            format!("{b}/v1/threads/a%20b%3F%23c")
        );
        assert_eq!(
            url(b, "GET", "/v1/threads?").unwrap(),
            format!("{b}/v1/threads?")
        );
        assert_eq!(
            url("http://h:1/prefix", "GET", "/v1/threads").unwrap(),
            "http://h:1/prefix/v1/threads"
        );
    }

    #[test]
    fn a_query_the_url_parser_would_rewrite_is_refused() {
        assert!(matches!(
            url("http://h:1", "GET", "/v1/threads?q=it's"),
            Err(ApiError::BadRequest(_))
        ));
    }
}
