//! # legacy-v0-2-plugin — TEST FIXTURE, NOT AN EXAMPLE
//!
//! An authenticator written against contract 0.2.0 with the 0.2 SDK, so
//! the end-to-end tests can prove 0.2 plugins keep working next to 0.3
//! ones. `x-legacy-token: <config.token>` authenticates as `config.user`
//! with a `calls` claim counted in the plugin's kv store; any other value
//! is refused with the free status number 0.2 allows (`config.status`).

use agentflow_plugin_sdk::{Authenticator, AuthnOutcome, Identity, Refusal, Request, host};
use serde::Deserialize;

/// The fixture's `config` object.
#[derive(Deserialize)]
pub struct Config {
    /// The token that authenticates.
    pub token: String,
    /// Who it authenticates as.
    pub user: String,
    /// The status a wrong token is refused with.
    pub status: u16,
}

/// The legacy authenticator.
pub struct Legacy(Config);

impl Authenticator for Legacy {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Legacy(config))
    }

    fn authenticate(&self, req: &Request) -> AuthnOutcome {
        match req.header("x-legacy-token") {
            None => AuthnOutcome::NoCredentials,
            Some(t) if t == self.0.token => {
                let calls = host::kv_get("calls")
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                // A failed write only loses the count; the answer stands.
                let _ = host::kv_set("calls", calls.to_string().as_bytes());
                AuthnOutcome::authenticated(
                    Identity::new(&self.0.user)
                        .with_role("user")
                        .with_claim("contract", "0.2.0")
                        .with_claim("calls", calls),
                )
            }
            Some(_) => AuthnOutcome::Refused(Refusal {
                status: self.0.status,
                detail: "legacy token refused".into(),
            }),
        }
    }
}

agentflow_plugin_sdk::export_authenticator!(Legacy);
