//! # access-echo-plugin — TEST FIXTURE, NOT AN EXAMPLE
//!
//! An [`Authorizer`] that shows the end-to-end tests exactly which access
//! the host asked about: it allows a request only when its resource id is
//! the configured `allow_id`, and refuses every other one with a 403 whose
//! detail is the access as JSON (`{"resource", "action", "resource_id",
//! "resource_owner", "caller_tenant"}`).
//! A request whose resource id is `fail_id` fails (an `Err`, as a plugin
//! whose backend is down would), so tests can see how failures are answered.
//! With `allow_unnamed`, a request naming no resource is allowed too.
//! It never sends a cache hint, so every request reaches it.
//!
//! ```json
//! {"allow_id": "t-ok", "fail_id": "t-broken", "allow_unnamed": false}
//! ```

use agentflow_plugin_sdk::{Access, Authorizer, AuthzOutcome, Identity, Request};
use serde::Deserialize;

/// The fixture's `config` object.
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    /// The one resource id that is allowed.
    #[serde(default)]
    pub allow_id: Option<String>,
    /// The one resource id whose check fails.
    #[serde(default)]
    pub fail_id: Option<String>,
    /// Also allow requests that name no resource (a WebSocket upgrade).
    #[serde(default)]
    pub allow_unnamed: bool,
}

/// The access-echo authorizer.
pub struct AccessEcho(Config);

/// The refusal detail: the access as JSON.
pub fn describe(access: &Access) -> String {
    serde_json::json!({
        "resource": access.resource,
        "action": access.action,
        "resource_id": access.resource_id,
        "resource_owner": access.resource_owner,
        "caller_tenant": access.caller_tenant,
    })
    .to_string()
}

impl Authorizer for AccessEcho {
    type Config = Config;

    fn new(config: Config) -> agentflow_plugin_sdk::Result<Self> {
        Ok(AccessEcho(config))
    }

    fn authorize(
        &self,
        _who: &Identity,
        access: &Access,
        _req: &Request,
    ) -> agentflow_plugin_sdk::Result<AuthzOutcome> {
        if access.resource_id.is_some() && access.resource_id == self.0.fail_id {
            return Err(agentflow_plugin_sdk::Error::msg(
                "access-echo: fail_id named",
            ));
        }
        Ok(
            if access.resource_id.is_none() && self.0.allow_unnamed
                || access.resource_id.is_some() && access.resource_id == self.0.allow_id
            {
                AuthzOutcome::Allow
            } else {
                AuthzOutcome::deny(describe(access))
            },
        )
    }
}

agentflow_plugin_sdk::export_authorizer!(AccessEcho);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_access_as_json() {
        let mut access = Access::new("graph", "invoke");
        access.resource_id = Some("t\"1".into());
        let v: serde_json::Value = serde_json::from_str(&describe(&access)).unwrap();
        assert_eq!(v["resource_id"], "t\"1");
        assert_eq!(v["action"], "invoke");
    }
}
