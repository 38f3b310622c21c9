//! # rbac — role-based access control for agentflow
//!
//! An [`Authorizer`] that decides from a table mapping each role to the
//! resources it may touch and the actions it may perform on them.
//!
//! ## Config
//!
//! ```json
//! {
//!   "roles": {
//!     "admin": {"*": ["*"]},
//!     "user": {"graph": ["invoke", "stream"], "checkpointer": ["read"], "store": ["read"]},
//!     "guest": {"graph": ["invoke"]}
//!   }
//! }
//! ```
//!
//! `roles` maps role → resource → actions. Resources are `graph`,
//! `checkpointer`, `store`, `files` and `config`; actions are `invoke`,
//! `stream`, `read`, `write`, `delete`, `stop`, `fix` and `upload` (the
//! route table in the README says which route is which). `"*"` as a resource means every
//! resource, and `"*"` in an action list means every action.
//!
//! ## Answers
//!
//! - **Default deny**: a request is allowed only when at least one of the
//!   caller's roles grants the (resource, action) pair. Roles not in the
//!   table grant nothing; a caller without roles is always denied.
//! - A denial is a 403 whose detail names only the caller's own roles and
//!   the attempted access, e.g. `role(s) [guest] may not read checkpointer`;
//!   the table itself is never revealed.
//! - An allow carries a cache hint ([`ALLOW_TTL_MS`]): the decision depends
//!   only on the caller's roles, the access and this config, so the host may
//!   give the same caller the same answer for the same access without
//!   asking again. Changing the config reloads the plugin, which empties the
//!   host's cache; a caller whose roles change is a different caller to it.

use std::collections::BTreeMap;

use agentflow_plugin_sdk::{Access, Authorizer, AuthzOutcome, CacheHint, Identity, Request};
use serde::Deserialize;

/// The wildcard accepted as a resource name or an action.
pub const WILDCARD: &str = "*";

/// How long the host may reuse an allow (one minute).
pub const ALLOW_TTL_MS: u32 = 60_000;

/// Resource → actions granted on it.
pub type Grants = BTreeMap<String, Vec<String>>;

/// The plugin's `config` object in agentflow.json.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Role → resource → actions.
    pub roles: BTreeMap<String, Grants>,
}

/// The RBAC authorizer.
pub struct Rbac {
    roles: BTreeMap<String, Grants>,
}

impl Authorizer for Rbac {
    type Config = Config;

    /// Rejects blank resource or action names, which can only be typos.
    fn new(config: Config) -> Result<Self, String> {
        for (role, grants) in &config.roles {
            for (resource, actions) in grants {
                if resource.trim().is_empty() {
                    return Err(format!("roles.{role}: resource names must not be empty"));
                }
                if actions.iter().any(|a| a.trim().is_empty()) {
                    return Err(format!(
                        "roles.{role}.{resource}: actions must not be empty"
                    ));
                }
            }
        }
        Ok(Rbac {
            roles: config.roles,
        })
    }

    fn authorize(&self, who: &Identity, access: &Access, _req: &Request) -> AuthzOutcome {
        // Any one role granting the access is enough.
        if who.roles.iter().any(|role| self.role_allows(role, access)) {
            return AuthzOutcome::AllowCached(CacheHint::for_ms(ALLOW_TTL_MS));
        }
        let Access {
            resource, action, ..
        } = access;
        if who.roles.is_empty() {
            AuthzOutcome::deny(format!(
                "caller has no roles, so may not {action} {resource}"
            ))
        } else {
            let roles = who.roles.join(", ");
            AuthzOutcome::deny(format!("role(s) [{roles}] may not {action} {resource}"))
        }
    }
}

impl Rbac {
    /// Whether `role` grants `access`, honouring wildcards on both levels.
    fn role_allows(&self, role: &str, access: &Access) -> bool {
        let Some(grants) = self.roles.get(role) else {
            return false;
        };
        [access.resource.as_str(), WILDCARD]
            .iter()
            .filter_map(|resource| grants.get(*resource))
            .flatten()
            .any(|granted| granted == &access.action || granted == WILDCARD)
    }
}

agentflow_plugin_sdk::export_authorizer!(Rbac);

#[cfg(test)]
mod tests;
