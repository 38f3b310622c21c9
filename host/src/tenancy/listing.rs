//! Listings answered with the tenant's resources only, keeping the agent's
//! envelope, with honest pagination:
//!
//! - `GET /v1/threads?offset&limit`: the gateway reads the agent's list
//!   from the start in pages of [`AGENT_PAGE`], keeps the tenant's threads,
//!   and applies the caller's `offset` / `limit` to those. A page is short
//!   only at the end of the tenant's threads. Cost grows with the threads
//!   before the requested page (bounded by [`MAX_AGENT_PAGES`]).
//! - memory `list` / `search`: the agent has no offset there, only a
//!   `limit`; the gateway asks for the agent's largest `limit`, keeps the
//!   tenant's memories (in the agent's order: relevance for search) and
//!   cuts to the caller's `limit`.

use std::collections::HashSet;

use axum::body::Body;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, Response};
use serde_json::Value;

use super::Tenancy;
use super::forward::{id_text, read_answer};
use crate::agent_request::{AgentBody, AgentRequest, MAX_JSON_BODY};
use crate::error::ApiError;
use crate::identity::Identity;
use crate::proxy::Upstream;
use crate::store::ResourceKind;

/// Threads asked of the agent per page: its own maximum page.
pub const AGENT_PAGE: usize = 1000;
/// Pages read at most for one listing (a million threads).
pub const MAX_AGENT_PAGES: usize = 1000;
/// The agent's default page of threads.
const DEFAULT_THREAD_LIMIT: usize = 100;
/// The agent's largest memory `list` limit.
const MAX_LIST_LIMIT: u64 = 1000;
/// The agent's largest memory `search` limit.
const MAX_SEARCH_LIMIT: u64 = 100;

/// The caller's query without `offset` / `limit` (pairs kept as sent),
/// and those two, checked the way the agent checks them.
fn page_query(query: Option<&str>) -> Result<(Vec<String>, usize, usize), ApiError> {
    let mut kept = Vec::new();
    let (mut offset, mut limit) = (0usize, DEFAULT_THREAD_LIMIT);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        match decode(key).as_str() {
            "offset" => {
                offset = decode(value)
                    .trim()
                    .parse()
                    .map_err(|_| ApiError::Unprocessable("offset must be an integer >= 0".into()))?
            }
            "limit" => {
                limit = decode(value)
                    .trim()
                    .parse()
                    .ok()
                    .filter(|l| *l > 0)
                    .ok_or_else(|| {
                        ApiError::Unprocessable("limit must be an integer > 0".into())
                    })?;
                limit = limit.min(AGENT_PAGE);
            }
            _ => kept.push(pair.to_owned()),
        }
    }
    Ok((kept, offset, limit))
}

/// Answers `GET /v1/threads` with the tenant's threads (see the module doc).
pub(super) async fn threads(
    tenancy: &Tenancy,
    tenant: &str,
    upstream: &Upstream,
    query: Option<String>,
    headers: &HeaderMap,
    who: Option<&Identity>,
    client_ip: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let (kept, offset, limit) = page_query(query.as_deref())?;
    let owned = tenancy.owned(ResourceKind::Thread, tenant).await?;
    let mut mine = Vec::new();
    let mut last = None;
    for page in 0..MAX_AGENT_PAGES {
        let mut query = kept.clone();
        query.push(format!("offset={}", page * AGENT_PAGE));
        query.push(format!("limit={AGENT_PAGE}"));
        let uri: http::Uri = format!("/v1/threads?{}", query.join("&"))
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("the query cannot be forwarded: {e}")))?;
        let request = AgentRequest::parse(&Method::GET, &uri)?;
        let answer = upstream.forward(request, headers, who, client_ip).await?;
        if !answer.status().is_success() {
            return Ok(answer);
        }
        let (parts, bytes) = read_answer(answer).await?;
        let mut json: Value = serde_json::from_slice(&bytes).map_err(|_| unexpected())?;
        let listed = json
            .pointer_mut("/data/threads")
            .and_then(Value::as_array_mut)
            .map(std::mem::take)
            .ok_or_else(unexpected)?;
        let full = listed.len() >= AGENT_PAGE;
        mine.extend(listed.into_iter().filter(|t| {
            t.get("thread_id")
                .and_then(id_text)
                .is_some_and(|id| owned.contains(&id))
        }));
        last = Some((parts, json));
        if !full || mine.len() >= offset + limit || mine.len() >= owned.len() {
            break;
        }
    }
    let (parts, mut json) = last.ok_or_else(unexpected)?;
    let page: Vec<Value> = mine.into_iter().skip(offset).take(limit).collect();
    json["data"]["threads"] = Value::Array(page);
    Ok(rebuilt(parts, &json))
}

/// Reads a memory list/search body and asks the agent for its largest
/// `limit` instead; returns the caller's limit to cut the answer to (`None`
/// when the body is not one the agent accepts: it is forwarded as sent and
/// the agent refuses it).
pub(super) async fn widen_memory_request(
    target: &mut AgentRequest,
    search: bool,
) -> Result<Option<usize>, ApiError> {
    let bytes = match target.take_body() {
        AgentBody::Inspected(bytes) => bytes,
        AgentBody::Streamed(body) => axum::body::to_bytes(body.into_inner(), MAX_JSON_BODY)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(MAX_JSON_BODY))?,
    };
    let (default, max) = if search {
        (10, MAX_SEARCH_LIMIT)
    } else {
        (100, MAX_LIST_LIMIT)
    };
    let parsed = if bytes.iter().all(u8::is_ascii_whitespace) {
        Some(Value::Object(Default::default()))
    } else {
        serde_json::from_slice::<Value>(&bytes).ok()
    };
    let Some(Value::Object(mut body)) = parsed else {
        target.replace_body(bytes);
        return Ok(None);
    };
    let limit = match body.get("limit") {
        None => default,
        Some(v) => match v.as_u64().filter(|l| (1..=max).contains(l)) {
            Some(l) => l,
            None => {
                target.replace_body(bytes);
                return Ok(None);
            }
        },
    };
    body.insert("limit".into(), Value::from(max));
    let widened = serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
    target.replace_body(widened.into());
    Ok(Some(limit as usize))
}

/// Keeps the tenant's memories in a list/search answer, cut to `limit`.
pub(super) async fn filter_memories(
    answer: Response<Body>,
    owned: &HashSet<String>,
    search: bool,
    limit: Option<usize>,
) -> Result<Response<Body>, ApiError> {
    if !answer.status().is_success() {
        return Ok(answer);
    }
    let (parts, bytes) = read_answer(answer).await?;
    let mut json: Value = serde_json::from_slice(&bytes).map_err(|_| unexpected())?;
    let pointer = if search {
        "/data/results"
    } else {
        "/data/memories"
    };
    let items = json
        .pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .ok_or_else(unexpected)?;
    items.retain(|m| {
        m.get("id")
            .and_then(id_text)
            .is_some_and(|id| owned.contains(&id))
    });
    if let Some(limit) = limit {
        items.truncate(limit);
    }
    Ok(rebuilt(parts, &json))
}

/// The agent's answer with a rewritten JSON body.
fn rebuilt(mut parts: http::response::Parts, json: &Value) -> Response<Body> {
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(json.to_string()))
}

/// A listing the gateway cannot filter is not relayed unfiltered (502).
fn unexpected() -> ApiError {
    tracing::warn!("tenancy: the agent's listing has an unexpected shape; refused");
    ApiError::UpstreamUnavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_query_takes_offset_and_limit_out() {
        let (kept, o, l) = page_query(Some("search=a%20b&offset=5&limit=2")).unwrap();
        assert_eq!((kept, o, l), (vec!["search=a%20b".to_owned()], 5, 2));
        let (kept, o, l) = page_query(None).unwrap();
        assert_eq!((kept.len(), o, l), (0, 0, DEFAULT_THREAD_LIMIT));
        assert_eq!(page_query(Some("%6Cimit=5000")).unwrap().2, AGENT_PAGE);
        assert!(matches!(
            page_query(Some("limit=0")),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(
            page_query(Some("offset=-1")),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(
            page_query(Some("limit=x")),
            Err(ApiError::Unprocessable(_))
        ));
    }
}
