//! The `rate_limits` section of agentflow.json:
//!
//! ```json
//! "rate_limits": {
//!   "login": {"per_address": {"requests": 30, "window_s": 60}},
//!   "agent": {"per_address": {"requests": 600, "window_s": 60},
//!             "per_identity": {"requests": 300, "window_s": 60}}
//! }
//! ```
//!
//! Classes: `login`, `account`, `verify`, `agent` (see
//! [`RouteClass`]). A scope left out keeps its default; `null` turns it
//! off. The only default is the one that stops guessing: `login` per
//! address, 60 requests a minute (failed passwords are throttled further
//! by the login throttle, `AGENTFLOW_LOGIN_*`).

use serde::Deserialize;
use serde_json::Value;

use super::Scope;
use crate::route_class::RouteClass;

/// At most `requests` per `window_s` seconds, in bursts of up to `requests`
/// (a token bucket that refills evenly over the window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Requests per window (1 to 1 000 000).
    pub requests: u32,
    /// The window in seconds (1 to 86 400).
    pub window_s: u64,
}

/// The limits of one route class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassLimits {
    /// Per resolved client address.
    pub per_address: Option<Limit>,
    /// Per authenticated user id.
    pub per_identity: Option<Limit>,
}

/// Every class's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    login: ClassLimits,
    account: ClassLimits,
    verify: ClassLimits,
    agent: ClassLimits,
}

/// The default login budget per address: far above a person logging in
/// and refreshing, far below a password or refresh-token guesser.
pub const DEFAULT_LOGIN_PER_ADDRESS: Limit = Limit {
    requests: 60,
    window_s: 60,
};

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            login: ClassLimits {
                per_address: Some(DEFAULT_LOGIN_PER_ADDRESS),
                per_identity: None,
            },
            account: ClassLimits::default(),
            verify: ClassLimits::default(),
            agent: ClassLimits::default(),
        }
    }
}

impl RateLimitConfig {
    /// Parses `rate_limits`; mistakes are `(key, reason)`.
    pub fn from_config(raw: &Value) -> Result<RateLimitConfig, (String, String)> {
        let mut config = RateLimitConfig::default();
        let classes = match raw {
            Value::Null => return Ok(config),
            Value::Object(m) => m,
            _ => {
                return Err((
                    "rate_limits".into(),
                    "must be an object like {\"login\": {\"per_address\": {\"requests\": 30, \"window_s\": 60}}}".into(),
                ));
            }
        };
        for (name, value) in classes {
            let key = format!("rate_limits.{name}");
            let slot = match name.as_str() {
                "login" => &mut config.login,
                "account" => &mut config.account,
                "verify" => &mut config.verify,
                "agent" => &mut config.agent,
                _ => {
                    return Err((
                        key,
                        "unknown route class; use \"login\", \"account\", \"verify\" or \"agent\""
                            .into(),
                    ));
                }
            };
            let scopes = match value {
                Value::Null => {
                    *slot = ClassLimits::default();
                    continue;
                }
                Value::Object(m) => m,
                _ => {
                    return Err((
                        key,
                        "must be an object with \"per_address\" and/or \"per_identity\"".into(),
                    ));
                }
            };
            for (scope, limit) in scopes {
                let key = format!("{key}.{scope}");
                let target = match scope.as_str() {
                    "per_address" => &mut slot.per_address,
                    "per_identity" => &mut slot.per_identity,
                    _ => {
                        return Err((
                            key,
                            "unknown field; use \"per_address\" or \"per_identity\"".into(),
                        ));
                    }
                };
                *target = parse_limit(limit).map_err(|reason| (key, reason))?;
            }
        }
        Ok(config)
    }

    /// Everything off (for tests and benchmarks that measure without limits).
    pub fn none() -> RateLimitConfig {
        RateLimitConfig {
            login: ClassLimits::default(),
            account: ClassLimits::default(),
            verify: ClassLimits::default(),
            agent: ClassLimits::default(),
        }
    }

    /// The limits of `class` (`ops` routes are never limited).
    pub fn class(&self, class: RouteClass) -> ClassLimits {
        match class {
            RouteClass::Login => self.login,
            RouteClass::Account => self.account,
            RouteClass::Verify => self.verify,
            RouteClass::Agent => self.agent,
            RouteClass::Ops => ClassLimits::default(),
        }
    }

    /// The limit of `class` in `scope`, if any.
    pub fn limit(&self, class: RouteClass, scope: Scope) -> Option<Limit> {
        let limits = self.class(class);
        match scope {
            Scope::Address => limits.per_address,
            Scope::Identity => limits.per_identity,
        }
    }
}

fn parse_limit(v: &Value) -> Result<Option<Limit>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let limit: Limit = serde_json::from_value(v.clone())
        .map_err(|e| format!("{e}; expected {{\"requests\": 30, \"window_s\": 60}} or null"))?;
    if !(1..=1_000_000).contains(&limit.requests) {
        return Err("`requests` must be between 1 and 1000000".into());
    }
    if !(1..=86_400).contains(&limit.window_s) {
        return Err("`window_s` must be between 1 and 86400 seconds".into());
    }
    Ok(Some(limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_limit_only_logins_per_address() {
        let c = RateLimitConfig::from_config(&Value::Null).unwrap();
        assert_eq!(
            c.limit(RouteClass::Login, Scope::Address),
            Some(DEFAULT_LOGIN_PER_ADDRESS)
        );
        assert_eq!(c.limit(RouteClass::Agent, Scope::Address), None);
        assert_eq!(c.limit(RouteClass::Login, Scope::Identity), None);
    }

    #[test]
    fn left_out_scopes_keep_defaults_and_null_turns_off() {
        let c = RateLimitConfig::from_config(&json!({
            "login": {"per_identity": {"requests": 5, "window_s": 10}},
            "agent": {"per_identity": {"requests": 100, "window_s": 1}},
        }))
        .unwrap();
        assert_eq!(
            c.limit(RouteClass::Login, Scope::Address),
            Some(DEFAULT_LOGIN_PER_ADDRESS)
        );
        assert_eq!(
            c.limit(RouteClass::Agent, Scope::Identity)
                .unwrap()
                .requests,
            100
        );
        let c = RateLimitConfig::from_config(&json!({"login": {"per_address": null}})).unwrap();
        assert_eq!(c.limit(RouteClass::Login, Scope::Address), None);
        let c = RateLimitConfig::from_config(&json!({"login": null})).unwrap();
        assert_eq!(c.class(RouteClass::Login), ClassLimits::default());
    }

    #[test]
    fn mistakes_name_the_key() {
        let key = |v: Value| RateLimitConfig::from_config(&v).unwrap_err().0;
        assert_eq!(key(json!({"logins": {}})), "rate_limits.logins");
        assert_eq!(
            key(json!({"login": {"per_ip": null}})),
            "rate_limits.login.per_ip"
        );
        assert_eq!(
            key(json!({"agent": {"per_address": {"requests": 0, "window_s": 1}}})),
            "rate_limits.agent.per_address"
        );
        assert_eq!(
            key(json!({"agent": {"per_address": {"requests": 1}}})),
            "rate_limits.agent.per_address"
        );
        assert_eq!(key(json!([1])), "rate_limits");
    }
}
