//! The stored audit trail: one [`AuditEvent`] per security-relevant thing that
//! happened (a login, a user change, a refusal, a plugin reload), the filter
//! a listing takes ([`AuditQuery`]) and the event kinds ([`AuditKind`]).
//!
//! Events never hold a secret: the `audit` module builds them from names and
//! ids only, and `details` carries small facts (a reason class, the fields a
//! change touched), never a password, key, token or variable value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What happened. Serialized as the dotted names below (`login.failed`), which
/// are also what `GET /v1/audit?type=` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum AuditKind {
    /// A password login succeeded.
    #[serde(rename = "login.succeeded")]
    LoginSucceeded,
    /// A password login failed; `details.reason` gives the class.
    #[serde(rename = "login.failed")]
    LoginFailed,
    /// A login was refused because the account or address is locked out.
    #[serde(rename = "login.locked")]
    LoginLocked,
    /// A refresh token was exchanged for a new pair.
    #[serde(rename = "token.refreshed")]
    TokenRefreshed,
    /// A refresh token was presented twice: its family was revoked.
    #[serde(rename = "token.reuse_detected")]
    TokenReuseDetected,
    /// A session was ended (logout).
    #[serde(rename = "logout")]
    Logout,
    /// The auto-login endpoint handed out a session.
    #[serde(rename = "auto_login")]
    AutoLogin,
    /// A user was created.
    #[serde(rename = "user.created")]
    UserCreated,
    /// A user was changed; `details.changed` lists the fields.
    #[serde(rename = "user.changed")]
    UserChanged,
    /// A user was deleted.
    #[serde(rename = "user.deleted")]
    UserDeleted,
    /// An API key was created.
    #[serde(rename = "api_key.created")]
    ApiKeyCreated,
    /// An API key was revoked.
    #[serde(rename = "api_key.revoked")]
    ApiKeyRevoked,
    /// An API key authenticated a request for the first time.
    #[serde(rename = "api_key.first_used")]
    ApiKeyFirstUsed,
    /// A variable was created (its name is recorded, never its value).
    #[serde(rename = "variable.created")]
    VariableCreated,
    /// A variable was changed.
    #[serde(rename = "variable.changed")]
    VariableChanged,
    /// A variable was deleted.
    #[serde(rename = "variable.deleted")]
    VariableDeleted,
    /// The secret key that encrypts variables was rotated.
    #[serde(rename = "secret_key.rotated")]
    SecretKeyRotated,
    /// A request was refused by authorization (aggregated under a flood:
    /// `details.count`).
    #[serde(rename = "access.denied")]
    AccessDenied,
    /// A plugin was loaded at start.
    #[serde(rename = "plugin.loaded")]
    PluginLoaded,
    /// A plugin was replaced by a new build.
    #[serde(rename = "plugin.reloaded")]
    PluginReloaded,
    /// A new build of a plugin could not be loaded; the old one keeps serving.
    #[serde(rename = "plugin.reload_failed")]
    PluginReloadFailed,
    /// A plugin call failed and the request was refused (503).
    #[serde(rename = "plugin.failed_closed")]
    PluginFailedClosed,
    /// A changed `agentflow.json` was applied while running.
    #[serde(rename = "config.reloaded")]
    ConfigReloaded,
    /// A changed `agentflow.json` was refused; the running setup keeps
    /// serving (`details.error` says which key and why).
    #[serde(rename = "config.reload_failed")]
    ConfigReloadFailed,
}

impl AuditKind {
    /// Every kind, in the order above (for forms and docs).
    pub const ALL: [AuditKind; 24] = [
        AuditKind::LoginSucceeded,
        AuditKind::LoginFailed,
        AuditKind::LoginLocked,
        AuditKind::TokenRefreshed,
        AuditKind::TokenReuseDetected,
        AuditKind::Logout,
        AuditKind::AutoLogin,
        AuditKind::UserCreated,
        AuditKind::UserChanged,
        AuditKind::UserDeleted,
        AuditKind::ApiKeyCreated,
        AuditKind::ApiKeyRevoked,
        AuditKind::ApiKeyFirstUsed,
        AuditKind::VariableCreated,
        AuditKind::VariableChanged,
        AuditKind::VariableDeleted,
        AuditKind::SecretKeyRotated,
        AuditKind::AccessDenied,
        AuditKind::PluginLoaded,
        AuditKind::PluginReloaded,
        AuditKind::PluginReloadFailed,
        AuditKind::PluginFailedClosed,
        AuditKind::ConfigReloaded,
        AuditKind::ConfigReloadFailed,
    ];

    /// The dotted name (`login.failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::LoginSucceeded => "login.succeeded",
            AuditKind::LoginFailed => "login.failed",
            AuditKind::LoginLocked => "login.locked",
            AuditKind::TokenRefreshed => "token.refreshed",
            AuditKind::TokenReuseDetected => "token.reuse_detected",
            AuditKind::Logout => "logout",
            AuditKind::AutoLogin => "auto_login",
            AuditKind::UserCreated => "user.created",
            AuditKind::UserChanged => "user.changed",
            AuditKind::UserDeleted => "user.deleted",
            AuditKind::ApiKeyCreated => "api_key.created",
            AuditKind::ApiKeyRevoked => "api_key.revoked",
            AuditKind::ApiKeyFirstUsed => "api_key.first_used",
            AuditKind::VariableCreated => "variable.created",
            AuditKind::VariableChanged => "variable.changed",
            AuditKind::VariableDeleted => "variable.deleted",
            AuditKind::SecretKeyRotated => "secret_key.rotated",
            AuditKind::AccessDenied => "access.denied",
            AuditKind::PluginLoaded => "plugin.loaded",
            AuditKind::PluginReloaded => "plugin.reloaded",
            AuditKind::PluginReloadFailed => "plugin.reload_failed",
            AuditKind::PluginFailedClosed => "plugin.failed_closed",
            AuditKind::ConfigReloaded => "config.reloaded",
            AuditKind::ConfigReloadFailed => "config.reload_failed",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not one of [`AuditKind`]'s names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit event type")]
pub struct UnknownAuditKind;

impl FromStr for AuditKind {
    type Err = UnknownAuditKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(UnknownAuditKind)
    }
}

/// An event to record; the store gives it an id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewAuditEvent {
    /// When it happened, unix seconds.
    pub time: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: AuditKind,
    /// Who did it: a username, or `None` (anonymous, the server itself).
    pub actor: Option<String>,
    /// What it was done to: a username, a plugin slot, a key or variable name.
    pub subject: Option<String>,
    /// The client's address as the gateway resolved it, if a request caused it.
    pub client_ip: Option<String>,
    /// The request's id (`x-request-id`), if a request caused it.
    pub request_id: Option<String>,
    /// Small non-secret facts (reason class, changed field names, counts).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// 32 hex digits, assigned by the store; ids sort in recording order.
    pub id: String,
    /// The event.
    #[serde(flatten)]
    pub event: NewAuditEvent,
}

/// Which events a listing returns: every set field must match. Results are
/// newest first, `limit` of them after skipping `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events of this kind.
    pub kind: Option<AuditKind>,
    /// Only events whose actor or subject is this name, ignoring case.
    pub user: Option<String>,
    /// Only events at or after this time (unix seconds).
    pub since: Option<u64>,
    /// Only events at or before this time (unix seconds).
    pub until: Option<u64>,
    /// How many matching events to skip (newest first).
    pub offset: u64,
    /// How many to return at most.
    pub limit: u64,
}

impl Default for AuditQuery {
    fn default() -> Self {
        AuditQuery {
            kind: None,
            user: None,
            since: None,
            until: None,
            offset: 0,
            limit: 50,
        }
    }
}

impl AuditQuery {
    /// Whether `event` passes the kind, user and time filters.
    pub fn matches(&self, event: &NewAuditEvent) -> bool {
        let named = |who: &Option<String>, name: &str| {
            who.as_deref()
                .is_some_and(|who| who.to_lowercase() == name.to_lowercase())
        };
        self.kind.is_none_or(|k| k == event.kind)
            && self.since.is_none_or(|t| event.time >= t)
            && self.until.is_none_or(|t| event.time <= t)
            && self
                .user
                .as_deref()
                .is_none_or(|u| named(&event.actor, u) || named(&event.subject, u))
    }
}
