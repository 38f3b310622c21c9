//! # agentflow plugin SDK
//!
//! Write authentication and authorization plugins for the agentflow server
//! in plain Rust. A plugin is a type implementing [`Authenticator`] or
//! [`Authorizer`] plus one export macro; build it with
//! `cargo build --target wasm32-wasip2 --release` and name the `.wasm` (or
//! the crate folder) in `agentflow.json`. The contract it speaks is
//! `agentflow:auth@0.3.0`, shipped in this crate's `wit/v0.3`.
//!
//! At load (and on every reload) the server builds your type from its
//! config (`new`) and asks for its [`Manifest`]: a config `new` refuses
//! stops the server with `auth[N].config: …` instead of failing every
//! request. Then every call runs in a fresh sandbox: your type is built
//! again from the same config and asked one question. Nothing survives
//! between calls except what you store with [`host::kv_set`] and friends.
//!
//! When the operator opts the plugin into `"reuse_instance": true`, a
//! sandbox serves many calls: `new` runs on its first call and the value is
//! kept for the next ones, and so is anything else your code leaves in
//! memory (statics, caches). Keep per-request data out of them.
//!
//! Errors: every method returns [`Result`]; use `?`. An `Err` from a call
//! is logged with the plugin's name and the request fails closed (503).
//!
//! ## A complete authenticator
//!
//! ```no_run
//! use agentflow_plugin_sdk::{
//!     export_authenticator, Authenticator, AuthnOutcome, Identity, Manifest, Request, Result,
//! };
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
//!     fn new(config: Config) -> Result<Self> {
//!         Ok(SharedToken(config))
//!     }
//!
//!     fn manifest(&self) -> Manifest {
//!         Manifest::new().credential_header("x-token")
//!     }
//!
//!     fn authenticate(&self, req: &Request) -> Result<AuthnOutcome> {
//!         Ok(match req.header("x-token") {
//!             None => AuthnOutcome::NoCredentials,
//!             Some(t) if t == self.0.token => {
//!                 AuthnOutcome::authenticated(Identity::new(&self.0.user).with_role("user"))
//!             }
//!             Some(_) => AuthnOutcome::refused("invalid token"),
//!         })
//!     }
//! }
//!
//! export_authenticator!(SharedToken);
//! ```
//!
//! Your crate needs `crate-type = ["cdylib", "rlib"]` in `[lib]` (cdylib for the
//! `.wasm`, rlib so `cargo test` can run your unit tests natively, where
//! [`host`] reaches the test host in [`testing`]).
#![deny(missing_docs)]

#[cfg(target_family = "wasm")]
mod bindings;
#[cfg(target_family = "wasm")]
mod convert;
mod error;
pub mod host;
pub mod http;
mod manifest;
mod outcome;
mod request;
#[cfg(not(target_family = "wasm"))]
pub mod testing;

pub use error::{Error, Result};
pub use manifest::Manifest;
pub use outcome::{Access, AuthnOutcome, AuthzOutcome, CacheHint, Identity, Refusal};
pub use request::{Body, Request};
pub use serde_json::{Map, Value};

/// Decides who sent a request. Export with [`export_authenticator!`].
pub trait Authenticator: Sized {
    /// The shape of this plugin's `config` in agentflow.json. Use
    /// `serde::de::IgnoredAny` when the plugin takes no config.
    type Config: serde::de::DeserializeOwned;

    /// Builds the plugin from its config. At load an `Err` stops the server
    /// (or keeps the last good version on reload), naming the config.
    fn new(config: Self::Config) -> Result<Self>;

    /// What the plugin needs (credential headers, hosts, secrets, the
    /// body); checked against the operator's grants at load. Asks for
    /// nothing by default.
    fn manifest(&self) -> Manifest {
        Manifest::default()
    }

    /// Answers: authenticated, no credentials (try the next method), or
    /// refused. An `Err` fails the request closed (503).
    fn authenticate(&self, req: &Request) -> Result<AuthnOutcome>;
}

/// Decides whether an authenticated caller may do something. Export with
/// [`export_authorizer!`].
pub trait Authorizer: Sized {
    /// The shape of this plugin's `config` in agentflow.json.
    type Config: serde::de::DeserializeOwned;

    /// Builds the plugin from its config (see [`Authenticator::new`]).
    fn new(config: Self::Config) -> Result<Self>;

    /// What the plugin needs; asks for nothing by default.
    fn manifest(&self) -> Manifest {
        Manifest::default()
    }

    /// Allows or denies `access` for `who`. An `Err` fails the request
    /// closed (503).
    fn authorize(&self, who: &Identity, access: &Access, req: &Request) -> Result<AuthzOutcome>;
}

/// Writes a formatted debug line into the server's log: `debug!("{x}")`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::host::log($crate::host::Level::Debug, &::std::format!($($arg)*)) };
}

/// Writes a formatted info line into the server's log: `info!("{x}")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::host::log($crate::host::Level::Info, &::std::format!($($arg)*)) };
}

/// Writes a formatted warning into the server's log: `warn!("{x}")`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::host::log($crate::host::Level::Warn, &::std::format!($($arg)*)) };
}

/// Writes a formatted error into the server's log: `error!("{x}")`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::host::log($crate::host::Level::Error, &::std::format!($($arg)*)) };
}

/// Exports a type implementing [`Authenticator`] as this component's
/// `authenticate` interface (with its `init`). Use once per plugin crate.
///
/// The rule for `#[cfg]`: the macro exports only in wasm builds (the
/// symbol names are not valid for native linkers, and native builds exist
/// for unit tests), so call it unconditionally.
#[macro_export]
macro_rules! export_authenticator {
    ($plugin:ty) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            struct __AgentflowAuthenticator;

            impl $crate::__private::authn::exports::agentflow::auth::authenticate::Guest
                for __AgentflowAuthenticator
            {
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<$crate::__private::wit::Manifest, ::std::string::String>
                {
                    $crate::__private::init::<$plugin, _>(&config, <$plugin as $crate::Authenticator>::new, <$plugin as $crate::Authenticator>::manifest)
                }

                fn authenticate(
                    req: $crate::__private::wit::Request,
                ) -> $crate::__private::wit::AuthnOutcome {
                    ::std::thread_local! {
                        static PLUGIN: ::core::cell::OnceCell<::core::result::Result<$plugin, ::std::string::String>> = const { ::core::cell::OnceCell::new() };
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
/// `authorize` interface (with its `init`). Use once per plugin crate, unconditionally
/// (see [`export_authenticator!`]).
#[macro_export]
macro_rules! export_authorizer {
    ($plugin:ty) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            struct __AgentflowAuthorizer;

            impl $crate::__private::authz::exports::agentflow::auth::authorize::Guest
                for __AgentflowAuthorizer
            {
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<$crate::__private::wit::Manifest, ::std::string::String>
                {
                    $crate::__private::init::<$plugin, _>(&config, <$plugin as $crate::Authorizer>::new, <$plugin as $crate::Authorizer>::manifest)
                }

                fn authorize(
                    who: $crate::__private::wit::Identity,
                    what: $crate::__private::wit::Access,
                    req: $crate::__private::wit::Request,
                ) -> $crate::__private::wit::AuthzOutcome {
                    ::std::thread_local! {
                        static PLUGIN: ::core::cell::OnceCell<::core::result::Result<$plugin, ::std::string::String>> = const { ::core::cell::OnceCell::new() };
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
#[cfg(target_family = "wasm")]
pub mod __private {
    use core::cell::OnceCell;

    pub use crate::bindings::{authn, authz, wit};
    use crate::{Authenticator, Authorizer, Manifest, Result};

    /// Builds the plugin from config text.
    fn build<P, C>(text: &str, new: impl FnOnce(C) -> Result<P>) -> Result<P, String>
    where
        C: serde::de::DeserializeOwned,
    {
        let config =
            serde_json::from_str::<C>(text).map_err(|e| format!("invalid plugin config: {e}"))?;
        new(config).map_err(|e| e.to_string())
    }

    /// `init` for the export macros: build from `config`, report the manifest.
    pub fn init<P, C>(
        config: &str,
        new: impl FnOnce(C) -> Result<P>,
        manifest: impl FnOnce(&P) -> Manifest,
    ) -> Result<wit::Manifest, String>
    where
        C: serde::de::DeserializeOwned,
    {
        let plugin = build(config, new)?;
        Ok(manifest(&plugin).into())
    }

    /// The plugin of this sandbox, built on its first call from the host's
    /// config (which `init` accepted at load).
    fn plugin<P, C>(
        cell: &OnceCell<Result<P, String>>,
        new: impl FnOnce(C) -> Result<P>,
    ) -> Result<&P, String>
    where
        C: serde::de::DeserializeOwned,
    {
        cell.get_or_init(|| build(&crate::host::config_json(), new))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Runs one authentication for the export macro.
    pub fn run_authenticate<P: Authenticator>(
        cell: &OnceCell<Result<P, String>>,
        req: wit::Request,
    ) -> wit::AuthnOutcome {
        let answer = plugin(cell, P::new)
            .and_then(|p| p.authenticate(&req.into()).map_err(|e| e.to_string()));
        match answer {
            Ok(outcome) => outcome.into(),
            Err(why) => wit::AuthnOutcome::Failed(why),
        }
    }

    /// Runs one authorization for the export macro.
    pub fn run_authorize<P: Authorizer>(
        cell: &OnceCell<Result<P, String>>,
        who: wit::Identity,
        what: wit::Access,
        req: wit::Request,
    ) -> wit::AuthzOutcome {
        let answer = plugin(cell, P::new).and_then(|p| {
            p.authorize(&who.into(), &what.into(), &req.into())
                .map_err(|e| e.to_string())
        });
        match answer {
            Ok(outcome) => outcome.into(),
            Err(why) => wit::AuthzOutcome::Failed(why),
        }
    }
}
