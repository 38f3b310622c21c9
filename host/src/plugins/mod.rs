//! WebAssembly auth plugins: compiling, sandboxing and calling them.
//!
//! The rest of the server sees only the types in this file and
//! [`Plugin`]/[`PluginRuntime`]; wasmtime stays inside this module.

mod compile_cache;
mod crate_build;
mod error;
pub mod inspect;
pub mod kv;
mod kv_pg;
pub mod latency;
mod log_limit;
mod outbound;
mod outcome_cache;
mod plugin;
pub mod reload;
mod runtime;
mod state;
mod v0_2;
mod v0_3;

pub use crate_build::{BuildProfile, WATCH_PROFILE};
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

/// The component at `path`: the file itself, or what cargo builds from the
/// crate folder it names (for the developer tools, which take either; they
/// build with the fast watch profile, since they run in the edit loop).
pub fn component_path(path: &std::path::Path) -> Result<std::path::PathBuf, String> {
    if crate_build::is_crate(path) {
        crate_build::build(path, BuildProfile::Watch)
    } else {
        Ok(path.to_path_buf())
    }
}

/// Opens the plugins' key-value storage when the config names any plugin:
/// in the PostgreSQL database if one is configured, else under the data dir
/// (see [`kv`]).
pub fn open_storage(cfg: &Config) -> Result<Option<KvStore>, PluginError> {
    if cfg.plugins().next().is_none() {
        return Ok(None);
    }
    if let Some(db) = &cfg.database {
        return KvStore::postgres(db)
            .map(Some)
            .map_err(PluginError::Storage);
    }
    let dir = crate::config::data_dir(&cfg.env, &cfg.dir());
    KvStore::open(&dir).map(Some).map_err(PluginError::Storage)
}

/// The newest version of the `agentflow:auth` WIT package this server
/// speaks; components built for it get every feature.
pub const WIT_VERSION: &str = "0.3.0";

/// Every contract version this server loads, newest first. The 0.2 ones are
/// converted in one place, [`v0_2`].
pub const WIT_VERSIONS: [&str; 2] = ["0.3.0", "0.2.0"];

/// Which interface a plugin must export for the place it is used in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// An entry of `auth`: exports `agentflow:auth/authenticate`.
    Authenticator,
    /// The `authorization` plugin: exports `agentflow:auth/authorize`.
    Authorizer,
}

impl Slot {
    /// The WIT export the slot needs, in the newest contract version.
    pub fn export(self) -> &'static str {
        match self {
            Slot::Authenticator => "agentflow:auth/authenticate@0.3.0",
            Slot::Authorizer => "agentflow:auth/authorize@0.3.0",
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
/// plugin in the chain); each contract version's module turns it into its
/// own WIT record.
#[derive(Debug, Clone)]
pub struct PluginRequest(pub(crate) RequestView);

/// The fields of a [`PluginRequest`].
#[derive(Debug, Clone)]
pub(crate) struct RequestView {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub client_ip: Option<String>,
    /// The body as far as it was read for plugins that want it.
    pub body: Option<BufferedBody>,
}

/// The start of a request body, read for plugins whose manifest asks for
/// it, up to the largest cap an operator gave any of them.
#[derive(Debug, Clone)]
pub struct BufferedBody {
    /// The bytes read.
    pub bytes: bytes::Bytes,
    /// Whether `bytes` is the whole body (else it was longer than the cap).
    pub complete: bool,
}

impl PluginRequest {
    /// Builds the plugin view of a request; header names must be lower-case.
    pub fn new(
        method: String,
        path: String,
        query: String,
        headers: Vec<(String, String)>,
        client_ip: Option<String>,
    ) -> Self {
        PluginRequest(RequestView {
            method,
            path,
            query,
            headers,
            client_ip,
            body: None,
        })
    }

    /// Attaches the body read for plugins that asked for it.
    pub fn with_body(mut self, body: BufferedBody) -> Self {
        self.0.body = Some(body);
        self
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

/// Why a plugin refused a request. It becomes the client's answer as an
/// [`ApiError`](crate::error::ApiError), whose `status` is the one place a
/// refusal gets its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: missing or unacceptable credentials.
    Unauthenticated(String),
    /// 403: a known caller who may not do this.
    Forbidden(String),
    /// 429 with `Retry-After`.
    RateLimited {
        /// Seconds to wait (at least 1).
        retry_after_s: u32,
        /// Reason shown to the client.
        detail: String,
    },
}

impl Refusal {
    /// The HTTP status the client gets for this refusal (for reports such
    /// as `agentflow plugin call`), taken from the answer itself.
    pub fn status(&self) -> u16 {
        crate::error::ApiError::from(self.clone()).status().as_u16()
    }

    /// The reason shown to the client.
    pub fn detail(&self) -> &str {
        match self {
            Refusal::Unauthenticated(d) | Refusal::Forbidden(d) => d,
            Refusal::RateLimited { detail, .. } => detail,
        }
    }
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
    /// Credentials refused.
    Refused(Refusal),
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
    Deny(Refusal),
}

/// What a plugin declared it needs (contract 0.3 `init`); empty for 0.2
/// plugins, which declare nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Manifest {
    /// Request headers it reads credentials from (never forwarded).
    pub credential_headers: Vec<String>,
    /// `host:port` entries it calls.
    pub outbound_hosts: Vec<String>,
    /// Secret names it reads.
    pub secrets: Vec<String>,
    /// Whether it wants the request body.
    pub wants_body: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_version_matches_the_wit_package() {
        let wit = include_str!("../../../plugin-sdk/wit/v0.3/agentflow-auth.wit");
        assert!(
            wit.contains(&format!("package agentflow:auth@{WIT_VERSION};")),
            "WIT_VERSION is stale"
        );
        let old = include_str!("../../../plugin-sdk/wit/v0.2/agentflow-auth.wit");
        assert!(old.contains(&format!("package agentflow:auth@{};", WIT_VERSIONS[1])));
        for slot in [Slot::Authenticator, Slot::Authorizer] {
            assert!(
                slot.export().ends_with(&format!("@{WIT_VERSION}")),
                "{}",
                slot.export()
            );
        }
    }
}
