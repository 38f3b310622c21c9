//! # probe-plugin — TEST FIXTURE, NOT AN EXAMPLE
//!
//! An [`Authenticator`] that authenticates every request as `probe` and
//! reports, as claims, what the host let it see. The end-to-end tests use
//! it to check the host capabilities from inside a real sandbox.
//!
//! ## Config
//!
//! ```json
//! {"mode": "kv", "secret": "NAME", "url": "http://127.0.0.1:9100/"}
//! ```
//!
//! | mode     | claims                                                                      |
//! |----------|-----------------------------------------------------------------------------|
//! | `echo`   | `mode` only (the default; any unknown mode behaves like this)               |
//! | `secret` | `secret`: the value of secret `secret`, or `null`                          |
//! | `kv`     | `count`: a counter kept in kv under `count`, incremented on every call; `kv_error` if storing failed |
//! | `kv-fill`| `stored`: how many 1 KiB values it could store before kv refused; `kv_error` |
//! | `http`   | `status` and `body` of a GET to `url`, or `http_error` and `denied`         |
//! | `memory` | `seen`: calls this sandbox has served, counted in a static; `last_caller`: the previous caller's `x-caller` header it kept; traps when the request has `x-fail` |
//!
//! Unknown config fields are ignored, so hot-reload tests can swap this
//! component in place of another plugin with the same config.

use agentflow_plugin_sdk::http::HttpRequest;
use agentflow_plugin_sdk::{Authenticator, AuthnOutcome, Identity, Request, Value, host};
use serde::Deserialize;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The fixture's `config` object.
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    /// What to probe.
    #[serde(default)]
    pub mode: String,
    /// The secret `secret` mode reads.
    #[serde(default)]
    pub secret: String,
    /// The URL `http` mode fetches.
    #[serde(default)]
    pub url: String,
}

/// Calls served by this sandbox (`memory` mode).
static SEEN: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The previous caller's `x-caller` header (`memory` mode).
    static LAST_CALLER: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The probe authenticator.
pub struct Probe(Config);

impl Authenticator for Probe {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Probe(config))
    }

    fn authenticate(&self, req: &Request) -> AuthnOutcome {
        let who = Identity::new("probe").with_role("user").with_claim("mode", self.0.mode.as_str());
        let who = match self.0.mode.as_str() {
            "secret" => who.with_claim("secret", host::secret(&self.0.secret).map(Value::from).unwrap_or(Value::Null)),
            "kv" => {
                let count = host::kv_get("count")
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                match host::kv_set("count", count.to_string().as_bytes()) {
                    Ok(()) => who.with_claim("count", count),
                    Err(e) => who.with_claim("count", count).with_claim("kv_error", e),
                }
            }
            "kv-fill" => {
                let mut stored = 0u64;
                let mut error = Value::Null;
                for i in 0..10_000 {
                    match host::kv_set(&format!("fill-{i}"), &[b'x'; 1024]) {
                        Ok(()) => stored += 1,
                        Err(e) => {
                            error = e.into();
                            break;
                        }
                    }
                }
                who.with_claim("stored", stored).with_claim("kv_error", error)
            }
            "http" => match HttpRequest::get(&self.0.url).send() {
                Ok(resp) => who
                    .with_claim("status", resp.status)
                    .with_claim("body", String::from_utf8_lossy(&resp.body).into_owned()),
                Err(e) => who.with_claim("http_error", e.to_string()).with_claim("denied", e.is_denied()),
            },
            // What a careless plugin leaks when its sandbox is reused.
            "memory" => {
                let seen = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
                if req.header("x-fail").is_some() {
                    panic!("asked to fail by x-fail");
                }
                let caller = req.header("x-caller").unwrap_or_default().to_owned();
                let last = LAST_CALLER.with(|c| c.replace(caller));
                who.with_claim("seen", seen).with_claim("last_caller", last)
            }
            _ => who,
        };
        AuthnOutcome::authenticated(who)
    }
}

// Only for wasm: natively the export's symbol names break linking the
// cdylib half of the crate, which `cargo test` links.
#[cfg(target_family = "wasm")]
agentflow_plugin_sdk::export_authenticator!(Probe);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_config_fields_are_ignored() {
        let c: Config = serde_json::from_str(r#"{"mode": "slow", "ms": 900, "user_id": "x"}"#).unwrap();
        assert_eq!(c.mode, "slow");
        let p = Probe::new(c).unwrap();
        match p.authenticate(&Request::new("GET", "/")) {
            AuthnOutcome::Authenticated { who, .. } => assert_eq!(who.user_id, "probe"),
            other => panic!("expected authenticated, got {other:?}"),
        }
    }
}
