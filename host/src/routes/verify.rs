//! Forward-auth: `/v1/auth/verify` answers "may this caller make that
//! request?" for a proxy in front of the agent (nginx `auth_request`,
//! Traefik `ForwardAuth`, Envoy `ext_authz` over HTTP).
//!
//! The original request is named by headers on `/v1/auth/verify`
//! (`X-Original-Method` and `X-Original-URI` from nginx,
//! `X-Forwarded-Method` and `X-Forwarded-Uri` from Traefik) or, for Envoy's `path_prefix`, by the
//! path after `/v1/auth/verify` with the request's own method. It passes the
//! same authentication chain (the credentials are the ones the proxy copied
//! from the client) and the same [`authorize`] as a proxied request, and
//! answers 200 with the identity headers, or the usual 401/403 JSON.
//! Request bodies are not seen here: on routes whose thread id lives in the
//! body (`/v1/graph/invoke`, …) the authorizer decides without it. With
//! tenancy on, a tenant is refused (403) on those routes and on every route
//! whose answer the gateway must read (listings, claims, WebSocket runs):
//! forward-auth cannot keep tenancy there, so it does not pretend to.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, Method, Uri, header};

use super::agent::authorize;
use super::{AppState, Caller};
use crate::agent_request::{AgentRequest, IdSource};
use crate::error::{ApiError, ErrorBody};

/// The forward-auth path; Envoy's `path_prefix` form appends the original path.
pub const VERIFY_PATH: &str = "/v1/auth/verify";

/// The body of a forward-auth answer (the headers carry the same identity).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Verified {
    /// The caller's id.
    user_id: String,
    /// The caller's roles.
    roles: Vec<String>,
}

/// Forward-auth: may the caller make the original request?
///
/// Any authenticated caller: 200 with identity headers when the original
/// request would be let through, else the refusal it would get.
#[utoipa::path(
    get,
    path = "/v1/auth/verify",
    tag = "forward-auth",
    description = "For a proxy's subrequest (nginx `auth_request`, Traefik `ForwardAuth`): \
        may the caller make the original request the headers name? Any method is accepted; \
        the original method and URI come from `X-Original-Method`/`X-Original-URI` (nginx) \
        or `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik), and pass the same \
        authentication, route table and authorization as a proxied request.",
    params(
        ("X-Original-Method" = Option<String>, Header, description = "The original method (nginx)"),
        ("X-Original-URI" = Option<String>, Header, description = "The original path and query (nginx)"),
        ("X-Forwarded-Method" = Option<String>, Header, description = "The original method (Traefik)"),
        ("X-Forwarded-Uri" = Option<String>, Header, description = "The original path and query (Traefik)"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Allowed; the identity headers are for the proxy to pass on", body = Verified,
            headers(
                ("x-agentflow-user-id" = String, description = "The caller's id"),
                ("x-agentflow-roles" = String, description = "The caller's roles, comma-separated"),
                ("x-agentflow-identity" = String, description = "The whole identity, base64url JSON"),
            )),
        (status = 400, description = "The original method or URI is missing, repeated or not valid", body = ErrorBody),
        (status = 403, description = "The authorizer (or tenancy) refuses the original request", body = ErrorBody),
        (status = 404, description = "The original request is not an AgentFlow route", body = ErrorBody),
    ),
)]
pub async fn verify(
    State(state): State<AppState>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("authentication did not run".into()))?;
    let (method, uri) = original_request(req.method(), req.uri(), req.headers())
        .unwrap_or_else(|| Err(ApiError::Internal("not a forward-auth request".into())))?;
    let target = AgentRequest::parse(&method, &uri)?;
    let grant = authorize(&state, &caller, &target).await?;
    let id_in_body = matches!(target.route().id, IdSource::Body(_));
    if grant.needs_the_proxy(id_in_body) {
        return Err(ApiError::Forbidden(
            "tenancy: this route needs its body or the agent's answer checked; send it through agentflow's proxy, not forward-auth".into(),
        ));
    }
    let mut headers = HeaderMap::new();
    identity_headers(&state, &caller, &mut headers)?;
    let body = Verified {
        user_id: caller.identity.user_id.clone(),
        roles: caller.identity.roles.clone(),
    };
    Ok((headers, crate::extract::Json(body)).into_response())
}

/// The identity as the proxy should pass it on: the `x-agentflow-*`
/// headers, and `Authorization: Bearer <gateway-signed token>` when
/// `upstream.token` is configured (Traefik's `authResponseHeaders` and
/// Envoy's `allowed_upstream_headers` copy it onto the upstream request).
fn identity_headers(
    state: &AppState,
    caller: &Caller,
    headers: &mut HeaderMap,
) -> Result<(), ApiError> {
    crate::proxy::attach_identity(headers, &caller.identity);
    if let Some(token) = &state.gateway.identity.token {
        headers.insert(
            header::AUTHORIZATION,
            token.authorization(&caller.identity)?,
        );
    }
    Ok(())
}

/// The request a forward-auth call asks about, or `None` when `uri` is not
/// a forward-auth path. `Some(Err)` (400) when the proxy did not say which
/// request it means: the method is never guessed, since allowing a `GET`
/// must not allow the `DELETE` it really was.
pub fn original_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Result<(Method, Uri), ApiError>> {
    let path = uri.path();
    if path == VERIFY_PATH {
        return Some(from_headers(headers));
    }
    let rest = path.strip_prefix(VERIFY_PATH)?;
    if !rest.starts_with('/') {
        return None;
    }
    // Envoy's ext_authz `path_prefix`: the original path and query follow.
    let original = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    Some(
        original
            .parse::<Uri>()
            .map(|u| (method.clone(), u))
            .map_err(|_| ApiError::BadRequest("the original request URI is not valid".into())),
    )
}

/// `X-Original-Method`/`X-Original-URI` (nginx) or
/// `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik).
fn from_headers(headers: &HeaderMap) -> Result<(Method, Uri), ApiError> {
    let method = one_of(headers, &["x-original-method", "x-forwarded-method"])?.ok_or_else(|| {
        ApiError::BadRequest(
            "forward-auth needs the original method: X-Original-Method (nginx) or X-Forwarded-Method (Traefik)"
                .into(),
        )
    })?;
    let uri = one_of(headers, &["x-original-uri", "x-forwarded-uri"])?.ok_or_else(|| {
        ApiError::BadRequest(
            "forward-auth needs the original URI: X-Original-URI (nginx) or X-Forwarded-Uri (Traefik)"
                .into(),
        )
    })?;
    let method = Method::from_bytes(method.trim().as_bytes())
        .map_err(|_| ApiError::BadRequest("the original method is not valid".into()))?;
    let uri = uri
        .trim()
        .parse::<Uri>()
        .ok()
        .filter(|u| u.scheme().is_none() && u.path().starts_with('/'))
        .ok_or_else(|| {
            ApiError::BadRequest("the original URI must be a path like /v1/threads".into())
        })?;
    Ok((method, uri))
}

/// The value of the first of `names` present; a name sent twice (or not as
/// text) is refused: two proxies disagreeing is not something to pick from.
fn one_of<'h>(headers: &'h HeaderMap, names: &[&'static str]) -> Result<Option<&'h str>, ApiError> {
    for name in names {
        let mut values = headers.get_all(HeaderName::from_static(name)).iter();
        let Some(value) = values.next() else {
            continue;
        };
        if values.next().is_some() {
            return Err(ApiError::BadRequest(format!("more than one {name} header")));
        }
        return value
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::BadRequest(format!("{name} is not text")));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ask(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Option<Result<(Method, Uri), ApiError>> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        original_request(
            &Method::from_bytes(method.as_bytes()).unwrap(),
            &uri.parse().unwrap(),
            &h,
        )
    }

    #[test]
    fn nginx_and_traefik_headers_name_the_request() {
        let (m, u) = ask(
            "GET",
            "/v1/auth/verify",
            &[
                ("x-original-method", "DELETE"),
                ("x-original-uri", "/v1/threads/t1?x=1"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (m.as_str(), u.to_string().as_str()),
            ("DELETE", "/v1/threads/t1?x=1")
        );
        let (m, u) = ask(
            "GET",
            "/v1/auth/verify",
            &[
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/v1/graph/invoke"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!((m.as_str(), u.path()), ("POST", "/v1/graph/invoke"));
    }

    #[test]
    fn the_method_is_never_guessed() {
        assert!(matches!(
            ask(
                "DELETE",
                "/v1/auth/verify",
                &[("x-original-uri", "/v1/threads")]
            ),
            Some(Err(ApiError::BadRequest(_)))
        ));
        assert!(matches!(
            ask("GET", "/v1/auth/verify", &[("x-original-method", "GET")]),
            Some(Err(ApiError::BadRequest(_)))
        ));
        assert!(matches!(
            ask(
                "GET",
                "/v1/auth/verify",
                &[
                    ("x-original-method", "GET"),
                    ("x-original-method", "DELETE"),
                    ("x-original-uri", "/")
                ]
            ),
            Some(Err(ApiError::BadRequest(_)))
        ));
        assert!(matches!(
            ask(
                "GET",
                "/v1/auth/verify",
                &[
                    ("x-original-method", "GET"),
                    ("x-original-uri", "http://evil/v1/threads")
                ]
            ),
            Some(Err(ApiError::BadRequest(_)))
        ));
    }

    #[test]
    fn envoy_path_prefix_keeps_method_path_and_query() {
        let (m, u) = ask("DELETE", "/v1/auth/verify/v1/threads/t1?a=b", &[])
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.as_str(), u.to_string().as_str()),
            ("DELETE", "/v1/threads/t1?a=b")
        );
        assert!(ask("GET", "/v1/auth/verifyx", &[]).is_none());
        assert!(ask("GET", "/v1/threads", &[]).is_none());
    }
}
