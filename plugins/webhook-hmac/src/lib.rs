//! # webhook-hmac — signed webhook deliveries for agentflow
//!
//! An [`Authenticator`] for machine callers that sign each request body
//! with a shared secret, the way GitHub, Stripe-style and most webhook
//! senders do: `x-hub-signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
//! It shows off contract 0.3: the request body, a secret checked against
//! the grants at load, and single-use delivery ids through the store's
//! compare-and-swap.
//!
//! ## Config
//!
//! ```json
//! {
//!   "method": "custom", "path": "plugins/webhook-hmac",
//!   "secrets": ["WEBHOOK_SECRET"], "body_kb": 256,
//!   "config": {"secret": "WEBHOOK_SECRET", "user_id": "github", "roles": ["webhook"]}
//! }
//! ```
//!
//! - `secret` (required): the *name* of the granted secret holding the key.
//! - `user_id` (required), `roles` (default `[]`): who a valid delivery is.
//! - `header` (default `x-hub-signature-256`), `prefix` (default `sha256=`).
//! - `delivery_header` (default `x-github-delivery`): a delivery id seen
//!   once is refused the second time, for `replay_window_s` (default 86400);
//!   requests without it are accepted (set `require_delivery_id` to refuse
//!   them).
//!
//! ## Answers
//!
//! - no signature header → `no-credentials` (the next method runs);
//! - a signature that does not match the body, a body over `body_kb`, or a
//!   replayed delivery id → 401;
//! - a match → authenticated as `user_id` with `roles` and the claims
//!   `auth_method: "webhook_hmac"` and `delivery` (when sent);
//! - the secret not set → `failed` (503): the operator's mistake, not the
//!   caller's.

use agentflow_plugin_sdk::{
    Authenticator, AuthnOutcome, Body, Identity, Manifest, Request, Result, host,
};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// The plugin's `config` object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of the granted secret holding the HMAC key.
    pub secret: String,
    /// Who a valid delivery authenticates as.
    pub user_id: String,
    /// Roles given to it.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The header carrying the signature.
    #[serde(default = "default_header")]
    pub header: String,
    /// What precedes the hex digest in the header.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The header carrying the delivery id.
    #[serde(default = "default_delivery_header")]
    pub delivery_header: String,
    /// How long a delivery id stays used, in seconds.
    #[serde(default = "default_replay_window_s")]
    pub replay_window_s: u32,
    /// Refuse deliveries without an id.
    #[serde(default)]
    pub require_delivery_id: bool,
}

fn default_header() -> String {
    "x-hub-signature-256".into()
}
fn default_prefix() -> String {
    "sha256=".into()
}
fn default_delivery_header() -> String {
    "x-github-delivery".into()
}
fn default_replay_window_s() -> u32 {
    86_400
}

/// The webhook authenticator.
pub struct WebhookHmac(Config);

impl Authenticator for WebhookHmac {
    type Config = Config;

    fn new(config: Config) -> Result<Self> {
        if config.secret.trim().is_empty() || config.user_id.trim().is_empty() {
            return Err("secret and user_id must not be empty".into());
        }
        Ok(WebhookHmac(config))
    }

    fn manifest(&self) -> Manifest {
        Manifest::new()
            .credential_header(&self.0.header)
            .secret(&self.0.secret)
            .with_body()
    }

    fn authenticate(&self, req: &Request) -> Result<AuthnOutcome> {
        let Some(signature) = req.header(&self.0.header) else {
            return Ok(AuthnOutcome::NoCredentials);
        };
        let key = host::secret(&self.0.secret)
            .ok_or_else(|| format!("secret {:?} is not set", self.0.secret))?;
        let body = match &req.body {
            Body::Complete(b) => b.as_slice(),
            Body::TooLarge(cap) => {
                return Ok(AuthnOutcome::refused(format!(
                    "body over {cap} bytes cannot be verified"
                )));
            }
            Body::NotRequested => return Err("the host did not pass the body".into()),
        };
        if !verify(key.as_bytes(), body, signature, &self.0.prefix) {
            return Ok(AuthnOutcome::refused("invalid signature"));
        }
        let delivery = req.header(&self.0.delivery_header).map(str::to_owned);
        match &delivery {
            None if self.0.require_delivery_id => {
                return Ok(AuthnOutcome::refused("missing delivery id"));
            }
            None => {}
            Some(id) => {
                // Single use: only the first request with this id claims it.
                let claimed = host::kv_compare_and_swap(
                    &format!("delivery:{id}"),
                    None,
                    b"1",
                    Some(self.0.replay_window_s),
                )?;
                if !claimed {
                    return Ok(AuthnOutcome::refused("delivery already received"));
                }
            }
        }
        let mut who = Identity::new(&self.0.user_id)
            .with_roles(self.0.roles.iter().cloned())
            .with_claim("auth_method", "webhook_hmac");
        if let Some(id) = delivery {
            who = who.with_claim("delivery", id);
        }
        Ok(AuthnOutcome::authenticated(who))
    }
}

/// Whether `header` is `prefix` + the hex HMAC-SHA256 of `body` under `key`,
/// compared in constant time.
pub fn verify(key: &[u8], body: &[u8], header: &str, prefix: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix(prefix) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The header value a sender computes (for tests and tools).
pub fn sign(key: &[u8], body: &[u8], prefix: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    format!("{prefix}{}", hex::encode(mac.finalize().into_bytes()))
}

agentflow_plugin_sdk::export_authenticator!(WebhookHmac);

#[cfg(test)]
mod tests {
    use super::*;
    use agentflow_plugin_sdk::testing::{self, TestHost};
    use serde_json::json;

    fn install() -> WebhookHmac {
        TestHost::new()
            .with_config(
                json!({"secret": "WEBHOOK_SECRET", "user_id": "github", "roles": ["webhook"]}),
            )
            .with_secret("WEBHOOK_SECRET", "k3y")
            .install();
        testing::authenticator::<WebhookHmac>().unwrap().0
    }

    fn delivery(body: &str, sig: &str, id: Option<&str>) -> Request {
        let mut req = Request::new("POST", "/v1/graph/invoke")
            .with_header("x-hub-signature-256", sig)
            .with_body(body);
        if let Some(id) = id {
            req = req.with_header("x-github-delivery", id);
        }
        req
    }

    #[test]
    fn a_signed_body_authenticates_once_per_delivery_id() {
        let p = install();
        let body = r#"{"action":"opened"}"#;
        let sig = sign(b"k3y", body.as_bytes(), "sha256=");
        match p.authenticate(&delivery(body, &sig, Some("d-1"))).unwrap() {
            AuthnOutcome::Authenticated { who, .. } => {
                assert_eq!(who.user_id, "github");
                assert_eq!(who.claims["delivery"], "d-1");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.authenticate(&delivery(body, &sig, Some("d-1"))).unwrap(),
            AuthnOutcome::refused("delivery already received")
        );
        assert!(matches!(
            p.authenticate(&delivery(body, &sig, Some("d-2"))).unwrap(),
            AuthnOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn a_tampered_body_or_a_wrong_key_is_refused() {
        let p = install();
        let sig = sign(b"k3y", b"{}", "sha256=");
        assert_eq!(
            p.authenticate(&delivery("{ }", &sig, None)).unwrap(),
            AuthnOutcome::refused("invalid signature")
        );
        let other = sign(b"other", b"{}", "sha256=");
        assert_eq!(
            p.authenticate(&delivery("{}", &other, None)).unwrap(),
            AuthnOutcome::refused("invalid signature")
        );
        assert_eq!(
            p.authenticate(&delivery("{}", "sha1=00", None)).unwrap(),
            AuthnOutcome::refused("invalid signature")
        );
        assert_eq!(
            p.authenticate(&Request::new("POST", "/")).unwrap(),
            AuthnOutcome::NoCredentials
        );
    }

    #[test]
    fn the_manifest_asks_for_the_body_and_the_secret_and_an_unset_secret_fails_closed() {
        TestHost::new()
            .with_config(json!({"secret": "WEBHOOK_SECRET", "user_id": "github"}))
            .install();
        let (p, manifest) = testing::authenticator::<WebhookHmac>().unwrap();
        assert!(manifest.wants_body);
        assert_eq!(manifest.secrets, ["WEBHOOK_SECRET"]);
        assert_eq!(manifest.credential_headers, ["x-hub-signature-256"]);
        let sig = sign(b"k3y", b"{}", "sha256=");
        assert!(p.authenticate(&delivery("{}", &sig, None)).is_err());
    }
}
