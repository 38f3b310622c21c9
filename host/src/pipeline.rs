//! The gate every request passes: the authentication chain, then the
//! authorizer. Built from the config at start and again on every reload of
//! it (see [`crate::live`]); shared by all requests.

use std::sync::{Arc, OnceLock};

use http::HeaderMap;

use crate::accounts::{Accounts, TOKEN_TYPE_CLAIM};
use crate::config::{AuthMethodConfig, Config, JwtOptions};
use crate::error::ApiError;
use crate::identity::{Authenticated, Identity, IdentityOrigin};
use crate::jwt::{JwtConfigError, JwtMethod, TokenError};
use crate::plugins::{
    Access, AuthnOutcome, AuthzOutcome, Plugin, PluginError, PluginRequest, PluginRuntime, Slot,
};

/// Why the gate cannot be built (the server refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// JWT settings are missing or wrong.
    // The causes are part of the message, not chained sources: the CLI
    // prints the whole chain, which printed every reason twice.
    #[error("{file}: `env:{}`: {}", .error.key, .error.reason)]
    Jwt {
        /// The config file.
        file: String,
        /// What is wrong.
        error: JwtConfigError,
    },
    /// A plugin could not be loaded.
    #[error("{file}: `{key}`: {error}")]
    Plugin {
        /// The config file.
        file: String,
        /// The config key naming the plugin.
        key: String,
        /// Why it failed.
        error: PluginError,
    },
}

/// One way of proving identity, tried in order.
pub enum AuthMethod {
    /// The built-in JWT method (the `.env` key or a provider's JWKS);
    /// shared with the gate a reload builds when its options are unchanged,
    /// so its token cache and fetched keys survive the reload.
    Jwt(Arc<JwtMethod>),
    /// API keys from the account system.
    ApiKey(Arc<Accounts>),
    /// An authenticator plugin.
    Plugin(Arc<Plugin>),
}

/// Authentication chain plus optional authorizer.
pub struct Gate {
    methods: Vec<AuthMethod>,
    /// The `issuer` of every jwt method that names one: with several jwt
    /// methods, a token goes to the one for its `iss`.
    jwt_issuers: Vec<String>,
    /// Checks tokens from `POST /v1/login` against their login and account.
    accounts: Arc<Accounts>,
    authorizer: Option<Arc<Plugin>>,
    /// The options each jwt method was built from, for reuse by a reload.
    jwt_built: Vec<(JwtOptions, Arc<JwtMethod>)>,
}

impl Gate {
    /// Builds the gate, loading every plugin the config names.
    #[allow(
        clippy::result_large_err,
        reason = "runs once at start or reload; the error names the file and key"
    )]
    pub fn build(
        cfg: &Config,
        runtime: &PluginRuntime,
        accounts: &Arc<Accounts>,
    ) -> Result<Gate, GateError> {
        Gate::build_beside(cfg, runtime, accounts, None)
    }

    /// Builds the gate for a reloaded config beside the running one
    /// (`previous`): a plugin entry whose settings (path, config, grants,
    /// limits, name) and slot are unchanged keeps its loaded plugin, with
    /// its warm sandboxes, answer caches and counters; a changed one is
    /// loaded anew, with empty caches, and must pass `init` with its new
    /// config. A jwt method with unchanged options is kept likewise.
    /// Nothing in `previous` is touched: on an error it serves on.
    #[allow(
        clippy::result_large_err,
        reason = "runs once at start or reload; the error names the file and key"
    )]
    pub fn build_beside(
        cfg: &Config,
        runtime: &PluginRuntime,
        accounts: &Arc<Accounts>,
        previous: Option<&Gate>,
    ) -> Result<Gate, GateError> {
        let file = cfg.file.display().to_string();
        let load = |p: &crate::config::PluginConfig, slot: Slot| {
            let kept = previous.and_then(|g| {
                g.plugins()
                    .find(|old| old.slot() == slot && old.config() == p)
                    .cloned()
            });
            match kept {
                Some(plugin) => Ok(plugin),
                None => {
                    // Same name: the same key-value namespace, shared so its
                    // size accounting stays one while old calls finish.
                    let kv = previous
                        .and_then(|g| g.plugins().find(|old| old.config().name == p.name))
                        .and_then(|old| old.kv_if_fits(p));
                    runtime.load_with_kv(p, slot, &cfg.env, kv).map(Arc::new)
                }
            }
        };
        let mut jwt_built: Vec<(JwtOptions, Arc<JwtMethod>)> = Vec::new();
        let list = cfg.auth.len() > 1;
        let mut methods = Vec::new();
        for (i, method) in cfg.auth.iter().enumerate() {
            let key = if list {
                format!("auth[{i}]")
            } else {
                "auth".to_owned()
            };
            methods.push(match method {
                AuthMethodConfig::Jwt(opts) => {
                    let kept = previous.and_then(|g| {
                        g.jwt_built
                            .iter()
                            .find(|(o, _)| o == opts)
                            .map(|(_, m)| m.clone())
                    });
                    let method = match kept {
                        Some(method) => method,
                        None => Arc::new(JwtMethod::build(&cfg.env, &cfg.dir(), opts).map_err(
                            |error| GateError::Jwt {
                                file: file.clone(),
                                error,
                            },
                        )?),
                    };
                    jwt_built.push((opts.clone(), method.clone()));
                    AuthMethod::Jwt(method)
                }
                AuthMethodConfig::ApiKey => AuthMethod::ApiKey(accounts.clone()),
                AuthMethodConfig::Plugin(p) => {
                    AuthMethod::Plugin(load(p, Slot::Authenticator).map_err(|error| {
                        GateError::Plugin {
                            file: file.clone(),
                            key: plugin_key(&key, &error),
                            error,
                        }
                    })?)
                }
            });
        }
        let authorizer = match &cfg.authorization {
            None => None,
            Some(p) => Some(
                load(p, Slot::Authorizer).map_err(|error| GateError::Plugin {
                    file: file.clone(),
                    key: plugin_key("authorization", &error),
                    error,
                })?,
            ),
        };
        let jwt_issuers = methods
            .iter()
            .filter_map(|m| match m {
                AuthMethod::Jwt(jwt) => jwt.issuer().map(str::to_owned),
                AuthMethod::ApiKey(_) | AuthMethod::Plugin(_) => None,
            })
            .collect();
        Ok(Gate {
            methods,
            jwt_issuers,
            accounts: accounts.clone(),
            authorizer,
            jwt_built,
        })
    }

    /// Whether requests pass without credentials (`"auth": null`).
    pub fn is_open(&self) -> bool {
        self.methods.is_empty()
    }

    /// Whether any plugin needs the plugin view of requests.
    pub fn uses_plugins(&self) -> bool {
        self.authorizer.is_some()
            || self
                .methods
                .iter()
                .any(|m| matches!(m, AuthMethod::Plugin(_)))
    }

    /// The most request body any plugin asked to see, in bytes (0: none
    /// did, and bodies are not read before authentication).
    pub fn plugin_body_cap(&self) -> usize {
        self.plugins().map(|p| p.body_cap()).max().unwrap_or(0)
    }

    /// Every loaded plugin, authenticators first.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.methods
            .iter()
            .filter_map(|m| match m {
                AuthMethod::Plugin(p) => Some(p),
                AuthMethod::Jwt(_) | AuthMethod::ApiKey(_) => None,
            })
            .chain(self.authorizer.iter())
    }

    /// Runs the chain: the first method that authenticates wins, a method
    /// without credentials passes to the next, a refusal stops. The answer
    /// says how the caller was proved (see [`IdentityOrigin`]) and carries
    /// what authorizing the request takes ([`Authorization`]).
    ///
    /// `view` makes the request as plugins see it; the gate calls it only
    /// when a plugin runs for this request (an authenticator it reaches, or
    /// the authorizer), and at most once.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        view: impl Fn() -> PluginRequest + Sync,
    ) -> Result<(Authenticated, Authorization), ApiError> {
        let built = OnceLock::new();
        let plugin_view = || built.get_or_init(|| Arc::new(view())).clone();
        let authenticated = self.run_chain(headers, &plugin_view).await?;
        let authorization = Authorization(
            self.authorizer
                .as_ref()
                .map(|plugin| (plugin.clone(), plugin_view())),
        );
        Ok((authenticated, authorization))
    }

    /// The chain of [`authenticate`](Self::authenticate).
    async fn run_chain(
        &self,
        headers: &HeaderMap,
        plugin_view: &(impl Fn() -> Arc<PluginRequest> + Sync),
    ) -> Result<Authenticated, ApiError> {
        if self.is_open() {
            return Ok(Authenticated {
                identity: anonymous(),
                origin: IdentityOrigin::Anonymous,
            });
        }
        // An `x-api-key` no method recognised is refused as invalid at the
        // end, not as missing.
        let mut unknown_api_key = false;
        for method in &self.methods {
            match method {
                AuthMethod::Jwt(verifier) => match bearer_jwt(headers) {
                    None => continue,
                    Some(token) if !self.jwt_takes(verifier, token) => continue,
                    Some(token) => {
                        let who = verifier.verify(token).await.map_err(token_refusal)?;
                        // A token that says it is one of our access tokens must
                        // be one: a live login of an active account.
                        if who.claims.get(TOKEN_TYPE_CLAIM).and_then(|t| t.as_str())
                            == Some("access")
                        {
                            return self.accounts.resume_login(who).await;
                        }
                        return Ok(Authenticated {
                            identity: who,
                            origin: IdentityOrigin::Jwt,
                        });
                    }
                },
                AuthMethod::ApiKey(accounts) => {
                    match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
                        None => continue,
                        Some(key) => match accounts.authenticate_api_key(key.trim()).await? {
                            Some(found) => return Ok(found),
                            // Not one of ours: the next method may know it.
                            None => {
                                unknown_api_key = true;
                                continue;
                            }
                        },
                    }
                }
                AuthMethod::Plugin(plugin) => match plugin.authenticate(&plugin_view()).await? {
                    AuthnOutcome::Authenticated { who, .. } => {
                        let origin = IdentityOrigin::Plugin {
                            name: plugin.name().to_owned(),
                        };
                        return Ok(Authenticated {
                            identity: who,
                            origin,
                        });
                    }
                    AuthnOutcome::NoCredentials => continue,
                    AuthnOutcome::Refused(r) => return Err(r.into()),
                },
            }
        }
        if unknown_api_key {
            return Err(ApiError::InvalidCredentials {
                detail: "invalid API key".into(),
                invalid_token: false,
            });
        }
        // A bearer token nobody understood is still a token that was sent.
        if self.methods.iter().any(|m| matches!(m, AuthMethod::Jwt(_))) && has_bearer(headers) {
            let why = if bearer_jwt(headers).is_some() {
                "issuer not accepted"
            } else {
                "malformed token"
            };
            return Err(ApiError::InvalidCredentials {
                detail: format!("invalid token: {why}"),
                invalid_token: true,
            });
        }
        Err(ApiError::NotAuthenticated("Not authenticated".into()))
    }
}

/// What authorizing a request the gate authenticated takes: the gate's
/// authorizer paired with the request as that authorizer sees it. Made by
/// [`Gate::authenticate`], so there is never one without the other; without
/// an authorizer every authenticated caller may.
#[derive(Clone, Default)]
pub struct Authorization(Option<(Arc<Plugin>, Arc<PluginRequest>)>);

impl Authorization {
    /// The same authorization, with the authorizer seeing `path` (the
    /// canonical path, the one forwarded) instead of the client's spelling;
    /// the view is copied only when the two differ.
    pub fn at_path(&self, path: &str) -> Authorization {
        Authorization(self.0.as_ref().map(|(plugin, view)| {
            let view = if view.0.path == path {
                view.clone()
            } else {
                let mut canonical = PluginRequest::clone(view);
                canonical.0.path = path.to_owned();
                Arc::new(canonical)
            };
            (plugin.clone(), view)
        }))
    }

    /// Asks the authorizer whether `who` may do `access`.
    pub async fn authorize(&self, who: &Identity, access: &Access) -> Result<(), ApiError> {
        let Some((plugin, view)) = &self.0 else {
            return Ok(());
        };
        match plugin.authorize(who, access, view).await? {
            AuthzOutcome::Allow => Ok(()),
            AuthzOutcome::Deny(r) => Err(r.into()),
        }
    }

    /// Whether the authorizer may share another tenant's resource
    /// (`tenancy.share_via_authorizer`): there must be one, and it must see
    /// owners (contract 0.3): a 0.2 authorizer cannot tell another tenant's
    /// thread from the caller's own, so its allow shares nothing.
    pub fn can_share(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|(plugin, _)| plugin.contract() != "0.2.0")
    }
}

impl Gate {
    /// Whether `method` is the jwt method that judges `token`. One jwt
    /// method judges every JWT. With several, a method naming an `issuer`
    /// takes only tokens whose (not yet verified) `iss` is exactly it, and a
    /// method without one takes the tokens no other method names: so a token
    /// is checked only against its own issuer's keys.
    fn jwt_takes(&self, method: &JwtMethod, token: &str) -> bool {
        if self
            .methods
            .iter()
            .filter(|m| matches!(m, AuthMethod::Jwt(_)))
            .count()
            < 2
        {
            return true;
        }
        let iss = crate::jwt::unverified_issuer(token);
        match method.issuer() {
            Some(mine) => iss.as_deref() == Some(mine),
            None => iss.is_none_or(|iss| !self.jwt_issuers.contains(&iss)),
        }
    }
}

/// The answer to a token the jwt method did not accept.
fn token_refusal(e: TokenError) -> ApiError {
    let detail = match e {
        TokenError::Expired => "token has expired".into(),
        TokenError::Invalid(why) => format!("invalid token: {why}"),
        // Neither accepted nor refused: a 503 tells clients to retry rather
        // than to log in again.
        TokenError::KeysUnavailable => return ApiError::KeysUnavailable(e.to_string()),
    };
    ApiError::InvalidCredentials {
        detail,
        invalid_token: true,
    }
}

/// The caller when auth is off.
fn anonymous() -> Identity {
    Identity {
        user_id: "anonymous".into(),
        roles: Vec::new(),
        claims: Default::default(),
    }
}

/// The config key a plugin's load failure points at: its `config` (or the
/// grant its manifest exceeds) when `init` refused, else its `path`.
fn plugin_key(entry: &str, error: &PluginError) -> String {
    match error {
        PluginError::Refused { field, .. } => format!("{entry}.{field}"),
        _ => format!("{entry}.path"),
    }
}

fn has_bearer(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer "))
        })
}

/// The bearer token when it is shaped like a JWT (three dot-separated
/// parts); other bearer strings are left for the next method (e.g. an API
/// key sent as a bearer token).
fn bearer_jwt(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && token.split('.').count() == 3).then_some(token)
}
