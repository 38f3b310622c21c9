//! The `tenancy` section of agentflow.json:
//!
//! ```json
//! "tenancy": {"owner": "user_id", "bypass_roles": ["admin"], "agent_scopes_store": false,
//!             "share_via_authorizer": false}
//! ```
//!
//! Absent or `null`: tenancy is off. Every mistake names its key.

use serde::Deserialize;
use serde_json::Value;

/// What makes two callers the same tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantKey {
    /// The caller's `user_id`: each user owns their own resources.
    UserId,
    /// A claim of the caller (e.g. `org_id`): everyone with the same value
    /// shares. A caller without it is refused (403).
    Claim(String),
}

/// The validated `tenancy` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenancySettings {
    /// `tenancy.owner`: the tenant key.
    pub owner: TenantKey,
    /// `tenancy.bypass_roles`: callers with any of these roles see and
    /// manage every tenant's resources.
    pub bypass_roles: Vec<String>,
    /// `tenancy.agent_scopes_store`: the agent scopes its store by user, so
    /// `forget` (bulk delete by filter) only touches the caller's memories
    /// and may be forwarded for tenants. Off by default: then the gateway
    /// refuses it (403), since it cannot scope a bulk delete itself.
    pub agent_scopes_store: bool,
    /// `tenancy.share_via_authorizer`: another tenant's thread or memory is
    /// not refused outright but put to the authorizer, which sees its
    /// recorded owner and may allow it (sharing rules: team members, shared
    /// threads, read-only guests). A refusal still answers 404, so it never
    /// confirms the resource exists. Off by default: then only the owner
    /// (and bypass roles) may use a resource, whatever the authorizer says.
    pub share_via_authorizer: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenancy {
    owner: Option<Value>,
    #[serde(default)]
    bypass_roles: Option<Value>,
    #[serde(default)]
    agent_scopes_store: Option<Value>,
    #[serde(default)]
    share_via_authorizer: Option<Value>,
}

/// Parses `tenancy`; `Ok(None)` when it is absent or `null`. `Err` is
/// `(key, reason)`.
pub fn parse(v: &Value) -> Result<Option<TenancySettings>, (String, String)> {
    let key = |k: &str| format!("tenancy.{k}");
    match v {
        Value::Null => return Ok(None),
        Value::Object(_) => {}
        _ => {
            return Err((
                "tenancy".into(),
                "must be an object like {\"owner\": \"user_id\", \"bypass_roles\": [\"admin\"]}"
                    .into(),
            ));
        }
    }
    let raw: RawTenancy = serde_json::from_value(v.clone()).map_err(|e| {
        (
            "tenancy".to_owned(),
            format!(
                "{e} (known keys: owner, bypass_roles, agent_scopes_store, share_via_authorizer)"
            ),
        )
    })?;
    let owner = match raw.owner {
        None | Some(Value::Null) => {
            return Err((
                key("owner"),
                "is required: \"user_id\" (each user owns their threads and memories) or the name of a claim shared by a team, e.g. \"org_id\"".into(),
            ));
        }
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                return Err((key("owner"), "must not be blank".into()));
            }
            if s == "user_id" {
                TenantKey::UserId
            } else if s == "roles" {
                return Err((
                    key("owner"),
                    "cannot be `roles`: a role is not a tenant; name a claim with one value per team, e.g. \"org_id\"".into(),
                ));
            } else {
                TenantKey::Claim(s.to_owned())
            }
        }
        Some(_) => {
            return Err((
                key("owner"),
                "must be a string: \"user_id\" or a claim name".into(),
            ));
        }
    };
    let bypass_roles = match raw.bypass_roles {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
                _ => Err((
                    format!("tenancy.bypass_roles[{i}]"),
                    "must be a non-blank role name".into(),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err((
                key("bypass_roles"),
                "must be a list of role names, e.g. [\"admin\"]".into(),
            ));
        }
    };
    let flag = |name: &str, v: Option<Value>| match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err((key(name), "must be true or false".to_owned())),
    };
    Ok(Some(TenancySettings {
        owner,
        bypass_roles,
        agent_scopes_store: flag("agent_scopes_store", raw.agent_scopes_store)?,
        share_via_authorizer: flag("share_via_authorizer", raw.share_via_authorizer)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> (String, String) {
        parse(&v).unwrap_err()
    }

    #[test]
    fn parses_every_shape() {
        assert_eq!(parse(&Value::Null), Ok(None));
        let s = parse(&json!({"owner": "user_id"})).unwrap().unwrap();
        assert_eq!(s.owner, TenantKey::UserId);
        assert!(s.bypass_roles.is_empty() && !s.agent_scopes_store && !s.share_via_authorizer);
        let s = parse(
            &json!({"owner": "org_id", "bypass_roles": ["admin"], "agent_scopes_store": true,
                    "share_via_authorizer": true}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.owner, TenantKey::Claim("org_id".into()));
        assert_eq!(s.bypass_roles, vec!["admin"]);
        assert!(s.agent_scopes_store && s.share_via_authorizer);
    }

    #[test]
    fn mistakes_name_the_key() {
        assert_eq!(err(json!("user_id")).0, "tenancy");
        assert_eq!(err(json!({})).0, "tenancy.owner");
        assert_eq!(err(json!({"owner": 3})).0, "tenancy.owner");
        assert_eq!(err(json!({"owner": " "})).0, "tenancy.owner");
        assert_eq!(err(json!({"owner": "roles"})).0, "tenancy.owner");
        assert_eq!(
            err(json!({"owner": "user_id", "bypass_roles": "admin"})).0,
            "tenancy.bypass_roles"
        );
        assert_eq!(
            err(json!({"owner": "user_id", "bypass_roles": ["admin", ""]})).0,
            "tenancy.bypass_roles[1]"
        );
        assert_eq!(
            err(json!({"owner": "user_id", "agent_scopes_store": "yes"})).0,
            "tenancy.agent_scopes_store"
        );
        assert_eq!(
            err(json!({"owner": "user_id", "share_via_authorizer": 1})).0,
            "tenancy.share_via_authorizer"
        );
        let (k, reason) = err(json!({"owner": "user_id", "bypass": []}));
        assert_eq!(k, "tenancy");
        assert!(reason.contains("bypass"), "{reason}");
    }
}
