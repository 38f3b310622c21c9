//! The in-process [`Limiter`]: one `governor` keyed GCRA limiter per
//! configured class and scope (state per instance; several instances each
//! count their own share).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Weak;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{Limit, Limiter, RateLimitConfig, Scope};
use crate::route_class::RouteClass;

/// How often budgets that have refilled completely are forgotten, so
/// addresses seen once do not stay in memory.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// In-memory budgets.
pub struct LocalLimiter {
    limiters: HashMap<(RouteClass, Scope), DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl LocalLimiter {
    /// A limiter for every limit `config` sets.
    pub fn new(config: &RateLimitConfig) -> LocalLimiter {
        let mut limiters = HashMap::new();
        for class in RouteClass::ALL {
            for scope in [Scope::Address, Scope::Identity] {
                if let Some(limit) = config.limit(class, scope) {
                    limiters.insert((class, scope), RateLimiter::keyed(quota(limit)));
                }
            }
        }
        LocalLimiter {
            limiters,
            clock: DefaultClock::default(),
        }
    }

    /// Forgets keys whose budget is full again.
    pub fn sweep(&self) {
        for limiter in self.limiters.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys tracked now, over all limits.
    pub fn tracked(&self) -> usize {
        self.limiters.values().map(|l| l.len()).sum()
    }

    /// Sweeps every [`SWEEP_EVERY`] while `this` is alive (call within a
    /// Tokio runtime).
    pub fn spawn_sweeper(this: Weak<LocalLimiter>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                match this.upgrade() {
                    Some(limiter) => limiter.sweep(),
                    None => return,
                }
            }
        });
    }
}

impl Limiter for LocalLimiter {
    fn check(&self, class: RouteClass, scope: Scope, key: &str) -> Result<(), Duration> {
        let Some(limiter) = self.limiters.get(&(class, scope)) else {
            return Ok(());
        };
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// `requests` per `window_s`, in bursts of up to `requests`.
fn quota(limit: Limit) -> Quota {
    let burst = NonZeroU32::new(limit.requests).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs(limit.window_s) / burst.get();
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .expect("a period of at least 1 ns")
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_spent_budget_says_how_long_to_wait_and_keys_are_apart() {
        let config = RateLimitConfig::from_config(&json!({
            "agent": {"per_identity": {"requests": 2, "window_s": 60}}
        }))
        .unwrap();
        let l = LocalLimiter::new(&config);
        assert!(l.check(RouteClass::Agent, Scope::Identity, "alice").is_ok());
        assert!(l.check(RouteClass::Agent, Scope::Identity, "alice").is_ok());
        let wait = l
            .check(RouteClass::Agent, Scope::Identity, "alice")
            .unwrap_err();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(l.check(RouteClass::Agent, Scope::Identity, "bob").is_ok());
        // Not configured: always passes.
        for _ in 0..10 {
            assert!(l.check(RouteClass::Agent, Scope::Address, "x").is_ok());
        }
        assert_eq!(l.tracked(), 2, "alice and bob");
    }
}
