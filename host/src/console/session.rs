//! The console's session: the login's tokens in `HttpOnly`, `SameSite=Strict`
//! cookies scoped to `/admin` (so no script, and no other path, ever reads
//! them), a CSRF token checked on every form, and the console's only way to
//! act: [`Session::api`], which calls the HTTP API in-process as the
//! signed-in user (so the console gets exactly the API's checks, errors and
//! audit events), rotating the refresh token when the access token expires.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tower::ServiceExt as _;

use crate::routes::AppState;

/// The access token.
pub const ACCESS_COOKIE: &str = "af_access";
/// The refresh token.
pub const REFRESH_COOKIE: &str = "af_refresh";
/// The CSRF token (double-submit: cookie and form field must match).
pub const CSRF_COOKIE: &str = "af_csrf";

/// How the console was reached, for cookie attributes and internal calls.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// The peer address (forwarded to the API as the client).
    pub peer: Option<SocketAddr>,
    /// Whether cookies get `Secure` (see [`is_secure`]).
    pub secure: bool,
}

/// Cookies get `Secure` when the request came over TLS as a proxy in front
/// says (`X-Forwarded-Proto: https` or `Forwarded: proto=https`). A client
/// that fakes the header only makes its own cookies stricter.
pub fn is_secure(headers: &HeaderMap) -> bool {
    let says_https = |name: header::HeaderName, needle: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains(needle))
    };
    says_https(
        header::HeaderName::from_static("x-forwarded-proto"),
        "https",
    ) || says_https(header::FORWARDED, "proto=https")
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/admin, Secure
/// behind TLS; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    // Values are JWTs or hex: always header-safe.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("af_invalid=1"))
}

/// A fresh CSRF token (32 hex digits).
pub fn new_csrf() -> String {
    crate::store::new_id()
}

/// Whether a form's `csrf` field matches the cookie, and the request (if it
/// says where it comes from) comes from this site.
pub fn csrf_ok(headers: &HeaderMap, field: &str) -> bool {
    let Some(cookie) = cookie(headers, CSRF_COOKIE) else {
        return false;
    };
    let same_token =
        cookie.len() == field.len() && bool::from(cookie.as_bytes().ct_eq(field.as_bytes()));
    same_token && same_site(headers)
}

/// A request whose `Origin` names another host than its `Host` is refused
/// (browsers send `Origin` on every form POST).
fn same_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Why a console request cannot go on.
#[derive(Debug)]
pub enum ConsoleError {
    /// No valid login: sign in again (the text says why, if known).
    SignedOut(Option<String>),
    /// The API refused: its status and `detail`.
    Refused(StatusCode, String),
}

/// A signed-in browser: its tokens, and replacements when they were rotated.
pub struct Session {
    access: String,
    refresh: Option<String>,
    /// The CSRF token forms on the page carry.
    pub csrf: String,
    /// Set when a refresh rotated the tokens: the response must store them.
    pub rotated: Option<(String, String)>,
    origin: Origin,
}

impl Session {
    /// The session the request's cookies carry, if any.
    /// `csrf` is the browser's token (see `Browser`).
    pub fn from_headers(headers: &HeaderMap, origin: Origin, csrf: String) -> Option<Session> {
        let access = cookie(headers, ACCESS_COOKIE)?.to_owned();
        Some(Session {
            access,
            refresh: cookie(headers, REFRESH_COOKIE).map(str::to_owned),
            csrf,
            rotated: None,
            origin,
        })
    }

    /// Calls the API as this session's user. A 401 is answered once by
    /// rotating the refresh token and retrying; a second 401 (or no refresh
    /// token) signs the browser out.
    pub async fn api(
        &mut self,
        state: &AppState,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ConsoleError> {
        let (status, json) = call(
            state,
            &self.origin,
            method.clone(),
            path,
            Some(&self.access),
            body.clone(),
        )
        .await;
        if status != StatusCode::UNAUTHORIZED {
            return outcome(status, json);
        }
        let Some(refresh) = self.refresh.clone() else {
            return Err(ConsoleError::SignedOut(Some(detail(&json))));
        };
        let form = serde_json::json!({ "refresh_token": refresh });
        let (status, pair) = call(
            state,
            &self.origin,
            Method::POST,
            "/v1/refresh",
            None,
            Some(form),
        )
        .await;
        if status != StatusCode::OK {
            return Err(ConsoleError::SignedOut(Some(detail(&pair))));
        }
        let (Some(access), Some(refresh)) = (
            pair["access_token"].as_str().map(str::to_owned),
            pair["refresh_token"].as_str().map(str::to_owned),
        ) else {
            return Err(ConsoleError::SignedOut(None));
        };
        self.access = access.clone();
        self.refresh = Some(refresh.clone());
        self.rotated = Some((access, refresh));
        let (status, json) =
            call(state, &self.origin, method, path, Some(&self.access), body).await;
        if status == StatusCode::UNAUTHORIZED {
            return Err(ConsoleError::SignedOut(Some(detail(&json))));
        }
        outcome(status, json)
    }

    /// The refresh token (for signing out).
    pub fn refresh_token(&self) -> Option<&str> {
        self.refresh.as_deref()
    }
}

fn outcome(status: StatusCode, json: Value) -> Result<Value, ConsoleError> {
    if status.is_success() {
        Ok(json)
    } else {
        Err(ConsoleError::Refused(status, detail(&json)))
    }
}

/// The `detail` of an API refusal (the AgentFlow envelope's message).
pub fn detail(json: &Value) -> String {
    json["detail"]
        .as_str()
        .or_else(|| json["error"]["message"].as_str())
        .unwrap_or("the request was refused")
        .to_owned()
}

/// One in-process API request: the same router, layers and checks a client
/// gets, with this request's id and client address.
pub async fn call(
    state: &AppState,
    origin: &Origin,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = bearer {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(id) = crate::request_id::current() {
        req = req.header(crate::request_id::REQUEST_ID_HEADER, id);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    };
    let Ok(mut req) = req else {
        return (
            StatusCode::BAD_REQUEST,
            serde_json::json!({"detail": "bad request"}),
        );
    };
    if let Some(peer) = origin.peer {
        req.extensions_mut().insert(ConnectInfo(peer));
    }
    let Ok(response) = crate::routes::app(state.clone()).oneshot(req).await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
        .await
        .unwrap_or_default();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[("cookie", "x_af_csrf=no; af_csrf=tok; af_access=jwt")]);
        assert_eq!(cookie(&h, CSRF_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, ACCESS_COOKIE), Some("jwt"));
        assert_eq!(cookie(&h, REFRESH_COOKIE), None);
    }

    #[test]
    fn csrf_needs_the_matching_cookie_and_a_same_site_origin() {
        let ok = headers(&[
            ("cookie", "af_csrf=tok"),
            ("host", "a:1"),
            ("origin", "http://a:1"),
        ]);
        assert!(csrf_ok(&ok, "tok"));
        assert!(!csrf_ok(&ok, "other"));
        assert!(!csrf_ok(&ok, ""));
        let cross = headers(&[
            ("cookie", "af_csrf=tok"),
            ("host", "a:1"),
            ("origin", "http://evil"),
        ]);
        assert!(!csrf_ok(&cross, "tok"));
        assert!(!csrf_ok(&headers(&[("host", "a:1")]), "tok"));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_behind_tls() {
        let c = set_cookie(ACCESS_COOKIE, "v", 60, false);
        let c = c.to_str().unwrap();
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/admin")
        );
        assert!(!c.contains("Secure"));
        assert!(
            set_cookie(ACCESS_COOKIE, "v", 60, true)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        assert!(is_secure(&headers(&[("x-forwarded-proto", "https")])));
        assert!(is_secure(&headers(&[(
            "forwarded",
            "for=1.2.3.4;proto=https"
        )])));
        assert!(!is_secure(&headers(&[])));
    }
}
