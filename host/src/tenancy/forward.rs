//! The [`Grant`] a tenancy check yields, and forwarding under it: the claim
//! made once the request is allowed, and what is done with the agent's
//! answer (claims read from it, listings filtered, releases on delete).

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use http::{HeaderMap, Response};
use serde_json::Value;

use super::{Tenancy, frames, listing, not_found};
use crate::agent_request::AgentRequest;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::pipeline::Authorization;
use crate::plugins::Access;
use crate::proxy::{FrameInspector, Upstream};
use crate::store::ResourceKind;

/// Largest agent answer read whole to find an id in it (invoke, memory
/// create, listings); larger ones fail closed (502).
pub(super) const MAX_INSPECTED_RESPONSE: usize = 64 << 20;

/// What is done with the agent's answer.
#[derive(Debug)]
enum After {
    /// Relayed as is.
    Relay,
    /// The invoke answer's `data.meta.thread_id` is claimed.
    ClaimInvokeThread,
    /// The first thread id in the streamed events is claimed as it passes.
    ClaimStreamThread,
    /// The create answer's `data.memory_id` is claimed.
    ClaimMemory,
    /// Released once the agent confirms the delete.
    Release(ResourceKind, String),
    /// `GET /v1/threads` answered with the tenant's threads only.
    FilterThreads,
    /// Memory list / search answered with the tenant's memories only.
    FilterMemories { search: bool },
    /// WebSocket run frames checked one by one.
    Frames,
}

/// The tenancy side of one tenant's request.
struct TenantGrant {
    tenancy: Arc<Tenancy>,
    tenant: String,
    bypass: bool,
    /// The named resource's recorded owner.
    owner: Option<String>,
    /// Claimed once the authorizer allowed the request, before forwarding.
    claim_first: Option<(ResourceKind, String)>,
    /// Another tenant's resource, put to the authorizer
    /// (`share_via_authorizer`): unless it allows, the answer is this 404.
    foreign: Option<(ResourceKind, String)>,
    after: After,
}

/// What a tenancy check allowed, and the work it leaves for forwarding.
/// [`Grant::open`] (tenancy off or nothing guarded) forwards as is.
pub struct Grant(Option<TenantGrant>);

impl Grant {
    /// Whether tenancy can only be kept if the gateway itself forwards this
    /// request: the caller is a tenant (no bypass role) and the route's
    /// thread id lives in the body, or the agent's answer or frames must be
    /// read (claims, filtered listings, WebSocket runs). Forward-auth sees
    /// neither body nor answer, so it must refuse these, not allow them
    /// unchecked.
    pub fn needs_the_proxy(&self, id_in_body: bool) -> bool {
        self.0.as_ref().is_some_and(|g| {
            !g.bypass && (id_in_body || !matches!(g.after, After::Relay | After::Release(..)))
        })
    }

    /// No tenancy work: forward as is.
    pub fn open() -> Grant {
        Grant(None)
    }

    pub(super) fn for_tenant(tenancy: Arc<Tenancy>, tenant: String, bypass: bool) -> Grant {
        Grant(Some(TenantGrant {
            tenancy,
            tenant,
            bypass,
            owner: None,
            claim_first: None,
            foreign: None,
            after: After::Relay,
        }))
    }

    fn set_after(&mut self, after: After) {
        if let Some(g) = &mut self.0 {
            g.after = after;
        }
    }

    /// The caller's tenant key, when tenancy guards this request.
    pub fn tenant(&self) -> Option<&str> {
        self.0.as_ref().map(|g| g.tenant.as_str())
    }

    /// The named resource's recorded owner, if any.
    pub fn owner(&self) -> Option<&str> {
        self.0.as_ref().and_then(|g| g.owner.as_deref())
    }

    pub(super) fn bypass(&self) -> bool {
        self.0.as_ref().is_some_and(|g| g.bypass)
    }

    pub(super) fn set_owner(&mut self, owner: String) {
        if let Some(g) = &mut self.0 {
            g.owner = Some(owner);
        }
    }

    /// Marks the named resource as another tenant's, left to the authorizer.
    pub(super) fn foreign(&mut self, kind: ResourceKind, id: String) {
        if let Some(g) = &mut self.0 {
            g.foreign = Some((kind, id));
        }
    }

    /// When the request names another tenant's resource that only the
    /// authorizer may share: the 404 to answer unless an authorizer allows
    /// it. Any refusal (or failure) becomes that 404, so a caller cannot
    /// tell another tenant's resource from one that does not exist.
    pub fn unless_shared(&self) -> Option<ApiError> {
        let (kind, id) = self.0.as_ref()?.foreign.as_ref()?;
        Some(not_found(*kind, id))
    }

    pub(super) fn claim_first(&mut self, kind: ResourceKind, id: String) {
        if let Some(g) = &mut self.0 {
            g.claim_first = Some((kind, id));
        }
    }

    pub(super) fn release_after(&mut self, kind: ResourceKind, id: String) {
        self.set_after(After::Release(kind, id));
    }

    pub(super) fn claim_new_run(&mut self, stream: bool) {
        self.set_after(if stream {
            After::ClaimStreamThread
        } else {
            After::ClaimInvokeThread
        });
    }

    pub(super) fn claim_new_memory(&mut self) {
        self.set_after(After::ClaimMemory);
    }

    pub(super) fn filter_threads(&mut self) {
        self.set_after(After::FilterThreads);
    }

    pub(super) fn filter_memories(&mut self, search: bool) {
        self.set_after(After::FilterMemories { search });
    }

    pub(super) fn inspect_frames(&mut self) {
        self.set_after(After::Frames);
    }

    /// The access the authorizer decides on: the request's, plus the
    /// resource's recorded owner and the caller's tenant key.
    pub fn access<'a>(&self, access: &'a Access) -> Cow<'a, Access> {
        if self.0.is_none() {
            return Cow::Borrowed(access);
        }
        let mut access = access.clone();
        access.owner = self.owner().map(str::to_owned);
        access.tenant = self.tenant().map(str::to_owned);
        Cow::Owned(access)
    }

    /// Makes the first-use claim (after the authorizer allowed the
    /// request): 404 when another tenant won the race to it.
    pub async fn claim(&mut self) -> Result<(), ApiError> {
        let Some(g) = &mut self.0 else {
            return Ok(());
        };
        let Some((kind, id)) = g.claim_first.take() else {
            return Ok(());
        };
        let owner = g.tenancy.claim(kind, &id, &g.tenant).await?;
        if owner != g.tenant && !g.bypass {
            return Err(not_found(kind, &id));
        }
        g.owner = Some(owner);
        Ok(())
    }

    /// What checks the run frames of a WebSocket this grant allowed
    /// (`live`: `/v1/graph/live`): the authorizer on every run naming a
    /// thread, tenancy when it is on, and the caller's `credential`.
    pub fn frame_inspector(
        &self,
        live: bool,
        who: Identity,
        authorization: Authorization,
        credential: frames::Credential,
    ) -> Arc<dyn FrameInspector> {
        let tenant = self
            .0
            .as_ref()
            .map(|g| frames::TenantFrames::new(g.tenancy.clone(), g.tenant.clone(), g.bypass));
        Arc::new(frames::RunFrames::new(
            live,
            who,
            authorization,
            tenant,
            credential,
        ))
    }

    /// Forwards `target` and applies what tenancy does with the answer.
    pub async fn forward(
        self,
        upstream: &Upstream,
        mut target: AgentRequest,
        headers: &HeaderMap,
        who: Option<&Identity>,
        client_ip: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let Some(g) = self.0 else {
            return upstream.forward(target, headers, who, client_ip).await;
        };
        match g.after {
            After::FilterThreads => {
                return listing::threads(
                    &g.tenancy,
                    &g.tenant,
                    upstream,
                    target.query().map(str::to_owned),
                    headers,
                    who,
                    client_ip,
                )
                .await;
            }
            After::FilterMemories { search } => {
                let limit = listing::widen_memory_request(&mut target, search).await?;
                let owned = g.tenancy.owned(ResourceKind::Memory, &g.tenant).await?;
                let answer = upstream.forward(target, headers, who, client_ip).await?;
                return listing::filter_memories(answer, &owned, search, limit).await;
            }
            _ => {}
        }
        let answer = upstream.forward(target, headers, who, client_ip).await?;
        if !answer.status().is_success() {
            return Ok(answer);
        }
        match g.after {
            After::Relay | After::Frames | After::FilterThreads | After::FilterMemories { .. } => {
                Ok(answer)
            }
            After::Release(kind, id) => {
                // The agent deleted it: a registry failure here only leaves
                // the owner recorded (it keeps the id), so the answer stands.
                if let Err(e) = g.tenancy.release(kind, &id).await {
                    tracing::warn!(error = %e, "tenancy: releasing a deleted resource failed");
                }
                Ok(answer)
            }
            After::ClaimInvokeThread => {
                claim_from_json(
                    &g,
                    answer,
                    ResourceKind::Thread,
                    &["data", "meta", "thread_id"],
                )
                .await
            }
            After::ClaimMemory => {
                claim_from_json(&g, answer, ResourceKind::Memory, &["data", "memory_id"]).await
            }
            After::ClaimStreamThread => Ok(claim_from_stream(g, answer)),
        }
    }
}

/// The whole body of an agent answer (bounded), with its head.
pub(super) async fn read_answer(
    answer: Response<Body>,
) -> Result<(http::response::Parts, Bytes), ApiError> {
    let (parts, body) = answer.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_INSPECTED_RESPONSE)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "tenancy: the agent's answer could not be read");
            ApiError::UpstreamUnavailable
        })?;
    Ok((parts, bytes))
}

/// An id as the agent writes it: a string, or an integer in decimal.
pub(super) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Claims the id at `path` of a JSON answer, then relays the answer. An
/// answer whose id another tenant owns is 404: it is not theirs to see.
async fn claim_from_json(
    g: &TenantGrant,
    answer: Response<Body>,
    kind: ResourceKind,
    path: &[&str],
) -> Result<Response<Body>, ApiError> {
    let (parts, bytes) = read_answer(answer).await?;
    let json: Option<Value> = serde_json::from_slice(&bytes).ok();
    let id = json
        .as_ref()
        .and_then(|j| path.iter().try_fold(j, |v, k| v.get(k)))
        .and_then(id_text);
    if let Some(id) = id {
        let owner = g.tenancy.claim(kind, &id, &g.tenant).await?;
        if owner != g.tenant && !g.bypass {
            return Err(not_found(kind, &id));
        }
    } else {
        tracing::warn!(?path, "tenancy: the agent's answer names no id to claim");
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// Relays a streamed run, claiming the first thread id its events carry as
/// it passes: each chunk goes on as soon as it arrives, held back only
/// while that one claim is made. Another tenant's id ends the stream.
fn claim_from_stream(g: TenantGrant, answer: Response<Body>) -> Response<Body> {
    let (parts, body) = answer.into_parts();
    let state = StreamClaim {
        grant: Some(g),
        line: Vec::new(),
    };
    let chunks = body.into_data_stream();
    let stream =
        futures_util::stream::unfold((chunks, state), |(mut chunks, mut state)| async move {
            let chunk = match chunks.next().await? {
                Ok(chunk) => chunk,
                Err(e) => return Some((Err(e), (chunks, state))),
            };
            match state.scan(&chunk).await {
                Ok(()) => Some((Ok(chunk), (chunks, state))),
                Err(e) => Some((Err(axum::Error::new(e)), (chunks, state))),
            }
        });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Longest event line searched for a thread id (run events are small; a
/// first line this long is relayed without a claim being found in it).
const MAX_SCANNED_LINE: usize = 1 << 20;

/// The claim a stream still owes: `grant` is `None` once made.
struct StreamClaim {
    grant: Option<TenantGrant>,
    line: Vec<u8>,
}

impl StreamClaim {
    /// Looks for the first thread id in the complete lines of `chunk`.
    async fn scan(&mut self, chunk: &[u8]) -> Result<(), String> {
        if self.grant.is_none() {
            return Ok(());
        }
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let line = std::mem::take(&mut self.line);
            if let Some(id) = event_thread_id(&line) {
                let g = self.grant.take().expect("checked above");
                let owner = g
                    .tenancy
                    .claim(ResourceKind::Thread, &id, &g.tenant)
                    .await
                    .map_err(|e| e.to_string())?;
                if owner != g.tenant && !g.bypass {
                    return Err(format!("thread {id:?} is not the caller's"));
                }
                return Ok(());
            }
        }
        if self.line.len() + rest.len() <= MAX_SCANNED_LINE {
            self.line.extend_from_slice(rest);
        } else {
            self.line.clear();
        }
        Ok(())
    }
}

/// The thread id of one event line: NDJSON (`{"thread_id": …}`) or SSE
/// (`data: {"threadId": …}`).
pub(super) fn event_thread_id(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?.trim();
    let text = text.strip_prefix("data:").unwrap_or(text).trim_start();
    if !text.starts_with('{') || !(text.contains("thread_id") || text.contains("threadId")) {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    v.get("thread_id")
        .or_else(|| v.get("threadId"))
        .and_then(id_text)
        .filter(|id| !id.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_give_their_thread_id() {
        assert_eq!(
            event_thread_id(br#"{"event":"updates","thread_id":"t1"}"#),
            Some("t1".into())
        );
        assert_eq!(
            event_thread_id(br#"data: {"type":"RUN_STARTED","threadId":"t2"}"#),
            Some("t2".into())
        );
        assert_eq!(
            event_thread_id(br#"{"event":"updates","thread_id":7}"#),
            Some("7".into())
        );
        assert_eq!(
            event_thread_id(br#"{"event":"updates","thread_id":""}"#),
            None
        );
        assert_eq!(event_thread_id(br#"{"event":"updates"}"#), None);
        assert_eq!(event_thread_id(b"event: x"), None);
        assert_eq!(event_thread_id(b"\xff{thread_id"), None);
    }
}
