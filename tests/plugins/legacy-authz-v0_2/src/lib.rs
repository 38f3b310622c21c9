//! # legacy-authz-v0-2-plugin — TEST FIXTURE, NOT AN EXAMPLE
//!
//! An authorizer written against contract 0.2.0 with the 0.2 SDK, so the
//! end-to-end tests can prove 0.2 authorizers keep working next to
//! tenancy, and that their allow shares nothing: contract 0.2 has no
//! resource owner, so such a plugin cannot tell another tenant's thread
//! from the caller's own. It allows every access except one naming
//! `config.deny_id`, which it refuses with a 403.
//!
//! ```json
//! {"deny_id": "t-denied"}
//! ```

use agentflow_plugin_sdk::{Access, Authorizer, AuthzOutcome, Identity, Refusal, Request};
use serde::Deserialize;

/// The fixture's `config` object.
#[derive(Deserialize)]
pub struct Config {
    /// The one resource id that is refused.
    pub deny_id: String,
}

/// The legacy authorizer.
pub struct LegacyAuthz(Config);

impl Authorizer for LegacyAuthz {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(LegacyAuthz(config))
    }

    fn authorize(&self, _who: &Identity, access: &Access, _req: &Request) -> AuthzOutcome {
        if access.resource_id.as_deref() == Some(self.0.deny_id.as_str()) {
            AuthzOutcome::Deny(Refusal {
                status: 403,
                detail: "legacy authorizer: denied id".into(),
            })
        } else {
            AuthzOutcome::Allow
        }
    }
}

agentflow_plugin_sdk::export_authorizer!(LegacyAuthz);
