//! Failed-login counters and the rules that lock them: one counter per
//! account *and* client address (tight: a guesser at one address is
//! stopped after a few tries) and one per account (loose, with exponential
//! backoff: many addresses together are slowed down), so an attacker at one
//! address cannot lock the real user out from another.
//!
//! An attempt is counted *before* its password is checked ([`FailureState::admit`])
//! and handed back afterwards when it did not fail ([`FailureState::refund`]),
//! so a parallel burst gets at most `max_failures` passwords checked.

use serde::{Deserialize, Serialize};

/// Failed-login bookkeeping under one counter key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureState {
    /// Attempts counted in the current window (failed or still being checked).
    pub count: u32,
    /// Logins are refused until this time (unix seconds), if set.
    pub locked_until: Option<u64>,
    /// Time of the last counted attempt, unix seconds (0 if none).
    pub last_failure_at: u64,
    /// Locks in a row without a quiet window between them: each doubles
    /// the next lock (up to the policy's cap).
    #[serde(default)]
    pub lockouts: u32,
}

impl FailureState {
    /// True while the lock is in force at `now`.
    pub fn is_locked(&self, now: u64) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// Counts one attempt at `now`. While locked: `Err(seconds to wait)`
    /// and nothing changes (refused attempts neither count nor extend the
    /// lock, so nobody can keep a lock alive by knocking). Otherwise the new
    /// state, locked if this attempt reached the limit; the attempt itself
    /// is still checked.
    pub fn admit(&self, now: u64, policy: LockoutPolicy) -> Result<FailureState, u64> {
        if let Some(until) = self.locked_until.filter(|until| now < *until) {
            return Err(until - now);
        }
        let mut next = *self;
        let last_activity = self.last_failure_at.max(self.locked_until.unwrap_or(0));
        if now.saturating_sub(last_activity) > policy.window_secs {
            // A quiet window forgets everything, the backoff included.
            next = FailureState::default();
        } else if next.locked_until.is_some() {
            // The lock ran out: count again, but remember it for the backoff.
            next.count = 0;
            next.locked_until = None;
        }
        next.count = next.count.saturating_add(1);
        next.last_failure_at = now;
        if next.count >= policy.max_failures {
            next.locked_until = Some(now.saturating_add(policy.lock_secs(next.lockouts)));
            next.lockouts = next.lockouts.saturating_add(1);
        }
        Ok(next)
    }

    /// Takes back one attempt that [`admit`](Self::admit) counted but that
    /// did not fail (it was never checked, or it succeeded); a lock that
    /// attempt set is lifted again.
    pub fn refund(&self, policy: LockoutPolicy) -> FailureState {
        let mut next = *self;
        next.count = next.count.saturating_sub(1);
        if next.locked_until.is_some() && next.count < policy.max_failures {
            next.locked_until = None;
            next.lockouts = next.lockouts.saturating_sub(1);
        }
        next
    }

    /// True when the state carries nothing worth keeping.
    pub fn is_clear(&self) -> bool {
        self.count == 0 && self.locked_until.is_none() && self.lockouts == 0
    }
}

/// When repeated failures lock one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Attempts (within `window_secs` of each other) that trigger a lock.
    pub max_failures: u32,
    /// How long the first lock lasts; each further lock in a row doubles it.
    pub lockout_secs: u64,
    /// The longest a lock can get through doubling.
    pub max_lockout_secs: u64,
    /// This long without an attempt (or a lock) forgets the counter.
    pub window_secs: u64,
}

impl LockoutPolicy {
    /// 5 failures within 15 minutes lock an account for one client address
    /// for 15 minutes.
    pub fn per_address() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 5,
            lockout_secs: 900,
            max_lockout_secs: 900,
            window_secs: 900,
        }
    }

    /// 50 failures (from any addresses) within 15 minutes lock an account
    /// everywhere for 1 minute, then 2, 4, … up to 1 hour while they go on.
    pub fn per_account() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 50,
            lockout_secs: 60,
            max_lockout_secs: 3600,
            window_secs: 900,
        }
    }

    /// Length of the lock after `lockouts` earlier locks in a row.
    pub fn lock_secs(&self, lockouts: u32) -> u64 {
        let doubled = self.lockout_secs.saturating_mul(1u64 << lockouts.min(32));
        doubled.min(self.max_lockout_secs.max(self.lockout_secs))
    }

    /// How long a counter can matter: older ones can be pruned.
    pub fn memory_secs(&self) -> u64 {
        self.window_secs.max(self.max_lockout_secs)
    }
}

impl Default for LockoutPolicy {
    /// [`LockoutPolicy::per_address`].
    fn default() -> Self {
        LockoutPolicy::per_address()
    }
}

/// The two policies a login attempt is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginPolicy {
    /// For one account from one client address (tight).
    pub per_address: LockoutPolicy,
    /// For one account from everywhere (loose, with backoff).
    pub per_account: LockoutPolicy,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        LoginPolicy {
            per_address: LockoutPolicy::per_address(),
            per_account: LockoutPolicy::per_account(),
        }
    }
}

impl LoginPolicy {
    /// How long any counter can matter: older ones can be pruned.
    pub fn memory_secs(&self) -> u64 {
        self.per_address
            .memory_secs()
            .max(self.per_account.memory_secs())
    }
}

/// The counter keys of one login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptKeys {
    /// The account's key: its lower-cased (normalized) username.
    pub account: String,
    /// The account's key and the client address key, `\0`-separated.
    pub pair: String,
}

impl AttemptKeys {
    /// Keys for `username` (already normalized) tried from `address` (a
    /// client address key, e.g. an IP or an IPv6 /64).
    pub fn new(username: &str, address: &str) -> AttemptKeys {
        let account = username.to_lowercase();
        let pair = format!("{account}\0{address}");
        AttemptKeys { account, pair }
    }
}

/// Whether a login attempt may check its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptVerdict {
    /// Counted; go on and check the password.
    Admitted,
    /// Refused without counting; retry after this many seconds.
    Locked {
        /// Seconds until the lock ends (at least 1).
        retry_after: u64,
        /// Which counter is locked.
        scope: LockScope,
    },
}

/// Which counter refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockScope {
    /// The account from this client address.
    Address,
    /// The account from everywhere.
    Account,
}

/// How an admitted attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Right password on an active account: the address counter is cleared
    /// and the account counter gets this attempt back.
    Succeeded,
    /// Wrong password, unknown user, or inactive account: stays counted.
    Failed,
    /// The password was never checked (the server was too busy): both
    /// counters get this attempt back.
    NotChecked,
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;
    const P: LockoutPolicy = LockoutPolicy {
        max_failures: 3,
        lockout_secs: 100,
        max_lockout_secs: 350,
        window_secs: 60,
    };

    fn admit_n(mut st: FailureState, n: u32, now: u64) -> FailureState {
        for _ in 0..n {
            st = st.admit(now, P).unwrap();
        }
        st
    }

    #[test]
    fn the_attempt_that_reaches_the_limit_is_still_checked_then_the_lock_holds() {
        let st = admit_n(FailureState::default(), 3, T0);
        assert_eq!(
            (st.count, st.locked_until, st.lockouts),
            (3, Some(T0 + 100), 1)
        );
        assert_eq!(
            st.admit(T0 + 40, P),
            Err(60),
            "refused while locked, with the wait"
        );
        assert!(st.is_locked(T0 + 99) && !st.is_locked(T0 + 100));
    }

    #[test]
    fn refused_attempts_do_not_extend_the_lock() {
        let st = admit_n(FailureState::default(), 3, T0);
        for t in [T0 + 1, T0 + 50, T0 + 99] {
            assert!(st.admit(t, P).is_err());
        }
        let after = st.admit(T0 + 100, P).unwrap();
        assert_eq!(
            (after.count, after.locked_until, after.lockouts),
            (1, None, 1)
        );
    }

    #[test]
    fn locks_in_a_row_double_up_to_the_cap() {
        let mut st = FailureState::default();
        let mut now = T0;
        let mut lengths = Vec::new();
        for _ in 0..4 {
            st = admit_n(st, 3, now);
            let until = st.locked_until.unwrap();
            lengths.push(until - now);
            now = until;
        }
        assert_eq!(lengths, [100, 200, 350, 350]);
    }

    #[test]
    fn a_quiet_window_forgets_the_count_and_the_backoff() {
        let st = admit_n(FailureState::default(), 2, T0);
        assert_eq!(st.admit(T0 + 61, P).unwrap().count, 1);
        let locked = admit_n(FailureState::default(), 3, T0);
        let later = locked.admit(T0 + 100 + 61, P).unwrap();
        assert_eq!((later.count, later.lockouts), (1, 0));
    }

    #[test]
    fn refunds_take_back_an_attempt_and_its_lock() {
        let st = admit_n(FailureState::default(), 3, T0);
        let back = st.refund(P);
        assert_eq!((back.count, back.locked_until, back.lockouts), (2, None, 0));
        assert!(back.refund(P).refund(P).refund(P).is_clear());
    }

    #[test]
    fn old_counters_without_a_backoff_field_still_decode() {
        let st: FailureState =
            serde_json::from_str(r#"{"count":2,"locked_until":null,"last_failure_at":5}"#).unwrap();
        assert_eq!((st.count, st.lockouts), (2, 0));
    }

    #[test]
    fn keys_ignore_case_and_separate_addresses() {
        let a = AttemptKeys::new("Alice", "10.0.0.1");
        assert_eq!(a.account, "alice");
        assert_ne!(a.pair, AttemptKeys::new("alice", "10.0.0.2").pair);
        assert_eq!(a.pair, AttemptKeys::new("ALICE", "10.0.0.1").pair);
    }
}
