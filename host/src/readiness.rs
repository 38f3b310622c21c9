//! `GET /ready`: whether this instance should get traffic (load balancers,
//! Kubernetes readiness probes). Ready when the store answers, every
//! configured plugin is loaded (the server only serves once they are) and
//! the agent answers; the answer is cached for a second so probes cannot
//! load the agent. `/ping` stays the liveness check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tokio::sync::Mutex;

use crate::accounts::Accounts;
use crate::store::{Store, StoreError};

/// How long an answer is reused.
const CACHE_FOR: Duration = Duration::from_secs(1);
/// How long the agent may take to answer the probe.
const AGENT_TIMEOUT: Duration = Duration::from_secs(1);

/// The readiness checks and their last answer.
pub struct Readiness {
    /// `{agent}/ping`, when an agent is configured.
    agent_ping: Option<String>,
    client: reqwest::Client,
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    /// Checks for an agent at `agent` (its base URL), if any.
    pub fn new(agent: Option<&str>) -> Readiness {
        let client = reqwest::Client::builder()
            .timeout(AGENT_TIMEOUT)
            .build()
            .expect("a client without TLS always builds");
        Readiness {
            agent_ping: agent.map(|a| format!("{}/ping", a.trim_end_matches('/'))),
            client,
            last: Mutex::new(None),
        }
    }

    /// Ok, or the first reason this instance is not ready (cached for
    /// [`CACHE_FOR`]; one probe runs at a time, others wait for it).
    pub async fn check(&self, accounts: &Accounts) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return answer.clone();
        }
        let answer = self.probe(accounts).await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    async fn probe(&self, accounts: &Accounts) -> Result<(), String> {
        match accounts.store.get_user("readiness-probe").await {
            Ok(_) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(format!("the store does not answer: {e}")),
        }
        if let Some(url) = &self.agent_ping {
            match self.client.get(url).send().await {
                Ok(r) if !r.status().is_server_error() => {}
                Ok(r) => return Err(format!("the agent answers {}", r.status().as_u16())),
                Err(e) if e.is_timeout() => {
                    return Err(format!(
                        "the agent did not answer within {} ms",
                        AGENT_TIMEOUT.as_millis()
                    ));
                }
                Err(_) => return Err("the agent is unreachable".into()),
            }
        }
        Ok(())
    }
}

/// A readiness answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ReadyAnswer {
    /// `ready`, `not ready`, or `loading` (the server is still starting).
    #[schema(example = "ready")]
    status: &'static str,
    /// Why not ready (absent when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// `not_ready` when not ready (absent when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
}

/// Readiness: should this instance get traffic?
///
/// The `/ready` handler: 200 `{"status": "ready"}` or 503
/// `{"status": "not ready", "detail": why}`.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    responses(
        (status = 200, description = "The store answers, plugins are loaded and the agent answers", body = ReadyAnswer),
        (status = 503, description = "Not ready (or still loading); `detail` says why", body = ReadyAnswer),
    ),
)]
pub async fn ready(State(state): State<crate::routes::AppState>) -> Response {
    let answer = state.gateway.readiness.check(&state.accounts).await;
    ready_response(answer)
}

/// The response for a readiness answer.
pub fn ready_response(answer: Result<(), String>) -> Response {
    match answer {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(ReadyAnswer {
                status: "ready",
                detail: None,
                code: None,
            }),
        )
            .into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(ReadyAnswer {
                status: "not ready",
                detail: Some(why),
                code: Some("not_ready"),
            }),
        )
            .into_response(),
    }
}

/// The `/ready` answer while the server is still starting.
pub fn loading_response() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(ReadyAnswer {
            status: "loading",
            detail: Some("the store and plugins are loading".into()),
            code: Some("not_ready"),
        }),
    )
        .into_response()
}

/// A readiness check with no agent (for defaults).
impl Default for Readiness {
    fn default() -> Self {
        Readiness::new(None)
    }
}

/// Shared handle.
pub type SharedReadiness = Arc<Readiness>;
