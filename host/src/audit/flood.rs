//! Aggregation of events that can come in floods (one caller hammering a
//! route it may not use): per [`FloodKey`], the first event of each window
//! is recorded and the rest only counted, then written as one aggregate.
//! The number of keys is bounded, so a flood of distinct keys cannot grow
//! memory: past the bound, new keys share one overflow key.

use std::collections::HashMap;

use super::Entry;
use crate::store::AuditKind;

/// Most keys tracked at once.
const MAX_KEYS: usize = 10_000;

/// What events are aggregated under: the kind, the caller and the route (or
/// other place) they concern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FloodKey {
    kind: AuditKind,
    caller: String,
    place: String,
}

impl FloodKey {
    /// Events of `kind` by `caller` (a user or address) at `place` (a route).
    pub fn new(kind: AuditKind, caller: &str, place: &str) -> FloodKey {
        FloodKey {
            kind,
            caller: caller.to_owned(),
            place: place.to_owned(),
        }
    }

    fn overflow(kind: AuditKind) -> FloodKey {
        FloodKey::new(kind, "*", "*")
    }
}

#[derive(Debug)]
struct Window {
    started: u64,
    /// The latest event held back (an aggregate repeats its facts).
    last: Option<Entry>,
    held_back: u64,
}

/// The per-key windows.
#[derive(Debug)]
pub struct FloodGate {
    window_secs: u64,
    windows: HashMap<FloodKey, Window>,
}

impl FloodGate {
    /// A gate whose windows last `window_secs`.
    pub fn new(window_secs: u64) -> FloodGate {
        FloodGate {
            window_secs,
            windows: HashMap::new(),
        }
    }

    /// `Some((entry, held back in the previous window))` when `entry` is to
    /// be recorded now; `None` when it was only counted.
    pub fn admit(&mut self, key: FloodKey, entry: Entry, now: u64) -> Option<(Entry, u64)> {
        let key = if self.windows.len() >= MAX_KEYS && !self.windows.contains_key(&key) {
            self.windows
                .retain(|_, w| now < w.started + self.window_secs || w.held_back > 0);
            if self.windows.len() >= MAX_KEYS {
                FloodKey::overflow(key.kind)
            } else {
                key
            }
        } else {
            key
        };
        match self.windows.get_mut(&key) {
            Some(w) if now < w.started + self.window_secs => {
                w.held_back += 1;
                w.last = Some(entry);
                None
            }
            Some(w) => {
                let before = std::mem::take(&mut w.held_back);
                w.started = now;
                w.last = None;
                Some((entry, before))
            }
            None => {
                self.windows.insert(
                    key,
                    Window {
                        started: now,
                        last: None,
                        held_back: 0,
                    },
                );
                Some((entry, 0))
            }
        }
    }

    /// Takes the held-back events of every window that has ended: the latest
    /// entry of each with its count. Ended windows are forgotten.
    pub fn drain_expired(&mut self, now: u64) -> Vec<(Entry, u64)> {
        let mut out = Vec::new();
        self.windows.retain(|_, w| {
            if now < w.started + self.window_secs {
                return true;
            }
            if let Some(entry) = w.last.take() {
                out.push((entry, w.held_back));
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> Entry {
        Entry::new(AuditKind::AccessDenied).actor("mallory")
    }

    fn key(place: &str) -> FloodKey {
        FloodKey::new(AuditKind::AccessDenied, "mallory", place)
    }

    #[test]
    fn first_event_of_a_window_passes_the_rest_are_counted() {
        let mut gate = FloodGate::new(60);
        assert!(gate.admit(key("/a"), denied(), 100).is_some());
        for t in 101..110 {
            assert!(gate.admit(key("/a"), denied(), t).is_none());
        }
        // Another route is its own key.
        assert!(gate.admit(key("/b"), denied(), 105).is_some());
        // Nothing ended yet.
        assert!(gate.drain_expired(159).is_empty());
        let drained = gate.drain_expired(160);
        assert_eq!(drained.len(), 1, "only /a held events back");
        assert_eq!(drained[0].1, 9);
        // A new window starts clean.
        assert_eq!(
            gate.admit(key("/a"), denied(), 161).map(|(_, n)| n),
            Some(0)
        );
    }

    #[test]
    fn the_next_window_reports_what_the_last_held_back() {
        let mut gate = FloodGate::new(60);
        gate.admit(key("/a"), denied(), 0);
        gate.admit(key("/a"), denied(), 1);
        gate.admit(key("/a"), denied(), 2);
        assert_eq!(gate.admit(key("/a"), denied(), 60).map(|(_, n)| n), Some(2));
    }

    #[test]
    fn distinct_keys_are_bounded() {
        let mut gate = FloodGate::new(60);
        for i in 0..MAX_KEYS + 50 {
            gate.admit(key(&format!("/{i}")), denied(), 0);
        }
        assert!(gate.windows.len() <= MAX_KEYS + 1);
        assert!(
            gate.windows
                .contains_key(&FloodKey::overflow(AuditKind::AccessDenied))
        );
    }
}
