//! WebAssembly auth plugins: compiling, sandboxing and calling them.
//!
//! The rest of the server sees only the types in this file and
//! [`Plugin`]/[`PluginRuntime`]; wasmtime stays inside this module.

mod bindings;
mod compile_cache;
mod crate_build;
mod error;
pub mod inspect;
pub mod kv;
mod log_limit;
mod outbound;
mod outcome_cache;
mod plugin;
pub mod latency;
pub mod reload;
mod runtime;
mod state;

pub use error::{CallFailure, PluginError};
pub use kv::KvStore;
pub use outbound::AllowList;
pub use plugin::{Plugin, PluginStatus, Reloaded};
pub use runtime::PluginRuntime;

use crate::config::{Config, Env};
use crate::identity::Identity;

/// Where the values of granted secrets come from. The environment (real
/// variables over the `env` file) is the default; an encrypted secret store
/// plugs in here through [`PluginRuntime::with_secrets`].
pub trait SecretSource: Send + Sync {
    /// The value of secret `name`, if it is set.
    fn secret(&self, name: &str) -> Option<String>;
}

impl SecretSource for Env {
    fn secret(&self, name: &str) -> Option<String> {
        self.get(name)
    }
}

/// Opens the plugins' key-value storage under the data dir when the config
/// names any plugin (see [`kv`] for where it lives).
pub fn open_storage(cfg: &Config) -> Result<Option<KvStore>, PluginError> {
    if cfg.plugins().next().is_none() {
        return Ok(None);
    }
    let dir = crate::config::data_dir(&cfg.env, &cfg.dir());
    KvStore::open(&dir).map(Some).map_err(PluginError::Storage)
}

/// The version of the `agentflow:auth` WIT package this server speaks.
pub const WIT_VERSION: &str = "0.2.0";

/// Which interface a plugin must export for the place it is used in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// An entry of `auth`: exports `agentflow:auth/authenticate`.
    Authenticator,
    /// The `authorization` plugin: exports `agentflow:auth/authorize`.
    Authorizer,
}

impl Slot {
    /// The WIT export the slot needs.
    pub fn export(self) -> &'static str {
        match self {
            Slot::Authenticator => "agentflow:auth/authenticate@0.2.0",
            Slot::Authorizer => "agentflow:auth/authorize@0.2.0",
        }
    }

    /// The function called in that export.
    pub fn function(self) -> &'static str {
        match self {
            Slot::Authenticator => "authenticate",
            Slot::Authorizer => "authorize",
        }
    }
}

/// The request as plugins see it (built once per request, shared by every
/// plugin in the chain).
#[derive(Debug, Clone)]
pub struct PluginRequest(pub(crate) bindings::wit::Request);

impl PluginRequest {
    /// Builds the plugin view of a request; header names must be lower-case.
    pub fn new(
        method: String,
        path: String,
        query: String,
        headers: Vec<(String, String)>,
        client_ip: Option<String>,
    ) -> Self {
        PluginRequest(bindings::wit::Request {
            method,
            path,
            query,
            headers,
            client_ip,
        })
    }

    /// The value of the first header called `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Permission to reuse an authentication answer for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHint {
    /// How long the answer stays valid, in milliseconds.
    pub ttl_ms: u32,
    /// Lower-case header names the answer depends on.
    pub vary: Vec<String>,
}

/// What an authenticator plugin concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthnOutcome {
    /// Valid credentials.
    Authenticated {
        /// The caller.
        who: Identity,
        /// Optional permission to reuse the answer.
        cache: Option<CacheHint>,
    },
    /// No credentials the plugin understands.
    NoCredentials,
    /// Credentials refused, with the status (401/403/429) and the reason.
    Refused {
        /// HTTP status to answer with.
        status: u16,
        /// Reason shown to the client.
        detail: String,
    },
}

/// The operation being authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `graph`, `checkpointer`, `store`, `files` or `config`.
    pub resource: &'static str,
    /// The action on it.
    pub action: &'static str,
    /// The thread, memory or file id the request names (path or body),
    /// decoded once.
    pub resource_id: Option<String>,
    /// The resource's recorded owner (tenancy), if any.
    pub owner: Option<String>,
    /// The caller's tenant key (tenancy), if tenancy is on.
    pub tenant: Option<String>,
}

/// What an authorizer plugin concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthzOutcome {
    /// Let the request through.
    Allow,
    /// Refuse it.
    Deny {
        /// HTTP status to answer with (403 unless the plugin said 401/429).
        status: u16,
        /// Reason shown to the client.
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_version_matches_the_wit_package() {
        let wit = include_str!("../../../wit/agentflow-auth.wit");
        assert!(
            wit.contains(&format!("package agentflow:auth@{WIT_VERSION};")),
            "WIT_VERSION is stale"
        );
        for slot in [Slot::Authenticator, Slot::Authorizer] {
            assert!(
                slot.export().ends_with(&format!("@{WIT_VERSION}")),
                "{}",
                slot.export()
            );
        }
    }
}
