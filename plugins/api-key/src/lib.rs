//! # api-key — static API keys for agentflow
//!
//! An [`Authenticator`] that accepts a key sent in a request header (default
//! `x-api-key`) and, optionally, as `Authorization: Bearer <key>`.
//!
//! Keys are never stored in plaintext: the config holds only the SHA-256 hex
//! digest of each key, so agentflow.json can be committed or shared without
//! leaking credentials. Produce a digest with e.g.
//! `printf %s "$KEY" | sha256sum`.
//!
//! ## Config
//!
//! ```json
//! {
//!   "keys": [
//!     {
//!       "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
//!       "user_id": "svc-1",
//!       "roles": ["user"],
//!       "name": "ci pipeline"
//!     }
//!   ],
//!   "header": "x-api-key",
//!   "accept_bearer": false
//! }
//! ```
//!
//! - `keys[].sha256` (required): 64 hex characters, the SHA-256 of the key.
//! - `keys[].user_id` (required, non-empty): who the key authenticates as.
//! - `keys[].roles` (default `[]`): roles given to that identity.
//! - `keys[].name` (optional): a label, reported as the `key_name` claim.
//! - `header` (default `"x-api-key"`): the header carrying the key.
//! - `accept_bearer` (default `false`): also accept `Authorization: Bearer`.
//!   Leave it off when another method in the `auth` chain (e.g. JWT) also
//!   reads bearer tokens: this plugin would refuse their tokens as invalid
//!   keys and stop the chain.
//!
//! ## Answers
//!
//! - no key in the request → `no-credentials` (the next auth method runs);
//! - a key that matches no digest → refused, 401 `invalid API key`;
//! - a match → authenticated as the entry's `user_id` and `roles`, with
//!   claims `{"auth_method": "api_key", "key_name": "<name>"}` (`key_name`
//!   only for named keys).
//!
//! No cache hint is sent: hashing is cheap, and removing a key from the
//! config must take effect on the very next request.

use agentflow_plugin_sdk::{Authenticator, AuthnOutcome, Identity, Manifest, Request, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The plugin's `config` object in agentflow.json.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The accepted keys.
    pub keys: Vec<KeyEntry>,
    /// The header carrying the key; matched case-insensitively.
    #[serde(default = "default_header")]
    pub header: String,
    /// Whether `Authorization: Bearer <key>` is also accepted.
    #[serde(default)]
    pub accept_bearer: bool,
}

/// One accepted key, as configured.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// SHA-256 of the key, as 64 hex characters (either case).
    pub sha256: String,
    /// The identity this key authenticates as.
    pub user_id: String,
    /// Roles given to that identity.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Optional label, reported as the `key_name` claim.
    #[serde(default)]
    pub name: Option<String>,
}

fn default_header() -> String {
    "x-api-key".to_owned()
}

/// A validated key: the digest decoded once, at construction.
struct Key {
    digest: [u8; 32],
    user_id: String,
    roles: Vec<String>,
    name: Option<String>,
}

/// The API-key authenticator.
pub struct ApiKey {
    keys: Vec<Key>,
    header: String,
    accept_bearer: bool,
}

impl Authenticator for ApiKey {
    type Config = Config;

    /// Validates the config; errors name the offending `keys[i]` entry but
    /// never echo a digest.
    fn new(config: Config) -> Result<Self> {
        if config.header.trim().is_empty() {
            return Err("header must not be empty".into());
        }
        let mut keys: Vec<Key> = Vec::with_capacity(config.keys.len());
        for (i, entry) in config.keys.into_iter().enumerate() {
            let mut digest = [0u8; 32];
            if entry.sha256.len() != 64 || hex::decode_to_slice(&entry.sha256, &mut digest).is_err()
            {
                return Err(format!("keys[{i}].sha256 must be 64 hex characters").into());
            }
            if entry.user_id.trim().is_empty() {
                return Err(format!("keys[{i}].user_id must not be empty").into());
            }
            // Two entries with one digest would make the identity ambiguous.
            if let Some(j) = keys.iter().position(|k| k.digest == digest) {
                return Err(format!("keys[{i}].sha256 duplicates keys[{j}].sha256").into());
            }
            keys.push(Key {
                digest,
                user_id: entry.user_id,
                roles: entry.roles,
                name: entry.name,
            });
        }
        Ok(ApiKey {
            keys,
            header: config.header,
            accept_bearer: config.accept_bearer,
        })
    }

    /// The key header is a credential: never forwarded to the agent.
    fn manifest(&self) -> Manifest {
        Manifest::new().credential_header(&self.header)
    }

    fn authenticate(&self, req: &Request) -> Result<AuthnOutcome> {
        let Some(presented) = self.presented_key(req) else {
            return Ok(AuthnOutcome::NoCredentials);
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();

        // Compare against every key, without stopping at the first match,
        // so the response time does not reveal how many keys were checked.
        let mut found = None;
        for key in &self.keys {
            if ct_eq(&digest, &key.digest) {
                found = Some(key);
            }
        }
        Ok(match found {
            None => AuthnOutcome::refused("invalid API key"),
            Some(key) => {
                let mut who = Identity::new(&key.user_id)
                    .with_roles(key.roles.iter().cloned())
                    .with_claim("auth_method", "api_key");
                if let Some(name) = &key.name {
                    who = who.with_claim("key_name", name.as_str());
                }
                AuthnOutcome::authenticated(who)
            }
        })
    }
}

impl ApiKey {
    /// The key the request carries: the configured header first, then the
    /// bearer token when allowed. Blank values count as absent.
    fn presented_key<'r>(&self, req: &'r Request) -> Option<&'r str> {
        let from_header = req
            .header(&self.header)
            .map(str::trim)
            .filter(|k| !k.is_empty());
        from_header.or_else(|| {
            if self.accept_bearer {
                req.bearer_token()
            } else {
                None
            }
        })
    }
}

/// Constant-time equality of two digests: every byte is always examined.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

agentflow_plugin_sdk::export_authenticator!(ApiKey);

#[cfg(test)]
mod tests;
