//! Answers a plugin allowed the host to reuse (its cache hint), kept in
//! memory for one plugin version: a reload starts empty.
//!
//! An entry is keyed on a scope (empty for authenticators; the caller and
//! the access for authorizers) and the request's values of the hint's
//! `vary` headers. Every vary header must be present (and not blank) both
//! in the request that produced an answer and in a request it is served
//! to: a key is never formed from an absent header, so an answer given to
//! a request without its vary headers is not stored, and a request lacking
//! one (an anonymous request, say) can never match an entry.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::{CacheHint, PluginRequest};

/// Most answers kept per plugin version.
const MAX_ENTRIES: usize = 10_000;
/// Longest reuse allowed, whatever the plugin asks.
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Distinct `vary` lists remembered per version (a plugin normally uses one).
const MAX_VARY_SETS: usize = 8;

/// Which vary list, the scope, and the request's values for those headers
/// (all present: see [`values`]).
type Key = (usize, String, Vec<String>);

struct Entry<V> {
    value: V,
    expires: Instant,
}

/// How often a full cache may be swept for expired entries: a sweep scans
/// every entry, so a cache full of live answers must not pay it per store.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Cached answers of one plugin version.
pub(crate) struct OutcomeCache<V> {
    vary_sets: RwLock<Vec<Vec<String>>>,
    entries: Mutex<Entries<V>>,
}

struct Entries<V> {
    map: HashMap<Key, Entry<V>>,
    /// No sweep before this.
    next_sweep: Instant,
}

impl<V> Default for OutcomeCache<V> {
    fn default() -> Self {
        let entries = Entries {
            map: HashMap::new(),
            next_sweep: Instant::now(),
        };
        OutcomeCache {
            vary_sets: RwLock::default(),
            entries: Mutex::new(entries),
        }
    }
}

impl<V: Clone> OutcomeCache<V> {
    /// Whether nothing was ever stored (the plugin sent no usable hint), so
    /// a lookup needs no key.
    pub fn is_unused(&self) -> bool {
        self.vary_sets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The answer a still-valid cached entry gives `req` in `scope`, if any.
    pub fn lookup(&self, scope: &str, req: &PluginRequest) -> Option<V> {
        let sets = self.vary_sets.read().unwrap_or_else(|e| e.into_inner());
        if sets.is_empty() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sets.iter().enumerate().find_map(|(i, set)| {
            // A request without every header of this vary list cannot
            // match any of its entries.
            let values = values(req, set)?;
            entries
                .map
                .get(&(i, scope.to_owned(), values))
                .filter(|e| e.expires > now)
                .map(|e| e.value.clone())
        })
    }

    /// Remembers `value` as the answer to `req` in `scope`, as the hint
    /// allows. A hint that would key the answer on nothing at all (empty
    /// scope, no vary headers) would hand it to every request, and one
    /// whose vary headers `req` does not carry would hand it to every
    /// request also lacking them, so both are ignored.
    pub fn store(&self, scope: &str, req: &PluginRequest, hint: &CacheHint, value: &V) {
        let mut vary: Vec<String> = hint
            .vary
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        vary.sort();
        vary.dedup();
        if (vary.is_empty() && scope.is_empty()) || hint.ttl_ms == 0 {
            return;
        }
        let Some(key_values) = values(req, &vary) else {
            tracing::debug!(vary = ?vary, "cache hint ignored: the request lacks a header it varies on");
            return;
        };
        let index = {
            let mut sets = self.vary_sets.write().unwrap_or_else(|e| e.into_inner());
            match sets.iter().position(|s| *s == vary) {
                Some(i) => i,
                None if sets.len() < MAX_VARY_SETS => {
                    sets.push(vary.clone());
                    sets.len() - 1
                }
                None => return,
            }
        };
        let now = Instant::now();
        let ttl = Duration::from_millis(hint.ttl_ms.into()).min(MAX_TTL);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.map.len() >= MAX_ENTRIES {
            if now < entries.next_sweep {
                return;
            }
            entries.map.retain(|_, e| e.expires > now);
            entries.next_sweep = now + SWEEP_EVERY;
            if entries.map.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.map.insert(
            (index, scope.to_owned(), key_values),
            Entry {
                value: value.clone(),
                expires: now + ttl,
            },
        );
    }
}

/// The request's values of `headers` (all values of a repeated header,
/// joined, so `a, b` and `a` never share an entry), or `None` when any of
/// them is absent or blank: an absent header must never become part of a
/// key, or every request lacking it would share the entry.
fn values(req: &PluginRequest, headers: &[String]) -> Option<Vec<String>> {
    headers
        .iter()
        .map(|name| {
            let all: Vec<&str> = req
                .0
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            (!all.is_empty() && all.iter().all(|v| !v.trim().is_empty())).then(|| all.join("\0"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn req(headers: &[(&str, &str)]) -> PluginRequest {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        PluginRequest::new("GET".into(), "/".into(), String::new(), headers, None)
    }

    fn who(id: &str) -> Identity {
        Identity {
            user_id: id.into(),
            roles: vec![],
            claims: Default::default(),
        }
    }

    fn hint(ttl_ms: u32, vary: &[&str]) -> CacheHint {
        CacheHint {
            ttl_ms,
            vary: vary.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn answers_only_requests_with_the_same_vary_values() {
        let cache = OutcomeCache::<Identity>::default();
        cache.store(
            "",
            &req(&[("x-api-key", "k1")]),
            &hint(60_000, &["X-API-Key"]),
            &who("alice"),
        );
        assert_eq!(
            cache
                .lookup("", &req(&[("x-api-key", "k1"), ("other", "x")]))
                .unwrap()
                .user_id,
            "alice"
        );
        assert!(cache.lookup("", &req(&[("x-api-key", "k2")])).is_none());
        assert!(cache.lookup("", &req(&[])).is_none());
        assert!(
            cache
                .lookup("", &req(&[("x-api-key", "k1"), ("x-api-key", "k2")]))
                .is_none()
        );
    }

    #[test]
    fn never_stores_an_answer_keyed_on_absent_vary_headers() {
        let cache = OutcomeCache::<Identity>::default();
        // Authenticated by x-api-key, but the hint varies on a header the
        // request did not carry: storing it would hand alice to everyone
        // without that header, anonymous requests included.
        cache.store(
            "",
            &req(&[("x-api-key", "k1")]),
            &hint(60_000, &["x-tenant"]),
            &who("alice"),
        );
        assert!(cache.lookup("", &req(&[])).is_none());
        assert!(cache.lookup("", &req(&[("x-api-key", "k1")])).is_none());
        assert!(
            cache.entries.lock().unwrap().map.is_empty(),
            "nothing was stored"
        );
        // One of two vary headers missing, or present but blank: same.
        let both = hint(60_000, &["x-api-key", "x-tenant"]);
        cache.store("", &req(&[("x-api-key", "k1")]), &both, &who("alice"));
        cache.store(
            "",
            &req(&[("x-api-key", "k1"), ("x-tenant", " ")]),
            &both,
            &who("alice"),
        );
        assert!(
            cache.entries.lock().unwrap().map.is_empty(),
            "nothing was stored"
        );
        assert!(cache.lookup("", &req(&[("x-api-key", "k1")])).is_none());
    }

    #[test]
    fn a_request_must_carry_every_vary_header_to_be_served() {
        let cache = OutcomeCache::<Identity>::default();
        let full = [("x-api-key", "k1"), ("x-tenant", "t1")];
        cache.store(
            "",
            &req(&full),
            &hint(60_000, &["x-api-key", "x-tenant"]),
            &who("alice"),
        );
        assert_eq!(cache.lookup("", &req(&full)).unwrap().user_id, "alice");
        assert!(cache.lookup("", &req(&[("x-api-key", "k1")])).is_none());
        assert!(cache.lookup("", &req(&[("x-tenant", "t1")])).is_none());
        assert!(
            cache
                .lookup("", &req(&[("x-api-key", "k1"), ("x-tenant", "")]))
                .is_none()
        );
        assert!(cache.lookup("", &req(&[])).is_none());
    }

    #[test]
    fn authorizer_answers_with_absent_vary_headers_never_cross_callers() {
        let cache = OutcomeCache::<()>::default();
        cache.store("alice read", &req(&[]), &hint(60_000, &["x-tenant"]), &());
        assert!(
            cache.lookup("alice read", &req(&[])).is_none(),
            "not stored without x-tenant"
        );
        assert!(cache.lookup("bob read", &req(&[])).is_none());
        cache.store(
            "alice read",
            &req(&[("x-tenant", "t1")]),
            &hint(60_000, &["x-tenant"]),
            &(),
        );
        assert_eq!(
            cache.lookup("alice read", &req(&[("x-tenant", "t1")])),
            Some(())
        );
        assert_eq!(
            cache.lookup("bob read", &req(&[("x-tenant", "t1")])),
            None,
            "the scope keeps callers apart"
        );
        assert_eq!(cache.lookup("alice read", &req(&[])), None);
    }

    #[test]
    fn ignores_hints_that_vary_on_nothing_or_expire_at_once() {
        let cache = OutcomeCache::<Identity>::default();
        cache.store(
            "",
            &req(&[("x-api-key", "k1")]),
            &hint(60_000, &[]),
            &who("alice"),
        );
        cache.store(
            "",
            &req(&[("x-api-key", "k1")]),
            &hint(0, &["x-api-key"]),
            &who("alice"),
        );
        assert!(cache.lookup("", &req(&[("x-api-key", "k1")])).is_none());
        assert!(cache.lookup("", &req(&[])).is_none());
    }

    #[test]
    fn entries_expire() {
        let cache = OutcomeCache::<Identity>::default();
        cache.store(
            "",
            &req(&[("x-api-key", "k1")]),
            &hint(1, &["x-api-key"]),
            &who("alice"),
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.lookup("", &req(&[("x-api-key", "k1")])).is_none());
    }

    #[test]
    fn a_full_cache_keeps_what_it_has() {
        let cache = OutcomeCache::<u32>::default();
        for i in 0..MAX_ENTRIES as u32 + 5 {
            cache.store(&i.to_string(), &req(&[]), &hint(60_000, &[]), &i);
        }
        assert_eq!(cache.entries.lock().unwrap().map.len(), MAX_ENTRIES);
        assert_eq!(cache.lookup("0", &req(&[])), Some(0));
        assert_eq!(
            cache.lookup(&(MAX_ENTRIES as u32 + 1).to_string(), &req(&[])),
            None
        );
    }

    #[test]
    fn a_scope_keys_answers_without_vary_headers() {
        let cache = OutcomeCache::<()>::default();
        cache.store("alice read store", &req(&[]), &hint(60_000, &[]), &());
        assert_eq!(
            cache.lookup("alice read store", &req(&[("x-any", "1")])),
            Some(())
        );
        assert_eq!(cache.lookup("alice write store", &req(&[])), None);
        assert_eq!(cache.lookup("", &req(&[])), None);
    }
}
