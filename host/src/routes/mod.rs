//! The HTTP surface: the router, the authentication layer in front of
//! everything but `/ping`, and the shared state handlers use.

mod agent;
mod api_keys;
mod auth;
mod jwks;
mod plugins;
mod users;
mod variables;
mod whoami;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, patch, post};

pub use agent::classify;

use crate::accounts::Accounts;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::pipeline::Gate;
use crate::plugins::PluginRequest;
use crate::proxy::Upstream;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Authentication chain and authorizer.
    pub gate: Arc<Gate>,
    /// The agent upstream, when configured.
    pub upstream: Option<Upstream>,
    /// Users, logins, API keys and variables.
    pub accounts: Arc<Accounts>,
}

/// The authenticated caller of the current request (a request extension).
#[derive(Clone)]
pub struct Caller {
    /// Who they are.
    pub identity: Identity,
    /// The request as plugins see it (only built when plugins are in use).
    pub plugin_view: Option<Arc<PluginRequest>>,
    /// The peer address.
    pub client_ip: Option<String>,
}

/// The full router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// so plugins and the upstream learn the client's address.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami::whoami))
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/users/whoami", get(users::whoami))
        .route("/v1/users", get(users::list).post(users::create))
        .route("/v1/users/{id}", patch(users::update).delete(users::delete))
        .route("/v1/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/v1/api-keys/{id}", delete(api_keys::delete))
        .route("/v1/variables", get(variables::list).post(variables::create))
        .route("/v1/variables/{id}", patch(variables::update).delete(variables::delete))
        .fallback(agent::forward)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route("/ping", get(ping))
        .route("/.well-known/jwks.json", get(jwks::jwks))
        .route("/v1/login", post(auth::login))
        .route("/v1/refresh", post(auth::refresh))
        .route("/v1/logout", post(auth::logout))
        .route("/v1/auto_login", get(auth::auto_login))
        .with_state(state)
}

/// Always public: liveness check.
async fn ping() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Runs the authentication chain and records the caller for handlers.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let client_ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let plugin_view = state.gate.uses_plugins().then(|| Arc::new(plugin_view(&req, client_ip.clone())));
    let identity = state.gate.authenticate(req.headers(), plugin_view.as_deref()).await?;
    req.extensions_mut().insert(Caller { identity, plugin_view, client_ip });
    Ok(next.run(req).await)
}

/// The request as plugins see it; headers that are not UTF-8 are left out.
fn plugin_view(req: &Request, client_ip: Option<String>) -> PluginRequest {
    let headers = req
        .headers()
        .iter()
        .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str().to_owned(), v.to_owned())))
        .collect();
    PluginRequest::new(
        req.method().as_str().to_owned(),
        req.uri().path().to_owned(),
        req.uri().query().unwrap_or_default().to_owned(),
        headers,
        client_ip,
    )
}
