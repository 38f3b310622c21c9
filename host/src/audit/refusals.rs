//! Audit entries for refused agent requests: an authorization denial
//! (`access.denied`) or a plugin that failed so the request failed closed
//! (`plugin.failed_closed`). Both can flood, so both are aggregated per
//! caller and route.

use super::{Entry, FloodKey};
use crate::error::ApiError;
use crate::identity::Identity;
use crate::plugins::PluginError;
use crate::store::AuditKind;

/// Where a refused request was going: method and canonical path.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path (canonical when the request line was validated).
    pub path: &'a str,
}

/// How the trail names a caller: their username claim, else their id.
pub fn caller_name(who: &Identity) -> String {
    who.claims
        .get("username")
        .and_then(|v| v.as_str())
        .unwrap_or(&who.user_id)
        .to_owned()
}

/// The entry (and its flood key) for a request by `who` to `route` that was
/// refused with `error`, when the refusal is an authorization denial or a
/// fail-closed plugin; other errors (bad request, upstream down) are not
/// audit events. Built before any await: `ApiError` is not `Sync`.
pub fn refusal(
    who: Option<&Identity>,
    client_ip: Option<String>,
    route: Route<'_>,
    error: &ApiError,
) -> Option<(Entry, FloodKey)> {
    {
        let caller = who.map(caller_name);
        let (kind, mut entry) = match error {
            ApiError::Forbidden(_) => (
                AuditKind::AccessDenied,
                Entry::new(AuditKind::AccessDenied).detail("status", 403),
            ),
            ApiError::Plugin(PluginError::Call { plugin, export, .. }) => (
                AuditKind::PluginFailedClosed,
                Entry::new(AuditKind::PluginFailedClosed)
                    .subject(plugin.clone())
                    .detail("export", *export),
            ),
            ApiError::Plugin(_) => (
                AuditKind::PluginFailedClosed,
                Entry::new(AuditKind::PluginFailedClosed),
            ),
            _ => return None,
        };
        if let Some(name) = &caller {
            entry = entry.actor(name.clone());
        }
        let place = format!("{} {}", route.method, route.path);
        let by = caller.as_deref().or(client_ip.as_deref()).unwrap_or("-");
        let key = FloodKey::new(kind, by, &place);
        let entry = entry
            .client(client_ip)
            .detail("method", route.method)
            .detail("path", route.path);
        Some((entry, key))
    }
}
