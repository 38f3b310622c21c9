//! # totp — a second factor for agentflow (RFC 6238)
//!
//! An [`Authorizer`] that lets a request through only with a valid
//! time-based one-time code for the caller, who was authenticated by the
//! methods before it (e.g. JWT). It shows off contract 0.3: per-user seeds
//! in the plugin's store, single-use codes through compare-and-swap, and a
//! failure limit through an expiring counter answered with a typed 429.
//!
//! ## Config
//!
//! ```json
//! {
//!   "authorization": {"path": "plugins/totp", "config": {
//!     "code_from": "header:x-totp-code",
//!     "enroll": {"alice": "JBSWY3DPEHPK3PXP"},
//!     "exempt_roles": ["service"]
//!   }}
//! }
//! ```
//!
//! - `code_from`: `header:<name>` (default `header:x-totp-code`) or
//!   `jwt:<claim>`: where the code is read from.
//! - `enroll`: user id → base32 seed. A user's seed lives in the store under
//!   `seed:<user id>`; an entry here is copied there on the user's first
//!   request (an existing stored seed wins, so rotating means writing the
//!   store).
//! - `digits` (6), `step_s` (30), `skew` (1 step either side).
//! - `max_failures` (5) wrong codes per user per `failure_window_s` (300):
//!   past that, 429 with `Retry-After` until the window ends.
//! - `exempt_roles`: callers with one of these roles need no code.
//!
//! ## Answers
//!
//! allow (never cached: every request needs its own code); 403 `no second
//! factor enrolled`; 401 `one-time code required` / `invalid one-time code`
//! / `one-time code already used`; 429 after too many failures.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use agentflow_plugin_sdk::{
    Access, Authorizer, AuthzOutcome, Identity, Refusal, Request, Result, host,
};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;

/// The plugin's `config` object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `header:<name>` or `jwt:<claim>`.
    #[serde(default = "default_code_from")]
    pub code_from: String,
    /// User id → base32 seed, copied into the store on first use.
    #[serde(default)]
    pub enroll: BTreeMap<String, String>,
    /// Code length.
    #[serde(default = "default_digits")]
    pub digits: u32,
    /// Seconds per code.
    #[serde(default = "default_step_s")]
    pub step_s: u64,
    /// Steps accepted either side of now (clock drift).
    #[serde(default = "default_skew")]
    pub skew: u64,
    /// Wrong codes allowed per user per window.
    #[serde(default = "default_max_failures")]
    pub max_failures: i64,
    /// The failure window, in seconds.
    #[serde(default = "default_failure_window_s")]
    pub failure_window_s: u32,
    /// Roles that need no code.
    #[serde(default)]
    pub exempt_roles: Vec<String>,
}

fn default_code_from() -> String {
    "header:x-totp-code".into()
}
fn default_digits() -> u32 {
    6
}
fn default_step_s() -> u64 {
    30
}
fn default_skew() -> u64 {
    1
}
fn default_max_failures() -> i64 {
    5
}
fn default_failure_window_s() -> u32 {
    300
}

/// Where the code comes from.
enum CodeFrom {
    Header(String),
    Claim(String),
}

/// The TOTP authorizer.
pub struct Totp {
    cfg: Config,
    code_from: CodeFrom,
}

impl Authorizer for Totp {
    type Config = Config;

    fn new(cfg: Config) -> Result<Self> {
        let code_from = match cfg.code_from.split_once(':') {
            Some(("header", h)) if !h.is_empty() => CodeFrom::Header(h.to_ascii_lowercase()),
            Some(("jwt", c)) if !c.is_empty() => CodeFrom::Claim(c.to_owned()),
            _ => return Err("code_from must be \"header:<name>\" or \"jwt:<claim>\"".into()),
        };
        if !(6..=8).contains(&cfg.digits) || cfg.step_s == 0 {
            return Err("digits must be 6..=8 and step_s at least 1".into());
        }
        for (user, seed) in &cfg.enroll {
            decode_seed(seed).map_err(|e| format!("enroll.{user}: {e}"))?;
        }
        Ok(Totp { cfg, code_from })
    }

    fn authorize(&self, who: &Identity, _access: &Access, req: &Request) -> Result<AuthzOutcome> {
        if who.roles.iter().any(|r| self.cfg.exempt_roles.contains(r)) {
            return Ok(AuthzOutcome::Allow);
        }
        let user = &who.user_id;
        let Some(seed) = self.seed(user)? else {
            return Ok(AuthzOutcome::deny("no second factor enrolled"));
        };
        let failures_key = format!("fail:{user}");
        if self.failures(&failures_key) >= self.cfg.max_failures {
            return Ok(too_many(self.cfg.failure_window_s));
        }
        let code = match &self.code_from {
            CodeFrom::Header(h) => req.header(h).map(str::to_owned),
            CodeFrom::Claim(c) => who.claims.get(c).and_then(|v| match v {
                agentflow_plugin_sdk::Value::String(s) => Some(s.clone()),
                agentflow_plugin_sdk::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
        };
        let Some(code) = code else {
            return Ok(unauthenticated("one-time code required"));
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let Some(step) = self.matching_step(&seed, code.trim(), now) else {
            let n = host::kv_increment(&failures_key, 1, Some(self.cfg.failure_window_s))?;
            if n >= self.cfg.max_failures {
                return Ok(too_many(self.cfg.failure_window_s));
            }
            return Ok(unauthenticated("invalid one-time code"));
        };
        // A code is good once: the first request to claim its step wins.
        let keep_s = u32::try_from((2 * self.cfg.skew + 1) * self.cfg.step_s).unwrap_or(u32::MAX);
        let used = format!("used:{user}:{step}");
        if !host::kv_compare_and_swap(&used, None, b"1", Some(keep_s))? {
            return Ok(unauthenticated("one-time code already used"));
        }
        Ok(AuthzOutcome::Allow)
    }
}

impl Totp {
    /// The user's seed: from the store, else from `enroll` (then stored).
    fn seed(&self, user: &str) -> Result<Option<Vec<u8>>> {
        let key = format!("seed:{user}");
        let text = match host::kv_get(&key) {
            Some(v) => String::from_utf8(v)?,
            None => match self.cfg.enroll.get(user) {
                None => return Ok(None),
                Some(seed) => {
                    // Another request may enroll at the same time; either
                    // write leaves the same seed.
                    host::kv_compare_and_swap(&key, None, seed.as_bytes(), None)?;
                    seed.clone()
                }
            },
        };
        decode_seed(&text).map(Some).map_err(Into::into)
    }

    fn failures(&self, key: &str) -> i64 {
        host::kv_get(key)
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The time step whose code is `code`, within the allowed skew.
    fn matching_step(&self, seed: &[u8], code: &str, now: u64) -> Option<u64> {
        let current = now / self.cfg.step_s;
        (current.saturating_sub(self.cfg.skew)..=current + self.cfg.skew)
            .find(|&step| constant_time_eq(&hotp(seed, step, self.cfg.digits), code))
    }
}

fn unauthenticated(detail: &str) -> AuthzOutcome {
    AuthzOutcome::Deny(Refusal::unauthenticated(detail))
}

fn too_many(window_s: u32) -> AuthzOutcome {
    AuthzOutcome::Deny(Refusal::rate_limited(
        window_s,
        "too many wrong one-time codes; try again later",
    ))
}

/// A base32 seed (spaces and case ignored, padding optional).
pub fn decode_seed(seed: &str) -> std::result::Result<Vec<u8>, String> {
    let cleaned: String = seed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = data_encoding::BASE32_NOPAD
        .decode(cleaned.as_bytes())
        .map_err(|_| "not a base32 seed".to_owned())?;
    if bytes.len() < 10 {
        return Err("seeds must be at least 80 bits".into());
    }
    Ok(bytes)
}

/// RFC 4226 HOTP (HMAC-SHA1, dynamic truncation) for `counter`.
pub fn hotp(seed: &[u8], counter: u64, digits: u32) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(seed).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = (hash[19] & 0x0f) as usize;
    let value = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    format!(
        "{:0width$}",
        value % 10u32.pow(digits),
        width = digits as usize
    )
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

agentflow_plugin_sdk::export_authorizer!(Totp);

#[cfg(test)]
mod tests {
    use super::*;
    use agentflow_plugin_sdk::testing::{self, TestHost};
    use serde_json::json;

    /// RFC 6238's SHA-1 seed, "12345678901234567890", in base32.
    const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn rfc_6238_vectors() {
        let seed = decode_seed(SEED).unwrap();
        assert_eq!(hotp(&seed, 59 / 30, 8), "94287082");
        assert_eq!(hotp(&seed, 1_111_111_109 / 30, 8), "07081804");
        assert_eq!(hotp(&seed, 20_000_000_000 / 30, 8), "65353130");
    }

    fn install(extra: serde_json::Value) -> Totp {
        let mut config = json!({"enroll": {"alice": SEED}, "max_failures": 3});
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        TestHost::new().with_config(config).install();
        testing::authorizer::<Totp>().unwrap().0
    }

    fn now_code() -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        hotp(&decode_seed(SEED).unwrap(), now / 30, 6)
    }

    fn ask(p: &Totp, who: &Identity, code: Option<&str>) -> AuthzOutcome {
        let mut req = Request::new("POST", "/v1/graph/invoke");
        if let Some(c) = code {
            req = req.with_header("x-totp-code", c);
        }
        p.authorize(who, &Access::new("graph", "invoke"), &req)
            .unwrap()
    }

    #[test]
    fn a_code_is_accepted_once_and_enrollment_lands_in_the_store() {
        let p = install(json!({}));
        let alice = Identity::new("alice");
        let code = now_code();
        assert_eq!(ask(&p, &alice, Some(&code)), AuthzOutcome::Allow);
        assert_eq!(
            agentflow_plugin_sdk::host::kv_get("seed:alice").as_deref(),
            Some(SEED.as_bytes())
        );
        assert_eq!(
            ask(&p, &alice, Some(&code)),
            unauthenticated("one-time code already used")
        );
        assert_eq!(
            ask(&p, &alice, None),
            unauthenticated("one-time code required")
        );
        assert_eq!(
            ask(&p, &Identity::new("bob"), Some(&code)),
            AuthzOutcome::deny("no second factor enrolled")
        );
    }

    #[test]
    fn wrong_codes_are_limited_per_user_until_the_window_ends() {
        let p = install(json!({}));
        let alice = Identity::new("alice");
        assert_eq!(
            ask(&p, &alice, Some("000000")),
            unauthenticated("invalid one-time code")
        );
        assert_eq!(
            ask(&p, &alice, Some("000001")),
            unauthenticated("invalid one-time code")
        );
        assert_eq!(ask(&p, &alice, Some("000002")), too_many(300));
        // Even the right code waits for the window to end.
        assert_eq!(ask(&p, &alice, Some(&now_code())), too_many(300));
        testing::advance_expiry(std::time::Duration::from_secs(301));
        assert_eq!(ask(&p, &alice, Some(&now_code())), AuthzOutcome::Allow);
    }

    #[test]
    fn codes_can_come_from_a_jwt_claim_and_exempt_roles_need_none() {
        let p = install(json!({"code_from": "jwt:code", "exempt_roles": ["service"]}));
        let alice = Identity::new("alice").with_claim("code", now_code());
        assert_eq!(ask(&p, &alice, None), AuthzOutcome::Allow);
        assert_eq!(
            ask(&p, &Identity::new("svc").with_role("service"), None),
            AuthzOutcome::Allow
        );
        TestHost::new()
            .with_config(json!({"code_from": "cookie:x"}))
            .install();
        assert!(testing::authorizer::<Totp>().is_err());
    }
}
