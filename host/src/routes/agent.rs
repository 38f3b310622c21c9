//! The AgentFlow API handler: validate the request line once, authorize the
//! result, forward that same result.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

use super::{AppState, Caller};
use crate::agent_request::AgentRequest;
use crate::error::ApiError;
use crate::plugins::PluginRequest;
use crate::proxy::ForwardAll;

/// Any authenticated caller may reach this; the authorizer decides per
/// resource/action, then the request goes to the agent upstream.
pub async fn forward(
    State(state): State<AppState>,
    req: Request<Body>,
) -> Result<Response<Body>, ApiError> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("authentication did not run".into()))?;
    let (parts, body) = req.into_parts();
    // The body is read here only when the route's id lives in it, so the
    // authorizer decides on that id and the proxy forwards those bytes.
    let target = AgentRequest::parse(&parts.method, &parts.uri)?
        .with_body(&parts.headers, body)
        .await?;
    authorize(&state, &caller, &target).await?;
    let upstream = state.upstream.as_ref().ok_or(ApiError::NoUpstream)?;
    // With `"auth": null` the caller is `anonymous` (as /v1/whoami says),
    // and the agent is told the same.
    let who = Some(&caller.identity);
    if target.is_websocket() {
        let client_ip = caller.client_ip.as_deref();
        return upstream
            .forward_websocket(target, parts, who, client_ip, Arc::new(ForwardAll))
            .await;
    }
    let started = std::time::Instant::now();
    let result = upstream
        .forward(target, &parts.headers, who, caller.client_ip.as_deref())
        .await;
    crate::metrics::upstream_result(started, &result);
    result
}

/// Every check an agent request passes before it may reach the agent: the
/// authorizer (and every policy added beside it) decides on the validated
/// request, the same one that is forwarded. Shared by the proxy and by
/// anything else that answers "may this caller make this request?".
pub async fn authorize(
    state: &AppState,
    caller: &Caller,
    target: &AgentRequest,
) -> Result<(), ApiError> {
    let view = authorizer_view(caller.plugin_view.as_deref(), target);
    let result = state
        .gate
        .authorize(
            &caller.identity,
            target.access(),
            view.as_ref().or(caller.plugin_view.as_deref()),
        )
        .await;
    crate::metrics::global().authz_result(result.as_ref().map(|_| ()));
    result
}

/// The authorizer sees the canonical path (the one forwarded), not the
/// client's spelling; a copy is made only when the two differ.
fn authorizer_view(view: Option<&PluginRequest>, target: &AgentRequest) -> Option<PluginRequest> {
    let view = view?;
    (view.0.path != target.path().as_str()).then(|| {
        let mut canonical = view.clone();
        canonical.0.path = target.path().as_str().to_owned();
        canonical
    })
}
