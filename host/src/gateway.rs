//! What the production-gateway features share with the router: the trusted
//! proxies the client address is resolved through, the rate limits, and
//! the identity channels forward-auth answers with.

use std::sync::Arc;

use crate::client_addr::TrustedProxies;
use crate::upstream_token::UpstreamIdentity;

/// Gateway-wide settings handlers and middleware read (one [`AppState`]
/// field, so the features here do not touch the shared state's shape).
///
/// [`AppState`]: crate::routes::AppState
#[derive(Clone, Default)]
pub struct GatewayState {
    /// Whose forwarding headers name the client (`trusted_proxies`).
    pub trusted_proxies: Arc<TrustedProxies>,
    /// The identity headers and signed token forward-auth answers with
    /// (`upstream` in agentflow.json, as the proxy attaches them).
    pub identity: UpstreamIdentity,
    /// Per-address and per-identity budgets (`rate_limits`).
    pub rate_limits: crate::rate_limit::RateLimits,
    /// `AGENTFLOW_METRICS_TOKEN`: a bearer token that may read `/metrics`.
    pub metrics_token: Option<String>,
    /// The `/ready` checks and their cached answer.
    pub readiness: crate::readiness::SharedReadiness,
    /// `DOCS_PATH`: where the docs page is served (with `/openapi.json`), or off.
    pub docs: crate::openapi::DocsPath,
}
