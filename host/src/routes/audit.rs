//! The audit trail over HTTP: `GET /v1/audit` (superusers).

use std::time::UNIX_EPOCH;

use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::account::Superuser;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Query, int64_param};
use crate::store::{AuditEvent, AuditKind, AuditQuery, Store};

/// Most events one page may ask for.
const MAX_LIMIT: u64 = 500;

/// The filters, as the query string gives them.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// An event type (`login.failed`).
    #[serde(rename = "type")]
    #[param(value_type = Option<AuditKind>)]
    kind: Option<String>,
    /// A username, matched against actor and subject ignoring case.
    user: Option<String>,
    /// Unix seconds or an RFC 3339 time; inclusive.
    since: Option<String>,
    /// Unix seconds or an RFC 3339 time; inclusive.
    until: Option<String>,
    /// How many matching events to skip (newest first).
    #[serde(default)]
    offset: u64,
    /// How many events to return (1 to 500, default 50; outside that, clamped).
    limit: Option<u64>,
}

impl AuditFilter {
    /// The store query; 400 naming the parameter for a value that is wrong.
    pub fn to_query(&self) -> Result<AuditQuery, ApiError> {
        let kind = match self.kind.as_deref().filter(|k| !k.is_empty()) {
            None => None,
            Some(k) => Some(k.parse::<AuditKind>().map_err(|_| {
                let known: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::BadRequest(format!(
                    "`type`: unknown event type; one of {}",
                    known.join(", ")
                ))
            })?),
        };
        Ok(AuditQuery {
            kind,
            user: self
                .user
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
            since: time_param("since", self.since.as_deref())?,
            until: time_param("until", self.until.as_deref())?,
            offset: int64_param("offset", self.offset)?,
            limit: int64_param("limit", self.limit.unwrap_or(50))?.clamp(1, MAX_LIMIT),
        })
    }
}

/// Unix seconds, or an RFC 3339 time (`2026-01-31T12:00:00Z`); empty is none.
fn time_param(name: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Some(secs));
    }
    humantime::parse_rfc3339_weak(v)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| Some(d.as_secs()))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`{name}`: expected unix seconds or an RFC 3339 time"
            ))
        })
}

/// A page of events, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// This page's events.
    items: Vec<AuditEvent>,
    /// How many events match in all.
    total: u64,
    /// How many were skipped.
    offset: u64,
    /// The page size used.
    limit: u64,
}

/// Search the audit trail.
///
/// Superusers: events matching the filters, newest first, paged (`limit` at
/// most 500, default 50).
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "list_audit_events",
    tag = "audit",
    params(AuditFilter),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of events, newest first", body = AuditPage),
        (status = 400, description = "A filter is not valid (names the parameter)", body = ErrorBody),
        (status = 403, description = "The caller is not a superuser", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    _: Superuser,
    Query(filter): Query<AuditFilter>,
) -> Result<Json<AuditPage>, ApiError> {
    let query = filter.to_query()?;
    let page = state.accounts.store.list_audit(&query).await?;
    Ok(Json(AuditPage {
        items: page.items,
        total: page.total,
        offset: query.offset,
        limit: query.limit,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_unix_seconds_or_rfc3339() {
        assert_eq!(
            time_param("since", Some("1700000000")).unwrap(),
            Some(1_700_000_000)
        );
        assert_eq!(
            time_param("since", Some("2023-11-14T22:13:20Z")).unwrap(),
            Some(1_700_000_000)
        );
        assert_eq!(time_param("since", Some(" ")).unwrap(), None);
        let e = time_param("until", Some("yesterday")).unwrap_err();
        assert!(e.to_string().contains("until") || format!("{e:?}").contains("until"));
    }

    #[test]
    fn unknown_types_are_refused_and_limits_clamped() {
        let bad = AuditFilter {
            kind: Some("login".into()),
            ..Default::default()
        };
        assert!(bad.to_query().is_err());
        let big = AuditFilter {
            kind: Some("login.failed".into()),
            limit: Some(10_000),
            ..Default::default()
        };
        let q = big.to_query().unwrap();
        assert_eq!((q.kind, q.limit), (Some(AuditKind::LoginFailed), MAX_LIMIT));
        let past_int64 = AuditFilter {
            offset: 1 << 63,
            ..Default::default()
        };
        assert!(matches!(
            past_int64.to_query(),
            Err(ApiError::BadRequest(_))
        ));
    }
}
