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
//! | `counter`| `count`: `kv-increment` of `count` (atomic), windowed by `window_s` when set |
//! | `once`   | `first`: whether `kv-compare-and-swap` claimed the request's `x-nonce` (single use) |
//! | `body`   | asks for the body in its manifest; `body`: the body as text, or `body_error` |
//! | `fail`   | answers `failed` (an `Err`): the host answers 503 |
//! | `rate`   | refuses as rate-limited, retry after `window_s` seconds |
//! | `reject` | refuses its config at `init` |
//!
//! `needs_secret` / `needs_host` add a secret / an outbound host to its
//! manifest, for the grant checks.
//!
//! Unknown config fields are ignored, so hot-reload tests can swap this
//! component in place of another plugin with the same config.

use agentflow_plugin_sdk::http::HttpRequest;
use agentflow_plugin_sdk::{
    Authenticator, AuthnOutcome, Identity, Manifest, Refusal, Request, Result, Value, host,
};
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
    /// The counter's window (`counter`) or the retry delay (`rate`).
    #[serde(default)]
    pub window_s: Option<u32>,
    /// A secret its manifest asks for.
    #[serde(default)]
    pub needs_secret: Option<String>,
    /// An outbound host its manifest asks for.
    #[serde(default)]
    pub needs_host: Option<String>,
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

    fn new(config: Config) -> Result<Self> {
        if config.mode == "reject" {
            return Err("mode \"reject\" refuses every config".into());
        }
        Ok(Probe(config))
    }

    fn manifest(&self) -> Manifest {
        let mut m = Manifest::new();
        if self.0.mode == "body" {
            m = m.with_body();
        }
        if let Some(s) = &self.0.needs_secret {
            m = m.secret(s);
        }
        if let Some(h) = &self.0.needs_host {
            m = m.outbound_host(h);
        }
        m
    }

    fn authenticate(&self, req: &Request) -> Result<AuthnOutcome> {
        let who = Identity::new("probe")
            .with_role("user")
            .with_claim("mode", self.0.mode.as_str());
        let who = match self.0.mode.as_str() {
            "secret" => who.with_claim(
                "secret",
                host::secret(&self.0.secret)
                    .map(Value::from)
                    .unwrap_or(Value::Null),
            ),
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
                who.with_claim("stored", stored)
                    .with_claim("kv_error", error)
            }
            "http" => match HttpRequest::get(&self.0.url).send() {
                Ok(resp) => who
                    .with_claim("status", resp.status)
                    .with_claim("body", String::from_utf8_lossy(&resp.body).into_owned()),
                Err(e) => who
                    .with_claim("http_error", e.to_string())
                    .with_claim("denied", e.is_denied()),
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
            "counter" => who.with_claim("count", host::kv_increment("count", 1, self.0.window_s)?),
            "once" => {
                let nonce = format!("nonce:{}", req.header("x-nonce").unwrap_or_default());
                let first = host::kv_compare_and_swap(&nonce, None, b"used", Some(600))?;
                who.with_claim("first", first)
            }
            "body" => match req.body() {
                Ok(b) => who.with_claim("body", String::from_utf8_lossy(b).into_owned()),
                Err(e) => who.with_claim("body_error", e.to_string()),
            },
            "fail" => return Err("the probe's dependency is down".into()),
            "rate" => {
                return Ok(AuthnOutcome::Refused(Refusal::rate_limited(
                    self.0.window_s.unwrap_or(1),
                    "slow down",
                )));
            }
            _ => who,
        };
        agentflow_plugin_sdk::debug!("probe answered in mode {}", self.0.mode);
        Ok(AuthnOutcome::authenticated(who))
    }
}

agentflow_plugin_sdk::export_authenticator!(Probe);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_config_fields_are_ignored() {
        let c: Config =
            serde_json::from_str(r#"{"mode": "slow", "ms": 900, "user_id": "x"}"#).unwrap();
        assert_eq!(c.mode, "slow");
        let p = Probe::new(c).unwrap();
        match p.authenticate(&Request::new("GET", "/")) {
            Ok(AuthnOutcome::Authenticated { who, .. }) => assert_eq!(who.user_id, "probe"),
            other => panic!("expected authenticated, got {other:?}"),
        }
    }

    #[test]
    fn counters_and_single_use_nonces_work_against_the_test_host() {
        use agentflow_plugin_sdk::testing::{self, TestHost};
        TestHost::new()
            .with_config(serde_json::json!({"mode": "counter"}))
            .install();
        let (p, _) = testing::authenticator::<Probe>().unwrap();
        let count = |o: Result<AuthnOutcome>| match o.unwrap() {
            AuthnOutcome::Authenticated { who, .. } => who.claims["count"].clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(count(p.authenticate(&Request::new("GET", "/"))), 1);
        assert_eq!(count(p.authenticate(&Request::new("GET", "/"))), 2);
        assert!(testing::logged("probe answered in mode counter"));

        let once = Probe::new(serde_json::from_str(r#"{"mode": "once"}"#).unwrap()).unwrap();
        let req = Request::new("GET", "/").with_header("x-nonce", "n1");
        let first = |o: Result<AuthnOutcome>| match o.unwrap() {
            AuthnOutcome::Authenticated { who, .. } => who.claims["first"].clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(first(once.authenticate(&req)), true);
        assert_eq!(first(once.authenticate(&req)), false);
    }
}
