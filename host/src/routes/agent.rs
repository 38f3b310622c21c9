//! The AgentFlow API handler: validate the request line once, authorize the
//! result, forward that same result.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

use super::{AppState, Caller};
use crate::agent_request::AgentRequest;
use crate::audit::{Route, refusal};
use crate::error::ApiError;
use crate::tenancy::Grant;

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
    // Settled first: the check's future borrows the request, which must not
    // be held across the audit write below.
    let authorized = authorize(&state, &caller, &target).await;
    let grant = match authorized {
        Ok(grant) => grant,
        Err(e) => {
            let route = Route {
                method: target.method().as_str(),
                path: target.path().as_str(),
            };
            let who = Some(&caller.identity);
            if let Some((entry, key)) = refusal(who, caller.client_ip.clone(), route, &e) {
                state.accounts.record_limited(entry, key).await;
            }
            return Err(e);
        }
    };
    let upstream = caller.setup.upstream.as_ref().ok_or(ApiError::NoUpstream)?;
    // With `"auth": null` the caller is `anonymous` (as /v1/whoami says),
    // and the agent is told the same.
    let who = Some(&caller.identity);
    if target.is_websocket() {
        let client_ip = caller.client_ip.as_deref();
        let live = target.route().pattern == "/v1/graph/live";
        let authorization = caller.authorization.at_path(target.path().as_str());
        let credential = crate::tenancy::Credential::new(
            state.accounts.clone(),
            caller.origin.clone(),
            &caller.identity,
        );
        let inspector =
            grant.frame_inspector(live, caller.identity.clone(), authorization, credential);
        return upstream
            .forward_websocket(target, parts, who, client_ip, inspector)
            .await;
    }
    let started = std::time::Instant::now();
    let result = grant
        .forward(
            upstream,
            target,
            &parts.headers,
            who,
            caller.client_ip.as_deref(),
        )
        .await;
    crate::metrics::upstream_result(started, &result);
    result
}

/// Every check an agent request passes before it may reach the agent: the
/// ownership policy (tenancy, when on), then the authorizer (and every
/// policy added beside it) decides on the validated request, the same one
/// that is forwarded, seeing the ownership facts. Shared by the proxy and
/// by anything else that answers "may this caller make this request?".
///
/// The answer is the tenancy [`Grant`]: a first-use claim is already made
/// (only once the authorizer allowed the request); what tenancy does with
/// the agent's answer is left to [`Grant::forward`].
pub fn authorize<'a>(
    state: &'a AppState,
    caller: &'a Caller,
    target: &AgentRequest,
) -> impl Future<Output = Result<Grant, ApiError>> + Send + 'a {
    // Everything needed from `target` is taken before the future starts: the
    // request holds a body stream, so a reference to it is not `Send`.
    let route = target.route();
    let access = target.access().clone();
    let authorization = caller.authorization.at_path(target.path().as_str());
    async move {
        let mut grant = match &state.tenancy {
            Some(tenancy) => tenancy.check(&caller.identity, route, &access).await?,
            None => Grant::open(),
        };
        let access = grant.access(&access);
        let decision = authorization.authorize(&caller.identity, &access).await;
        crate::metrics::global().authz_result(decision.as_ref().map(|_| ()));
        if let Some(hidden) = grant.unless_shared() {
            // Another tenant's resource: only an authorizer's allow shares
            // it, and a refusal must look like "does not exist".
            if decision.is_err() || !authorization.can_share() {
                return Err(hidden);
            }
        }
        decision?;
        grant.claim().await?;
        Ok(grant)
    }
}
