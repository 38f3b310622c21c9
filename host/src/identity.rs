//! The authenticated caller, whatever method proved who they are.

use serde::Serialize;
use serde_json::{Map, Value};

/// Who is calling: produced by an auth method, checked by the authorizer,
/// forwarded to the agent upstream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    /// Stable identifier of the caller.
    pub user_id: String,
    /// Roles used for authorization.
    pub roles: Vec<String>,
    /// Every other fact the auth method reported (JWT claims, plugin claims).
    pub claims: Map<String, Value>,
}

impl Identity {
    /// The identity as a JSON value (`user_id`, `roles`, `claims`).
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "user_id": self.user_id, "roles": self.roles, "claims": self.claims })
    }
}
