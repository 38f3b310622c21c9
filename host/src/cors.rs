//! CORS: which browser origins may call the gateway, answered by the
//! gateway itself (the agent's own CORS headers never reach the client).
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//!   is answered here, before authentication, and never forwarded: 204 with
//!   the allow headers for an allowed origin, 403 (JSON refusal) for any
//!   other, so a misconfigured origin is visible in the browser's network tab.
//! - Other requests from an allowed origin get `Access-Control-Allow-Origin`
//!   (the origin echoed, with `Vary: Origin`) and `x-request-id` exposed.
//! - Credentials are never allowed together with a wildcard origin: the
//!   config is refused at start.
//!
//! Written by hand rather than with tower-http's `CorsLayer`: that layer
//! answers a preflight from a refused origin with 200 and no headers, and
//! leaves the agent's own `Access-Control-*` headers in place.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::Method;
use http::header::{self, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use crate::config::Env;
use crate::error::ApiError;

/// The environment variable AgentFlow's production checklist names:
/// comma-separated origins; when set, it replaces `cors.origins`.
pub const ORIGINS_ENV: &str = "CORS_ORIGINS";

/// Methods a browser may use (the agent API's and the gateway's own).
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";

/// Response headers scripts may read.
const EXPOSE_HEADERS: &str = "x-request-id, www-authenticate, retry-after";

/// The `cors` object of agentflow.json.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    allow_credentials: bool,
    #[serde(default = "default_max_age")]
    max_age_s: u64,
}

fn default_max_age() -> u64 {
    600
}

/// Which origins are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origins {
    /// `*`: every origin (never with credentials).
    Any,
    /// Exactly these serialized origins (`https://app.example.com`).
    List(Vec<String>),
}

/// The validated CORS policy.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    origins: Origins,
    allow_credentials: bool,
    max_age: Duration,
}

impl CorsPolicy {
    /// The policy from the `cors` value of agentflow.json and `CORS_ORIGINS`;
    /// `None` when neither names an origin (cross-origin requests get no
    /// CORS headers, preflights go through authentication like any request).
    /// Errors name the key: `(key, reason)`.
    pub fn from_config(raw: &Value, env: &Env) -> Result<Option<CorsPolicy>, (String, String)> {
        let raw: RawCors = match raw {
            Value::Null => RawCors {
                origins: Vec::new(),
                allow_credentials: false,
                max_age_s: default_max_age(),
            },
            v => {
                serde_json::from_value(v.clone()).map_err(|e| ("cors".to_owned(), e.to_string()))?
            }
        };
        let (key, list) = match env.get(ORIGINS_ENV).filter(|v| !v.trim().is_empty()) {
            Some(v) => (
                format!("env:{ORIGINS_ENV}"),
                v.split(',').map(|s| s.trim().to_owned()).collect(),
            ),
            None => ("cors.origins".to_owned(), raw.origins),
        };
        if raw.max_age_s > 86_400 {
            return Err((
                "cors.max_age_s".into(),
                "must be at most 86400 (one day)".into(),
            ));
        }
        if list.is_empty() {
            return Ok(None);
        }
        let origins = if list.iter().any(|o| o == "*") {
            if list.len() > 1 {
                return Err((
                    key,
                    "\"*\" allows every origin; list no other origin with it".into(),
                ));
            }
            if raw.allow_credentials {
                return Err((
                    "cors.allow_credentials".into(),
                    format!(
                        "must be false when `{key}` is \"*\": browsers refuse credentials with a wildcard origin, and echoing every origin with credentials lets any site act as the user"
                    ),
                ));
            }
            Origins::Any
        } else {
            Origins::List(
                list.iter()
                    .map(|o| parse_origin(o).map_err(|r| (key.clone(), r)))
                    .collect::<Result<_, _>>()?,
            )
        };
        Ok(Some(CorsPolicy {
            origins,
            allow_credentials: raw.allow_credentials,
            max_age: Duration::from_secs(raw.max_age_s),
        }))
    }

    fn allows(&self, origin: &str) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::List(list) => list.iter().any(|o| o == origin),
        }
    }

    /// The headers every answer to an allowed origin carries.
    fn stamp(&self, headers: &mut HeaderMap, origin: &HeaderValue) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// An origin as browsers serialize it: `scheme://host[:port]`, lower case,
/// no default port, no path, no trailing slash.
fn parse_origin(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| {
        format!("{s:?} is not an origin ({e}); write e.g. \"https://app.example.com\"")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{s:?}: only http and https origins can be allowed"));
    }
    let serialized = url.origin().ascii_serialization();
    if serialized != s {
        return Err(format!(
            "{s:?} is not how a browser sends its origin; write {serialized:?}"
        ));
    }
    Ok(serialized)
}

/// Middleware (outside authentication): answers preflights, stamps allowed
/// origins, and drops whatever `Access-Control-*` headers the agent sent.
pub async fn handle(
    State(policy): State<Option<Arc<CorsPolicy>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(policy) = policy else {
        let mut response = next.run(req).await;
        strip_upstream_cors(response.headers_mut());
        return response;
    };
    let origin = req.headers().get(header::ORIGIN).cloned();
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let allowed = origin
        .as_ref()
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| policy.allows(o));
    if let (true, Some(origin)) = (preflight, origin.as_ref()) {
        if !allowed {
            let mut response =
                ApiError::Forbidden("this origin is not allowed to call the API (CORS)".into())
                    .into_response();
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Origin"));
            return response;
        }
        return preflight_answer(&policy, origin, req.headers());
    }
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    strip_upstream_cors(headers);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let (true, Some(origin)) = (allowed, origin) {
        policy.stamp(headers, &origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    response
}

fn preflight_answer(policy: &CorsPolicy, origin: &HeaderValue, request: &HeaderMap) -> Response {
    let mut response = http::StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    policy.stamp(headers, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    // The asked-for headers are echoed when they are a plain list of header
    // names; whether a header is honoured is for authentication to decide.
    if let Some(asked) = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| is_name_list(v))
    {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(policy.max_age.as_secs()),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    response
}

fn is_name_list(v: &HeaderValue) -> bool {
    v.to_str().is_ok_and(|s| {
        s.split(',').map(str::trim).all(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        })
    })
}

/// The gateway owns the CORS policy: the agent's headers (AgentFlow
/// defaults to every origin with credentials) must not widen it.
fn strip_upstream_cors(headers: &mut HeaderMap) {
    let names: Vec<_> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(raw: Value, env: &[(&str, &str)]) -> Result<Option<CorsPolicy>, (String, String)> {
        let env = Env::from_pairs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        CorsPolicy::from_config(&raw, &env)
    }

    #[test]
    fn origins_from_the_file_or_the_environment() {
        let p = policy(json!({"origins": ["https://app.example.com"]}), &[])
            .unwrap()
            .unwrap();
        assert!(p.allows("https://app.example.com"));
        assert!(!p.allows("https://evil.example.com"));
        assert!(!p.allows("https://app.example.com.evil.com"));
        let p = policy(
            json!({"origins": ["https://a.test"]}),
            &[("CORS_ORIGINS", "http://localhost:3000, https://b.test")],
        )
        .unwrap()
        .unwrap();
        assert!(
            p.allows("http://localhost:3000")
                && p.allows("https://b.test")
                && !p.allows("https://a.test")
        );
        assert!(policy(Value::Null, &[]).unwrap().is_none());
        assert!(policy(json!({"origins": []}), &[]).unwrap().is_none());
    }

    #[test]
    fn wildcard_with_credentials_is_refused() {
        let (key, _) =
            policy(json!({"origins": ["*"], "allow_credentials": true}), &[]).unwrap_err();
        assert_eq!(key, "cors.allow_credentials");
        let (key, why) =
            policy(json!({"allow_credentials": true}), &[("CORS_ORIGINS", "*")]).unwrap_err();
        assert_eq!(key, "cors.allow_credentials");
        assert!(why.contains("env:CORS_ORIGINS"), "{why}");
        assert!(
            policy(json!({"origins": ["*"]}), &[])
                .unwrap()
                .unwrap()
                .allows("https://any.test")
        );
    }

    #[test]
    fn origins_must_be_spelled_as_browsers_send_them() {
        for bad in [
            "https://app.test/",
            "https://app.test/path",
            "https://APP.test",
            "https://app.test:443",
            "app.test",
            "ftp://a.test",
            "*.test",
        ] {
            let (key, _) = policy(json!({"origins": [bad]}), &[]).unwrap_err();
            assert_eq!(key, "cors.origins", "{bad}");
        }
        assert_eq!(
            policy(
                json!({"origins": ["x"]}),
                &[("CORS_ORIGINS", "https://a.test/")]
            )
            .unwrap_err()
            .0,
            "env:CORS_ORIGINS"
        );
        assert_eq!(
            policy(json!({"origin": ["https://a.test"]}), &[])
                .unwrap_err()
                .0,
            "cors",
            "unknown keys"
        );
        assert_eq!(
            policy(json!({"max_age_s": 999999}), &[]).unwrap_err().0,
            "cors.max_age_s"
        );
    }

    #[test]
    fn asked_headers_are_echoed_only_as_name_lists() {
        assert!(is_name_list(&HeaderValue::from_static(
            "authorization, content-type"
        )));
        assert!(!is_name_list(&HeaderValue::from_static("a b")));
        assert!(!is_name_list(&HeaderValue::from_static("a,,b")));
    }
}
