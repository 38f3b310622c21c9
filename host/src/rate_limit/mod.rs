//! Rate limits per route class (`rate_limits` in agentflow.json): per
//! client address (before authentication, so credential guessing is
//! limited too) and per authenticated identity. A spent budget answers
//! `429` with `Retry-After` and the IETF `RateLimit` / `RateLimit-Policy`
//! headers (draft-ietf-httpapi-ratelimit-headers).
//!
//! The counting is behind [`Limiter`] so a shared backend (several
//! instances, one budget) can replace the in-process [`local`] one.

pub mod config;
pub mod local;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;

use crate::error::ApiError;
use crate::gateway::GatewayState;
use crate::login_throttle::ClientKey;
use crate::route_class::RouteClass;
use crate::routes::Caller;

pub use config::{ClassLimits, Limit, RateLimitConfig};

/// What a budget is kept per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The resolved client address (IPv6 grouped by /64).
    Address,
    /// The authenticated caller's user id.
    Identity,
}

impl Scope {
    /// The policy name in the `RateLimit` headers.
    fn name(self) -> &'static str {
        match self {
            Scope::Address => "per-address",
            Scope::Identity => "per-identity",
        }
    }
}

/// Counts requests against the configured limits.
pub trait Limiter: Send + Sync {
    /// Takes one request from `key`'s budget for `class` and `scope`;
    /// `Err(wait)` when it is spent, with how long until one is free.
    /// A class and scope without a limit always passes.
    fn check(&self, class: RouteClass, scope: Scope, key: &str) -> Result<(), Duration>;
}

/// The limits and the backend that counts them.
#[derive(Clone)]
pub struct RateLimits {
    /// The configured limits.
    pub config: RateLimitConfig,
    /// The counting backend.
    pub limiter: Arc<dyn Limiter>,
}

impl RateLimits {
    /// In-process limits for `config` (swept in the background when made
    /// inside a Tokio runtime).
    pub fn local(config: RateLimitConfig) -> RateLimits {
        let limiter = Arc::new(local::LocalLimiter::new(&config));
        if tokio::runtime::Handle::try_current().is_ok() {
            local::LocalLimiter::spawn_sweeper(Arc::downgrade(&limiter));
        }
        RateLimits { config, limiter }
    }

    #[allow(
        clippy::result_large_err,
        reason = "the Err is the 429 response itself, sent as is"
    )]
    fn check(&self, class: RouteClass, scope: Scope, key: &str) -> Result<(), Response> {
        let Some(limit) = self.config.limit(class, scope) else {
            return Ok(());
        };
        self.limiter
            .check(class, scope, key)
            .map_err(|wait| refusal(class, scope, limit, wait))
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::local(RateLimitConfig::default())
    }
}

/// Middleware (outside authentication): the per-address budget of the
/// request's route class.
pub async fn per_address(
    State(gateway): State<Arc<GatewayState>>,
    req: Request,
    next: Next,
) -> Response {
    let class = RouteClass::of(req.uri().path());
    if gateway
        .rate_limits
        .config
        .limit(class, Scope::Address)
        .is_some()
    {
        let key = ClientKey::of(crate::client_addr::of(&req));
        if let Err(refused) = gateway
            .rate_limits
            .check(class, Scope::Address, key.as_str())
        {
            return refused;
        }
    }
    next.run(req).await
}

/// Middleware (inside authentication): the per-identity budget of the
/// request's route class, keyed on the caller's user id.
pub async fn per_identity(
    State(gateway): State<Arc<GatewayState>>,
    req: Request,
    next: Next,
) -> Response {
    let class = RouteClass::of(req.uri().path());
    if gateway
        .rate_limits
        .config
        .limit(class, Scope::Identity)
        .is_some()
        && let Some(caller) = req.extensions().get::<Caller>()
        && let Err(refused) =
            gateway
                .rate_limits
                .check(class, Scope::Identity, &caller.identity.user_id)
    {
        return refused;
    }
    next.run(req).await
}

/// 429 with `Retry-After` (whole seconds, at least 1) and the draft's
/// structured `RateLimit-Policy` (quota `q` per window `w`) and `RateLimit`
/// (remaining `r`, seconds to reset `t`) headers.
fn refusal(class: RouteClass, scope: Scope, limit: Limit, wait: Duration) -> Response {
    let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let retry_after = retry_after.max(1);
    crate::metrics::global()
        .rate_limited
        .with_label_values(&[class.name(), scope.name()])
        .inc();
    let mut response = ApiError::TooManyRequests {
        detail: format!(
            "too many requests: the {} limit of {} requests per {} s {} is spent; retry in {retry_after} s",
            class.name(),
            limit.requests,
            limit.window_s,
            match scope {
                Scope::Address => "per client address",
                Scope::Identity => "per user",
            },
        ),
        retry_after,
    }
    .into_response();
    let policy = format!(
        "\"{}\";q={};w={}",
        scope.name(),
        limit.requests,
        limit.window_s
    );
    let state = format!("\"{}\";r=0;t={retry_after}", scope.name());
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&policy) {
        headers.insert("ratelimit-policy", v);
    }
    if let Ok(v) = HeaderValue::from_str(&state) {
        headers.insert("ratelimit", v);
    }
    response
}
