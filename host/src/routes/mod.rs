//! The HTTP surface: the router, the authentication layer in front of
//! everything but `/ping`, and the shared state handlers use.

mod account;
mod agent;
pub(crate) mod api_keys;
pub(crate) mod audit;
pub(crate) mod auth;
mod client;
pub(crate) mod jwks;
pub(crate) mod metrics;
mod plugin_body;
pub(crate) mod plugins;
pub(crate) mod users;
pub(crate) mod variables;
pub(crate) mod verify;
pub(crate) mod whoami;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, delete, get, patch, post};

use http::{HeaderMap, HeaderValue, Method, Uri, header};

use crate::accounts::Accounts;
use crate::agent_request::AgentRequest;
use crate::error::ApiError;
use crate::identity::{Authenticated, Identity, IdentityOrigin};
use crate::live::{LiveSetup, Setup};
use crate::pipeline::Authorization;
use crate::plugins::PluginRequest;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The authentication chain, the authorizer and the agent upstream, as
    /// the config last (re)loaded them. A request takes its snapshot once,
    /// when it is authenticated ([`Caller::setup`]); the upstream's public
    /// keys (the `upstream` key) never change while running.
    pub live: Arc<LiveSetup>,
    /// Users, logins, API keys and variables.
    pub accounts: Arc<Accounts>,
    /// Allowed browser origins, if any.
    pub cors: Option<Arc<crate::cors::CorsPolicy>>,
    /// Trusted proxies and forward-auth answers (see [`crate::gateway`]).
    pub gateway: Arc<crate::gateway::GatewayState>,
    /// The ownership policy (`tenancy` in agentflow.json), when on.
    pub tenancy: Option<Arc<crate::tenancy::Tenancy>>,
}

/// The authenticated caller of the current request (a request extension).
#[derive(Clone)]
pub struct Caller {
    /// Who they are.
    pub identity: Identity,
    /// How that was proved (only account-issued credentials reach the account API).
    pub origin: IdentityOrigin,
    /// What authorizing their requests takes: the gate's authorizer with
    /// the request as it sees it.
    pub authorization: Authorization,
    /// The client address, resolved once through the trusted proxies
    /// (see [`crate::client_addr`]).
    pub client_ip: Option<String>,
    /// The setup that authenticated the caller: the same one authorizes and
    /// forwards the request, even if the config is reloaded meanwhile.
    pub setup: Arc<Setup>,
}

/// The full router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// so plugins and the upstream learn the client's address.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami::whoami))
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/audit", get(audit::list))
        .route("/v1/users/whoami", get(users::whoami))
        .route("/v1/users", get(users::list).post(users::create))
        .route("/v1/users/{id}", patch(users::update).delete(users::delete))
        .route("/v1/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/v1/api-keys/{id}", delete(api_keys::delete))
        .route(
            "/v1/variables",
            get(variables::list).post(variables::create),
        )
        .route(
            "/v1/variables/{id}",
            patch(variables::update).delete(variables::delete),
        )
        .route(verify::VERIFY_PATH, any(verify::verify))
        .route("/v1/auth/verify/{*original}", any(verify::verify))
        .fallback(agent::forward)
        // Runs after authentication (layers wrap what was added before them).
        .layer(middleware::from_fn_with_state(
            state.gateway.clone(),
            crate::rate_limit::per_identity,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route("/ping", get(ping))
        .route("/metrics", get(metrics::metrics))
        .route("/ready", get(crate::readiness::ready))
        .route("/.well-known/jwks.json", get(jwks::jwks))
        .route("/v1/login", post(auth::login))
        .route("/v1/refresh", post(auth::refresh))
        .route("/v1/logout", post(auth::logout))
        .route("/v1/auto_login", get(auth::auto_login))
        .route("/", get(crate::console::root))
        .merge(crate::console::router())
        // Public, as the AgentFlow server's docs: the API's shape is no secret.
        .merge(crate::openapi::router(&state.gateway.docs))
        // Last, so it reaches every route above: a known path with the wrong
        // method answers the JSON 405 (axum keeps the `Allow` header).
        .method_not_allowed_fallback(method_not_allowed)
        // Before authentication, so guessing credentials spends the budget;
        // inside CORS, so browsers can read the 429.
        .layer(middleware::from_fn_with_state(
            state.gateway.clone(),
            crate::rate_limit::per_address,
        ))
        // Outside authentication: preflights are answered without credentials.
        .layer(middleware::from_fn_with_state(
            state.cors.clone(),
            crate::cors::handle,
        ))
        // Before everything keyed on the client address.
        .layer(middleware::from_fn_with_state(
            state.gateway.trusted_proxies.clone(),
            crate::client_addr::resolve,
        ))
        .layer(middleware::from_fn(crate::metrics::track))
        .layer(middleware::from_fn(crate::request_id::assign))
        .with_state(state)
}

/// Serves `GET /metrics` without credentials on `addr` (the
/// `--metrics-port` listener) in the background; logs where.
pub async fn serve_metrics(addr: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let router = Router::new().route("/metrics", get(|| async { metrics::render() }));
    tracing::info!("metrics on http://{local}/metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

/// A route that exists, asked with a method it does not take.
async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The liveness answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Alive {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness.
///
/// Always public: liveness check.
#[utoipa::path(
    get,
    path = "/ping",
    tag = "health",
    responses((status = 200, description = "The process is up (also while it is still loading)", body = Alive)),
)]
pub(crate) async fn ping() -> axum::Json<Alive> {
    axum::Json(Alive { status: "ok" })
}

/// Runs the authentication chain and records the caller for handlers.
async fn authenticate(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let setup = state.live.current();
    let (mut req, body) = plugin_body::read(req, setup.gate.plugin_body_cap()).await?;
    let caller = identify(&state, setup, &mut req, body).await?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Who is calling: the authentication chain of `setup` (the snapshot the
/// request keeps) on `req`, whose body (for plugins that asked for it) was
/// read already (also used by routes outside the authentication layer that
/// accept other credentials first).
async fn identify(
    state: &AppState,
    setup: Arc<Setup>,
    req: &mut Request,
    body: Option<crate::plugins::BufferedBody>,
) -> Result<Caller, ApiError> {
    websocket_token_as_bearer(req)?;
    let client_ip = crate::client_addr::of(req).map(|ip| ip.to_string());
    let (method, uri, headers) = (req.method(), req.uri(), req.headers());
    let view = || {
        let view = plugin_view(method, uri, headers, client_ip.clone());
        match &body {
            Some(body) => view.with_body(body.clone()),
            None => view,
        }
    };
    let authenticated = setup.gate.authenticate(headers, view).await;
    crate::metrics::global().auth_result(
        authenticated
            .as_ref()
            .map_or("chain", |(a, _)| origin_kind(&a.origin)),
        authenticated.as_ref().map(|_| ()),
    );
    let (Authenticated { identity, origin }, authorization) = match authenticated {
        Ok(a) => a,
        Err(e) => {
            let route = crate::audit::Route {
                method: req.method().as_str(),
                path: req.uri().path(),
            };
            // Only a fail-closed plugin is an audit event here.
            if let Some((entry, key)) = crate::audit::refusal(None, client_ip, route, &e) {
                state.accounts.record_limited(entry, key).await;
            }
            return Err(e);
        }
    };
    Ok(Caller {
        identity,
        origin,
        authorization,
        client_ip,
        setup,
    })
}

/// How a caller was proved, as a metric label (bounded).
fn origin_kind(origin: &IdentityOrigin) -> &'static str {
    match origin {
        IdentityOrigin::Anonymous => "anonymous",
        IdentityOrigin::Jwt => "jwt",
        IdentityOrigin::Plugin { .. } => "plugin",
        IdentityOrigin::Account { .. } => "account",
        IdentityOrigin::ApiKey { .. } => "api_key",
    }
}

/// A WebSocket upgrade on a socket route may carry its token where browsers
/// can put it (the `agentflow-bearer` subprotocol pair or `?token=`); the
/// chain reads it as `Authorization: Bearer` unless the client sent an
/// `Authorization` header, which wins. Plain HTTP requests, and upgrades on
/// other routes, are left alone: there neither place is a credential. The
/// header never reaches the agent (it is a client credential), and the
/// socket proxy strips `token` from the query it forwards.
fn websocket_token_as_bearer(req: &mut Request) -> Result<(), ApiError> {
    if req.headers().contains_key(header::AUTHORIZATION)
        || !crate::proxy::is_upgrade(req.method(), req.headers())
    {
        return Ok(());
    }
    if !AgentRequest::parse(req.method(), req.uri()).is_ok_and(|r| r.is_websocket()) {
        return Ok(());
    }
    if let Some(token) = crate::proxy::handshake_token(req.headers(), req.uri().query())? {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ApiError::InvalidCredentials {
                detail: "invalid token: malformed token".into(),
                invalid_token: true,
            }
        })?;
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    Ok(())
}

/// The request as plugins see it; headers that are not UTF-8 are left out.
/// On forward-auth they see the original method and URI the proxy names
/// (so a plugin decides on the same request as when it is proxied).
fn plugin_view(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    client_ip: Option<String>,
) -> PluginRequest {
    let original = verify::original_request(method, uri, headers).and_then(Result::ok);
    let (method, uri) = match &original {
        Some((m, u)) => (m, u),
        None => (method, uri),
    };
    let headers = headers
        .iter()
        .filter_map(|(n, v)| {
            v.to_str()
                .ok()
                .map(|v| (n.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    PluginRequest::new(
        method.as_str().to_owned(),
        uri.path().to_owned(),
        uri.query().unwrap_or_default().to_owned(),
        headers,
        client_ip,
    )
}
