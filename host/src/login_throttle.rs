//! Per-client-address login throttling, in memory: each address gets a
//! bucket of attempts that refills at `attempts_per_minute` (a successful
//! login hands its attempt back) and may have only a few logins in flight
//! (waiting for or running a password check), so one address can neither
//! flood the password checker nor queue ahead of everyone else.
//!
//! The address is a parameter (not read from the socket here) so a proxy-aware
//! caller can pass the real client. IPv6 clients are grouped by /64: one
//! host usually holds a whole /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Addresses tracked at once; beyond this, idle ones are forgotten first and
/// new addresses are refused (fail closed) if none are idle.
const MAX_TRACKED: usize = 65_536;

/// The throttling key of a client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey(String);

impl ClientKey {
    /// The key of `ip`: the IPv4 address, or the IPv6 /64 (IPv4-mapped IPv6
    /// counts as IPv4); `unknown` when there is no address.
    pub fn of(ip: Option<IpAddr>) -> ClientKey {
        let key = match ip.map(|ip| ip.to_canonical()) {
            None => "unknown".to_owned(),
            Some(IpAddr::V4(v4)) => v4.to_string(),
            Some(IpAddr::V6(v6)) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        };
        ClientKey(key)
    }

    /// The key as text (used in failed-login counter keys).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug)]
struct Slot {
    tokens: f64,
    updated: Instant,
    in_flight: u32,
}

/// The per-address limits of login attempts.
#[derive(Debug)]
pub struct AddressThrottle {
    slots: Mutex<HashMap<ClientKey, Slot>>,
    capacity: f64,
    per_second: f64,
    max_in_flight: u32,
}

/// Refused: retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds to wait (at least 1).
    pub retry_after: u64,
}

impl AddressThrottle {
    /// Allows `attempts_per_minute` (at least 1) attempts per address per
    /// minute, in bursts of up to as many, and `max_in_flight` (at least 1)
    /// logins per address at once.
    pub fn new(attempts_per_minute: u32, max_in_flight: u32) -> AddressThrottle {
        let capacity = f64::from(attempts_per_minute.max(1));
        AddressThrottle {
            slots: Mutex::new(HashMap::new()),
            capacity,
            per_second: capacity / 60.0,
            max_in_flight: max_in_flight.max(1),
        }
    }

    /// Takes one attempt for `key` at `now`; the ticket keeps the login
    /// counted as in flight until dropped.
    pub fn admit(&self, key: &ClientKey, now: Instant) -> Result<Ticket<'_>, Throttled> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if !slots.contains_key(key) && slots.len() >= MAX_TRACKED {
            slots.retain(|_, slot| !self.is_idle(slot, now));
            if slots.len() >= MAX_TRACKED {
                return Err(Throttled { retry_after: 1 });
            }
        }
        let slot = slots.entry(key.clone()).or_insert(Slot {
            tokens: self.capacity,
            updated: now,
            in_flight: 0,
        });
        self.refill(slot, now);
        if slot.in_flight >= self.max_in_flight {
            return Err(Throttled { retry_after: 1 });
        }
        if slot.tokens < 1.0 {
            let wait = ((1.0 - slot.tokens) / self.per_second).ceil();
            return Err(Throttled {
                retry_after: (wait as u64).max(1),
            });
        }
        slot.tokens -= 1.0;
        slot.in_flight += 1;
        Ok(Ticket {
            throttle: self,
            key: key.clone(),
            refund: false,
        })
    }

    fn refill(&self, slot: &mut Slot, now: Instant) {
        let elapsed = now.saturating_duration_since(slot.updated).as_secs_f64();
        slot.tokens = (slot.tokens + elapsed * self.per_second).min(self.capacity);
        slot.updated = now;
    }

    /// True when forgetting the slot changes nothing (full bucket, idle).
    fn is_idle(&self, slot: &Slot, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(slot.updated).as_secs_f64();
        slot.in_flight == 0 && slot.tokens + elapsed * self.per_second >= self.capacity
    }

    /// Forgets addresses whose bucket is full again and that have nothing
    /// in flight (call now and then).
    pub fn prune(&self, now: Instant) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|_, slot| !self.is_idle(slot, now));
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One admitted login attempt; dropping it ends the in-flight count.
#[derive(Debug)]
pub struct Ticket<'a> {
    throttle: &'a AddressThrottle,
    key: ClientKey,
    refund: bool,
}

impl Ticket<'_> {
    /// Hands the attempt back to the bucket (a successful login, or one that
    /// was never checked) when the ticket is dropped.
    pub fn refund(&mut self) {
        self.refund = true;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut slots = self
            .throttle
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(&self.key) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
            if self.refund {
                slot.tokens = (slot.tokens + 1.0).min(self.throttle.capacity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(s: &str) -> ClientKey {
        ClientKey::of(Some(s.parse().unwrap()))
    }

    #[test]
    fn ipv6_groups_by_slash_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_eq!(ClientKey::of(None).as_str(), "unknown");
    }

    #[test]
    fn the_bucket_empties_then_refills_per_minute() {
        let t = AddressThrottle::new(3, 4);
        let (a, now) = (key("10.0.0.1"), Instant::now());
        for _ in 0..3 {
            drop(t.admit(&a, now).unwrap());
        }
        let refused = t.admit(&a, now).unwrap_err();
        assert_eq!(refused.retry_after, 20, "one attempt per 20 s at 3/min");
        assert!(
            t.admit(&key("10.0.0.2"), now).is_ok(),
            "other addresses are not affected"
        );
        assert!(t.admit(&a, now + Duration::from_secs(20)).is_ok());
    }

    #[test]
    fn refunded_attempts_go_back_into_the_bucket() {
        let t = AddressThrottle::new(1, 4);
        let (a, now) = (key("10.0.0.1"), Instant::now());
        for _ in 0..5 {
            let mut ticket = t.admit(&a, now).unwrap();
            ticket.refund();
        }
        drop(t.admit(&a, now).unwrap());
        assert!(t.admit(&a, now).is_err());
    }

    #[test]
    fn at_most_a_few_logins_in_flight_per_address() {
        let t = AddressThrottle::new(100, 4);
        let (a, now) = (key("10.0.0.1"), Instant::now());
        let held: Vec<_> = (0..4).map(|_| t.admit(&a, now).unwrap()).collect();
        assert_eq!(t.admit(&a, now).unwrap_err().retry_after, 1);
        drop(held);
        assert!(t.admit(&a, now).is_ok());
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let t = AddressThrottle::new(60, 4);
        let now = Instant::now();
        drop(t.admit(&key("10.0.0.1"), now).unwrap());
        let _busy = t.admit(&key("10.0.0.2"), now).unwrap();
        t.prune(now + Duration::from_secs(2));
        assert_eq!(
            t.tracked(),
            1,
            "only the address with a login in flight stays"
        );
    }
}
