//! # oauth-introspect — OAuth 2.0 bearer tokens for agentflow
//!
//! An [`Authenticator`] that validates `Authorization: Bearer <token>`
//! against an RFC 7662 token introspection endpoint, maps the answer to an
//! identity, and caches positive answers in the plugin's key-value store
//! until the token expires (never longer than `cache_max_s`).
//!
//! ## Config
//!
//! ```json
//! {
//!   "auth": {
//!     "method": "custom", "path": "plugins/oauth-introspect",
//!     "secrets": ["OAUTH_CLIENT_SECRET"],
//!     "allowed_hosts": ["auth.example.com:443"],
//!     "timeout_ms": 2000,
//!     "config": {
//!       "introspection_url": "https://auth.example.com/oauth2/introspect",
//!       "client_id": "agentflow",
//!       "client_secret": "OAUTH_CLIENT_SECRET",
//!       "cache_max_s": 300
//!     }
//!   }
//! }
//! ```
//!
//! - `introspection_url` (required): the endpoint; its `host:port` must be
//!   in the plugin's `allowed_hosts`.
//! - `client_id` (required) and `client_secret` (required: the *name* of a
//!   secret granted to the plugin in `secrets`): HTTP Basic credentials for
//!   the endpoint (RFC 7662 §2.1).
//! - `cache_max_s` (default 300, 0 disables caching): the longest a positive
//!   answer is reused; it is never reused past the token's `exp`. Tokens
//!   without `exp` are not cached.
//! - `roles_claim` (default `"scope"`): the claim that gives roles, either a
//!   space-separated string or a list of strings.
//!
//! ## Answers
//!
//! - no bearer token → `no-credentials` (the next auth method runs);
//! - `"active": true` → authenticated as `sub` (else `username`, else
//!   `client_id`), roles from `roles_claim`, every other field as a claim;
//! - `"active": false`, or an answer naming nobody → refused (401);
//! - the endpoint unreachable or answering nonsense → the plugin fails and
//!   the request gets 503 (fail closed), with the cause in the server log.
//!
//! Keep the plugin's `timeout_ms` above the endpoint's response time: the
//! HTTP call counts against it.

use agentflow_plugin_sdk::{
    Authenticator, AuthnOutcome, Identity, Manifest, Map, Request, Result, Value,
};
use serde::Deserialize;

mod cache;
mod client;

pub use cache::CacheEntry;

/// The plugin's `config` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The RFC 7662 endpoint.
    pub introspection_url: String,
    /// Client id for HTTP Basic authentication.
    pub client_id: String,
    /// Name of the granted secret holding the client secret.
    pub client_secret: String,
    /// Longest reuse of a positive answer, in seconds.
    #[serde(default = "default_cache_max_s")]
    pub cache_max_s: u64,
    /// Claim that carries roles.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

fn default_cache_max_s() -> u64 {
    300
}

fn default_roles_claim() -> String {
    "scope".to_owned()
}

/// The authenticator.
pub struct OAuthIntrospect(Config);

impl Authenticator for OAuthIntrospect {
    type Config = Config;

    fn new(config: Config) -> Result<Self> {
        if endpoint_host(&config.introspection_url).is_none() {
            return Err(format!(
                "introspection_url {:?} must be an http(s) URL",
                config.introspection_url
            )
            .into());
        }
        if config.client_id.is_empty() {
            return Err("client_id must not be empty".into());
        }
        Ok(OAuthIntrospect(config))
    }

    /// The endpoint's host and the client secret must be granted.
    fn manifest(&self) -> Manifest {
        let host = endpoint_host(&self.0.introspection_url).unwrap_or_default();
        Manifest::new()
            .outbound_host(&host)
            .secret(&self.0.client_secret)
    }

    fn authenticate(&self, req: &Request) -> Result<AuthnOutcome> {
        let Some(token) = req.bearer_token() else {
            return Ok(AuthnOutcome::NoCredentials);
        };
        let now = unix_now();
        let key = cache::key(token);
        if let Some(who) = cache::lookup(&key, now) {
            return Ok(AuthnOutcome::authenticated(who));
        }
        // An endpoint that cannot answer fails the request closed (503).
        let answer = client::introspect(&self.0, token)?;
        let outcome = to_outcome(&answer, &self.0.roles_claim);
        if let AuthnOutcome::Authenticated { who, .. } = &outcome
            && let Some(until) = cache::until(&answer, now, self.0.cache_max_s)
        {
            cache::store(
                &key,
                &CacheEntry {
                    until,
                    who: who.clone(),
                },
            );
        }
        Ok(outcome)
    }
}

/// The `host:port` of an http(s) URL (the port defaulted from the scheme),
/// as the plugin's `allowed_hosts` must list it.
pub fn endpoint_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if authority.is_empty() {
        return None;
    }
    // A port is what follows the last colon, unless that colon is inside
    // an IPv6 literal's brackets.
    match authority.rsplit_once(':') {
        Some((_, p)) if !p.contains(']') => Some(authority),
        _ => Some(format!("{authority}:{port}")),
    }
}

/// Maps an introspection answer (RFC 7662 §2.2) to an outcome.
pub fn to_outcome(answer: &Map<String, Value>, roles_claim: &str) -> AuthnOutcome {
    if answer.get("active") != Some(&Value::Bool(true)) {
        return AuthnOutcome::refused("token is not active");
    }
    let user = ["sub", "username", "client_id"].iter().find_map(|k| {
        answer
            .get(*k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    });
    let Some(user) = user else {
        return AuthnOutcome::refused("token names no subject");
    };
    let roles: Vec<String> = match answer.get(roles_claim) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let mut who = Identity::new(user).with_roles(roles);
    for (k, v) in answer.iter().filter(|(k, _)| k.as_str() != "active") {
        who = who.with_claim(k.clone(), v.clone());
    }
    AuthnOutcome::authenticated(who)
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

agentflow_plugin_sdk::export_authenticator!(OAuthIntrospect);

#[cfg(test)]
mod tests;
