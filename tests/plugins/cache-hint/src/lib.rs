//! # cache-hint-plugin — BENCH FIXTURE
//!
//! An [`Authenticator`] used by `host/benches/gateway.rs` to measure what a
//! cache hint buys: it accepts one shared token in `x-api-key` and answers
//! with a [`CacheHint`] (`ttl_ms`, varying on `x-api-key`), so a host that
//! honours hints can skip the sandbox for repeated credentials. It is not a
//! model for real plugins (the token is compared in plain text); read
//! `plugins/api-key` for that.
//!
//! ```json
//! {"token": "bench-token", "user_id": "bench", "roles": ["user"], "ttl_ms": 60000, "vary": ["x-api-key"]}
//! ```
//!
//! `vary` (default `["x-api-key"]`) is the hint's header list. The
//! hardening tests set it to headers the credential is not in (a careless
//! plugin) to prove the host never serves such an answer to a request
//! without credentials.

use agentflow_plugin_sdk::{Authenticator, AuthnOutcome, CacheHint, Identity, Request};
use serde::Deserialize;

/// The plugin's `config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The one accepted value of `x-api-key`.
    pub token: String,
    /// Who the token authenticates as.
    pub user_id: String,
    /// Roles given to that identity.
    #[serde(default)]
    pub roles: Vec<String>,
    /// How long the host may reuse the answer (default one minute).
    #[serde(default = "default_ttl")]
    pub ttl_ms: u32,
    /// The headers the hint says the answer depends on.
    #[serde(default = "default_vary")]
    pub vary: Vec<String>,
}

fn default_ttl() -> u32 {
    60_000
}

fn default_vary() -> Vec<String> {
    vec!["x-api-key".into()]
}

/// The authenticator.
pub struct CachedToken(Config);

impl Authenticator for CachedToken {
    type Config = Config;

    fn new(config: Config) -> agentflow_plugin_sdk::Result<Self> {
        if config.token.is_empty() || config.user_id.is_empty() {
            return Err("token and user_id must not be empty".into());
        }
        Ok(CachedToken(config))
    }

    fn authenticate(&self, req: &Request) -> agentflow_plugin_sdk::Result<AuthnOutcome> {
        Ok(match req.header("x-api-key") {
            None => AuthnOutcome::NoCredentials,
            Some(t) if t == self.0.token => AuthnOutcome::Authenticated {
                who: Identity::new(&self.0.user_id).with_roles(self.0.roles.iter().cloned()),
                cache: Some(CacheHint {
                    ttl_ms: self.0.ttl_ms,
                    vary: self.0.vary.clone(),
                }),
            },
            Some(_) => AuthnOutcome::refused("invalid token"),
        })
    }
}

agentflow_plugin_sdk::export_authenticator!(CachedToken);

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> CachedToken {
        let config = Config {
            token: "t".into(),
            user_id: "u".into(),
            roles: vec!["user".into()],
            ttl_ms: 5,
            vary: default_vary(),
        };
        CachedToken::new(config).unwrap()
    }

    #[test]
    fn answers_carry_a_cache_hint() {
        let out = plugin()
            .authenticate(&Request::new("GET", "/").with_header("x-api-key", "t"))
            .unwrap();
        let AuthnOutcome::Authenticated { who, cache } = out else {
            panic!("not authenticated: {out:?}")
        };
        assert_eq!(who.user_id, "u");
        assert_eq!(
            cache,
            Some(CacheHint {
                ttl_ms: 5,
                vary: vec!["x-api-key".into()]
            })
        );
    }

    #[test]
    fn other_tokens_are_refused_and_no_token_passes() {
        assert!(matches!(
            plugin().authenticate(&Request::new("GET", "/").with_header("x-api-key", "x")),
            Ok(AuthnOutcome::Refused(_))
        ));
        assert_eq!(
            plugin().authenticate(&Request::new("GET", "/")),
            Ok(AuthnOutcome::NoCredentials)
        );
    }
}
