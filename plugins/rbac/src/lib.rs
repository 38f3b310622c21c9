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
//! Two optional ownership rules use the facts the server records about the
//! resource (contract 0.3 `resource-owner`, filled when tenancy is on):
//!
//! ```json
//! {
//!   "roles": {"guest": {"graph": ["invoke"]}},
//!   "owner_actions": ["read", "write", "delete"],
//!   "sharing": {"claim": "shared_threads", "actions": ["read"], "bypass_roles": ["admin"]}
//! }
//! ```
//!
//! - `owner_actions`: the resource's recorded owner (the caller's tenant:
//!   their user id, or their team's claim value) may perform these actions
//!   on it, whatever their roles.
//! - `sharing`: a caller whose claim `claim` (a list of ids, e.g. from the
//!   JWT) contains the resource id may perform `actions` (default
//!   `["read"]`) on it: a guest reads a thread someone shared with them.
//!   It needs the server's `tenancy.share_via_authorizer` (otherwise the
//!   server refuses another tenant's resource before asking this plugin),
//!   and with it, role grants reach only the caller's own (and unowned)
//!   resources, except for `sharing.bypass_roles` (list the server's
//!   `tenancy.bypass_roles` there): the server now asks this plugin about
//!   every other tenant's resource, and a role that may read threads must
//!   not read everyone's.
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
//!   asking again (the host's cache key includes the resource id, its
//!   owner and the caller's claims, so the ownership rules cache safely).
//!   A change of this config in `agentflow.json` on a server that watches
//!   its config (`"plugins": {"watch": true}` or `--watch`) loads the
//!   plugin anew, with an empty cache, so no allow outlives the grant
//!   (without watching, the change needs a restart); a caller whose roles
//!   change is a different caller to it.

use std::collections::BTreeMap;

use agentflow_plugin_sdk::{
    Access, Authorizer, AuthzOutcome, CacheHint, Identity, Request, Result,
};
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
    /// Actions the resource's recorded owner may always perform on it.
    #[serde(default)]
    pub owner_actions: Vec<String>,
    /// Access to resources shared with the caller through a claim.
    #[serde(default)]
    pub sharing: Option<Sharing>,
}

/// Resources shared with a caller: the ids listed in one of its claims.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sharing {
    /// The claim holding the list of shared resource ids.
    pub claim: String,
    /// What a caller may do with a resource shared with them.
    #[serde(default = "read_only")]
    pub actions: Vec<String>,
    /// Roles whose grants reach every tenant's resources (list the
    /// server's `tenancy.bypass_roles` here). Everyone else's role grants
    /// reach only their own resources and unowned ones.
    #[serde(default)]
    pub bypass_roles: Vec<String>,
}

fn read_only() -> Vec<String> {
    vec!["read".to_owned()]
}

/// The RBAC authorizer.
pub struct Rbac {
    roles: BTreeMap<String, Grants>,
    owner_actions: Vec<String>,
    sharing: Option<Sharing>,
}

impl Authorizer for Rbac {
    type Config = Config;

    /// Rejects blank resource or action names, which can only be typos.
    fn new(config: Config) -> Result<Self> {
        for (role, grants) in &config.roles {
            for (resource, actions) in grants {
                if resource.trim().is_empty() {
                    return Err(format!("roles.{role}: resource names must not be empty").into());
                }
                if actions.iter().any(|a| a.trim().is_empty()) {
                    return Err(
                        format!("roles.{role}.{resource}: actions must not be empty").into(),
                    );
                }
            }
        }
        if config
            .sharing
            .as_ref()
            .is_some_and(|s| s.claim.trim().is_empty())
        {
            return Err("sharing.claim must not be empty".into());
        }
        Ok(Rbac {
            roles: config.roles,
            owner_actions: config.owner_actions,
            sharing: config.sharing,
        })
    }

    fn authorize(&self, who: &Identity, access: &Access, _req: &Request) -> Result<AuthzOutcome> {
        // Any one role granting the access is enough; so is owning the
        // resource, or having it shared with you, for the actions allowed.
        let by_role =
            |role: &String| self.role_allows(role, access) && self.role_reaches(role, who, access);
        if who.roles.iter().any(by_role)
            || self.owner_allows(who, access)
            || self.sharing_allows(who, access)
        {
            return Ok(AuthzOutcome::AllowCached(CacheHint::for_ms(ALLOW_TTL_MS)));
        }
        let Access {
            resource, action, ..
        } = access;
        Ok(if who.roles.is_empty() {
            AuthzOutcome::deny(format!(
                "caller has no roles, so may not {action} {resource}"
            ))
        } else {
            let roles = who.roles.join(", ");
            AuthzOutcome::deny(format!("role(s) [{roles}] may not {action} {resource}"))
        })
    }
}

impl Rbac {
    /// Whether the caller is the resource's recorded owner and owners may
    /// perform this action.
    fn owner_allows(&self, who: &Identity, access: &Access) -> bool {
        // The owner is a tenant key: the user id, or a team claim's value.
        let caller = access.caller_tenant.as_deref().unwrap_or(&who.user_id);
        access.resource_owner.as_deref() == Some(caller)
            && grants(&self.owner_actions, &access.action)
    }

    /// Whether a role's grants reach this resource. Without `sharing`, the
    /// server's tenancy already refused every other tenant's resource, so
    /// they reach everything the server lets through. With `sharing` (the
    /// server's `tenancy.share_via_authorizer`), another tenant's resource
    /// reaches this plugin too: then only the sharing rule and
    /// `sharing.bypass_roles` may allow it, or every `user` who may read
    /// their own threads could read everyone's.
    fn role_reaches(&self, role: &str, who: &Identity, access: &Access) -> bool {
        let Some(sharing) = &self.sharing else {
            return true;
        };
        let caller = access.caller_tenant.as_deref().unwrap_or(&who.user_id);
        match access.resource_owner.as_deref() {
            Some(owner) if owner != caller => sharing.bypass_roles.iter().any(|r| r == role),
            _ => true,
        }
    }

    /// Whether the resource is listed in the caller's sharing claim and
    /// shared resources allow this action.
    fn sharing_allows(&self, who: &Identity, access: &Access) -> bool {
        let (Some(sharing), Some(id)) = (&self.sharing, &access.resource_id) else {
            return false;
        };
        let shared = who
            .claims
            .get(&sharing.claim)
            .and_then(|c| c.as_array())
            .is_some_and(|ids| ids.iter().any(|v| v.as_str() == Some(id.as_str())));
        shared && grants(&sharing.actions, &access.action)
    }

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

/// Whether an action list grants `action` (`"*"` grants every action).
fn grants(actions: &[String], action: &str) -> bool {
    actions.iter().any(|a| a == action || a == WILDCARD)
}

agentflow_plugin_sdk::export_authorizer!(Rbac);

#[cfg(test)]
mod tests;
