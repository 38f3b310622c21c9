//! # agentflow plugin SDK
//!
//! Write authentication and authorization plugins for the agentflow server
//! in plain Rust. A plugin is a type implementing [`Authenticator`] or
//! [`Authorizer`] plus one export macro; build it with
//! `cargo build --target wasm32-wasip2 --release` and name the `.wasm` in
//! `agentflow.json`.
//!
//! The server runs every call in a fresh sandbox: your type is built from
//! its config (`new`) and then asked one question. Nothing survives between
//! calls except what you store with [`host::kv_set`].
//!
//! When the operator opts the plugin into `"reuse_instance": true`, a
//! sandbox serves many calls: `new` runs on its first call and the value is
//! kept for the next ones, and so is anything else your code leaves in
//! memory (statics, caches). Keep per-request data out of them.
//!
//! ## A complete authenticator
//!
//! ```no_run
//! use agentflow_plugin_sdk::{export_authenticator, Authenticator, AuthnOutcome, Identity, Request};
//! use serde::Deserialize;
//!
//! /// `"config": {"token": "...", "user": "..."}` in agentflow.json.
//! #[derive(Deserialize)]
//! struct Config {
//!     token: String,
//!     user: String,
//! }
//!
//! struct SharedToken(Config);
//!
//! impl Authenticator for SharedToken {
//!     type Config = Config;
//!
//!     fn new(config: Config) -> Result<Self, String> {
//!         Ok(SharedToken(config))
//!     }
//!
//!     fn authenticate(&self, req: &Request) -> AuthnOutcome {
//!         match req.header("x-token") {
//!             None => AuthnOutcome::NoCredentials,
//!             Some(t) if t == self.0.token => {
//!                 AuthnOutcome::authenticated(Identity::new(&self.0.user).with_role("user"))
//!             }
//!             Some(_) => AuthnOutcome::refused("invalid token"),
//!         }
//!     }
//! }
//!
//! export_authenticator!(SharedToken);
//! ```
//!
//! Your crate needs `crate-type = ["cdylib", "rlib"]` in `[lib]` (cdylib for the
//! `.wasm`, rlib so `cargo test` can run your unit tests natively).
#![deny(missing_docs)]

mod bindings;
pub mod host;
pub mod http;
mod outcome;
mod request;

pub use outcome::{Access, AuthnOutcome, AuthzOutcome, CacheHint, Identity, Refusal};
pub use request::Request;
pub use serde_json::{Map, Value};

/// Decides who sent a request. Export with [`export_authenticator!`].
pub trait Authenticator: Sized {
    /// The shape of this plugin's `config` in agentflow.json. Use
    /// `serde::de::IgnoredAny` when the plugin takes no config.
    type Config: serde::de::DeserializeOwned;

    /// Builds the plugin from its config; an `Err` fails the request closed
    /// (503) and is logged with the plugin's name.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Answers: authenticated, no credentials (try the next method), or
    /// refused.
    fn authenticate(&self, req: &Request) -> AuthnOutcome;
}

/// Decides whether an authenticated caller may do something. Export with
/// [`export_authorizer!`].
pub trait Authorizer: Sized {
    /// The shape of this plugin's `config` in agentflow.json.
    type Config: serde::de::DeserializeOwned;

    /// Builds the plugin from its config; an `Err` fails the request closed.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Allows or denies `access` for `who`.
    fn authorize(&self, who: &Identity, access: &Access, req: &Request) -> AuthzOutcome;
}

/// Exports a type implementing [`Authenticator`] as this component's
/// `authenticate` interface. Use once per plugin crate.
#[macro_export]
macro_rules! export_authenticator {
    ($plugin:ty) => {
        // Only the wasm build exports anything: the symbol names are not
        // valid for native linkers, and native builds exist for unit tests.
        #[cfg(target_family = "wasm")]
        const _: () = {
            struct __AgentflowAuthenticator;

            impl $crate::__private::authn::exports::agentflow::auth::authenticate::Guest
                for __AgentflowAuthenticator
            {
                fn authenticate(
                    req: $crate::__private::wit::Request,
                ) -> $crate::__private::wit::AuthnOutcome {
                    ::std::thread_local! {
                        static PLUGIN: ::core::cell::OnceCell<$plugin> = const { ::core::cell::OnceCell::new() };
                    }
                    PLUGIN.with(|plugin| $crate::__private::run_authenticate::<$plugin>(plugin, req))
                }
            }

            $crate::__private::authn::export!(
                __AgentflowAuthenticator with_types_in $crate::__private::authn
            );
        };
    };
}

/// Exports a type implementing [`Authorizer`] as this component's
/// `authorize` interface. Use once per plugin crate.
#[macro_export]
macro_rules! export_authorizer {
    ($plugin:ty) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            struct __AgentflowAuthorizer;

            impl $crate::__private::authz::exports::agentflow::auth::authorize::Guest
                for __AgentflowAuthorizer
            {
                fn authorize(
                    who: $crate::__private::wit::Identity,
                    what: $crate::__private::wit::Access,
                    req: $crate::__private::wit::Request,
                ) -> $crate::__private::wit::AuthzOutcome {
                    ::std::thread_local! {
                        static PLUGIN: ::core::cell::OnceCell<$plugin> = const { ::core::cell::OnceCell::new() };
                    }
                    PLUGIN.with(|plugin| $crate::__private::run_authorize::<$plugin>(plugin, who, what, req))
                }
            }

            $crate::__private::authz::export!(
                __AgentflowAuthorizer with_types_in $crate::__private::authz
            );
        };
    };
}

/// Glue used by the export macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    use core::cell::OnceCell;

    pub use crate::bindings::{authn, authz, wit};
    use crate::{Authenticator, Authorizer};

    /// Builds the plugin from the host's config, or reports why it cannot
    /// and traps so the host fails the request closed.
    fn build<P, C>(new: impl FnOnce(C) -> Result<P, String>) -> P
    where
        C: serde::de::DeserializeOwned,
    {
        let text = crate::host::config_json();
        let result = serde_json::from_str::<C>(&text)
            .map_err(|e| format!("invalid plugin config: {e}"))
            .and_then(new);
        match result {
            Ok(plugin) => plugin,
            Err(reason) => {
                crate::host::error(&reason);
                panic!("{reason}");
            }
        }
    }

    /// Runs one authentication for the export macro, building the plugin
    /// on the sandbox's first call.
    pub fn run_authenticate<P: Authenticator>(
        plugin: &OnceCell<P>,
        req: wit::Request,
    ) -> wit::AuthnOutcome {
        let plugin = plugin.get_or_init(|| build::<P, P::Config>(P::new));
        plugin.authenticate(&req.into()).into()
    }

    /// Runs one authorization for the export macro, building the plugin
    /// on the sandbox's first call.
    pub fn run_authorize<P: Authorizer>(
        plugin: &OnceCell<P>,
        who: wit::Identity,
        what: wit::Access,
        req: wit::Request,
    ) -> wit::AuthzOutcome {
        let plugin = plugin.get_or_init(|| build::<P, P::Config>(P::new));
        plugin
            .authorize(&who.into(), &what.into(), &req.into())
            .into()
    }
}
